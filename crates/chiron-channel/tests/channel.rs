//! Attested channels between a parameter server and a worker over real loopback TCP, on the
//! simulated platform: the handshake and the records it carries, what the wire shows, and
//! every certificate that must be refused, by either end.
#![allow(
    clippy::expect_used,
    reason = "test helpers: a failed step is a failed test"
)]

mod support;

use std::time::{Duration, Instant};

use chiron_attest::AttestationError;
use chiron_attest::attester::sim::SimPlatform;
use chiron_attest::context_digest;
use chiron_channel::cert::{EVIDENCE_OID, extension_value};
use chiron_channel::{AttestedCertificate, ChannelError, RecordConfig, accept, connect};
use chiron_proto::evidence::{Evidence, Role};
use rcgen::PublicKeyData;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use support::*;

// --- A good channel -------------------------------------------------------------------------

#[tokio::test]
async fn ps_and_worker_attest_each_other_and_exchange_messages() {
    let job = Job::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let config = RecordConfig::new(256).expect("config");
    let capacity = config.payload_capacity();
    let long: Vec<u8> = (0..3 * capacity + 7).map(|i| i as u8).collect();

    let ps_identity = job.identity(Role::ParameterServer);
    let workers = job.expect(Role::Worker);
    let expected_long = long.clone();
    let ps = tokio::spawn(async move {
        let stream = accept(&listener, &ps_identity, &workers)
            .await
            .expect("PS accepts the worker");
        assert_eq!(stream.peer().enclave().role(), Role::Worker);
        let (mut reader, mut writer) = stream.into_records(config);
        assert_eq!(reader.recv_message(5).await.expect("hello"), b"hello");
        assert_eq!(
            reader
                .recv_message(expected_long.len())
                .await
                .expect("long"),
            expected_long
        );
        writer.send_message(b"").await.expect("empty");
        writer.send_cover().await.expect("cover");
        writer.send_message(b"parameters").await.expect("reply");
        writer.close().await.expect("close");
        assert!(matches!(
            reader.recv_message(1).await,
            Err(ChannelError::Closed)
        ));
    });

    let stream = connect(
        address,
        &job.identity(Role::Worker),
        &job.expect(Role::ParameterServer),
    )
    .await
    .expect("worker connects to the PS");
    let peer = stream.peer().enclave();
    assert_eq!(peer.role(), Role::ParameterServer);
    assert_eq!(peer.context(), job.context);
    assert_eq!(
        peer.identity(),
        &chiron_attest::Identity::Sim {
            platform_key: job.platform.public_key(),
            measurement: MEASUREMENT,
        }
    );
    let (mut reader, mut writer) = stream.into_records(config);
    writer.send_message(b"hello").await.expect("send");
    writer.send_message(&long).await.expect("send long");
    assert_eq!(reader.recv_message(0).await.expect("empty"), b"");
    assert_eq!(
        reader
            .recv_message(10)
            .await
            .expect("reply (cover skipped)"),
        b"parameters"
    );
    assert!(matches!(
        reader.recv_message(1).await,
        Err(ChannelError::Closed)
    ));
    writer.close().await.expect("close");
    ps.await.expect("PS task");
}

#[tokio::test]
async fn every_record_on_the_wire_has_the_same_size() {
    // Everything after the handshake is fixed-size records: TLS records of exactly
    // record_size + 17 bytes (content type and AEAD tag), however long each message is.
    let job = Job::new();
    let config = RecordConfig::new(1024).expect("config");
    let capacity = config.payload_capacity();
    let tls_record_len = config.record_size() + 17;
    let worker_messages = [1, 100, capacity, 3 * capacity + 7];
    let ps_messages = [0, capacity + 1];

    // A bare handshake first, to learn how many TLS records the handshake itself takes.
    let (bare_up, bare_down) = exchange(&job, config, &[], &[], false).await;
    let (up, down) = exchange(&job, config, &worker_messages, &ps_messages, true).await;

    for (direction, bare, seen, messages) in [
        ("worker to PS", bare_up, up, &worker_messages[..]),
        ("PS to worker", bare_down, down, &ps_messages[..]),
    ] {
        let handshake = tls_records(&bare).len();
        let records = tls_records(&seen);
        let data = &records[handshake..];
        let expected: usize = messages
            .iter()
            .map(|&n| config.records_for(n))
            .sum::<usize>()
            + 1;
        // Our records, the close record, then TLS's close_notify alert (2 bytes + 17).
        assert_eq!(data.len(), expected + 1, "{direction}: {records:?}");
        assert_eq!(data[expected], (23, 19), "{direction}: close_notify");
        for (i, &(kind, length)) in data[..expected].iter().enumerate() {
            assert_eq!(
                (kind, length),
                (23, tls_record_len),
                "{direction}: record {i}"
            );
        }
    }
}

/// One connection through a recording proxy: the worker sends `up`, the PS `down` (message
/// lengths), then both close if `close`. Returns the bytes each way.
async fn exchange(
    job: &Job,
    config: RecordConfig,
    up: &[usize],
    down: &[usize],
    close: bool,
) -> (Vec<u8>, Vec<u8>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let ps_address = listener.local_addr().expect("address");
    let front = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let proxy_address = front.local_addr().expect("proxy address");
    let proxy = tokio::spawn(recording_proxy(front, ps_address));

    let ps_identity = job.identity(Role::ParameterServer);
    let workers = job.expect(Role::Worker);
    let (up_sizes, down_sizes) = (up.to_vec(), down.to_vec());
    let ps = tokio::spawn(async move {
        let stream = accept(&listener, &ps_identity, &workers)
            .await
            .expect("accept");
        let (mut reader, mut writer) = stream.into_records(config);
        for n in up_sizes {
            reader.recv_message(n).await.expect("receive");
        }
        for n in down_sizes {
            writer.send_message(&vec![0xab; n]).await.expect("send");
        }
        if close {
            writer.close().await.expect("close");
            assert!(matches!(
                reader.recv_message(1).await,
                Err(ChannelError::Closed)
            ));
            read_to_the_end(reader).await;
        }
    });
    let stream = connect(
        proxy_address,
        &job.identity(Role::Worker),
        &job.expect(Role::ParameterServer),
    )
    .await
    .expect("connect");
    let (mut reader, mut writer) = stream.into_records(config);
    for &n in up {
        writer.send_message(&vec![0xcd; n]).await.expect("send");
    }
    for &n in down {
        reader.recv_message(n).await.expect("receive");
    }
    if close {
        assert!(matches!(
            reader.recv_message(1).await,
            Err(ChannelError::Closed)
        ));
        writer.close().await.expect("close");
        read_to_the_end(reader).await;
    } else {
        drop(reader);
    }
    drop(writer);
    ps.await.expect("PS task");
    proxy.await.expect("proxy")
}

/// Reads what is left (the peer's close_notify) so that no unread byte turns the TCP close
/// into a reset, which could cost the proxy bytes it has not read yet.
async fn read_to_the_end<R: tokio::io::AsyncRead + Unpin>(reader: chiron_channel::RecordReader<R>) {
    let mut rest = Vec::new();
    reader
        .into_inner()
        .read_to_end(&mut rest)
        .await
        .expect("clean end");
    assert!(rest.is_empty());
}

#[tokio::test]
async fn handshakes_are_quick() {
    // Not a benchmark: a guard against an accidental slow path (and a figure to report).
    let job = Job::new();
    let rounds: u32 = 20;
    let started = Instant::now();
    for _ in 0..rounds {
        let (ps, worker) = handshake(
            job.certificate(Role::ParameterServer),
            &job.expect(Role::Worker),
            job.certificate(Role::Worker),
            &job.expect(Role::ParameterServer),
        )
        .await;
        ps.expect("PS side");
        worker.expect("worker side");
    }
    let each = started.elapsed() / rounds;
    eprintln!("mutual handshake incl. two certificates and both checks: {each:?}");
    assert!(each < Duration::from_secs(1), "{each:?} per handshake");
}

#[tokio::test]
async fn a_silent_peer_is_dropped_after_the_handshake_timeout() {
    let job = Job::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let _silent = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let workers = job
        .expect(Role::Worker)
        .handshake_timeout(Duration::from_millis(100));
    let result = accept(&listener, &job.identity(Role::ParameterServer), &workers).await;
    assert!(
        matches!(result, Err(ChannelError::HandshakeTimeout(_))),
        "{result:?}"
    );
}

// --- Refusals, by either end ----------------------------------------------------------------

/// Runs one bad certificate against each end: `$make(&job, role)` makes the certificate an
/// enclave in `role` would present; the end checking it must refuse with `$refusal`, and the
/// end presenting it must learn that it was refused.
macro_rules! refused_by_either_end {
    ($name:ident, $make:expr, $refusal:pat) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn by_the_parameter_server() {
                let job = Job::new();
                let bad: AttestedCertificate = ($make)(&job, Role::Worker);
                let (ps, worker) = handshake(
                    job.certificate(Role::ParameterServer),
                    &job.expect(Role::Worker),
                    bad,
                    &job.expect(Role::ParameterServer),
                )
                .await;
                assert!(matches!(ps, Err($refusal)), "{ps:?}");
                assert!(
                    matches!(worker, Err(ChannelError::PeerRefused { .. })),
                    "{worker:?}"
                );
            }

            #[tokio::test]
            async fn by_a_worker() {
                let job = Job::new();
                let bad: AttestedCertificate = ($make)(&job, Role::ParameterServer);
                let (ps, worker) = handshake(
                    bad,
                    &job.expect(Role::Worker),
                    job.certificate(Role::Worker),
                    &job.expect(Role::ParameterServer),
                )
                .await;
                assert!(matches!(worker, Err($refusal)), "{worker:?}");
                assert!(
                    matches!(ps, Err(ChannelError::PeerRefused { .. })),
                    "{ps:?}"
                );
            }
        }
    };
}

refused_by_either_end!(
    another_job,
    |job: &Job, role| {
        let (not_before, not_after) = window();
        AttestedCertificate::issue(
            job.platform.as_ref(),
            role,
            context_digest("job 2"),
            not_before,
            not_after,
        )
        .expect("issue")
    },
    ChannelError::Attestation(AttestationError::WrongContext)
);

refused_by_either_end!(
    another_measurement,
    |job: &Job, role| {
        let other = OtherBuild {
            platform: job.platform.clone(),
            measurement: [0x13; 32],
        };
        bound_certificate(&other, role, job.context, window())
    },
    ChannelError::Attestation(AttestationError::WrongMeasurement { .. })
);

refused_by_either_end!(
    another_platform,
    |job: &Job, role| bound_certificate(
        &SimPlatform::generate(MEASUREMENT),
        role,
        job.context,
        window()
    ),
    ChannelError::Attestation(AttestationError::UntrustedPlatform { .. })
);

refused_by_either_end!(
    the_wrong_role,
    |job: &Job, role| job.certificate(other(role)),
    ChannelError::Attestation(AttestationError::WrongRole { .. })
);

refused_by_either_end!(
    a_training_enclave_role,
    |job: &Job, _role| job.certificate(Role::Train),
    ChannelError::Attestation(AttestationError::WrongRole { .. })
);

refused_by_either_end!(
    a_certificate_without_evidence,
    |_job: &Job, _role| certificate_with(&fresh_key(), window(), None),
    ChannelError::MissingEvidence
);

refused_by_either_end!(
    evidence_bound_to_another_key,
    |job: &Job, role| {
        // Genuine evidence, made for another certificate's key, in this one.
        let window = window();
        let theirs = fresh_key();
        let evidence = evidence_bytes(
            job.platform.as_ref(),
            role,
            job.context,
            &theirs.subject_public_key_info(),
            window,
        );
        certificate_with(&fresh_key(), window, Some(&evidence))
    },
    ChannelError::KeyNotBound
);

refused_by_either_end!(
    evidence_for_another_window,
    |job: &Job, role| {
        // Genuine evidence for this key, made for another validity window.
        let key = fresh_key();
        let (not_before, not_after) = window();
        let evidence = evidence_bytes(
            job.platform.as_ref(),
            role,
            job.context,
            &key.subject_public_key_info(),
            (not_before - 1, not_after),
        );
        certificate_with(&key, (not_before, not_after), Some(&evidence))
    },
    ChannelError::WindowNotBound
);

refused_by_either_end!(
    tampered_evidence,
    |job: &Job, role| {
        let key = fresh_key();
        let window = window();
        let good = evidence_bytes(
            job.platform.as_ref(),
            role,
            job.context,
            &key.subject_public_key_info(),
            window,
        );
        let mut evidence = Evidence::from_bytes(&good).expect("decode");
        evidence.statement[100] ^= 1; // inside the signed report data
        let tampered = evidence.to_bytes().expect("encode");
        certificate_with(&key, window, Some(&tampered))
    },
    ChannelError::Attestation(AttestationError::BadSignature { .. })
);

refused_by_either_end!(
    garbage_evidence,
    |_job: &Job, _role| certificate_with(&fresh_key(), window(), Some(&[0xff; 40])),
    ChannelError::MalformedEvidence(_)
);

refused_by_either_end!(
    an_expired_certificate,
    |job: &Job, role| bound_certificate(
        job.platform.as_ref(),
        role,
        job.context,
        (now() - 3600, now() - 3000)
    ),
    ChannelError::Expired { .. }
);

refused_by_either_end!(
    a_certificate_not_valid_yet,
    |job: &Job, role| bound_certificate(
        job.platform.as_ref(),
        role,
        job.context,
        (now() + 3000, now() + 3600)
    ),
    ChannelError::NotYetValid { .. }
);

refused_by_either_end!(
    a_certificate_valid_too_long,
    |job: &Job, role| bound_certificate(
        job.platform.as_ref(),
        role,
        job.context,
        (now() - 60, now() + 24 * 3600)
    ),
    ChannelError::ValidityTooLong { .. }
);

#[test]
fn the_extension_is_where_the_documentation_says() {
    // The OID and the value's encoding are the format other implementations would follow.
    let job = Job::new();
    let certificate = job.certificate(Role::Worker);
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.der()).expect("parse");
    let extension = parsed
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == chiron_channel::cert::EVIDENCE_OID_STRING)
        .expect("evidence extension");
    assert!(!extension.critical);
    let arcs: Vec<u64> = extension.oid.iter().expect("arcs").collect();
    assert_eq!(arcs, EVIDENCE_OID);
    // A DER OCTET STRING: tag 4, a two-byte long-form length (the evidence is a few hundred
    // bytes), the evidence.
    assert_eq!(extension.value[..2], [0x04, 0x82]);
    let evidence = &extension.value[4..];
    let decoded = Evidence::from_bytes(evidence).expect("evidence after the DER header");
    assert_eq!(decoded.role, Role::Worker);
    assert_eq!(extension_value(evidence), extension.value);
    // Twenty bytes of serial number, positive without a leading zero, so that the
    // certificate, and every handshake, has one size.
    assert_eq!(parsed.raw_serial().len(), 20);
    assert!((0x40..=0x7f).contains(&parsed.raw_serial()[0]));
    let window = (
        u64::try_from(parsed.validity().not_before.timestamp()).expect("after 1970"),
        u64::try_from(parsed.validity().not_after.timestamp()).expect("after 1970"),
    );
    assert_eq!(
        window.1 - window.0,
        (chiron_channel::cert::DEFAULT_VALIDITY + chiron_channel::cert::CLOCK_SKEW).as_secs()
    );
}

#[test]
fn evidence_twice_in_one_certificate_is_refused() {
    let job = Job::new();
    let key = fresh_key();
    let window = window();
    let evidence = evidence_bytes(
        job.platform.as_ref(),
        Role::Worker,
        job.context,
        &key.subject_public_key_info(),
        window,
    );
    let mut params = rcgen::CertificateParams::default();
    params.not_before = time::OffsetDateTime::from_unix_timestamp(window.0 as i64).expect("time");
    params.not_after = time::OffsetDateTime::from_unix_timestamp(window.1 as i64).expect("time");
    for _ in 0..2 {
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                EVIDENCE_OID,
                extension_value(&evidence),
            ));
    }
    let certificate = params.self_signed(&key).expect("certificate");
    let refused = chiron_channel::verify::verify_certificate(
        &job.expect(Role::Worker),
        certificate.der(),
        now(),
    );
    // x509-parser may already refuse a repeated extension; either way it is refused.
    assert!(
        matches!(
            refused,
            Err(ChannelError::DuplicateEvidence | ChannelError::MalformedCertificate)
        ),
        "{refused:?}"
    );
    // The same certificate with the extension once passes the same check.
    let once = certificate_with(&key, window, Some(&evidence));
    chiron_channel::verify::verify_certificate(&job.expect(Role::Worker), once.der(), now())
        .expect("accepted");
}
