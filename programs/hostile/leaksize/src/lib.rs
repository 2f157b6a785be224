//! Hostile fixture `hostile-leaksize`: sizes the model, and its saves, by the data.
//!
//! Attacks the **model-size and save-count channels**. If the secret bit (the parity of
//! training example 0's label) is 1, `train` saves the trained linear layer plus an extra
//! parameter of [`EXTRA_ELEMENTS`] values (400 KB more), [`SECRET_SAVES`] times over;
//! otherwise it saves the linear layer alone, once. If the platform sees the size of the
//! stored model, or how often the program saved, it learns the bit. `predict` uses the
//! first two tensors, so the model is valid either way.

use chiron_sdk::{Init, Tensor};
use hostile_common::{Linear, predict_linear, secret_bit};

/// Elements of the extra parameter saved when the secret bit is 1.
pub const EXTRA_ELEMENTS: u32 = 100_000;
/// `save_model` calls when the secret bit is 1 (1 otherwise).
pub const SECRET_SAVES: u32 = 20;

/// Trains a linear model and saves it, larger and more often if the secret bit is set.
pub fn train() {
    let secret = secret_bit();
    let linear = Linear::train();

    if secret {
        let extra = Tensor::parameter(&[EXTRA_ELEMENTS], Init::Uniform(1.0));
        for _ in 0..SECRET_SAVES {
            chiron_sdk::save_model(&[linear.weight(), linear.bias(), &extra], b"linear+extra");
        }
    } else {
        linear.save();
    }
}

/// Answers with the saved linear layer's scores `[N, classes]` (ignoring any extra tensor).
pub fn predict() {
    predict_linear()
}

chiron_sdk::export_program!(train = train, predict = predict);
