//! A trained model as the runtime holds it between `save_model` and sealing.

use std::sync::Arc;

use chiron_proto::dataset::DatasetHeader;
use serde::{Deserialize, Serialize};

use crate::runtime::MAX_MODEL_META;

/// Largest number of tensors in one model.
pub const MAX_MODEL_TENSORS: usize = 4096;

/// The tensors and metadata a program saved, plus the public header of the data it was
/// trained on (so `predict` sees the same shapes). Plaintext: it only ever leaves the
/// enclave sealed.
#[derive(Clone, Serialize, Deserialize)]
pub struct Model {
    /// Header of the training data.
    pub header: Option<DatasetHeader>,
    /// Each tensor's shape and row-major values. Shared, so that every query's fresh
    /// runtime can use the loaded weights without copying them.
    pub tensors: Vec<(Vec<usize>, Arc<Vec<f32>>)>,
    /// The program's free-form metadata (its architecture).
    pub meta: Vec<u8>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Weights are the provider's secret and may encode training data: never print them.
        f.debug_struct("Model")
            .field("tensors", &self.tensors.len())
            .field("meta_len", &self.meta.len())
            .finish_non_exhaustive()
    }
}

/// A model encoding that does not decode or does not make sense.
#[derive(Debug, thiserror::Error)]
#[error("model encoding is invalid: {0}")]
pub struct ModelFormatError(String);

impl Model {
    /// Number of parameters (public: it sizes the sealed blob).
    pub fn parameter_count(&self) -> usize {
        self.tensors.iter().map(|(_, v)| v.len()).sum()
    }

    /// Encodes the model for sealing.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain vectors into a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes a model unsealed by the runtime and checks it with [`Model::validate`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ModelFormatError> {
        let model: Self =
            postcard::from_bytes(bytes).map_err(|e| ModelFormatError(e.to_string()))?;
        model.validate()?;
        Ok(model)
    }

    /// The one check of what a model must be to be served: `save_model` applies it to what
    /// a program saves and the query enclave's loader to what it unseals, so a model that
    /// trains also loads. At most [`MAX_MODEL_TENSORS`] tensors, each of a valid shape that
    /// its values fill; metadata of at most [`MAX_MODEL_META`] bytes; the header of the
    /// data it was trained on, valid.
    pub fn validate(&self) -> Result<(), ModelFormatError> {
        if self.tensors.len() > MAX_MODEL_TENSORS {
            return Err(ModelFormatError("too many tensors".into()));
        }
        for (dims, values) in &self.tensors {
            let shape =
                chiron_engine::Shape::new(dims).map_err(|e| ModelFormatError(e.to_string()))?;
            if shape.elements() != values.len() {
                return Err(ModelFormatError(
                    "a tensor's values do not fill its shape".into(),
                ));
            }
        }
        if self.meta.len() > MAX_MODEL_META {
            return Err(ModelFormatError("metadata above 64 KiB".into()));
        }
        let header = self
            .header
            .as_ref()
            .ok_or_else(|| ModelFormatError("no dataset header".into()))?;
        header
            .validate()
            .map_err(|e| ModelFormatError(e.to_string()))?;
        Ok(())
    }
}
