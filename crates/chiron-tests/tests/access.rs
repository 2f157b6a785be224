//! Who may call the service and how much: API tokens, ownership, and every limit refusing
//! with its name.
#![allow(clippy::expect_used)] // test helpers: a failed step is a failed test

use std::ffi::OsString;
use std::time::{Duration, Instant};

use chiron_client::owner::{self, QuerySession};
use chiron_client::{ClientError, HostClient};
use chiron_proto::api::{JobEnclave, JobState};
use chiron_tests::*;

const JOB_TIMEOUT: Duration = Duration::from_secs(300);

fn service_with(limits: &[&str]) -> Service {
    let extra: Vec<OsString> = limits.iter().map(OsString::from).collect();
    Service::start_in(tempfile::tempdir().expect("temp dir"), &extra)
}

/// The host's answer to a request, as `(status, message)`.
fn refused<T>(result: Result<T, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Host { status, message }) => (status, message),
        Err(other) => panic!("not a host refusal: {other}"),
        Ok(_) => panic!("not refused"),
    }
}

/// A raw request with an optional `Authorization` header; returns status and headers.
fn raw(service: &Service, method: &str, path: &str, authorization: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{}{path}", service.url);
    let response = match (method, authorization) {
        ("GET", None) => agent.get(&url).call(),
        ("GET", Some(value)) => agent.get(&url).header("Authorization", value).call(),
        (_, None) => agent.post(&url).send(&b"junk"[..]),
        (_, Some(value)) => agent
            .post(&url)
            .header("Authorization", value)
            .send(&b"junk"[..]),
    }
    .expect("http");
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (response.status().as_u16(), challenge)
}

#[test]
fn calls_without_a_valid_token_are_refused_before_anything_happens() {
    let service = Service::start();
    let job = create_job(&service.client(), &program_wasm("chiron_mlp"), &iris()).expect("job");
    let paths = [
        ("POST", "/v1/programs".to_owned()),
        ("POST", "/v1/datasets".to_owned()),
        ("POST", "/v1/jobs".to_owned()),
        ("GET", format!("/v1/jobs/{}", job.job_id)),
        ("POST", format!("/v1/jobs/{}/start", job.job_id)),
        (
            "GET",
            format!(
                "/v1/models/{}/evidence?nonce={}",
                job.job_id,
                "0".repeat(64)
            ),
        ),
        ("GET", "/v1/no-such-endpoint".to_owned()),
    ];
    let revoked = service.add_principal("revoked", &["owner"]);
    let status = std::process::Command::new(bin_dir().join("chiron-host"))
        .arg("--data-dir")
        .arg(service.state_dir())
        .args(["principal", "revoke", "revoked"])
        .output()
        .expect("revoke runs");
    assert!(status.status.success());
    // The host reloads its principals every 5 seconds.
    std::thread::sleep(Duration::from_secs(6));
    let revoked = format!("Bearer {revoked}");
    let altered = format!("Bearer {}x", service.token);
    let headers = [
        None,
        Some("Bearer "),
        Some("Basic dGVzdGVyOnRlc3Rlcg=="),
        Some(altered.as_str()),
        Some(revoked.as_str()),
    ];
    for (method, path) in &paths {
        for header in headers {
            let (status, challenge) = raw(&service, method, path, header);
            assert_eq!(status, 401, "{method} {path} with {header:?}");
            assert!(challenge.starts_with("Bearer"), "{challenge}");
        }
    }
    // Nothing happened to the job.
    let status = service.client().job_status(&job.job_id).expect("status");
    assert_eq!(status.state, JobState::Created);
    assert_eq!(status.events, 0);
}

#[test]
fn another_principals_jobs_datasets_and_models_do_not_exist_for_a_caller() {
    let service = Service::start();
    let alice = service.client();
    let mallory = HostClient::new(&service.url)
        .with_token(&service.add_principal("mallory", &["owner", "provider"]));
    let data = iris();

    // Alice's finished job and model.
    let ticket = start_job(
        &service,
        &program_wasm("chiron_mlp"),
        &data,
        &terms(30, 120),
    )
    .expect("job starts");
    let (state, events) = wait(&service, &ticket, JOB_TIMEOUT);
    assert_eq!(state, JobState::Succeeded, "{events:?}");
    // Alice's job that waits for its start request, and her dataset.
    let waiting = create_job(&alice, &program_wasm("chiron_mlp"), &data).expect("job");

    // For Mallory each answers exactly as an id that never existed.
    let absent = "0123456789abcdef0123456789abcdef";
    let same = |theirs: (u16, String), none: (u16, String), id: &str| {
        assert_eq!(theirs.0, 404, "{}", theirs.1);
        assert_eq!(theirs.0, none.0);
        assert_eq!(theirs.1.replace(id, absent), none.1, "the texts differ");
    };
    let nonce = [7u8; 32];
    for id in [ticket.job_id.as_str(), waiting.job_id.as_str()] {
        same(
            refused(mallory.job_status(id)),
            refused(mallory.job_status(absent)),
            id,
        );
        same(
            refused(mallory.job_events(id, 0)),
            refused(mallory.job_events(absent, 0)),
            id,
        );
        same(
            refused(mallory.job_evidence(id, &nonce)),
            refused(mallory.job_evidence(absent, &nonce)),
            id,
        );
        same(
            refused(mallory.job_enclave_evidence(id, JobEnclave::Worker(0), &nonce)),
            refused(mallory.job_enclave_evidence(absent, JobEnclave::Worker(0), &nonce)),
            id,
        );
        same(
            refused(mallory.start_job(id, b"junk")),
            refused(mallory.start_job(absent, b"junk")),
            id,
        );
        same(
            refused(mallory.model_evidence(id, &nonce)),
            refused(mallory.model_evidence(absent, &nonce)),
            id,
        );
        same(
            refused(mallory.query(id, b"junk")),
            refused(mallory.query(absent, b"junk")),
            id,
        );
    }
    // Nor can Mallory train on Alice's dataset: the container's id is not enough.
    let mut container = Vec::new();
    chiron_crypto::encrypt_dataset(
        &waiting.key,
        &data.header,
        data.body.as_slice(),
        &mut container,
    )
    .expect("encrypt");
    let alices_dataset = alice.upload_dataset(&container).expect("upload").dataset_id;
    let (status, message) = refused(mallory.create_job(&waiting.program_id, &alices_dataset));
    let (_, none) = refused(mallory.create_job(&waiting.program_id, absent));
    assert_eq!(status, 404, "{message}");
    assert_eq!(message.replace(&alices_dataset, absent), none);

    // Mallory's junk changed nothing: Alice's waiting job starts and trains, and her model
    // still answers her.
    let started = owner::start_training(
        &alice,
        &service.policy(),
        &waiting.job_id,
        &waiting.program_id,
        &data.header,
        &waiting.key,
        &terms(30, 120),
    )
    .expect("Alice's job starts");
    let (state, events) = wait(&service, &started, JOB_TIMEOUT);
    assert_eq!(state, JobState::Succeeded, "{events:?}");
    assert_iris_answers(&service, &ticket, &data);
}

#[test]
fn roles_bound_what_a_principal_may_do() {
    let service = Service::start();
    let owner_only =
        HostClient::new(&service.url).with_token(&service.add_principal("owner-only", &["owner"]));
    let provider_only = HostClient::new(&service.url)
        .with_token(&service.add_principal("provider-only", &["provider"]));
    let (status, message) = refused(owner_only.register_program(&program_wasm("chiron_mlp")));
    assert_eq!(status, 403);
    assert!(
        message.contains("does not have the provider role"),
        "{message}"
    );
    let program = provider_only
        .register_program(&program_wasm("chiron_mlp"))
        .expect("a provider registers");
    // Anyone may read a program's policy: owners need it before they upload.
    owner_only.program(&program.program_id).expect("policy");
    let (status, message) = refused(provider_only.upload_dataset(b"junk"));
    assert_eq!(status, 403);
    assert!(
        message.contains("does not have the owner role"),
        "{message}"
    );
}

#[test]
fn each_limit_refuses_with_its_name_and_gives_back_what_ends() {
    let service = service_with(&[
        "--max-pending-jobs-per-principal",
        "1",
        "--max-training-enclaves-per-principal",
        "1",
        "--max-dataset-bytes",
        "2048",
        "--job-start-timeout-secs",
        "3",
    ]);
    let host = service.client();
    let data = iris();
    let program = host
        .register_program(&program_wasm("chiron_mlp"))
        .expect("program");

    // A dataset above the size limit: 413, before anything is stored.
    let mut container = Vec::new();
    let key = chiron_crypto::DataKey::generate();
    chiron_crypto::encrypt_dataset(&key, &data.header, data.body.as_slice(), &mut container)
        .expect("encrypt");
    assert!(container.len() > 2048, "{}", container.len());
    let (status, message) = refused(host.upload_dataset(&container));
    assert_eq!(status, 413, "{message}");
    assert!(message.contains("max-dataset-bytes"), "{message}");
    // Eight examples fit: their labels, then their features (the body's layout).
    let small = chiron_proto::dataset::DatasetHeader {
        train_count: 8,
        valid_count: 0,
        ..data.header.clone()
    };
    let examples = data.header.total_count() as usize;
    let features = data.header.feature_len() * 4;
    let mut body = data.body[..8 * 4].to_vec();
    body.extend_from_slice(&data.body[examples * 4..examples * 4 + 8 * features]);
    let mut container = Vec::new();
    chiron_crypto::encrypt_dataset(&key, &small, body.as_slice(), &mut container).expect("encrypt");
    let dataset = host.upload_dataset(&container).expect("fits").dataset_id;

    // One job may wait for its start request; a second is refused by name.
    let first = host
        .create_job(&program.program_id, &dataset)
        .expect("first job");
    let (status, message) = refused(host.create_job(&program.program_id, &dataset));
    assert_eq!(status, 429, "{message}");
    assert!(
        message.contains("max-pending-jobs-per-principal"),
        "{message}"
    );

    // The first job is never started: it fails at the start timeout and gives back its
    // place and its enclave before its failure shows.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = host.job_status(&first.job_id).expect("status");
        if status.state == JobState::Failed {
            assert_eq!(status.error.as_deref(), Some("not started in time"));
            break;
        }
        assert!(Instant::now() < deadline, "still {:?}", status.state);
        std::thread::sleep(Duration::from_millis(200));
    }
    let second = host
        .create_job(&program.program_id, &dataset)
        .expect("room again at once");
    // Once it runs it no longer waits, but it holds the one training enclave: a distributed
    // job of two workers (three enclaves) is refused by that limit.
    owner::start_training(
        &host,
        &service.policy(),
        &second.job_id,
        &program.program_id,
        &small,
        &key,
        &terms(100_000, 600),
    )
    .expect("starts");
    let (status, message) = refused(host.create_distributed_job(&program.program_id, &dataset, 2));
    assert_eq!(status, 429, "{message}");
    assert!(
        message.contains("max-training-enclaves-per-principal"),
        "{message}"
    );
}

#[test]
fn requests_past_the_rate_are_refused_per_principal() {
    let service = service_with(&["--requests-per-second", "0.01", "--request-burst", "5"]);
    let alice = service.client();
    let bob = HostClient::new(&service.url).with_token(&service.add_principal("bob", &["owner"]));
    let absent = "0123456789abcdef0123456789abcdef";
    for _ in 0..5 {
        let (status, _) = refused(alice.job_status(absent));
        assert_eq!(status, 404);
    }
    let (status, message) = refused(alice.job_status(absent));
    assert_eq!(status, 429, "{message}");
    assert!(message.contains("requests-per-second"), "{message}");
    // Bob has his own allowance.
    let (status, _) = refused(bob.job_status(absent));
    assert_eq!(status, 404);
}

#[test]
fn a_principals_concurrent_uploads_are_bounded() {
    let service = service_with(&["--max-uploads-per-principal", "1"]);
    let host = service.client();
    let container = encrypted(&iris());
    // An upload that has sent its header and part of its body, and waits.
    let slow = HalfSentUpload::start(&service, &container);
    std::thread::sleep(Duration::from_secs(1));
    let (status, message) = refused(host.upload_dataset(&container));
    assert_eq!(status, 429, "{message}");
    assert!(message.contains("max-uploads-per-principal"), "{message}");
    // The slow upload finishes and is stored whole; then there is room again.
    let answer = slow.finish();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    host.upload_dataset(&container).expect("room again");
}

#[test]
fn query_enclaves_make_way_within_a_principal_and_stop_when_idle() {
    let service = service_with(&[
        "--query-idle-timeout-secs",
        "2",
        "--max-query-enclaves-per-principal",
        "1",
        "--max-query-enclaves",
        "1",
    ]);
    let data = iris();
    let wasm = program_wasm("chiron_mlp");
    let first = start_job(&service, &wasm, &data, &terms(30, 120)).expect("job starts");
    let second = start_job(&service, &wasm, &data, &terms(30, 120)).expect("job starts");
    for ticket in [&first, &second] {
        let (state, events) = wait(&service, ticket, JOB_TIMEOUT);
        assert_eq!(state, JobState::Succeeded, "{events:?}");
    }
    let host = service.client();
    let inputs = iris_inputs(&data, Some(10));
    let session = QuerySession::open(&host, &service.policy(), &first).expect("attests");
    session.query(10, inputs.features.clone()).expect("answers");
    // One query enclave per principal: the second model's takes the place of the first's,
    // which was not answering...
    let other = QuerySession::open(&host, &service.policy(), &second).expect("makes way");
    other.query(10, inputs.features.clone()).expect("answers");
    assert!(
        service.stderr().contains("least recently used"),
        "{}",
        service.stderr()
    );
    // ...and the first session's next query re-attests to a new enclave for its model.
    let answer = session
        .query(10, inputs.features.clone())
        .expect("answers after re-attesting");
    assert_eq!(answer.classes.len(), 10);

    // Another principal does not push Alice's enclave out: the total is reached.
    let bob = HostClient::new(&service.url).with_token(&service.add_principal("bob", &["owner"]));
    let bobs = {
        // The program a provider registered (here Alice, who is one too).
        let program = host.register_program(&wasm).expect("registered").program_id;
        let key = chiron_crypto::DataKey::generate();
        let mut container = Vec::new();
        chiron_crypto::encrypt_dataset(&key, &data.header, data.body.as_slice(), &mut container)
            .expect("encrypt");
        let dataset = bob.upload_dataset(&container).expect("upload").dataset_id;
        let job = bob.create_job(&program, &dataset).expect("job");
        let ticket = owner::start_training(
            &bob,
            &service.policy(),
            &job.job_id,
            &program,
            &data.header,
            &key,
            &terms(30, 120),
        )
        .expect("starts");
        let deadline = Instant::now() + JOB_TIMEOUT;
        while bob.job_status(&ticket.job_id).expect("status").state != JobState::Succeeded {
            assert!(Instant::now() < deadline, "Bob's job did not succeed");
            std::thread::sleep(Duration::from_millis(100));
        }
        ticket
    };
    let (status, message) = refused(QuerySession::open(&bob, &service.policy(), &bobs));
    assert_eq!(status, 429, "{message}");
    assert!(message.contains("`max-query-enclaves`"), "{message}");
    // Once Alice's enclave has sat idle past the timeout it stops, and Bob's starts.
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        service.stderr().contains("query enclave stopped: idle"),
        "{}",
        service.stderr()
    );
    QuerySession::open(&bob, &service.policy(), &bobs)
        .expect("room again")
        .query(10, inputs.features.clone())
        .expect("answers");
}
