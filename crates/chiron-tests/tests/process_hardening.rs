//! The enclave process keeps its memory to itself, and what it writes to stderr stays with it.
//!
//! * It leaves no core file: its core-file limit is 0, soft and hard.
//! * It is not dumpable: an ordinary process of the same user cannot read its
//!   `/proc/<pid>/environ` (the kernel's ptrace access check, the one that also guards
//!   `/proc/<pid>/mem` and `ptrace` attach), while it can read that of any other process it
//!   starts the same way.
//! * The host discards the enclave's stderr, which a hostile program could fill through the
//!   runtime (an aborting allocation prints its size): a canary written there never reaches
//!   the host's output.
//!
//! Linux only, like the hardening itself. Needs the workspace's binaries built.
#![cfg(target_os = "linux")]
#![allow(clippy::expect_used)] // test helpers: a failed step is a failed test

use std::io::{BufRead, BufReader, ErrorKind};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chiron_client::HostClient;
use chiron_proto::wire::LISTENING_PREFIX;
use chiron_tests::{bin_dir, encrypted, iris, program_wasm};
use rustix::thread::{CapabilitySet, CapabilitySets, capabilities, set_capabilities};

/// A child process killed when the test is done with it, passed or failed.
struct Running(Child);

impl Running {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn enclave_bin() -> PathBuf {
    bin_dir().join("chiron-enclave")
}

/// Creates a simulated platform key in `dir` and starts a training enclave on it, returning
/// once it listens (it then waits for a host that never comes).
fn serving_enclave(dir: &Path) -> Running {
    let key = dir.join("sim-platform.key");
    let status = Command::new(enclave_bin())
        .args(["init-platform", "--key"])
        .arg(&key)
        .stdin(Stdio::null())
        .status()
        .expect("chiron-enclave runs (build the workspace first)");
    assert!(status.success(), "init-platform failed: {status}");
    let mut child = Command::new(enclave_bin())
        .args(["serve", "--role", "train", "--dangerous-simulated-platform"])
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("chiron-enclave starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let enclave = Running(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the enclave prints its listening line");
    assert!(
        line.starts_with(LISTENING_PREFIX),
        "unexpected line {line:?}"
    );
    enclave
}

/// Makes the calling thread (and every process it starts from now on) an ordinary process
/// of its user: no capabilities, and none to be regained by exec (`no_new_privs`). A root
/// test runner's `CAP_SYS_PTRACE` would read a non-dumpable process anyway, and a reader
/// lacking a capability its target holds is refused whatever the target's dumpability.
/// Capabilities and `no_new_privs` belong to the thread, so the rest of the test process is
/// unaffected.
fn become_an_ordinary_process() {
    let none = CapabilitySet::empty();
    set_capabilities(
        None,
        CapabilitySets {
            effective: none,
            permitted: none,
            inheritable: none,
        },
    )
    .expect("a thread can always drop its capabilities");
    rustix::thread::set_no_new_privs(true).expect("a thread can always set no_new_privs");
    let left = capabilities(None).expect("capget");
    assert!(
        left.effective.is_empty() && left.permitted.is_empty(),
        "{left:?}"
    );
}

fn read_environ(pid: u32) -> std::io::Result<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/environ"))
}

/// `(soft, hard)` of `Max core file size` in `/proc/<pid>/limits`.
fn core_limit(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("a core file size line");
    let mut values = line["Max core file size".len()..].split_whitespace();
    let mut next = || values.next().expect("soft and hard limits").to_owned();
    (next(), next())
}

#[test]
fn the_enclave_leaves_no_core_file_and_its_user_cannot_read_its_memory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir_path = dir.path().to_path_buf();
    std::thread::spawn(move || {
        become_an_ordinary_process();
        // The control: a process started the same way, which did not ask to be hidden.
        let control = Running(
            Command::new("sleep")
                .arg("600")
                .stdin(Stdio::null())
                .spawn()
                .expect("sleep starts"),
        );
        let enclave = serving_enclave(&dir_path);

        let inherited = core_limit(control.pid());
        assert_eq!(
            core_limit(enclave.pid()),
            ("0".to_owned(), "0".to_owned()),
            "the enclave's core-file limit (its parent's is {inherited:?})"
        );
        if inherited.1 == "0" {
            eprintln!("note: core files were already off for the test runner");
        }

        let environ = read_environ(control.pid());
        assert!(
            environ.is_ok(),
            "a process cannot read its own child's /proc/<pid>/environ here, so this test \
             proves nothing: {environ:?}"
        );
        match read_environ(enclave.pid()) {
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {}
            Err(e) => panic!("unexpected error reading the enclave's environ: {e}"),
            Ok(_) => panic!("a process of the enclave's user read its /proc/<pid>/environ"),
        }
    })
    .join()
    .expect("the checks pass");
}

#[test]
fn the_enclave_stderr_never_reaches_the_host_output() {
    let dir = tempfile::tempdir().expect("temp dir");
    let canary = format!(
        "chiron-enclave-stderr-canary-{:016x}",
        rand::random::<u64>()
    );
    // Stands in for the enclave binary: writes the canary to its stderr, notes which command
    // it ran, then becomes the real enclave (same stderr).
    let launches = dir.path().join("launches");
    let wrapper = dir.path().join("enclave-wrapper.sh");
    let quoted = |path: &Path| {
        let text = path.display().to_string();
        assert!(!text.contains('\''), "{text}");
        format!("'{text}'")
    };
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho '{canary}' >&2\necho \"$1\" >> {}\nexec {} \"$@\"\n",
            quoted(&launches),
            quoted(&enclave_bin()),
        ),
    )
    .expect("write the wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let stderr_log = dir.path().join("host.err");
    let token =
        chiron_tests::add_principal(&dir.path().join("state"), "tester", &["owner", "provider"]);
    let mut host = Command::new(bin_dir().join("chiron-host"))
        .arg("--dangerous-simulated-tee")
        .arg("--data-dir")
        .arg(dir.path().join("state"))
        .args(["--listen", "127.0.0.1:0", "--enclave-bin"])
        .arg(&wrapper)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_log).expect("log file"))
        .spawn()
        .expect("chiron-host starts (build the workspace first)");
    let stdout = host.stdout.take().expect("piped stdout");
    let host = Running(host);
    let mut stdout = BufReader::new(stdout);
    let mut first = String::new();
    stdout
        .read_line(&mut first)
        .expect("the host prints its address");
    let url = first.trim().rsplit(' ').next().expect("address").to_owned();
    let reader = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut rest);
        first + &rest
    });

    // A job: the host launches its training enclave (the platform key was made at start).
    let client = HostClient::new(&url).with_token(&token);
    let program = client
        .register_program(&program_wasm("chiron_mlp"))
        .expect("program");
    let dataset = client.upload_dataset(&encrypted(&iris())).expect("dataset");
    client
        .create_job(&program.program_id, &dataset.dataset_id)
        .expect("the host starts a training enclave");

    stop(host);
    let stdout = reader.join().expect("stdout reader");
    let stderr = std::fs::read_to_string(&stderr_log).expect("host stderr");
    let launched = std::fs::read_to_string(&launches).unwrap_or_default();
    assert!(
        launched.lines().any(|l| l == "init-platform") && launched.lines().any(|l| l == "serve"),
        "the host did not run the enclave for both its platform key and a job: {launched:?}"
    );
    assert!(
        !stdout.contains(&canary) && !stderr.contains(&canary),
        "the enclave's stderr reached the host's output:\n{stdout}\n{stderr}"
    );
}

/// Stops the host as an operator would (SIGTERM: it stops its enclaves and exits), killing
/// it if it is still running after ten seconds.
fn stop(mut host: Running) {
    let _ = Command::new("kill")
        .args(["-TERM", &host.pid().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while matches!(host.0.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}
