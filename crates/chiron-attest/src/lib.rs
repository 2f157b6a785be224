//! Chiron attestation: evidence that an enclave runs the expected runtime on genuine TEE
//! hardware, and the keys that only that hardware can derive.
//!
//! The crate has two sides, compiled separately so that each can be read on its own:
//!
//! - **Attesters** (feature `attester`, in the enclave): a [`attester::Platform`] produces the
//!   platform's signed statement over 64 bytes of report data and derives the enclave's
//!   sealing secret. One file per backend: [`attester::gramine`] (SGX under Gramine),
//!   [`attester::tsm`] (TDX and SEV-SNP through the Linux configfs-tsm interface) and
//!   [`attester::sim`] (simulated, INSECURE).
//! - **Verifiers** (feature `verifier`, at the owner): [`verify`] checks evidence against one
//!   typed [`Policy`]. One file per backend behind [`verifier::StatementVerifier`]:
//!   [`verifier::dcap`] (SGX and TDX quotes), [`verifier::snp`] (SEV-SNP reports) and
//!   [`verifier::sim`].
//!
//! Both sides share [`binding`], the one definition of what the report data commits to.
//!
//! Verification order is fixed: the statement's signatures and endorsements first, then the
//! report-data binding, and only then any claim (measurement, TCB, role, job, nonce) — no
//! conclusion is ever drawn from bytes that are not yet authenticated.

pub mod binding;
mod claims;
mod error;
mod sim_statement;

#[cfg(feature = "attester")]
pub mod attester;
#[cfg(feature = "verifier")]
pub mod policy;
#[cfg(feature = "verifier")]
pub mod sigstruct;
#[cfg(feature = "verifier")]
pub mod verifier;

pub use binding::{REPORT_DATA_LEN, ReportData, report_data};
pub use claims::{Identity, PlatformClaims};
pub use error::AttestationError;
#[cfg(feature = "attester")]
pub use error::AttesterError;

#[cfg(feature = "verifier")]
pub use policy::Policy;
#[cfg(feature = "verifier")]
pub use verifier::{VerifiedEnclave, verify};

/// The evidence `context` for a job or model id: the SHA-256 of the id's bytes.
pub fn context_digest(id: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(id.as_bytes()).into()
}

/// A fresh 32-byte nonce for one attestation request.
pub fn fresh_nonce() -> [u8; 32] {
    use rand::RngCore;
    let mut nonce = [0; 32];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    nonce
}

/// Reads endorsements named on a command line as `TEE=FILE` (`sgx=collateral.json`): the TEE
/// they are for, and the file's bytes.
pub fn read_endorsements(
    argument: &str,
) -> Result<(chiron_proto::evidence::TeeKind, Vec<u8>), String> {
    let (name, file) = argument
        .split_once('=')
        .ok_or_else(|| format!("`{argument}` is not TEE=FILE"))?;
    let tee = chiron_proto::evidence::TeeKind::from_name(name)
        .ok_or_else(|| format!("unknown TEE `{name}` (sim, sgx, tdx or sev-snp)"))?;
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read endorsements {file}: {e}"))?;
    Ok((tee, bytes))
}

/// The simulated platform's measurement of a runtime binary: the SHA-256 of the file. (On
/// hardware the platform measures the loaded image itself: MRENCLAVE, MRTD, the SNP launch
/// digest.)
pub fn measure_file(path: impl AsRef<std::path::Path>) -> std::io::Result<[u8; 32]> {
    use sha2::{Digest, Sha256};
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finalize().into())
}

/// [`measure_file`] for a binary already in memory.
pub fn measure_bytes(bytes: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).into()
}
