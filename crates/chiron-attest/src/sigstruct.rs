//! SGX SIGSTRUCT files: what an owner pins for an SGX enclave, read from the signed build.
//!
//! `gramine-sgx-sign` writes the enclave's SIGSTRUCT (Intel SDM vol. 3D, "Enclave Signature
//! Structure") next to the signed manifest as a 1808-byte `.sig` file. It carries the values
//! the CPU checks at `EINIT` and reports in every quote: MRENCLAVE (the enclave's measurement,
//! which under Gramine covers the manifest and, through it, every trusted file's hash), the
//! signer's RSA-3072 public key (whose SHA-256 is MRSIGNER), the product id and the security
//! version. [`parse`] reads one, checks its fixed headers, verifies its RSA signature and the
//! `Q1`/`Q2` helper values the CPU checks, and only then returns the values an owner pins.
//!
//! Layout (all integers little-endian; byte offsets):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 16 | HEADER `06000000E10000000000010000000000` |
//! | 16 | 4 | VENDOR: `0` (non-Intel) or `0x8086` (Intel) |
//! | 20 | 4 | DATE, binary-coded decimal: day, month, year (2 bytes) |
//! | 24 | 16 | HEADER2 `01010000600000006000000001000000` |
//! | 128 | 384 | MODULUS of the signer's key |
//! | 512 | 4 | EXPONENT: 3 |
//! | 516 | 384 | SIGNATURE |
//! | 900 | 4 | MISCSELECT |
//! | 928 | 16 | ATTRIBUTES (flags, then XFRM); flag bit 1 is DEBUG |
//! | 960 | 32 | ENCLAVEHASH (MRENCLAVE) |
//! | 1024 | 2 | ISVPRODID |
//! | 1026 | 2 | ISVSVN |
//! | 1040 | 384 | Q1 |
//! | 1424 | 384 | Q2 |
//!
//! The signature is RSASSA-PKCS1-v1_5 with SHA-256 over bytes `0..128` followed by bytes
//! `900..1028`; the modulus, signature, `Q1` and `Q2` are stored little-endian. MRSIGNER is the
//! SHA-256 of the 384 modulus bytes exactly as stored.
//!
//! A valid signature proves that the holder of the modulus's private key signed these values;
//! it says nothing about who that is. The owner decides whom to trust by the MRSIGNER it pins,
//! or pins the MRENCLAVE itself.

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::policy::SgxReference;

/// The size of a SIGSTRUCT, in bytes.
pub const SIGSTRUCT_LEN: usize = 1808;

/// The fixed first header.
const HEADER: [u8; 16] = [
    0x06, 0x00, 0x00, 0x00, 0xe1, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
];
/// The fixed second header.
const HEADER2: [u8; 16] = [
    0x01, 0x01, 0x00, 0x00, 0x60, 0x00, 0x00, 0x00, 0x60, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
];

/// VENDOR of an enclave signed by anyone but Intel.
const VENDOR_OTHER: u32 = 0;
/// VENDOR of an Intel enclave.
const VENDOR_INTEL: u32 = 0x8086;
/// The only RSA public exponent SGX accepts.
const EXPONENT: u32 = 3;
/// The RSA-3072 key and signature size, in bytes.
const KEY_LEN: usize = 384;
/// ATTRIBUTES.FLAGS bit 1: the enclave can be debugged (its memory read by the host).
const FLAG_DEBUG: u64 = 1 << 1;

const HEADER_AT: usize = 0;
const VENDOR_AT: usize = 16;
const DATE_AT: usize = 20;
const HEADER2_AT: usize = 24;
const MODULUS_AT: usize = 128;
const EXPONENT_AT: usize = 512;
const SIGNATURE_AT: usize = 516;
const MISC_SELECT_AT: usize = 900;
const ATTRIBUTES_AT: usize = 928;
const ENCLAVE_HASH_AT: usize = 960;
const ISV_PROD_ID_AT: usize = 1024;
const ISV_SVN_AT: usize = 1026;
const Q1_AT: usize = 1040;
const Q2_AT: usize = 1424;

/// The two signed regions: the header part, and the enclave body from MISCSELECT to ISVSVN.
const SIGNED: [std::ops::Range<usize>; 2] = [0..128, MISC_SELECT_AT..MISC_SELECT_AT + 128];

/// Why a SIGSTRUCT file was refused. Each message says what to check.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SigStructError {
    /// The input is not 1808 bytes long.
    #[error(
        "a SIGSTRUCT is exactly {SIGSTRUCT_LEN} bytes, this input has {found}: pass the `.sig` \
         file gramine-sgx-sign wrote next to the `.manifest.sgx`, not the manifest itself, and \
         check that it was copied whole"
    )]
    Length {
        /// The input's length.
        found: usize,
    },
    /// A fixed header does not have its constant value.
    #[error(
        "bytes {offset}..{end} are not the SIGSTRUCT {name} ({expected}): this is not a SIGSTRUCT, \
         or a damaged one; sign the manifest again with gramine-sgx-sign",
        end = offset + 16
    )]
    Header {
        /// `HEADER` or `HEADER2`.
        name: &'static str,
        /// Where the header starts.
        offset: usize,
        /// The constant expected there, in hex.
        expected: &'static str,
    },
    /// VENDOR is neither 0 nor Intel's 0x8086.
    #[error(
        "the SIGSTRUCT's VENDOR is {found:#x}, which no CPU accepts (0 or 0x8086 expected): the \
         file is damaged or was not written by an SGX signing tool"
    )]
    Vendor {
        /// The VENDOR field.
        found: u32,
    },
    /// The signer's RSA exponent is not 3.
    #[error(
        "the signer's RSA public exponent is {found}; SGX accepts only 3: sign with an RSA-3072 \
         key whose exponent is 3 (gramine-sgx-gen-private-key makes one)"
    )]
    Exponent {
        /// The EXPONENT field.
        found: u32,
    },
    /// The modulus is not a usable RSA-3072 public key.
    #[error(
        "the SIGSTRUCT's MODULUS is not a valid RSA-3072 public key ({detail}): the file is \
         damaged; sign the manifest again"
    )]
    Modulus {
        /// What the RSA implementation reported.
        detail: String,
    },
    /// The RSA signature does not verify over the signed fields.
    #[error(
        "the SIGSTRUCT's RSA signature does not verify: the file was altered after signing (its \
         MRENCLAVE, product id, security version, attributes or date are not what was signed); \
         do not pin anything from it, and sign the manifest again"
    )]
    Signature,
    /// `Q1`/`Q2` do not match the signature: the CPU would refuse to start the enclave.
    #[error(
        "the SIGSTRUCT's Q1/Q2 values do not match its signature and modulus, so the CPU would \
         refuse to initialise the enclave (EINIT): the file is damaged; sign the manifest again"
    )]
    HelperValues,
    /// The enclave is a debug enclave, which an owner must never pin.
    #[error(
        "the SIGSTRUCT is for a debug enclave (ATTRIBUTES.DEBUG is set): the host can read and \
         change its memory, so it protects nothing; build it with `sgx.debug = false`"
    )]
    DebugEnclave,
}

/// The signing date written in a SIGSTRUCT (binary-coded decimal in the file). It is signed but
/// not part of the measurement, and reproducible builds set it to zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SigningDate {
    /// The year, e.g. 2025.
    pub year: u16,
    /// The month, 1 to 12.
    pub month: u8,
    /// The day of the month, 1 to 31.
    pub day: u8,
}

/// The values of a verified SIGSTRUCT that an owner pins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigStruct {
    /// MRENCLAVE: the measurement the CPU computes for the enclave (ENCLAVEHASH).
    pub mrenclave: [u8; 32],
    /// MRSIGNER: SHA-256 of the signer's RSA modulus as stored (little-endian).
    pub mrsigner: [u8; 32],
    /// ISVPRODID: the product id the signer gave the enclave.
    pub isv_prod_id: u16,
    /// ISVSVN: the security version the signer gave the enclave.
    pub isv_svn: u16,
    /// Whether ATTRIBUTES.DEBUG is set: a debug enclave protects nothing.
    pub debug: bool,
    /// The signing date, when one was written (`None` for the all-zero date of reproducible
    /// builds, or a date that is not valid binary-coded decimal).
    pub date: Option<SigningDate>,
}

impl SigStruct {
    /// The reference value that accepts exactly this enclave build (its MRENCLAVE).
    pub fn reference(&self) -> SgxReference {
        SgxReference::Enclave {
            mrenclave: self.mrenclave,
        }
    }

    /// The reference value that accepts any enclave this signer releases for this product at
    /// this security version or a later one (MRSIGNER, ISVPRODID, minimum ISVSVN).
    pub fn signer_reference(&self) -> SgxReference {
        SgxReference::Signer {
            mrsigner: self.mrsigner,
            isv_prod_id: self.isv_prod_id,
            min_isv_svn: self.isv_svn,
        }
    }

    /// Refuses a debug enclave: call this before pinning anything from a SIGSTRUCT.
    pub fn ensure_production(&self) -> Result<(), SigStructError> {
        if self.debug {
            return Err(SigStructError::DebugEnclave);
        }
        Ok(())
    }
}

/// Parses and verifies a SIGSTRUCT: the length, both headers, VENDOR and the exponent, then the
/// RSA signature over the signed fields and the `Q1`/`Q2` values the CPU checks. Values are read
/// only once all of that has passed.
pub fn parse(bytes: &[u8]) -> Result<SigStruct, SigStructError> {
    let bytes: &[u8; SIGSTRUCT_LEN] = bytes
        .try_into()
        .map_err(|_| SigStructError::Length { found: bytes.len() })?;
    if field::<16>(bytes, HEADER_AT) != HEADER {
        return Err(SigStructError::Header {
            name: "HEADER",
            offset: HEADER_AT,
            expected: "06000000E10000000000010000000000",
        });
    }
    if field::<16>(bytes, HEADER2_AT) != HEADER2 {
        return Err(SigStructError::Header {
            name: "HEADER2",
            offset: HEADER2_AT,
            expected: "01010000600000006000000001000000",
        });
    }
    let vendor = u32::from_le_bytes(field(bytes, VENDOR_AT));
    if vendor != VENDOR_OTHER && vendor != VENDOR_INTEL {
        return Err(SigStructError::Vendor { found: vendor });
    }
    let exponent = u32::from_le_bytes(field(bytes, EXPONENT_AT));
    if exponent != EXPONENT {
        return Err(SigStructError::Exponent { found: exponent });
    }
    verify_signature(bytes)?;

    let modulus: [u8; KEY_LEN] = field(bytes, MODULUS_AT);
    let flags = u64::from_le_bytes(field(bytes, ATTRIBUTES_AT));
    Ok(SigStruct {
        mrenclave: field(bytes, ENCLAVE_HASH_AT),
        mrsigner: Sha256::digest(modulus).into(),
        isv_prod_id: u16::from_le_bytes(field(bytes, ISV_PROD_ID_AT)),
        isv_svn: u16::from_le_bytes(field(bytes, ISV_SVN_AT)),
        debug: flags & FLAG_DEBUG != 0,
        date: signing_date(field(bytes, DATE_AT)),
    })
}

/// Verifies the RSA-3072 PKCS#1 v1.5 SHA-256 signature, then `Q1 = ⌊S²/M⌋` and
/// `Q2 = ⌊(S² mod M)·S/M⌋`, which `EINIT` checks as well.
fn verify_signature(bytes: &[u8; SIGSTRUCT_LEN]) -> Result<(), SigStructError> {
    use rsa::traits::PublicKeyParts;
    use rsa::{BigUint, Pkcs1v15Sign, RsaPublicKey};

    let modulus = BigUint::from_bytes_le(&field::<KEY_LEN>(bytes, MODULUS_AT));
    let key = RsaPublicKey::new(modulus, BigUint::from(EXPONENT)).map_err(|e| {
        SigStructError::Modulus {
            detail: e.to_string(),
        }
    })?;
    if key.size() != KEY_LEN {
        return Err(SigStructError::Modulus {
            detail: format!("a {}-bit modulus, 3072 bits expected", key.n().bits()),
        });
    }

    let mut hasher = Sha256::new();
    for range in SIGNED {
        hasher.update(bytes.get(range).unwrap_or_default());
    }
    let digest = hasher.finalize();
    let mut signature: [u8; KEY_LEN] = field(bytes, SIGNATURE_AT);
    signature.reverse(); // stored little-endian; PKCS#1 is big-endian
    key.verify(Pkcs1v15Sign::new::<Sha256>(), &digest, &signature)
        .map_err(|_| SigStructError::Signature)?;

    let s = BigUint::from_bytes_le(&field::<KEY_LEN>(bytes, SIGNATURE_AT));
    let q1 = BigUint::from_bytes_le(&field::<KEY_LEN>(bytes, Q1_AT));
    let q2 = BigUint::from_bytes_le(&field::<KEY_LEN>(bytes, Q2_AT));
    let m = key.n();
    let square = &s * &s;
    if q1 != &square / m || q2 != (&square % m) * &s / m {
        return Err(SigStructError::HelperValues);
    }
    Ok(())
}

/// The `N` bytes at `at` (every caller's range lies inside the fixed-size structure).
fn field<const N: usize>(bytes: &[u8; SIGSTRUCT_LEN], at: usize) -> [u8; N] {
    let mut out = [0; N];
    if let Some(src) = at.checked_add(N).and_then(|end| bytes.get(at..end)) {
        out.copy_from_slice(src);
    }
    out
}

/// DATE: bytes day, month, then the year's low and high byte, each two BCD digits.
fn signing_date(raw: [u8; 4]) -> Option<SigningDate> {
    if raw == [0; 4] {
        return None;
    }
    let bcd = |b: u8| (b >> 4 < 10 && b & 0x0f < 10).then(|| (b >> 4) * 10 + (b & 0x0f));
    let [day, month, year_low, year_high] = raw;
    let date = SigningDate {
        year: u16::from(bcd(year_high)?) * 100 + u16::from(bcd(year_low)?),
        month: bcd(month)?,
        day: bcd(day)?,
    };
    ((1..=12).contains(&date.month) && (1..=31).contains(&date.day)).then_some(date)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_is_binary_coded_decimal() {
        // 2023-04-14 is written 14 04 23 20, as Intel's signing tool and Gramine write it.
        assert_eq!(
            signing_date([0x14, 0x04, 0x23, 0x20]),
            Some(SigningDate {
                year: 2023,
                month: 4,
                day: 14
            })
        );
        assert_eq!(signing_date([0; 4]), None);
        // Binary instead of BCD (0x0e = 14), and an impossible month.
        assert_eq!(signing_date([0x0e, 0x04, 0xe7, 0x07]), None);
        assert_eq!(signing_date([0x01, 0x13, 0x25, 0x20]), None);
    }

    #[test]
    fn signed_regions_cover_the_header_and_the_body() {
        assert_eq!(SIGNED[0], 0..128);
        assert_eq!(SIGNED[1], 900..1028);
        assert_eq!(ISV_SVN_AT + 2, SIGNED[1].end);
        assert_eq!(Q2_AT + KEY_LEN, SIGSTRUCT_LEN);
    }
}
