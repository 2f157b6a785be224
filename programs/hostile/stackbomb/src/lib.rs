//! Hostile fixture `hostile-stackbomb`: recurses without end.
//!
//! Attacks the **stack limit**. Each frame keeps a value alive across the recursive call, so
//! neither the compiler nor the engine can turn the recursion into a loop, and the wasm call
//! stack grows until the sandbox's stack limit traps the program (never the runtime). The
//! frames hold only scalars, which live on the engine's native stack; a program that
//! overflows Rust's shadow stack in linear memory instead is stopped by the memory bounds
//! check ("out of bounds memory access").

use std::hint::black_box;

/// Recurses forever.
#[allow(unconditional_recursion)] // the attack itself
fn dive(depth: u64) -> u64 {
    let below = dive(black_box(depth + 1));
    black_box(below).wrapping_add(depth)
}

/// Overflows the stack.
pub fn train() {
    black_box(dive(0));
}

/// The same attack on the prediction path.
pub fn predict() {
    train()
}

chiron_sdk::export_program!(train = train, predict = predict);
