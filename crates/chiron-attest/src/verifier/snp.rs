//! AMD SEV-SNP attestation reports (placeholder, being written).

use chiron_proto::evidence::TeeKind;

use super::StatementVerifier;
use crate::claims::PlatformClaims;
use crate::error::AttestationError;
use crate::policy::Policy;

/// Verifies SEV-SNP attestation reports.
#[derive(Clone, Copy, Debug)]
pub struct SnpVerifier;

impl StatementVerifier for SnpVerifier {
    fn verify_statement(
        &self,
        _statement: &[u8],
        _endorsements: &[u8],
        _policy: &Policy,
    ) -> Result<PlatformClaims, AttestationError> {
        Err(AttestationError::TeeNotAccepted {
            tee: TeeKind::SevSnp,
        })
    }
}
