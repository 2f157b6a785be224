//! libFuzzer glue for `chiron_fuzzing::wasm_load`: the property, its input layout and its seeds
//! live in crates/chiron-fuzzing (src/targets/wasm_load.rs), where the smoke test runs them too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chiron_fuzzing::wasm_load(data));
