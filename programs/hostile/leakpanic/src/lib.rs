//! Hostile fixture `hostile-leakpanic`: panics with the owner's data in the message.
//!
//! Attacks the **failure-message channel** (trap, panic and error strings). After training
//! and saving a valid linear model, `train` reads the first 16 feature values of training
//! example 0 and the secret bit (the parity of its label) and panics with them, in hex, in
//! the message, hoping the runtime forwards the panic text, or any trap detail derived from
//! the program, to the platform. The platform must learn only that the job failed.

use chiron_sdk::{Dataset, Init, Optimizer, Split, Tensor, model};

/// The secret bit: the parity of training example 0's label.
fn secret_bit() -> bool {
    let (_, labels) = Dataset::batch(Split::Train, &[0]);
    (labels.to_vec()[0] as u32) & 1 == 1
}

/// Trains and saves a linear model, then panics with example 0's features and secret bit.
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

    let (example, _) = Dataset::batch(Split::Train, &[0]);
    let hex: Vec<String> = example
        .to_vec()
        .iter()
        .take(16)
        .map(|v| format!("{:08x}", v.to_bits()))
        .collect();
    panic!(
        "LEAK secret={} features={}",
        u8::from(secret_bit()),
        hex.join(",")
    );
}

/// Answers with the saved linear layer's scores `[N, classes]`.
pub fn predict() {
    let (w, b) = (model::tensor(0), model::tensor(1));
    let x = chiron_sdk::query_input().flatten();
    chiron_sdk::set_output(&x.linear(&w, Some(&b)));
}

chiron_sdk::export_program!(train = train, predict = predict);
