//! Fixture `hostile-leaklog`: talks about the data, then panics about it.
//!
//! Attacks the **log channel**. `train` prints the first training example's label and its
//! first feature with `chiron_sdk::println!`, then panics with them in the message. Under
//! `chiron run-local` (the provider's own data, the provider's own terminal) both lines must
//! appear; in an enclave neither may reach the host, its logs or the provider.

use chiron_sdk::{Dataset, Split, println};

/// The marker both lines carry, so tests can look for them.
pub const MARKER: &str = "leaklog-marker";

/// Prints, then panics.
pub fn train() {
    let (x, y) = Dataset::batch(Split::Train, &[0]);
    let feature = x.to_vec().first().copied().unwrap_or(f32::NAN);
    let label = y.to_vec().first().copied().unwrap_or(f32::NAN);
    println!("{MARKER} first label {label}, first feature {feature}");
    panic!("{MARKER} refusing to train on a label of {label}");
}

/// Never reached: the program saves no model.
pub fn predict() {
    panic!("{MARKER} no model");
}

chiron_sdk::export_program!(train = train, predict = predict);
