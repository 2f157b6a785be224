//! The harness behind Chiron's end-to-end tests: it starts a real host process (which starts
//! real enclave processes) on loopback, plays the owner through the client library, and
//! collects everything the platform can see so tests can search it for the owner's secrets.
// Test support only: a failed set-up step is a failed test, and panicking with the step's
// name is the clearest report.
#![allow(clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chiron_attest::Policy;
use chiron_client::HostClient;
use chiron_client::convert::{self, ConvertOptions, PlainDataset};
use chiron_client::owner::{self, EventCursor, JobTicket, TrainingTerms};
use chiron_crypto::DataKey;
use chiron_proto::api::JobState;
use chiron_proto::evidence::{Evidence, Role};
use chiron_proto::owner::{AnswerPolicy, OwnerEvent, Pace, Rounds};
use chiron_proto::wire::{EnclaveFrame, HostFrame, LISTENING_PREFIX, read_frame, write_frame};

pub mod transcript;

/// The host's tracing target for its frame log (one line per frame: direction, kind, size),
/// which every [`Service`] turns on.
pub const FRAME_LOG: &str = "chiron_host::frames";

/// The Fashion-MNIST files installed by the set-up (Debian package `dataset-fashion-mnist`).
pub const FASHION_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST training images and labels.
pub fn fashion_train() -> (PathBuf, PathBuf) {
    let dir = Path::new(FASHION_DIR);
    (
        dir.join("train-images-idx3-ubyte.gz"),
        dir.join("train-labels-idx1-ubyte.gz"),
    )
}

/// Fashion-MNIST test images and labels.
pub fn fashion_test() -> (PathBuf, PathBuf) {
    let dir = Path::new(FASHION_DIR);
    (
        dir.join("t10k-images-idx3-ubyte.gz"),
        dir.join("t10k-labels-idx1-ubyte.gz"),
    )
}

/// The first `limit` Fashion-MNIST training examples, 10% held out for validation.
pub fn fashion_subset(limit: usize) -> PlainDataset {
    let (images, labels) = fashion_train();
    let opts = ConvertOptions {
        valid_fraction: 0.1,
        limit: Some(limit),
        shuffle_seed: Some(0),
    };
    convert::from_idx(&images, &labels, &opts).expect("Fashion-MNIST is installed by the set-up")
}

/// The Iris table shipped with the client's tests (real data, public domain).
pub fn iris_csv() -> PathBuf {
    workspace_root().join("crates/chiron-client/tests/data/iris.csv")
}

/// The Iris dataset, 20% held out.
pub fn iris() -> PlainDataset {
    let opts = ConvertOptions {
        valid_fraction: 0.2,
        limit: None,
        shuffle_seed: Some(1),
    };
    convert::from_csv(&iris_csv(), "species", &opts).expect("iris.csv converts")
}

/// Iris's examples as query inputs for a model trained on `data` (its classes and
/// standardisation), the first `limit` of them or all.
pub fn iris_inputs(data: &PlainDataset, limit: Option<usize>) -> convert::LabelledInputs {
    convert::load_csv_inputs(
        &iris_csv(),
        "species",
        &data.class_names,
        data.standardizer.as_ref(),
        limit,
    )
    .expect("iris inputs convert")
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where cargo put this workspace's binaries for the running profile.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf()
}

/// The compiled wasm of a program in `programs/` (`chiron_cnn`, `hostile_spin`, ...),
/// building the programs workspace once per test process.
pub fn program_wasm(name: &str) -> Vec<u8> {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let manifest = workspace_root().join("programs/Cargo.toml");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-unknown-unknown",
                "--manifest-path",
            ])
            .arg(&manifest)
            .env_remove("RUSTFLAGS")
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the wasm programs failed");
        workspace_root().join("programs/target/wasm32-unknown-unknown/release")
    });
    let path = dir.join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs `chiron-host principal add` on the host state in `state_dir`; returns the token.
pub fn add_principal(state_dir: &Path, name: &str, roles: &[&str]) -> String {
    add_principal_with(state_dir, &[], name, roles)
}

/// [`add_principal`] with the host's other arguments (`--store URL` and its options name
/// the store the principals are kept in).
pub fn add_principal_with(
    state_dir: &Path,
    host_args: &[std::ffi::OsString],
    name: &str,
    roles: &[&str],
) -> String {
    let mut command = Command::new(bin_dir().join("chiron-host"));
    command
        .arg("--data-dir")
        .arg(state_dir)
        .args(host_args)
        .args(["principal", "add", name]);
    for role in roles {
        command.args(["--role", role]);
    }
    let output = command
        .stdin(Stdio::null())
        .output()
        .expect("chiron-host runs (build the workspace first)");
    assert!(
        output.status.success(),
        "principal add failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("utf-8 token")
        .trim()
        .to_owned()
}

/// `data` encrypted under a fresh key, as the owner's client uploads it.
pub fn encrypted(data: &PlainDataset) -> Vec<u8> {
    encrypted_under(&DataKey::generate(), data)
}

/// `data` encrypted under `key`, as the owner's client uploads it.
pub fn encrypted_under(key: &DataKey, data: &PlainDataset) -> Vec<u8> {
    let mut container = Vec::new();
    chiron_crypto::encrypt_dataset(key, &data.header, data.body.as_slice(), &mut container)
        .expect("encrypt");
    container
}

/// A one-request dataset upload (`POST /v1/datasets`) that sent its headers and the first
/// half of its body, and waits to send the rest.
pub struct HalfSentUpload {
    stream: std::net::TcpStream,
    rest: Vec<u8>,
}

impl HalfSentUpload {
    /// Starts uploading `container` to `service` as its test principal.
    pub fn start(service: &Service, container: &[u8]) -> Self {
        use std::io::Write;
        let address = service.url.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).expect("connect");
        write!(
            stream,
            "POST /v1/datasets HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
             Content-Length: {}\r\n\r\n",
            service.token,
            container.len()
        )
        .expect("headers");
        let half = container.len() / 2;
        stream.write_all(&container[..half]).expect("half the body");
        stream.flush().expect("flush");
        Self {
            stream,
            rest: container[half..].to_vec(),
        }
    }

    /// Sends the rest of the body; returns the host's whole answer (status line, headers,
    /// body) once it has closed the connection or sent the dataset's id.
    pub fn finish(mut self) -> String {
        use std::io::{Read, Write};
        self.stream
            .write_all(&self.rest)
            .expect("the rest of the body");
        self.stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut answer = Vec::new();
        let mut buffer = [0u8; 4096];
        while !String::from_utf8_lossy(&answer).contains("dataset_id") {
            match self.stream.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    }
}

/// A running host (and the enclaves it starts), with its own data directory and logs.
pub struct Service {
    child: Child,
    /// The host's base URL.
    pub url: String,
    /// The host's data directory (object store, platform key).
    pub data_dir: tempfile::TempDir,
    /// The API token of the principal `tester` (an owner and a provider), which
    /// [`Service::client`] sends.
    pub token: String,
    /// The arguments the host was started with beyond the defaults.
    host_args: Vec<std::ffi::OsString>,
    stdout_log: PathBuf,
    stderr_log: PathBuf,
}

impl Service {
    /// Starts `chiron-host` on a free loopback port.
    pub fn start() -> Self {
        Self::start_in(tempfile::tempdir().expect("temp dir"), &[])
    }

    /// Starts `chiron-host` with its state in `data_dir/state` (which may hold an earlier
    /// host's state) and `extra` arguments.
    pub fn start_in(data_dir: tempfile::TempDir, extra: &[std::ffi::OsString]) -> Self {
        let stdout_log = data_dir.path().join("host.out");
        let stderr_log = data_dir.path().join("host.err");
        let bins = bin_dir();
        // The principal every test client acts as, issued once per data directory.
        let token_file = data_dir.path().join("tester.token");
        let token = match std::fs::read_to_string(&token_file) {
            Ok(token) => token.trim().to_owned(),
            Err(_) => {
                let token = add_principal_with(
                    &data_dir.path().join("state"),
                    extra,
                    "tester",
                    &["owner", "provider"],
                );
                std::fs::write(&token_file, &token).expect("token file");
                token
            }
        };
        let mut child = Command::new(bins.join("chiron-host"))
            .arg("--dangerous-simulated-tee")
            .arg("--data-dir")
            .arg(data_dir.path().join("state"))
            .args(["--listen", "127.0.0.1:0", "--enclave-bin"])
            .arg(bins.join("chiron-enclave"))
            .args(extra)
            .env("RUST_LOG", format!("info,{FRAME_LOG}=debug"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_log).expect("log file"))
            .spawn()
            .expect("chiron-host starts (build the workspace first)");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout);
        let mut first = String::new();
        lines
            .read_line(&mut first)
            .expect("host prints its address");
        let url = first
            .trim()
            .rsplit(' ')
            .next()
            .expect("address on the first line")
            .to_owned();
        let mut log = std::fs::File::create(&stdout_log).expect("log file");
        std::io::Write::write_all(&mut log, first.as_bytes()).expect("log");
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut lines, &mut log);
        });
        Self {
            child,
            url,
            data_dir,
            token,
            host_args: extra.to_vec(),
            stdout_log,
            stderr_log,
        }
    }

    /// A client for this host, acting as the principal `tester`.
    pub fn client(&self) -> HostClient {
        HostClient::new(&self.url).with_token(&self.token)
    }

    /// Issues another principal a token (`chiron-host principal add`, as an operator would
    /// while the host runs); `roles` are `owner` and `provider`.
    pub fn add_principal(&self, name: &str, roles: &[&str]) -> String {
        add_principal_with(&self.state_dir(), &self.host_args, name, roles)
    }

    /// The state directory the host writes.
    pub fn state_dir(&self) -> PathBuf {
        self.data_dir.path().join("state")
    }

    /// Where the host stores object `id` of `kind` (`datasets`, `models`, `programs`) with
    /// extension `ext`.
    pub fn object(&self, kind: &str, id: &str, ext: &str) -> PathBuf {
        self.state_dir()
            .join("objects")
            .join(kind)
            .join(format!("{id}.{ext}"))
    }

    /// The stored bytes of dataset `id`: its object, or the upload parts its manifest lists
    /// (`datasets/<id>.parts.json`), in order.
    pub fn stored_dataset(&self, id: &str) -> Vec<u8> {
        let whole = self.object("datasets", id, "bin");
        if whole.exists() {
            return std::fs::read(whole).expect("dataset");
        }
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(self.object("datasets", id, "parts.json")).expect("manifest"),
        )
        .expect("json");
        let mut out = Vec::new();
        for part in manifest["parts"].as_array().expect("parts") {
            let path = part[0].as_str().expect("path");
            let bytes = std::fs::read(self.state_dir().join("objects").join(path)).expect("part");
            assert_eq!(bytes.len() as u64, part[1].as_u64().expect("length"));
            out.extend_from_slice(&bytes);
        }
        out
    }

    /// The owner's policy for this service: the enclave binary's measurement and the
    /// simulated platform's key.
    pub fn policy(&self) -> Policy {
        let measurement =
            chiron_attest::measure_file(bin_dir().join("chiron-enclave")).expect("measure");
        Policy::new().dangerous_accept_simulated_platform(self.platform_key(), vec![measurement])
    }

    /// [`Service::policy`] as a policy file: what the enclaves of a distributed job hold
    /// each other to.
    pub fn policy_spec(&self) -> String {
        let measurement =
            chiron_attest::measure_file(bin_dir().join("chiron-enclave")).expect("measure");
        format!(
            "dangerous-simulated-platform {} {}\n",
            hex::encode(self.platform_key()),
            hex::encode(measurement)
        )
    }

    /// The simulated platform's public key.
    pub fn platform_key(&self) -> [u8; 32] {
        let text = std::fs::read_to_string(self.state_dir().join("sim-platform.key.pub"))
            .expect("host created the platform key");
        hex::decode(text.trim())
            .expect("hex")
            .try_into()
            .expect("32 bytes")
    }

    /// Every file the host wrote, except the simulated platform's key (which stands in for
    /// the TEE hardware's secrets), and the host's logs: what the platform can see.
    pub fn platform_view(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![self.state_dir()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.file_name().is_some_and(|n| n != "sim-platform.key") {
                    let bytes = std::fs::read(&path).unwrap_or_default();
                    out.push((path.display().to_string(), bytes));
                }
            }
        }
        for log in [&self.stdout_log, &self.stderr_log] {
            out.push((
                log.display().to_string(),
                std::fs::read(log).unwrap_or_default(),
            ));
        }
        out
    }

    /// The host process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the host the way an operator would (SIGTERM: it stops its enclaves and exits),
    /// killing it if it has not exited within ten seconds.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the host with SIGKILL, as a crash would: nothing of its own runs after.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends the host SIGTERM, as an operator stopping it would, without waiting.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Waits up to `timeout` for the host to exit; whether it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.is_running() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// A new host on this one's state (after [`Service::kill`] or [`Service::stop`]), with
    /// `extra` arguments.
    pub fn restart(mut self, extra: &[std::ffi::OsString]) -> Self {
        self.kill();
        let data_dir =
            std::mem::replace(&mut self.data_dir, tempfile::tempdir().expect("temp dir"));
        drop(self);
        Self::start_in(data_dir, extra)
    }

    /// The host's standard output so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_log).unwrap_or_default()
    }

    /// The host's standard error so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// Whether the host process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Default terms for tests: live, label answers, and the query budget every program allows
/// (the default policy of a program without a manifest; `chiron_mlp` and `chiron_cnn`
/// declare more).
pub fn terms(epochs: u32, time_budget_secs: u32) -> TrainingTerms {
    TrainingTerms {
        epochs,
        time_budget_secs,
        answers: AnswerPolicy::Label,
        query_budget: chiron_proto::manifest::DEFAULT_MAX_QUERIES,
        seed: None,
        private: None,
        keep_last_save: true,
    }
}

/// A job created but not started: its id and program, and the data key its dataset was
/// encrypted under.
pub struct CreatedJob {
    /// The job's id.
    pub job_id: String,
    /// The program's id.
    pub program_id: String,
    /// The dataset's key (still the owner's alone).
    pub key: DataKey,
}

/// Registers `wasm`, encrypts `data` under a fresh key, uploads it and creates a job on `host`.
pub fn create_job(
    host: &HostClient,
    wasm: &[u8],
    data: &PlainDataset,
) -> Result<CreatedJob, chiron_client::ClientError> {
    let program = host.register_program(wasm)?;
    let key = DataKey::generate();
    let mut container = Vec::new();
    chiron_crypto::encrypt_dataset(&key, &data.header, data.body.as_slice(), &mut container)?;
    let dataset = host.upload_dataset(&container)?;
    let job = host.create_job(&program.program_id, &dataset.dataset_id)?;
    Ok(CreatedJob {
        job_id: job.job_id,
        program_id: program.program_id,
        key,
    })
}

/// Registers `wasm`, encrypts and uploads `data`, creates a job, attests and starts it.
pub fn start_job(
    service: &Service,
    wasm: &[u8],
    data: &PlainDataset,
    terms: &TrainingTerms,
) -> Result<JobTicket, chiron_client::ClientError> {
    let host = service.client();
    let job = create_job(&host, wasm, data)?;
    owner::start_training(
        &host,
        &service.policy(),
        &job.job_id,
        &job.program_id,
        &data.header,
        &job.key,
        terms,
    )
}

/// Rounds (a private job: ticks) between the parameter server's checkpoints in the tests'
/// distributed jobs.
pub const DISTRIBUTED_CHECKPOINT_EVERY: u32 = 20;

/// The upload part size of the tests' distributed jobs' datasets.
pub const DISTRIBUTED_UPLOAD_PART: usize = 64 << 10;

/// The exchange tick of the tests' private distributed jobs.
pub const DISTRIBUTED_TICK_MS: u32 = 25;

/// [`start_job`] for a distributed job of `workers` training enclaves and a parameter
/// server, exchanging messages of `message_kib` (paced by [`DISTRIBUTED_TICK_MS`] ticks
/// when the job is private).
pub fn start_distributed_job(
    service: &Service,
    wasm: &[u8],
    data: &PlainDataset,
    terms: &TrainingTerms,
    workers: u32,
    message_kib: u32,
) -> Result<JobTicket, chiron_client::ClientError> {
    start_distributed_job_with(
        service,
        wasm,
        data,
        terms,
        workers,
        message_kib,
        ExchangeOptions::default(),
    )
}

/// How a test's distributed job exchanges: how its server combines steps, and how often it
/// checkpoints.
#[derive(Clone, Copy, Debug)]
pub struct ExchangeOptions {
    /// Synchronous, or asynchronous with a bound on staleness.
    pub rounds: Rounds,
    /// Rounds (a private job: ticks) between checkpoints.
    pub checkpoint_every: u32,
}

impl Default for ExchangeOptions {
    fn default() -> Self {
        Self {
            rounds: Rounds::Synchronous,
            checkpoint_every: DISTRIBUTED_CHECKPOINT_EVERY,
        }
    }
}

/// Trains the example MLP on the iris table as a live distributed job of `workers`
/// (60 epochs, 64 KiB messages), checks that it succeeds and that its model answers the
/// table's queries above 85% accuracy; returns its ticket.
pub fn iris_trains_distributed(service: &Service, workers: u32) -> JobTicket {
    let data = iris();
    let ticket = start_distributed_job(
        service,
        &program_wasm("chiron_mlp"),
        &data,
        &terms(60, 120),
        workers,
        64,
    )
    .expect("job starts");
    let (state, events) = wait(service, &ticket, Duration::from_secs(300));
    assert_eq!(state, JobState::Succeeded, "{events:?}");
    // Rank 0's exchange totals come under the last epoch the program reported.
    let metric = |wanted: &str| {
        events.iter().rev().find_map(|e| match e {
            OwnerEvent::Metric { name, epoch, value } if name == wanted => Some((*epoch, *value)),
            _ => None,
        })
    };
    let (last_epoch, _) = metric("train_loss").expect("the program reports its loss");
    let (epoch, rounds) = metric("exchange_rounds").expect("rank 0 reports its rounds");
    assert_eq!(epoch, last_epoch, "{events:?}");
    assert!(rounds >= 60.0, "{rounds} rounds for 60 epochs");
    assert_iris_answers(service, &ticket, &data);
    ticket
}

/// [`start_distributed_job`] with the exchange `options` say.
pub fn start_distributed_job_with(
    service: &Service,
    wasm: &[u8],
    data: &PlainDataset,
    terms: &TrainingTerms,
    workers: u32,
    message_kib: u32,
    options: ExchangeOptions,
) -> Result<JobTicket, chiron_client::ClientError> {
    let host = service.client();
    let program = host.register_program(wasm)?;
    let key = DataKey::generate();
    let mut container = Vec::new();
    chiron_crypto::encrypt_dataset(&key, &data.header, data.body.as_slice(), &mut container)?;
    // In parts smaller than a worker's shard, so that each worker's ranges span several of
    // the parts the host keeps the dataset in.
    let dataset = host
        .clone()
        .with_upload_part(DISTRIBUTED_UPLOAD_PART)
        .upload_dataset(&container)?;
    let job = host.create_distributed_job(&program.program_id, &dataset.dataset_id, workers)?;
    let distribution = owner::Distribution {
        exchange: owner::ExchangeTerms {
            workers,
            message_kib,
            // A private job's exchange is paced: one message each way every tick.
            pace: terms
                .private
                .map(|_| Pace::for_budget(terms.time_budget_secs, DISTRIBUTED_TICK_MS)),
            rounds: options.rounds,
        },
        peer_policy: service.policy_spec(),
        checkpoint_every: options.checkpoint_every,
    };
    owner::start_distributed_training(
        &host,
        &service.policy(),
        &job.job_id,
        &program.program_id,
        &data.header,
        &key,
        terms,
        &distribution,
    )
}

/// Follows a job's events until it ends (or `timeout`); returns its final state and events.
pub fn wait(
    service: &Service,
    ticket: &JobTicket,
    timeout: Duration,
) -> (JobState, Vec<OwnerEvent>) {
    let host = service.client();
    let deadline = Instant::now() + timeout;
    let mut all = Vec::new();
    let mut cursor = EventCursor::default();
    loop {
        let (state, events) = ticket
            .events(&host, &mut cursor)
            .expect("events authenticate");
        all.extend(events);
        let ended = all
            .iter()
            .any(|e| matches!(e, OwnerEvent::Finished { .. } | OwnerEvent::Failed { .. }));
        assert!(
            ended || state != JobState::Succeeded,
            "the host reports success but withheld the final events: {all:?}"
        );
        if matches!(state, JobState::Failed) || (ended && state == JobState::Succeeded) {
            // Collect anything that arrived with the final state.
            let (_, rest) = ticket
                .events(&host, &mut cursor)
                .expect("events authenticate");
            all.extend(rest);
            return (state, all);
        }
        assert!(
            Instant::now() < deadline,
            "job did not end in {timeout:?}: {all:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The failure text the owner received, if any.
pub fn failure(events: &[OwnerEvent]) -> Option<&str> {
    events.iter().find_map(|e| match e {
        OwnerEvent::Failed { detail } => Some(detail.as_str()),
        _ => None,
    })
}

/// The last value of a metric the program reported.
pub fn last_metric(events: &[OwnerEvent], name: &str) -> Option<f32> {
    events.iter().rev().find_map(|e| match e {
        OwnerEvent::Metric { name: n, value, .. } if n == name => Some(*value),
        _ => None,
    })
}

/// Queries `ticket`'s model with the iris table `data` was made from and checks that it
/// answers above 85% accuracy.
pub fn assert_iris_answers(service: &Service, ticket: &JobTicket, data: &PlainDataset) {
    let test = iris_inputs(data, None);
    let accuracy =
        query_accuracy(service, ticket, &test.features, &test.labels, 50).expect("queries");
    assert!(accuracy > 0.85, "accuracy {accuracy}");
}

/// Accuracy of the model behind `ticket` on labelled inputs, through black-box queries.
pub fn query_accuracy(
    service: &Service,
    ticket: &JobTicket,
    features: &[f32],
    labels: &[u32],
    batch: usize,
) -> Result<f64, chiron_client::ClientError> {
    let host = service.client();
    let session = owner::QuerySession::open(&host, &service.policy(), ticket)?;
    let feature_len = ticket.header.feature_len();
    let mut correct = 0usize;
    for start in (0..labels.len()).step_by(batch) {
        let end = (start + batch).min(labels.len());
        let answer = session.query(
            end - start,
            features[start * feature_len..end * feature_len].to_vec(),
        )?;
        let width = ticket.answers.width();
        for (row, &label) in answer.classes.chunks_exact(width).zip(&labels[start..end]) {
            correct += usize::from(row[0] == label);
        }
    }
    Ok(correct as f64 / labels.len().max(1) as f64)
}

/// How long a test waits for a raw enclave's frame.
pub const RAW_ENCLAVE_TIMEOUT: Duration = Duration::from_secs(60);

/// An enclave process the test talks to directly, as a host that does not follow the
/// protocol would.
pub struct RawEnclave {
    child: Child,
    stream: TcpStream,
}

/// What a training enclave sent after a start frame.
pub struct TrainingFrames {
    /// Events in arrival order: sequence number and ciphertext.
    pub events: Vec<(u64, Vec<u8>)>,
    /// The frame that ended the job.
    pub end: EnclaveFrame,
}

impl RawEnclave {
    /// Starts `chiron-enclave serve --role <role>` on `service`'s simulated platform and
    /// connects to it as its host.
    pub fn spawn(service: &Service, role: &str) -> Self {
        let mut child = Command::new(bin_dir().join("chiron-enclave"))
            .args(["serve", "--role", role, "--dangerous-simulated-platform"])
            .arg(service.state_dir().join("sim-platform.key"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chiron-enclave starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let port = loop {
            let mut line = String::new();
            assert!(stdout.read_line(&mut line).expect("read") > 0, "no port");
            if let Some(port) = line.strip_prefix(LISTENING_PREFIX) {
                break port.trim().parse::<u16>().expect("port");
            }
        };
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(RAW_ENCLAVE_TIMEOUT))
            .expect("timeout");
        Self { child, stream }
    }

    /// Sends one frame.
    pub fn send(&mut self, frame: &HostFrame) {
        write_frame(&mut self.stream, frame).expect("send");
    }

    /// Receives one frame.
    pub fn recv(&mut self) -> EnclaveFrame {
        read_frame(&mut self.stream).expect("the enclave answers")
    }

    /// Verified evidence for `job_id`: the key the owner seals to.
    pub fn attest(&mut self, service: &Service, role: Role, job_id: &str) -> [u8; 32] {
        let nonce = [7; 32];
        self.send(&HostFrame::GetEvidence {
            nonce,
            context: owner::context_of(job_id),
        });
        let EnclaveFrame::Evidence(bytes) = self.recv() else {
            panic!("no evidence");
        };
        let evidence = Evidence::from_bytes(&bytes).expect("decodes");
        chiron_attest::verify(
            &service.policy(),
            &evidence,
            role,
            &nonce,
            &owner::context_of(job_id),
        )
        .expect("verifies")
        .enclave_public_key()
    }

    /// Starts a training job and collects its frames until the one that ends it.
    pub fn train(
        &mut self,
        job_id: &str,
        sealed_request: &[u8],
        program: &[u8],
        container: &[u8],
    ) -> TrainingFrames {
        self.send(&HostFrame::StartTraining {
            job_id: job_id.to_owned(),
            sealed_request: sealed_request.to_vec(),
            program: program.to_vec(),
            dataset_len: container.len() as u64,
            parameter_server: None,
        });
        self.send(&HostFrame::DatasetPart(container.to_vec()));
        let mut events = Vec::new();
        loop {
            match self.recv() {
                EnclaveFrame::Event { seq, ciphertext } => events.push((seq, ciphertext)),
                end => return TrainingFrames { events, end },
            }
        }
    }
}

impl Drop for RawEnclave {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The enclave processes `parent` (a host) started in one of `roles` (`train`, `query`,
/// `ps`, `worker`), found through `/proc`.
pub fn enclave_processes(parent: u32, roles: &[&str]) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // `pid (comm) state ppid ...`: the command may hold spaces, so split after ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            ppid == Some(parent)
        })
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            args.iter().any(|a| a.ends_with(b"chiron-enclave"))
                && args
                    .windows(2)
                    .any(|w| w[0] == b"--role" && roles.iter().any(|r| w[1] == r.as_bytes()))
        })
        .collect()
}

/// Kills (SIGKILL) every enclave process of `service` in `role`; returns how many.
pub fn kill_enclaves(service: &Service, role: &str) -> usize {
    let pids = enclave_processes(service.pid(), &[role]);
    for pid in &pids {
        let status = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {pid}");
    }
    pids.len()
}
