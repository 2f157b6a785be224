//! Identifiers that appear in URLs and object paths.
//!
//! Every id that reaches a path is parsed into one of these types first, and parsing accepts
//! only lowercase hex of the exact expected length, so no id can contain `/`, `..` or anything
//! else that could escape its directory in the object store.

use std::fmt;

use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use thiserror::Error;

/// An id that is not lowercase hex of the expected length.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{what} must be {len} lowercase hex characters")]
pub struct BadId {
    /// Which kind of id was expected.
    pub what: &'static str,
    /// Its length in hex characters.
    pub len: usize,
}

/// True when `s` is exactly `len` characters of `0-9a-f`.
pub fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn random_hex16() -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $what:literal, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            /// Length in hex characters.
            pub const LEN: usize = $len;

            /// Parses an id from untrusted input.
            pub fn parse(s: &str) -> Result<Self, BadId> {
                if is_lower_hex(s, Self::LEN) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(BadId { what: $what, len: Self::LEN })
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

hex_id!(
    /// A program id: hex SHA-256 of the wasm.
    ProgramId, "program id", 64
);
hex_id!(
    /// A dataset id: 16 random bytes in hex.
    DatasetId, "dataset id", 32
);
hex_id!(
    /// A job id, which is also the id of the model the job produces: 16 random bytes in hex.
    JobId, "job id", 32
);

impl ProgramId {
    /// The id of a program: hex SHA-256 of its bytes.
    pub fn of_wasm(wasm: &[u8]) -> Self {
        Self(hex::encode(Sha256::digest(wasm)))
    }
}

impl DatasetId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(random_hex16())
    }
}

impl JobId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(random_hex16())
    }

    /// The evidence context for this job or its model: SHA-256 of the id's text.
    pub fn context(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

/// Parses a verifier's nonce: 64 hex characters (either case).
pub fn parse_nonce(s: &str) -> Result<[u8; 32], BadId> {
    let bad = BadId {
        what: "nonce",
        len: 64,
    };
    if s.len() != 64 {
        return Err(bad);
    }
    let mut nonce = [0u8; 32];
    hex::decode_to_slice(s, &mut nonce).map_err(|_| bad)?;
    Ok(nonce)
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_reject_path_tricks_and_wrong_shapes() {
        let good = "0123456789abcdef0123456789abcdef";
        assert!(JobId::parse(good).is_ok());
        assert!(DatasetId::parse(good).is_ok());
        for bad in [
            "",
            "../../../../../../../etc/passwd",
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "0123456789abcdef/123456789abcdef",
            "0123456789abcdef..23456789abcdef",
            "0123456789abcdef0123456789abcdeg",
        ] {
            assert!(JobId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(ProgramId::parse(good).is_err());
        let program = ProgramId::of_wasm(b"\0asm");
        assert_eq!(ProgramId::parse(&program.to_string()), Ok(program));
        assert!(JobId::parse(&JobId::random().to_string()).is_ok());
        assert!(DatasetId::parse(&DatasetId::random().to_string()).is_ok());
    }

    #[test]
    fn nonces_are_32_bytes_of_hex() {
        assert_eq!(parse_nonce(&"ab".repeat(32)), Ok([0xab; 32]));
        assert_eq!(parse_nonce(&"AB".repeat(32)), Ok([0xab; 32]));
        assert!(parse_nonce(&"ab".repeat(31)).is_err());
        assert!(parse_nonce(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn context_is_sha256_of_the_id_text() {
        let id = JobId::parse("00000000000000000000000000000000").expect("valid id");
        let expected: [u8; 32] = Sha256::digest(b"00000000000000000000000000000000").into();
        assert_eq!(id.context(), expected);
    }
}
