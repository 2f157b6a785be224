//! The training role: open the owner's request, decrypt the data, run the program, seal.

use std::io::Read;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chiron_crypto::channel::RESUME_SALT_LEN;
use chiron_crypto::{DataKey, ResponseKey, SealingKey};
use chiron_proto::dataset::DatasetHeader;
use chiron_proto::manifest::ProgramPolicy;
use chiron_proto::owner::{HELD_EVENT_SLOTS, OwnerEvent, TRAIN_INFO, TrainRequest};
use chiron_proto::wire::{DATASET_PART, EnclaveFrame, HostFrame, read_frame, write_frame};
use chiron_sandbox::{Model, Sandbox, SandboxConfig, TrainJob, TrainingData};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

use chiron_attest::attester::Platform;
use chiron_proto::evidence::Role;

use crate::identity::Enclave;
use crate::memory;
use crate::sealed::{EncodeError, SealedModel};
use crate::worker::ServerLink;

/// Largest dataset container accepted (the plaintext bound plus encryption overhead).
const MAX_CONTAINER: u64 = chiron_proto::dataset::MAX_PLAINTEXT_LEN + (1 << 30);

/// The host's start frame, unpacked.
pub struct Start {
    pub job_id: String,
    pub request: Source,
    pub program: Vec<u8>,
    pub dataset_len: u64,
    /// A worker's parameter server, as the host names it.
    pub parameter_server: Option<String>,
}

/// Where a job's request comes from.
pub enum Source {
    /// The owner's request, sealed to this enclave's key.
    Owner(Vec<u8>),
    /// The ticket of a lost worker this one replaces ([`EnclaveFrame::WorkerTicket`]), and
    /// how many events the job's stream holds (the host's word).
    Ticket { sealed: Vec<u8>, events_from: u64 },
}

/// How a job's program ended well.
enum Ended {
    /// It saved its model, sealed here, of `parameters` parameters; `cut_short`: the time
    /// budget ran out first, and the model is the program's last save.
    Trained {
        sealed: Vec<u8>,
        parameters: u64,
        cut_short: bool,
    },
    /// A replacement worker let go by its parameter server: rank 0 is done.
    Released,
}

/// A worker's ticket's associated data: its job, so a ticket opens for no other.
fn ticket_aad(job_id: &str) -> Vec<u8> {
    [b"chiron/v1 worker ticket ".as_slice(), job_id.as_bytes()].concat()
}

/// What a worker's ticket holds, sealed to the runtime on this platform: the owner's
/// request and, in rank 0's ticket (live jobs only), the owner's response key, so that a
/// replacement of rank 0 can go on telling the owner, under a key derived from it
/// ([`ResponseKey::resumed`]).
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct TicketContents {
    request: Vec<u8>,
    owner_key: Option<[u8; 32]>,
    /// When the first worker started (Unix seconds, the platform's clock): a live job's
    /// replacement has what is left of the job's time budget, not a budget of its own.
    started_unix_secs: u64,
}

fn unix_now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// A failure: a fixed label for the host and, when the owner's channel exists, a detail
/// for the owner.
struct Failure {
    public: &'static str,
    detail: String,
}

fn fail(public: &'static str, detail: impl ToString) -> Failure {
    Failure {
        public,
        detail: detail.to_string(),
    }
}

/// Runs one training job and returns the frame that ends it.
///
/// The job's work (decryption, the program, sealing) runs on a worker thread; this thread is
/// the watchdog. Under private terms it alone decides what the platform sees and when: at
/// the declared time it takes the worker's result if there is one and a "program failed"
/// otherwise (a worker stuck in a native call, or crashed), pads the peak memory, releases
/// the held events and returns the end frame, whatever the worker is doing.
pub fn run(enclave: &Enclave, start: Start, input: &mut impl Read) -> EnclaveFrame {
    let started = Instant::now();
    // Receive the dataset first, whatever happens, so the connection stays in step.
    let container = receive_dataset(input, start.dataset_len);
    let resumed = matches!(start.request, Source::Ticket { .. });
    // A replacement of rank 0's salt: its key is derived as soon as the ticket opens, so
    // that it never holds, let alone seals under, the owner's key itself.
    let mut resume_salt = [0u8; RESUME_SALT_LEN];
    rand::rngs::OsRng.fill_bytes(&mut resume_salt);
    let mut elapsed_secs = 0;
    let (request_bytes, response_key) = match &start.request {
        Source::Owner(sealed) => {
            match enclave
                .keypair
                .open(TRAIN_INFO, start.job_id.as_bytes(), sealed)
            {
                Ok((bytes, key)) => (bytes, Some(key)),
                // Without the owner's key there is no one to tell the detail to.
                Err(_) => return failed("training request failed authentication"),
            }
        }
        // A replacement of a worker other than rank 0 tells the owner nothing: the owner
        // follows rank 0 only. A replacement of rank 0 tells the owner under a key of its
        // own, derived from the owner's and a fresh salt, since it cannot know which
        // counters the lost rank 0 used under the owner's key.
        Source::Ticket { sealed, .. } => {
            let contents = enclave
                .ticket_key()
                .and_then(|key| key.unseal(&ticket_aad(&start.job_id), sealed).ok())
                .and_then(|bytes| postcard::from_bytes::<TicketContents>(&bytes).ok());
            match contents {
                Some(contents) => {
                    elapsed_secs = unix_now_secs().saturating_sub(contents.started_unix_secs);
                    (
                        chiron_crypto::Zeroizing::new(contents.request.clone()),
                        contents
                            .owner_key
                            .map(|key| ResponseKey::from_bytes(key).resumed(&resume_salt)),
                    )
                }
                None => return failed("worker ticket failed authentication"),
            }
        }
    };
    let request: Result<TrainRequest, Failure> = postcard::from_bytes(&request_bytes)
        .map_err(|e| fail("malformed training request", e))
        .and_then(
            |request: TrainRequest| match request.private.map(|p| p.validate()) {
                Some(Err(e)) => Err(fail("malformed training request", e)),
                _ => Ok(request),
            },
        );
    let request = request.and_then(|mut request| {
        let live = request.private.is_none();
        if resumed && live {
            let elapsed = u32::try_from(elapsed_secs).unwrap_or(u32::MAX);
            request.time_budget_secs = request.time_budget_secs.saturating_sub(elapsed);
        }
        let place = request.distributed.as_ref();
        match place {
            // Rank 0's events are the job's: a replacement must be able to go on with them,
            // which only a live job's stream allows (a private one has a fixed length).
            Some(place) if resumed && place.rank == 0 && !(live && response_key.is_some()) => {
                Err(fail(
                    "malformed training request",
                    "a ticket of rank 0 without the owner's key, or of a private job",
                ))
            }
            // Decided by the public terms, the rank and the platform, never by the data;
            // sent before the program runs, so a private job's ticket says nothing either.
            Some(place) if !resumed && (place.rank != 0 || live) => {
                if let Some(key) = enclave.ticket_key() {
                    let contents = TicketContents {
                        request: request_bytes.to_vec(),
                        owner_key: (place.rank == 0)
                            .then(|| response_key.as_ref().map(ResponseKey::to_bytes))
                            .flatten(),
                        started_unix_secs: unix_now_secs(),
                    };
                    if let Ok(bytes) = postcard::to_allocvec(&contents) {
                        let sealed = key.seal(&ticket_aad(&start.job_id), &bytes);
                        let _ = enclave.send(&EnclaveFrame::WorkerTicket { sealed });
                    }
                }
                Ok(request)
            }
            None if resumed => Err(fail(
                "malformed training request",
                "a ticket of a lone training enclave",
            )),
            _ => Ok(request),
        }
    });
    // Private mode: everything the platform sees next happens at the budget's end.
    let private = request.as_ref().ok().and_then(|r| r.private);
    let deadline = request
        .as_ref()
        .ok()
        .filter(|r| r.private.is_some())
        .map(|r| started + Duration::from_secs(u64::from(r.time_budget_secs)));
    let events = Events {
        out: enclave.sender(),
        job_id: start.job_id.clone(),
        key: response_key,
        salt: None,
        seq: Arc::new(AtomicU64::new(0)),
        held: deadline.map(|_| Arc::new(Mutex::new(Vec::new()))),
    };
    // A replacement of rank 0 first tells the owner that it took over, under its own key.
    let events = match &start.request {
        Source::Ticket { events_from, .. } => events.resumed(resume_salt, *events_from),
        Source::Owner(_) => events,
    };
    // What the program may allocate: under private terms, the declared peak less what the
    // runtime itself needs outside the gauge; otherwise a fixed ceiling.
    chiron_sandbox::memory::set_limit(match private {
        Some(terms) => program_memory_limit(terms.memory_bytes()),
        None => LIVE_MEMORY_LIMIT,
    });
    chiron_sandbox::memory::reset_peak();
    // Under private terms, `reserve` before the declared end (never before the start).
    let before_end = |reserve: fn(&chiron_proto::owner::PrivateTerms) -> Duration| {
        deadline
            .zip(private)
            .map(|(end, terms)| end.checked_sub(reserve(&terms)).unwrap_or(started))
    };
    let outcome = match request {
        Err(f) => Err(f),
        Ok(request) => {
            // Decided by the platform alone (TDX has no sealing key), never by the data.
            let sealing = match enclave.model_key() {
                Ok(key) => key,
                Err(public) => return failed(public),
            };
            let worker = Worker {
                platform: PlatformTerms {
                    sealing,
                    sandbox: enclave.sandbox_config(),
                    attester: Arc::clone(&enclave.platform),
                    role: enclave.role,
                },
                parameter_server: start.parameter_server,
                job_id: start.job_id.clone(),
                program: start.program,
                request,
                container,
                events: events.clone(),
                // The program stops early enough for sealing and padding to end in time.
                program_deadline: before_end(finish_reserve),
            };
            watch(worker, before_end(padding_reserve))
        }
    };
    // The program is done (or abandoned): padding below may allocate past its limit.
    chiron_sandbox::memory::set_limit(usize::MAX);
    // For the owner (who sizes private jobs by it), before any padding.
    let peak_memory_mib = memory::Usage::read()
        .map(|usage| u32::try_from(usage.peak >> 20).unwrap_or(u32::MAX))
        .unwrap_or(0);
    // Whatever the program allocated, and whether or not it failed, the platform sees the
    // declared peak. Going over it is the program's doing, so it gets the program's label.
    let outcome = match private {
        Some(terms) if enclave.pads_resident_memory() => {
            let padded = memory::pad_peak_to(terms.memory_bytes());
            outcome.and_then(|ok| padded.map(|()| ok).map_err(|e| fail("program failed", e)))
        }
        _ => outcome,
    };
    let frame = match outcome {
        // A private job's replacement ends as let go whatever its program did: its model is
        // never the job's, and whether it was let go before finishing depends on its data.
        _ if resumed && private.is_some() => EnclaveFrame::Released,
        Ok(Ended::Trained {
            sealed,
            parameters,
            cut_short,
        }) => {
            if cut_short {
                events.emit(&OwnerEvent::CutShort);
            }
            events.emit(&OwnerEvent::Finished {
                parameters,
                peak_memory_mib,
            });
            EnclaveFrame::Trained {
                sealed_model: sealed,
            }
        }
        Ok(Ended::Released) => EnclaveFrame::Released,
        Err(f) => {
            events.emit(&OwnerEvent::Failed { detail: f.detail });
            failed(f.public)
        }
    };
    if let Some(deadline) = deadline {
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
        events.release();
    }
    frame
}

/// The least time between two progress events of a live job.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Memory ceiling of a live job's program (the process's allocations, dataset included).
const LIVE_MEMORY_LIMIT: usize = 8 << 30;

/// What the runtime needs outside the memory gauge (its code, stacks and the wasm engine),
/// less the program's linear memory, which the final peak check counts.
const OUTSIDE_GAUGE: u64 = 64 << 20;

/// The gauge's limit for a private job declaring `declared` bytes of peak memory.
fn program_memory_limit(declared: u64) -> usize {
    usize::try_from(declared.saturating_sub(OUTSIDE_GAUGE)).unwrap_or(usize::MAX)
}

/// How long before a private job's end the watchdog stops waiting for the worker: the time
/// padding the peak memory may take (touching pages at well under 1 GiB/s, plus a margin).
fn padding_reserve(terms: &chiron_proto::owner::PrivateTerms) -> Duration {
    Duration::from_millis(250 + u64::from(terms.memory_mib))
}

/// How long before a private job's end the program is stopped: padding, plus sealing the
/// padded model (hashing and encrypting at well over 100 MiB/s) and the runtime's own
/// deadline bound.
fn finish_reserve(terms: &chiron_proto::owner::PrivateTerms) -> Duration {
    padding_reserve(terms) + Duration::from_millis(250 + 10 * u64::from(terms.model_mib))
}

/// Waits for the worker: until `give_up` under private terms, for as long as it takes
/// otherwise. A worker that has not answered by then, or that died, failed.
fn watch(worker: Worker, give_up: Option<Instant>) -> Result<Ended, Failure> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("chiron-job".into())
        .spawn(move || {
            let _ = tx.send(worker.run());
        });
    if spawned.is_err() {
        return Err(fail("sandbox failure", "cannot start the job's thread"));
    }
    let received = match give_up {
        Some(at) => rx
            .recv_timeout(at.saturating_duration_since(Instant::now()))
            .map_err(|e| match e {
                RecvTimeoutError::Timeout => "the program exceeded its time budget",
                RecvTimeoutError::Disconnected => "the runtime failed while running the program",
            }),
        None => rx
            .recv()
            .map_err(|_| "the runtime failed while running the program"),
    };
    received.unwrap_or_else(|detail| Err(fail("program failed", detail)))
}

/// Everything the job's thread owns.
/// What the platform decides for a job: the key its model is sealed under and the sandbox's
/// memory layout.
struct PlatformTerms {
    sealing: SealingKey,
    sandbox: SandboxConfig,
    /// What attests this enclave to its parameter server, on a worker.
    attester: Arc<dyn Platform>,
    /// Train (the job's only enclave) or worker (one of several).
    role: Role,
}

struct Worker {
    platform: PlatformTerms,
    job_id: String,
    program: Vec<u8>,
    request: TrainRequest,
    container: Result<Vec<u8>, String>,
    events: Events,
    program_deadline: Option<Instant>,
    parameter_server: Option<String>,
}

impl Worker {
    fn run(self) -> Result<Ended, Failure> {
        let container = self
            .container
            .map_err(|e| fail("dataset transfer failed", e))?;
        train(
            self.platform,
            self.parameter_server,
            &self.job_id,
            &self.program,
            self.request,
            container,
            &self.events,
            self.program_deadline,
        )
    }
}

fn failed(public: &str) -> EnclaveFrame {
    EnclaveFrame::Failed {
        public: public.to_owned(),
    }
}

fn receive_dataset(input: &mut impl Read, len: u64) -> Result<Vec<u8>, String> {
    if len > MAX_CONTAINER {
        return Err(format!("dataset of {len} bytes is above the limit"));
    }
    let mut container = Vec::with_capacity(len as usize);
    while (container.len() as u64) < len {
        match read_frame::<HostFrame>(input) {
            Ok(HostFrame::DatasetPart(part))
                if part.len() <= DATASET_PART
                    && container.len() as u64 + part.len() as u64 <= len =>
            {
                container.extend_from_slice(&part)
            }
            Ok(_) => return Err("unexpected frame during the dataset transfer".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(container)
}

#[allow(clippy::too_many_arguments)]
fn train(
    platform: PlatformTerms,
    parameter_server: Option<String>,
    job_id: &str,
    program: &[u8],
    request: TrainRequest,
    container: Vec<u8>,
    events: &Events,
    deadline: Option<Instant>,
) -> Result<Ended, Failure> {
    let digest: [u8; 32] = Sha256::digest(program).into();
    if digest != request.program_digest {
        return Err(fail(
            "program mismatch",
            "the host supplied a different program than the one the owner approved",
        ));
    }
    let policy = check_terms(program, &request)?;
    let key = DataKey::from_bytes(request.data_key);
    // A worker gets only the chunks that hold its shard; they decrypt to the shard's body.
    let shard = request
        .distributed
        .as_ref()
        .map(|place| (place.rank, place.exchange.workers));
    let decrypted = match shard {
        // In the container's own memory: the enclave never holds the dataset (or its shard)
        // twice.
        None => chiron_crypto::decrypt_dataset_in_place(&key, container),
        Some((rank, workers)) => {
            let select =
                |header: &DatasetHeader| header.shard(rank, workers).map(|(_, ranges)| ranges);
            chiron_crypto::decrypt_dataset_part_in_place(&key, container, select).and_then(
                |(header, body)| match header.shard(rank, workers) {
                    Some((shard, _)) => Ok((shard, body)),
                    None => Err(chiron_crypto::CryptoError::DatasetPartInvalid),
                },
            )
        }
    };
    let (header, body) = decrypted.map_err(|e| match (e, shard) {
        (chiron_crypto::CryptoError::DatasetPartInvalid, Some((rank, workers))) => fail(
            "dataset is malformed",
            format!(
                "the dataset's header leaves worker {rank} of {workers} no training examples \
                 (too few for {workers} workers, or a header that is not yours)"
            ),
        ),
        (e, _) => fail(
            "dataset failed authentication",
            format!("the dataset the host supplied is not the one you uploaded: {e}"),
        ),
    })?;
    check_inputs(&policy, &header)?;
    let data =
        TrainingData::from_plaintext(header, body).map_err(|e| fail("dataset is malformed", e))?;
    events.emit(&OwnerEvent::Started {
        train_count: data.header().train_count,
        valid_count: data.header().valid_count,
    });

    let job_end = deadline.unwrap_or_else(|| {
        Instant::now() + Duration::from_secs(u64::from(request.time_budget_secs))
    });
    let (data, link) = match (&request.distributed, platform.role) {
        (None, Role::Train) => (data, None),
        (Some(place), Role::Worker) => {
            place
                .exchange
                .validate()
                .map_err(|e| fail("malformed training request", e))?;
            // Unpaced, the exchange's timing follows the program, and so the data.
            if request.private.is_some() && place.exchange.pace.is_none() {
                return Err(fail(
                    "terms refused",
                    "a private distributed job needs a paced exchange (`ExchangeTerms::pace`)",
                ));
            }
            let address = parameter_server.ok_or_else(|| {
                fail(
                    "parameter exchange failed",
                    "the host named no parameter server",
                )
            })?;
            let link = ServerLink::connect(
                Arc::clone(&platform.attester),
                job_id,
                place,
                &address,
                job_end,
            )
            .map_err(|e| fail("parameter exchange failed", e))?;
            (data, Some(link))
        }
        _ => {
            return Err(fail(
                "request not valid for this enclave's role",
                "a distributed job's request went to a lone training enclave, or the reverse",
            ));
        }
    };

    let sandbox = Sandbox::new(platform.sandbox).map_err(|e| fail("sandbox failure", e))?;
    let program = sandbox.load(program).map_err(program_failure)?;
    let metrics_events = events.clone();
    let progress_events = events.clone();
    // A live job's progress, at most one event a second; a private job holds every event
    // until its budget has passed, when progress means nothing.
    let mut last_progress: Option<Instant> = None;
    let live = request.private.is_none();
    // Under private timing the budget counts from the job's start, so that the program is
    // stopped before the events are released.
    let time_budget = match deadline {
        Some(deadline) => deadline.saturating_duration_since(Instant::now()),
        None => Duration::from_secs(u64::from(request.time_budget_secs)),
    };
    // The last epoch the program reported a metric for: the exchange's totals are the
    // job's by then, and the owner reads them under it.
    let last_epoch = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let last_epoch_seen = Arc::clone(&last_epoch);
    let job = TrainJob::new(Arc::new(data), request.seed, request.epochs, time_budget)
        .with_progress(move |p| {
            let due = last_progress.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY);
            if live && due {
                last_progress = Some(Instant::now());
                progress_events.emit(&OwnerEvent::Progress {
                    epoch: p.epoch,
                    step: p.step,
                    steps: p.steps,
                });
            }
        })
        .with_metrics(move |m| {
            last_epoch_seen.fetch_max(m.epoch, std::sync::atomic::Ordering::Relaxed);
            metrics_events.emit(&OwnerEvent::Metric {
                name: m.name,
                epoch: m.epoch,
                value: m.value,
            })
        });
    let job = match &link {
        Some(link) => job.with_exchange(Box::new(link.clone())),
        None => job,
    };
    let trained = sandbox.train(&program, job.keep_last_save(request.keep_last_save));
    if let Some(link) = &link {
        if link.released() {
            return Ok(Ended::Released);
        }
        link.finish(trained.is_ok());
        // For the owner, who sizes the next job's workers and tick by them.
        let stats = link.stats();
        for (name, value) in [
            ("exchange_rounds", stats.rounds as f32),
            ("exchange_dropped", stats.dropped as f32),
            ("exchange_wait_s", stats.waiting.as_secs_f32()),
        ] {
            events.emit(&OwnerEvent::Metric {
                name: name.to_owned(),
                epoch: last_epoch.load(std::sync::atomic::Ordering::Relaxed),
                value,
            });
        }
    }
    let chiron_sandbox::Trained { model, cut_short } = trained.map_err(program_failure)?;
    let parameters = model.parameter_count() as u64;
    let contents = SealedModel {
        program_digest: digest,
        answers: request.answers,
        query_budget: request.query_budget,
        query_token_digest: request.query_token_digest,
        answer_ms: request.private.map(|p| p.answer_ms),
        model: model.to_bytes(),
    };
    // Too large a model is the program's doing, so it gets the program's label.
    let plaintext = contents
        .encode(request.private.map(|p| p.model_bytes()))
        .map_err(|e| match e {
            EncodeError::TooLarge { .. } => fail("program failed", e),
            EncodeError::Encode(_) => fail("sealing failed", e),
        })?;
    // What trains must load: the query enclave's own decoding and validation, on exactly
    // what is sealed. A program that saved something else failed, under the program's label.
    SealedModel::decode(&plaintext)
        .and_then(|sealed| Model::from_bytes(&sealed.model).ok())
        .ok_or_else(|| fail("program failed", "the saved model would not load"))?;
    let sealed = platform.sealing.seal(job_id.as_bytes(), &plaintext);
    Ok(Ended::Trained {
        sealed,
        parameters,
        cut_short,
    })
}

/// A failure of the program: its fixed label for the platform, and for the owner which
/// limit or check stopped it (never the shapes or values it used).
fn program_failure(e: chiron_sandbox::SandboxError) -> Failure {
    fail(e.public_class(), e.owner_detail())
}

/// The provider's extraction policy, read from the program this enclave runs (its manifest,
/// or the default policy): the owner's terms may only tighten it. Refused terms fail the job
/// with the public label "terms refused" and tell the owner which limit they exceed.
fn check_terms(program: &[u8], request: &TrainRequest) -> Result<ProgramPolicy, Failure> {
    let policy =
        chiron_proto::manifest::program_policy(program).map_err(|e| fail("program refused", e))?;
    policy
        .manifest
        .permits(request.answers, request.query_budget)
        .map_err(|e| {
            fail(
                "terms refused",
                format!("the program's extraction policy refuses your terms: {e}"),
            )
        })?;
    Ok(policy)
}

/// Refuses, before the program runs, a dataset the program declares it does not take. The
/// header is public, so the label may say so.
fn check_inputs(policy: &ProgramPolicy, header: &DatasetHeader) -> Result<(), Failure> {
    match &policy.inputs {
        Some(inputs) => inputs.accepts(header).map_err(|e| {
            fail(
                "dataset not taken by the program",
                format!("{e}; the program takes {inputs}"),
            )
        }),
        None => Ok(()),
    }
}

/// The owner's encrypted event stream for one job: fixed-size events, each encrypted under
/// the owner's response key at its sequence number, so the host can neither read, reorder
/// nor drop one unnoticed.
#[derive(Clone)]
struct Events {
    out: Arc<Mutex<TcpStream>>,
    job_id: String,
    /// `None` in a replacement worker, which tells the owner nothing.
    key: Option<chiron_crypto::ResponseKey>,
    /// A replacement of rank 0's salt, before every event's ciphertext.
    salt: Option<[u8; RESUME_SALT_LEN]>,
    seq: Arc<AtomicU64>,
    /// Under private timing, the events held back until [`Events::release`].
    held: Option<Arc<Mutex<Vec<OwnerEvent>>>>,
}

impl Events {
    fn emit(&self, event: &OwnerEvent) {
        match &self.held {
            Some(held) => {
                if let Ok(mut held) = held.lock() {
                    held.push(event.clone());
                }
            }
            None => self.send(event),
        }
    }

    /// Sends the held events as exactly [`HELD_EVENT_SLOTS`] frames: the first ones and the
    /// final one when there are too many, padding when there are too few.
    fn release(&self) {
        let Some(held) = &self.held else { return };
        let mut events = held
            .lock()
            .map(|mut held| std::mem::take(&mut *held))
            .unwrap_or_default();
        if events.len() > HELD_EVENT_SLOTS {
            let last = events.pop();
            events.truncate(HELD_EVENT_SLOTS - 1);
            events.extend(last);
        }
        events.resize(HELD_EVENT_SLOTS, OwnerEvent::Padding);
        for event in &events {
            self.send(event);
        }
    }

    /// The stream of a replacement of rank 0 (whose key, derived from the owner's and
    /// `salt`, is already this stream's), which goes on from the job's `events_from` events:
    /// each event sealed at its position, the salt in clear before its ciphertext (the
    /// owner's client derives the same key from it); the first one says that a replacement
    /// took over. A replacement of another worker has no key, and says nothing.
    fn resumed(self, salt: [u8; RESUME_SALT_LEN], events_from: u64) -> Self {
        if self.key.is_none() {
            return self;
        }
        let events = Self {
            salt: Some(salt),
            seq: Arc::new(AtomicU64::new(events_from)),
            ..self
        };
        events.send(&OwnerEvent::Resumed);
        events
    }

    fn send(&self, event: &OwnerEvent) {
        let Some(key) = &self.key else { return };
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        let sealed = key.seal(seq, self.job_id.as_bytes(), &event.to_padded());
        let ciphertext = match &self.salt {
            Some(salt) => [salt.as_slice(), &sealed].concat(),
            None => sealed,
        };
        self.write(EnclaveFrame::Event { seq, ciphertext });
    }

    fn write(&self, frame: EnclaveFrame) {
        // A lost event cannot be reported anywhere else; the job's end frame still is.
        if let Ok(mut out) = self.out.lock() {
            let _ = write_frame(&mut *out, &frame);
        }
    }
}
