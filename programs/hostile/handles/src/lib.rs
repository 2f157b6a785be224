//! Hostile fixture `hostile-handles`: leaks tiny tensors without end.
//!
//! Attacks the **handle quota**, not the element quota: after training and saving a valid
//! linear model, `train` creates one-element parameters and forgets them, so that they are
//! never freed, until the runtime's live-handle limit stops it (the elements involved stay
//! far below any tensor-memory quota). `predict` is honest.

use chiron_sdk::{Dataset, Init, Optimizer, Split, Tensor, model};

/// Trains and saves a linear model, then leaks one-element tensors until stopped.
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

    loop {
        std::mem::forget(Tensor::parameter(&[1], Init::Zeros));
    }
}

/// Answers with the saved linear layer's scores `[N, classes]`.
pub fn predict() {
    let (w, b) = (model::tensor(0), model::tensor(1));
    let x = chiron_sdk::query_input().flatten();
    chiron_sdk::set_output(&x.linear(&w, Some(&b)));
}

chiron_sdk::export_program!(train = train, predict = predict);
