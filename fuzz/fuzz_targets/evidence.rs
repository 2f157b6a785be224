//! libFuzzer glue for `chiron_fuzzing::evidence`: the property, its input layout and its seeds
//! live in crates/chiron-fuzzing (src/targets/evidence.rs), where the smoke test runs them too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chiron_fuzzing::evidence(data));
