//! Hostile fixture `hostile-leaksize`: sizes the model, and its saves, by the data.
//!
//! Attacks the **model-size and save-count channels**. If the secret bit (the parity of
//! training example 0's label) is 1, `train` saves the trained linear layer plus an extra
//! parameter of [`EXTRA_ELEMENTS`] values (400 KB more), [`SECRET_SAVES`] times over;
//! otherwise it saves the linear layer alone, once. If the platform sees the size of the
//! stored model, or how often the program saved, it learns the bit. `predict` uses the
//! first two tensors, so the model is valid either way.

use chiron_sdk::{Dataset, Init, Optimizer, Split, Tensor, model};

/// Elements of the extra parameter saved when the secret bit is 1.
pub const EXTRA_ELEMENTS: u32 = 100_000;
/// `save_model` calls when the secret bit is 1 (1 otherwise).
pub const SECRET_SAVES: u32 = 20;

/// The secret bit: the parity of training example 0's label.
fn secret_bit() -> bool {
    let (_, labels) = Dataset::batch(Split::Train, &[0]);
    (labels.to_vec()[0] as u32) & 1 == 1
}

/// Trains a linear model and saves it, larger and more often if the secret bit is set.
pub fn train() {
    let secret = secret_bit();
    let features: u32 = Dataset::dims().iter().product();
    let classes = Dataset::classes();
    let w = Tensor::parameter(&[features, classes], Init::torch_default(features));
    let b = Tensor::parameter(&[classes], Init::torch_default(features));
    let mut opt = Optimizer::sgd(&[&w, &b], 0.1, 0.0, 0.0);
    let indices: Vec<u32> = (0..Dataset::count(Split::Train).min(32)).collect();
    let (x, y) = Dataset::batch(Split::Train, &indices);
    opt.step(&x.flatten().linear(&w, Some(&b)).cross_entropy(&y));

    if secret {
        let extra = Tensor::parameter(&[EXTRA_ELEMENTS], Init::Uniform(1.0));
        for _ in 0..SECRET_SAVES {
            chiron_sdk::save_model(&[&w, &b, &extra], b"linear+extra");
        }
    } else {
        chiron_sdk::save_model(&[&w, &b], b"linear");
    }
}

/// Answers with the saved linear layer's scores `[N, classes]` (ignoring any extra tensor).
pub fn predict() {
    let (w, b) = (model::tensor(0), model::tensor(1));
    let x = chiron_sdk::query_input().flatten();
    chiron_sdk::set_output(&x.linear(&w, Some(&b)));
}

chiron_sdk::export_program!(train = train, predict = predict);
