//! Hostile fixture `hostile-clock`: reads `std::time::Instant::now()`, which compiles for
//! `wasm32-unknown-unknown` but panics there (the sandbox has no clock).
//!
//! Not an attack: the mistake a provider makes first. `chiron check` warns about it from the
//! module alone, and `chiron run-local` shows the panic's message; `chiron_sdk::time_left`
//! is what to use instead.

use chiron_sdk::Tensor;

/// Reads the clock (and so panics), then would save a one-tensor model.
pub fn train() {
    let started = std::time::Instant::now();
    let w = Tensor::new(&[started.elapsed().as_secs_f32()], &[1]);
    chiron_sdk::save_model(&[&w], b"clock");
}

/// Never reached: `train` saves no model.
pub fn predict() {
    chiron_sdk::set_output(&chiron_sdk::query_input());
}

chiron_sdk::export_program!(train = train, predict = predict);
