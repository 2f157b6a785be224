//! Hostile fixture `hostile-leakmetrics`: reports as many metrics as the data says.
//!
//! Attacks the **metric-count channel**. Metric values are encrypted for the data owner,
//! but their number might be visible to the platform (as messages or ciphertext length).
//! `train` reports `train_loss` for [`SECRET_METRICS`] epochs (0..200) if the secret bit
//! (the parity of training example 0's label) is 1, and once (epoch 0) otherwise, after
//! training and saving a valid linear model.

use chiron_sdk::{Dataset, Init, Optimizer, Split, Tensor, model};

/// Metrics reported when the secret bit is 1 (1 otherwise).
pub const SECRET_METRICS: u32 = 200;

/// The secret bit: the parity of training example 0's label.
fn secret_bit() -> bool {
    let (_, labels) = Dataset::batch(Split::Train, &[0]);
    (labels.to_vec()[0] as u32) & 1 == 1
}

/// Trains and saves a linear model, then reports 1 or 200 metrics.
pub fn train() {
    let features: u32 = Dataset::dims().iter().product();
    let classes = Dataset::classes();
    let w = Tensor::parameter(&[features, classes], Init::torch_default(features));
    let b = Tensor::parameter(&[classes], Init::torch_default(features));
    let mut opt = Optimizer::sgd(&[&w, &b], 0.1, 0.0, 0.0);
    let indices: Vec<u32> = (0..Dataset::count(Split::Train).min(32)).collect();
    let (x, y) = Dataset::batch(Split::Train, &indices);
    let loss = x.flatten().linear(&w, Some(&b)).cross_entropy(&y);
    opt.step(&loss);
    chiron_sdk::save_model(&[&w, &b], b"linear");

    let count = if secret_bit() { SECRET_METRICS } else { 1 };
    let value = loss.item();
    for epoch in 0..count {
        chiron_sdk::report_metric("train_loss", epoch, value);
    }
}

/// Answers with the saved linear layer's scores `[N, classes]`.
pub fn predict() {
    let (w, b) = (model::tensor(0), model::tensor(1));
    let x = chiron_sdk::query_input().flatten();
    chiron_sdk::set_output(&x.linear(&w, Some(&b)));
}

chiron_sdk::export_program!(train = train, predict = predict);
