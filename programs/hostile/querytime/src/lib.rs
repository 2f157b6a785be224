//! Hostile fixture `hostile-querytime`: answers slowly when the query says so.
//!
//! Attacks the **query-latency channel**. `predict` spins [`SPIN_STEPS`] LCG steps (roughly
//! 250 ms) when the query's first value is above 0.5, and none otherwise, then answers with
//! a valid linear model. A platform timing the query enclave would learn something about the
//! owner's query (or, with a model-dependent condition, about the training data); under a
//! private answer time every answer must leave at the declared time.

use std::hint::black_box;

use hostile_common::{Linear, predict_linear, spin};

/// LCG steps spun for a query whose first value is above 0.5: about 250 ms, within the fuel
/// of one `predict`.
pub const SPIN_STEPS: u64 = 100_000_000;

/// Trains and saves a linear model.
pub fn train() {
    let _linear = Linear::train_and_save();
}

/// Spins on a query-dependent condition, then answers with the linear layer's scores.
pub fn predict() {
    let first = chiron_sdk::query_input().to_vec()[0];
    black_box(spin(if first > 0.5 { SPIN_STEPS } else { 0 }, 1));
    predict_linear()
}

chiron_sdk::export_program!(train = train, predict = predict);
