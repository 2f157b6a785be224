//! SGX SIGSTRUCT parsing: a real and a made vector, then every way a file is refused.
//!
//! Vectors (see `tests/vectors/sgx/README.md`):
//! - `enarx-encl.sig`: a real SIGSTRUCT, from the `sgx` crate's test data (Apache-2.0);
//! - `chiron-debug.sig`: made by `make_debug_sig.py`, with a date, a non-zero product id and
//!   security version, and the DEBUG attribute.
//!
//! The expected values were computed independently of this crate, with Python's standard
//! library only:
//!
//! ```text
//! python3 -c 'import sys,hashlib,struct; b=open(sys.argv[1],"rb").read(); \
//!   print(b[960:992].hex(), hashlib.sha256(b[128:512]).hexdigest(), \
//!   struct.unpack_from("<HH", b, 1024), hex(b[928]), b[20:24].hex())' FILE.sig
//! ```
//!
//! The MRENCLAVE of `enarx-encl.sig` was also recomputed from the enclave image it signs (the
//! `sgx` crate's `tests/encl.bin`: ECREATE with SSAFRAMESIZE 1 and size 32 KiB, then page 0 as
//! a TCS and pages 1–5 as regular RWX pages, all EADDed and EEXTENDed as the SDM describes),
//! which gives the same `b999536238fc…d61fc0`; and its RSA signature and Q1/Q2 were checked
//! with Python integers (`pow(s, 3, n)` against the PKCS#1 v1.5 SHA-256 encoding of bytes
//! 0..128 and 900..1028).

#![cfg(feature = "verifier")]

use chiron_attest::Identity;
use chiron_attest::Policy;
use chiron_attest::policy::SgxReference;
use chiron_attest::sigstruct::{self, SIGSTRUCT_LEN, SigStruct, SigStructError, SigningDate};

const REAL: &[u8] = include_bytes!("vectors/sgx/enarx-encl.sig");
const DEBUG: &[u8] = include_bytes!("vectors/sgx/chiron-debug.sig");

fn hex32(s: &str) -> [u8; 32] {
    let mut out = [0; 32];
    if hex::decode_to_slice(s, &mut out).is_err() {
        panic!("not 32 bytes of hex: {s}");
    }
    out
}

/// `bytes` with `byte` XORed into offset `at`.
fn flipped(bytes: &[u8], at: usize, byte: u8) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[at] ^= byte;
    out
}

#[test]
fn parses_the_real_sigstruct() {
    let sig = sigstruct::parse(REAL).unwrap();
    assert_eq!(
        sig,
        SigStruct {
            mrenclave: hex32("b999536238fcf4e9d360ef6cd3e0c20ef8a684c7b93f74a9c4a4c6d517d61fc0"),
            mrsigner: hex32("2f9f8fd4fe12d77232f1d87571ca8252ca27714efe7705e46222cffd5a22e8c4"),
            isv_prod_id: 0,
            isv_svn: 0,
            debug: false,
            date: None,
        }
    );
    assert!(sig.ensure_production().is_ok());
}

#[test]
fn parses_date_product_version_and_debug() {
    let sig = sigstruct::parse(DEBUG).unwrap();
    assert_eq!(
        sig,
        SigStruct {
            mrenclave: hex32("f2446461fbc991b933483d14741f127ea1c8f8977fbd179543f2dd686bfca6fb"),
            mrsigner: hex32("0be06b1876e2537135c3ff667deb54dd6173832fba580eb8cb069004c998f105"),
            isv_prod_id: 0x0102,
            isv_svn: 0x0304,
            debug: true,
            date: Some(SigningDate {
                year: 2025,
                month: 6,
                day: 20
            }),
        }
    );
    assert_eq!(sig.ensure_production(), Err(SigStructError::DebugEnclave));
}

#[test]
fn reference_pins_mrenclave_and_signer_reference_pins_the_signer() {
    let sig = sigstruct::parse(REAL).unwrap();
    assert_eq!(
        sig.reference(),
        SgxReference::Enclave {
            mrenclave: sig.mrenclave
        }
    );
    assert_eq!(
        sig.signer_reference(),
        SgxReference::Signer {
            mrsigner: sig.mrsigner,
            isv_prod_id: 0,
            min_isv_svn: 0
        }
    );

    // What a quote of this enclave would claim passes a policy built from the file; another
    // build does not.
    let policy = Policy::new().accept_sgx(sig.reference());
    let mut identity = Identity::Sgx {
        mrenclave: sig.mrenclave,
        mrsigner: sig.mrsigner,
        isv_prod_id: sig.isv_prod_id,
        isv_svn: sig.isv_svn,
    };
    assert!(policy.check_identity(&identity).is_ok());
    if let Identity::Sgx { mrenclave, .. } = &mut identity {
        mrenclave[0] ^= 1;
    }
    assert!(policy.check_identity(&identity).is_err());
}

#[test]
fn refuses_wrong_lengths() {
    for len in [0, 1, SIGSTRUCT_LEN - 1] {
        assert_eq!(
            sigstruct::parse(&REAL[..len]),
            Err(SigStructError::Length { found: len })
        );
    }
    let mut long = REAL.to_vec();
    long.push(0);
    let err = sigstruct::parse(&long).unwrap_err();
    assert_eq!(
        err,
        SigStructError::Length {
            found: SIGSTRUCT_LEN + 1
        }
    );
    assert!(err.to_string().contains("exactly 1808 bytes"), "{err}");
}

#[test]
fn refuses_tampered_headers() {
    let err = sigstruct::parse(&flipped(REAL, 4, 0x01)).unwrap_err();
    assert!(
        matches!(
            err,
            SigStructError::Header {
                name: "HEADER",
                offset: 0,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("06000000E10000000000010000000000"),
        "{err}"
    );

    let err = sigstruct::parse(&flipped(REAL, 24 + 15, 0x80)).unwrap_err();
    assert!(
        matches!(
            err,
            SigStructError::Header {
                name: "HEADER2",
                offset: 24,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn refuses_an_unknown_vendor_and_exponent() {
    assert_eq!(
        sigstruct::parse(&flipped(REAL, 16, 0x01)),
        Err(SigStructError::Vendor { found: 1 })
    );
    // Exponent 3 ^ 0x04 = 7.
    assert_eq!(
        sigstruct::parse(&flipped(REAL, 512, 0x04)),
        Err(SigStructError::Exponent { found: 7 })
    );
}

#[test]
fn refuses_a_flipped_signed_byte() {
    for (at, what) in [
        (20, "DATE"),
        (100, "reserved, in the signed header"),
        (900, "MISCSELECT"),
        (928, "ATTRIBUTES: the DEBUG bit"),
        (960, "MRENCLAVE"),
        (991, "MRENCLAVE's last byte"),
        (1024, "ISVPRODID"),
        (1027, "ISVSVN's high byte"),
    ] {
        let bit = if at == 928 { 0x02 } else { 0x01 };
        assert_eq!(
            sigstruct::parse(&flipped(REAL, at, bit)),
            Err(SigStructError::Signature),
            "{what} at {at}"
        );
    }
}

#[test]
fn refuses_a_changed_signature_or_key() {
    // The signature itself, and the modulus (another key: MRSIGNER would change too).
    assert_eq!(
        sigstruct::parse(&flipped(REAL, 516, 0x01)),
        Err(SigStructError::Signature)
    );
    assert_eq!(
        sigstruct::parse(&flipped(REAL, 200, 0x01)),
        Err(SigStructError::Signature)
    );
    // A modulus with its top byte cleared is no longer 3072 bits.
    let mut small = REAL.to_vec();
    small[128 + 383] = 0;
    assert!(matches!(
        sigstruct::parse(&small),
        Err(SigStructError::Modulus { .. })
    ));
}

#[test]
fn refuses_helper_values_the_cpu_would_refuse() {
    // Q1 and Q2 are outside the signed regions, but EINIT checks them.
    for at in [1040, 1423, 1424, 1807] {
        assert_eq!(
            sigstruct::parse(&flipped(REAL, at, 0x01)),
            Err(SigStructError::HelperValues),
            "byte {at}"
        );
    }
}

#[test]
fn bytes_outside_every_check_change_nothing() {
    // The reserved bytes between ISVSVN and Q1 (1028..1040) are the only ones neither signed
    // nor checked by the CPU: a SIGSTRUCT with them changed still parses the same.
    let parsed = sigstruct::parse(REAL).unwrap();
    for at in [1028, 1033, 1039] {
        assert_eq!(
            sigstruct::parse(&flipped(REAL, at, 0xff)),
            Ok(parsed.clone())
        );
    }
}
