//! Hostile fixture `hostile-leaktensors`: holds runtime tensors when the secret bit is set.
//!
//! Attacks the **runtime-memory channel**: tensors live in the runtime, outside the
//! program's linear memory. If the secret bit (the parity of training example 0's label) is
//! 1, `train` creates [`HOARD_TENSORS`] parameters of 1024×1024 values drawn from a normal
//! distribution (4 MiB each, ≈160 MiB in all, really written, unlike zeros) and keeps them
//! alive until after the model is saved; otherwise it creates none. It trains and saves a
//! valid linear model either way. If the platform can observe the enclave's memory use, it
//! learns the bit.

use std::hint::black_box;

use chiron_sdk::{Init, Tensor};
use hostile_common::{Linear, linear_parameters, predict_linear, secret_bit};

/// 1024×1024 tensors held when the secret bit is 1.
pub const HOARD_TENSORS: usize = 40;

/// Holds ≈160 MiB of runtime tensors if the secret bit is set; trains and saves a linear
/// model.
pub fn train() {
    let (w, b) = linear_parameters();
    // Drawn after the model's own initial values, so that they do not depend on the bit.
    let count = if secret_bit() { HOARD_TENSORS } else { 0 };
    let hoard: Vec<Tensor> = (0..count)
        .map(|_| Tensor::parameter(&[1024, 1024], Init::Normal(1.0)))
        .collect();
    let mut linear = Linear::with_parameters(w, b);
    linear.step();
    linear.save();

    drop(black_box(hoard));
}

/// Answers with the saved linear layer's scores `[N, classes]`.
pub fn predict() {
    predict_linear()
}

chiron_sdk::export_program!(train = train, predict = predict);
