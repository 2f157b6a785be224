//! The benchmark keeps working: one short round on net B prints every table.
#![allow(clippy::expect_used)]

use std::path::Path;
use std::process::Command;

#[test]
fn a_short_benchmark_run_prints_both_tables() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(env!("CARGO_BIN_EXE_chiron-bench"))
        .current_dir(&root)
        .args([
            "--rounds",
            "1",
            "--intervals",
            "1",
            "--queries",
            "20",
            "--ingest-mib",
            "8",
            "--service-queries",
            "20",
        ])
        .args(["--nets", "b", "--batches", "64"])
        .output()
        .expect("chiron-bench runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = text
        .lines()
        .find(|l| l.starts_with("| B | 64 |"))
        .unwrap_or_else(|| panic!("no training row for net B: {text}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    let native: f64 = cells[3].parse().expect("native img/s is a number");
    let confined: f64 = cells[4].parse().expect("confined img/s is a number");
    assert!(native > 0.0 && confined > 0.0, "{row}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("| B | ") && l.contains("µs")),
        "no query row: {text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("| B | ") && l.contains(" MiB |")),
        "no whole-service row: {text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("| MB/s | ")),
        "no ingest row: {text}"
    );
}
