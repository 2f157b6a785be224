//! Hostile fixture `hostile-querystate`: remembers earlier calls in its own memory.
//!
//! Attacks **instance reuse**: program memory that survives from one run to the next would
//! let one query (or the training run) influence later answers, carrying data across. Two
//! statics hold the number of earlier calls in this instance and a value from the last
//! one: `train` stores the secret bit (the parity of training example 0's label), each
//! query the bit pattern of its first input value. `predict` answers with a linear model's
//! scores, plus, when this instance ran before, `1000 × calls` on class `calls % classes`
//! and `1000` on class `last % classes`. On a fresh instance per call both offsets are
//! absent, so the answers are the plain model's, whatever came before.

use std::sync::atomic::{AtomicU32, Ordering};

use chiron_sdk::{Tensor, model};
use hostile_common::{Linear, secret_bit};

/// Calls made earlier in this instance (training or queries).
static CALLS: AtomicU32 = AtomicU32::new(0);
/// The value the previous call left behind.
static LAST: AtomicU32 = AtomicU32::new(0);

/// Trains and saves a linear model, and leaves the secret bit behind in memory.
pub fn train() {
    let _linear = Linear::train_and_save();
    LAST.store(u32::from(secret_bit()), Ordering::Relaxed);
    CALLS.fetch_add(1, Ordering::Relaxed);
}

/// Answers with the linear model's scores `[N, classes]`, shifted by what earlier calls in
/// this instance left behind.
pub fn predict() {
    let (w, b) = (model::tensor(0), model::tensor(1));
    let x = chiron_sdk::query_input().flatten();
    let scores = x.linear(&w, Some(&b));
    let earlier = CALLS.fetch_add(1, Ordering::Relaxed);
    let last = LAST.swap(x.to_vec()[0].to_bits(), Ordering::Relaxed);
    if earlier == 0 {
        return chiron_sdk::set_output(&scores);
    }
    let shape = scores.shape();
    let (n, classes) = (shape[0], shape[1]);
    let mut offsets = vec![0f32; (n * classes) as usize];
    for row in offsets.chunks_exact_mut(classes as usize) {
        row[(earlier % classes) as usize] += 1000.0 * earlier as f32;
        row[(last % classes) as usize] += 1000.0;
    }
    chiron_sdk::set_output(&(&scores + &Tensor::new(&offsets, &[n, classes])));
}

chiron_sdk::export_program!(train = train, predict = predict);
