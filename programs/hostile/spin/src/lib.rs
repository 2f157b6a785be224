//! Hostile fixture `hostile-spin`: never returns.
//!
//! Attacks the **time budget**. `train` (and `predict`) spin in a pure-wasm loop that makes
//! no host call, so the runtime never regains control through the ABI: only asynchronous
//! interruption of the guest (wasmtime epochs or fuel) can stop it. `black_box` keeps the
//! optimiser from proving the loop has no effect.

use std::hint::black_box;

/// Spins forever.
pub fn train() {
    let mut counter = 0u64;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

/// Spins forever, too.
pub fn predict() {
    train()
}

chiron_sdk::export_program!(train = train, predict = predict);
