//! Hostile fixture `hostile-leakmetrics`: reports as many metrics as the data says.
//!
//! Attacks the **metric-count channel**. Metric values are encrypted for the data owner,
//! but their number might be visible to the platform (as messages or ciphertext length).
//! `train` reports `train_loss` for [`SECRET_METRICS`] epochs (0..200) if the secret bit
//! (the parity of training example 0's label) is 1, and once (epoch 0) otherwise, after
//! training and saving a valid linear model.

use hostile_common::{Linear, linear_parameters, predict_linear, secret_bit};

/// Metrics reported when the secret bit is 1 (1 otherwise).
pub const SECRET_METRICS: u32 = 200;

/// Trains and saves a linear model, then reports 1 or 200 metrics.
pub fn train() {
    let (w, b) = linear_parameters();
    let mut linear = Linear::with_parameters(w, b);
    let loss = linear.step_keeping_loss();
    linear.save();

    let count = if secret_bit() { SECRET_METRICS } else { 1 };
    let value = loss.item();
    for epoch in 0..count {
        chiron_sdk::report_metric("train_loss", epoch, value);
    }
}

/// Answers with the saved linear layer's scores `[N, classes]`.
pub fn predict() {
    predict_linear()
}

chiron_sdk::export_program!(train = train, predict = predict);
