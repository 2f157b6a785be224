//! Fixture `hostile-optimizers`: every optimizer of the ABI, and one misuse of it.
//!
//! `train` fits a linear classifier to the first training examples three times, with
//! Nesterov SGD, AdamW and RMSprop, each clipping its gradients, and saves the last. With an
//! epoch budget of exactly 7 it then asks for a negative clipping norm, which the runtime
//! must refuse by ending the program.

use chiron_sdk::{Dataset, Init, Optimizer, Split, Tensor};

/// The epoch budget at which the program misuses the ABI.
pub const MISUSE_EPOCHS: u32 = 7;

/// Trains with each optimizer, then (at [`MISUSE_EPOCHS`]) misuses one.
pub fn train() {
    let features: u32 = Dataset::dims().iter().product();
    let classes = Dataset::classes();
    let count = Dataset::count(Split::Train).min(32);
    let indices: Vec<u32> = (0..count).collect();
    let (x, y) = Dataset::batch(Split::Train, &indices);
    let x = x.reshape(&[count, features]);
    let makers: [fn(&[&Tensor]) -> Optimizer; 3] = [
        |p| Optimizer::nesterov(p, 0.05, 0.9, 1e-4),
        |p| Optimizer::adamw(p, 1e-2, 0.9, 0.999, 1e-8, 0.01),
        |p| Optimizer::rmsprop(p, 1e-2, 0.99, 1e-8, 0.0),
    ];
    let mut last = None;
    for make in makers {
        let w = Tensor::parameter(&[features, classes], Init::torch_default(features));
        let b = Tensor::parameter(&[classes], Init::torch_default(features));
        let mut opt = make(&[&w, &b]);
        opt.clip_grad_norm(1.0);
        for step in 0..20 {
            let loss = x.linear(&w, Some(&b)).cross_entropy(&y);
            chiron_sdk::report_metric("train_loss", step, loss.to_vec()[0]);
            opt.step(&loss);
        }
        last = Some((w, b, opt));
    }
    if let Some((w, b, mut opt)) = last {
        chiron_sdk::save_model(&[&w, &b], b"linear");
        if Dataset::budget_epochs() == MISUSE_EPOCHS {
            opt.clip_grad_norm(-1.0);
        }
    }
}

/// A linear classifier's scores.
pub fn predict() {
    let (w, b) = (chiron_sdk::model::tensor(0), chiron_sdk::model::tensor(1));
    let x = chiron_sdk::query_input();
    let n = x.shape()[0];
    let x = x.reshape(&[n, w.shape()[0]]);
    chiron_sdk::set_output(&x.linear(&w, Some(&b)));
}

chiron_sdk::export_program!(train = train, predict = predict);
