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

use chiron_sdk::{Dataset, Init, Optimizer, Split, Tensor, model};

/// 1024×1024 tensors held when the secret bit is 1.
pub const HOARD_TENSORS: usize = 40;

/// The secret bit: the parity of training example 0's label.
fn secret_bit() -> bool {
    let (_, labels) = Dataset::batch(Split::Train, &[0]);
    (labels.to_vec()[0] as u32) & 1 == 1
}

/// Holds ≈160 MiB of runtime tensors if the secret bit is set; trains and saves a linear
/// model.
pub fn train() {
    let features: u32 = Dataset::dims().iter().product();
    let classes = Dataset::classes();
    let w = Tensor::parameter(&[features, classes], Init::torch_default(features));
    let b = Tensor::parameter(&[classes], Init::torch_default(features));
    // Drawn after the model's own initial values, so that they do not depend on the bit.
    let count = if secret_bit() { HOARD_TENSORS } else { 0 };
    let hoard: Vec<Tensor> = (0..count)
        .map(|_| Tensor::parameter(&[1024, 1024], Init::Normal(1.0)))
        .collect();
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
