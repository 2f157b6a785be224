//! Intel TDX and AMD SEV-SNP guests: the Linux configfs-tsm report interface.
//!
//! The kernel's ABI (`Documentation/ABI/testing/configfs-tsm`): a directory made under
//! `/sys/kernel/config/tsm/report/` is a report entry with these attributes:
//!
//! - `provider` (read): `tdx_guest` or `sev_guest`;
//! - `inblob` (write): up to 64 bytes, the report data;
//! - `outblob` (read): the report over the last `inblob`, generated when read — a TDX quote
//!   (through the host's quoting service) or an SNP attestation report;
//! - `auxblob` (read, SNP only): the host-supplied certificate table (VCEK or VLEK, ASK, ARK);
//! - `generation` (read): incremented on every write to the entry, so that a reader can
//!   detect another writer: read it before writing `inblob` and after reading `outblob`, and
//!   the difference must be exactly one.
//!
//! Each process uses its own entry, removed when the platform is dropped; the generation
//! check still guards against anything else writing to it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chiron_proto::evidence::TeeKind;
use zeroize::Zeroizing;

use super::{Platform, Statement, read_limited, write_existing};
use crate::binding::ReportData;
use crate::error::AttesterError;

/// Where the kernel mounts the configfs-tsm report directory.
pub const DEFAULT_DIR: &str = "/sys/kernel/config/tsm/report";

/// Largest report accepted from `outblob` (a TDX quote with its certification chain is about
/// 5 KiB; an SNP report 1184 bytes).
const MAX_OUTBLOB_LEN: usize = 128 * 1024;

/// Largest certificate table accepted from `auxblob`.
const MAX_AUXBLOB_LEN: usize = 64 * 1024;

/// How often a report is retried when another writer interferes.
const ATTEMPTS: usize = 3;

/// The VCEK's GUID in the SNP certificate table (63da758d-e664-4564-adc5-f4b93be8accd), in
/// its binary (mixed-endian) encoding.
const VCEK_GUID: [u8; 16] = guid(
    0x63da758d,
    0xe664,
    0x4564,
    [0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd],
);
/// The VLEK's GUID (a8074bc2-a25a-483e-aae6-39c045a0b8a1).
const VLEK_GUID: [u8; 16] = guid(
    0xa8074bc2,
    0xa25a,
    0x483e,
    [0xaa, 0xe6, 0x39, 0xc0, 0x45, 0xa0, 0xb8, 0xa1],
);

const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

/// A TDX or SEV-SNP guest reporting through configfs-tsm.
#[derive(Debug)]
pub struct TsmPlatform {
    entry: PathBuf,
    tee: TeeKind,
    lock: Mutex<()>,
}

impl TsmPlatform {
    /// Opens a report entry of this process under `root` and reads which TEE provides it.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, AttesterError> {
        let entry = root.as_ref().join(format!("chiron-{}", std::process::id()));
        match std::fs::create_dir(&entry) {
            Ok(()) => {}
            // Left by an earlier process with our id; the generation check makes sharing safe.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(AttesterError::Io {
                    path: entry,
                    source,
                });
            }
        }
        let provider_path = entry.join("provider");
        let provider = read_limited(&provider_path, 64)?;
        let tee = match String::from_utf8_lossy(&provider).trim() {
            "tdx_guest" => TeeKind::Tdx,
            "sev_guest" => TeeKind::SevSnp,
            other => {
                return Err(AttesterError::Protocol {
                    path: provider_path,
                    reason: format!("unknown provider {other:?} (tdx_guest or sev_guest expected)"),
                });
            }
        };
        Ok(Self {
            entry,
            tee,
            lock: Mutex::new(()),
        })
    }

    fn generation(&self) -> Result<u64, AttesterError> {
        let path = self.entry.join("generation");
        let text = read_limited(&path, 32)?;
        String::from_utf8_lossy(&text)
            .trim()
            .parse()
            .map_err(|_| AttesterError::Protocol {
                path,
                reason: "a generation that is not a number".into(),
            })
    }

    /// One attempt: the report and the generations around it.
    fn report_once(&self, report_data: &ReportData) -> Result<(Vec<u8>, u64, u64), AttesterError> {
        let before = self.generation()?;
        write_existing(&self.entry.join("inblob"), report_data)?;
        let outblob = read_limited(&self.entry.join("outblob"), MAX_OUTBLOB_LEN)?;
        let after = self.generation()?;
        Ok((outblob, before, after))
    }

    /// The VCEK or VLEK from the host's certificate table, if the host supplied one.
    fn endorsement(&self) -> Result<Vec<u8>, AttesterError> {
        let path = self.entry.join("auxblob");
        if self.tee != TeeKind::SevSnp || !path.exists() {
            return Ok(Vec::new());
        }
        let table = read_limited(&path, MAX_AUXBLOB_LEN)?;
        snp_chip_certificate(&table).map_err(|reason| AttesterError::Protocol { path, reason })
    }
}

impl Platform for TsmPlatform {
    fn tee(&self) -> TeeKind {
        self.tee
    }

    fn attest(&self, report_data: &ReportData) -> Result<Statement, AttesterError> {
        // Poisoning only means another thread panicked between file operations; the entry's
        // files hold no state that panic could corrupt, and the generation check catches the
        // rest.
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut last = (0, 0);
        for _ in 0..ATTEMPTS {
            let (outblob, before, after) = self.report_once(report_data)?;
            if after == before.wrapping_add(1) {
                if outblob.is_empty() {
                    return Err(AttesterError::Protocol {
                        path: self.entry.join("outblob"),
                        reason: "an empty report".into(),
                    });
                }
                return Ok(Statement {
                    bytes: outblob,
                    endorsements: self.endorsement()?,
                });
            }
            last = (before, after);
        }
        Err(AttesterError::ConcurrentWriter {
            path: self.entry.clone(),
            before: last.0,
            after: last.1,
        })
    }

    fn sealing_secret(&self) -> Result<Zeroizing<[u8; 32]>, AttesterError> {
        match self.tee {
            TeeKind::SevSnp => snp_derived_key(),
            _ => Err(AttesterError::NoSealingKey(
                "Intel TDX offers a trust domain no sealing key of its own: a TDX enclave cannot \
                 seal models; run training and query enclaves on SGX or SEV-SNP"
                    .into(),
            )),
        }
    }
}

impl Drop for TsmPlatform {
    fn drop(&mut self) {
        // configfs removes an entry's attributes with it; a failure leaves an entry the
        // kernel frees at reboot.
        let _ = std::fs::remove_dir(&self.entry);
    }
}

/// The VCEK or VLEK (DER) in an SNP certificate table: 24-byte entries of GUID, offset and
/// length (little-endian, offsets from the table's start), ended by an all-zero entry.
pub fn snp_chip_certificate(table: &[u8]) -> Result<Vec<u8>, String> {
    let mut rest = table;
    loop {
        let Some((entry, tail)) = rest.split_first_chunk::<24>() else {
            return Err("the certificate table ends without its terminating entry".into());
        };
        rest = tail;
        if entry.iter().all(|&b| b == 0) {
            return Ok(Vec::new());
        }
        let (guid, place) = entry.split_at(16);
        if guid != VCEK_GUID && guid != VLEK_GUID {
            continue;
        }
        let (offset, length) = place.split_at(4);
        let offset = u32::from_le_bytes(offset.try_into().map_err(|_| "short entry")?) as usize;
        let length = u32::from_le_bytes(length.try_into().map_err(|_| "short entry")?) as usize;
        return offset
            .checked_add(length)
            .and_then(|end| table.get(offset..end))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| "a certificate entry points outside the table".into());
    }
}

/// The SNP derived key: the AMD Secure Processor's key derived from the chip's VCEK root and
/// mixed with this guest's launch measurement and guest policy, so only this image, launched
/// with this policy, on this chip derives it.
#[cfg(target_os = "linux")]
fn snp_derived_key() -> Result<Zeroizing<[u8; 32]>, AttesterError> {
    use sev::firmware::guest::{DerivedKey, Firmware, GuestFieldSelect};
    let device = PathBuf::from("/dev/sev-guest");
    let io = |e: std::io::Error| AttesterError::Io {
        path: device.clone(),
        source: e,
    };
    let mut firmware = Firmware::open().map_err(io)?;
    let mut fields = GuestFieldSelect::default();
    fields.set_measurement(true);
    // And the guest policy: otherwise the same image launched with debugging allowed (whose
    // memory the host can read) would derive the same key.
    fields.set_guest_policy(true);
    // Root: the VCEK (chip-unique); VMPL 0; guest SVN and TCB 0 (the current ones).
    let request = DerivedKey::new(false, fields, 0, 0, 0, None);
    let key = firmware
        .get_derived_key(Some(1), request)
        .map_err(|e| io(std::io::Error::other(e.to_string())))?;
    Ok(Zeroizing::new(key))
}

#[cfg(not(target_os = "linux"))]
fn snp_derived_key() -> Result<Zeroizing<[u8; 32]>, AttesterError> {
    Err(AttesterError::NoSealingKey(
        "SEV-SNP derived keys are requested through Linux's /dev/sev-guest".into(),
    ))
}
