//! Test fixture `hostile-tightpolicy`: an honest linear model whose provider declares a tight
//! extraction policy.
//!
//! Its manifest allows at most [`MAX_QUERIES`] inputs answered per model and answers of at
//! most the two best classes, and declares its needs. The end-to-end tests ask for more
//! queries or a finer granularity than that (refused by the owner's client before any upload,
//! and by the enclave when the terms are sealed without the client's check), and spend the
//! budget across query-enclave restarts.

use hostile_common::{Linear, predict_linear};

/// Inputs the provider lets any one model answer, over its whole life.
pub const MAX_QUERIES: u64 = 40;

/// Trains and saves a linear model.
pub fn train() {
    let _linear = Linear::train_and_save();
}

/// Answers with the linear layer's scores.
pub fn predict() {
    predict_linear()
}

chiron_sdk::export_program!(train = train, predict = predict);
chiron_sdk::manifest!(
    chiron_sdk::manifest::Manifest::new(MAX_QUERIES, chiron_sdk::manifest::Answers::TopK(2))
        .memory_mib(256)
        .model_mib(1)
        .ms_per_1000_examples_epoch(20)
);
