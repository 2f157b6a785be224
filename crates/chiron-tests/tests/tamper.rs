//! A platform that flips bits in what it stores or relays is caught, and the owner loses
//! nothing: the same data and model work again once the platform stops tampering.
#![allow(clippy::expect_used)] // test helpers: a failed step is a failed test

use std::path::Path;
use std::time::Duration;

use chiron_client::ClientError;
use chiron_crypto::DataKey;
use chiron_proto::api::JobState;
use chiron_proto::evidence::{Evidence, Role};
use chiron_proto::owner::{QUERY_INFO, QueryRequest};
use chiron_tests::*;

fn flip_bit(path: &Path, at: usize) -> Vec<u8> {
    let original = std::fs::read(path).expect("stored object exists");
    let mut tampered = original.clone();
    let at = at.min(tampered.len() - 1);
    tampered[at] ^= 0x10;
    std::fs::write(path, &tampered).expect("tamper");
    original
}

#[test]
fn a_flipped_bit_in_the_stored_dataset_fails_the_job_and_a_retry_succeeds() {
    let service = Service::start();
    let host = service.client();
    let data = iris();
    let program = host
        .register_program(&program_wasm("chiron_mlp"))
        .expect("register");
    let key = DataKey::generate();
    let mut container = Vec::new();
    chiron_crypto::encrypt_dataset(&key, &data.header, data.body.as_slice(), &mut container)
        .expect("encrypt");
    let dataset = host.upload_dataset(&container).expect("upload");
    let path = service.object("datasets", &dataset.dataset_id, "bin");
    let original = flip_bit(&path, container.len() / 2);

    let job = host
        .create_job(&program.program_id, &dataset.dataset_id)
        .expect("job");
    let ticket = chiron_client::owner::start_training(
        &host,
        &service.policy(),
        &job.job_id,
        &program.program_id,
        &data.header,
        &key,
        &terms(5, 60),
    )
    .expect("start");
    let (state, events) = wait(&service, &ticket, Duration::from_secs(60));
    assert_eq!(state, JobState::Failed);
    let detail = failure(&events).expect("the owner is told why");
    assert!(detail.contains("failed authentication"), "{detail}");
    let status = host.job_status(&job.job_id).expect("status");
    assert_eq!(
        status.error.as_deref(),
        Some("dataset failed authentication")
    );

    // The platform stops tampering: the same upload and key train fine.
    std::fs::write(&path, original).expect("restore");
    let job = host
        .create_job(&program.program_id, &dataset.dataset_id)
        .expect("job");
    let ticket = chiron_client::owner::start_training(
        &host,
        &service.policy(),
        &job.job_id,
        &program.program_id,
        &data.header,
        &key,
        &terms(5, 60),
    )
    .expect("start");
    let (state, events) = wait(&service, &ticket, Duration::from_secs(120));
    assert_eq!(state, JobState::Succeeded, "{events:?}");
}

#[test]
fn a_flipped_bit_in_the_sealed_model_or_a_query_is_detected() {
    let service = Service::start();
    let data = iris();
    let ticket = start_job(
        &service,
        &program_wasm("chiron_mlp"),
        &data,
        &terms(40, 120),
    )
    .expect("start");
    let (state, events) = wait(&service, &ticket, Duration::from_secs(120));
    assert_eq!(state, JobState::Succeeded, "{events:?}");

    let path = service.object("models", &ticket.job_id, "sealed");
    let original = flip_bit(&path, 100);
    let host = service.client();
    let err = chiron_client::owner::QuerySession::open(&host, &service.policy(), &ticket)
        .err()
        .expect("a tampered model must not load");
    assert!(
        matches!(&err, ClientError::Host { message, .. } if message.contains("sealed model failed authentication")),
        "{err}"
    );

    std::fs::write(&path, original).expect("restore");
    let test = iris_inputs(&data, Some(10));
    let accuracy = query_accuracy(&service, &ticket, &test.features, &test.labels, 10)
        .expect("model loads again");
    assert!(accuracy > 0.5);

    // A query whose ciphertext is altered in transit is refused, and the service goes on.
    let nonce = [5; 32];
    let evidence = Evidence::from_bytes(
        &host
            .model_evidence(&ticket.job_id, &nonce)
            .expect("evidence"),
    )
    .expect("decodes");
    let enclave = chiron_attest::verify(
        &service.policy(),
        &evidence,
        Role::Query,
        &nonce,
        &chiron_client::owner::context_of(&ticket.job_id),
    )
    .expect("verifies");
    let request = QueryRequest {
        token: ticket.query_token,
        count: 1,
        inputs: test.features[..4].to_vec(),
    };
    let plaintext = postcard::to_allocvec(&request).expect("encodes");
    let (mut sealed, _) = chiron_crypto::seal_to_enclave(
        &enclave.enclave_public_key(),
        QUERY_INFO,
        ticket.job_id.as_bytes(),
        &plaintext,
    )
    .expect("seal");
    let last = sealed.len() - 1;
    sealed[last] ^= 1;
    let err = host
        .query(&ticket.job_id, &sealed)
        .expect_err("tampered query");
    assert!(
        err.to_string().contains("query failed authentication"),
        "{err}"
    );
    let accuracy =
        query_accuracy(&service, &ticket, &test.features, &test.labels, 10).expect("still serving");
    assert!(accuracy > 0.5);
}
