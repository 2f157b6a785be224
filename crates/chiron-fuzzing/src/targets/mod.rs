//! One module per fuzz target, and the helpers they share.

use std::fmt::Display;

use serde::Serialize;

pub(crate) mod dataset;
pub(crate) mod evidence;
pub(crate) mod owner_messages;
pub(crate) mod sealed;
pub(crate) mod wasm_load;
pub(crate) mod wire;

/// The value of an operation that cannot fail on the inputs a property gives it; a failure
/// is the bug the property looks for, reported as a panic.
#[track_caller]
pub(crate) fn must<T, E: Display>(result: Result<T, E>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("{what}: {e}"),
    }
}

/// `mode` followed by `bytes`: the layout of an input whose first byte picks the mode.
pub(crate) fn with_mode(mode: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + bytes.len());
    out.push(mode);
    out.extend_from_slice(bytes);
    out
}

/// The postcard encoding of a seed value.
pub(crate) fn enc<T: Serialize>(value: &T) -> Vec<u8> {
    must(postcard::to_allocvec(value), "a seed value encodes")
}
