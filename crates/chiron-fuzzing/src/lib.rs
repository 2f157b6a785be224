//! The fuzz properties of Chiron: the body of every cargo-fuzz target in `fuzz/`, and the
//! seed inputs each one starts from, as plain functions.
//!
//! Each target function feeds arbitrary bytes to the public parsers of one trust boundary
//! and panics only on a real bug: a panic inside a parser, or a broken invariant it asserts
//! (an authentic message refused, a forged one accepted, a value that does not survive a
//! re-encode...). Errors are the expected outcome of bad input.
//!
//! The same functions run in three places: the libFuzzer targets in `fuzz/fuzz_targets` are
//! thin glue around them, `fuzz/seedgen` writes [`Target::seeds`] as the starting corpus,
//! and this crate's smoke test (`tests/smoke.rs`) runs every target over its seeds, the
//! inputs kept in `fuzz/regressions/<target>/` and a few thousand deterministic mutations,
//! inside the ordinary test command. Seeds are built from the crates' real types (for
//! example [`chiron_sandbox::Model::to_bytes`]), so they cannot drift from the formats.
//!
//! The first byte of most inputs picks a mode; each target's documentation gives the layout.

#![forbid(unsafe_code)]

mod targets;

pub use targets::dataset::{dataset, seeds_dataset};
pub use targets::evidence::{evidence, seeds_evidence};
pub use targets::owner_messages::{owner_messages, seeds_owner_messages};
pub use targets::sealed::{sealed, seeds_sealed};
pub use targets::wasm_load::{seeds_wasm_load, wasm_load};
pub use targets::wire::{seeds_wire, wire};

/// One fuzz target: its name (the file in `fuzz/fuzz_targets/` and the folder of its corpus
/// and regression inputs), its property and its seed generator.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    /// Name of the target.
    pub name: &'static str,
    /// The property: returns on any input, panics only on a bug.
    pub run: fn(&[u8]),
    /// Valid inputs that reach deep into the target.
    pub seeds: fn() -> Vec<Vec<u8>>,
}

/// Every fuzz target.
pub const TARGETS: [Target; 6] = [
    Target {
        name: "evidence",
        run: evidence,
        seeds: seeds_evidence,
    },
    Target {
        name: "dataset",
        run: dataset,
        seeds: seeds_dataset,
    },
    Target {
        name: "wire",
        run: wire,
        seeds: seeds_wire,
    },
    Target {
        name: "owner_messages",
        run: owner_messages,
        seeds: seeds_owner_messages,
    },
    Target {
        name: "sealed",
        run: sealed,
        seeds: seeds_sealed,
    },
    Target {
        name: "wasm_load",
        run: wasm_load,
        seeds: seeds_wasm_load,
    },
];
