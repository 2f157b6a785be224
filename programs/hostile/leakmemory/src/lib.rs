//! Hostile fixture `hostile-leakmemory`: grows its linear memory when the secret bit is set.
//!
//! Attacks the **memory-footprint channel**. If the secret bit (the parity of training
//! example 0's label) is 1, `train` allocates [`HOARD_BYTES`] (160 MiB, under the sandbox's
//! 256 MiB linear-memory cap) filled with ones, so every page is written and committed,
//! and keeps it alive until after the model is saved; otherwise it allocates nothing. It
//! trains and saves a valid linear model either way. If the platform can observe the
//! enclave's memory use (or its peak), it learns the bit.

use std::hint::black_box;

use hostile_common::{Linear, predict_linear, secret_bit};

/// Bytes held when the secret bit is 1.
pub const HOARD_BYTES: usize = 160 << 20;

/// Holds 160 MiB of touched memory if the secret bit is set; trains and saves a linear model.
pub fn train() {
    // Ones, not zeros: a zeroed allocation may be fresh memory that is never written.
    let hoard = if secret_bit() {
        vec![1u8; HOARD_BYTES]
    } else {
        Vec::new()
    };
    let hoard = black_box(hoard);

    let _linear = Linear::train_and_save();

    drop(black_box(hoard));
}

/// Answers with the saved linear layer's scores `[N, classes]`.
pub fn predict() {
    predict_linear()
}

chiron_sdk::export_program!(train = train, predict = predict);
