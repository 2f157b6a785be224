//! Attestation evidence: what an enclave presents to prove which runtime it runs.
//!
//! Evidence binds, under a platform signature, the runtime measurement, the enclave's role, the
//! enclave's ephemeral public key, the verifier's fresh nonce and the job or model it serves
//! (DESIGN.md, "Attestation and keys"). These are only the shapes; verification lives in
//! `chiron-crypto::attest`, and nothing read here may be trusted until it has passed there.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The evidence format version this crate writes and understands.
pub const EVIDENCE_VERSION: u16 = 1;

/// Largest accepted encoded evidence, in bytes.
///
/// Simulated evidence is about 260 bytes; the bound leaves room for hardware quotes (SGX/TDX
/// DCAP quotes are a few KiB) while keeping a hostile peer from making us allocate much.
pub const MAX_EVIDENCE_LEN: usize = 16 * 1024;

/// Domain-separation prefix of the signed encoding, so an evidence signature can never be
/// mistaken for a signature over any other Chiron message.
const SIGNED_PREFIX: &[u8] = b"chiron attestation evidence\0";

/// Which trusted execution environment produced the evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TeeKind {
    /// A local, software-only platform key. INSECURE: anyone holding the platform key file can
    /// forge evidence. For development and tests only.
    ///
    /// SGX and TDX (DCAP quotes) and SEV-SNP reports will be added as further variants.
    Sim,
}

impl TeeKind {
    /// Stable one-byte code used in the signed encoding.
    fn code(self) -> u8 {
        match self {
            Self::Sim => 0,
        }
    }
}

impl fmt::Display for TeeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sim => "sim (insecure, development only)",
        })
    }
}

/// The job an enclave process serves; roles may share the binary, never a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Runs the provider program's `train` on the owner's dataset.
    Train,
    /// Loads a sealed model and answers the owner's queries with the program's `predict`.
    Query,
}

impl Role {
    /// Stable one-byte code used in the signed encoding.
    fn code(self) -> u8 {
        match self {
            Self::Train => 0,
            Self::Query => 1,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Train => "train",
            Self::Query => "query",
        })
    }
}

/// Attestation evidence as it travels on the wire.
///
/// Every field except `signature` is covered by the signature through [`Evidence::signed_bytes`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Format version; [`EVIDENCE_VERSION`] for evidence written by this crate.
    pub version: u16,
    /// The TEE backend that signed this evidence.
    pub tee: TeeKind,
    /// The role the enclave process was started in.
    pub role: Role,
    /// SHA-256 of the enclave runtime binary.
    pub measurement: [u8; 32],
    /// The enclave's ephemeral X25519 public key; secrets for this enclave are sealed to it.
    pub enclave_public_key: [u8; 32],
    /// The verifier's fresh nonce, echoed to prove the evidence is not a replay.
    pub nonce: [u8; 32],
    /// SHA-256 of the job id or model id the enclave serves.
    pub context: [u8; 32],
    /// The platform key that signed the evidence (for [`TeeKind::Sim`], an Ed25519 public key).
    pub platform_key: [u8; 32],
    /// Signature by `platform_key` over [`Evidence::signed_bytes`].
    pub signature: Vec<u8>,
}

/// Evidence bytes that cannot be decoded.
#[derive(Debug, Error)]
pub enum EvidenceError {
    /// Longer than [`MAX_EVIDENCE_LEN`].
    #[error("attestation evidence is {len} bytes, above the {MAX_EVIDENCE_LEN}-byte limit")]
    TooLarge {
        /// Length of the rejected input.
        len: usize,
    },
    /// Not a postcard-encoded [`Evidence`].
    #[error("attestation evidence is malformed: {0}")]
    Decode(#[from] postcard::Error),
    /// Bytes left over after the evidence.
    #[error("attestation evidence is followed by {0} unexpected bytes")]
    TrailingBytes(usize),
}

impl Evidence {
    /// The canonical encoding the platform signs: a domain-separation prefix followed by every
    /// field except `signature`, at fixed offsets.
    ///
    /// It is written by hand rather than by a serializer so that its bytes can never change
    /// with a library upgrade, which would silently invalidate every signature.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SIGNED_PREFIX.len() + 2 + 2 + 5 * 32);
        out.extend_from_slice(SIGNED_PREFIX);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.push(self.tee.code());
        out.push(self.role.code());
        out.extend_from_slice(&self.measurement);
        out.extend_from_slice(&self.enclave_public_key);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.context);
        out.extend_from_slice(&self.platform_key);
        out
    }

    /// Encodes the evidence for the wire (postcard).
    pub fn to_bytes(&self) -> Result<Vec<u8>, EvidenceError> {
        let bytes = postcard::to_allocvec(self)?;
        if bytes.len() > MAX_EVIDENCE_LEN {
            return Err(EvidenceError::TooLarge { len: bytes.len() });
        }
        Ok(bytes)
    }

    /// Decodes evidence received from the wire. The result is untrusted until verified.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EvidenceError> {
        if bytes.len() > MAX_EVIDENCE_LEN {
            return Err(EvidenceError::TooLarge { len: bytes.len() });
        }
        let (evidence, rest) = postcard::take_from_bytes::<Self>(bytes)?;
        if !rest.is_empty() {
            return Err(EvidenceError::TrailingBytes(rest.len()));
        }
        Ok(evidence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Evidence {
        Evidence {
            version: EVIDENCE_VERSION,
            tee: TeeKind::Sim,
            role: Role::Train,
            measurement: [1; 32],
            enclave_public_key: [2; 32],
            nonce: [3; 32],
            context: [4; 32],
            platform_key: [5; 32],
            signature: vec![6; 64],
        }
    }

    #[test]
    fn wire_round_trip() -> Result<(), EvidenceError> {
        let e = sample();
        assert_eq!(Evidence::from_bytes(&e.to_bytes()?)?, e);
        Ok(())
    }

    #[test]
    fn rejects_trailing_and_oversized_input() -> Result<(), EvidenceError> {
        let mut bytes = sample().to_bytes()?;
        bytes.push(0);
        assert!(matches!(
            Evidence::from_bytes(&bytes),
            Err(EvidenceError::TrailingBytes(1))
        ));
        let huge = vec![0; MAX_EVIDENCE_LEN + 1];
        assert!(matches!(
            Evidence::from_bytes(&huge),
            Err(EvidenceError::TooLarge { .. })
        ));
        assert!(matches!(
            Evidence::from_bytes(&[]),
            Err(EvidenceError::Decode(_))
        ));
        Ok(())
    }

    #[test]
    fn signed_bytes_cover_every_field_but_the_signature() {
        let base = sample().signed_bytes();
        let mut variants = Vec::new();
        let mut e = sample();
        e.version = 2;
        variants.push(e);
        let mut e = sample();
        e.role = Role::Query;
        variants.push(e);
        let mut e = sample();
        e.measurement[31] ^= 1;
        variants.push(e);
        let mut e = sample();
        e.enclave_public_key[0] ^= 1;
        variants.push(e);
        let mut e = sample();
        e.nonce[0] ^= 1;
        variants.push(e);
        let mut e = sample();
        e.context[0] ^= 1;
        variants.push(e);
        let mut e = sample();
        e.platform_key[0] ^= 1;
        variants.push(e);
        for v in variants {
            assert_ne!(v.signed_bytes(), base, "{v:?}");
        }
        let mut e = sample();
        e.signature = vec![];
        assert_eq!(e.signed_bytes(), base);
    }
}
