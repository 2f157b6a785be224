//! Hostile fixture `hostile-leakoutcome`: fails the job on a secret bit.
//!
//! Uses the one channel Chiron declares open: **whether a job succeeds**. It trains and saves
//! a valid linear model, then panics when the secret bit (the parity of training example 0's
//! label) is set and returns normally otherwise. The platform learns that one bit and, the
//! test checks, nothing else: the failure looks like any other program failure, and a private
//! job's timing, memory and event stream are the same either way.

use chiron_sdk::{Dataset, Init, Optimizer, Split, Tensor, model};

/// The secret bit: the parity of training example 0's label.
fn secret_bit() -> bool {
    let (_, labels) = Dataset::batch(Split::Train, &[0]);
    (labels.to_vec()[0] as u32) & 1 == 1
}

/// Trains and saves a linear model, then fails if the secret bit is set.
pub fn train() {
    let features: u32 = Dataset::dims().iter().product();
    let classes = Dataset::classes();
    let w = Tensor::parameter(&[features, classes], Init::torch_default(features));
    let b = Tensor::parameter(&[classes], Init::torch_default(features));
    let mut opt = Optimizer::sgd(&[&w, &b], 0.1, 0.0, 0.0);
    let indices: Vec<u32> = (0..Dataset::count(Split::Train).min(32)).collect();
    let (x, y) = Dataset::batch(Split::Train, &indices);
    opt.step(&x.flatten().linear(&w, Some(&b)).cross_entropy(&y));
    chiron_sdk::save_model(&[&w, &b], b"linear");
    assert!(!secret_bit(), "failing on purpose");
}

/// Answers with the saved linear layer's scores `[N, classes]`.
pub fn predict() {
    let (w, b) = (model::tensor(0), model::tensor(1));
    let x = chiron_sdk::query_input().flatten();
    chiron_sdk::set_output(&x.linear(&w, Some(&b)));
}

chiron_sdk::export_program!(train = train, predict = predict);
