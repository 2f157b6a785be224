//! Key release between real enclave processes: a key keeper releases the sealing secret to
//! the service's training and query enclaves (as it would to TDX enclaves, which have no
//! sealing key), the model they seal opens only with that secret, and an enclave whose keeper
//! it does not trust refuses to start.
//!
//! Everything runs on the simulated platform (no TEE here): what is tested is the protocol,
//! the wiring through host and enclave command lines, and that the sealing key comes from the
//! keeper and not from the platform.
#![allow(clippy::expect_used)] // test helpers: a failed step is a failed test

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chiron_proto::api::JobState;
use chiron_tests::*;

/// `chiron-enclave init-platform --key <path>`; returns the public key (hex).
fn init_platform(path: &Path) -> String {
    let status = Command::new(bin_dir().join("chiron-enclave"))
        .args(["init-platform", "--key"])
        .arg(path)
        .status()
        .expect("init-platform runs");
    assert!(status.success());
    let mut public = path.as_os_str().to_owned();
    public.push(".pub");
    std::fs::read_to_string(PathBuf::from(public))
        .expect("public key")
        .trim()
        .to_owned()
}

/// The runtime build's simulated measurement (hex), as a policy names it.
fn runtime_measurement() -> String {
    hex::encode(chiron_attest::measure_file(bin_dir().join("chiron-enclave")).expect("measure"))
}

/// Writes a policy file accepting the simulated platform `key` running `measurement`.
fn sim_policy(path: &Path, key: &str, measurement: &str) -> PathBuf {
    std::fs::write(
        path,
        format!("dangerous-simulated-platform {key} {measurement}\n"),
    )
    .expect("write policy");
    path.to_path_buf()
}

/// A running key keeper process, killed when dropped.
struct KeeperProcess {
    child: Child,
    address: String,
}

impl Drop for KeeperProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_keeper(key: &Path, release_policy: &Path) -> KeeperProcess {
    let mut child = Command::new(bin_dir().join("chiron-enclave"))
        .arg("keep-keys")
        .arg("--dangerous-simulated-platform")
        .arg(key)
        .arg("--release-policy")
        .arg(release_policy)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("keeper starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let port = line.trim().rsplit(' ').next().expect("port").to_owned();
    KeeperProcess {
        child,
        address: format!("127.0.0.1:{port}"),
    }
}

#[test]
fn the_service_seals_with_a_released_secret_that_the_platform_key_does_not_open() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let state = data_dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let work = tempfile::tempdir().expect("tempdir");
    // The service's (simulated) platform, made before the host so the keeper's release policy
    // can name it; the host keeps an existing key.
    let service_key = init_platform(&state.join("sim-platform.key"));
    let keeper_key = init_platform(&work.path().join("keeper.key"));
    let measurement = runtime_measurement();
    // The keeper releases to the service's enclaves; they trust the keeper.
    let release_policy = sim_policy(
        &work.path().join("release.policy"),
        &service_key,
        &measurement,
    );
    let keeper_policy = sim_policy(
        &work.path().join("keeper.policy"),
        &keeper_key,
        &measurement,
    );
    let keeper = start_keeper(&work.path().join("keeper.key"), &release_policy);

    let with_keeper: Vec<OsString> = vec![
        "--key-keeper".into(),
        keeper.address.clone().into(),
        "--keeper-policy".into(),
        keeper_policy.clone().into(),
    ];
    let mut service = Service::start_in(data_dir, &with_keeper);
    let data = iris();
    let ticket = start_job(
        &service,
        &program_wasm("chiron_mlp"),
        &data,
        &terms(30, 120),
    )
    .expect("start");
    let (state_now, events) = wait(&service, &ticket, Duration::from_secs(120));
    assert_eq!(state_now, JobState::Succeeded, "{events:?}");
    let test = iris_inputs(&data, None);
    let accuracy = query_accuracy(&service, &ticket, &test.features, &test.labels, 50)
        .expect("the query enclave opens the model with the released secret");
    assert!(accuracy > 0.6, "accuracy {accuracy}");

    // The same host state without the keeper: the query enclave has only the platform's own
    // sealing secret (the file the host holds), and the model does not open with it.
    service.stop();
    let data_dir = std::mem::replace(&mut service.data_dir, tempfile::tempdir().expect("tmp"));
    drop(service);
    let service = Service::start_in(data_dir, &[]);
    let err = query_accuracy(&service, &ticket, &test.features, &test.labels, 50)
        .expect_err("the platform's key does not open a model sealed with a released secret");
    assert!(err.to_string().contains("failed authentication"), "{err}");
}

#[test]
fn an_enclave_that_cannot_get_its_secret_refuses_to_start() {
    let work = tempfile::tempdir().expect("tempdir");
    let enclave_key = work.path().join("enclave.key");
    let keeper_key = init_platform(&work.path().join("keeper.key"));
    let enclave_public = init_platform(&enclave_key);
    let measurement = runtime_measurement();
    // The keeper releases to another build of the runtime on this enclave's platform.
    let release_policy = sim_policy(
        &work.path().join("release.policy"),
        &enclave_public,
        &"00".repeat(32),
    );
    let keeper = start_keeper(&work.path().join("keeper.key"), &release_policy);
    let serve = |policy: &Path| {
        Command::new(bin_dir().join("chiron-enclave"))
            .args(["serve", "--role", "query", "--dangerous-simulated-platform"])
            .arg(&enclave_key)
            .args(["--key-keeper", &keeper.address, "--keeper-policy"])
            .arg(policy)
            .stdin(Stdio::null())
            .output()
            .expect("enclave runs")
    };

    let trusted = sim_policy(
        &work.path().join("keeper.policy"),
        &keeper_key,
        &measurement,
    );
    let out = serve(&trusted);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("released no secret") && stderr.contains("measurement"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));

    // A keeper it does not trust is never asked.
    let untrusted = sim_policy(
        &work.path().join("other.policy"),
        &"11".repeat(32),
        &measurement,
    );
    let out = serve(&untrusted);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not accept"), "{stderr}");
}
