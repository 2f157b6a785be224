//! Provider programs: `chiron_sandbox::Sandbox::load` compiles and checks arbitrary wasm with
//! the production engine configuration (`SandboxConfig::default()`); it must only ever refuse
//! with an error. Nothing is instantiated or run. No mode byte: the input is the module.

use std::sync::OnceLock;

use chiron_sandbox::{Sandbox, SandboxConfig, SandboxError};

use super::must;

fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| must(Sandbox::new(SandboxConfig::default()), "the sandbox starts"))
}

/// The `wasm_load` property: the input is a wasm module.
pub fn wasm_load(data: &[u8]) {
    // The manifest reader (host registration, both enclaves) sees the same bytes first.
    let _ = chiron_proto::manifest::read_manifest(data);
    match sandbox().load(data) {
        Ok(_) | Err(SandboxError::Refused(_)) => {}
        Err(other) => panic!("loading returned an unexpected error kind: {other}"),
    }
}

/// The smallest module `Sandbox::load` accepts (exports `memory`, `chiron_train` and
/// `chiron_predict`, imports nothing), and one that also imports a Chiron ABI function.
pub fn seeds_wasm_load() -> Vec<Vec<u8>> {
    vec![module(false), module(true)]
}

/// Appends a wasm section: id, byte length (one LEB128 byte: sections here are small), body.
fn section(wasm: &mut Vec<u8>, id: u8, body: &[u8]) {
    wasm.push(id);
    wasm.push(body.len() as u8);
    wasm.extend_from_slice(body);
}

fn name(out: &mut Vec<u8>, name: &str) {
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
}

fn module(with_import: bool) -> Vec<u8> {
    let mut wasm = b"\0asm\x01\0\0\0".to_vec();
    // Types: 0 is () -> (), 1 is () -> i64.
    section(
        &mut wasm,
        1,
        &[0x02, 0x60, 0x00, 0x00, 0x60, 0x00, 0x01, 0x7e],
    );
    let imported = u8::from(with_import);
    if with_import {
        let mut imports = vec![0x01];
        name(&mut imports, "chiron");
        name(&mut imports, "chiron_random_u64");
        imports.extend_from_slice(&[0x00, 0x01]); // a function of type 1
        section(&mut wasm, 2, &imports);
    }
    section(&mut wasm, 3, &[0x02, 0x00, 0x00]); // two functions of type 0
    section(&mut wasm, 5, &[0x01, 0x00, 0x01]); // one memory, at least 1 page
    let mut exports = vec![0x03];
    for (export, kind, index) in [
        ("memory", 2u8, 0u8),
        ("chiron_train", 0, imported),
        ("chiron_predict", 0, imported + 1),
    ] {
        name(&mut exports, export);
        exports.extend_from_slice(&[kind, index]);
    }
    section(&mut wasm, 7, &exports);
    if with_import {
        // chiron_train calls the import and drops the result; chiron_predict is empty.
        section(
            &mut wasm,
            10,
            &[0x02, 0x05, 0x00, 0x10, 0x00, 0x1a, 0x0b, 0x02, 0x00, 0x0b],
        );
    } else {
        section(&mut wasm, 10, &[0x02, 0x02, 0x00, 0x0b, 0x02, 0x00, 0x0b]);
    }
    wasm
}
