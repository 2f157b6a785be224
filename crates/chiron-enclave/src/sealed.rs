//! What a training enclave seals for the query enclave: the model and the owner's terms.

use chiron_crypto::{SealingKey, Zeroizing};
use chiron_proto::owner::AnswerPolicy;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Purpose label of the model-sealing key.
const MODEL_PURPOSE: &[u8] = b"chiron/v1 sealed model";

/// The plaintext inside a sealed model blob. Wiped when dropped (the model above all: the
/// provider's weights; the answer policy is no secret).
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct SealedModel {
    /// SHA-256 of the program that trained it (and must serve it).
    pub program_digest: [u8; 32],
    /// Answer granularity the owner chose (within the program's policy).
    #[zeroize(skip)]
    pub answers: AnswerPolicy,
    /// Inputs the model may answer over its life, across query enclaves (within the
    /// program's policy); counted by the sealed query counter (`crate::counter`).
    pub query_budget: u64,
    /// SHA-256 of the owner's query token.
    pub query_token_digest: [u8; 32],
    /// A private job's answer time: every query is answered this many milliseconds after it
    /// arrived.
    pub answer_ms: Option<u32>,
    /// The encoded `chiron_sandbox::Model`.
    pub model: Vec<u8>,
}

/// The key that seals models: derived from the platform's sealing secret (bound by the
/// hardware to this enclave's code identity) and this runtime's measurement, so only the same
/// runtime on the same platform opens them.
pub fn model_key(sealing_secret: &[u8; 32], measurement: &[u8; 32]) -> SealingKey {
    SealingKey::derive(sealing_secret, measurement, MODEL_PURPOSE)
}

/// The key that seals a parameter server's checkpoints: as [`model_key`], for another
/// purpose, so a checkpoint never opens as a model or the reverse.
pub fn checkpoint_key(sealing_secret: &[u8; 32], measurement: &[u8; 32]) -> SealingKey {
    SealingKey::derive(
        sealing_secret,
        measurement,
        b"chiron/v1 parameter server checkpoint",
    )
}

/// The key that seals a worker's ticket (its own training request, for a replacement of
/// it): as [`model_key`], for another purpose.
pub fn ticket_key(sealing_secret: &[u8; 32], measurement: &[u8; 32]) -> SealingKey {
    SealingKey::derive(sealing_secret, measurement, b"chiron/v1 worker ticket")
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
    /// It is wiped when dropped.
    pub fn encode(&self, pad_to: Option<usize>) -> Result<Zeroizing<Vec<u8>>, EncodeError> {
        let size = postcard::experimental::serialized_size(self)?;
        if let Some(declared) = pad_to
            && size > declared
        {
            return Err(EncodeError::TooLarge { size, declared });
        }
        // One buffer of the final size, written in place: a buffer grown while encoding would
        // leave unwiped copies of the model behind in freed memory. The rest stays zero (the
        // padding).
        let mut plaintext = Zeroizing::new(vec![0; pad_to.unwrap_or(size)]);
        postcard::to_slice(self, &mut plaintext)?;
        Ok(plaintext)
    }

    /// Reads what [`SealedModel::encode`] wrote; `None` if malformed (padding included).
    pub fn decode(plaintext: &[u8]) -> Option<Self> {
        let (contents, padding) = postcard::take_from_bytes::<Self>(plaintext).ok()?;
        padding.iter().all(|&b| b == 0).then_some(contents)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents() -> SealedModel {
        SealedModel {
            program_digest: [1; 32],
            answers: AnswerPolicy::TopK(3),
            query_budget: 7,
            query_token_digest: [2; 32],
            answer_ms: Some(100),
            model: vec![9; 1000],
        }
    }

    #[test]
    fn encodes_exactly_padded_and_decodes() -> Result<(), EncodeError> {
        let plain = contents().encode(None)?;
        assert_eq!(*plain, postcard::to_allocvec(&contents())?);
        let padded = contents().encode(Some(4096))?;
        assert_eq!(padded.len(), 4096);
        assert_eq!(padded[..plain.len()], plain[..]);
        for bytes in [&plain[..], &padded[..]] {
            let back = SealedModel::decode(bytes)
                .ok_or(EncodeError::Encode(postcard::Error::DeserializeBadEncoding))?;
            assert_eq!(back.model, contents().model);
            assert_eq!(back.answers, AnswerPolicy::TopK(3));
        }
        assert!(matches!(
            contents().encode(Some(plain.len() - 1)),
            Err(EncodeError::TooLarge { size, declared }) if size == plain.len() && declared == size - 1
        ));
        assert!(contents().encode(Some(plain.len())).is_ok());
        Ok(())
    }

    #[test]
    fn contents_are_wiped_on_drop() {
        fn wiped_on_drop<T: ZeroizeOnDrop>(_: &T) {}
        let mut contents = contents();
        wiped_on_drop(&contents);
        // What dropping it does.
        contents.zeroize();
        assert!(contents.model.is_empty() && contents.program_digest == [0; 32]);
    }
}
