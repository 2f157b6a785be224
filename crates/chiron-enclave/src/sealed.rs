//! What a training enclave seals for the query enclave: the model and the owner's terms.

use chiron_crypto::SealingKey;
use chiron_proto::owner::AnswerPolicy;
use serde::{Deserialize, Serialize};

/// Purpose label of the model-sealing key.
const MODEL_PURPOSE: &[u8] = b"chiron/v1 sealed model";

/// The plaintext inside a sealed model blob.
#[derive(Serialize, Deserialize)]
pub struct SealedModel {
    /// SHA-256 of the program that trained it (and must serve it).
    pub program_digest: [u8; 32],
    /// Answer granularity the owner chose.
    pub answers: AnswerPolicy,
    /// Queries allowed per query-enclave session.
    pub query_budget: u64,
    /// SHA-256 of the owner's query token.
    pub query_token_digest: [u8; 32],
    /// A private job's answer time: every query is answered this many milliseconds after it
    /// arrived.
    pub answer_ms: Option<u32>,
    /// The encoded `chiron_sandbox::Model`.
    pub model: Vec<u8>,
}

/// The key that seals models: bound to the platform and to this runtime's measurement, so
/// only the same runtime on the same platform opens them.
pub fn model_key(platform: &chiron_crypto::SimPlatform, measurement: &[u8; 32]) -> SealingKey {
    SealingKey::derive(platform.sealing_secret(), measurement, MODEL_PURPOSE)
}

/// Why a model could not be encoded for sealing.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// Serialisation failed.
    #[error("cannot encode the model: {0}")]
    Encode(#[from] postcard::Error),
    /// The model is larger than the owner's declared size.
    #[error("the model needs {size} bytes, more than the declared {declared}")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// Declared size.
        declared: usize,
    },
}

impl SealedModel {
    /// The plaintext to seal, zero-padded to exactly `pad_to` bytes when given (a private
    /// job's declared model size), so the sealed blob's size says nothing about the model.
    pub fn encode(&self, pad_to: Option<usize>) -> Result<Vec<u8>, EncodeError> {
        let mut plaintext = postcard::to_allocvec(self)?;
        if let Some(declared) = pad_to {
            if plaintext.len() > declared {
                return Err(EncodeError::TooLarge {
                    size: plaintext.len(),
                    declared,
                });
            }
            plaintext.resize(declared, 0);
        }
        Ok(plaintext)
    }

    /// Reads what [`SealedModel::encode`] wrote; `None` if malformed (padding included).
    pub fn decode(plaintext: &[u8]) -> Option<Self> {
        let (contents, padding) = postcard::take_from_bytes::<Self>(plaintext).ok()?;
        padding.iter().all(|&b| b == 0).then_some(contents)
    }
}
