//! A fuzz smoke test inside the ordinary test command: every fuzz target runs over its
//! generated seeds, every input kept in `fuzz/regressions/<target>/`, and a bounded number of
//! deterministic mutations of each seed (bit flips, interesting bytes, truncations,
//! insertions, deletions and duplications, drawn from a seeded RNG). It is no substitute for
//! coverage-guided fuzzing (`scripts/fuzz.sh`), but it runs in seconds and needs no
//! instrumented build.
//!
//! An input that makes a target panic is written to `<target dir>/tmp/smoke-failures/` (the
//! failure message names the file), ready to be minimised or kept as a regression input.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chiron_fuzzing::{TARGETS, Target};
use chiron_proto::dataset::{DatasetHeader, DatasetKind, ElementEncoding};
use chiron_sandbox::Model;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Mutated inputs per target, spread over its seeds.
const MUTATIONS: usize = 5000;
/// Compiling wasm is slower than the parsers: fewer mutations for `wasm_load`.
const WASM_MUTATIONS: usize = 2000;
/// A target stops after this many failing inputs (one is enough to fail the test).
const MAX_FAILURES: usize = 5;

fn target(name: &str) -> Target {
    match TARGETS.iter().find(|t| t.name == name) {
        Some(t) => *t,
        None => panic!("no fuzz target {name}"),
    }
}

fn regressions_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions")
        .join(name)
}

/// The inputs kept in `fuzz/regressions/<name>/`, with their file names.
fn regressions(name: &str) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(regressions_dir(name)) else {
        return Vec::new();
    };
    let mut inputs: Vec<(String, Vec<u8>)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let bytes = std::fs::read(e.path()).ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), bytes))
        })
        .collect();
    inputs.sort();
    inputs
}

/// Values that often sit on a boundary: zero, one, sign bits, all ones.
const INTERESTING: [u8; 6] = [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff];

/// One random edit of `input`.
fn mutate_once(rng: &mut ChaCha8Rng, input: &mut Vec<u8>) {
    let len = input.len();
    match rng.gen_range(0..8) {
        // Flip one bit.
        0 if len > 0 => {
            let at = rng.gen_range(0..len);
            input[at] ^= 1 << rng.gen_range(0..8);
        }
        // Replace one byte with a boundary value.
        1 if len > 0 => {
            let at = rng.gen_range(0..len);
            input[at] = INTERESTING[rng.gen_range(0..INTERESTING.len())];
        }
        // Cut short (keeping the mode byte most of the time).
        2 if len > 1 => {
            let keep = rng.gen_range(0..len);
            input.truncate(keep);
        }
        // Insert up to 8 random bytes.
        3 => {
            let at = rng.gen_range(0..=len);
            let count = rng.gen_range(1..=8);
            let bytes: Vec<u8> = (0..count).map(|_| rng.r#gen()).collect();
            input.splice(at..at, bytes);
        }
        // Delete a range.
        4 if len > 1 => {
            let start = rng.gen_range(0..len);
            let end = rng.gen_range(start..=len.min(start + 16));
            input.drain(start..end);
        }
        // Duplicate a range in place.
        5 if len > 1 => {
            let start = rng.gen_range(0..len);
            let end = rng.gen_range(start..=len.min(start + 32));
            let copy = input[start..end].to_vec();
            let at = rng.gen_range(0..=len);
            input.splice(at..at, copy);
        }
        // A run of 0xff: the largest varint prefixes, lengths and counts.
        6 if len > 0 => {
            let at = rng.gen_range(0..len);
            let end = len.min(at + rng.gen_range(1..=10));
            input[at..end].fill(0xff);
        }
        // A different mode byte.
        _ if len > 0 => input[0] = rng.r#gen(),
        _ => input.push(rng.r#gen()),
    }
}

/// `count` mutants of `seeds`, each with 1 to 4 edits, the same on every run.
fn mutants(name: &str, seeds: &[Vec<u8>], count: usize) -> Vec<Vec<u8>> {
    // A fixed seed per target, from its name.
    let seed = name
        .bytes()
        .fold(0xc4_1e_0b_5eu64, |h, b| h.rotate_left(5) ^ u64::from(b));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count)
        .map(|i| {
            let mut input = seeds[i % seeds.len()].clone();
            for _ in 0..rng.gen_range(1..=4) {
                mutate_once(&mut rng, &mut input);
            }
            input
        })
        .collect()
}

/// Runs `name` on every input; on panics, saves the inputs and fails with their names.
fn smoke(name: &str, mutations: usize) {
    let t = target(name);
    let seeds = (t.seeds)();
    assert!(!seeds.is_empty(), "{name} has no seeds");
    let mut inputs: Vec<(String, Vec<u8>)> = seeds
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("seed {i}"), s.clone()))
        .collect();
    inputs.extend(
        regressions(name)
            .into_iter()
            .map(|(file, bytes)| (format!("regression {file}"), bytes)),
    );
    inputs.extend(
        mutants(name, &seeds, mutations)
            .into_iter()
            .enumerate()
            .map(|(i, m)| (format!("mutant {i}"), m)),
    );
    let failures_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("smoke-failures");
    let mut failures = Vec::new();
    for (origin, input) in &inputs {
        if catch_unwind(AssertUnwindSafe(|| (t.run)(input))).is_err() {
            let file = failures_dir.join(format!("{name}-{}", failures.len()));
            let saved = std::fs::create_dir_all(&failures_dir)
                .and_then(|()| std::fs::write(&file, input))
                .map_or_else(
                    |e| format!("not saved: {e}"),
                    |()| file.display().to_string(),
                );
            failures.push(format!("{origin} ({} bytes): {saved}", input.len()));
            if failures.len() >= MAX_FAILURES {
                break;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "fuzz target {name} panicked on {} input(s):\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

#[test]
fn evidence() {
    smoke("evidence", MUTATIONS);
}

#[test]
fn dataset() {
    smoke("dataset", MUTATIONS);
}

#[test]
fn wire() {
    smoke("wire", MUTATIONS);
}

#[test]
fn owner_messages() {
    smoke("owner_messages", MUTATIONS);
}

#[test]
fn sealed() {
    smoke("sealed", MUTATIONS);
}

#[test]
fn wasm_load() {
    smoke("wasm_load", WASM_MUTATIONS);
}

#[test]
fn every_target_is_smoke_tested_and_has_a_glue_file() {
    let tested = [
        "evidence",
        "dataset",
        "wire",
        "owner_messages",
        "sealed",
        "wasm_load",
    ];
    let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
    assert_eq!(names, tested);
    for name in names {
        let glue = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/fuzz_targets")
            .join(format!("{name}.rs"));
        assert!(glue.is_file(), "no libFuzzer glue for {name}");
    }
}

/// The seeds are valid where it matters: they get past the first parser.
#[test]
fn seeds_reach_past_the_parsers() {
    for seed in chiron_fuzzing::seeds_sealed() {
        if seed.first() == Some(&1) {
            assert!(
                Model::from_bytes(&seed[1..]).is_ok(),
                "a model seed is refused"
            );
        }
    }
    for seed in chiron_fuzzing::seeds_wasm_load() {
        let sandbox = chiron_sandbox::Sandbox::new(chiron_sandbox::SandboxConfig::default());
        let loaded = sandbox.and_then(|s| s.load(&seed).map(drop));
        assert!(loaded.is_ok(), "a wasm seed is refused: {loaded:?}");
    }
    for seed in chiron_fuzzing::seeds_dataset() {
        if seed.first() == Some(&0) {
            assert!(chiron_crypto::read_dataset_header(&seed[1..]).is_ok());
        }
    }
    for seed in chiron_fuzzing::seeds_wire() {
        let frame =
            chiron_proto::wire::read_frame::<chiron_proto::wire::HostFrame>(&mut seed.as_slice());
        let other = chiron_proto::wire::read_frame::<chiron_proto::wire::EnclaveFrame>(
            &mut seed.as_slice(),
        );
        assert!(
            frame.is_ok() || other.is_ok(),
            "a frame seed does not decode"
        );
    }
    for seed in chiron_fuzzing::seeds_evidence() {
        assert!(chiron_proto::evidence::Evidence::from_bytes(&seed[1..]).is_ok());
    }
}

/// The regression input of issue 10 is the encoding of the real `Model` with the overflowing
/// shape, read in `sealed`'s mode 1, and `Model::from_bytes` refuses it with an error.
#[test]
fn issue_10_input_is_the_overflowing_model_and_is_refused() {
    let file = regressions_dir("sealed").join("issue-10-shape-overflow");
    let bytes = match std::fs::read(&file) {
        Ok(bytes) => bytes,
        Err(e) => panic!("{}: {e}", file.display()),
    };
    // A valid header, so that nothing but the shape can make the model invalid.
    let header = DatasetHeader {
        kind: DatasetKind::Tabular,
        dims: vec![3],
        encoding: ElementEncoding::F32,
        classes: 2,
        train_count: 2,
        valid_count: 1,
    };
    let model = Model {
        header: Some(header),
        tensors: vec![(vec![1 << 43, 1 << 50, 1 << 43, 1], Arc::new(Vec::new()))],
        meta: Vec::new(),
    };
    let mut expected = vec![1];
    expected.extend(model.to_bytes());
    assert_eq!(bytes, expected);
    assert!(Model::from_bytes(&bytes[1..]).is_err());
}
