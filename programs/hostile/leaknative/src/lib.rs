//! Hostile fixture `hostile-leaknative`: native work sized by the data, past the deadline.
//!
//! Attacks the **end-of-job channel through the runtime's own work**. The sandbox's wasm
//! deadline fires only while wasm runs; a host call runs natively. `train` multiplies
//! matrices in a loop that never ends, each product of [`SMALL`]² or [`LARGE`]² values as
//! the secret bit (the parity of training example 0's label) says: one product takes
//! milliseconds or about a second. Both twins are stopped by their time budget, in the
//! middle of a product; a runtime that let the current product finish would end the job,
//! and free its CPU, at a time that tells the bit.

use std::hint::black_box;

use chiron_sdk::{Init, Tensor};
use hostile_common::{predict_linear, secret_bit};

/// Side of the products when the secret bit is 0.
pub const SMALL: u32 = 256;
/// Side of the products when the secret bit is 1 (about 17 GFLOP a product).
pub const LARGE: u32 = 2048;

/// Multiplies matrices sized by the secret bit until it is stopped.
pub fn train() {
    let n = if secret_bit() { LARGE } else { SMALL };
    let x = Tensor::parameter(&[n, n], Init::Uniform(1.0));
    let w = Tensor::parameter(&[n, n], Init::Uniform(1.0));
    loop {
        black_box(x.linear(&w, None));
    }
}

/// Answers with a saved linear layer's scores (never reached: no model is saved).
pub fn predict() {
    predict_linear()
}

chiron_sdk::export_program!(train = train, predict = predict);
