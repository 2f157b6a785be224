//! Hostile fixture `hostile-handles`: leaks tiny tensors without end.
//!
//! Attacks the **handle quota**, not the element quota: after training and saving a valid
//! linear model, `train` creates one-element parameters and forgets them, so that they are
//! never freed, until the runtime's live-handle limit stops it (the elements involved stay
//! far below any tensor-memory quota). `predict` is honest.

use chiron_sdk::{Init, Tensor};
use hostile_common::{Linear, predict_linear};

/// Trains and saves a linear model, then leaks one-element tensors until stopped.
pub fn train() {
    let _linear = Linear::train_and_save();

    loop {
        std::mem::forget(Tensor::parameter(&[1], Init::Zeros));
    }
}

/// Answers with the saved linear layer's scores `[N, classes]`.
pub fn predict() {
    predict_linear()
}

chiron_sdk::export_program!(train = train, predict = predict);
