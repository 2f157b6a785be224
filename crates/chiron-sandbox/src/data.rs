//! The decrypted dataset as the runtime holds it, and batches cut from it.

use chiron_proto::dataset::{DatasetHeader, ElementEncoding, HeaderError};
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

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

/// A decrypted dataset, held only inside the enclave. Its labels and features are wiped when
/// it is dropped.
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

impl Drop for TrainingData {
    fn drop(&mut self) {
        // `Vec::zeroize` wipes the spare capacity too (where `from_plaintext`'s shift of the
        // features left the last labels' bytes).
        self.labels.zeroize();
        self.features.zeroize();
    }
}

impl ZeroizeOnDrop for TrainingData {}

impl TrainingData {
    /// Parses a plaintext body laid out as `chiron_proto::dataset` describes.
    ///
    /// The body is wiped when it is dropped, whether it parses or not: the dataset keeps it
    /// (see [`TrainingData`]'s `Drop`), or it is wiped on the way out with the error. Pass the
    /// [`Zeroizing`] buffer `chiron_crypto::decrypt_dataset` returns, or a `Vec<u8>`.
    pub fn from_plaintext(
        header: DatasetHeader,
        body: impl Into<Zeroizing<Vec<u8>>>,
    ) -> Result<Self, DataError> {
        let body: Zeroizing<Vec<u8>> = body.into();
        let expected = header.plaintext_len()?;
        let length_error = || DataError::Length {
            found: body.len() as u64,
            expected,
        };
        if body.len() as u64 != expected {
            return Err(length_error());
        }
        // The body holds `n` labels of 4 bytes, so these fit (checked all the same).
        let labels_len = usize::try_from(header.total_count())
            .ok()
            .and_then(|n| n.checked_mul(4))
            .filter(|&len| len <= body.len())
            .ok_or_else(length_error)?;
        let mut labels = Zeroizing::new(Vec::with_capacity(labels_len / 4));
        for (index, raw) in body[..labels_len].chunks_exact(4).enumerate() {
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
        features.drain(..labels_len);
        let feature_len = header.feature_len();
        // The buffers move (not copy) into the dataset, whose `Drop` wipes them.
        Ok(Self {
            header,
            labels: std::mem::take(&mut *labels),
            features: std::mem::take(&mut *features),
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
            // The training examples come first, then the validation ones.
            Split::Train => index as usize,
            Split::Valid => self.header.train_count as usize + index as usize,
        })
    }

    /// Features of the given examples, row-major `[indices.len(), ...dims]`, as `f32`.
    /// Returns `None` if an index is out of range, or if the batch is larger than the engine
    /// accepts as one tensor (so no more is allocated than a tensor may hold).
    pub fn features(&self, split: Split, indices: &[u32]) -> Option<Vec<f32>> {
        let mut shape = Vec::with_capacity(1 + self.header.dims.len());
        shape.push(indices.len());
        shape.extend(self.header.dims.iter().map(|&d| d as usize));
        let values = chiron_engine::Shape::new(&shape).ok()?.elements();
        let mut out = Vec::with_capacity(values);
        let stride = self.feature_len.checked_mul(self.header.encoding.size())?;
        for &i in indices {
            let at = self.absolute(split, i)?.checked_mul(stride)?;
            let raw = self.features.get(at..at.checked_add(stride)?)?;
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
        assert_eq!(d.features(Split::Train, &[2]), None);
    }

    #[test]
    fn batches_beyond_a_tensor_are_refused_before_allocating() {
        // One example of 2^30 bytes (a 1 GiB body, not allocated here): a batch of it would
        // exceed the engine's 2^28-element tensor limit.
        let header = DatasetHeader {
            kind: DatasetKind::Image,
            dims: vec![1 << 14, 1 << 14, 4],
            encoding: ElementEncoding::U8Unit,
            classes: 2,
            train_count: 1,
            valid_count: 0,
        };
        let d = TrainingData {
            header,
            labels: vec![0],
            features: Vec::new(),
            feature_len: 1 << 30,
        };
        assert_eq!(d.features(Split::Train, &[0]), None);
        assert_eq!(d.features(Split::Train, &[0; 4096]), None);
        assert_eq!(d.labels(Split::Train, &[0]), Some(vec![0.0]));
    }

    #[test]
    fn the_plaintext_is_wiped_on_drop() {
        fn wiped_on_drop<T: ZeroizeOnDrop>(_: &T) {}
        let (h, b) = tiny();
        // As the enclave passes it: the buffer `decrypt_dataset` returns.
        let d = TrainingData::from_plaintext(h, Zeroizing::new(b)).expect("valid");
        wiped_on_drop(&d);
        assert_eq!(d.labels(Split::Valid, &[0]), Some(vec![1.0]));
        assert_eq!(d.features(Split::Valid, &[0]), Some(vec![1.0, 0.0]));
    }

    #[test]
    fn shards_split_the_training_examples_and_share_validation() {
        let header = DatasetHeader {
            kind: DatasetKind::Tabular,
            dims: vec![1],
            encoding: ElementEncoding::U8Unit,
            classes: 7,
            train_count: 5,
            valid_count: 1,
        };
        let mut body = Vec::new();
        for l in 0u32..6 {
            body.extend(l.to_le_bytes());
        }
        body.extend([0, 1, 2, 3, 4, 5]);
        // What a worker decrypts: the ranges of the body its shard's header names.
        let shard = |rank| {
            let (shard, ranges) = header.shard(rank, 2).expect("a shard");
            let cut: Vec<u8> = ranges
                .iter()
                .flat_map(|r| body[r.start as usize..r.end as usize].iter().copied())
                .collect();
            TrainingData::from_plaintext(shard, cut).expect("the shard's body parses")
        };
        let (first, second) = (shard(0), shard(1));
        assert_eq!(first.count(Split::Train), 2);
        assert_eq!(first.labels(Split::Train, &[0, 1]), Some(vec![0.0, 1.0]));
        assert_eq!(second.labels(Split::Train, &[0, 1]), Some(vec![2.0, 3.0]));
        // The fifth example is nobody's; both see the one validation example.
        assert_eq!(second.labels(Split::Train, &[2]), None);
        for d in [&first, &second] {
            assert_eq!(d.labels(Split::Valid, &[0]), Some(vec![5.0]));
            assert_eq!(d.header().train_count, 2);
        }
        assert_eq!(second.features(Split::Train, &[1]), Some(vec![3.0 / 255.0]));
        assert!(header.shard(2, 2).is_none());
        assert!(header.shard(0, 6).is_none());
        assert!(header.shard(0, 0).is_none());
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
