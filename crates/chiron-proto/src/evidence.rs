//! Attestation evidence: what an enclave presents to prove which runtime it runs.
//!
//! Evidence is a platform statement (an SGX or TDX DCAP quote, an SEV-SNP attestation report,
//! or a simulated statement) whose 64 bytes of report data bind the enclave's role, its
//! ephemeral public key, the verifier's fresh nonce and the job or model it serves
//! (DESIGN.md, "Attestation and keys"). Beside it travel the vendor's endorsements the
//! verifier needs (DCAP collateral, SNP certificates): they are signed by the vendor, so the
//! untrusted host may supply them. These are only the shapes; verification lives in
//! `chiron-attest`, and nothing read here may be trusted until it has passed there.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The evidence format version this crate writes and understands.
pub const EVIDENCE_VERSION: u16 = 2;

/// Largest accepted encoded evidence, in bytes.
///
/// A DCAP quote is 4–6 KiB and its collateral (TCB info, QE identity, CRLs and their issuer
/// chains) 14–25 KiB; an SNP report is 1184 bytes and its certificate chain about 5 KiB. The
/// bound leaves room for larger collateral while keeping a hostile peer from making us
/// allocate much.
pub const MAX_EVIDENCE_LEN: usize = 256 * 1024;

/// Which trusted execution environment produced the evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TeeKind {
    /// A local, software-only platform key. INSECURE: anyone holding the platform key file can
    /// forge evidence. For development and tests only.
    Sim,
    /// An Intel SGX enclave (under Gramine): a DCAP quote v3 or v4 with its collateral.
    Sgx,
    /// An Intel TDX trust domain: a DCAP quote v4 or v5 with its collateral.
    Tdx,
    /// An AMD SEV-SNP guest: an attestation report with its VCEK or VLEK certificate chain.
    SevSnp,
}

impl TeeKind {
    /// Every backend, in code order.
    pub const ALL: [TeeKind; 4] = [Self::Sim, Self::Sgx, Self::Tdx, Self::SevSnp];

    /// Stable one-byte code, bound into the report data so a statement from one backend can
    /// never be presented as another's.
    pub fn code(self) -> u8 {
        match self {
            Self::Sim => 0,
            Self::Sgx => 1,
            Self::Tdx => 2,
            Self::SevSnp => 3,
        }
    }

    /// The backend a short name ([`TeeKind::name`]) names.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Short lower-case name, as used on command lines (`sim`, `sgx`, `tdx`, `sev-snp`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Sim => "sim",
            Self::Sgx => "sgx",
            Self::Tdx => "tdx",
            Self::SevSnp => "sev-snp",
        }
    }
}

impl fmt::Display for TeeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sim => "sim (insecure, development only)",
            Self::Sgx => "Intel SGX",
            Self::Tdx => "Intel TDX",
            Self::SevSnp => "AMD SEV-SNP",
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
    /// Holds a sealing root derived from its own TEE's sealing key and releases sealing
    /// secrets to attested enclaves whose TEE has none (TDX).
    KeyKeeper,
    /// Holds the global parameters of a job that several training enclaves train together,
    /// and talks to them over mutually attested channels (`chiron-channel`).
    ParameterServer,
    /// A training enclave of such a job: trains on its share and exchanges parameters with
    /// the parameter server.
    Worker,
}

impl Role {
    /// Stable one-byte code, bound into the report data.
    pub fn code(self) -> u8 {
        match self {
            Self::Train => 0,
            Self::Query => 1,
            Self::KeyKeeper => 2,
            Self::ParameterServer => 3,
            Self::Worker => 4,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Train => "train",
            Self::Query => "query",
            Self::KeyKeeper => "key keeper",
            Self::ParameterServer => "parameter server",
            Self::Worker => "worker",
        })
    }
}

/// Attestation evidence as it travels on the wire.
///
/// Only `statement` is signed, by the platform; the other fields are claims that verification
/// checks against the statement's report data (`chiron_attest::binding`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Format version; [`EVIDENCE_VERSION`] for evidence written by this crate.
    pub version: u16,
    /// The TEE backend that produced `statement`.
    pub tee: TeeKind,
    /// The role the enclave process was started in.
    pub role: Role,
    /// The enclave's ephemeral X25519 public key; secrets for this enclave are sealed to it.
    pub enclave_public_key: [u8; 32],
    /// The verifier's fresh nonce, echoed to prove the evidence is not a replay.
    pub nonce: [u8; 32],
    /// SHA-256 of the job id or model id the enclave serves.
    pub context: [u8; 32],
    /// The platform's signed statement: a DCAP quote (SGX, TDX), an SNP attestation report, or
    /// a simulated statement.
    pub statement: Vec<u8>,
    /// Vendor-signed material the verifier needs and may also hold itself: DCAP collateral
    /// (JSON), the SNP VCEK or VLEK certificate (DER). Empty when the verifier supplies it.
    pub endorsements: Vec<u8>,
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
            enclave_public_key: [2; 32],
            nonce: [3; 32],
            context: [4; 32],
            statement: vec![5; 192],
            endorsements: vec![6; 10],
        }
    }

    #[test]
    fn wire_round_trip() -> Result<(), EvidenceError> {
        let e = sample();
        assert_eq!(Evidence::from_bytes(&e.to_bytes()?)?, e);
        for tee in TeeKind::ALL {
            let e = Evidence { tee, ..sample() };
            assert_eq!(Evidence::from_bytes(&e.to_bytes()?)?, e);
        }
        Ok(())
    }

    #[test]
    fn codes_are_distinct() {
        let codes: std::collections::HashSet<u8> = TeeKind::ALL.iter().map(|t| t.code()).collect();
        assert_eq!(codes.len(), TeeKind::ALL.len());
        assert_ne!(Role::Train.code(), Role::Query.code());
        assert_ne!(Role::Query.code(), Role::KeyKeeper.code());
        assert_ne!(Role::Train.code(), Role::KeyKeeper.code());
        let roles = [
            Role::Train,
            Role::Query,
            Role::KeyKeeper,
            Role::ParameterServer,
            Role::Worker,
        ];
        let role_codes: std::collections::HashSet<u8> = roles.iter().map(|r| r.code()).collect();
        assert_eq!(role_codes.len(), roles.len());
    }

    #[test]
    fn existing_roles_keep_their_encoding() -> Result<(), EvidenceError> {
        // Roles are appended, never inserted: evidence of the older roles encodes as before
        // (postcard writes the variant index), and the new roles decode.
        let encoded = Evidence {
            role: Role::KeyKeeper,
            ..sample()
        }
        .to_bytes()?;
        // postcard: the version as a varint (one byte), the TEE's index, then the role's.
        assert_eq!(encoded[..3], [2, 0, 2]);
        for role in [Role::ParameterServer, Role::Worker] {
            let e = Evidence { role, ..sample() };
            assert_eq!(Evidence::from_bytes(&e.to_bytes()?)?, e);
        }
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
}
