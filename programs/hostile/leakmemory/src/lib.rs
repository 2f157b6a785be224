//! Hostile fixture `hostile-leakmemory`: grows its linear memory when the secret bit is set.
//!
//! Attacks the **memory-footprint channel**. If the secret bit (the parity of training
//! example 0's label) is 1, `train` allocates [`HOARD_BYTES`] (160 MiB, under the sandbox's
//! 256 MiB linear-memory cap) filled with ones, so every page is written and committed,
//! and keeps it alive until after the model is saved; otherwise it allocates nothing. It
//! trains and saves a valid linear model either way. If the platform can observe the
//! enclave's memory use (or its peak), it learns the bit.

use std::hint::black_box;

use chiron_sdk::{Dataset, Init, Optimizer, Split, Tensor, model};

/// Bytes held when the secret bit is 1.
pub const HOARD_BYTES: usize = 160 << 20;

/// The secret bit: the parity of training example 0's label.
fn secret_bit() -> bool {
    let (_, labels) = Dataset::batch(Split::Train, &[0]);
    (labels.to_vec()[0] as u32) & 1 == 1
}

/// Holds 160 MiB of touched memory if the secret bit is set; trains and saves a linear model.
pub fn train() {
    // Ones, not zeros: a zeroed allocation may be fresh memory that is never written.
    let hoard = if secret_bit() {
        vec![1u8; HOARD_BYTES]
    } else {
        Vec::new()
    };
    let hoard = black_box(hoard);

    let features: u32 = Dataset::dims().iter().product();
    let classes = Dataset::classes();
    let w = Tensor::parameter(&[features, classes], Init::torch_default(features));
    let b = Tensor::parameter(&[classes], Init::torch_default(features));
    let mut opt = Optimizer::sgd(&[&w, &b], 0.1, 0.0, 0.0);
    let indices: Vec<u32> = (0..Dataset::count(Split::Train).min(32)).collect();
    let (x, y) = Dataset::batch(Split::Train, &indices);
    opt.step(&x.flatten().linear(&w, Some(&b)).cross_entropy(&y));
    chiron_sdk::save_model(&[&w, &b], b"linear");

    drop(black_box(hoard));
}

/// Answers with the saved linear layer's scores `[N, classes]`.
pub fn predict() {
    let (w, b) = (model::tensor(0), model::tensor(1));
    let x = chiron_sdk::query_input().flatten();
    chiron_sdk::set_output(&x.linear(&w, Some(&b)));
}

chiron_sdk::export_program!(train = train, predict = predict);
