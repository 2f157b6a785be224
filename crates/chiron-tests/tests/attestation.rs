//! No secret leaves the owner before the enclave's evidence verifies.
#![allow(clippy::expect_used)] // test helpers: a failed step is a failed test

use std::time::Duration;

use chiron_attest::{AttestationError, Policy};
use chiron_client::ClientError;
use chiron_client::owner;
use chiron_crypto::DataKey;
use chiron_proto::api::JobState;
use chiron_tests::*;

#[test]
fn a_wrong_measurement_is_refused_before_the_key_is_sent() {
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
    let job = host
        .create_job(&program.program_id, &dataset.dataset_id)
        .expect("job");

    // The owner expects another runtime build.
    let policy =
        Policy::new().dangerous_accept_simulated_platform(service.platform_key(), vec![[0x42; 32]]);
    let err = owner::start_training(
        &host,
        &policy,
        &job.job_id,
        &program.program_id,
        &data.header,
        &key,
        &terms(1, 60),
    )
    .expect_err("must refuse");
    assert!(
        matches!(
            err,
            ClientError::Attestation(AttestationError::WrongMeasurement { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("measurement"), "{err}");
    // Nothing was sent: the job is still waiting for its key.
    let status = host.job_status(&job.job_id).expect("status");
    assert_eq!(status.state, JobState::Created);

    // An untrusted platform key is refused too.
    let policy = Policy::new().dangerous_accept_simulated_platform(
        [7; 32],
        vec![chiron_attest::measure_file(bin_dir().join("chiron-enclave")).expect("measure")],
    );
    let err = owner::attest_training(&host, &policy, &job.job_id).expect_err("must refuse");
    assert!(
        matches!(
            err,
            ClientError::Attestation(AttestationError::UntrustedPlatform { .. })
        ),
        "{err}"
    );

    // The default policy accepts no simulated platform at all, whatever its key.
    let err = owner::attest_training(&host, &Policy::new(), &job.job_id).expect_err("must refuse");
    assert!(
        matches!(
            err,
            ClientError::Attestation(AttestationError::UntrustedPlatform { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("insecure"), "{err}");
    // Nor does a policy that accepts only hardware.
    let hardware_only = Policy::new().accept_snp(chiron_attest::policy::SnpReference {
        measurement: [0; 48],
    });
    let err = owner::attest_training(&host, &hardware_only, &job.job_id).expect_err("refuse");
    assert!(
        matches!(
            err,
            ClientError::Attestation(AttestationError::UntrustedPlatform { .. })
        ),
        "{err}"
    );

    // The right policy then works on the same job: nothing was lost.
    let ticket = owner::start_training(
        &host,
        &service.policy(),
        &job.job_id,
        &program.program_id,
        &data.header,
        &key,
        &terms(5, 60),
    )
    .expect("correct policy");
    let (state, events) = wait(&service, &ticket, Duration::from_secs(120));
    assert_eq!(state, JobState::Succeeded, "{events:?}");
}

#[test]
fn evidence_from_another_nonce_is_stale() {
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
    let job = host
        .create_job(&program.program_id, &dataset.dataset_id)
        .expect("job");
    // A host replaying evidence it obtained for an earlier nonce.
    let old = host.job_evidence(&job.job_id, &[1; 32]).expect("evidence");
    let evidence = chiron_proto::evidence::Evidence::from_bytes(&old).expect("decodes");
    let err = chiron_attest::verify(
        &service.policy(),
        &evidence,
        chiron_proto::evidence::Role::Train,
        &[2; 32],
        &owner::context_of(&job.job_id),
    )
    .expect_err("stale");
    assert!(matches!(err, AttestationError::StaleNonce), "{err}");
}

/// The owner's CLI accepts nothing by default: without reference values it refuses before it
/// reads the data or contacts the host, and bad values are named.
#[test]
fn the_cli_refuses_to_train_without_reference_values() {
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(bin_dir().join("chiron"))
            .args([
                "train",
                "--host",
                "http://127.0.0.1:9",
                "--program",
                "p",
                "--csv",
            ])
            .arg(iris_csv())
            .args(["--label-column", "species"])
            .args(extra)
            .output()
            .expect("chiron runs");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = run(&[]);
    assert!(stderr.contains("no enclave would be accepted"), "{stderr}");
    let stderr = run(&["--sgx-mrenclave", "12ab"]);
    assert!(stderr.contains("not 64 hex digits"), "{stderr}");
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("owner.policy");
    std::fs::write(&policy, "# pins\nsnp-measurement 00\n").expect("write");
    let stderr = run(&["--policy", policy.to_str().expect("utf-8")]);
    assert!(stderr.contains("policy line 2"), "{stderr}");
}

/// The operator's endorsements (fetched from the vendor's service, e.g. DCAP collateral from
/// the platform's PCCS) reach the owner inside the evidence: the host attaches them to
/// evidence that has none, and verification still decides on the statement alone.
#[test]
fn the_host_attaches_the_operators_endorsements_to_evidence() {
    let endorsements = b"vendor-signed collateral, as fetched by the operator".to_vec();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("collateral.json");
    std::fs::write(&file, &endorsements).expect("write");
    let argument = format!("sim={}", file.display());
    let service = Service::start_in(
        tempfile::tempdir().expect("tempdir"),
        &["--endorsements".into(), argument.into()],
    );
    let host = service.client();
    let job = create_job(&host, &program_wasm("chiron_mlp"), &iris()).expect("job");
    let raw = host.job_evidence(&job.job_id, &[4; 32]).expect("evidence");
    let evidence = chiron_proto::evidence::Evidence::from_bytes(&raw).expect("decodes");
    assert_eq!(evidence.endorsements, endorsements);
    chiron_attest::verify(
        &service.policy(),
        &evidence,
        chiron_proto::evidence::Role::Train,
        &[4; 32],
        &owner::context_of(&job.job_id),
    )
    .expect("verifies");
}
