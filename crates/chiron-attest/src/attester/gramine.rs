//! Intel SGX under Gramine: the `/dev/attestation` pseudo-files.
//!
//! Gramine (with `sgx.remote_attestation = "dcap"` in its manifest) exposes, inside the
//! enclave:
//!
//! - `attestation_type`: `dcap` when DCAP quotes are available;
//! - `user_report_data`: 64 bytes written here become the report data of the next quote;
//! - `quote`: reading it produces a DCAP quote (v3) over the last report data written;
//! - `keys/_sgx_mrenclave`: a 16-byte key derived by the CPU from its sealing fuse key and
//!   this enclave's MRENCLAVE (`EGETKEY`), the same on every start of the same enclave build
//!   on the same CPU, and underivable by anything else — the host included.
//!
//! Pseudo-files are per enclave; a lock keeps this process's threads from interleaving a
//! write of report data with another thread's read of the quote.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chiron_proto::evidence::TeeKind;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{Platform, Statement, read_limited, write_existing};
use crate::binding::ReportData;
use crate::error::AttesterError;

/// Where Gramine mounts its attestation pseudo-files.
pub const DEFAULT_DIR: &str = "/dev/attestation";

/// Largest quote accepted from the interface (a DCAP v3 quote with its certification data
/// is about 5 KiB).
const MAX_QUOTE_LEN: usize = 64 * 1024;

/// Gramine's sealing keys are 128-bit.
const SEALING_KEY_LEN: usize = 16;

/// An SGX enclave running under Gramine.
#[derive(Debug)]
pub struct GramineSgx {
    dir: PathBuf,
    lock: Mutex<()>,
}

impl GramineSgx {
    /// Opens Gramine's attestation interface at `dir`, which must offer DCAP quotes.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, AttesterError> {
        let dir = dir.as_ref().to_path_buf();
        let kind_path = dir.join("attestation_type");
        let kind = read_limited(&kind_path, 64)?;
        let kind = String::from_utf8_lossy(&kind);
        if kind.trim() != "dcap" {
            return Err(AttesterError::Protocol {
                path: kind_path,
                reason: format!(
                    "Gramine's attestation type is {:?}; the manifest must set \
                     sgx.remote_attestation = \"dcap\"",
                    kind.trim()
                ),
            });
        }
        Ok(Self {
            dir,
            lock: Mutex::new(()),
        })
    }
}

impl Platform for GramineSgx {
    fn tee(&self) -> TeeKind {
        TeeKind::Sgx
    }

    fn attest(&self, report_data: &ReportData) -> Result<Statement, AttesterError> {
        // A poisoned lock only means another thread panicked between the two file operations;
        // the files themselves hold no state that panic could corrupt.
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        write_existing(&self.dir.join("user_report_data"), report_data)?;
        let quote_path = self.dir.join("quote");
        let quote = read_limited(&quote_path, MAX_QUOTE_LEN)?;
        if quote.is_empty() {
            return Err(AttesterError::Protocol {
                path: quote_path,
                reason: "an empty quote".into(),
            });
        }
        // Collateral comes from Intel's provisioning service, never from the enclave.
        Ok(Statement {
            bytes: quote,
            endorsements: Vec::new(),
        })
    }

    fn sealing_secret(&self) -> Result<Zeroizing<[u8; 32]>, AttesterError> {
        let path = self.dir.join("keys").join("_sgx_mrenclave");
        let key = Zeroizing::new(read_limited(&path, SEALING_KEY_LEN)?);
        if key.len() != SEALING_KEY_LEN {
            return Err(AttesterError::Protocol {
                path,
                reason: format!("a {}-byte key, {SEALING_KEY_LEN} expected", key.len()),
            });
        }
        let mut hasher = Sha256::new();
        hasher.update(b"chiron sealing root v1\0sgx mrenclave\0");
        hasher.update(&*key);
        Ok(Zeroizing::new(hasher.finalize().into()))
    }
}
