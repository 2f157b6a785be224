//! Hostile fixture `hostile-nanstorm`: fills everything with NaN and infinity.
//!
//! Attacks the runtime's **numerics**: kernels, the optimiser, the model store, metrics and
//! the answer path all meet non-finite values. `train` divides by zero, takes square roots
//! of negative numbers, feeds NaN and ±inf constants in, takes [`STEPS`] Adam steps on the
//! resulting NaN loss (so the weights become NaN), reports NaN and infinite metrics and
//! saves the poisoned weights. `predict` answers with scores divided by zero (NaN or ±inf
//! everywhere). The runtime must neither crash nor hang: the job succeeds or fails cleanly.

use chiron_sdk::{Dataset, Init, Optimizer, Split, Tensor, model};

/// Optimiser steps on the NaN loss.
pub const STEPS: u32 = 3;

/// `x / 0` element-wise: ±inf, or NaN where `x` is 0 or NaN.
fn over_zero(x: &Tensor) -> Tensor {
    x.div(&x.affine(0.0, 0.0))
}

/// Trains a linear layer on a NaN loss and saves the NaN weights.
pub fn train() {
    let features: u32 = Dataset::dims().iter().product();
    let classes = Dataset::classes();
    let w = Tensor::parameter(&[features, classes], Init::torch_default(features));
    let b = Tensor::parameter(&[classes], Init::torch_default(features));
    let mut opt = Optimizer::adam(&[&w, &b], 1e-3, 0.9, 0.999, 1e-8, 0.0);
    let indices: Vec<u32> = (0..Dataset::count(Split::Train).min(32)).collect();
    let (x, y) = Dataset::batch(Split::Train, &indices);
    let x = x.flatten();
    let n = x.shape()[0];
    let specials: Vec<f32> = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0]
        .into_iter()
        .cycle()
        .take((n * classes) as usize)
        .collect();
    let specials = Tensor::new(&specials, &[n, classes]);
    for _ in 0..STEPS {
        let logits = x.linear(&w, Some(&b));
        let sqrt_negative = logits.affine(0.0, -1.0).sqrt();
        let poisoned = &(&over_zero(&logits) + &sqrt_negative) * &specials;
        let loss = poisoned.cross_entropy(&y);
        opt.step(&loss);
        chiron_sdk::report_metric("train_loss", 0, loss.item());
    }
    chiron_sdk::report_metric("inf", 0, f32::INFINITY);
    chiron_sdk::report_metric("neg_inf", 0, f32::NEG_INFINITY);
    chiron_sdk::report_metric("nan", 0, f32::NAN);
    chiron_sdk::save_model(&[&w, &b], b"linear");
}

/// Answers with the saved (NaN) linear layer's scores divided by zero: `[N, classes]` of
/// NaN and ±inf.
pub fn predict() {
    let (w, b) = (model::tensor(0), model::tensor(1));
    let x = chiron_sdk::query_input().flatten();
    chiron_sdk::set_output(&over_zero(&x.linear(&w, Some(&b))));
}

chiron_sdk::export_program!(train = train, predict = predict);
