//! Hostile fixture `hostile-leakalloc`: an allocation sized by the data, beyond every limit.
//!
//! Attacks the **allocation-failure channel**. `linear` on `[ROWS, 1] × [1, n]` asks the
//! runtime for a `ROWS × n` output: 2^27 values (512 MiB) or 2^28 (1 GiB) as the secret bit
//! (the parity of training example 0's label) says. A runtime that allocated the
//! output before checking it against the job's memory would show the size (its peak memory,
//! or an allocator's "memory allocation of N bytes failed" on its way down); one that charges
//! the output to the budget first refuses both the same way.

use std::hint::black_box;

use chiron_sdk::{Init, Tensor};
use hostile_common::{Linear, predict_linear, secret_bit};

/// Rows of the product.
pub const ROWS: u32 = 1 << 14;
/// Columns of the product when the secret bit is 0.
pub const SMALL: u32 = 1 << 13;
/// Columns of the product when the secret bit is 1.
pub const LARGE: u32 = 1 << 14;

/// Asks for an outer product sized by the secret bit, then trains and saves a linear model.
pub fn train() {
    let n = if secret_bit() { LARGE } else { SMALL };
    let column = Tensor::parameter(&[ROWS, 1], Init::Uniform(1.0));
    let row = Tensor::parameter(&[1, n], Init::Uniform(1.0));
    black_box(column.linear(&row, None));

    let _linear = Linear::train_and_save();
}

/// Answers with the saved linear layer's scores `[N, classes]`.
pub fn predict() {
    predict_linear()
}

chiron_sdk::export_program!(train = train, predict = predict);
