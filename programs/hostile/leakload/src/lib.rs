//! Hostile fixture `hostile-leakload`: a model that trains but would not load, on a bit.
//!
//! Attacks the **second outcome bit**: the query enclave's loader. If the secret bit (the
//! parity of training example 0's label) is 1, `train` saves its linear layer under
//! [`REPEATS`] repeated handles, more tensors than a model may hold; otherwise it saves it
//! once. A runtime whose `save_model` accepted what its loader refuses would let the job
//! succeed and then fail when the model is served: a second bit beside the job's outcome.
//! With one validator, the job itself fails, and every model that trains also loads.

use hostile_common::{Linear, predict_linear, secret_bit};

/// Times the weights are listed when the secret bit is 1: above the 4096 tensors a model
/// may hold.
pub const REPEATS: usize = 5000;

/// Trains a linear model and saves it, with too many tensors if the secret bit is set.
pub fn train() {
    let linear = Linear::train();
    if secret_bit() {
        let mut tensors = vec![linear.weight(), linear.bias()];
        tensors.extend(std::iter::repeat_n(linear.weight(), REPEATS));
        chiron_sdk::save_model(&tensors, b"linear");
    } else {
        linear.save();
    }
}

/// Answers with the saved linear layer's scores `[N, classes]` (its first two tensors).
pub fn predict() {
    predict_linear()
}

chiron_sdk::export_program!(train = train, predict = predict);
