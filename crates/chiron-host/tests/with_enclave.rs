//! The host against the real enclave binary: a whole job, queries, and the error paths the
//! host owns (bad input, a crashed enclave, a host restart). Needs `chiron-enclave` built next
//! to `chiron-host` and the wasm programs built (`programs/`); `scripts/test.sh` does both.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use chiron_attest::Policy;
use chiron_crypto::{DataKey, ResponseKey};
use chiron_proto::api::{DatasetCreated, Events, JobCreated, JobState, JobStatus, ProgramCreated};
use chiron_proto::dataset::{DatasetHeader, DatasetKind, ElementEncoding};
use chiron_proto::evidence::{Evidence, Role};
use chiron_proto::owner::{
    AnswerPolicy, OwnerEvent, QUERY_INFO, QueryRequest, TRAIN_INFO, TrainRequest,
};
use sha2::{Digest, Sha256};

struct Host {
    child: Child,
    url: String,
    dir: Option<tempfile::TempDir>,
    agent: ureq::Agent,
    /// `Authorization` header value of the principal the tests act as.
    bearer: String,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn enclave_bin() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_chiron-host")).with_file_name("chiron-enclave")
}

fn wasm(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../programs/target/wasm32-unknown-unknown/release")
        .join(format!("{name}.wasm"));
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (build programs/ first)", path.display()))
}

impl Host {
    fn start(dir: tempfile::TempDir) -> Self {
        let token_file = dir.path().join("tester.token");
        if !token_file.exists() {
            let issued = Command::new(env!("CARGO_BIN_EXE_chiron-host"))
                .arg("--data-dir")
                .arg(dir.path())
                .args(["principal", "add", "tester", "--role", "owner"])
                .args(["--role", "provider"])
                .output()
                .expect("principal add runs");
            assert!(issued.status.success(), "principal add");
            std::fs::write(&token_file, &issued.stdout).expect("token file");
        }
        let token = std::fs::read_to_string(&token_file).expect("token");
        let mut child = Command::new(env!("CARGO_BIN_EXE_chiron-host"))
            .arg("--dangerous-simulated-tee")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0", "--enclave-bin"])
            .arg(enclave_bin())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("host starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("listening line");
        let url = line
            .trim()
            .strip_prefix("chiron-host listening on ")
            .expect("listening line format")
            .to_owned();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            child,
            url,
            dir: Some(dir),
            agent,
            bearer: format!("Bearer {}", token.trim()),
        }
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("data dir").path()
    }

    /// Kills the host (not its enclaves: they must notice on their own) and returns its data.
    fn kill(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.dir.take().expect("data dir")
    }

    fn post(&self, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let mut r = self
            .agent
            .post(format!("{}{path}", self.url))
            .header("Authorization", &self.bearer)
            .send(body)
            .expect("http");
        let status = r.status().as_u16();
        (
            status,
            r.body_mut()
                .with_config()
                .limit(1 << 30)
                .read_to_vec()
                .expect("body"),
        )
    }

    fn post_json<T: serde::Serialize>(&self, path: &str, body: &T) -> (u16, Vec<u8>) {
        let mut r = self
            .agent
            .post(format!("{}{path}", self.url))
            .header("Authorization", &self.bearer)
            .send_json(body)
            .expect("http");
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_vec().expect("body"))
    }

    fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let mut r = self
            .agent
            .get(format!("{}{path}", self.url))
            .header("Authorization", &self.bearer)
            .call()
            .expect("http");
        let status = r.status().as_u16();
        (
            status,
            r.body_mut()
                .with_config()
                .limit(1 << 30)
                .read_to_vec()
                .expect("body"),
        )
    }

    fn policy(&self) -> Policy {
        let measurement = chiron_attest::measure_file(enclave_bin()).expect("measure");
        let text =
            std::fs::read_to_string(self.dir().join("sim-platform.key.pub")).expect("pub key");
        let key: [u8; 32] = hex::decode(text.trim())
            .expect("hex")
            .try_into()
            .expect("32 bytes");
        Policy::new().dangerous_accept_simulated_platform(key, vec![measurement])
    }

    fn attest(&self, path: &str, role: Role, job_id: &str) -> [u8; 32] {
        let nonce: [u8; 32] = rand::random();
        let (status, body) = self.get(&format!("{path}?nonce={}", hex::encode(nonce)));
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let evidence = Evidence::from_bytes(&body).expect("evidence decodes");
        let context: [u8; 32] = Sha256::digest(job_id.as_bytes()).into();
        chiron_attest::verify(&self.policy(), &evidence, role, &nonce, &context)
            .expect("evidence verifies")
            .enclave_public_key()
    }
}

fn json<T: serde::de::DeserializeOwned>((status, body): (u16, Vec<u8>)) -> T {
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("json")
}

fn error((status, body): (u16, Vec<u8>)) -> (u16, String) {
    let e: chiron_proto::api::ApiError = serde_json::from_slice(&body).unwrap_or_else(|_| {
        panic!(
            "{status}: not an ApiError: {}",
            String::from_utf8_lossy(&body)
        )
    });
    (status, e.error)
}

/// Two well-separated blobs in 4 dimensions.
fn dataset() -> (DatasetHeader, Vec<u8>, Vec<f32>, Vec<u32>) {
    let n = 120u32;
    let header = DatasetHeader {
        kind: DatasetKind::Tabular,
        dims: vec![4],
        encoding: ElementEncoding::F32,
        classes: 2,
        train_count: n,
        valid_count: 0,
    };
    let labels: Vec<u32> = (0..n).map(|i| i % 2).collect();
    let features: Vec<f32> = (0..n)
        .flat_map(|i| {
            let c = if i % 2 == 0 { -1.5f32 } else { 1.5 };
            (0..4).map(move |j| c + ((i * 7 + j * 13) % 10) as f32 / 20.0 - 0.25)
        })
        .collect();
    let mut body = Vec::new();
    body.extend(labels.iter().flat_map(|l| l.to_le_bytes()));
    body.extend(features.iter().flat_map(|f| f.to_le_bytes()));
    (header, body, features, labels)
}

#[test]
fn a_job_trains_serves_queries_and_errors_are_typed() {
    let host = Host::start(tempfile::tempdir().expect("tempdir"));

    // Inputs, and input errors.
    assert_eq!(error(host.post("/v1/programs", b"not wasm")).0, 400);
    let program: ProgramCreated = json(host.post("/v1/programs", &wasm("chiron_mlp")));
    assert_eq!(error(host.post("/v1/datasets", b"junk")).0, 400);
    let (header, body, features, labels) = dataset();
    let key = DataKey::generate();
    let mut container = Vec::new();
    chiron_crypto::encrypt_dataset(&key, &header, body.as_slice(), &mut container)
        .expect("encrypt");
    assert_eq!(
        error(host.post("/v1/datasets", &container[..container.len() - 1])).0,
        400
    );
    let dataset: DatasetCreated = json(host.post("/v1/datasets", &container));
    assert_eq!(dataset.header, header);
    let unknown =
        serde_json::json!({"program_id": "0".repeat(64), "dataset_id": dataset.dataset_id});
    assert_eq!(error(host.post_json("/v1/jobs", &unknown)).0, 404);
    let bad = serde_json::json!({"program_id": "../x", "dataset_id": dataset.dataset_id});
    assert_eq!(error(host.post_json("/v1/jobs", &bad)).0, 400);
    assert_eq!(error(host.get("/v1/jobs/..%2F..%2Fetc")).0, 400);
    assert_eq!(
        error(host.get(&format!("/v1/jobs/{}", "a".repeat(32)))).0,
        404
    );

    // A job.
    let create =
        serde_json::json!({"program_id": program.program_id, "dataset_id": dataset.dataset_id});
    let job: JobCreated = json(host.post_json("/v1/jobs", &create));
    let job_id = job.job_id.clone();
    assert_eq!(
        error(host.get(&format!("/v1/jobs/{job_id}/evidence?nonce=zz"))).0,
        400
    );
    assert_eq!(
        error(host.get(&format!(
            "/v1/models/{job_id}/evidence?nonce={}",
            "0".repeat(64)
        )))
        .0,
        409
    );
    let enclave_pk = host.attest(&format!("/v1/jobs/{job_id}/evidence"), Role::Train, &job_id);
    let token = [7u8; 32];
    let request = TrainRequest {
        data_key: key.to_bytes(),
        program_digest: hex::decode(&program.program_id)
            .expect("hex")
            .try_into()
            .expect("32"),
        epochs: 20,
        time_budget_secs: 60,
        seed: [1; 32],
        answers: AnswerPolicy::Label,
        query_budget: 1000,
        query_token_digest: Sha256::digest(token).into(),
        private: None,
        distributed: None,
        keep_last_save: true,
    };
    let plaintext = postcard::to_allocvec(&request).expect("encode");
    let (sealed, event_key) =
        chiron_crypto::seal_to_enclave(&enclave_pk, TRAIN_INFO, job_id.as_bytes(), &plaintext)
            .expect("seal");
    let status: JobStatus = json(host.post(&format!("/v1/jobs/{job_id}/start"), &sealed));
    assert_eq!(status.state, JobState::Running);
    assert_eq!(
        error(host.post(&format!("/v1/jobs/{job_id}/start"), &sealed)).0,
        409
    );

    let deadline = Instant::now() + Duration::from_secs(120);
    let events = loop {
        let events: Events = json(host.get(&format!("/v1/jobs/{job_id}/events?from=0")));
        if matches!(events.state, JobState::Succeeded | JobState::Failed) {
            break events;
        }
        assert!(Instant::now() < deadline, "job did not end");
        std::thread::sleep(Duration::from_millis(200));
    };
    let key = ResponseKey::from_bytes(event_key.to_bytes());
    let decoded: Vec<OwnerEvent> = events
        .events
        .iter()
        .enumerate()
        .map(|(i, (seq, text))| {
            assert_eq!(*seq, i as u64);
            let ct = base64::engine::general_purpose::STANDARD
                .decode(text)
                .expect("base64");
            OwnerEvent::from_padded(&key.open(*seq, job_id.as_bytes(), &ct).expect("event opens"))
                .expect("event decodes")
        })
        .collect();
    assert_eq!(events.state, JobState::Succeeded, "{decoded:?}");
    assert!(
        matches!(decoded.last(), Some(OwnerEvent::Finished { .. })),
        "{decoded:?}"
    );
    let later: Events = json(host.get(&format!("/v1/jobs/{job_id}/events?from=1")));
    assert_eq!(later.events.len(), events.events.len() - 1);

    // Queries.
    assert_eq!(
        error(host.post(&format!("/v1/models/{job_id}/query"), b"x")).0,
        409
    );
    let query_pk = host.attest(
        &format!("/v1/models/{job_id}/evidence"),
        Role::Query,
        &job_id,
    );
    let query = QueryRequest {
        token,
        count: 10,
        inputs: features[..40].to_vec(),
    };
    let plaintext = postcard::to_allocvec(&query).expect("encode");
    let (sealed, answer_key) =
        chiron_crypto::seal_to_enclave(&query_pk, QUERY_INFO, job_id.as_bytes(), &plaintext)
            .expect("seal");
    let (status, answer) = host.post(&format!("/v1/models/{job_id}/query"), &sealed);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let answer = answer_key
        .open(0, b"chiron/v1 answer", &answer)
        .expect("answer opens");
    let classes: Vec<u32> = answer
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let correct = classes
        .iter()
        .zip(&labels[..10])
        .filter(|(a, b)| a == b)
        .count();
    assert!(correct >= 8, "{classes:?}");
    let mut tampered = sealed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let (status, message) = error(host.post(&format!("/v1/models/{job_id}/query"), &tampered));
    assert_eq!(status, 400, "{message}");
    // Same enclave, still serving.
    assert_eq!(
        host.attest(
            &format!("/v1/models/{job_id}/evidence"),
            Role::Query,
            &job_id
        ),
        query_pk
    );

    // A job whose enclave is killed fails with a fixed label, and the host keeps serving.
    let job2: JobCreated = json(host.post_json("/v1/jobs", &create));
    let pids = enclave_pids(host.child.id());
    assert!(!pids.is_empty());
    for pid in &pids {
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status: JobStatus = json(host.get(&format!("/v1/jobs/{}", job2.job_id)));
        if status.state == JobState::Failed {
            assert_eq!(status.error.as_deref(), Some("enclave exited"));
            break;
        }
        assert!(Instant::now() < deadline, "killed enclave not noticed");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The query enclave died too: the query fails with 502, the next evidence call starts a
    // new one with a new key.
    let (status, message) = error(host.post(&format!("/v1/models/{job_id}/query"), &sealed));
    assert_eq!(
        (status, message.as_str()),
        (502, "query enclave unavailable")
    );
    assert_ne!(
        host.attest(
            &format!("/v1/models/{job_id}/evidence"),
            Role::Query,
            &job_id
        ),
        query_pk
    );

    // Restart: records survive; unfinished jobs become Failed("host restarted").
    let job3: JobCreated = json(host.post_json("/v1/jobs", &create));
    let dir = host.kill();
    // Let the orphaned enclaves notice the host is gone.
    std::thread::sleep(Duration::from_millis(500));
    let host = Host::start(dir);
    let status: JobStatus = json(host.get(&format!("/v1/jobs/{job_id}")));
    assert_eq!(status.state, JobState::Succeeded);
    let status: JobStatus = json(host.get(&format!("/v1/jobs/{}", job3.job_id)));
    assert_eq!(
        (status.state, status.error.as_deref()),
        (JobState::Failed, Some("host restarted"))
    );
    let _ = host.attest(
        &format!("/v1/models/{job_id}/evidence"),
        Role::Query,
        &job_id,
    );
}

/// Pids of the `chiron-enclave serve` processes the host `parent` started.
fn enclave_pids(parent: u32) -> Vec<u32> {
    let bin = enclave_bin();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        // Field 4 of /proc/PID/stat is the parent pid (after the parenthesised name).
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if ppid == Some(parent)
            && args
                .first()
                .is_some_and(|a| Path::new(std::str::from_utf8(a).unwrap_or("")) == bin)
            && args.get(1) == Some(&&b"serve"[..])
        {
            pids.push(pid);
        }
    }
    pids
}
