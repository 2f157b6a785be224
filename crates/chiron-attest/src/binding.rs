//! What the platform's 64 bytes of report data commit to.
//!
//! Every backend lets the enclave put 64 bytes of its choosing into the signed statement
//! (SGX `REPORTDATA`, TDX `REPORTDATA`, SNP `REPORT_DATA`). Chiron fills them with
//!
//! ```text
//! SHA-512( "chiron report data v1\0" || tee code || role code
//!          || enclave public key (32) || nonce (32) || context (32) )
//! ```
//!
//! so a statement vouches for exactly one enclave key, in one role, for one job or model,
//! answering one verifier's nonce, on one kind of TEE. The attester computes it from its own
//! state; the verifier recomputes it from the evidence's claims and compares it with the
//! authenticated statement before it trusts any of those claims.

use chiron_proto::evidence::{Evidence, Role, TeeKind};
use sha2::{Digest, Sha512};

/// Length of the report data every backend signs.
pub const REPORT_DATA_LEN: usize = 64;

/// The report data of one statement.
pub type ReportData = [u8; REPORT_DATA_LEN];

/// Domain separation: these bytes can never be mistaken for a hash of anything else.
const DOMAIN: &[u8] = b"chiron report data v1\0";

/// The report data binding `tee`, `role`, the enclave's public key, the verifier's nonce and
/// the job or model context.
pub fn report_data(
    tee: TeeKind,
    role: Role,
    enclave_public_key: &[u8; 32],
    nonce: &[u8; 32],
    context: &[u8; 32],
) -> ReportData {
    let mut hasher = Sha512::new();
    hasher.update(DOMAIN);
    hasher.update([tee.code(), role.code()]);
    hasher.update(enclave_public_key);
    hasher.update(nonce);
    hasher.update(context);
    hasher.finalize().into()
}

/// The report data that `evidence`'s claims require its statement to carry.
pub fn expected_for(evidence: &Evidence) -> ReportData {
    report_data(
        evidence.tee,
        evidence.role,
        &evidence.enclave_public_key,
        &evidence.nonce,
        &evidence.context,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_changes_the_report_data() {
        let base = report_data(TeeKind::Sgx, Role::Train, &[1; 32], &[2; 32], &[3; 32]);
        let variants = [
            report_data(TeeKind::Tdx, Role::Train, &[1; 32], &[2; 32], &[3; 32]),
            report_data(TeeKind::Sgx, Role::Query, &[1; 32], &[2; 32], &[3; 32]),
            report_data(TeeKind::Sgx, Role::Train, &[9; 32], &[2; 32], &[3; 32]),
            report_data(TeeKind::Sgx, Role::Train, &[1; 32], &[9; 32], &[3; 32]),
            report_data(TeeKind::Sgx, Role::Train, &[1; 32], &[2; 32], &[9; 32]),
        ];
        for v in variants {
            assert_ne!(v, base);
        }
    }

    #[test]
    fn known_answer() {
        // Pinned so that a change to the binding (which would break every deployed verifier)
        // cannot go unnoticed.
        let data = report_data(TeeKind::Sim, Role::Train, &[0; 32], &[0; 32], &[0; 32]);
        assert_eq!(hex::encode(&data[..8]), KNOWN_PREFIX);
    }

    // Computed independently: python3 -c "import hashlib; print(hashlib.sha512(b'chiron report data v1\\0' + bytes(98)).hexdigest()[:16])"
    const KNOWN_PREFIX: &str = "837c193728aac1b9";
}
