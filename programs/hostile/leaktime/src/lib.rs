//! Hostile fixture `hostile-leaktime`: takes longer when the secret bit is set.
//!
//! Attacks the **timing channel**. Before training, `train` spins a pure-wasm busy loop of
//! [`SPIN_STEPS`] LCG steps (1.5–3 s) if the secret bit (the parity of training
//! example 0's label) is 1, and none otherwise; then it trains and saves a valid linear
//! model. The loop is seeded by the label and each step goes through `black_box`, so it can
//! neither be skipped nor folded. If the platform can time the job, it learns the bit; the
//! job's observable duration must not depend on it.

use std::hint::black_box;

use hostile_common::{Linear, predict_linear, secret_bit, spin};

/// LCG steps spun when the secret bit is 1: 1.5–3 s in the sandbox (fuel metering and epoch
/// checks included, a step takes 1.3–2.5 ns), well above the 1 s the twins' end times may
/// differ by before a live run counts as showing the bit.
pub const SPIN_STEPS: u64 = 1_200_000_000;

/// Spins if the secret bit is set, then trains and saves a linear model.
pub fn train() {
    let secret = secret_bit();
    black_box(spin(if secret { SPIN_STEPS } else { 0 }, u64::from(secret)));

    let _linear = Linear::train_and_save();
}

/// Answers with the saved linear layer's scores `[N, classes]`.
pub fn predict() {
    predict_linear()
}

chiron_sdk::export_program!(train = train, predict = predict);
