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

use chiron_sdk::{Dataset, Init, Optimizer, Split, Tensor, model};

/// Calls made earlier in this instance (training or queries).
static CALLS: AtomicU32 = AtomicU32::new(0);
/// The value the previous call left behind.
static LAST: AtomicU32 = AtomicU32::new(0);

/// The secret bit: the parity of training example 0's label.
fn secret_bit() -> bool {
    let (_, labels) = Dataset::batch(Split::Train, &[0]);
    (labels.to_vec()[0] as u32) & 1 == 1
}

/// Trains and saves a linear model, and leaves the secret bit behind in memory.
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
