//! Warnings about a program that loads but will not work as its author expects: things the
//! loader accepts (they are inside the ABI) yet that fail at run time in the sandbox.

/// What `std` panics with on `wasm32-unknown-unknown` when a program reads the clock
/// (`std::time::Instant::now`, `SystemTime::now`). The text lands in the module's data only
/// if the program can reach such a call.
const STD_NO_CLOCK: &[u8] = b"time not implemented on this platform";

/// Warnings about `wasm`, for the provider: each says what will fail and what to use
/// instead. Empty for a program with nothing to warn about.
pub fn warnings(wasm: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    if contains(wasm, STD_NO_CLOCK) {
        out.push(
            "it can call std::time (Instant::now or SystemTime::now), which traps in the \
             sandbox: there is no clock; use chiron_sdk::time_left() for the time budget"
                .to_string(),
        );
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reachable_clock_is_reported() {
        let mut module = b"\0asm\x01\0\0\0 some data ".to_vec();
        assert!(warnings(&module).is_empty());
        module.extend_from_slice(STD_NO_CLOCK);
        let found = warnings(&module);
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("time_left"), "{found:?}");
    }
}
