//! libFuzzer glue for `chiron_fuzzing::owner_messages`: the property, its input layout and its seeds
//! live in crates/chiron-fuzzing (src/targets/owner_messages.rs), where the smoke test runs them too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chiron_fuzzing::owner_messages(data));
