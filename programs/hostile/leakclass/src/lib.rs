//! Hostile fixture `hostile-leakclass`: chooses the kind of its failure by the data.
//!
//! Attacks the **failure-kind channel**. After training and saving a valid linear model,
//! `train` fails in one of two distinguishable ways: if the secret bit (the parity of
//! training example 0's label) is 1 it overflows the stack (unbounded recursion, a "call
//! stack exhausted" trap), otherwise it executes `unreachable` (an "unreachable" trap). If
//! the platform sees which limit or trap stopped the program, it learns the bit; it must
//! see the same failure either way.

use std::hint::black_box;

use chiron_sdk::{Dataset, Init, Optimizer, Split, Tensor, model};

/// The secret bit: the parity of training example 0's label.
fn secret_bit() -> bool {
    let (_, labels) = Dataset::batch(Split::Train, &[0]);
    (labels.to_vec()[0] as u32) & 1 == 1
}

/// Recurses forever (as `hostile-stackbomb` does).
#[allow(unconditional_recursion)] // the attack itself
fn dive(depth: u64) -> u64 {
    let below = dive(black_box(depth + 1));
    black_box(below).wrapping_add(depth)
}

/// Trains and saves a linear model, then overflows the stack or traps on `unreachable`.
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

    if secret_bit() {
        black_box(dive(0));
    }
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

/// Answers with the saved linear layer's scores `[N, classes]`.
pub fn predict() {
    let (w, b) = (model::tensor(0), model::tensor(1));
    let x = chiron_sdk::query_input().flatten();
    chiron_sdk::set_output(&x.linear(&w, Some(&b)));
}

chiron_sdk::export_program!(train = train, predict = predict);
