//! What survives when the host dies or is stopped: uploads resume to the exact container,
//! records tell each job's true state, and SIGTERM lets work in flight finish.
#![allow(clippy::expect_used)] // test helpers: a failed step is a failed test

use std::time::{Duration, Instant};

use chiron_client::HostClient;
use chiron_proto::api::JobState;
use chiron_tests::*;

const JOB_TIMEOUT: Duration = Duration::from_secs(300);

/// Enclave processes of this service's platform, whoever their parent is now.
fn enclaves_of(service: &Service) -> Vec<u32> {
    let key = service.state_dir().join("sim-platform.key");
    let key = key.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .expect("procfs")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(&key)
        })
        .collect()
}

#[test]
fn a_host_killed_mid_upload_resumes_to_the_exact_container() {
    let mut service = Service::start();
    let data = fashion_subset(3000);
    let key = chiron_crypto::DataKey::generate();
    let mut container = Vec::new();
    chiron_crypto::encrypt_dataset(&key, &data.header, data.body.as_slice(), &mut container)
        .expect("encrypt");
    let part = 256 << 10;
    assert!(container.len() > 6 * part, "{}", container.len());
    let host = service.client();
    let opened = host
        .create_upload(container.len() as u64)
        .expect("upload opens");
    let id = opened.upload_id.clone();
    for start in (0..3 * part).step_by(part) {
        host.upload_part(&id, start as u64, &container[start..start + part])
            .expect("part stored");
    }
    // A fourth part in flight when the host is killed: stored whole or not at all.
    let sender = {
        let host = host.clone();
        let id = id.clone();
        let fourth = container[3 * part..4 * part].to_vec();
        std::thread::spawn(move || host.upload_part(&id, 3 * part as u64, &fourth))
    };
    std::thread::sleep(Duration::from_millis(5));
    service.kill();
    let _ = sender.join().expect("sender thread");

    let service = service.restart(&[]);
    let host = service.client();
    let status = host.upload_status(&id).expect("the upload survived");
    assert!(
        status.offset == 3 * part as u64 || status.offset == 4 * part as u64,
        "offset {} is not a part boundary",
        status.offset
    );
    assert!(status.dataset.is_none());
    // Another owner cannot see it.
    let other = HostClient::new(&service.url).with_token(&service.add_principal("eve", &["owner"]));
    let err = other.upload_status(&id).expect_err("not Eve's");
    assert!(err.to_string().contains("no upload"), "{err}");

    let dataset = host
        .resume_upload(status, &container)
        .expect("the upload completes");
    assert_eq!(dataset.dataset_id, id);
    let stored = service.stored_dataset(&id);
    assert!(
        stored == container,
        "the stored container differs from the one sent"
    );
    assert!(
        !service
            .state_dir()
            .join("objects/uploads")
            .join(&id)
            .join("session.json")
            .exists(),
        "the upload was not closed"
    );
    // The dataset, kept as the upload's parts, trains like any other.
    let program = host
        .register_program(&program_wasm("chiron_cnn"))
        .expect("program");
    let job = host
        .create_job(&program.program_id, &dataset.dataset_id)
        .expect("a job on the resumed dataset");
    let ticket = chiron_client::owner::start_training(
        &host,
        &service.policy(),
        &job.job_id,
        &program.program_id,
        &data.header,
        &key,
        &terms(1, 300),
    )
    .expect("starts");
    let (state, events) = wait(&service, &ticket, JOB_TIMEOUT);
    assert_eq!(state, JobState::Succeeded, "{events:?}");
}

#[test]
fn after_a_crash_the_records_tell_each_jobs_true_state() {
    let mut service = Service::start();
    let data = iris();
    let wasm = program_wasm("chiron_mlp");
    // One job finished before the crash, one training during it, one waiting to start.
    let done = start_job(&service, &wasm, &data, &terms(30, 120)).expect("job starts");
    let (state, events) = wait(&service, &done, JOB_TIMEOUT);
    assert_eq!(state, JobState::Succeeded, "{events:?}");
    let events_before = service
        .client()
        .job_status(&done.job_id)
        .expect("status")
        .events;
    let training = start_job(&service, &wasm, &data, &terms(100_000, 600)).expect("job starts");
    let waiting = create_job(&service.client(), &wasm, &data).expect("job created");
    let deadline = Instant::now() + Duration::from_secs(60);
    while service
        .client()
        .job_status(&training.job_id)
        .expect("status")
        .events
        < 2
    {
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The running job's enclave and the waiting one's (the finished job's has exited).
    assert_eq!(enclaves_of(&service).len(), 2);

    service.kill();
    // Without their host the enclaves stop on their own.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !enclaves_of(&service).is_empty() {
        assert!(
            Instant::now() < deadline,
            "enclaves outlived their host: {:?}",
            enclaves_of(&service)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let service = service.restart(&[]);
    let host = service.client();
    let status = host.job_status(&done.job_id).expect("status");
    assert_eq!(status.state, JobState::Succeeded);
    assert_eq!(status.events, events_before, "events were lost");
    for id in [&training.job_id, &waiting.job_id] {
        let status = host.job_status(id).expect("status");
        assert_eq!(status.state, JobState::Failed, "{id}");
        assert_eq!(status.error.as_deref(), Some("host restarted"));
    }
    // The finished job's model still answers.
    assert_iris_answers(&service, &done, &data);
}

#[test]
fn sigterm_lets_work_in_flight_finish_and_leaves_every_record_consistent() {
    let mut service = Service::start();
    let data = iris();
    let wasm = program_wasm("chiron_mlp");
    let done = start_job(&service, &wasm, &data, &terms(30, 120)).expect("job starts");
    let (state, _) = wait(&service, &done, JOB_TIMEOUT);
    assert_eq!(state, JobState::Succeeded);
    let training = start_job(&service, &wasm, &data, &terms(100_000, 600)).expect("job starts");

    // A one-request upload half sent when the operator stops the host.
    let container = encrypted(&fashion_subset(500));
    let slow = HalfSentUpload::start(&service, &container);
    std::thread::sleep(Duration::from_millis(300));

    service.terminate();
    std::thread::sleep(Duration::from_millis(500));
    // No new work is taken...
    assert!(
        service.client().job_status(&done.job_id).is_err(),
        "a request after SIGTERM was served"
    );
    // ...but the upload in flight finishes and is stored whole.
    let answer = slow.finish();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).expect("body");
    let created: chiron_proto::api::DatasetCreated =
        serde_json::from_str(body).expect("dataset created");
    assert!(
        service.wait_exit(Duration::from_secs(30)),
        "the host did not exit"
    );
    assert!(
        service.stderr().contains("shutting down"),
        "{}",
        service.stderr()
    );
    let stored = service.stored_dataset(&created.dataset_id);
    assert!(stored == container, "the stored container differs");

    // The records say what happened, before any restart.
    let record = |id: &str| -> serde_json::Value {
        let text = std::fs::read(service.object("jobs", id, "json")).expect("record");
        serde_json::from_slice(&text).expect("json")
    };
    assert_eq!(record(&done.job_id)["state"], "Succeeded");
    assert_eq!(record(&training.job_id)["state"], "Failed");
    assert_eq!(record(&training.job_id)["error"], "host shut down");
    assert!(
        enclaves_of(&service).is_empty(),
        "enclaves outlived the host"
    );
}

#[test]
fn sigterm_under_load_loses_no_accepted_part_and_no_answer_is_cut() {
    let mut service = Service::start();
    let data = iris();
    let done = start_job(
        &service,
        &program_wasm("chiron_mlp"),
        &data,
        &terms(30, 120),
    )
    .expect("job starts");
    let (state, _) = wait(&service, &done, JOB_TIMEOUT);
    assert_eq!(state, JobState::Succeeded);

    // An owner uploading part by part (two at once, its limit) and querying a model.
    let container = encrypted(&fashion_subset(3000));
    let part = 128 << 10;
    let uploaders: Vec<_> = (0..2)
        .map(|_| {
            let host = service.client();
            let container = container.clone();
            std::thread::spawn(move || {
                let id = host
                    .create_upload(container.len() as u64)
                    .expect("opens")
                    .upload_id;
                let mut acknowledged = 0;
                while acknowledged < container.len() {
                    let end = (acknowledged + part).min(container.len());
                    let sent =
                        host.upload_part(&id, acknowledged as u64, &container[acknowledged..end]);
                    match sent {
                        Ok(status) => acknowledged = status.offset as usize,
                        Err(_) => break,
                    }
                    std::thread::sleep(Duration::from_millis(60));
                }
                (id, acknowledged)
            })
        })
        .collect();
    let inputs = iris_inputs(&data, Some(10)).features;
    let queriers: Vec<_> = (0..2)
        .map(|_| {
            let (host, policy, ticket, inputs) = (
                service.client(),
                service.policy(),
                done.clone(),
                inputs.clone(),
            );
            std::thread::spawn(move || {
                let session = chiron_client::owner::QuerySession::open(&host, &policy, &ticket)
                    .expect("attests");
                let mut answered = 0;
                loop {
                    match session.query(10, inputs.clone()) {
                        Ok(answer) => {
                            assert_eq!(answer.classes.len(), 10, "a cut answer");
                            answered += 1;
                        }
                        // The host has closed its listener.
                        Err(chiron_client::ClientError::Http(_)) => return answered,
                        // The model's query budget is spent: every answer was whole.
                        Err(e) if e.to_string().contains("query budget exhausted") => {
                            return answered;
                        }
                        Err(e) => panic!("not a clean refusal: {e}"),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    service.terminate();
    assert!(
        service.wait_exit(Duration::from_secs(40)),
        "the host did not exit"
    );
    let uploads: Vec<(String, usize)> = uploaders
        .into_iter()
        .map(|t| t.join().expect("uploader"))
        .collect();
    for querier in queriers {
        assert!(
            querier.join().expect("querier") > 0,
            "no query was answered"
        );
    }

    // After a restart every acknowledged byte is there, and each upload completes exactly.
    let service = service.restart(&[]);
    let host = service.client();
    for (id, acknowledged) in uploads {
        let status = host.upload_status(&id).expect("the upload survived");
        assert!(
            status.offset >= acknowledged as u64,
            "{id}: {} stored, {acknowledged} acknowledged",
            status.offset
        );
        let dataset = host.resume_upload(status, &container).expect("completes");
        let stored = service.stored_dataset(&dataset.dataset_id);
        assert!(stored == container, "{id}: the stored container differs");
    }
}
