//! The Chiron client library: what data owners and providers run on their own machines.
//!
//! - [`convert`] turns the owner's files (IDX images, CSV tables) into Chiron's record
//!   format with a public header;
//! - [`HostClient`] talks to the untrusted host's API;
//! - [`record`] keeps the owner's ticket of each job, [`history`] its metrics and training
//!   curves, and [`evaluation`] what a model's answers on labelled inputs say about it;
//! - [`owner`] holds the owner's protocol: verify the enclave's evidence *before* any secret
//!   leaves, release the data key sealed to the attested enclave, follow the encrypted event
//!   stream, and query the model black-box.
//!
//! Nothing in this crate trusts the host: every answer it relays is authenticated end to end.

pub mod convert;
pub mod evaluation;
pub mod history;
mod host;
pub mod owner;
pub mod record;

pub use host::{HostClient, UPLOAD_PART, UploadProgress};

use thiserror::Error;

/// Why a client operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The host could not be reached or spoke nonsense.
    #[error("cannot talk to the host: {0}")]
    Http(String),
    /// The host refused a request.
    #[error("the host refused the request ({status}): {message}")]
    Host {
        /// HTTP status.
        status: u16,
        /// The host's explanation.
        message: String,
    },
    /// The enclave's evidence does not verify; no secret was sent.
    #[error("attestation failed, nothing was sent: {0}")]
    Attestation(#[from] chiron_attest::AttestationError),
    /// The evidence bytes do not decode.
    #[error("attestation failed, nothing was sent: the evidence is malformed")]
    MalformedEvidence,
    /// Encryption failed.
    #[error("encryption failed: {0}")]
    Crypto(#[from] chiron_crypto::CryptoError),
    /// An event did not authenticate: the host altered, reordered or dropped it.
    #[error("event {0} failed authentication: the host altered, reordered or dropped events")]
    TamperedEvent(u64),
    /// An answer did not authenticate.
    #[error("the query answer failed authentication: it was altered on the way")]
    TamperedAnswer,
    /// The host reports the job succeeded but its event stream lacks the final event.
    #[error("the host reports the job succeeded but withheld its final events")]
    WithheldEvents,
    /// The provider's program failed on this query (it still counts against the budget).
    #[error("the provider's program could not answer this query")]
    Unanswered,
    /// The owner's terms go beyond the program's extraction policy; nothing was uploaded.
    #[error("the provider's program does not allow these terms: {0}")]
    Terms(#[from] chiron_proto::manifest::TermsError),
    /// The caller's input is unusable.
    #[error("{0}")]
    Input(String),
}
