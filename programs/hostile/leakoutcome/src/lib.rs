//! Hostile fixture `hostile-leakoutcome`: fails the job on a secret bit.
//!
//! Uses the one channel Chiron declares open: **whether a job succeeds**. It trains and saves
//! a valid linear model, then panics when the secret bit (the parity of training example 0's
//! label) is set and returns normally otherwise. The platform learns that one bit and, the
//! test checks, nothing else: the failure looks like any other program failure, and a private
//! job's timing, memory and event stream are the same either way.

use hostile_common::{Linear, predict_linear, secret_bit};

/// Trains and saves a linear model, then fails if the secret bit is set.
pub fn train() {
    let _linear = Linear::train_and_save();
    assert!(!secret_bit(), "failing on purpose");
}

/// Answers with the saved linear layer's scores `[N, classes]`.
pub fn predict() {
    predict_linear()
}

chiron_sdk::export_program!(train = train, predict = predict);
