//! A hostile platform edits, cuts, reorders, swaps and replays what it stores and relays; each
//! time the enclave or the owner's client catches it, names what failed, and the owner loses
//! nothing: once the platform puts the original bytes back, the same data and model work again.
#![allow(clippy::expect_used)] // test helpers: a failed step is a failed test

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chiron_client::convert::{LabelledInputs, PlainDataset};
use chiron_client::owner::{self, EventCursor, JobTicket, QuerySession, TrainingTerms};
use chiron_client::{ClientError, HostClient};
use chiron_crypto::DataKey;
use chiron_crypto::dataset::CHUNK_LEN;
use chiron_proto::api::JobState;
use chiron_proto::dataset::DatasetHeader;
use chiron_proto::evidence::Role;
use chiron_proto::owner::{AnswerPolicy, OwnerEvent, TRAIN_INFO, TrainRequest};
use chiron_proto::wire::EnclaveFrame;
use chiron_tests::*;
use serde_json::Value;

/// How long any one job may take here (they take about a second).
const JOB_TIMEOUT: Duration = Duration::from_secs(60);
/// The public label of a job whose dataset did not decrypt.
const DATASET_LABEL: &str = "dataset failed authentication";
/// The query enclave's label for a sealed model that does not unseal.
const MODEL_LABEL: &str = "sealed model failed authentication";

// The dataset container (chiron_crypto::dataset): magic "CHIRONDS" (8), version u16 BE (2),
// header length u32 BE (4), postcard header, 7-byte STREAM nonce prefix, then chunk records of
// CHUNK_LEN ciphertext bytes + a 16-byte tag, the last one shorter. Chunk counters and the
// last-chunk flag are not stored: STREAM derives them from the record's position.
const MAGIC_AT: usize = 0;
const VERSION_LOW_BYTE: usize = 9;
const HEADER_LEN_LOW_BYTE: usize = 13;
const PREAMBLE_LEN: usize = 14;
const NONCE_PREFIX_LEN: usize = 7;
const TAG_LEN: usize = 16;
const CHUNK_RECORD: usize = CHUNK_LEN + TAG_LEN;

// The sealed blob (chiron_crypto::seal): "CHSL" (4), version (1), 12-byte nonce, AES-GCM
// ciphertext, 16-byte tag.
const SEAL_VERSION_AT: usize = 4;
const SEAL_NONCE: Range<usize> = 5..17;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn flipped(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[at] ^= 0x10;
    out
}

fn spliced(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// 300 Fashion-MNIST examples: a container of four chunks (three full, one short).
fn four_chunk_data() -> PlainDataset {
    fashion_subset(300)
}

/// An owner's dataset as stored at the host, with the key only the owner holds.
struct Upload {
    data: PlainDataset,
    key: DataKey,
    container: Vec<u8>,
    program_id: String,
    dataset_id: String,
    /// Where the host keeps the container.
    path: PathBuf,
}

impl Upload {
    /// Registers `chiron_mlp`, encrypts `data` under a fresh key and uploads it.
    fn new(service: &Service, data: PlainDataset) -> Self {
        let host = service.client();
        let program_id = host
            .register_program(&program_wasm("chiron_mlp"))
            .expect("register")
            .program_id;
        let key = DataKey::generate();
        let mut container = Vec::new();
        chiron_crypto::encrypt_dataset(&key, &data.header, data.body.as_slice(), &mut container)
            .expect("encrypt");
        let dataset_id = host.upload_dataset(&container).expect("upload").dataset_id;
        let path = service.object("datasets", &dataset_id, "bin");
        assert_eq!(read(&path), container, "the host stores the upload as is");
        Self {
            data,
            key,
            container,
            program_id,
            dataset_id,
            path,
        }
    }

    /// A new job on this upload, started by the owner and followed to its end.
    fn train(&self, service: &Service, epochs: u32) -> Run {
        let host = service.client();
        let job = host
            .create_job(&self.program_id, &self.dataset_id)
            .expect("job");
        let ticket = owner::start_training(
            &host,
            &service.policy(),
            &job.job_id,
            &self.program_id,
            &self.data.header,
            &self.key,
            &terms(epochs, 60),
        )
        .expect("the owner starts the job");
        let (state, events) = wait(service, &ticket, JOB_TIMEOUT);
        Run {
            ticket,
            state,
            events,
        }
    }

    fn layout(&self) -> Layout {
        Layout::of(&self.container, &self.data.header)
    }
}

/// Where the parts of a dataset container sit, worked out from its header as the format does.
struct Layout {
    header_len: usize,
    chunks_at: usize,
    chunks: usize,
    len: usize,
}

impl Layout {
    fn of(container: &[u8], header: &DatasetHeader) -> Self {
        let encoded = postcard::to_allocvec(header).expect("header encodes");
        let declared = u32::from_be_bytes(
            container[PREAMBLE_LEN - 4..PREAMBLE_LEN]
                .try_into()
                .expect("4 bytes"),
        );
        assert_eq!(declared as usize, encoded.len(), "header length field");
        assert_eq!(
            &container[PREAMBLE_LEN..PREAMBLE_LEN + encoded.len()],
            &encoded[..]
        );
        let plaintext = header.plaintext_len().expect("valid header") as usize;
        let chunks = plaintext.div_ceil(CHUNK_LEN).max(1);
        let chunks_at = PREAMBLE_LEN + encoded.len() + NONCE_PREFIX_LEN;
        assert_eq!(container.len(), chunks_at + plaintext + chunks * TAG_LEN);
        Self {
            header_len: encoded.len(),
            chunks_at,
            chunks,
            len: container.len(),
        }
    }

    /// The bytes of chunk record `i` (ciphertext and tag).
    fn chunk(&self, i: usize) -> Range<usize> {
        assert!(i < self.chunks);
        let start = self.chunks_at + i * CHUNK_RECORD;
        start..(start + CHUNK_RECORD).min(self.len)
    }

    /// The offset of the one header byte that `change` alters, checking that the altered
    /// byte differs from the original in bit 0x10 only (so a one-bit flip forges it).
    fn header_field(&self, header: &DatasetHeader, change: fn(&mut DatasetHeader)) -> usize {
        let original = postcard::to_allocvec(header).expect("encodes");
        let mut other = header.clone();
        change(&mut other);
        let forged = postcard::to_allocvec(&other).expect("encodes");
        assert_eq!(original.len(), forged.len());
        let differing: Vec<usize> = (0..original.len())
            .filter(|&i| original[i] != forged[i])
            .collect();
        assert_eq!(differing.len(), 1, "one byte differs");
        let i = differing[0];
        assert_eq!(original[i] ^ forged[i], 0x10, "one bit differs");
        assert!(i < self.header_len);
        PREAMBLE_LEN + i
    }
}

/// A finished job as the owner and the platform see it.
struct Run {
    ticket: JobTicket,
    state: JobState,
    events: Vec<OwnerEvent>,
}

impl Run {
    /// The job failed: the platform sees Failed and `label`; the owner was told `detail`.
    fn assert_failed(&self, service: &Service, label: &str, detail: &str, case: &str) {
        assert_eq!(self.state, JobState::Failed, "{case}: {:?}", self.events);
        let status = service
            .client()
            .job_status(&self.ticket.job_id)
            .expect("status");
        assert_eq!(status.state, JobState::Failed, "{case}");
        assert_eq!(status.error.as_deref(), Some(label), "{case}");
        let told = failure(&self.events).expect("the owner is told why");
        assert!(told.contains(detail), "{case}: the owner was told {told:?}");
        assert!(
            !self
                .events
                .iter()
                .any(|e| matches!(e, OwnerEvent::Started { .. })),
            "{case}: training must not start on unauthenticated data"
        );
        assert!(
            !service
                .object("models", &self.ticket.job_id, "sealed")
                .exists(),
            "{case}: no model"
        );
    }

    fn assert_succeeded(&self, case: &str) {
        assert_eq!(self.state, JobState::Succeeded, "{case}: {:?}", self.events);
        assert!(
            matches!(self.events.last(), Some(OwnerEvent::Finished { .. })),
            "{case}: {:?}",
            self.events
        );
    }
}

/// One way for the platform to alter a stored object, and what the owner must be told.
struct Case {
    what: String,
    bytes: Vec<u8>,
    detail: &'static str,
}

fn case(what: impl Into<String>, bytes: Vec<u8>, detail: &'static str) -> Case {
    Case {
        what: what.into(),
        bytes,
        detail,
    }
}

/// For each case: the platform stores the case's bytes in place of the owner's container, a
/// job on it fails naming what failed, the platform puts the original back, a new job succeeds.
fn run_dataset_cases(service: &Service, upload: &Upload, cases: &[Case]) {
    for case in cases {
        assert_ne!(case.bytes, upload.container, "{}", case.what);
        write(&upload.path, &case.bytes);
        upload
            .train(service, 1)
            .assert_failed(service, DATASET_LABEL, case.detail, &case.what);
        write(&upload.path, &upload.container);
        upload.train(service, 1).assert_succeeded(&case.what);
    }
}

/// The owner attests the model's query enclave and queries it.
fn query(
    service: &Service,
    ticket: &JobTicket,
    inputs: &LabelledInputs,
) -> Result<(), ClientError> {
    query_accuracy(service, ticket, &inputs.features, &inputs.labels, 10).map(|_| ())
}

/// The query enclave refused to load the model, and said why.
fn assert_load_refused(result: Result<(), ClientError>, label: &str, case: &str) {
    let err = result.expect_err(case);
    assert!(
        matches!(&err, ClientError::Host { status: 502, message }
            if message == &format!("the query enclave could not load the model: {label}")),
        "{case}: {err}"
    );
}

/// Makes the platform's version of a stored object from the original.
type Tamper = fn(&[u8]) -> Vec<u8>;

/// Starts `count` iris jobs of the MLP program side by side and waits for each to succeed;
/// their tickets and events.
fn finished_mlp_jobs(
    service: &Service,
    data: &PlainDataset,
    epochs: u32,
    count: usize,
) -> Vec<(JobTicket, Vec<OwnerEvent>)> {
    let wasm = program_wasm("chiron_mlp");
    let tickets: Vec<JobTicket> = (0..count)
        .map(|_| start_job(service, &wasm, data, &terms(epochs, 60)).expect("start"))
        .collect();
    tickets
        .into_iter()
        .map(|ticket| {
            let (state, events) = wait(service, &ticket, JOB_TIMEOUT);
            assert_eq!(state, JobState::Succeeded, "{events:?}");
            (ticket, events)
        })
        .collect()
}

/// Trains one iris job per case; for each, the platform stores the case's bytes in place of
/// the job's sealed model, the model does not load, the original is put back, and it answers.
fn run_model_cases(cases: &[(&str, Tamper)]) {
    let service = Service::start();
    let data = iris();
    let jobs = finished_mlp_jobs(&service, &data, 5, cases.len());
    let inputs = iris_inputs(&data, Some(10));
    for ((what, tamper), (ticket, _)) in cases.iter().zip(&jobs) {
        // The tampering happens before the first query: a loaded model stays in its enclave.
        let path = service.object("models", &ticket.job_id, "sealed");
        let original = read(&path);
        let tampered = tamper(&original);
        assert_ne!(tampered, original, "{what}");
        write(&path, &tampered);
        assert_load_refused(query(&service, ticket, &inputs), MODEL_LABEL, what);
        write(&path, &original);
        query(&service, ticket, &inputs).unwrap_or_else(|e| panic!("{what}: restored: {e}"));
    }
}

/// A relay in front of the host that keeps a copy of every request the owner sends: the bytes
/// a platform sees and can replay.
struct Recorder {
    url: String,
    token: String,
    sent: Arc<Mutex<Vec<ConnectionLog>>>,
}

/// The bytes a client sent over one connection.
type ConnectionLog = Arc<Mutex<Vec<u8>>>;

impl Recorder {
    fn start(service: &Service) -> Self {
        let upstream = service
            .url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let sent: Arc<Mutex<Vec<ConnectionLog>>> = Arc::default();
        let connections = Arc::clone(&sent);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    break;
                };
                let log: ConnectionLog = Arc::default();
                connections.lock().expect("log").push(Arc::clone(&log));
                let (Ok(client_copy), Ok(server_copy)) = (client.try_clone(), server.try_clone())
                else {
                    break;
                };
                relay(client, server, Some(log));
                relay(server_copy, client_copy, None);
            }
        });
        Self {
            url,
            token: service.token.clone(),
            sent,
        }
    }

    fn client(&self) -> HostClient {
        HostClient::new(&self.url).with_token(&self.token)
    }

    /// The body of the one recorded request whose request line is `line`.
    fn body(&self, line: &str) -> Vec<u8> {
        let connections = self.sent.lock().expect("log");
        let mut found: Vec<Vec<u8>> = connections
            .iter()
            .flat_map(|c| requests(&c.lock().expect("log")))
            .filter(|(l, _)| l.starts_with(&format!("{line} HTTP/")))
            .map(|(_, body)| body)
            .collect();
        assert_eq!(found.len(), 1, "one `{line}` recorded");
        found.pop().expect("one")
    }
}

fn relay(mut from: TcpStream, mut to: TcpStream, log: Option<ConnectionLog>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // Logged before it is forwarded: by the time an answer comes back, it is here.
            if let Some(log) = &log {
                log.lock().expect("log").extend_from_slice(&buf[..n]);
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// The HTTP/1.1 requests in one connection's bytes: request line and body.
fn requests(mut bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(end) = find(bytes, b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
        bytes = &bytes[end + 4..];
        let mut lines = head.lines();
        let line = lines.next().unwrap_or_default().to_owned();
        let mut len = 0usize;
        let mut chunked = false;
        for header in lines {
            if let Some((name, value)) = header.split_once(':') {
                let name = name.trim().to_ascii_lowercase();
                if name == "content-length" {
                    len = value.trim().parse().expect("content length");
                } else if name == "transfer-encoding" {
                    chunked = value.to_ascii_lowercase().contains("chunked");
                }
            }
        }
        let mut body = Vec::new();
        if chunked {
            while let Some(eol) = find(bytes, b"\r\n") {
                let size = String::from_utf8_lossy(&bytes[..eol]);
                let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                    .expect("chunk size");
                bytes = &bytes[eol + 2..];
                if size == 0 {
                    bytes = &bytes[2.min(bytes.len())..];
                    break;
                }
                body.extend_from_slice(&bytes[..size]);
                bytes = &bytes[size + 2..];
            }
        } else {
            let len = len.min(bytes.len());
            body.extend_from_slice(&bytes[..len]);
            bytes = &bytes[len..];
        }
        out.push((line, body));
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The platform restarts its host on a copy of what it stored, after editing the copy.
struct Restarted {
    child: Child,
    url: String,
    token: String,
    _stdout: BufReader<ChildStdout>,
    _dir: tempfile::TempDir,
}

impl Restarted {
    fn on_copy_of(service: &Service, edit: impl FnOnce(&Path)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("state");
        copy_dir(&service.state_dir(), &state);
        edit(&state);
        let bins = bin_dir();
        let mut child = Command::new(bins.join("chiron-host"))
            .arg("--dangerous-simulated-tee")
            .arg("--data-dir")
            .arg(&state)
            .args(["--listen", "127.0.0.1:0", "--enclave-bin"])
            .arg(bins.join("chiron-enclave"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chiron-host starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut first = String::new();
        stdout
            .read_line(&mut first)
            .expect("host prints its address");
        let url = first.split_whitespace().last().expect("address").to_owned();
        Self {
            child,
            url,
            token: service.token.clone(),
            _stdout: stdout,
            _dir: dir,
        }
    }

    fn client(&self) -> HostClient {
        HostClient::new(&self.url).with_token(&self.token)
    }
}

impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Where the host keeps a job's events: one object per event, named by its sequence number.
fn events_dir(state: &Path, job_id: &str) -> PathBuf {
    state.join("objects/events").join(job_id)
}

/// A job's stored events as `{"seq": N, "ciphertext": base64}`, in order.
fn stored_events(state: &Path, job_id: &str) -> Vec<Value> {
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(events_dir(state, job_id))
        .expect("events")
        .map(|entry| entry.expect("entry").path())
        .filter_map(|path| {
            let seq = path.file_stem()?.to_str()?.parse().ok()?;
            Some((seq, path))
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(
            |(seq, path)| serde_json::json!({"seq": seq, "ciphertext": BASE64.encode(read(&path))}),
        )
        .collect()
}

/// Replaces a job's stored events, as a platform editing its disk would.
fn store_events(state: &Path, job_id: &str, events: Vec<Value>) {
    let dir = events_dir(state, job_id);
    std::fs::remove_dir_all(&dir).expect("remove");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for event in events {
        let seq = event["seq"].as_u64().expect("seq");
        let bytes = BASE64
            .decode(event["ciphertext"].as_str().expect("ciphertext"))
            .expect("base64");
        write(&dir.join(format!("{seq:020}.bin")), &bytes);
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Bit flips in every part of every stored object
// ---------------------------------------------------------------------------------------------

/// The platform flips one bit in each part of a stored dataset container.
#[test]
fn a_bit_flip_anywhere_in_the_stored_dataset_fails_the_job_and_a_retry_succeeds() {
    let service = Service::start();
    let upload = Upload::new(&service, four_chunk_data());
    let layout = upload.layout();
    assert_eq!(layout.chunks, 4);
    let header = &upload.data.header;
    let c = &upload.container;
    let classes = layout.header_field(header, |h| h.classes ^= 0x10);
    let valid_count = layout.header_field(header, |h| h.valid_count ^= 0x10);
    let last = layout.chunks - 1;
    let cases = [
        case("magic", flipped(c, MAGIC_AT), "bad magic bytes"),
        case(
            "format version",
            flipped(c, VERSION_LOW_BYTE),
            "format version 17 is not supported",
        ),
        case(
            "header length field",
            flipped(c, HEADER_LEN_LOW_BYTE),
            "dataset header is malformed",
        ),
        case(
            "public header: class count",
            flipped(c, classes),
            "dataset chunk 0 failed authentication",
        ),
        case(
            "public header: example count (the body's length)",
            flipped(c, valid_count),
            "dataset chunk 0 failed authentication",
        ),
        case(
            "STREAM nonce prefix",
            flipped(c, layout.chunks_at - 1),
            "dataset chunk 0 failed authentication",
        ),
        case(
            "chunk 0 body",
            flipped(c, layout.chunk(0).start),
            "dataset chunk 0 failed authentication",
        ),
        case(
            "chunk 1 body",
            flipped(c, layout.chunk(1).start + 1000),
            "dataset chunk 1 failed authentication",
        ),
        case(
            "chunk 1 tag",
            flipped(c, layout.chunk(1).end - TAG_LEN),
            "dataset chunk 1 failed authentication",
        ),
        case(
            "last chunk body",
            flipped(c, layout.chunk(last).start + 3),
            "dataset chunk 3 failed authentication",
        ),
        case(
            "last chunk tag",
            flipped(c, layout.len - 1),
            "dataset chunk 3 failed authentication",
        ),
    ];
    // The forged headers still parse: only authentication can tell.
    for at in [classes, valid_count] {
        let forged = chiron_crypto::read_dataset_header(&flipped(c, at)).expect("parses");
        assert_ne!(&forged, header);
    }
    run_dataset_cases(&service, &upload, &cases);
}

/// The platform flips one bit in each part of a job's stored sealed model.
#[test]
fn a_bit_flip_anywhere_in_the_sealed_model_stops_it_loading_until_restored() {
    run_model_cases(&[
        ("magic", |b| flipped(b, 0)),
        ("version", |b| flipped(b, SEAL_VERSION_AT)),
        ("nonce", |b| flipped(b, SEAL_NONCE.start + 6)),
        ("body", |b| {
            flipped(b, SEAL_NONCE.end + (b.len() - SEAL_NONCE.end) / 2)
        }),
        ("tag", |b| flipped(b, b.len() - 1)),
    ]);
}

// ---------------------------------------------------------------------------------------------
// 2. Truncation
// ---------------------------------------------------------------------------------------------

/// The platform cuts the stored dataset container short, at and between chunk boundaries.
#[test]
fn a_truncated_dataset_fails_the_job_and_a_retry_succeeds() {
    let service = Service::start();
    let upload = Upload::new(&service, four_chunk_data());
    let layout = upload.layout();
    let c = &upload.container;
    let cut = "dataset ends before its final chunk";
    let cases = [
        case("cut inside the preamble", c[..12].to_vec(), cut),
        case(
            "cut at the boundary after chunk 1",
            c[..layout.chunk(1).end].to_vec(),
            cut,
        ),
        case(
            "cut at the boundary before the last chunk",
            c[..layout.chunk(layout.chunks - 1).start].to_vec(),
            cut,
        ),
        case(
            "cut in the middle of chunk 1",
            c[..layout.chunk(1).start + 1000].to_vec(),
            cut,
        ),
        case(
            "cut inside the last tag",
            c[..layout.len - TAG_LEN / 2].to_vec(),
            cut,
        ),
        case(
            "only the preamble and nonce left",
            c[..layout.chunks_at].to_vec(),
            cut,
        ),
    ];
    run_dataset_cases(&service, &upload, &cases);
}

/// The platform cuts a job's stored sealed model short.
#[test]
fn a_truncated_sealed_model_does_not_load_until_restored() {
    run_model_cases(&[
        ("tag cut off", |b| b[..b.len() - TAG_LEN].to_vec()),
        ("last byte cut off", |b| b[..b.len() - 1].to_vec()),
        ("cut in half", |b| b[..b.len() / 2].to_vec()),
        ("only magic, version and nonce left", |b| {
            b[..SEAL_NONCE.end].to_vec()
        }),
    ]);
}

// ---------------------------------------------------------------------------------------------
// 3. Reordered, dropped and repeated chunks
// ---------------------------------------------------------------------------------------------

/// The platform reorders, drops, repeats or appends chunk records of a stored dataset.
#[test]
fn reordered_dropped_or_repeated_chunks_fail_the_job() {
    let service = Service::start();
    let upload = Upload::new(&service, four_chunk_data());
    let layout = upload.layout();
    let c = &upload.container[..];
    let head = &c[..layout.chunks_at];
    let [c0, c1, c2, c3] = [0, 1, 2, 3].map(|i| &c[layout.chunk(i)]);
    let cases = [
        case(
            "chunks 0 and 1 swapped",
            spliced(&[head, c1, c0, c2, c3]),
            "dataset chunk 0 failed authentication",
        ),
        case(
            "chunks 1 and 2 swapped",
            spliced(&[head, c0, c2, c1, c3]),
            "dataset chunk 1 failed authentication",
        ),
        case(
            "chunk 1 dropped",
            spliced(&[head, c0, c2, c3]),
            "dataset ends before its final chunk",
        ),
        case(
            "chunk 1 repeated in place of chunk 2",
            spliced(&[head, c0, c1, c1, c3]),
            "dataset chunk 2 failed authentication",
        ),
        case(
            "chunk 1 repeated after itself",
            spliced(&[head, c0, c1, c1, c2, c3]),
            "unexpected bytes after its final chunk",
        ),
        case(
            "chunk 0 repeated at the end",
            spliced(&[head, c0, c1, c2, c3, c0]),
            "unexpected bytes after its final chunk",
        ),
        case(
            "the last chunk moved first",
            spliced(&[head, c3, c0, c1, c2]),
            "dataset chunk 0 failed authentication",
        ),
    ];
    run_dataset_cases(&service, &upload, &cases);
}

// ---------------------------------------------------------------------------------------------
// 4. Swapped objects
// ---------------------------------------------------------------------------------------------

/// The platform serves owner B's dataset (same public header, B's key) as owner A's.
#[test]
fn another_owners_dataset_with_the_same_header_fails_authentication() {
    let service = Service::start();
    let a = Upload::new(&service, iris());
    let b = Upload::new(&service, iris());
    assert_eq!(
        a.data.header, b.data.header,
        "the platform cannot tell them apart"
    );
    assert_eq!(a.container.len(), b.container.len());

    write(&a.path, &b.container);
    a.train(&service, 1).assert_failed(
        &service,
        DATASET_LABEL,
        "dataset chunk 0 failed authentication: the ciphertext was modified or the key is wrong",
        "B's dataset in place of A's",
    );
    // B's own job is unaffected, and A's works once the platform puts A's data back.
    b.train(&service, 1).assert_succeeded("B");
    write(&a.path, &a.container);
    a.train(&service, 1).assert_succeeded("A restored");
}

/// The platform swaps the sealed models of two finished jobs.
#[test]
fn swapped_sealed_models_do_not_load_and_work_once_swapped_back() {
    let service = Service::start();
    let data = iris();
    let [(one, _), (two, _)]: [_; 2] = finished_mlp_jobs(&service, &data, 5, 2)
        .try_into()
        .expect("two jobs");
    let inputs = iris_inputs(&data, Some(10));
    let path_one = service.object("models", &one.job_id, "sealed");
    let path_two = service.object("models", &two.job_id, "sealed");
    let (model_one, model_two) = (read(&path_one), read(&path_two));

    write(&path_one, &model_two);
    write(&path_two, &model_one);
    // Each blob is bound to its job id: neither loads as the other's.
    assert_load_refused(
        query(&service, &one, &inputs),
        MODEL_LABEL,
        "job 2's model as 1's",
    );
    assert_load_refused(
        query(&service, &two, &inputs),
        MODEL_LABEL,
        "job 1's model as 2's",
    );

    write(&path_one, &model_one);
    write(&path_two, &model_two);
    query(&service, &one, &inputs).expect("job 1's model answers again");
    query(&service, &two, &inputs).expect("job 2's model answers again");
}

/// The platform swaps the stored program the owner approved for another program's wasm.
#[test]
fn a_swapped_program_is_refused_for_training_and_for_serving() {
    let service = Service::start();
    let upload = Upload::new(&service, iris());
    let path = service.object("programs", &upload.program_id, "wasm");
    let approved = read(&path);
    let other = program_wasm("chiron_cnn");
    assert_ne!(approved, other);

    // Training: the enclave checks the program against the digest the owner sealed.
    write(&path, &other);
    upload.train(&service, 1).assert_failed(
        &service,
        "program mismatch",
        "the host supplied a different program than the one the owner approved",
        "another program for training",
    );
    write(&path, &approved);
    let run = upload.train(&service, 5);
    run.assert_succeeded("approved program restored");

    // Serving: the sealed model names the program that trained it.
    let inputs = iris_inputs(&upload.data, Some(10));
    write(&path, &other);
    assert_load_refused(
        query(&service, &run.ticket, &inputs),
        "program mismatch",
        "another program for serving",
    );
    write(&path, &approved);
    query(&service, &run.ticket, &inputs).expect("the model answers with its own program");
}

// ---------------------------------------------------------------------------------------------
// 5. Replay
// ---------------------------------------------------------------------------------------------

/// The platform replays the owner's sealed training request, after its job ran and to a new
/// job of its own on the owner's data.
#[test]
fn a_replayed_training_request_is_refused() {
    let service = Service::start();
    let upload = Upload::new(&service, iris());
    let recorder = Recorder::start(&service);
    let host = service.client();

    // The owner starts a job; the platform records the sealed request on its way.
    let job = host
        .create_job(&upload.program_id, &upload.dataset_id)
        .expect("job");
    let ticket = owner::start_training(
        &recorder.client(),
        &service.policy(),
        &job.job_id,
        &upload.program_id,
        &upload.data.header,
        &upload.key,
        &terms(3, 60),
    )
    .expect("start");
    let sealed = recorder.body(&format!("POST /v1/jobs/{}/start", job.job_id));
    assert!(!sealed.is_empty());
    let (state, events) = wait(&service, &ticket, JOB_TIMEOUT);
    assert_eq!(state, JobState::Succeeded, "{events:?}");

    // Again, to the same job: it ran, its enclave is gone.
    let err = host
        .start_job(&job.job_id, &sealed)
        .expect_err("a job starts once");
    assert!(
        matches!(&err, ClientError::Host { status: 409, .. }),
        "{err}"
    );

    // To a new job on the same program and data: its enclave has another key, and the
    // request is bound to the owner's job id.
    let replay = host
        .create_job(&upload.program_id, &upload.dataset_id)
        .expect("job");
    host.start_job(&replay.job_id, &sealed)
        .expect("the host passes it on");
    let deadline = std::time::Instant::now() + JOB_TIMEOUT;
    let status = loop {
        let status = host.job_status(&replay.job_id).expect("status");
        if status.state != JobState::Running {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replayed job never ended"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.state, JobState::Failed);
    assert_eq!(
        status.error.as_deref(),
        Some("training request failed authentication")
    );
    assert_eq!(status.events, 0, "no event under the owner's key");
    assert!(!service.object("models", &replay.job_id, "sealed").exists());
}

/// A host that keeps a training enclave alive after its job and feeds it the owner's sealed
/// request again, with the dataset cut short.
#[test]
fn a_training_enclave_refuses_a_second_start_of_the_same_request() {
    let service = Service::start();
    let data = iris();
    let wasm = program_wasm("chiron_mlp");
    let program_id = service
        .client()
        .register_program(&wasm)
        .expect("register")
        .program_id;
    let key = DataKey::generate();
    let mut container = Vec::new();
    chiron_crypto::encrypt_dataset(&key, &data.header, data.body.as_slice(), &mut container)
        .expect("encrypt");
    let job_id = "0123456789abcdef0123456789abcdef";

    let mut enclave = RawEnclave::spawn(&service, "train");
    let enclave_key = enclave.attest(&service, Role::Train, job_id);
    // What `owner::start_training` seals.
    let request = TrainRequest {
        data_key: key.to_bytes(),
        program_digest: hex::decode(&program_id)
            .expect("hex")
            .try_into()
            .expect("32 bytes"),
        epochs: 3,
        time_budget_secs: 60,
        seed: [1; 32],
        answers: AnswerPolicy::Label,
        query_budget: 100,
        query_token_digest: [2; 32],
        private: None,
        distributed: None,
        keep_last_save: true,
    };
    let (sealed, event_key) = chiron_crypto::seal_to_enclave(
        &enclave_key,
        TRAIN_INFO,
        job_id.as_bytes(),
        &postcard::to_allocvec(&request).expect("encodes"),
    )
    .expect("seal");

    let first = enclave.train(job_id, &sealed, &wasm, &container);
    assert!(matches!(first.end, EnclaveFrame::Trained { .. }));
    assert!(!first.events.is_empty());

    let second = enclave.train(job_id, &sealed, &wasm, &container[..container.len() - 1]);
    let reused: Vec<String> = second
        .events
        .iter()
        .filter_map(|(seq, ciphertext)| {
            let (_, earlier) = first.events.iter().find(|(s, _)| s == seq)?;
            let event = event_key
                .open(*seq, job_id.as_bytes(), ciphertext)
                .ok()
                .and_then(|p| OwnerEvent::from_padded(&p).ok());
            (earlier != ciphertext).then(|| format!("counter {seq} reused for {event:?}"))
        })
        .collect();
    assert!(
        reused.is_empty(),
        "the owner's event key sealed different events at the same counter: {reused:?}"
    );
    assert!(
        second.events.is_empty() && matches!(second.end, EnclaveFrame::Failed { .. }),
        "a second start must be refused outright"
    );
}

/// The platform replays a sealed query the owner sent to one model against another model.
#[test]
fn a_replayed_query_is_refused_by_another_models_enclave() {
    let service = Service::start();
    let data = iris();
    let [(one, _), (two, _)]: [_; 2] = finished_mlp_jobs(&service, &data, 5, 2)
        .try_into()
        .expect("two jobs");
    let inputs = iris_inputs(&data, Some(10));
    let recorder = Recorder::start(&service);
    let proxied = recorder.client();
    let session = QuerySession::open(&proxied, &service.policy(), &one).expect("attests");
    session
        .query(1, inputs.features[..4].to_vec())
        .expect("answered");
    let sealed = recorder.body(&format!("POST /v1/models/{}/query", one.job_id));

    let host = service.client();
    query(&service, &two, &inputs).expect("model two is being served");
    let err = host
        .query(&two.job_id, &sealed)
        .expect_err("sealed to model one's enclave");
    assert!(
        matches!(&err, ClientError::Host { status: 400, message } if message == "query failed authentication"),
        "{err}"
    );
    // Both models go on serving their owners.
    query(&service, &one, &inputs).expect("model one answers");
    query(&service, &two, &inputs).expect("model two answers");
}

/// The platform replays a sealed query the owner sent, to the same model, spending the
/// owner's query budget.
#[test]
fn a_replayed_query_is_refused_and_costs_the_owner_nothing() {
    let service = Service::start();
    let data = iris();
    let terms = TrainingTerms {
        query_budget: 2,
        ..terms(5, 60)
    };
    let ticket = start_job(&service, &program_wasm("chiron_mlp"), &data, &terms).expect("start");
    let (state, events) = wait(&service, &ticket, JOB_TIMEOUT);
    assert_eq!(state, JobState::Succeeded, "{events:?}");
    let inputs = iris_inputs(&data, Some(10));
    let recorder = Recorder::start(&service);
    let proxied = recorder.client();
    let session = QuerySession::open(&proxied, &service.policy(), &ticket).expect("attests");
    session
        .query(1, inputs.features[..4].to_vec())
        .expect("first query");
    let sealed = recorder.body(&format!("POST /v1/models/{}/query", ticket.job_id));

    let replayed = service.client().query(&ticket.job_id, &sealed);
    let second = session.query(1, inputs.features[4..8].to_vec());
    assert!(
        matches!(&replayed, Err(ClientError::Host { message, .. }) if message == "query replayed"),
        "the enclave answered a replayed query: {replayed:?}"
    );
    second.expect("the owner's second query is within its budget");
}

/// An edit of job B's stored events, given job A's.
type EventEdit = fn(&mut Vec<Value>, &[Value]);

/// The platform edits the stored event streams (another job's events, reordered, dropped,
/// replayed, altered) and restarts its host to serve them.
#[test]
fn events_served_out_of_place_fail_authentication() {
    let service = Service::start();
    let data = iris();
    let [(a, a_events), (b, b_events)]: [_; 2] = finished_mlp_jobs(&service, &data, 3, 2)
        .try_into()
        .expect("two jobs");
    for events in [&a_events, &b_events] {
        assert!(events.len() >= 3, "{events:?}");
    }
    fn renumber(events: &mut [Value]) {
        for (seq, event) in events.iter_mut().enumerate() {
            event["seq"] = Value::from(seq as u64);
        }
    }
    let cases: [(&str, EventEdit, u64); 7] = [
        (
            "job A's first event as job B's",
            |b, a| b[0]["ciphertext"] = a[0]["ciphertext"].clone(),
            0,
        ),
        ("job A's whole stream as job B's", |b, a| *b = a.to_vec(), 0),
        (
            "job A's second event as job B's",
            |b, a| b[1]["ciphertext"] = a[1]["ciphertext"].clone(),
            1,
        ),
        (
            "B's first two events swapped",
            |b, _| {
                let first = b[0]["ciphertext"].clone();
                b[0]["ciphertext"] = b[1]["ciphertext"].clone();
                b[1]["ciphertext"] = first;
            },
            0,
        ),
        (
            "B's first event dropped, the rest renumbered",
            |b, _| {
                b.remove(0);
                renumber(b);
            },
            0,
        ),
        (
            "B's first event replayed as its second",
            |b, _| b[1]["ciphertext"] = b[0]["ciphertext"].clone(),
            1,
        ),
        (
            "a bit flipped in B's second event",
            |b, _| {
                let text = b[1]["ciphertext"].as_str().expect("base64");
                let mut bytes = BASE64.decode(text).expect("base64");
                bytes[3] ^= 0x10;
                b[1]["ciphertext"] = Value::from(BASE64.encode(bytes));
            },
            1,
        ),
    ];
    for (what, edit, expected) in cases {
        let host = Restarted::on_copy_of(&service, |state| {
            let a_events = stored_events(state, &a.job_id);
            let mut b_events = stored_events(state, &b.job_id);
            edit(&mut b_events, &a_events);
            store_events(state, &b.job_id, b_events);
        });
        let err = b
            .events(&host.client(), &mut EventCursor::default())
            .expect_err(what);
        assert!(
            matches!(err, ClientError::TamperedEvent(n) if n == expected),
            "{what}: {err}"
        );
        assert!(err.to_string().contains("failed authentication"), "{err}");
    }

    // Restarted on an untouched copy, the same stream authenticates in full.
    let host = Restarted::on_copy_of(&service, |_| {});
    let (state, events) = b
        .events(&host.client(), &mut EventCursor::default())
        .expect("authentic events");
    assert_eq!(state, JobState::Succeeded);
    assert!(matches!(events.last(), Some(OwnerEvent::Finished { .. })));
}

/// The platform withholds the final event of a job it reports as Succeeded.
#[test]
fn a_withheld_final_event_is_noticed() {
    let service = Service::start();
    let ticket = start_job(
        &service,
        &program_wasm("chiron_mlp"),
        &iris(),
        &terms(3, 60),
    )
    .expect("start");
    let (state, events) = wait(&service, &ticket, JOB_TIMEOUT);
    assert_eq!(state, JobState::Succeeded, "{events:?}");
    let host = Restarted::on_copy_of(&service, |state| {
        let mut events = stored_events(state, &ticket.job_id);
        events.pop();
        store_events(state, &ticket.job_id, events);
    });
    let seen = ticket.events(&host.client(), &mut EventCursor::default());
    assert!(
        matches!(seen, Err(ClientError::WithheldEvents)),
        "the owner saw a Succeeded job ending in {:?}",
        seen.ok().and_then(|(_, events)| events.last().cloned())
    );
}
