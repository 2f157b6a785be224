//! Hostile fixture `hostile-leaksteps`: takes more optimizer steps when the secret bit is set.
//!
//! Attacks the **parameter-exchange channel** of a distributed job. `train` takes
//! [`STEPS_IF_SET`] SGD steps on a linear model if the secret bit (the parity of training
//! example 0's label, which only rank 0's shard holds) is 1, and one step otherwise, then
//! saves the model. On a worker every step is a round with the parameter server, so if the
//! platform can count or time the exchange's messages, it learns the bit; a private job's
//! paced exchange must carry the same traffic either way.

use hostile_common::{Linear, predict_linear, secret_bit};

/// Steps taken when the secret bit is 1 (one otherwise).
pub const STEPS_IF_SET: u32 = 40;

/// Steps as many times as the secret bit says, then saves the linear model.
pub fn train() {
    let steps = if secret_bit() { STEPS_IF_SET } else { 1 };
    let (w, b) = hostile_common::linear_parameters();
    let mut linear = Linear::with_parameters(w, b);
    for _ in 0..steps {
        linear.step();
    }
    linear.save();
}

/// Answers with the saved linear layer's scores `[N, classes]`.
pub fn predict() {
    predict_linear()
}

chiron_sdk::export_program!(train = train, predict = predict);
