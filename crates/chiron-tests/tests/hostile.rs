//! Hostile provider programs (infinite loop, memory bomb, forged handles, tensor bomb,
//! out-of-bounds pointers, stack overflow, handle exhaustion) end their own job with an error for the owner, and the
//! service keeps serving everyone else.
#![allow(clippy::expect_used)] // test helpers: a failed step is a failed test

use std::time::Duration;

use chiron_proto::api::JobState;
use chiron_tests::*;

#[test]
fn hostile_programs_fail_their_jobs_and_the_service_keeps_serving() {
    let service = Service::start();
    let data = iris();
    let cases = [
        ("hostile_spin", "time budget"),
        ("hostile_membomb", "linear-memory limit"),
        ("hostile_badhandle", "misused the host ABI"),
        ("hostile_tensorbomb", "tensor-memory quota"),
        ("hostile_badpointer", "misused the host ABI"),
        ("hostile_stackbomb", "stack limit"),
        ("hostile_handles", "handle limit"),
    ];
    // All hostile jobs and one honest job run at the same time.
    let hostile: Vec<_> = cases
        .iter()
        .map(|(name, _)| {
            start_job(&service, &program_wasm(name), &data, &terms(1, 3)).expect("start")
        })
        .collect();
    let honest = start_job(
        &service,
        &program_wasm("chiron_mlp"),
        &data,
        &terms(40, 120),
    )
    .expect("start");

    for ((name, expected), ticket) in cases.iter().zip(&hostile) {
        let (state, events) = wait(&service, ticket, Duration::from_secs(120));
        assert_eq!(state, JobState::Failed, "{name}: {events:?}");
        let detail = failure(&events).unwrap_or_else(|| panic!("{name}: no failure event"));
        assert!(detail.contains(expected), "{name}: {detail}");
        // The host learns only a fixed label.
        let status = service.client().job_status(&ticket.job_id).expect("status");
        assert_eq!(status.error.as_deref(), Some("program failed"), "{name}");
    }
    let (state, events) = wait(&service, &honest, Duration::from_secs(120));
    assert_eq!(state, JobState::Succeeded, "{events:?}");

    let mut service = service;
    assert!(service.is_running());
}

#[test]
fn programs_importing_anything_but_the_abi_are_refused_at_load() {
    // A minimal module whose only content is one WASI import.
    let module_name = b"wasi_snapshot_preview1";
    let field = b"proc_exit";
    let mut imports = vec![1u8, module_name.len() as u8];
    imports.extend(module_name);
    imports.push(field.len() as u8);
    imports.extend(field);
    imports.extend([0x00, 0x00]); // a function of type 0
    let mut wasm = vec![0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
    wasm.extend([0x01, 0x04, 0x01, 0x60, 0x00, 0x00]); // type 0: () -> ()
    wasm.push(0x02);
    wasm.push(imports.len() as u8);
    wasm.extend(imports);
    let sandbox =
        chiron_sandbox::Sandbox::new(chiron_sandbox::SandboxConfig::default()).expect("sandbox");
    let err = sandbox.load(&wasm).expect_err("refused");
    assert!(
        err.to_string().contains("only the `chiron` host ABI"),
        "{err}"
    );
    // A real program that imports a clock from another module.
    let err = sandbox
        .load(&program_wasm("hostile_foreignimport"))
        .expect_err("refused");
    assert!(err.to_string().contains("env::clock_now"), "{err}");
    assert_eq!(err.public_class(), "program refused");
}
