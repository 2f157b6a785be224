//! Hostile fixture `hostile-leakclass`: chooses the kind of its failure by the data.
//!
//! Attacks the **failure-kind channel**. After training and saving a valid linear model,
//! `train` fails in one of two distinguishable ways: if the secret bit (the parity of
//! training example 0's label) is 1 it overflows the stack (unbounded recursion, a "call
//! stack exhausted" trap), otherwise it executes `unreachable` (an "unreachable" trap). If
//! the platform sees which limit or trap stopped the program, it learns the bit; it must
//! see the same failure either way.

use std::hint::black_box;

use hostile_common::{Linear, predict_linear, secret_bit};

/// Recurses forever (as `hostile-stackbomb` does).
#[allow(unconditional_recursion)] // the attack itself
fn dive(depth: u64) -> u64 {
    let below = dive(black_box(depth + 1));
    black_box(below).wrapping_add(depth)
}

/// Trains and saves a linear model, then overflows the stack or traps on `unreachable`.
pub fn train() {
    let _linear = Linear::train_and_save();

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
    predict_linear()
}

chiron_sdk::export_program!(train = train, predict = predict);
