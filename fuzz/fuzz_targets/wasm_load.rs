//! Provider programs: `chiron_sandbox::Sandbox::load` compiles and checks arbitrary wasm with
//! the production engine configuration (`SandboxConfig::default()`); it must only ever refuse
//! with an error. Nothing is instantiated or run.
#![no_main]

use std::sync::OnceLock;

use chiron_sandbox::{Sandbox, SandboxConfig, SandboxError};
use libfuzzer_sys::fuzz_target;

fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| Sandbox::new(SandboxConfig::default()).expect("sandbox starts"))
}

fuzz_target!(|data: &[u8]| {
    match sandbox().load(data) {
        Ok(_) | Err(SandboxError::Refused(_)) => {}
        Err(other) => panic!("loading returned an unexpected error kind: {other}"),
    }
});
