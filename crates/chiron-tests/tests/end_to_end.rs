//! The whole path with real processes and real data: a provider registers a program, an
//! owner trains on encrypted data after attesting the enclave, then queries black-box.
#![allow(clippy::expect_used)] // test helpers: a failed step is a failed test

use std::time::Duration;

use chiron_client::convert;
use chiron_client::owner::TrainingTerms;
use chiron_proto::api::JobState;
use chiron_proto::owner::OwnerEvent;
use chiron_tests::*;

#[test]
fn owner_trains_the_cnn_on_fashion_mnist_and_queries_it() {
    let service = Service::start();
    let data = fashion_subset(6000);
    let ticket = start_job(&service, &program_wasm("chiron_cnn"), &data, &terms(1, 600))
        .expect("job starts after attestation");
    let (state, events) = wait(&service, &ticket, Duration::from_secs(600));
    assert_eq!(state, JobState::Succeeded, "{events:?}");
    assert!(matches!(
        events.first(),
        Some(OwnerEvent::Started {
            train_count: 5400,
            valid_count: 600
        })
    ));
    assert!(last_metric(&events, "train_loss").is_some(), "{events:?}");

    let (images, labels) = fashion_test();
    let test = convert::load_idx_inputs(&images, &labels, Some(1000)).expect("test set");
    let accuracy =
        query_accuracy(&service, &ticket, &test.features, &test.labels, 100).expect("queries");
    // One epoch on 5 400 images: well above chance (10%) if the program really learned.
    assert!(accuracy > 0.70, "accuracy {accuracy}");
}

#[test]
fn owner_trains_the_mlp_on_a_csv_table() {
    let service = Service::start();
    let data = iris();
    let ticket = start_job(
        &service,
        &program_wasm("chiron_mlp"),
        &data,
        &terms(60, 120),
    )
    .expect("job starts");
    let (state, events) = wait(&service, &ticket, Duration::from_secs(300));
    assert_eq!(state, JobState::Succeeded, "{events:?}");
    let valid = last_metric(&events, "valid_accuracy").expect("validation accuracy reported");
    assert!(valid >= 0.8, "validation accuracy {valid}");

    let test = iris_inputs(&data, None);
    let accuracy =
        query_accuracy(&service, &ticket, &test.features, &test.labels, 50).expect("queries");
    assert!(accuracy > 0.85, "accuracy {accuracy}");
}

#[test]
fn the_command_line_tool_runs_the_flow() {
    let service = Service::start();
    let bins = bin_dir();
    let cli = bins.join("chiron");
    let work = tempfile::tempdir().expect("tmp");
    let wasm_path = work.path().join("mlp.wasm");
    std::fs::write(&wasm_path, program_wasm("chiron_mlp")).expect("write");
    let measurement =
        hex::encode(chiron_attest::measure_file(bins.join("chiron-enclave")).expect("measure"));
    let platform = service.state_dir().join("sim-platform.key.pub");

    let out = std::process::Command::new(&cli)
        .env("CHIRON_TOKEN", &service.token)
        .args(["register", "--host", &service.url])
        .arg(&wasm_path)
        .output()
        .expect("chiron runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let program = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_owned();

    let ticket = work.path().join("job.json");
    let csv = iris_csv();
    let common = |cmd: &mut std::process::Command| {
        cmd.env("CHIRON_TOKEN", &service.token)
            .args(["--host", &service.url, "--sim-measurement", &measurement])
            .arg("--dangerous-sim-platform")
            .arg(&platform)
            .arg("--ticket")
            .arg(&ticket)
            .arg("--csv")
            .arg(&csv)
            .args(["--label-column", "species"]);
    };
    let mut train = std::process::Command::new(&cli);
    train.args([
        "train",
        "--program",
        &program,
        "--epochs",
        "60",
        "--valid-fraction",
        "0.2",
    ]);
    common(&mut train);
    let out = train.output().expect("chiron train runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut evaluate = std::process::Command::new(&cli);
    evaluate.arg("evaluate");
    common(&mut evaluate);
    let out = evaluate.output().expect("chiron evaluate runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("accuracy on 150 held-out examples"), "{text}");

    // Mistakes an owner makes, each refused with what to do before anything is spent.
    let stored_datasets = || {
        std::fs::read_dir(service.state_dir().join("objects/datasets"))
            .map(|dir| dir.count())
            .unwrap_or(0)
    };
    let before = stored_datasets();
    let ticket_before = std::fs::read(&ticket).expect("ticket");
    let mut again = std::process::Command::new(&cli);
    again.args(["train", "--program", &program, "--epochs", "1"]);
    common(&mut again);
    let out = again.output().expect("chiron train runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("already holds a job's ticket"), "{err}");
    assert_eq!(stored_datasets(), before, "a dataset was uploaded");
    assert_eq!(std::fs::read(&ticket).expect("ticket"), ticket_before);

    let (images, labels) = fashion_test();
    let out = std::process::Command::new(&cli)
        .env("CHIRON_TOKEN", &service.token)
        .args([
            "evaluate",
            "--host",
            &service.url,
            "--sim-measurement",
            &measurement,
        ])
        .arg("--dangerous-sim-platform")
        .arg(&platform)
        .arg("--ticket")
        .arg(&ticket)
        .arg("--idx-images")
        .arg(&images)
        .arg("--idx-labels")
        .arg(&labels)
        .args(["--limit", "100"])
        .output()
        .expect("chiron evaluate runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("was trained on Tabular data of shape [4]") && err.contains("no query"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    let out = std::process::Command::new(&cli)
        .env("CHIRON_TOKEN", &service.token)
        .args([
            "register",
            "--host",
            service.url.trim_start_matches("http://"),
        ])
        .arg(&wasm_path)
        .output()
        .expect("chiron register runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--host must be the host's URL, with its scheme"),
        "{err}"
    );
}

#[test]
fn the_owners_seed_makes_training_reproducible() {
    let service = Service::start();
    let data = iris();
    let wasm = program_wasm("chiron_mlp");
    let metrics = |seed: [u8; 32]| {
        let terms = TrainingTerms {
            seed: Some(seed),
            ..terms(20, 120)
        };
        let ticket = start_job(&service, &wasm, &data, &terms).expect("job starts");
        let (state, events) = wait(&service, &ticket, Duration::from_secs(300));
        assert_eq!(state, JobState::Succeeded, "{events:?}");
        let values: Vec<(String, u32, u32)> = events
            .into_iter()
            .filter_map(|e| match e {
                OwnerEvent::Metric { name, epoch, value } => Some((name, epoch, value.to_bits())),
                _ => None,
            })
            .collect();
        assert!(!values.is_empty());
        values
    };
    let first = metrics([3; 32]);
    assert_eq!(first, metrics([3; 32]), "same seed, same run");
    assert_ne!(first, metrics([4; 32]), "another seed, another run");
}

#[test]
fn a_job_whose_time_runs_out_keeps_the_model_of_its_last_epoch() {
    let service = Service::start();
    let data = fashion_subset(1500);
    let wasm = program_wasm("chiron_cnn");
    // Far more epochs than the budget allows: the clock, not the program, ends both jobs.
    let kept = start_job(&service, &wasm, &data, &terms(1000, 10)).expect("job starts");
    let failing = TrainingTerms {
        keep_last_save: false,
        ..terms(1000, 10)
    };
    let discarded = start_job(&service, &wasm, &data, &failing).expect("job starts");

    let (state, events) = wait(&service, &kept, Duration::from_secs(120));
    assert_eq!(state, JobState::Succeeded, "{events:?}");
    let cut = events
        .iter()
        .position(|e| matches!(e, OwnerEvent::CutShort))
        .expect("the owner is told the budget ran out");
    assert!(
        matches!(events.get(cut + 1), Some(OwnerEvent::Finished { .. })),
        "{events:?}"
    );
    let epochs = events
        .iter()
        .filter(|e| matches!(e, OwnerEvent::Metric { name, .. } if name == "train_loss"))
        .count();
    assert!(
        (1..1000).contains(&epochs),
        "{epochs} epochs before the budget ran out"
    );
    // The kept model is a trained one: it answers far above chance (10%).
    let (images, labels) = fashion_test();
    let test = convert::load_idx_inputs(&images, &labels, Some(500)).expect("test set");
    let accuracy =
        query_accuracy(&service, &kept, &test.features, &test.labels, 100).expect("queries");
    assert!(accuracy > 0.5, "accuracy {accuracy} after {epochs} epochs");

    // The owner who asked for all epochs or nothing gets nothing.
    let (state, events) = wait(&service, &discarded, Duration::from_secs(120));
    assert_eq!(state, JobState::Failed, "{events:?}");
    let why = failure(&events).expect("the owner is told why");
    assert!(why.contains("time budget"), "{why}");
    assert!(!events.iter().any(|e| matches!(e, OwnerEvent::CutShort)));
}
