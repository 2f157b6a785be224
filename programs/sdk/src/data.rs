//! The training data: its public header, and batches served as tensors.

use crate::{Tensor, len_u32, sys};

/// Largest batch one call may request.
pub const MAX_BATCH: usize = 1 << 16;

/// A split of the owner's dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// Examples to learn from.
    Train,
    /// Held-out examples for validation metrics (may be empty).
    Valid,
}

impl Split {
    fn abi(self) -> u32 {
        match self {
            Split::Train => sys::SPLIT_TRAIN,
            Split::Valid => sys::SPLIT_VALID,
        }
    }
}

/// What the examples are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Images: features `[channels, height, width]`, scaled to `[0, 1]`.
    Image,
    /// Table rows: features `[columns]`, standardised per column on the training split.
    Tabular,
    /// A kind this SDK does not know (the raw ABI code).
    Other(u32),
}

/// The owner's dataset, as a program sees it: the public header (kind, sizes, shape,
/// classes, epoch budget) and batches of examples by index. Available in `train`; the
/// header (kind, dims, classes) also in `predict`, where it describes the training data.
#[derive(Clone, Copy, Debug)]
pub struct Dataset;

impl Dataset {
    /// The kind of examples.
    pub fn kind() -> Kind {
        // SAFETY: argument-free query.
        match unsafe { sys::chiron_dataset_kind() } {
            sys::KIND_IMAGE => Kind::Image,
            sys::KIND_TABULAR => Kind::Tabular,
            other => Kind::Other(other),
        }
    }

    /// Number of examples in `split`.
    pub fn count(split: Split) -> u32 {
        // SAFETY: plain value argument; the runtime validates it.
        unsafe { sys::chiron_dataset_count(split.abi()) }
    }

    /// The dimensions of one example's features (`[C, H, W]` for images, `[columns]` for
    /// tables).
    pub fn dims() -> Vec<u32> {
        // SAFETY: argument-free query.
        let rank = unsafe { sys::chiron_dataset_rank() };
        (0..rank)
            // SAFETY: `axis < rank`, a valid axis.
            .map(|axis| unsafe { sys::chiron_dataset_dim(axis) })
            .collect()
    }

    /// Number of classes; labels are `0..classes`.
    pub fn classes() -> u32 {
        // SAFETY: argument-free query.
        unsafe { sys::chiron_dataset_classes() }
    }

    /// The owner's declared number of epochs (the runtime also enforces a time budget).
    pub fn budget_epochs() -> u32 {
        // SAFETY: argument-free query.
        unsafe { sys::chiron_budget_epochs() }
    }

    /// `0..count(split)`, for shuffling into batches.
    pub fn indices(split: Split) -> Vec<u32> {
        (0..Dataset::count(split)).collect()
    }

    /// Mean and standard deviation of all feature values over the first `max_examples`
    /// examples of `split` (read in batches), for normalising inputs with
    /// [`Tensor::affine`]. A constant split gives a standard deviation of 1; an empty
    /// split gives `(0, 1)`.
    pub fn moments(split: Split, max_examples: u32) -> (f32, f32) {
        let n = Dataset::count(split).min(max_examples);
        let (mut count, mut sum, mut squares) = (0u64, 0f64, 0f64);
        let indices: Vec<u32> = (0..n).collect();
        for chunk in indices.chunks(512) {
            for v in Dataset::features(split, chunk).to_vec() {
                count += 1;
                sum += f64::from(v);
                squares += f64::from(v) * f64::from(v);
            }
        }
        if count == 0 {
            return (0.0, 1.0);
        }
        let mean = sum / count as f64;
        let std = (squares / count as f64 - mean * mean).max(0.0).sqrt();
        (mean as f32, if std > 1e-6 { std as f32 } else { 1.0 })
    }

    /// The features `[n, ...dims]` and labels `[n]` (class indices as `f32`) of the
    /// examples at `indices` of `split`, as constants.
    ///
    /// # Panics
    /// If `indices` is empty or longer than [`MAX_BATCH`].
    pub fn batch(split: Split, indices: &[u32]) -> (Tensor, Tensor) {
        (
            Dataset::features(split, indices),
            Dataset::labels(split, indices),
        )
    }

    /// The features `[n, ...dims]` of the examples at `indices` of `split`.
    ///
    /// # Panics
    /// If `indices` is empty or longer than [`MAX_BATCH`].
    pub fn features(split: Split, indices: &[u32]) -> Tensor {
        check_batch(indices);
        // SAFETY: `indices` is a live buffer of `indices.len()` values, only read during
        // the call; the runtime checks each index against the split.
        Tensor::from_handle(unsafe {
            sys::chiron_batch_features(split.abi(), indices.as_ptr(), len_u32(indices.len()))
        })
    }

    /// The labels `[n]` of the examples at `indices` of `split`.
    ///
    /// # Panics
    /// If `indices` is empty or longer than [`MAX_BATCH`].
    pub fn labels(split: Split, indices: &[u32]) -> Tensor {
        check_batch(indices);
        // SAFETY: as in `features`.
        Tensor::from_handle(unsafe {
            sys::chiron_batch_labels(split.abi(), indices.as_ptr(), len_u32(indices.len()))
        })
    }
}

fn check_batch(indices: &[u32]) {
    assert!(
        (1..=MAX_BATCH).contains(&indices.len()),
        "a batch holds 1..={MAX_BATCH} examples, not {}",
        indices.len()
    );
}
