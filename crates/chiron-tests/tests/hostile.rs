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

/// What the enclave's loader would refuse is refused at registration, before any owner data
/// moves, and `chiron check` shows the provider the same reason beforehand.
#[test]
fn programs_the_enclave_would_refuse_are_refused_at_registration_and_by_chiron_check() {
    let service = Service::start();
    let host = service.client();
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty.wasm");
    std::fs::write(&empty, b"\0asm\x01\0\0\0").expect("write");
    let foreign = dir.path().join("foreign.wasm");
    std::fs::write(&foreign, program_wasm("hostile_foreignimport")).expect("write");
    for (path, reason) in [(&foreign, "env::clock_now"), (&empty, "chiron_train")] {
        let wasm = std::fs::read(path).expect("read");
        let err = host.register_program(&wasm).expect_err("refused");
        assert!(err.to_string().contains(reason), "{err}");
        let out = std::process::Command::new(bin_dir().join("chiron"))
            .arg("check")
            .arg(path)
            .output()
            .expect("chiron check runs");
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(reason), "{stderr}");
    }
    // Nothing was stored for them.
    let programs = service.state_dir().join("objects").join("programs");
    let stored = std::fs::read_dir(&programs).map_or(0, |d| d.count());
    assert_eq!(stored, 0);

    let good = dir.path().join("mlp.wasm");
    std::fs::write(&good, program_wasm("chiron_mlp")).expect("write");
    let out = std::process::Command::new(bin_dir().join("chiron"))
        .arg("check")
        .arg(&good)
        .output()
        .expect("chiron check runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("loads; extraction policy"));
    host.register_program(&std::fs::read(&good).expect("read"))
        .expect("a loadable program registers");
}

/// `std::time::Instant::now()` compiles but traps in the sandbox: `chiron check` warns about
/// it from the module alone (the program still loads), and `chiron run-local` shows the
/// panic that ends the run.
#[test]
fn reading_the_clock_is_warned_about_and_its_panic_shown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = dir.path().join("clock.wasm");
    std::fs::write(&clock, program_wasm("hostile_clock")).expect("write");
    let chiron = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(bin_dir().join("chiron"))
            .args(args)
            .output()
            .expect("chiron runs")
    };
    let out = chiron(&["check".as_ref(), clock.as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("chiron_sdk::time_left"),
        "{stderr}"
    );
    let iris = iris_csv();
    let out = chiron(&[
        "run-local".as_ref(),
        clock.as_os_str(),
        "--csv".as_ref(),
        iris.as_os_str(),
        "--label-column".as_ref(),
        "species".as_ref(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("program: panicked at") && stderr.contains("time not implemented"),
        "{stderr}"
    );
    // A program that does not read the clock gets no warning.
    let mlp = dir.path().join("mlp.wasm");
    std::fs::write(&mlp, program_wasm("chiron_mlp")).expect("write");
    let out = chiron(&["check".as_ref(), mlp.as_os_str()]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
}

/// `chiron run-local` shows the provider their program's `println!` lines, panic message and
/// metrics on their own data; the same program in an enclave says nothing to anyone.
#[test]
fn run_local_shows_prints_and_panics_which_the_enclave_keeps_to_itself() {
    const MARKER: &str = "leaklog-marker";
    let dir = tempfile::tempdir().expect("tempdir");
    let chatty = dir.path().join("leaklog.wasm");
    std::fs::write(&chatty, program_wasm("hostile_leaklog")).expect("write");
    let run_local = |wasm: &std::path::Path| {
        std::process::Command::new(bin_dir().join("chiron"))
            .arg("run-local")
            .arg(wasm)
            .arg("--csv")
            .arg(iris_csv())
            .args(["--label-column", "species", "--epochs", "20"])
            .output()
            .expect("chiron run-local runs")
    };
    let out = run_local(&chatty);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("program: {MARKER} first label")),
        "{stderr}"
    );
    assert!(
        stderr.contains("program: panicked at")
            && stderr.contains(&format!(
                "program: {MARKER} refusing to train on a label of"
            )),
        "{stderr}"
    );
    let mlp = dir.path().join("mlp.wasm");
    std::fs::write(&mlp, program_wasm("chiron_mlp")).expect("write");
    let out = run_local(&mlp);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("metric valid_accuracy"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("a model of"));

    // In the service: the job fails, and the marker is nowhere the platform or the owner sees.
    let service = Service::start();
    let ticket = start_job(
        &service,
        &program_wasm("hostile_leaklog"),
        &iris(),
        &terms(1, 60),
    )
    .expect("job starts");
    let (state, events) = wait(&service, &ticket, Duration::from_secs(60));
    assert_eq!(state, JobState::Failed);
    assert!(!format!("{events:?}").contains(MARKER), "{events:?}");
    assert!(!service.stdout().contains(MARKER) && !service.stderr().contains(MARKER));
    // (The program itself carries the marker as a string constant.)
    for (path, bytes) in service.platform_view() {
        if path.contains("programs") {
            continue;
        }
        assert!(
            !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
            "{path}"
        );
    }
}
