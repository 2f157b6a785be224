//! The README's quick starts, run as they are written: the owner's CLI block and the
//! provider's block, in one shell, in a folder laid out as a clone's root (its `target`,
//! `programs` and `examples` linked in), against the host the block itself starts. Only
//! where the host listens differs (`CHIRON_LISTEN` and `CHIRON_HOST`, which the block
//! leaves to the environment), so that tests running at once do not share a port.
#![allow(clippy::expect_used)] // test helpers: a failed step is a failed test

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chiron_tests::*;

/// The first ```` ```sh ```` block after the line `heading` in README.md.
fn shell_block_after(readme: &str, heading: &str) -> String {
    let after = readme
        .split_once(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README has no heading {heading:?}"))
        .1;
    let block = after
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .unwrap_or_else(|| panic!("no sh block after {heading:?}"))
        .0;
    block.to_owned()
}

/// A free loopback port, as the kernel hands one out (released again at once).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

#[test]
fn the_readme_quick_starts_run_as_written() {
    let root = workspace_root().canonicalize().expect("workspace root");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let owner = shell_block_after(&readme, "### An owner, with the CLI");
    let provider = shell_block_after(&readme, "### A provider");

    let clone = tempfile::tempdir().expect("tmp");
    for linked in ["target", "programs", "examples"] {
        std::os::unix::fs::symlink(root.join(linked), clone.path().join(linked))
            .expect("links the clone's folders");
    }
    let port = free_port();
    let script = format!("set -euo pipefail\n{owner}\n{provider}\n");
    let mut shell = Command::new("bash");
    shell
        .args(["-c", &script])
        .current_dir(clone.path())
        .env("CHIRON_LISTEN", format!("127.0.0.1:{port}"))
        .env("CHIRON_HOST", format!("http://127.0.0.1:{port}"))
        .env_remove("CHIRON_TOKEN")
        .env_remove("CARGO_TARGET_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: the host the block leaves running, and its enclaves, are
        // stopped with it below.
        .process_group(0);
    let mut child = shell.spawn().expect("bash runs");
    let group = child.id();
    let stop_group = || {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{group}")])
            .status();
    };
    let (mut stdout, mut stderr) = (
        child.stdout.take().expect("stdout"),
        child.stderr.take().expect("stderr"),
    );
    let out_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(900);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waits") {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    stop_group();
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let out = out_reader.join().expect("stdout");
    let err = err_reader.join().expect("stderr");
    let log = |name: &str| {
        std::fs::read_to_string(clone.path().join("chiron-data").join(name)).unwrap_or_default()
    };
    let shown = format!(
        "stdout:\n{out}\nstderr:\n{err}\nhost log:\n{}",
        log("host.log")
    );
    assert!(
        status.is_some_and(|status| status.success()),
        "the quick starts failed ({status:?}):\n{shown}"
    );

    // The owner's block: a trained model, evaluated and asked for predictions.
    assert!(
        out.contains("Succeeded") || out.contains("succeeded"),
        "{shown}"
    );
    assert!(out.contains("accuracy"), "{shown}");
    let answers =
        std::fs::read_to_string(clone.path().join("answers.csv")).expect("answers.csv written");
    let rows: Vec<&str> = answers.lines().collect();
    assert_eq!(rows.first(), Some(&"index,label"), "{answers}");
    assert_eq!(
        rows.len(),
        31,
        "a row per flower of the test split: {answers}"
    );
    assert!(
        rows[1..]
            .iter()
            .all(|row| ["setosa", "versicolor", "virginica"]
                .iter()
                .any(|species| row.ends_with(species))),
        "{answers}"
    );
    assert!(clone.path().join("iris.json").is_file());

    // The provider's block: a new program, checked, trained locally and registered, its id
    // printed last.
    assert!(out.contains("trained in"), "{shown}");
    let id = out.lines().last().unwrap_or_default();
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{shown}"
    );
    // An existing folder is never written into.
    let again = Command::new(Path::new(&root).join("target/release/chiron"))
        .args(["new-program", "my-net", "--sdk"])
        .arg(root.join("programs/sdk"))
        .current_dir(clone.path())
        .output()
        .expect("chiron runs");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("never written into"));
}
