//! Why evidence was refused, and why a platform could not attest.

use chiron_proto::evidence::{Role, TeeKind};
use thiserror::Error;

/// Why evidence was refused. Nothing may be sent to the enclave after any of these.
///
/// Each message says what went wrong and what the owner can do about it.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttestationError {
    /// The evidence comes from a TEE kind the policy has no reference values for.
    #[error(
        "evidence comes from {tee}, which your policy does not accept; add reference values \
         for it to the policy, or ask the provider to run on a TEE it accepts"
    )]
    TeeNotAccepted {
        /// The backend named by the evidence.
        tee: TeeKind,
    },
    /// The evidence is signed by a simulated platform the policy does not accept.
    #[error(
        "evidence comes from simulated platform {platform_key}, which the policy does not accept; \
         simulated attestation is insecure and must be allowed explicitly, for development only"
    )]
    UntrustedPlatform {
        /// Hex of the platform key found in the evidence.
        platform_key: String,
    },
    /// A signature over the statement does not verify: it was altered or forged.
    #[error("the {tee} statement's signature does not verify: it was altered or forged ({detail})")]
    BadSignature {
        /// The backend.
        tee: TeeKind,
        /// What the backend verifier reported.
        detail: String,
    },
    /// The certificate chain behind the statement does not lead to the vendor's root.
    #[error(
        "the {tee} certificate chain does not verify up to the vendor's root ({detail}); the \
         evidence or its endorsements were altered, or come from a platform the vendor did not certify"
    )]
    BadCertificateChain {
        /// The backend.
        tee: TeeKind,
        /// What the backend verifier reported.
        detail: String,
    },
    /// The chain ends at a root that is not the vendor's.
    #[error(
        "the {tee} certificate chain ends at a root that is not the vendor's ({detail}); the \
         endorsements are forged"
    )]
    WrongRoot {
        /// The backend.
        tee: TeeKind,
        /// What the backend verifier reported.
        detail: String,
    },
    /// The vendor's collateral (TCB info, QE identity, revocation lists) is altered or invalid.
    #[error(
        "the {tee} collateral is invalid ({detail}); fetch it again from the vendor's \
         provisioning service (PCCS)"
    )]
    BadCollateral {
        /// The backend.
        tee: TeeKind,
        /// What the backend verifier reported.
        detail: String,
    },
    /// The collateral or a certificate is not valid at the verification time.
    #[error(
        "the {tee} collateral or certificates are not valid at the verification time ({detail}); \
         fetch fresh collateral from the vendor's provisioning service"
    )]
    Expired {
        /// The backend.
        tee: TeeKind,
        /// What the backend verifier reported.
        detail: String,
    },
    /// The endorsements the verifier needs are missing.
    #[error(
        "the {tee} evidence carries no endorsements ({what}) and none were supplied; pass them \
         to the verifier (a cached copy, or the host's copy from the vendor's service)"
    )]
    MissingEndorsements {
        /// The backend.
        tee: TeeKind,
        /// What is missing.
        what: &'static str,
    },
    /// The platform's TCB level is not one the policy accepts.
    #[error(
        "TCB {status}{}: not accepted by your policy; the platform needs a firmware or \
         microcode update, or the policy must accept this status and these advisories",
        if advisories.is_empty() { String::new() } else { format!(" (advisories {})", advisories.join(", ")) }
    )]
    TcbNotAccepted {
        /// The TCB status the platform has (for SNP: which component is below the minimum).
        status: String,
        /// Security advisories that apply and that the policy does not accept.
        advisories: Vec<String>,
    },
    /// The enclave runs in debug mode, whose memory the host can read.
    #[error(
        "the {tee} enclave runs in debug mode, whose memory the host can read: refused; the \
         provider must launch a production enclave"
    )]
    DebugEnclave {
        /// The backend.
        tee: TeeKind,
    },
    /// A platform setting the policy forbids (for SNP, simultaneous multithreading).
    #[error("the {tee} platform setting {setting} is not allowed by your policy")]
    PlatformSetting {
        /// The backend.
        tee: TeeKind,
        /// The setting.
        setting: &'static str,
    },
    /// The statement's report data does not match the evidence's claims.
    #[error(
        "the platform statement does not vouch for this evidence: its report data does not bind \
         the enclave key, role, job and nonce presented with it (forged or spliced evidence)"
    )]
    ReportDataMismatch,
    /// The enclave runs code the policy does not list.
    #[error(
        "measurement differs: expected {}, got {found}; the enclave runs a different runtime \
         build; rebuild the runtime reproducibly or update the policy",
        if expected.is_empty() { "none listed".to_owned() } else { expected.join(" or ") }
    )]
    WrongMeasurement {
        /// The identity found.
        found: String,
        /// The identities accepted.
        expected: Vec<String>,
    },
    /// The evidence answers a different nonce: a replay of an earlier attestation.
    #[error(
        "evidence answers a different nonce than this request's: it is stale or replayed; request fresh evidence"
    )]
    StaleNonce,
    /// The enclave runs in another role than the one asked for.
    #[error("enclave attests to role {found}, but a {expected} enclave was expected")]
    WrongRole {
        /// Role required.
        expected: Role,
        /// Role attested.
        found: Role,
    },
    /// The enclave serves a different job or model.
    #[error("evidence is for a different job or model than the one requested")]
    WrongContext,
    /// The evidence format version is unknown.
    #[error(
        "evidence format version {found} is not supported (this build verifies version {supported})"
    )]
    UnsupportedVersion {
        /// Version found.
        found: u16,
        /// Version this build verifies.
        supported: u16,
    },
    /// The evidence or its statement cannot be decoded.
    #[error("evidence is malformed: {0}")]
    Malformed(String),
}

impl From<chiron_proto::evidence::EvidenceError> for AttestationError {
    fn from(e: chiron_proto::evidence::EvidenceError) -> Self {
        Self::Malformed(e.to_string())
    }
}

/// Why the platform could not produce a statement or a sealing secret.
#[cfg(feature = "attester")]
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AttesterError {
    /// A file of the platform's interface could not be used.
    #[error("the platform interface {path} failed: {source}")]
    Io {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The platform's interface answered something it never should.
    #[error("the platform interface {path} answered unexpectedly: {reason}")]
    Protocol {
        /// The file.
        path: std::path::PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// Another writer used the same report entry while the statement was produced.
    #[error(
        "another process wrote to the report entry {path} while this statement was produced \
         (generation {before} before, {after} after, one write expected)"
    )]
    ConcurrentWriter {
        /// The report entry.
        path: std::path::PathBuf,
        /// Generation read before writing.
        before: u64,
        /// Generation read after reading the statement.
        after: u64,
    },
    /// No TEE interface was found and none was forced.
    #[error(
        "no TEE found: neither Gramine's {attestation} nor the kernel's {tsm} exists; run inside \
         an SGX enclave under Gramine or a TDX or SEV-SNP confidential VM, or (INSECURE, \
         development only) pass the simulated platform explicitly"
    )]
    NoTee {
        /// Gramine's attestation directory that was looked for.
        attestation: std::path::PathBuf,
        /// The configfs-tsm report directory that was looked for.
        tsm: std::path::PathBuf,
    },
    /// The platform offers no sealing key of its own.
    #[error("{0}")]
    NoSealingKey(String),
    /// The simulated platform's key file could not be used.
    #[error("simulated platform {path}: {reason}")]
    SimPlatform {
        /// The key file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
}
