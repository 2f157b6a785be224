//! Hostile fixture `hostile-leakpanic`: panics with the owner's data in the message.
//!
//! Attacks the **failure-message channel** (trap, panic and error strings). After training
//! and saving a valid linear model, `train` reads the first 16 feature values of training
//! example 0 and the secret bit (the parity of its label) and panics with them, in hex, in
//! the message, hoping the runtime forwards the panic text, or any trap detail derived from
//! the program, to the platform. The platform must learn only that the job failed.

use chiron_sdk::{Dataset, Split};
use hostile_common::{Linear, predict_linear, secret_bit};

/// Trains and saves a linear model, then panics with example 0's features and secret bit.
pub fn train() {
    let _linear = Linear::train_and_save();

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
    predict_linear()
}

chiron_sdk::export_program!(train = train, predict = predict);
