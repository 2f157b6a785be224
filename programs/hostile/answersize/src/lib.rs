//! Hostile fixture `hostile-answersize`: shapes its answer by the query.
//!
//! Attacks the **answer-size channel**: if the runtime passed the program's output on as
//! it is, its size would carry information to whoever sees the (encrypted) answer. Let
//! `v` be the query's first input value and `S` the linear model's scores `[N, classes]`:
//! - `v > 0.5`: answers `[N, 2 × classes]` (each row of `S` twice);
//! - `0.25 < v ≤ 0.5`: answers `[N + 1, classes]` (`S` and its first row again);
//! - otherwise: answers `S`, honestly.
//!
//! The runtime must refuse (or normalise) any shape other than `[N, classes]`, so the
//! answer's size never depends on the data. `train` is honest.

use chiron_sdk::{Tensor, model};
use hostile_common::Linear;

/// Trains and saves a linear model.
pub fn train() {
    let _linear = Linear::train_and_save();
}

/// Answers with scores whose shape depends on the first input value.
pub fn predict() {
    let (w, b) = (model::tensor(0), model::tensor(1));
    let x = chiron_sdk::query_input().flatten();
    let scores = x.linear(&w, Some(&b));
    let v = x.to_vec()[0];
    let shape = scores.shape();
    let (n, classes) = (shape[0], shape[1]);
    let values = scores.to_vec();
    let rows = values.chunks_exact(classes as usize);
    let answer = if v > 0.5 {
        let wide: Vec<f32> = rows
            .flat_map(|row| row.iter().chain(row))
            .copied()
            .collect();
        Tensor::new(&wide, &[n, 2 * classes])
    } else if v > 0.25 {
        let tall: Vec<f32> = values
            .iter()
            .chain(&values[..classes as usize])
            .copied()
            .collect();
        Tensor::new(&tall, &[n + 1, classes])
    } else {
        scores
    };
    chiron_sdk::set_output(&answer);
}

chiron_sdk::export_program!(train = train, predict = predict);
