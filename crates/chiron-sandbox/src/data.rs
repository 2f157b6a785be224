//! The decrypted dataset as the runtime holds it, and batches cut from it.

use chiron_proto::dataset::{DatasetHeader, ElementEncoding, HeaderError};
use thiserror::Error;

/// A plaintext body that does not match its header.
#[derive(Debug, Error)]
pub enum DataError {
    /// The header itself is invalid.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// The body has the wrong length.
    #[error("dataset body is {found} bytes, its header declares {expected}")]
    Length {
        /// Bytes present.
        found: u64,
        /// Bytes the header implies.
        expected: u64,
    },
    /// A label is not a class index.
    #[error("dataset label at example {index} is outside 0..{classes}")]
    Label {
        /// Example index.
        index: usize,
        /// Class count.
        classes: u32,
    },
}

/// Which part of the dataset a request addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// Examples to train on.
    Train,
    /// Held-out examples.
    Valid,
}

/// A decrypted dataset, held only inside the enclave.
pub struct TrainingData {
    header: DatasetHeader,
    labels: Vec<u32>,
    features: Vec<u8>,
    feature_len: usize,
}

impl std::fmt::Debug for TrainingData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print examples: Debug output may end up in a log.
        f.debug_struct("TrainingData")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl TrainingData {
    /// Parses a plaintext body laid out as `chiron_proto::dataset` describes.
    pub fn from_plaintext(header: DatasetHeader, body: Vec<u8>) -> Result<Self, DataError> {
        let expected = header.plaintext_len()?;
        if body.len() as u64 != expected {
            return Err(DataError::Length {
                found: body.len() as u64,
                expected,
            });
        }
        let n = header.total_count() as usize;
        let mut labels = Vec::with_capacity(n);
        for (index, raw) in body[..n * 4].chunks_exact(4).enumerate() {
            let label = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
            if label >= header.classes {
                return Err(DataError::Label {
                    index,
                    classes: header.classes,
                });
            }
            labels.push(label);
        }
        let mut features = body;
        features.drain(..n * 4);
        let feature_len = header.feature_len();
        Ok(Self {
            header,
            labels,
            features,
            feature_len,
        })
    }

    /// The public header.
    pub fn header(&self) -> &DatasetHeader {
        &self.header
    }

    /// Examples in `split`.
    pub fn count(&self, split: Split) -> u32 {
        match split {
            Split::Train => self.header.train_count,
            Split::Valid => self.header.valid_count,
        }
    }

    fn absolute(&self, split: Split, index: u32) -> Option<usize> {
        (index < self.count(split)).then(|| match split {
            Split::Train => index as usize,
            Split::Valid => self.header.train_count as usize + index as usize,
        })
    }

    /// Features of the given examples, row-major `[indices.len(), ...dims]`, as `f32`.
    /// Returns `None` if an index is out of range.
    pub fn features(&self, split: Split, indices: &[u32]) -> Option<Vec<f32>> {
        let mut out = Vec::with_capacity(indices.len() * self.feature_len);
        let size = self.header.encoding.size();
        for &i in indices {
            let at = self.absolute(split, i)? * self.feature_len * size;
            let raw = &self.features[at..at + self.feature_len * size];
            decode_into(self.header.encoding, raw, &mut out);
        }
        Some(out)
    }

    /// Labels of the given examples as `f32` class indices.
    pub fn labels(&self, split: Split, indices: &[u32]) -> Option<Vec<f32>> {
        indices
            .iter()
            .map(|&i| self.absolute(split, i).map(|a| self.labels[a] as f32))
            .collect()
    }
}

/// Decodes stored feature values to `f32` (the same rule for training data and queries).
pub fn decode_into(encoding: ElementEncoding, raw: &[u8], out: &mut Vec<f32>) {
    match encoding {
        ElementEncoding::U8Unit => out.extend(raw.iter().map(|&b| f32::from(b) / 255.0)),
        ElementEncoding::F32 => out.extend(
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chiron_proto::dataset::DatasetKind;

    fn tiny() -> (DatasetHeader, Vec<u8>) {
        let header = DatasetHeader {
            kind: DatasetKind::Image,
            dims: vec![1, 1, 2],
            encoding: ElementEncoding::U8Unit,
            classes: 3,
            train_count: 2,
            valid_count: 1,
        };
        let mut body = Vec::new();
        for l in [0u32, 2, 1] {
            body.extend(l.to_le_bytes());
        }
        body.extend([0, 255, 51, 102, 255, 0]);
        (header, body)
    }

    #[test]
    fn batches_come_from_the_right_split() {
        let (h, b) = tiny();
        let d = TrainingData::from_plaintext(h, b).expect("valid");
        assert_eq!(d.labels(Split::Train, &[1, 0]), Some(vec![2.0, 0.0]));
        assert_eq!(d.labels(Split::Valid, &[0]), Some(vec![1.0]));
        assert_eq!(d.features(Split::Valid, &[0]), Some(vec![1.0, 0.0]));
        assert_eq!(d.features(Split::Train, &[1]), Some(vec![0.2, 0.4]));
        assert_eq!(d.labels(Split::Valid, &[1]), None);
    }

    #[test]
    fn rejects_bad_bodies() {
        let (h, mut b) = tiny();
        b.pop();
        assert!(matches!(
            TrainingData::from_plaintext(h.clone(), b),
            Err(DataError::Length { .. })
        ));
        let (h, mut b) = tiny();
        b[0] = 7;
        assert!(matches!(
            TrainingData::from_plaintext(h, b),
            Err(DataError::Label { index: 0, .. })
        ));
    }
}
