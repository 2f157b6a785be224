//! The owner's side: evidence checked against a [`Policy`] before any secret is released.
//!
//! [`verify`] picks the backend the evidence names; each backend implements
//! [`StatementVerifier`], which authenticates the statement (signatures, certificate chain to
//! the vendor's root, collateral, TCB level, debug state) and returns what it measured. Then,
//! in this order: the report data must bind the evidence's claims, the identity must be one
//! the policy lists, and role, job and nonce must be the ones this request expects.

pub mod dcap;
pub mod sim;
pub mod snp;

use chiron_proto::evidence::{EVIDENCE_VERSION, Evidence, Role, TeeKind};

use crate::binding;
use crate::claims::{Identity, PlatformClaims};
use crate::error::AttestationError;
use crate::policy::Policy;

/// Authenticates one backend's statements.
pub trait StatementVerifier {
    /// Checks `statement` with its `endorsements` (DCAP collateral, SNP certificates) under
    /// `policy`'s time, TCB and platform rules, and returns its report data and the identity
    /// it measured. It must not look at the policy's reference identities: [`verify`] does.
    fn verify_statement(
        &self,
        statement: &[u8],
        endorsements: &[u8],
        policy: &Policy,
    ) -> Result<PlatformClaims, AttestationError>;
}

/// An enclave whose evidence passed [`verify`]; the only way to obtain one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedEnclave {
    tee: TeeKind,
    role: Role,
    identity: Identity,
    enclave_public_key: [u8; 32],
    context: [u8; 32],
}

impl VerifiedEnclave {
    /// The enclave's ephemeral public key, to seal secrets to.
    pub fn enclave_public_key(&self) -> [u8; 32] {
        self.enclave_public_key
    }

    /// The TEE the enclave runs in.
    pub fn tee(&self) -> TeeKind {
        self.tee
    }

    /// The code identity the platform measured (one the policy accepts).
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The role the enclave attested to.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The job or model context the enclave attested to.
    pub fn context(&self) -> [u8; 32] {
        self.context
    }
}

/// Verifies `evidence` against `policy` and this request's expectations, with the backend the
/// evidence names.
pub fn verify(
    policy: &Policy,
    evidence: &Evidence,
    expected_role: Role,
    expected_nonce: &[u8; 32],
    expected_context: &[u8; 32],
) -> Result<VerifiedEnclave, AttestationError> {
    let backend: &dyn StatementVerifier = match evidence.tee {
        TeeKind::Sim => &sim::SimVerifier,
        TeeKind::Sgx => &dcap::DcapVerifier::SGX,
        TeeKind::Tdx => &dcap::DcapVerifier::TDX,
        TeeKind::SevSnp => &snp::SnpVerifier,
    };
    verify_with(
        backend,
        policy,
        evidence,
        expected_role,
        expected_nonce,
        expected_context,
    )
}

/// [`verify`] with a given backend verifier. Production code uses [`verify`]; this exists so
/// that tests can check the binding end to end for a hardware backend whose statement is
/// simulated (no hardware here can sign one).
pub fn verify_with(
    backend: &dyn StatementVerifier,
    policy: &Policy,
    evidence: &Evidence,
    expected_role: Role,
    expected_nonce: &[u8; 32],
    expected_context: &[u8; 32],
) -> Result<VerifiedEnclave, AttestationError> {
    if evidence.version != EVIDENCE_VERSION {
        return Err(AttestationError::UnsupportedVersion {
            found: evidence.version,
            supported: EVIDENCE_VERSION,
        });
    }
    if !policy.accepts_tee(evidence.tee) {
        return Err(match evidence.tee {
            TeeKind::Sim => AttestationError::UntrustedPlatform {
                platform_key: sim::platform_key_hex(&evidence.statement),
            },
            tee => AttestationError::TeeNotAccepted { tee },
        });
    }
    let endorsements = match (
        evidence.endorsements.is_empty(),
        policy.endorsements_for(evidence.tee),
    ) {
        (true, Some(cached)) => cached,
        _ => &evidence.endorsements,
    };
    let claims = backend.verify_statement(&evidence.statement, endorsements, policy)?;
    // The statement is authentic. Before believing anything the evidence says beside it, its
    // claims must be the ones the statement signs.
    if claims.report_data != binding::expected_for(evidence) {
        return Err(AttestationError::ReportDataMismatch);
    }
    policy.check_identity(&claims.identity)?;
    if evidence.role != expected_role {
        return Err(AttestationError::WrongRole {
            expected: expected_role,
            found: evidence.role,
        });
    }
    if evidence.context != *expected_context {
        return Err(AttestationError::WrongContext);
    }
    if evidence.nonce != *expected_nonce {
        return Err(AttestationError::StaleNonce);
    }
    Ok(VerifiedEnclave {
        tee: evidence.tee,
        role: evidence.role,
        identity: claims.identity,
        enclave_public_key: evidence.enclave_public_key,
        context: evidence.context,
    })
}
