//! The enclave's side: the platform's signed statement, and a sealing secret only the
//! platform can derive.
//!
//! [`open`] picks the backend from what the machine offers (or what the operator forces):
//! Gramine's `/dev/attestation` means an SGX enclave, the kernel's configfs-tsm report
//! directory a TDX or SEV-SNP guest (its `provider` says which). The simulated platform is
//! never chosen here: the enclave binary opens it only behind an explicitly dangerous flag.
//! The interface roots are parameters, so tests drive the real code against fake trees.

pub mod gramine;
pub mod sim;
pub mod tsm;

use std::path::PathBuf;

use chiron_proto::evidence::{EVIDENCE_VERSION, Evidence, Role, TeeKind};
use zeroize::Zeroizing;

use crate::binding::ReportData;
use crate::error::AttesterError;

/// A platform statement and the endorsements the platform handed out with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    /// The signed statement (DCAP quote, SNP report, simulated statement).
    pub bytes: Vec<u8>,
    /// Vendor endorsements the platform supplied (the SNP VCEK or VLEK from the host's
    /// certificate table), or empty.
    pub endorsements: Vec<u8>,
}

/// A TEE platform as the enclave sees it.
pub trait Platform: Send + Sync {
    /// The backend.
    fn tee(&self) -> TeeKind;

    /// A statement signed by the platform over `report_data`.
    fn attest(&self, report_data: &ReportData) -> Result<Statement, AttesterError>;

    /// A 32-byte secret that only this platform, running this code identity, can derive: the
    /// root of the enclave's sealing keys. Nothing the host holds yields it (except on the
    /// simulated platform).
    fn sealing_secret(&self) -> Result<Zeroizing<[u8; 32]>, AttesterError>;
}

/// Evidence from `platform` for an enclave in `role` holding `enclave_public_key`, answering
/// `nonce` for the job or model `context`: the platform's statement over the report data that
/// binds them all ([`crate::binding`]), with whatever endorsements the platform supplied.
pub fn evidence(
    platform: &dyn Platform,
    role: Role,
    enclave_public_key: [u8; 32],
    nonce: [u8; 32],
    context: [u8; 32],
) -> Result<Evidence, AttesterError> {
    let tee = platform.tee();
    let report_data = crate::report_data(tee, role, &enclave_public_key, &nonce, &context);
    let statement = platform.attest(&report_data)?;
    Ok(Evidence {
        version: EVIDENCE_VERSION,
        tee,
        role,
        enclave_public_key,
        nonce,
        context,
        statement: statement.bytes,
        endorsements: statement.endorsements,
    })
}

/// Where the platform's interfaces are mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interfaces {
    /// Gramine's attestation pseudo-files (`/dev/attestation`).
    pub gramine: PathBuf,
    /// The kernel's configfs-tsm report directory (`/sys/kernel/config/tsm/report`).
    pub tsm: PathBuf,
}

impl Default for Interfaces {
    fn default() -> Self {
        Self {
            gramine: PathBuf::from(gramine::DEFAULT_DIR),
            tsm: PathBuf::from(tsm::DEFAULT_DIR),
        }
    }
}

/// Which hardware backend to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Whatever the machine offers: Gramine SGX first, then configfs-tsm.
    Auto,
    /// A backend the operator forces; starting fails if the machine does not offer it.
    Forced(TeeKind),
}

/// Opens the hardware platform `choice` names.
pub fn open(choice: Choice, at: &Interfaces) -> Result<Box<dyn Platform>, AttesterError> {
    match choice {
        Choice::Forced(TeeKind::Sgx) => Ok(Box::new(gramine::GramineSgx::open(&at.gramine)?)),
        Choice::Forced(tee @ (TeeKind::Tdx | TeeKind::SevSnp)) => {
            let platform = tsm::TsmPlatform::open(&at.tsm)?;
            if platform.tee() != tee {
                return Err(AttesterError::Protocol {
                    path: at.tsm.clone(),
                    reason: format!(
                        "{tee} was forced, but the kernel's provider is {}",
                        platform.tee()
                    ),
                });
            }
            Ok(Box::new(platform))
        }
        Choice::Forced(TeeKind::Sim) => Err(AttesterError::SimPlatform {
            path: PathBuf::new(),
            reason: "the simulated platform is opened only with its key file, explicitly".into(),
        }),
        Choice::Auto => {
            if at.gramine.exists() {
                Ok(Box::new(gramine::GramineSgx::open(&at.gramine)?))
            } else if at.tsm.exists() {
                Ok(Box::new(tsm::TsmPlatform::open(&at.tsm)?))
            } else {
                Err(AttesterError::NoTee {
                    attestation: at.gramine.clone(),
                    tsm: at.tsm.clone(),
                })
            }
        }
    }
}

/// Reads a small pseudo-file whole, refusing more than `limit` bytes.
pub(crate) fn read_limited(path: &std::path::Path, limit: usize) -> Result<Vec<u8>, AttesterError> {
    use std::io::Read;
    let io = |source| AttesterError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit as u64 + 1).read_to_end(&mut out))
        .map_err(io)?;
    if out.len() > limit {
        return Err(AttesterError::Protocol {
            path: path.to_path_buf(),
            reason: format!("more than {limit} bytes"),
        });
    }
    Ok(out)
}

/// Writes a pseudo-file that must already exist (pseudo-files are never created by writing).
pub(crate) fn write_existing(path: &std::path::Path, bytes: &[u8]) -> Result<(), AttesterError> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|source| AttesterError::Io {
            path: path.to_path_buf(),
            source,
        })
}
