//! Chiron's enclave-to-enclave channels: mutually attested TLS 1.3 (RA-TLS) carrying
//! fixed-size records, for a parameter server and the training enclaves ("workers") of one
//! job.
//!
//! ```
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//!
//! use chiron_attest::attester::sim::SimPlatform;
//! use chiron_attest::{Policy, context_digest};
//! use chiron_channel::{LocalIdentity, PeerExpectation, RecordConfig, accept, connect};
//! use chiron_proto::evidence::Role;
//!
//! // One build on a platform the policy names (here, INSECURELY, a simulated one).
//! let measurement = [7; 32];
//! let platform = Arc::new(SimPlatform::generate(measurement));
//! let policy = Policy::new()
//!     .dangerous_accept_simulated_platform(platform.public_key(), vec![measurement]);
//! let job = context_digest("job-42");
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let address = listener.local_addr()?;
//! let ps = LocalIdentity::new(platform.clone(), Role::ParameterServer, job);
//! let workers = PeerExpectation::new(policy.clone(), Role::Worker, job);
//! let server = tokio::spawn(async move {
//!     let stream = accept(&listener, &ps, &workers).await?;
//!     let (mut reader, _writer) = stream.into_records(RecordConfig::default());
//!     reader.recv_message(4).await
//! });
//!
//! let worker = LocalIdentity::new(platform, Role::Worker, job);
//! let ps_expected = PeerExpectation::new(policy, Role::ParameterServer, job);
//! let stream = connect(address, &worker, &ps_expected).await?;
//! let (_reader, mut writer) = stream.into_records(RecordConfig::default());
//! writer.send_message(&[1, 2, 3, 4]).await?;
//! assert_eq!(server.await??, [1, 2, 3, 4]);
//! # Ok(())
//! # }
//! # tokio::runtime::Runtime::new().unwrap().block_on(example()).unwrap();
//! ```
//!
//! # What is bound
//!
//! Each end makes a fresh Ed25519 key for every connection and a self-signed certificate
//! whose extension carries its enclave's evidence ([`cert`] has the exact format). The
//! evidence's report data binds, through `chiron_attest::binding`: the SHA-256 of the
//! certificate's SubjectPublicKeyInfo (in place of an X25519 key), the certificate's validity
//! window (in place of a verifier's nonce), the role (parameter server or worker), the job
//! context and the TEE kind. The peer verifies the evidence against its [`Policy`] (platform,
//! measurement, TCB), requires the role and job it expects and the binding to this very
//! certificate's key and window, and rustls checks the handshake signature with that key
//! ([`verify`]). So a channel end is an enclave of an accepted build, in the expected role,
//! for this job, holding a key that never left it. Evidence copied into another certificate
//! fails: another key ([`ChannelError::KeyNotBound`]) or another window
//! ([`ChannelError::WindowNotBound`]).
//!
//! # Freshness without a peer nonce
//!
//! A TLS handshake has no round trip in which the peer could pick a nonce before the
//! certificate is sent, so the evidence cannot answer one. Freshness comes from two things
//! instead. The handshake itself is fresh: the peer signs a transcript containing both
//! sides' random values with the attested key, and that key is made for one connection and
//! never leaves the enclave, so a recorded certificate is useless to anyone but its enclave.
//! And the certificate is short-lived: the evidence signs its validity window (ten minutes by
//! default, [`cert::DEFAULT_VALIDITY`]), the verifier requires that window to contain its
//! clock and to be no longer than it accepts ([`verify::DEFAULT_MAX_VALIDITY`]), which
//! bounds how long evidence of a since-revoked platform or build can still open channels.
//! The clock is the host's (no TEE here has a trusted one), so the window is a bound against
//! an honest clock, and the key's confinement is what stops replay.
//!
//! # Why fixed-size records, not HTTP/2
//!
//! What the platform sees of enclave-to-enclave traffic must not depend on the owner's data
//! (DESIGN.md: inter-enclave messages are fixed-size and sent at a fixed, public rate). A
//! general protocol such as HTTP/2 decides frame sizes, window updates, pings and header
//! compression itself, so its traffic shape follows the data and the library. Here every
//! record is exactly [`RecordConfig::record_size`] bytes and a message's record count depends
//! only on its public size ([`records`]); with no session tickets and no resumption, nothing
//! else travels after the handshake but a fixed 8-byte confirmation from the server, the
//! closing alerts, and the key updates TLS schedules by record count (after millions of
//! records). A
//! parameter server and its workers know their message sizes in advance (the model's
//! padded size), so a framing this small is all they need.
//!
//! # Hardware evidence
//!
//! Nothing here is specific to the simulated platform: [`LocalIdentity`] takes any
//! `chiron_attest::attester::Platform` (SGX under Gramine, TDX and SEV-SNP through
//! configfs-tsm), and [`PeerExpectation`] takes the same `chiron_attest::Policy` the owner's
//! client uses, so hardware evidence verifies with its reference values and TCB rules, and
//! the simulated platform only through the policy's dangerous opt-in. Evidence with DCAP
//! collateral (some 20–30 KiB) travels in the certificate; rustls caps a handshake message
//! at 64 KiB ([`cert::MAX_CERTIFICATE_LEN`]), so larger endorsements belong in the verifier's
//! policy (`Policy::with_endorsements`), which fills in for evidence that carries none.
//!
//! # Lower-level pieces
//!
//! [`connect`] and [`accept`] open a TCP connection and issue a certificate; [`client_handshake`]
//! and [`server_handshake`] run the handshake on any stream with a given certificate;
//! [`verify::verify_certificate`] is the check itself; [`records`] works over any stream.
#![forbid(unsafe_code)]

pub mod cert;
mod error;
pub mod records;
mod stream;
mod tls;
pub mod verify;

pub use cert::{AttestedCertificate, LocalIdentity};
pub use chiron_attest::Policy;
pub use error::ChannelError;
pub use records::{Record, RecordConfig, RecordKind, RecordReader, RecordWriter};
pub use stream::{AttestedStream, client_handshake, server_handshake};
pub use verify::{AttestedPeer, PeerExpectation};

use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};

/// Connects to the enclave at `address` as `identity` (with a fresh certificate), and
/// requires it to be the peer `expectation` describes. Returns once the peer has verified
/// this end too.
pub async fn connect(
    address: impl ToSocketAddrs,
    identity: &LocalIdentity,
    expectation: &PeerExpectation,
) -> Result<AttestedStream, ChannelError> {
    let certificate = identity.issue()?;
    let tcp = TcpStream::connect(address)
        .await
        .map_err(ChannelError::Io)?;
    tcp.set_nodelay(true).map_err(ChannelError::Io)?;
    client_handshake(tcp, certificate, expectation).await
}

/// Accepts one connection on `listener` as `identity` (with a fresh certificate), and
/// requires the peer to be the one `expectation` describes. A peer that fails is refused
/// and its error returned; the listener stays usable. Servers that handle several peers at
/// once accept the TCP connections themselves and run [`server_handshake`] on each.
pub async fn accept(
    listener: &TcpListener,
    identity: &LocalIdentity,
    expectation: &PeerExpectation,
) -> Result<AttestedStream, ChannelError> {
    let (tcp, _) = listener.accept().await.map_err(ChannelError::Io)?;
    tcp.set_nodelay(true).map_err(ChannelError::Io)?;
    server_handshake(tcp, identity.issue()?, expectation).await
}
