//! The whole path with real processes and real data: a provider registers a program, an
//! owner trains on encrypted data after attesting the enclave, then queries black-box.
#![allow(clippy::expect_used)] // test helpers: a failed step is a failed test

use std::time::Duration;

use chiron_client::convert;
use chiron_client::owner::{self, TrainingTerms};
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

    assert_iris_answers(&service, &ticket, &data);
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

    // One epoch of `program` on the table, trusting runtime `measurement`, with a ticket of
    // its own named `ticket`.
    let train_once = |program: &str, measurement: &str, ticket: &str| {
        std::process::Command::new(&cli)
            .env("CHIRON_TOKEN", &service.token)
            .args(["train", "--program", program, "--epochs", "1", "--live"])
            .args(["--host", &service.url, "--sim-measurement", measurement])
            .arg("--dangerous-sim-platform")
            .arg(&platform)
            .arg("--ticket")
            .arg(work.path().join(ticket))
            .arg("--csv")
            .arg(&csv)
            .args(["--label-column", "species"])
            .output()
            .expect("chiron train runs")
    };

    // An enclave the owner's policy refuses (another runtime build) costs no upload: the
    // job is created on an empty upload and its enclave attested before any part is sent.
    let out = train_once(&program, &"42".repeat(32), "refused.json");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("measurement differs") && err.contains("hint: `chiron measure`"),
        "{err}"
    );
    assert!(!err.contains("uploaded encrypted dataset"), "{err}");
    assert_eq!(stored_datasets(), before, "a dataset was uploaded");
    assert!(!work.path().join("refused.json").exists());

    // A table for the image network: refused, naming what it takes, before the upload.
    let cnn_path = work.path().join("cnn.wasm");
    std::fs::write(&cnn_path, program_wasm("chiron_cnn")).expect("write");
    let out = std::process::Command::new(&cli)
        .env("CHIRON_TOKEN", &service.token)
        .args(["register", "--host", &service.url])
        .arg(&cnn_path)
        .output()
        .expect("chiron register runs");
    let cnn = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let out = train_once(&cnn, &measurement, "cnn.json");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("does not take this dataset")
            && err.contains("takes images only")
            && err.contains("nothing was uploaded"),
        "{err}"
    );
    assert_eq!(stored_datasets(), before, "a dataset was uploaded");

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
    // The program's step progress reached the owner of this live job.
    let progress = events
        .iter()
        .filter_map(|e| match e {
            OwnerEvent::Progress { step, steps, .. } => Some((*step, *steps)),
            _ => None,
        })
        .collect::<Vec<_>>();
    assert!(
        !progress.is_empty()
            && progress
                .iter()
                .all(|(step, steps)| *steps > 0 && step <= steps),
        "{progress:?}"
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

/// `chiron` as an owner runs it against `service`, with the simulated platform trusted.
struct OwnerCli {
    cli: std::path::PathBuf,
    url: String,
    token: String,
    trust: Vec<std::ffi::OsString>,
}

impl OwnerCli {
    fn new(service: &Service) -> Self {
        let bins = bin_dir();
        let measurement =
            hex::encode(chiron_attest::measure_file(bins.join("chiron-enclave")).expect("measure"));
        let platform = service.state_dir().join("sim-platform.key.pub");
        Self {
            cli: bins.join("chiron"),
            url: service.url.clone(),
            token: service.token.clone(),
            trust: vec![
                "--sim-measurement".into(),
                measurement.into(),
                "--dangerous-sim-platform".into(),
                platform.into(),
            ],
        }
    }

    /// Runs `chiron <command> --host URL [trust] args...`.
    fn command(&self, command: &str, trusted: bool) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.cli);
        cmd.env("CHIRON_TOKEN", &self.token)
            .args([command, "--host", &self.url]);
        if trusted {
            cmd.args(&self.trust);
        }
        cmd
    }

    /// Runs it to its end: its stdout, or a failed test with its stderr.
    fn ok(mut cmd: std::process::Command) -> String {
        let out = cmd.output().expect("chiron runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// Runs it, expecting it to fail: its stderr.
    fn refused(mut cmd: std::process::Command) -> String {
        let out = cmd.output().expect("chiron runs");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        err
    }
}

#[test]
fn an_owner_follows_inspects_and_queries_jobs_from_the_command_line() {
    let service = Service::start();
    let owner = OwnerCli::new(&service);
    let work = tempfile::tempdir().expect("tmp");
    let register = |name: &str| {
        let wasm = work.path().join(format!("{name}.wasm"));
        std::fs::write(&wasm, program_wasm(name)).expect("write");
        let mut cmd = owner.command("register", false);
        cmd.arg(&wasm);
        OwnerCli::ok(cmd).trim().to_owned()
    };
    let mlp = register("chiron_mlp");
    let slow_answers = register("hostile_querytime");
    let iris = iris_csv();
    let table = |cmd: &mut std::process::Command| {
        cmd.arg("--csv")
            .arg(&iris)
            .args(["--label-column", "species"]);
    };

    // A private job whose answers take longer than its answer time, trained alongside.
    let private_ticket = work.path().join("private.json");
    let mut private = owner.command("train", true);
    private
        .args([
            "--program",
            &slow_answers,
            "--epochs",
            "1",
            "--time-budget",
            "8",
        ])
        .args(["--private-answer-ms", "50", "--ticket"])
        .arg(&private_ticket);
    table(&mut private);
    let private = private
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chiron train starts");

    // A live job, interrupted as soon as its ticket is written, then attached to again.
    let ticket = work.path().join("iris.json");
    let seed = "ab".repeat(32);
    let mut train = owner.command("train", true);
    train
        .args([
            "--program",
            &mlp,
            "--epochs",
            "40",
            "--live",
            "--seed",
            &seed,
            "--top-k",
            "2",
            "--scores",
        ])
        .args(["--valid-fraction", "0.2", "--ticket"])
        .arg(&ticket);
    table(&mut train);
    let mut interrupted = train
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chiron train starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !ticket.exists() {
        assert!(std::time::Instant::now() < deadline, "no ticket written");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = interrupted.kill();
    let _ = interrupted.wait();
    let mut attach = owner.command("attach", false);
    attach.arg("--ticket").arg(&ticket);
    let result = OwnerCli::ok(attach);
    assert!(result.contains("succeeded"), "{result}");
    assert!(result.contains(&format!("seed: {seed}")), "{result}");
    assert!(result.contains("valid_accuracy: "), "{result}");

    // The job's records beside its ticket: a row per metric and epoch, a point per epoch.
    let csv = std::fs::read_to_string(work.path().join("iris.metrics.csv")).expect("metrics");
    let losses = csv.lines().filter(|l| l.contains(",train_loss,")).count();
    assert_eq!(losses, 40, "{csv}");
    let svg = std::fs::read_to_string(work.path().join("iris.curves.svg")).expect("svg");
    assert_eq!(
        svg.matches("<circle").count(),
        2 * 40,
        "train_loss and valid_accuracy"
    );
    let png = std::fs::read(work.path().join("iris.curves.png")).expect("png");
    for panel in 0..2 {
        let colour = chiron_client::history::point_colour(panel);
        assert_eq!(
            spots_of(&png, colour),
            40,
            "panel {panel}: a point per epoch"
        );
    }

    let mut status = owner.command("status", false);
    status.arg("--ticket").arg(&ticket).arg("--json");
    let status: serde_json::Value = serde_json::from_str(&OwnerCli::ok(status)).expect("json");
    assert_eq!(status["state"], "Succeeded", "{status}");
    assert_eq!(status["seed"], seed.as_str());
    assert_eq!(status["metrics"].as_array().map(Vec::len), Some(80));

    // Evaluation: the figures and the confusion matrix, as JSON.
    let mut evaluate = owner.command("evaluate", true);
    evaluate.arg("--ticket").arg(&ticket).arg("--json");
    table(&mut evaluate);
    let report: serde_json::Value = serde_json::from_str(&OwnerCli::ok(evaluate)).expect("json");
    assert_eq!(report["examples"], 150);
    assert_eq!(report["top_k"], 2);
    let accuracy = report["accuracy"].as_f64().expect("accuracy");
    assert!(accuracy > 0.8, "{report}");
    let confusion: Vec<Vec<u64>> =
        serde_json::from_value(report["confusion"].clone()).expect("matrix");
    assert_eq!(confusion.len(), 3);
    assert_eq!(confusion.iter().flatten().sum::<u64>(), 150);
    assert_eq!(report["classes"][0]["class"], "setosa");
    assert_eq!(report["classes"][0]["support"], 50);

    // Predictions on the table without its labels, named by class.
    let unlabelled = work.path().join("unlabelled.csv");
    let text = std::fs::read_to_string(&iris).expect("iris");
    let (rows, truth): (Vec<String>, Vec<String>) = text
        .lines()
        .map(|line| {
            let (features, label) = line.rsplit_once(',').expect("a label column");
            (features.to_owned(), label.to_owned())
        })
        .unzip();
    std::fs::write(&unlabelled, rows.join("\n") + "\n").expect("write");
    let answers = work.path().join("answers.csv");
    let mut predict = owner.command("predict", true);
    predict
        .arg("--ticket")
        .arg(&ticket)
        .arg("--csv")
        .arg(&unlabelled)
        .arg("--output")
        .arg(&answers);
    OwnerCli::ok(predict);
    // Top-2 answers with scores: each label followed by its probability.
    let answered = std::fs::read_to_string(&answers).expect("answers");
    let lines: Vec<&str> = answered.lines().collect();
    assert_eq!(lines[0], "index,label_1,score_1,label_2,score_2");
    assert_eq!(lines.len(), 151);
    let rows: Vec<Vec<&str>> = lines[1..].iter().map(|l| l.split(',').collect()).collect();
    let agree = rows
        .iter()
        .zip(&truth[1..])
        .filter(|(row, truth)| row[1] == truth.as_str())
        .count();
    assert!(agree as f64 / 150.0 > 0.8, "{agree} of 150 agree");
    for row in &rows {
        let score = |at: usize| row[at].parse::<f64>().expect("a score");
        assert_ne!(row[1], row[3], "two different classes: {row:?}");
        assert!(
            score(2) >= score(4) && score(4) >= 0.0,
            "best first: {row:?}"
        );
        assert!(score(2) + score(4) <= 1.0 + 1e-5, "{row:?}");
    }
    // An existing answers file is never overwritten, and no query is spent finding out.
    let mut again = owner.command("predict", true);
    again
        .arg("--ticket")
        .arg(&ticket)
        .arg("--csv")
        .arg(&unlabelled)
        .arg("--output")
        .arg(&answers);
    let err = OwnerCli::refused(again);
    assert!(err.contains("never overwritten"), "{err}");

    // The private job: a query its program cannot answer in time names the cause.
    let _ = private.wait_with_output();
    let slow = work.path().join("slow-first.csv");
    // Rows whose first (standardised) value makes the program spin past the answer time.
    let long_sepals: Vec<&str> = text.lines().skip(51).take(20).collect();
    std::fs::write(
        &slow,
        format!(
            "{}\n{}\n",
            text.lines().next().unwrap_or(""),
            long_sepals.join("\n")
        ),
    )
    .expect("write");
    let mut evaluate = owner.command("evaluate", true);
    evaluate
        .arg("--ticket")
        .arg(&private_ticket)
        .arg("--csv")
        .arg(&slow)
        .args(["--label-column", "species"]);
    let err = OwnerCli::refused(evaluate);
    assert!(
        err.contains("answer time of 50 ms") && err.contains("--batch"),
        "{err}"
    );

    // A program id the host does not know is refused before anything is uploaded.
    let datasets = || {
        std::fs::read_dir(service.state_dir().join("objects/datasets"))
            .map(|dir| dir.count())
            .unwrap_or(0)
    };
    let before = datasets();
    let mut unknown = owner.command("train", true);
    unknown
        .args(["--program", &"0".repeat(64), "--ticket"])
        .arg(work.path().join("unknown.json"));
    table(&mut unknown);
    let err = OwnerCli::refused(unknown);
    assert!(err.contains("no program"), "{err}");
    assert_eq!(datasets(), before, "a dataset was uploaded");

    // A table given to an image model is refused by its shape before any query.
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&ticket).expect("ticket")).expect("json");
    record["ticket"]["header"]["kind"] = "Image".into();
    record["ticket"]["header"]["dims"] = serde_json::json!([1, 28, 28]);
    let image_ticket = work.path().join("image-model.json");
    std::fs::write(&image_ticket, record.to_string()).expect("write");
    let mut evaluate = owner.command("evaluate", true);
    evaluate.arg("--ticket").arg(&image_ticket);
    table(&mut evaluate);
    let err = OwnerCli::refused(evaluate);
    assert!(
        err.contains("trained on Image data of shape [1, 28, 28]") && err.contains("no query"),
        "{err}"
    );
    std::fs::remove_file(&image_ticket).expect("remove");

    // Both tickets are listed with their jobs' states.
    let mut jobs = owner.command("jobs", false);
    jobs.arg("--dir").arg(work.path());
    let listed = OwnerCli::ok(jobs);
    assert!(
        listed.contains("iris.json") && listed.contains("private.json"),
        "{listed}"
    );
    assert_eq!(listed.matches("succeeded").count(), 2, "{listed}");

    // A failed job: `train` says why and fails; `status` says why again, later, from the
    // ticket alone (the owner's own detail, decrypted from the job's events).
    let spin = register("hostile_spin");
    let failed_ticket = work.path().join("spin.json");
    let mut failing = owner.command("train", true);
    failing
        .args([
            "--program",
            &spin,
            "--live",
            "--time-budget",
            "2",
            "--ticket",
        ])
        .arg(&failed_ticket);
    table(&mut failing);
    let err = OwnerCli::refused(failing);
    assert!(err.contains("time budget"), "{err}");
    let mut status = owner.command("status", false);
    status.arg("--ticket").arg(&failed_ticket);
    let shown = OwnerCli::ok(status);
    assert!(shown.contains("failed"), "{shown}");
    let reason = shown
        .lines()
        .find_map(|line| line.strip_prefix("failure: "))
        .unwrap_or_else(|| panic!("no failure line: {shown}"));
    assert!(reason.contains("time budget"), "{shown}");
    let mut status = owner.command("status", false);
    status.arg("--ticket").arg(&failed_ticket).arg("--json");
    let status: serde_json::Value = serde_json::from_str(&OwnerCli::ok(status)).expect("json");
    assert_eq!(status["state"], "Failed", "{status}");
    assert_eq!(status["failure"], reason, "{status}");
}

/// How many separate spots of exactly `colour` (8-connected, at least 9 pixels) an RGB or
/// RGBA PNG holds: the points of a curve, drawn over its line in a colour of their own.
fn spots_of(png: &[u8], colour: [u8; 3]) -> usize {
    let mut reader = png::Decoder::new(std::io::Cursor::new(png))
        .read_info()
        .expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size().expect("a frame size")];
    let info = reader.next_frame(&mut pixels).expect("a frame");
    let (width, height) = (info.width as usize, info.height as usize);
    let channels = info.color_type.samples();
    let mut left: Vec<bool> = pixels
        .chunks(channels)
        .take(width * height)
        .map(|pixel| pixel[..3] == colour)
        .collect();
    let mut spots = 0;
    for start in 0..left.len() {
        if !left[start] {
            continue;
        }
        left[start] = false;
        let (mut size, mut stack) = (0, vec![start]);
        while let Some(at) = stack.pop() {
            size += 1;
            let (x, y) = ((at % width) as isize, (at / width) as isize);
            for (dx, dy) in (-1..=1).flat_map(|dx| (-1..=1).map(move |dy| (dx, dy))) {
                let (nx, ny) = (x + dx, y + dy);
                if nx >= 0 && ny >= 0 && (nx as usize) < width && (ny as usize) < height {
                    let next = ny as usize * width + nx as usize;
                    if left[next] {
                        left[next] = false;
                        stack.push(next);
                    }
                }
            }
        }
        if size >= 9 {
            spots += 1;
        }
    }
    spots
}

#[test]
fn a_job_on_an_open_upload_starts_only_once_the_upload_is_complete() {
    let service = Service::start();
    let host = service.client();
    let data = iris();
    let program = host
        .register_program(&program_wasm("chiron_mlp"))
        .expect("registers");
    let key = chiron_crypto::DataKey::generate();
    let container = encrypted_under(&key, &data);
    let opened = host.create_upload(container.len() as u64).expect("opens");
    let job = host
        .create_job(&program.program_id, &opened.upload_id)
        .expect("a job on an open upload");
    let start = |send_data: &dyn Fn() -> Result<(), chiron_client::ClientError>| {
        owner::start_training_then(
            &host,
            &service.policy(),
            &job.job_id,
            &program.program_id,
            &data.header,
            &key,
            &terms(20, 120),
            send_data,
        )
    };
    // Attested, but the data not sent: the host refuses to start the job.
    let err = start(&|| Ok(())).expect_err("the upload is not complete");
    assert!(
        matches!(&err, chiron_client::ClientError::Host { status: 400, message } if message.contains("is not complete")),
        "{err}"
    );
    // The owner sends the data once the enclave is attested, and the job trains.
    let ticket =
        start(&|| host.resume_upload(opened.clone(), &container).map(|_| ())).expect("starts");
    let (state, events) = wait(&service, &ticket, Duration::from_secs(120));
    assert_eq!(state, JobState::Succeeded, "{events:?}");
}

#[test]
fn a_dataset_sealed_as_it_is_uploaded_is_the_container_its_key_opens() {
    let service = Service::start();
    // Small parts, so that encryption runs ahead of the upload by several of them.
    let host = service.client().with_upload_part(64 << 10);
    let data = fashion_subset(1000);
    let key = chiron_crypto::DataKey::generate();
    let length = chiron_crypto::dataset::container_len(&data.header).expect("length");
    assert!(length > 10 * (64 << 10), "{length}");

    // An upload of another length is refused before anything is sealed or sent.
    let wrong = host.create_upload(length - 1).expect("opens");
    let err = host
        .upload_encrypted(wrong.clone(), &key, &data.header, data.body.as_slice())
        .expect_err("another length");
    assert!(
        err.to_string().contains("this dataset's container"),
        "{err}"
    );
    assert_eq!(
        host.upload_status(&wrong.upload_id).expect("status").offset,
        0
    );

    let opened = host.create_upload(length).expect("opens");
    let dataset = host
        .upload_encrypted(opened, &key, &data.header, data.body.as_slice())
        .expect("sealed and sent");
    let stored = service.stored_dataset(&dataset.dataset_id);
    assert_eq!(stored.len() as u64, length);
    let (header, body) = chiron_crypto::decrypt_dataset(&key, &stored).expect("opens");
    assert_eq!(header, data.header);
    assert!(
        *body == data.body,
        "the stored dataset differs from the owner's"
    );
}
