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
    /// The encoded `chiron_sandbox::Model`.
    pub model: Vec<u8>,
}

/// The key that seals models: bound to the platform and to this runtime's measurement, so
/// only the same runtime on the same platform opens them.
pub fn model_key(platform: &chiron_crypto::SimPlatform, measurement: &[u8; 32]) -> SealingKey {
    SealingKey::derive(platform.sealing_secret(), measurement, MODEL_PURPOSE)
}
