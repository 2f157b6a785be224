//! Hostile fixture `hostile-foreignimport`: imports a function the ABI does not offer.
//!
//! Attacks the **import check at load time**. Besides the `chiron` ABI, the module imports
//! `clock_now` from module `env` (a clock would let a program time itself, or a host that
//! happened to provide one could be abused) and calls it in `train`, so the import is
//! really in the module. The runtime must refuse the program when it is loaded, before any
//! job runs; otherwise the program trains and saves a valid linear model.

use std::hint::black_box;

use hostile_common::{Linear, predict_linear};

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "env")]
unsafe extern "C" {
    /// Not part of the Chiron ABI.
    fn clock_now() -> u64;
}

/// The foreign clock (0 natively, where no such import exists).
fn now() -> u64 {
    #[cfg(target_arch = "wasm32")]
    // SAFETY: a plain import without arguments; the sandbox is expected to refuse the module
    // before this can run.
    return unsafe { clock_now() };
    #[cfg(not(target_arch = "wasm32"))]
    0
}

/// Reads the foreign clock, then trains and saves a linear model.
pub fn train() {
    black_box(now());
    let _linear = Linear::train_and_save();
}

/// Answers with the saved linear layer's scores `[N, classes]`.
pub fn predict() {
    predict_linear()
}

chiron_sdk::export_program!(train = train, predict = predict);
