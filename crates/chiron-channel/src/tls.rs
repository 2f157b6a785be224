//! The rustls configurations of one connection: TLS 1.3 only, the `ring` provider, this
//! enclave's certificate, the peer checked by [`PeerVerifier`], no resumption.
//!
//! Resumption is off on both ends because a resumed session skips the certificate, and so
//! the attestation; tickets are off so that nothing but fixed-size records follows the
//! handshake.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::server::NoServerSessionStorage;
use rustls::{ClientConfig, ServerConfig};

use crate::cert::AttestedCertificate;
use crate::error::ChannelError;
use crate::verify::{PeerExpectation, PeerVerifier};

/// The crypto provider: `ring`, which the workspace already builds.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The name a client connects to. The peer is identified by its evidence, so the name is
/// never checked; as an IP address it is not sent (no SNI).
pub(crate) fn server_name() -> ServerName<'static> {
    ServerName::from(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// The client (worker) side of one connection, and the verifier that will hold its outcome.
pub(crate) fn client_config(
    certificate: AttestedCertificate,
    expectation: &PeerExpectation,
) -> Result<(ClientConfig, Arc<PeerVerifier>), ChannelError> {
    let provider = provider();
    let verifier = Arc::new(PeerVerifier::new(
        expectation.clone(),
        provider.signature_verification_algorithms,
    ));
    let (chain, key) = certificate.into_parts();
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_client_auth_cert(vec![chain], key)?;
    config.resumption = Resumption::disabled();
    config.enable_sni = false;
    Ok((config, verifier))
}

/// The server (parameter server) side of one connection, and its verifier.
pub(crate) fn server_config(
    certificate: AttestedCertificate,
    expectation: &PeerExpectation,
) -> Result<(ServerConfig, Arc<PeerVerifier>), ChannelError> {
    let provider = provider();
    let verifier = Arc::new(PeerVerifier::new(
        expectation.clone(),
        provider.signature_verification_algorithms,
    ));
    let (chain, key) = certificate.into_parts();
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(vec![chain], key)?;
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    Ok((config, verifier))
}
