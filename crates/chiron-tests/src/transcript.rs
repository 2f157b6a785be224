//! The non-interference harness: run one job on a dataset, record everything the provider and
//! the platform can observe of it, and compare two such transcripts.
//!
//! A [`Transcript`] holds what the platform sees: every object the host stored (name and size),
//! every frame between the host and the enclaves (direction, kind, size, order), the host's
//! logs and process output, the job's public status texts and state transitions with their
//! times, the encrypted event stream's shape, and the training enclave's peak resident memory.
//! Run the same job on two datasets that share their public header but differ in content
//! (each with its own canary) and [`assert_indistinguishable`] shows the platform could not
//! tell them apart, while [`assert_no_canary`] shows neither canary reached it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use chiron_client::convert::PlainDataset;
use chiron_client::owner::{EventCursor, JobTicket, PrivateTerms, TrainingTerms};
use chiron_proto::api::JobState;
use chiron_proto::owner::OwnerEvent;
use rand::Rng;

use crate::{FRAME_LOG, Service, start_job};

/// How far apart two private jobs' state-change times may be: the declared quantum. The
/// enclave releases a private job's events at its budget; what remains is process scheduling
/// and the loopback relay.
pub const TIME_QUANTUM: Duration = Duration::from_millis(1000);

/// How far apart two private jobs' training-enclave peaks may be (page-counter granularity).
pub const MEMORY_QUANTUM: u64 = 8 << 20;

/// Terms of a private job with a `budget_secs` time budget, 512 MiB of memory, a 1 MiB model
/// and answers one second after each query.
pub fn private_terms(epochs: u32, budget_secs: u32) -> TrainingTerms {
    TrainingTerms {
        private: Some(PrivateTerms {
            memory_mib: 512,
            model_mib: 1,
            answer_ms: 1000,
        }),
        ..crate::terms(epochs, budget_secs)
    }
}

/// Everything the platform could observe of one job.
#[derive(Clone, Debug, Default)]
pub struct Transcript {
    /// Stored objects: `(name with ids replaced, size)`, sorted.
    pub objects: Vec<(String, usize)>,
    /// Frames between host and enclaves, in order: `direction kind size`.
    pub frames: Vec<String>,
    /// Host log lines (standard error), timestamps cut and ids replaced, frame lines apart.
    pub log: Vec<String>,
    /// Host standard output, ids replaced.
    pub stdout: Vec<String>,
    /// Job status texts from the public API, ids replaced.
    pub api: Vec<String>,
    /// Job states in the order seen, with the time since the job was started.
    pub states: Vec<(JobState, Duration)>,
    /// Ciphertext sizes of the stored events, in order.
    pub event_sizes: Vec<usize>,
    /// Peak resident memory of each training enclave process, in bytes.
    pub training_peaks: Vec<u64>,
    /// A distributed job's enclave-to-enclave traffic as the host's relay saw it, one entry
    /// per connection and direction, sorted: TLS record counts and sizes, and when the
    /// first and the last record passed (since the job started).
    pub peer_traffic: Vec<(String, Duration, Duration)>,
    /// Whether the job was distributed: then frames to several enclaves interleave as the
    /// scheduler pleases, and only their multiset is compared.
    pub distributed: bool,
    /// The raw bytes of everything above and of every stored object, for the canary search.
    pub raw: Vec<(String, Vec<u8>)>,
}

/// One observed run: the platform's transcript and what the owner received.
pub struct Observed {
    /// The platform's view.
    pub transcript: Transcript,
    /// The owner's decrypted events.
    pub owner_events: Vec<OwnerEvent>,
    /// The job's ticket (for queries).
    pub ticket: JobTicket,
}

/// Runs `wasm` on `data` under `terms` on a fresh service, then `after` (queries, say) while
/// the service still runs, and records the platform's view of all of it.
pub fn observe(
    wasm: &[u8],
    data: &PlainDataset,
    terms: &TrainingTerms,
    timeout: Duration,
    after: impl FnOnce(&Service, &JobTicket),
) -> Observed {
    observe_started(
        |service| start_job(service, wasm, data, terms).expect("the job starts"),
        timeout,
        after,
    )
}

/// [`observe`] for a distributed job of `workers` and a parameter server, exchanging
/// messages of `message_kib`.
pub fn observe_distributed(
    wasm: &[u8],
    data: &PlainDataset,
    terms: &TrainingTerms,
    (workers, message_kib): (u32, u32),
    timeout: Duration,
) -> Observed {
    let mut observed = observe_started(
        |service| {
            crate::start_distributed_job(service, wasm, data, terms, workers, message_kib)
                .expect("the job starts")
        },
        timeout,
        |_, _| {},
    );
    observed.transcript.distributed = true;
    observed.transcript.frames.sort();
    observed
}

/// [`observe`] of the job `start` starts.
fn observe_started(
    start: impl FnOnce(&Service) -> JobTicket,
    timeout: Duration,
    after: impl FnOnce(&Service, &JobTicket),
) -> Observed {
    let mut service = Service::start();
    let monitor = EnclaveMonitor::start(service.pid());
    let started = Instant::now();
    let ticket = start(&service);
    let host = service.client();
    let mut states: Vec<(JobState, Duration)> = Vec::new();
    let mut owner_events = Vec::new();
    loop {
        let status = host.job_status(&ticket.job_id).expect("status");
        if states.last().map(|(s, _)| *s) != Some(status.state) {
            states.push((status.state, started.elapsed()));
        }
        if matches!(status.state, JobState::Succeeded | JobState::Failed) {
            break;
        }
        assert!(
            started.elapsed() < timeout,
            "job did not end in {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, events) = ticket
        .events(&host, &mut EventCursor::default())
        .expect("events authenticate");
    owner_events.extend(events);
    // The job is done when rank 0 is; the other enclaves' last frames may still be on their
    // way. The transcript waits for every training enclave to exit, so that it does not
    // depend on when the host was stopped.
    let settle = Instant::now() + Duration::from_secs(30);
    while !crate::enclave_processes(service.pid(), &["train", "worker", "ps"]).is_empty()
        && Instant::now() < settle
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    after(&service, &ticket);
    let training_peaks = monitor.stop();

    let mut names = IdNames::default();
    let status = host.job_status(&ticket.job_id).expect("status");
    let stored = host.job_events(&ticket.job_id, 0).expect("events");
    let api = vec![names.replace(&format!("{status:?}"))];
    let event_sizes = stored.events.iter().map(|(_, c)| c.len()).collect();
    service.stop();

    let mut transcript = Transcript {
        api,
        states,
        event_sizes,
        training_peaks,
        ..Transcript::default()
    };
    for line in service.stderr().lines() {
        // `2026-11-29T21:40:00.123456Z  INFO target: message` → `INFO target: message`
        let line = line.split_once(' ').map_or(line, |(_, rest)| rest).trim();
        let line = names.replace(line);
        match line.split_once(FRAME_LOG) {
            Some((_, frame)) => {
                let frame = frame.trim_start_matches(':').trim();
                match peer_traffic(frame) {
                    Some(traffic) => transcript.peer_traffic.push(traffic),
                    None => transcript.frames.push(frame.to_owned()),
                }
            }
            None => transcript.log.push(line),
        }
    }
    transcript.peer_traffic.sort_by(|a, b| a.0.cmp(&b.0));
    transcript.stdout = service.stdout().lines().map(|l| names.replace(l)).collect();
    let view = service.platform_view();
    for (name, bytes) in &view {
        let relative = name
            .strip_prefix(&service.data_dir.path().display().to_string())
            .unwrap_or(name);
        transcript
            .objects
            .push((names.replace(relative), bytes.len()));
    }
    transcript.objects.sort();
    transcript.raw = view;
    transcript.raw.push((
        "api, states and frames".into(),
        format!(
            "{:?}\n{:?}\n{:?}",
            transcript.api, transcript.states, transcript.frames
        )
        .into_bytes(),
    ));
    Observed {
        transcript,
        owner_events,
        ticket,
    }
}

/// The relay's account of one direction of a connection (`chiron-host`'s `relay.rs`):
/// `peer <direction> TLS records: <count>x<size>...; first at <ms> ms, last at <ms> ms`.
fn peer_traffic(frame: &str) -> Option<(String, Duration, Duration)> {
    let rest = frame.strip_prefix("peer ")?;
    let (shape, times) = rest.split_once("; first at ")?;
    let (first, last) = times.split_once(" ms, last at ")?;
    let last = last.strip_suffix(" ms")?;
    Some((
        shape.to_owned(),
        Duration::from_millis(first.trim().parse().ok()?),
        Duration::from_millis(last.trim().parse().ok()?),
    ))
}

/// What a comparison may tolerate.
#[derive(Clone, Copy, Debug)]
pub enum Disclosure {
    /// A private job: times agree to [`TIME_QUANTUM`] and peaks to [`MEMORY_QUANTUM`].
    Private,
    /// A live job: run time and peak memory are declared public and not compared.
    Live,
}

/// Asserts that the platform saw the same thing in `a` and `b`, except ciphertext bytes, and
/// times and memory as `disclosure` allows.
pub fn assert_indistinguishable(a: &Transcript, b: &Transcript, disclosure: Disclosure) {
    let differences = differences(a, b, disclosure);
    assert!(
        differences.is_empty(),
        "the platform can tell the runs apart:\n{}",
        differences.join("\n")
    );
}

/// How `a`'s enclave-to-enclave traffic (as the host's relay saw it) differs from `b`'s: the
/// record counts and sizes of every connection and direction, and under
/// [`Disclosure::Private`] when each one's first and last record passed.
pub fn peer_traffic_differences(
    a: &Transcript,
    b: &Transcript,
    disclosure: Disclosure,
) -> Vec<String> {
    let shapes = |t: &Transcript| {
        t.peer_traffic
            .iter()
            .map(|(shape, ..)| shape.clone())
            .collect::<Vec<_>>()
    };
    let (shapes_a, shapes_b) = (shapes(a), shapes(b));
    let mut out = Vec::new();
    if shapes_a != shapes_b {
        out.push(format!(
            "enclave-to-enclave traffic differ:\n  {shapes_a:?}\n  {shapes_b:?}"
        ));
    }
    if let Disclosure::Private = disclosure {
        for ((shape, first_a, last_a), (_, first_b, last_b)) in
            a.peer_traffic.iter().zip(&b.peer_traffic)
        {
            if first_a.abs_diff(*first_b) > TIME_QUANTUM || last_a.abs_diff(*last_b) > TIME_QUANTUM
            {
                out.push(format!(
                    "enclave-to-enclave traffic `{shape}` ran from {first_a:?} to {last_a:?} \
                     and from {first_b:?} to {last_b:?}: more than {TIME_QUANTUM:?} apart"
                ));
            }
        }
    }
    out
}

/// Everything by which the platform could tell `a` from `b`, under `disclosure`.
pub fn differences(a: &Transcript, b: &Transcript, disclosure: Disclosure) -> Vec<String> {
    let mut out = Vec::new();
    let compare = |what: &str, x: &dyn std::fmt::Debug, y: &dyn std::fmt::Debug| {
        let (x, y) = (format!("{x:?}"), format!("{y:?}"));
        (x != y).then(|| format!("{what} differ:\n  {x}\n  {y}"))
    };
    out.extend(compare("stored objects", &a.objects, &b.objects));
    out.extend(compare(
        "frames between host and enclaves",
        &a.frames,
        &b.frames,
    ));
    out.extend(peer_traffic_differences(a, b, disclosure));
    out.extend(compare("host logs", &a.log, &b.log));
    out.extend(compare("host outputs", &a.stdout, &b.stdout));
    out.extend(compare("public job statuses", &a.api, &b.api));
    out.extend(compare("event streams", &a.event_sizes, &b.event_sizes));
    let last = |t: &Transcript| {
        t.states
            .last()
            .copied()
            .unwrap_or((JobState::Created, Duration::ZERO))
    };
    let ((end_a, at_a), (end_b, at_b)) = (last(a), last(b));
    out.extend(compare("final job states", &end_a, &end_b));
    out.extend(compare(
        "training enclave counts",
        &a.training_peaks.len(),
        &b.training_peaks.len(),
    ));
    if let Disclosure::Private = disclosure {
        if at_a.abs_diff(at_b) > TIME_QUANTUM {
            out.push(format!(
                "jobs ended at {at_a:?} and {at_b:?}: more than {TIME_QUANTUM:?} apart"
            ));
        }
        // A live job's intermediate states are sampled and may be missed when it is quick;
        // a private job's cannot be.
        let states = |t: &Transcript| t.states.iter().map(|(s, _)| *s).collect::<Vec<_>>();
        out.extend(compare("job state sequences", &states(a), &states(b)));
        // The first state is seen when the job starts; every later change is timed.
        for ((state, ta), (_, tb)) in a.states.iter().zip(&b.states).skip(1) {
            if ta.abs_diff(*tb) > TIME_QUANTUM {
                out.push(format!(
                    "{state:?} seen at {ta:?} and {tb:?}: more than {TIME_QUANTUM:?} apart"
                ));
            }
        }
        for (pa, pb) in a.training_peaks.iter().zip(&b.training_peaks) {
            if pa.abs_diff(*pb) > MEMORY_QUANTUM {
                out.push(format!(
                    "training enclave peaks differ: {} MiB and {} MiB",
                    pa >> 20,
                    pb >> 20
                ));
            }
        }
    }
    out
}

/// Asserts that no encoding of `canary` appears anywhere in `transcript`.
pub fn assert_no_canary(transcript: &Transcript, canary: &str) {
    for (name, bytes) in &transcript.raw {
        for needle in encodings(canary) {
            assert!(!contains(bytes, &needle), "canary found in {name}");
        }
    }
}

/// A fresh random alphanumeric canary of 24 characters.
pub fn random_canary() -> String {
    rand::thread_rng()
        .sample_iter(rand::distributions::Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

/// Every encoding of the canary we can think of: raw, hex (both cases), base64 (standard and
/// URL-safe, at every alignment), and as the `f32` values the runtime and queries use.
pub fn encodings(canary: &str) -> Vec<Vec<u8>> {
    let raw = canary.as_bytes();
    let mut out = vec![
        raw.to_vec(),
        hex::encode(raw).into_bytes(),
        hex::encode_upper(raw).into_bytes(),
        base64::engine::general_purpose::STANDARD
            .encode(raw)
            .into_bytes(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(raw)
            .into_bytes(),
        raw.iter()
            .flat_map(|&b| (f32::from(b) / 255.0).to_le_bytes())
            .collect(),
    ];
    // Base64 at every alignment: a middle slice of the canary encoded from any offset.
    for shift in 1..3 {
        out.push(
            base64::engine::general_purpose::STANDARD
                .encode(&raw[shift..])
                .into_bytes()[4..20]
                .to_vec(),
        );
    }
    out
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Writes `canary` into the first pixels of every tenth image of an image dataset.
pub fn plant_canary(data: &mut PlainDataset, canary: &str) {
    let n = data.header.train_count as usize + data.header.valid_count as usize;
    let feature_len = data.header.feature_len();
    let pixels = n * 4; // features start after the u32 labels
    for image in (0..n).step_by(10) {
        let at = pixels + image * feature_len;
        data.body[at..at + canary.len()].copy_from_slice(canary.as_bytes());
    }
}

/// Two image datasets with the same public header and different contents, each carrying its
/// own canary: the first `count` Fashion-MNIST training images, and the same images rotated so
/// that the first training example's label has the other parity (the "secret bit" the
/// hostile fixtures read).
pub fn twin_datasets(count: usize) -> [(PlainDataset, String); 2] {
    let a = crate::fashion_subset(count);
    let n = a.header.train_count as usize + a.header.valid_count as usize;
    let feature_len = a.header.feature_len();
    let label = |d: &PlainDataset, i: usize| {
        u32::from_le_bytes(d.body[i * 4..i * 4 + 4].try_into().expect("4 bytes"))
    };
    let shift = (1..n)
        .find(|&i| label(&a, i) % 2 != label(&a, 0) % 2)
        .expect("both parities occur");
    let mut b = a.clone();
    let (labels, pixels) = b.body.split_at_mut(n * 4);
    labels.rotate_left(shift * 4);
    pixels.rotate_left(shift * feature_len);
    let out = [a, b].map(|mut d| {
        let canary = random_canary();
        plant_canary(&mut d, &canary);
        (d, canary)
    });
    assert_eq!(out[0].0.header, out[1].0.header);
    assert_ne!(label(&out[0].0, 0) % 2, label(&out[1].0, 0) % 2);
    out
}

/// Replaces every id (a run of 16 or more hex digits) by `<id N>`, N counting distinct ids in
/// order of first appearance, and the host's loopback port by `<port>`, so that two runs'
/// texts compare equal when only their ids and ports differ.
#[derive(Default)]
struct IdNames {
    seen: HashMap<String, usize>,
}

impl IdNames {
    fn replace(&mut self, text: &str) -> String {
        // The host's port is the harness's choice, not the job's.
        let text = &match text.split_once("127.0.0.1:") {
            Some((before, after)) => format!(
                "{before}127.0.0.1:<port>{}",
                after.trim_start_matches(|c: char| c.is_ascii_digit())
            ),
            None => text.to_owned(),
        };
        let mut out = String::with_capacity(text.len());
        let mut run = String::new();
        for c in text.chars().chain(std::iter::once('\0')) {
            if c.is_ascii_hexdigit() {
                run.push(c);
                continue;
            }
            if run.len() >= 16 {
                let next = self.seen.len();
                let n = *self.seen.entry(std::mem::take(&mut run)).or_insert(next);
                out.push_str(&format!("<id {n}>"));
            } else {
                out.push_str(&run);
                run.clear();
            }
            if c != '\0' {
                out.push(c);
            }
        }
        out
    }
}

/// Samples the peak resident memory of a host's enclave processes until stopped.
struct EnclaveMonitor {
    stop: Arc<AtomicBool>,
    peaks: Arc<Mutex<Vec<(u32, u64)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EnclaveMonitor {
    fn start(host_pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peaks: Arc<Mutex<Vec<(u32, u64)>>> = Arc::default();
        let thread = {
            let (stop, peaks) = (stop.clone(), peaks.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for pid in training_enclaves(host_pid) {
                        let Some(peak) = peak_rss(pid) else { continue };
                        let mut peaks = peaks.lock().expect("monitor lock");
                        match peaks.iter_mut().find(|(p, _)| *p == pid) {
                            Some((_, seen)) => *seen = (*seen).max(peak),
                            None => peaks.push((pid, peak)),
                        }
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        Self {
            stop,
            peaks,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the peaks in order of the processes' discovery.
    fn stop(mut self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("monitor thread");
        }
        let peaks = self.peaks.lock().expect("monitor lock");
        peaks.iter().map(|(_, peak)| *peak).collect()
    }
}

/// Children of `parent` running the enclave binary in a training role: a job's only
/// training enclave, or a distributed job's workers.
fn training_enclaves(parent: u32) -> Vec<u32> {
    crate::enclave_processes(parent, &["train", "worker"])
}

/// `VmHWM` of a process, in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib << 10)
}
