//! Hostile fixture `hostile-leakshape`: sizes the runtime's work by the data through the
//! new shape operations.
//!
//! Attacks the **runtime memory and time channels** with reductions, concatenation and
//! gathering instead of fresh parameters: it reads the secret bit (the parity of training
//! example 0's label) through `sum_dims` and `argmax` on a batch, then, if the bit is 1,
//! builds a tensor of [`COPIES`] concatenated 1024×1024 blocks (≈80 MiB, each block a
//! broadcast product, really written) and gathers all its rows by `index_select` (≈80 MiB
//! more), reducing the result over two axes; if the bit is 0 it does the same with one
//! block. It trains and saves a valid linear model either way. If the platform can observe the enclave's memory use or
//! the job's timing, it learns the bit.

use std::hint::black_box;

use chiron_sdk::{Dataset, Init, Split, Tensor};
use hostile_common::{Linear, linear_parameters};

/// 1024×1024 blocks concatenated when the secret bit is 1.
pub const COPIES: u32 = 20;

/// The secret bit, read through the new reductions: the label of example 0 summed over its
/// only axis, and the arg-max of a one-hot row built from it by broadcasting.
fn secret_bit_by_reduction() -> bool {
    let (_, labels) = Dataset::batch(Split::Train, &[0]);
    let label = labels.sum_dims(&[0], false).to_vec()[0];
    let classes = Dataset::classes();
    let positions: Vec<f32> = (0..classes).map(|c| c as f32).collect();
    // 1 where the position equals the label, 0 elsewhere: −|p − label| peaks there.
    let row = Tensor::new(&positions, &[1, classes])
        .sub(&labels.reshape(&[1, 1]))
        .abs()
        .affine(-1.0, 0.0);
    let at = row.argmax(1, false).to_vec()[0];
    debug_assert_eq!(at, label);
    (at as u32) & 1 == 1
}

/// Builds and reduces ≈160 MiB of runtime tensors if the secret bit is set; trains and
/// saves a linear model.
pub fn train() {
    let (w, b) = linear_parameters();
    let copies = if secret_bit_by_reduction() { COPIES } else { 1 };
    let column = Tensor::parameter(&[1024, 1], Init::Normal(1.0));
    let row = Tensor::parameter(&[1, 1024], Init::Normal(1.0));
    let block = column.mul(&row);
    let blocks: Vec<&Tensor> = (0..copies).map(|_| &block).collect();
    let hoard = Tensor::concat(&blocks, 0);
    let picks: Vec<f32> = (0..copies * 1024).rev().map(|i| i as f32).collect();
    let gathered = hoard.index_select(0, &Tensor::new(&picks, &[copies * 1024]));
    let total = gathered.sum_dims(&[0, 1], false);
    let mut linear = Linear::with_parameters(w, b);
    linear.step();
    linear.save();
    drop(black_box((hoard, gathered, total)));
}

/// Answers with the saved linear layer's scores `[N, classes]`.
pub fn predict() {
    hostile_common::predict_linear()
}

chiron_sdk::export_program!(train = train, predict = predict);
