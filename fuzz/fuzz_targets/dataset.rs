//! libFuzzer glue for `chiron_fuzzing::dataset`: the property, its input layout and its seeds
//! live in crates/chiron-fuzzing (src/targets/dataset.rs), where the smoke test runs them too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chiron_fuzzing::dataset(data));
