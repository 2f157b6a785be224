//! A job on the simulated platform, certificates good and bad, and a handshake over loopback
//! TCP between a parameter server and a worker.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use chiron_attest::attester::sim::SimPlatform;
use chiron_attest::attester::{self, Platform, Statement};
use chiron_attest::{AttesterError, Policy, ReportData, context_digest};
use chiron_channel::cert::{EVIDENCE_OID, extension_value, key_binding, window_binding};
use chiron_channel::{
    AttestedCertificate, AttestedStream, ChannelError, LocalIdentity, PeerExpectation,
    client_handshake, server_handshake,
};
use chiron_proto::evidence::{Role, TeeKind};
use rcgen::{CertificateParams, CustomExtension, KeyPair, PKCS_ED25519, PublicKeyData};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// The build every enclave of the job runs.
pub const MEASUREMENT: [u8; 32] = [0x42; 32];

/// One job: a simulated platform running [`MEASUREMENT`], and the policy that accepts it.
pub struct Job {
    pub platform: Arc<SimPlatform>,
    pub context: [u8; 32],
    pub policy: Policy,
}

impl Job {
    pub fn new() -> Self {
        let platform = Arc::new(SimPlatform::generate(MEASUREMENT));
        let policy = Policy::new()
            .dangerous_accept_simulated_platform(platform.public_key(), vec![MEASUREMENT]);
        Self {
            platform,
            context: context_digest("job 1"),
            policy,
        }
    }

    /// This job's enclave in `role`.
    pub fn identity(&self, role: Role) -> LocalIdentity {
        LocalIdentity::new(self.platform.clone(), role, self.context)
    }

    /// A peer of this job in `role`.
    pub fn expect(&self, role: Role) -> PeerExpectation {
        PeerExpectation::new(self.policy.clone(), role, self.context)
    }

    /// A good certificate of this job's enclave in `role`, valid from now.
    pub fn certificate(&self, role: Role) -> AttestedCertificate {
        self.identity(role).issue().expect("issue")
    }
}

/// The other role of a channel.
pub fn other(role: Role) -> Role {
    match role {
        Role::ParameterServer => Role::Worker,
        _ => Role::ParameterServer,
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The usual window around now: a minute back, ten minutes ahead.
pub fn window() -> (u64, u64) {
    (now() - 60, now() + 600)
}

/// The same simulated platform (same key) measuring another build.
pub struct OtherBuild {
    pub platform: Arc<SimPlatform>,
    pub measurement: [u8; 32],
}

impl Platform for OtherBuild {
    fn tee(&self) -> TeeKind {
        TeeKind::Sim
    }

    fn attest(&self, report_data: &ReportData) -> Result<Statement, AttesterError> {
        Ok(Statement {
            bytes: self.platform.statement_for(&self.measurement, report_data),
            endorsements: Vec::new(),
        })
    }

    fn sealing_secret(&self) -> Result<zeroize::Zeroizing<[u8; 32]>, AttesterError> {
        self.platform.sealing_secret()
    }
}

/// A fresh Ed25519 key, as the channel makes them.
pub fn fresh_key() -> KeyPair {
    KeyPair::generate_for(&PKCS_ED25519).expect("key")
}

/// Evidence (encoded) from `platform` as the channel binds it, for a certificate with key
/// `key_spki` and window `window`.
pub fn evidence_bytes(
    platform: &dyn Platform,
    role: Role,
    context: [u8; 32],
    key_spki: &[u8],
    window: (u64, u64),
) -> Vec<u8> {
    attester::evidence(
        platform,
        role,
        key_binding(key_spki),
        window_binding(window.0, window.1),
        context,
    )
    .expect("evidence")
    .to_bytes()
    .expect("encode")
}

/// A certificate for `key`, valid in `window`, with the evidence extension holding
/// `evidence` (already encoded) or none.
pub fn certificate_with(
    key: &KeyPair,
    window: (u64, u64),
    evidence: Option<&[u8]>,
) -> AttestedCertificate {
    let mut params = CertificateParams::default();
    params.not_before =
        time::OffsetDateTime::from_unix_timestamp(window.0 as i64).expect("not before");
    params.not_after =
        time::OffsetDateTime::from_unix_timestamp(window.1 as i64).expect("not after");
    if let Some(evidence) = evidence {
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                EVIDENCE_OID,
                extension_value(evidence),
            ));
    }
    let certificate = params.self_signed(key).expect("self-signed");
    AttestedCertificate::from_der(certificate.der().to_vec(), key.serialize_der())
}

/// A certificate made the way the channel makes them, but from the parts given.
pub fn bound_certificate(
    platform: &dyn Platform,
    role: Role,
    context: [u8; 32],
    window: (u64, u64),
) -> AttestedCertificate {
    let key = fresh_key();
    let evidence = evidence_bytes(
        platform,
        role,
        context,
        &key.subject_public_key_info(),
        window,
    );
    certificate_with(&key, window, Some(&evidence))
}

/// Both ends of one handshake over loopback TCP: (parameter server, worker).
pub async fn handshake(
    ps_certificate: AttestedCertificate,
    ps_expects: &PeerExpectation,
    worker_certificate: AttestedCertificate,
    worker_expects: &PeerExpectation,
) -> (
    Result<AttestedStream, ChannelError>,
    Result<AttestedStream, ChannelError>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let ps_expects = ps_expects.clone();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        server_handshake(tcp, ps_certificate, &ps_expects).await
    });
    let tcp = TcpStream::connect(address).await.expect("connect");
    let worker = client_handshake(tcp, worker_certificate, worker_expects).await;
    let ps = server.await.expect("server task");
    (ps, worker)
}

/// A TCP proxy for one connection from `listener` to `target` that keeps every byte it
/// forwards; returns (client to server, server to client) once both directions have ended.
pub async fn recording_proxy(listener: TcpListener, target: SocketAddr) -> (Vec<u8>, Vec<u8>) {
    let (inbound, _) = listener.accept().await.expect("proxy accept");
    let outbound = TcpStream::connect(target).await.expect("proxy connect");
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let up = tokio::spawn(pump(in_read, out_write));
    let down = tokio::spawn(pump(out_read, in_write));
    (up.await.expect("up"), down.await.expect("down"))
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buffer = [0; 8192];
    loop {
        let n = from.read(&mut buffer).await.unwrap_or(0);
        if n == 0 {
            let _ = to.shutdown().await;
            return seen;
        }
        seen.extend_from_slice(&buffer[..n]);
        if to.write_all(&buffer[..n]).await.is_err() {
            return seen;
        }
    }
}

/// The TLS records in a byte stream: (content type, length of the record's body).
pub fn tls_records(mut bytes: &[u8]) -> Vec<(u8, usize)> {
    let mut records = Vec::new();
    while let Some((header, rest)) = bytes.split_first_chunk::<5>() {
        let length = usize::from(u16::from_be_bytes([header[3], header[4]]));
        assert!(rest.len() >= length, "a TLS record is cut short");
        records.push((header[0], length));
        bytes = &rest[length..];
    }
    assert!(bytes.is_empty(), "bytes after the last TLS record");
    records
}
