//! Intel SGX and TDX DCAP quotes (placeholder, being written).

use chiron_proto::evidence::TeeKind;

use super::StatementVerifier;
use crate::claims::PlatformClaims;
use crate::error::AttestationError;
use crate::policy::Policy;

/// Verifies DCAP quotes of one TEE kind.
#[derive(Clone, Copy, Debug)]
pub struct DcapVerifier {
    tee: TeeKind,
}

impl DcapVerifier {
    /// SGX enclave quotes.
    pub const SGX: Self = Self { tee: TeeKind::Sgx };
    /// TDX trust-domain quotes.
    pub const TDX: Self = Self { tee: TeeKind::Tdx };
}

impl StatementVerifier for DcapVerifier {
    fn verify_statement(
        &self,
        _statement: &[u8],
        _endorsements: &[u8],
        _policy: &Policy,
    ) -> Result<PlatformClaims, AttestationError> {
        Err(AttestationError::TeeNotAccepted { tee: self.tee })
    }
}
