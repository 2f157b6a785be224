//! A random canary in the owner's data must appear in nothing the platform can see: stored
//! objects, job records, host logs, process output, error texts.
#![allow(clippy::expect_used)] // test helpers: a failed step is a failed test

use std::time::Duration;

use chiron_proto::api::JobState;
use chiron_tests::transcript::{contains, encodings, plant_canary, random_canary};
use chiron_tests::*;

#[test]
fn the_canary_never_reaches_the_platform() {
    let canary = random_canary();
    let mut data = fashion_subset(1000);
    let n = data.header.train_count as usize + data.header.valid_count as usize;
    let pixels = n * 4; // features start after the labels
    plant_canary(&mut data, &canary);
    let mut texts = Vec::new();

    let service = Service::start();
    let ticket =
        start_job(&service, &program_wasm("chiron_cnn"), &data, &terms(1, 300)).expect("start");
    let (state, events) = wait(&service, &ticket, Duration::from_secs(300));
    assert_eq!(state, JobState::Succeeded, "{events:?}");

    // Queries carrying the canary.
    let features: Vec<f32> = data.body[pixels..pixels + 784 * 20]
        .iter()
        .map(|&b| f32::from(b) / 255.0)
        .collect();
    let labels = vec![0u32; 20];
    query_accuracy(&service, &ticket, &features, &labels, 10).expect("queries");

    // A hostile program on the same data fails; its error texts are part of the view.
    let bad = start_job(
        &service,
        &program_wasm("hostile_badhandle"),
        &data,
        &terms(1, 30),
    )
    .expect("start");
    let (state, _) = wait(&service, &bad, Duration::from_secs(60));
    assert_eq!(state, JobState::Failed);
    for job in [&ticket.job_id, &bad.job_id] {
        let status = service.client().job_status(job).expect("status");
        texts.push(format!("{status:?}"));
    }

    let mut view = service.platform_view();
    view.push(("api texts".into(), texts.join("\n").into_bytes()));
    assert!(
        view.iter().any(|(name, _)| name.ends_with(".sealed")),
        "model stored"
    );
    for (name, bytes) in &view {
        for needle in encodings(&canary) {
            assert!(!contains(bytes, &needle), "canary found in {name}");
        }
    }
}
