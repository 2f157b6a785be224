//! The attesters' real code against fake `/dev/attestation` and configfs-tsm trees that follow
//! the interfaces' semantics: the report is produced when it is read (a FIFO here, served by a
//! thread playing the kernel or Gramine), from the report data written just before; configfs's
//! `generation` counts writes, and a concurrent writer shows as a jump of more than one.
//!
//! The statements inside the fake trees are simulated (no hardware here signs one), which is
//! enough to check the binding end to end: what the enclave writes as report data is what the
//! owner's verification recomputes from the evidence.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test set-up: a failed step is a failed test

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chiron_attest::attester::gramine::GramineSgx;
use chiron_attest::attester::sim::SimPlatform;
use chiron_attest::attester::tsm::{TsmPlatform, snp_chip_certificate};
use chiron_attest::attester::{self, Choice, Interfaces, Platform};
use chiron_attest::policy::{SgxReference, SnpReference, TdxReference};
use chiron_attest::verifier::{sim::SimVerifier, verify_with};
use chiron_attest::{AttestationError, AttesterError, Policy, context_digest};
use chiron_proto::evidence::{Evidence, Role, TeeKind};

const MEASUREMENT: [u8; 32] = [0x5a; 32];

/// Makes a FIFO at `path` with a system call, not by running `mkfifo(1)`: a child process
/// forked while a serving thread holds a FIFO open holds it too until it runs `exec`, and if
/// the attester writes its report data in that moment, the data lands in a pipe that the
/// child's `exec` then frees unread, and both sides wait for each other for ever.
fn mkfifo(path: &Path) {
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        path,
        rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
    )
    .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
}

/// What a fake tree's serving thread saw.
#[derive(Default)]
struct Served {
    requests: AtomicUsize,
    last_input: Mutex<Vec<u8>>,
}

/// Plays the party behind the interface. `input` and `report` are FIFOs, so the attester's
/// write of the report data and its read of the report each meet this thread: it reads the
/// report data written to `input`, runs `on_input` (to move `generation` as the kernel does on
/// every write), then writes a statement signed by `signer` over that data to `report`, which
/// the attester reads to its end. Requests are served strictly one after the other, as the
/// next one starts with the next write of report data.
fn serve_reports(
    report: PathBuf,
    input: PathBuf,
    signer: Arc<SimPlatform>,
    on_input: impl Fn(usize) + Send + 'static,
) -> Arc<Served> {
    let served = Arc::new(Served::default());
    let seen = Arc::clone(&served);
    std::thread::spawn(move || {
        loop {
            // Blocks until the attester writes report data, and reads it to the end.
            let Ok(data) = fs::read(&input) else {
                return;
            };
            let n = seen.requests.fetch_add(1, Ordering::SeqCst);
            on_input(n);
            *seen.last_input.lock().expect("lock") = data.clone();
            let data: [u8; 64] = data.try_into().unwrap_or([0; 64]);
            let statement = signer.attest(&data).expect("simulated statement");
            // Blocks until the attester opens the report for reading.
            let Ok(mut out) = fs::OpenOptions::new().write(true).open(&report) else {
                return;
            };
            let _ = out.write_all(&statement.bytes);
        }
    });
    served
}

/// A configfs-tsm report directory with this process's entry already made (as `mkdir` makes
/// it in configfs, attributes included), for `provider`. `extra_writes(n)` is how many other
/// writes happened to the entry during request `n` (0: none).
struct FakeTsm {
    _dir: tempfile::TempDir,
    root: PathBuf,
    entry: PathBuf,
    served: Arc<Served>,
    signer: Arc<SimPlatform>,
}

impl FakeTsm {
    fn new(provider: &str, extra_writes: impl Fn(usize) -> u64 + Send + 'static) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("report");
        let entry = root.join(format!("chiron-{}", std::process::id()));
        fs::create_dir_all(&entry).expect("entry");
        fs::write(entry.join("provider"), format!("{provider}\n")).expect("provider");
        fs::write(entry.join("generation"), "0\n").expect("generation");
        mkfifo(&entry.join("inblob"));
        mkfifo(&entry.join("outblob"));
        let signer = Arc::new(SimPlatform::generate(MEASUREMENT));
        let generation = entry.join("generation");
        let served = serve_reports(
            entry.join("outblob"),
            entry.join("inblob"),
            Arc::clone(&signer),
            move |n| {
                // The attester's own inblob write, plus whatever another writer did.
                let now: u64 = fs::read_to_string(&generation)
                    .expect("generation")
                    .trim()
                    .parse()
                    .expect("number");
                fs::write(&generation, format!("{}\n", now + 1 + extra_writes(n)))
                    .expect("generation");
            },
        );
        Self {
            _dir: dir,
            root,
            entry,
            served,
            signer,
        }
    }
}

/// Gramine's `/dev/attestation`, with a DCAP attestation type and a sealing key.
struct FakeGramine {
    _dir: tempfile::TempDir,
    path: PathBuf,
    signer: Arc<SimPlatform>,
    served: Arc<Served>,
}

impl FakeGramine {
    fn new(attestation_type: &str, sealing_key: &[u8]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("attestation");
        fs::create_dir_all(path.join("keys")).expect("dirs");
        fs::write(path.join("attestation_type"), attestation_type).expect("type");
        fs::write(path.join("keys").join("_sgx_mrenclave"), sealing_key).expect("key");
        mkfifo(&path.join("user_report_data"));
        mkfifo(&path.join("quote"));
        let signer = Arc::new(SimPlatform::generate(MEASUREMENT));
        let served = serve_reports(
            path.join("quote"),
            path.join("user_report_data"),
            Arc::clone(&signer),
            |_| {},
        );
        Self {
            _dir: dir,
            path,
            signer,
            served,
        }
    }
}

/// Evidence as the enclave assembles it (`chiron-enclave`'s session): report data from the
/// binding, statement from the platform.
fn enclave_evidence(
    platform: &dyn Platform,
    role: Role,
    key: [u8; 32],
    nonce: [u8; 32],
    job: &str,
) -> Evidence {
    attester::evidence(platform, role, key, nonce, context_digest(job)).expect("evidence")
}

/// A policy accepting `tee` (with a dummy reference) and the fake tree's simulated signer.
fn policy_for(signer: &SimPlatform) -> Policy {
    Policy::new()
        .accept_sgx(SgxReference::Enclave { mrenclave: [0; 32] })
        .accept_tdx(TdxReference {
            mrtd: [0; 48],
            rtmrs: [None; 4],
        })
        .accept_snp(SnpReference {
            measurement: [0; 48],
        })
        .dangerous_accept_simulated_platform(signer.public_key(), vec![MEASUREMENT])
}

fn check_binding_end_to_end(platform: &dyn Platform, signer: &SimPlatform) {
    let policy = policy_for(signer);
    let nonce = [7; 32];
    let context = context_digest("job-1");
    let evidence = enclave_evidence(platform, Role::Train, [9; 32], nonce, "job-1");
    let verified = verify_with(
        &SimVerifier,
        &policy,
        &evidence,
        Role::Train,
        &nonce,
        &context,
    )
    .expect("the binding holds end to end");
    assert_eq!(verified.enclave_public_key(), [9; 32]);
    assert_eq!(verified.tee(), platform.tee());

    // Every claim beside the statement is bound by it: change one and the statement no
    // longer vouches for the evidence.
    let edits: [fn(&mut Evidence); 5] = [
        |e| e.enclave_public_key[0] ^= 1,
        |e| e.nonce[0] ^= 1,
        |e| e.context[0] ^= 1,
        |e| e.role = Role::Query,
        |e| {
            e.tee = if e.tee == TeeKind::Tdx {
                TeeKind::SevSnp
            } else {
                TeeKind::Tdx
            }
        },
    ];
    for edit in edits {
        let mut spliced = evidence.clone();
        edit(&mut spliced);
        let err = verify_with(
            &SimVerifier,
            &policy,
            &spliced,
            spliced.role,
            &spliced.nonce,
            &spliced.context,
        )
        .expect_err("spliced evidence");
        assert_eq!(err, AttestationError::ReportDataMismatch);
    }
    // Intact evidence for another request is refused for what it is.
    let err = verify_with(
        &SimVerifier,
        &policy,
        &evidence,
        Role::Train,
        &[8; 32],
        &context,
    )
    .expect_err("stale");
    assert_eq!(err, AttestationError::StaleNonce);
    let err = verify_with(
        &SimVerifier,
        &policy,
        &evidence,
        Role::Query,
        &nonce,
        &context,
    )
    .expect_err("role");
    assert!(matches!(err, AttestationError::WrongRole { .. }), "{err}");
    // And a statement the platform signed for another enclave key is spliced evidence.
    let other = enclave_evidence(platform, Role::Train, [10; 32], nonce, "job-1");
    let mut spliced = evidence.clone();
    spliced.statement = other.statement;
    let err = verify_with(
        &SimVerifier,
        &policy,
        &spliced,
        Role::Train,
        &nonce,
        &context,
    )
    .expect_err("spliced");
    assert_eq!(err, AttestationError::ReportDataMismatch);
}

#[test]
fn tdx_through_configfs_tsm_binds_the_evidence_end_to_end() {
    let fake = FakeTsm::new("tdx_guest", |_| 0);
    let at = Interfaces {
        gramine: fake.root.join("no-gramine-here"),
        tsm: fake.root.clone(),
    };
    let platform = attester::open(Choice::Auto, &at).expect("TDX detected");
    assert_eq!(platform.tee(), TeeKind::Tdx);
    check_binding_end_to_end(platform.as_ref(), &fake.signer);
    // The report data the kernel received last is the binding of the last evidence made.
    let written = fake.served.last_input.lock().expect("lock").clone();
    assert_eq!(written.len(), 64);
    assert!(fake.entry.join("inblob").exists());
    // TDX has no sealing key: the platform says so instead of inventing one.
    assert!(matches!(
        platform.sealing_secret(),
        Err(AttesterError::NoSealingKey(_))
    ));
}

#[test]
fn sev_snp_through_configfs_tsm_binds_and_carries_the_chip_certificate() {
    let fake = FakeTsm::new("sev_guest", |_| 0);
    // The host's certificate table: ARK, then the VCEK, then the terminator.
    let ark_guid = [
        0xa4, 0x06, 0xb4, 0xc0, 0x03, 0xa8, 0x52, 0x49, 0x97, 0x43, 0x3f, 0xb6, 0x01, 0x4c, 0xd0,
        0xae,
    ];
    let vcek_guid = [
        0x8d, 0x75, 0xda, 0x63, 0x64, 0xe6, 0x64, 0x45, 0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac,
        0xcd,
    ];
    let ark = b"ark certificate".to_vec();
    let vcek = b"vcek certificate, DER".to_vec();
    let mut table = Vec::new();
    let header = 3 * 24;
    for (guid, offset, len) in [
        (ark_guid, header, ark.len()),
        (vcek_guid, header + ark.len(), vcek.len()),
    ] {
        table.extend_from_slice(&guid);
        table.extend_from_slice(&(offset as u32).to_le_bytes());
        table.extend_from_slice(&(len as u32).to_le_bytes());
    }
    table.extend_from_slice(&[0; 24]);
    table.extend_from_slice(&ark);
    table.extend_from_slice(&vcek);
    fs::write(fake.entry.join("auxblob"), &table).expect("auxblob");

    let platform = TsmPlatform::open(&fake.root).expect("SNP");
    assert_eq!(platform.tee(), TeeKind::SevSnp);
    let statement = platform.attest(&[3; 64]).expect("statement");
    assert_eq!(statement.endorsements, vcek);
    check_binding_end_to_end(&platform, &fake.signer);

    // A table whose entry points past its end is refused, not read out of bounds.
    let mut bad = table.clone();
    bad[24 + 16..24 + 20].copy_from_slice(&10_000u32.to_le_bytes());
    assert!(snp_chip_certificate(&bad).is_err());
    assert!(snp_chip_certificate(&table[..30]).is_err());
    assert_eq!(
        snp_chip_certificate(&[0; 24]).expect("empty table"),
        Vec::<u8>::new()
    );
}

#[test]
fn a_concurrent_writer_is_detected_by_the_generation_and_the_report_retried() {
    // Another process writes to the entry during the first request only.
    let fake = FakeTsm::new("tdx_guest", |n| if n == 0 { 1 } else { 0 });
    let platform = TsmPlatform::open(&fake.root).expect("TDX");
    let statement = platform.attest(&[1; 64]).expect("second attempt succeeds");
    assert!(!statement.bytes.is_empty());
    assert_eq!(
        fake.served.requests.load(Ordering::SeqCst),
        2,
        "the first report was discarded"
    );

    // A writer that interferes every time: the attester gives up with the reason.
    let fake = FakeTsm::new("sev_guest", |_| 2);
    let platform = TsmPlatform::open(&fake.root).expect("SNP");
    let err = platform.attest(&[1; 64]).expect_err("always raced");
    match err {
        AttesterError::ConcurrentWriter { before, after, .. } => assert_eq!(after, before + 3),
        other => panic!("{other}"),
    }
    assert_eq!(fake.served.requests.load(Ordering::SeqCst), 3);
}

#[test]
fn an_unknown_tsm_provider_or_a_mismatched_forced_tee_is_refused() {
    let fake = FakeTsm::new("arm_cca_guest", |_| 0);
    let err = TsmPlatform::open(&fake.root).expect_err("unknown provider");
    assert!(err.to_string().contains("arm_cca_guest"), "{err}");

    let fake = FakeTsm::new("sev_guest", |_| 0);
    let at = Interfaces {
        gramine: fake.root.join("absent"),
        tsm: fake.root.clone(),
    };
    let err = attester::open(Choice::Forced(TeeKind::Tdx), &at)
        .err()
        .expect("mismatch");
    assert!(err.to_string().contains("forced"), "{err}");
    assert!(attester::open(Choice::Forced(TeeKind::SevSnp), &at).is_ok());
}

#[test]
fn sgx_under_gramine_binds_the_evidence_and_seals_with_the_mrenclave_key() {
    let fake = FakeGramine::new("dcap\n", &[0x42; 16]);
    let at = Interfaces {
        gramine: fake.path.clone(),
        tsm: fake.path.join("no-tsm-here"),
    };
    let platform = attester::open(Choice::Auto, &at).expect("SGX detected");
    assert_eq!(platform.tee(), TeeKind::Sgx);
    check_binding_end_to_end(platform.as_ref(), &fake.signer);
    assert_eq!(fake.served.last_input.lock().expect("lock").len(), 64);

    // The sealing secret comes from Gramine's MRENCLAVE key: stable across opens, different
    // for another key (another enclave build or CPU), and never the raw key itself.
    let first = *platform.sealing_secret().expect("sealing secret");
    let again = *GramineSgx::open(&fake.path)
        .expect("reopen")
        .sealing_secret()
        .expect("again");
    assert_eq!(first, again);
    assert_ne!(&first[..16], &[0x42; 16]);
    let other = FakeGramine::new("dcap", &[0x43; 16]);
    let other_secret = *GramineSgx::open(&other.path)
        .expect("open")
        .sealing_secret()
        .expect("secret");
    assert_ne!(first, other_secret);
}

#[test]
fn gramine_without_dcap_or_with_a_bad_key_is_refused() {
    let fake = FakeGramine::new("none", &[0x42; 16]);
    let err = GramineSgx::open(&fake.path).expect_err("no DCAP");
    assert!(err.to_string().contains("sgx.remote_attestation"), "{err}");

    let fake = FakeGramine::new("dcap", &[0x42; 15]);
    let platform = GramineSgx::open(&fake.path).expect("open");
    assert!(matches!(
        platform.sealing_secret(),
        Err(AttesterError::Protocol { .. })
    ));
}

#[test]
fn without_any_tee_the_error_names_both_interfaces_and_the_simulated_platform_is_not_chosen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let at = Interfaces {
        gramine: dir.path().join("attestation"),
        tsm: dir.path().join("tsm"),
    };
    let err = attester::open(Choice::Auto, &at).err().expect("no TEE");
    let text = err.to_string();
    assert!(matches!(err, AttesterError::NoTee { .. }), "{text}");
    assert!(
        text.contains("attestation") && text.contains("tsm"),
        "{text}"
    );
    assert!(attester::open(Choice::Forced(TeeKind::Sim), &at).is_err());
    // The default roots are the real interfaces.
    let defaults = Interfaces::default();
    assert_eq!(defaults.gramine, Path::new("/dev/attestation"));
    assert_eq!(defaults.tsm, Path::new("/sys/kernel/config/tsm/report"));
}
