//! The peer's side: one check of a channel certificate, plugged into rustls as both its
//! server-certificate verifier (a worker checking the parameter server) and its
//! client-certificate verifier (the parameter server checking a worker).
//!
//! [`verify_certificate`] runs, in this order, each step before anything the next relies on:
//!
//! 1. the certificate stands alone (no chain) and parses as DER X.509;
//! 2. its validity window contains the verifier's clock and is no longer than
//!    [`PeerExpectation::max_validity`];
//! 3. it carries the evidence extension exactly once, and the evidence decodes;
//! 4. `chiron_attest::verify` authenticates the evidence under the expectation's [`Policy`]
//!    (platform, measurement, TCB), and checks the role and job context expected, and that
//!    the evidence's nonce is the certificate's validity window ([`crate::cert::window_binding`]);
//! 5. the evidence's enclave key is this certificate's key ([`crate::cert::key_binding`]).
//!
//! rustls then checks the peer's `CertificateVerify` signature over the handshake with the
//! key of that same certificate (with the provider's algorithms, Ed25519 only), which
//! proves the peer holds the attested key now. TLS 1.2 is never negotiated; its callbacks
//! refuse.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chiron_attest::{AttestationError, Policy, VerifiedEnclave};
use chiron_proto::evidence::{Evidence, Role};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls13_signature_with_raw_key};
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::cert::{EVIDENCE_OID, key_binding, parse_der_octet_string, window_binding};
use crate::error::ChannelError;

/// The longest certificate validity a peer accepts by default (the issuer's
/// [`crate::cert::DEFAULT_VALIDITY`] plus its [`crate::cert::CLOCK_SKEW`], with room).
pub const DEFAULT_MAX_VALIDITY: Duration = Duration::from_secs(15 * 60);

/// How long a handshake may take by default before the channel gives up.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The one signature scheme channel certificates use.
const SCHEME: SignatureScheme = SignatureScheme::ED25519;

/// What this end requires of its peer.
///
/// Defaults: certificates valid for at most [`DEFAULT_MAX_VALIDITY`], handshakes done within
/// [`DEFAULT_HANDSHAKE_TIMEOUT`]. The policy is the owner's kind of [`Policy`]: the same
/// reference values (and, for the simulated platform, the same dangerous opt-in) decide.
#[derive(Clone, Debug)]
pub struct PeerExpectation {
    policy: Arc<Policy>,
    role: Role,
    context: [u8; 32],
    max_validity: Duration,
    handshake_timeout: Duration,
}

impl PeerExpectation {
    /// A peer that `policy` accepts, attesting to `role` for the job whose context is
    /// `context`.
    pub fn new(policy: Policy, role: Role, context: [u8; 32]) -> Self {
        Self {
            policy: Arc::new(policy),
            role,
            context,
            max_validity: DEFAULT_MAX_VALIDITY,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// The longest certificate validity accepted (default [`DEFAULT_MAX_VALIDITY`]).
    pub fn max_validity(mut self, max: Duration) -> Self {
        self.max_validity = max;
        self
    }

    /// How long the handshake with this peer may take (default
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`]); a peer that stalls is dropped.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The role the peer must attest to.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The job context the peer must attest to.
    pub fn context(&self) -> [u8; 32] {
        self.context
    }

    /// The handshake timeout.
    pub(crate) fn timeout(&self) -> Duration {
        self.handshake_timeout
    }
}

/// A peer whose certificate passed [`verify_certificate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestedPeer {
    enclave: VerifiedEnclave,
    not_after: u64,
}

impl AttestedPeer {
    /// What the peer's evidence established: TEE, measured identity, role, job context.
    /// (Its `enclave_public_key` is the certificate-key binding, not an X25519 key.)
    pub fn enclave(&self) -> &VerifiedEnclave {
        &self.enclave
    }

    /// When the peer's certificate expires (seconds since the Unix epoch). The channel stays
    /// open past it; a role that wants fresh evidence reconnects.
    pub fn not_after(&self) -> u64 {
        self.not_after
    }
}

/// Checks a peer's channel certificate (DER) against `expectation` at `now` (seconds since
/// the Unix epoch). See the module documentation for the steps.
pub fn verify_certificate(
    expectation: &PeerExpectation,
    certificate: &[u8],
    now: u64,
) -> Result<AttestedPeer, ChannelError> {
    let parsed = parse(certificate)?;
    if now < parsed.not_before {
        return Err(ChannelError::NotYetValid {
            not_before: parsed.not_before,
            now,
        });
    }
    if now > parsed.not_after {
        return Err(ChannelError::Expired {
            not_after: parsed.not_after,
            now,
        });
    }
    let seconds = parsed.not_after - parsed.not_before;
    if seconds > expectation.max_validity.as_secs() {
        return Err(ChannelError::ValidityTooLong {
            seconds,
            max: expectation.max_validity.as_secs(),
        });
    }
    let evidence =
        Evidence::from_bytes(parsed.evidence).map_err(ChannelError::MalformedEvidence)?;
    let enclave = chiron_attest::verify(
        &expectation.policy,
        &evidence,
        expectation.role,
        &window_binding(parsed.not_before, parsed.not_after),
        &expectation.context,
    )
    .map_err(|e| match e {
        // The nonce is the certificate's window: evidence for another window.
        AttestationError::StaleNonce => ChannelError::WindowNotBound,
        other => ChannelError::Attestation(other),
    })?;
    if enclave.enclave_public_key() != key_binding(parsed.spki) {
        return Err(ChannelError::KeyNotBound);
    }
    Ok(AttestedPeer {
        enclave,
        not_after: parsed.not_after,
    })
}

/// The parts of a channel certificate the check uses; none is trusted yet.
struct Parsed<'a> {
    spki: &'a [u8],
    not_before: u64,
    not_after: u64,
    evidence: &'a [u8],
}

fn parse(der: &[u8]) -> Result<Parsed<'_>, ChannelError> {
    let (rest, certificate) =
        x509_parser::parse_x509_certificate(der).map_err(|_| ChannelError::MalformedCertificate)?;
    if !rest.is_empty() {
        return Err(ChannelError::MalformedCertificate);
    }
    let validity = certificate.validity();
    let time = |t: &x509_parser::time::ASN1Time| {
        u64::try_from(t.timestamp()).map_err(|_| ChannelError::MalformedCertificate)
    };
    let not_before = time(&validity.not_before)?;
    let not_after = time(&validity.not_after)?;
    let mut evidence = None;
    for extension in certificate.extensions() {
        let is_evidence = extension
            .oid
            .iter()
            .is_some_and(|arcs| arcs.eq(EVIDENCE_OID.iter().copied()));
        if is_evidence {
            if evidence.is_some() {
                return Err(ChannelError::DuplicateEvidence);
            }
            evidence = Some(extension.value);
        }
    }
    let evidence = evidence.ok_or(ChannelError::MissingEvidence)?;
    let evidence = parse_der_octet_string(evidence).ok_or(ChannelError::MalformedExtension)?;
    Ok(Parsed {
        spki: certificate.tbs_certificate.subject_pki.raw,
        not_before,
        not_after,
        evidence,
    })
}

/// The SubjectPublicKeyInfo of a certificate (DER), for the handshake signature check.
fn spki_of(der: &[u8]) -> Result<Vec<u8>, ChannelError> {
    let (rest, certificate) =
        x509_parser::parse_x509_certificate(der).map_err(|_| ChannelError::MalformedCertificate)?;
    if !rest.is_empty() {
        return Err(ChannelError::MalformedCertificate);
    }
    Ok(certificate.tbs_certificate.subject_pki.raw.to_vec())
}

/// The rustls verifier of one connection: it runs [`verify_certificate`] and keeps the
/// outcome, so that the connection can report the typed error (or the verified peer) after
/// the handshake. One per connection: each connection has its own certificate and config.
pub(crate) struct PeerVerifier {
    expectation: PeerExpectation,
    algorithms: WebPkiSupportedAlgorithms,
    outcome: Mutex<Option<Result<AttestedPeer, ChannelError>>>,
}

impl PeerVerifier {
    /// A verifier for `expectation`, checking handshake signatures with `algorithms` (the
    /// crypto provider's).
    pub(crate) fn new(expectation: PeerExpectation, algorithms: WebPkiSupportedAlgorithms) -> Self {
        Self {
            expectation,
            algorithms,
            outcome: Mutex::new(None),
        }
    }

    /// The outcome of the certificate check, once; `None` if rustls never asked for one.
    pub(crate) fn take_outcome(&self) -> Option<Result<AttestedPeer, ChannelError>> {
        self.outcome
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let outcome = if intermediates.is_empty() {
            verify_certificate(&self.expectation, end_entity.as_ref(), now.as_secs())
        } else {
            Err(ChannelError::UnexpectedIntermediates(intermediates.len()))
        };
        let passed = outcome.is_ok();
        *self.outcome.lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome);
        if passed {
            Ok(())
        } else {
            // The peer learns only that it was refused (alert `access_denied`); the reason
            // stays with this end.
            Err(CertificateError::ApplicationVerificationFailure.into())
        }
    }

    fn check_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if signature.scheme != SCHEME {
            return Err(rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme.into());
        }
        // The same SubjectPublicKeyInfo the key binding was checked against.
        let spki = spki_of(certificate.as_ref())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        verify_tls13_signature_with_raw_key(
            message,
            &SubjectPublicKeyInfoDer::from(spki.as_slice()),
            signature,
            &self.algorithms,
        )
    }

    fn tls12_refused() -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::PeerIncompatible::Tls12NotOfferedOrEnabled.into())
    }
}

impl fmt::Debug for PeerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerVerifier")
            .field("role", &self.expectation.role)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The name is not checked: the peer is identified by its evidence, not a name.
        self.check(end_entity, intermediates, now)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.check_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SCHEME]
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates, now)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.check_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SCHEME]
    }
}
