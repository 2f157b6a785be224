//! The owner's dataset: a public header and the plaintext record layout.
//!
//! The header is public by design (DESIGN.md, leakage rules): shape, element encoding, example
//! counts and class count. The plaintext body, which only the enclave ever sees, is
//!
//! ```text
//! labels   : (train_count + valid_count) × u32 little-endian, each < classes
//! features : (train_count + valid_count) × feature_len × element size
//! ```
//!
//! Training examples come first, then the validation examples the owner held out.

use std::ops::Range;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Largest accepted plaintext body (16 GiB); a sanity bound, not a quota.
pub const MAX_PLAINTEXT_LEN: u64 = 16 << 30;
/// Largest accepted dimension of one example's features.
pub const MAX_DIM: u32 = 1 << 16;
/// Largest accepted class count.
pub const MAX_CLASSES: u32 = 1 << 16;

/// What kind of examples a dataset holds; tells the provider program which model family fits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DatasetKind {
    /// Images, features `[channels, height, width]`.
    Image,
    /// Tabular rows, features `[columns]`, standardised per column by the owner's client.
    Tabular,
}

/// How one feature value is stored in the plaintext body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElementEncoding {
    /// One byte, read as `value / 255.0` (image pixels).
    U8Unit,
    /// An `f32`, little-endian.
    F32,
}

impl ElementEncoding {
    /// Bytes per stored value.
    pub fn size(self) -> usize {
        match self {
            Self::U8Unit => 1,
            Self::F32 => 4,
        }
    }
}

/// The public description of an encrypted dataset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetHeader {
    /// Image or tabular.
    pub kind: DatasetKind,
    /// Shape of one example's features: `[c, h, w]` for images, `[columns]` for tables.
    pub dims: Vec<u32>,
    /// Storage of each feature value.
    pub encoding: ElementEncoding,
    /// Number of classes; labels are `0..classes`.
    pub classes: u32,
    /// Examples to train on.
    pub train_count: u32,
    /// Examples held out for validation metrics (reported to the owner only).
    pub valid_count: u32,
}

/// A header that cannot describe a dataset.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HeaderError {
    /// Rank or a dimension out of range.
    #[error(
        "feature shape {0:?} is not supported (rank 1 for tables, 3 for images, dims 1..={MAX_DIM})"
    )]
    Shape(Vec<u32>),
    /// Fewer than two or too many classes.
    #[error("class count {0} is outside 2..={MAX_CLASSES}")]
    Classes(u32),
    /// No training examples.
    #[error("the dataset has no training examples")]
    Empty,
    /// The body would exceed [`MAX_PLAINTEXT_LEN`].
    #[error("the dataset body would be {0} bytes, above the {MAX_PLAINTEXT_LEN}-byte limit")]
    TooLarge(u64),
}

impl DatasetHeader {
    /// Checks that the header is self-consistent and within limits.
    pub fn validate(&self) -> Result<(), HeaderError> {
        let rank_ok = match self.kind {
            DatasetKind::Image => self.dims.len() == 3,
            DatasetKind::Tabular => self.dims.len() == 1,
        };
        if !rank_ok || self.dims.iter().any(|&d| d == 0 || d > MAX_DIM) {
            return Err(HeaderError::Shape(self.dims.clone()));
        }
        if !(2..=MAX_CLASSES).contains(&self.classes) {
            return Err(HeaderError::Classes(self.classes));
        }
        if self.train_count == 0 {
            return Err(HeaderError::Empty);
        }
        match self.body_len() {
            Some(len) if len <= MAX_PLAINTEXT_LEN => Ok(()),
            other => Err(HeaderError::TooLarge(other.unwrap_or(u64::MAX))),
        }
    }

    /// Values per example.
    ///
    /// Exact for a validated header (at most `MAX_DIM³`, 2^48). The dimensions of an
    /// unvalidated header are untrusted: a product that does not fit in a `usize` saturates
    /// at `usize::MAX` instead of wrapping or panicking.
    pub fn feature_len(&self) -> usize {
        self.dims
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d as usize))
            .unwrap_or(usize::MAX)
    }

    /// Examples in both splits.
    pub fn total_count(&self) -> u64 {
        u64::from(self.train_count) + u64::from(self.valid_count)
    }

    /// Exact length of the plaintext body, for a validated header.
    pub fn plaintext_len(&self) -> Result<u64, HeaderError> {
        self.validate()?;
        // validate() found it and bounded it by MAX_PLAINTEXT_LEN.
        self.body_len().ok_or(HeaderError::TooLarge(u64::MAX))
    }

    /// Worker `rank`'s shard of `workers`: a contiguous block of `train_count / workers`
    /// training examples (the last `train_count % workers` go unused, so every worker takes
    /// as many steps), and every validation example. Returns the shard's own header and the
    /// plaintext byte ranges of this body that make the shard's body, in its order: the
    /// shard's labels, the validation labels, the shard's features, the validation
    /// features (the validation ones left out when there are none). `None` for a rank out
    /// of range or a shard with no example. Only the public counts decide it, so the host
    /// can send each worker just the chunks that hold its shard.
    pub fn shard(&self, rank: u32, workers: u32) -> Option<(DatasetHeader, Vec<Range<u64>>)> {
        let share = self.train_count.checked_div(workers)?;
        if rank >= workers || share == 0 {
            return None;
        }
        self.plaintext_len().ok()?;
        let per_example = u64::try_from(self.feature_len())
            .ok()?
            .checked_mul(u64::try_from(self.encoding.size()).ok()?)?;
        // Bounded by the validated body length: none of these overflow.
        let first = u64::from(rank) * u64::from(share);
        let end = first + u64::from(share);
        let (train, total) = (u64::from(self.train_count), self.total_count());
        let features = total * 4;
        let ranges = [
            first * 4..end * 4,
            train * 4..total * 4,
            features + first * per_example..features + end * per_example,
            features + train * per_example..features + total * per_example,
        ];
        let header = DatasetHeader {
            train_count: share,
            ..self.clone()
        };
        Some((
            header,
            ranges.into_iter().filter(|r| !r.is_empty()).collect(),
        ))
    }

    /// `n × 4 + n × features × element size`, or `None` if it does not fit in a `u64`.
    fn body_len(&self) -> Option<u64> {
        let n = self.total_count();
        let features = self
            .dims
            .iter()
            .try_fold(1u64, |f, &d| f.checked_mul(u64::from(d)))?;
        let element = u64::try_from(self.encoding.size()).ok()?;
        let labels = n.checked_mul(4)?;
        let values = n.checked_mul(features)?.checked_mul(element)?;
        labels.checked_add(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fashion() -> DatasetHeader {
        DatasetHeader {
            kind: DatasetKind::Image,
            dims: vec![1, 28, 28],
            encoding: ElementEncoding::U8Unit,
            classes: 10,
            train_count: 60_000,
            valid_count: 0,
        }
    }

    #[test]
    fn plaintext_length_counts_labels_and_pixels() {
        assert_eq!(fashion().plaintext_len(), Ok(60_000 * 4 + 60_000 * 784));
    }

    #[test]
    fn rejects_inconsistent_headers() {
        let mut h = fashion();
        h.dims = vec![784];
        assert!(matches!(h.validate(), Err(HeaderError::Shape(_))));
        let mut h = fashion();
        h.classes = 1;
        assert_eq!(h.validate(), Err(HeaderError::Classes(1)));
        let mut h = fashion();
        h.train_count = 0;
        assert_eq!(h.validate(), Err(HeaderError::Empty));
        let mut h = fashion();
        h.dims = vec![4096, 4096, 4096];
        assert!(matches!(h.validate(), Err(HeaderError::TooLarge(_))));
    }

    #[test]
    fn a_shard_is_the_body_of_its_own_header() {
        let h = DatasetHeader {
            train_count: 60_000,
            valid_count: 10_000,
            ..fashion()
        };
        let (shard, ranges) = h.shard(2, 4).expect("a shard");
        assert_eq!((shard.train_count, shard.valid_count), (15_000, 10_000));
        let len: u64 = ranges.iter().map(|r| r.end - r.start).sum();
        assert_eq!(len, shard.plaintext_len().expect("valid"));
        // Its labels and features come from its own block of the training examples.
        assert_eq!(ranges[0], 2 * 15_000 * 4..3 * 15_000 * 4);
        let features = h.total_count() * 4;
        assert_eq!(ranges[2].start, features + 2 * 15_000 * 784);
        assert_eq!(ranges[3].end, h.plaintext_len().expect("valid"));
        assert!(h.shard(4, 4).is_none());
        assert!(h.shard(0, 0).is_none());
        assert!(h.shard(0, 60_001).is_none());
        assert!(h.shard(0, 60_000).is_some());
        // Without validation examples a shard is its labels and features alone.
        let (_, ranges) = fashion().shard(1, 2).expect("a shard");
        assert_eq!(ranges.len(), 2);
        assert_eq!(ranges[0], 30_000 * 4..60_000 * 4);
    }

    #[test]
    fn sizes_of_hostile_headers_do_not_overflow() {
        // Every count at its maximum: n × features × 4 is about 2^83, past a u64.
        let h = DatasetHeader {
            kind: DatasetKind::Image,
            dims: vec![MAX_DIM; 3],
            encoding: ElementEncoding::F32,
            classes: 2,
            train_count: u32::MAX,
            valid_count: u32::MAX,
        };
        assert_eq!(h.validate(), Err(HeaderError::TooLarge(u64::MAX)));
        assert_eq!(h.plaintext_len(), Err(HeaderError::TooLarge(u64::MAX)));
        assert_eq!(h.feature_len(), 1 << 48);
        // Unvalidated dimensions: the feature count saturates instead of wrapping.
        let h = DatasetHeader {
            dims: vec![u32::MAX; 3],
            ..h
        };
        assert!(matches!(h.validate(), Err(HeaderError::Shape(_))));
        assert_eq!(h.feature_len(), usize::MAX);
    }
}
