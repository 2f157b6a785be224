//! Hostile fixture `hostile-membomb`: allocates without end.
//!
//! Attacks the **linear-memory limit**. It keeps 1 MiB chunks forever and writes to every
//! 4 KiB page of each, so the memory is really committed, not just reserved; the allocator
//! grows wasm memory (`memory.grow`) until the sandbox's limit refuses it.

use std::hint::black_box;

/// Bytes added per step.
const CHUNK: usize = 1 << 20;
/// Stride of the writes that touch every page.
const PAGE: usize = 4096;

/// Allocates and touches 1 MiB at a time until stopped.
pub fn train() {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; CHUNK];
        for (i, byte) in chunk.iter_mut().step_by(PAGE).enumerate() {
            *byte = i as u8 | 1;
        }
        hoard.push(black_box(chunk));
    }
}

/// The same attack on the prediction path.
pub fn predict() {
    train()
}

chiron_sdk::export_program!(train = train, predict = predict);
