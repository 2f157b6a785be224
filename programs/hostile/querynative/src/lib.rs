//! Hostile fixture `hostile-querynative`: slow in native code on a secret, at query time.
//!
//! Attacks the **query-latency channel through the runtime's own work**. The sandbox stops
//! `predict` at its deadline only while wasm runs; a host call runs natively to its end.
//! `predict` makes one product of two [`SIDE`]² matrices (about 137 GFLOP: seconds on two
//! cores) when the query's first value is above 0.5 or the model's secret bit (the parity of
//! training example 0's label, saved in the model's metadata) is set, and none otherwise,
//! then answers with a valid linear model. Under a private answer time every answer must
//! leave at the declared time: the query enclave's serving thread answers then, with the
//! same-size "unanswered" answer when the worker running `predict` is still busy.

use std::hint::black_box;

use chiron_sdk::{Init, Tensor, model};
use hostile_common::{Linear, predict_linear, secret_bit};

/// Side of the product made on a secret: `SIDE × SIDE` times `SIDE × SIDE` (48 Mi tensor
/// elements in all, within the default tensor quota).
pub const SIDE: u32 = 4096;

/// Trains a linear model and saves it with the secret bit as its metadata.
pub fn train() {
    let bit = secret_bit();
    let linear = Linear::train();
    chiron_sdk::save_model(&[linear.weight(), linear.bias()], &[u8::from(bit)]);
}

/// One huge native product on a secret, then the linear layer's scores.
pub fn predict() {
    let first = chiron_sdk::query_input().to_vec()[0];
    let bit = model::meta().first().copied() == Some(1);
    if first > 0.5 || bit {
        let x = Tensor::parameter(&[SIDE, SIDE], Init::Uniform(1.0));
        let w = Tensor::parameter(&[SIDE, SIDE], Init::Uniform(1.0));
        black_box(x.linear(&w, None));
    }
    predict_linear()
}

chiron_sdk::export_program!(train = train, predict = predict);
