//! Training jobs: their records, and one task per job that owns its training enclave.
//!
//! A job's record lives in memory behind its own lock. Its state is persisted as JSON at
//! `jobs/<id>.json` on every change of state (one atomic put); each event is appended as an
//! object of its own, `events/<id>/<seq>.bin`, so an event costs one small write however many
//! came before it. All enclave I/O happens in the job's own task (see
//! [`run_job`]); request handlers talk to it through a channel and never hold a lock across
//! enclave I/O, so a job whose enclave hangs or crashes affects no other job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Bytes, BytesMut};
use chiron_proto::api::{Events, JobEnclave, JobState, JobStatus, SealedRequests};
use chiron_proto::wire::{DATASET_PART, EnclaveFrame, Frame, FrameError, HostFrame};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::enclave::{Enclave, EnclaveError, Role, clean_label, read_frame, write_frame};
use crate::ids::{DatasetId, JobId, ProgramId};
use crate::launcher::Launcher;
use crate::limits::{Held, Limits, Pool, Refusal};
use crate::store::{self, Store, StoreError};

/// How long a training enclave may take to produce evidence.
pub const EVIDENCE_TIMEOUT: Duration = Duration::from_secs(60);
/// After the dataset transfer broke, how long to wait for the enclave's closing frame.
pub(crate) const CLOSING_GRACE: Duration = Duration::from_secs(30);
/// Largest event ciphertext accepted (events are padded to a small fixed size).
pub(crate) const MAX_EVENT_LEN: usize = 64 << 10;

/// Public failure labels set by the host itself.
pub mod labels {
    /// The enclave's connection closed (or broke) before it reported an outcome.
    pub const ENCLAVE_EXITED: &str = "enclave exited";
    /// The enclave stopped answering.
    pub const ENCLAVE_UNRESPONSIVE: &str = "enclave unresponsive";
    /// The enclave sent a frame that does not fit the protocol.
    pub const PROTOCOL: &str = "enclave protocol error";
    /// The host restarted while the job was waiting or running.
    pub const HOST_RESTARTED: &str = "host restarted";
    /// The host was shut down (SIGTERM) while the job was waiting or running.
    pub const HOST_SHUT_DOWN: &str = "host shut down";
    /// The owner did not send the start request within the host's start timeout.
    pub const NOT_STARTED: &str = "not started in time";
    /// The host could not read the program or dataset from its store.
    pub const HOST_READ: &str = "host could not read the program or dataset";
    /// The host could not relay a distributed job's enclave-to-enclave traffic.
    pub const HOST_RELAY: &str = "host could not relay the enclaves' traffic";
    /// The host could not store the sealed model.
    pub const HOST_WRITE: &str = "host could not store the model";
}

/// One stored event: its sequence number and base64 ciphertext.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Position in the job's event stream.
    pub seq: u64,
    /// Standard base64 of the ciphertext.
    pub ciphertext: String,
}

/// A job's persisted record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job's id.
    pub job_id: String,
    /// The program it runs.
    pub program_id: String,
    /// The dataset it trains on.
    pub dataset_id: String,
    /// Its state.
    pub state: JobState,
    /// Public failure label, when failed.
    pub error: Option<String>,
    /// The encrypted event stream so far (rank 0's, in a distributed job). Kept in memory
    /// and stored as objects of their own; records written before that held them inline.
    #[serde(default, skip_serializing)]
    pub events: Vec<StoredEvent>,
    /// Whether `events` holds the stored stream (a job loaded at start reads it when first
    /// asked for it).
    #[serde(skip)]
    events_loaded: bool,
    /// Training enclaves: 0 or 1 for one, more for a distributed job.
    #[serde(default)]
    pub workers: u32,
    /// The principal that created it; only it sees the job and its model (records from
    /// before principals existed have none, and no one sees them).
    #[serde(default)]
    pub principal: String,
}

impl JobRecord {
    fn status(&self) -> JobStatus {
        JobStatus {
            job_id: self.job_id.clone(),
            state: self.state,
            error: self.error.clone(),
            events: self.events.len() as u64,
        }
    }
}

/// Why a job operation failed.
#[derive(Debug, Error)]
pub enum JobError {
    /// The program is not registered.
    #[error("program {0} is not registered; upload it with POST /v1/programs")]
    UnknownProgram(ProgramId),
    /// The dataset is not uploaded.
    #[error("dataset {0} does not exist; upload it with POST /v1/datasets")]
    UnknownDataset(DatasetId),
    /// The operation needs another state.
    #[error("job {job} is {state:?}; this needs it to be {needed:?}")]
    WrongState {
        /// The job.
        job: JobId,
        /// Its state.
        state: JobState,
        /// The state the operation needs.
        needed: JobState,
    },
    /// The job has no such enclave.
    #[error("job {job} has no enclave `{enclave}` (its enclaves: {enclaves})")]
    NoSuchEnclave {
        /// The job.
        job: JobId,
        /// The enclave asked for.
        enclave: JobEnclave,
        /// The job's enclaves, in words.
        enclaves: String,
    },
    /// The start request does not fit the job (one sealed request per enclave).
    #[error("job {job}: {detail}")]
    BadStart {
        /// The job.
        job: JobId,
        /// What is wrong.
        detail: String,
    },
    /// The job's enclave task has ended.
    #[error("the training enclave of job {0} is no longer running")]
    EnclaveGone(JobId),
    /// The enclave failed.
    #[error("training enclave: {0}")]
    Enclave(#[from] EnclaveError),
    /// A limit refuses the job.
    #[error(transparent)]
    Limit(#[from] Refusal),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Requests to a job's task.
pub(crate) enum Command {
    Evidence {
        enclave: JobEnclave,
        nonce: [u8; 32],
        reply: oneshot::Sender<Result<Vec<u8>, JobError>>,
    },
    Start {
        requests: StartRequests,
    },
}

/// The owner's sealed requests, as a job's kind needs them.
pub enum StartRequests {
    /// A one-enclave job's request.
    One(Vec<u8>),
    /// A distributed job's requests, one per enclave.
    Distributed(SealedRequests),
}

/// One job.
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// The program it runs.
    pub program_id: ProgramId,
    /// The dataset it trains on.
    pub dataset_id: DatasetId,
    /// Training enclaves (1 for a one-enclave job).
    pub workers: u32,
    /// The principal that created it.
    pub principal: String,
    /// Its place among its principal's jobs waiting to start, given back once it starts or
    /// ends.
    pending: StdMutex<Option<Held>>,
    /// Its training enclaves' place under the limits, given back as it ends.
    enclaves: StdMutex<Option<Held>>,
    /// When it fails unless started.
    start_deadline: tokio::time::Instant,
    record: Mutex<JobRecord>,
    commands: Option<mpsc::Sender<Command>>,
    pub(crate) store: Store,
}

impl Job {
    /// The record, with its event stream read from the store if it was not yet.
    async fn record(&self) -> tokio::sync::MutexGuard<'_, JobRecord> {
        let mut record = self.record.lock().await;
        if !record.events_loaded {
            match load_events(&self.store, &self.id).await {
                Ok(events) => {
                    record.events = events;
                    record.events_loaded = true;
                }
                Err(e) => warn!("job {}: reading its events failed: {e}", self.id),
            }
        }
        record
    }

    /// The job's public status.
    pub async fn status(&self) -> JobStatus {
        self.record().await.status()
    }

    /// The job's state.
    pub async fn state(&self) -> JobState {
        self.record.lock().await.state
    }

    /// Events with sequence number `from` or later.
    pub async fn events_from(&self, from: u64) -> Events {
        let record = self.record().await;
        Events {
            state: record.state,
            events: record
                .events
                .iter()
                .filter(|e| e.seq >= from)
                .map(|e| (e.seq, e.ciphertext.clone()))
                .collect(),
        }
    }

    /// Evidence from one of the job's enclaves (only while it waits for its owner).
    pub async fn evidence(
        &self,
        enclave: JobEnclave,
        nonce: [u8; 32],
    ) -> Result<Vec<u8>, JobError> {
        let exists = match enclave {
            JobEnclave::Worker(rank) => rank < self.workers,
            JobEnclave::ParameterServer => self.workers > 1,
        };
        if !exists {
            return Err(JobError::NoSuchEnclave {
                job: self.id.clone(),
                enclave,
                enclaves: match self.workers {
                    1 => "worker-0".to_owned(),
                    n => format!("ps and worker-0 to worker-{}", n - 1),
                },
            });
        }
        self.require(JobState::Created).await?;
        let commands = self
            .commands
            .as_ref()
            .ok_or_else(|| JobError::EnclaveGone(self.id.clone()))?;
        let (reply, answer) = oneshot::channel();
        commands
            .send(Command::Evidence {
                enclave,
                nonce,
                reply,
            })
            .await
            .map_err(|_| JobError::EnclaveGone(self.id.clone()))?;
        answer
            .await
            .map_err(|_| JobError::EnclaveGone(self.id.clone()))?
    }

    /// When the job fails unless started. At the deadline the job's task asks
    /// [`Job::started_in_time`] (the start request may still be on its way to it); `start`
    /// refuses from the deadline on, so a job still Created then never starts.
    pub(crate) fn start_deadline(&self) -> tokio::time::Instant {
        self.start_deadline
    }

    /// At its start deadline: whether the job was started (see [`Job::start_deadline`]).
    pub(crate) async fn started_in_time(&self) -> bool {
        self.state().await != JobState::Created
    }

    /// Hands the owner's sealed requests to the enclaves; the job becomes Running.
    pub async fn start(&self, requests: StartRequests) -> Result<JobStatus, JobError> {
        let fits = match &requests {
            StartRequests::One(_) => self.workers == 1,
            StartRequests::Distributed(sealed) => {
                self.workers > 1 && sealed.workers.len() == self.workers as usize
            }
        };
        if !fits {
            return Err(JobError::BadStart {
                job: self.id.clone(),
                detail: format!(
                    "it has {} training enclave(s){}: send one sealed request for each",
                    self.workers,
                    if self.workers > 1 {
                        " and a parameter server"
                    } else {
                        ""
                    }
                ),
            });
        }
        let status = {
            let mut record = self.record.lock().await;
            if record.state != JobState::Created {
                return Err(self.wrong_state(record.state, JobState::Created));
            }
            // A job created on an open upload starts once the upload is complete.
            if !store::dataset_owned_by(&self.store, &self.dataset_id, &self.principal).await? {
                return Err(JobError::BadStart {
                    job: self.id.clone(),
                    detail: format!(
                        "its dataset {} is not complete: send the rest of the upload, then \
                         start the job",
                        self.dataset_id
                    ),
                });
            }
            if tokio::time::Instant::now() >= self.start_deadline {
                return Err(JobError::BadStart {
                    job: self.id.clone(),
                    detail: "it was not started within the host's start timeout \
                             (`job-start-timeout-secs`); create a new job"
                        .into(),
                });
            }
            // Only jobs loaded after a restart lack a task, and those are never Created.
            if self.commands.is_none() {
                return Err(JobError::EnclaveGone(self.id.clone()));
            }
            record.state = JobState::Running;
            if let Err(e) = self
                .store
                .put_json(&store::job_path(&self.id), &*record)
                .await
            {
                record.state = JobState::Created;
                return Err(e.into());
            }
            record.status()
        };
        info!("job {} state Running", self.id);
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(commands) = self.commands.as_ref() else {
            return Err(JobError::EnclaveGone(self.id.clone()));
        };
        if commands.send(Command::Start { requests }).await.is_err() {
            // The task ended (its enclave died) after the check: it failed the job, or will.
            return Err(JobError::EnclaveGone(self.id.clone()));
        }
        Ok(status)
    }

    async fn require(&self, needed: JobState) -> Result<(), JobError> {
        let state = self.state().await;
        if state == needed {
            Ok(())
        } else {
            Err(self.wrong_state(state, needed))
        }
    }

    pub(crate) fn wrong_state(&self, state: JobState, needed: JobState) -> JobError {
        JobError::WrongState {
            job: self.id.clone(),
            state,
            needed,
        }
    }

    /// Appends an event to the job's stream, at the stream's next position (a distributed
    /// job's stream goes on across a replacement of rank 0, whose own count restarts).
    pub(crate) async fn push_event(&self, ciphertext: &[u8]) {
        let mut record = self.record().await;
        let seq = record.events.len() as u64;
        if let Err(e) = self
            .store
            .put(
                &store::event_path(&self.id, seq),
                Bytes::copy_from_slice(ciphertext),
            )
            .await
        {
            warn!("job {}: persisting event {seq} failed: {e}", self.id);
        }
        record.events.push(StoredEvent {
            seq,
            ciphertext: BASE64.encode(ciphertext),
        });
    }

    /// Moves the job to its final state and logs it.
    pub(crate) async fn finish(&self, outcome: Result<(), String>) {
        // Its enclaves are stopped: their places are free before anyone sees it ended.
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.enclaves
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let mut record = self.record.lock().await;
        if matches!(record.state, JobState::Succeeded | JobState::Failed) {
            // Already ended (the host's shutdown got there first): the record stays.
            return;
        }
        match &outcome {
            Ok(()) => {
                record.state = JobState::Succeeded;
                record.error = None;
            }
            Err(label) => {
                record.state = JobState::Failed;
                record.error = Some(label.clone());
            }
        }
        if let Err(e) = self
            .store
            .put_json(&store::job_path(&self.id), &*record)
            .await
        {
            warn!("job {}: persisting its record failed: {e}", self.id);
        }
        drop(record);
        match outcome {
            Ok(()) => info!("job {} state Succeeded", self.id),
            Err(label) => info!("job {} failed: {label}", self.id),
        }
    }
}

/// All jobs.
pub struct Jobs {
    store: Store,
    launcher: Launcher,
    map: StdMutex<HashMap<JobId, Arc<Job>>>,
    /// Training enclaves running, in all and by principal.
    enclaves: Arc<Pool>,
    /// Jobs created and not yet started, by principal.
    pending: Arc<Pool>,
    /// How long a created job waits for its start request.
    start_timeout: Duration,
}

impl Jobs {
    /// Loads the stored job records. Jobs that were waiting or running when the host stopped
    /// lost their enclave with it, so they become Failed ("host restarted").
    pub async fn load(store: Store, launcher: Launcher, limits: &Limits) -> anyhow::Result<Self> {
        let mut map = HashMap::new();
        for path in store.list(&store::jobs_prefix()).await? {
            let record: JobRecord = match store.get_json(&path).await {
                Ok(Some(record)) => record,
                Ok(None) => continue,
                Err(e) => {
                    warn!("skipping job record {path}: {e}");
                    continue;
                }
            };
            let (Ok(id), Ok(program_id), Ok(dataset_id)) = (
                JobId::parse(&record.job_id),
                ProgramId::parse(&record.program_id),
                DatasetId::parse(&record.dataset_id),
            ) else {
                warn!("skipping job record {path}: malformed ids");
                continue;
            };
            if store::job_path(&id) != path {
                warn!("skipping job record {path}: stored under another id");
                continue;
            }
            let mut record = record;
            if !record.events.is_empty() {
                // An inline stream, from before events were objects of their own: move it
                // out before the record is next written without it.
                for event in &record.events {
                    let bytes = BASE64.decode(&event.ciphertext).unwrap_or_default();
                    store
                        .put(&store::event_path(&id, event.seq), bytes.into())
                        .await?;
                }
                store.put_json(&path, &record).await?;
                record.events_loaded = true;
            }
            if matches!(record.state, JobState::Created | JobState::Running) {
                record.state = JobState::Failed;
                record.error = Some(labels::HOST_RESTARTED.to_owned());
                store.put_json(&path, &record).await?;
                info!("job {id} failed: {}", labels::HOST_RESTARTED);
            }
            let job = Job {
                id: id.clone(),
                program_id,
                dataset_id,
                workers: record.workers.max(1),
                principal: record.principal.clone(),
                pending: StdMutex::new(None),
                enclaves: StdMutex::new(None),
                start_deadline: tokio::time::Instant::now(),
                record: Mutex::new(record),
                commands: None,
                store: store.clone(),
            };
            map.insert(id, Arc::new(job));
        }
        if !map.is_empty() {
            info!("loaded {} job records", map.len());
        }
        Ok(Self {
            store,
            launcher,
            map: StdMutex::new(map),
            enclaves: Pool::new(
                "training enclaves",
                (limits.max_training_enclaves, "max-training-enclaves"),
                (
                    limits.max_training_enclaves_per_principal,
                    "max-training-enclaves-per-principal",
                ),
                "; retry when a job of yours has ended",
            ),
            pending: Pool::new(
                "jobs waiting for their start request",
                (u32::MAX, "none"),
                (
                    limits.max_pending_jobs_per_principal,
                    "max-pending-jobs-per-principal",
                ),
                "; start or let expire a job of yours that waits",
            ),
            start_timeout: limits.job_start_timeout(),
        })
    }

    /// Fails every job still waiting or training, as the host stops (their enclaves stop
    /// with it).
    pub async fn shut_down(&self) {
        let jobs: Vec<Arc<Job>> = self
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for job in jobs {
            if matches!(job.state().await, JobState::Created | JobState::Running) {
                job.finish(Err(labels::HOST_SHUT_DOWN.to_owned())).await;
            }
        }
    }

    /// A job by id, if `principal` created it: for any other caller the job does not exist.
    pub fn get(&self, principal: &str, id: &JobId) -> Option<Arc<Job>> {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .filter(|job| !job.principal.is_empty() && job.principal == principal)
            .cloned()
    }

    /// Creates a job: checks its inputs exist, starts its enclaves (one training enclave, or
    /// `workers` of them and a parameter server) and its task. `uploading`: the dataset is
    /// an upload of `principal`'s still open (checked by the caller), which must be complete
    /// when the job starts.
    pub async fn create(
        &self,
        principal: &str,
        program_id: ProgramId,
        dataset_id: DatasetId,
        workers: u32,
        uploading: bool,
    ) -> Result<Arc<Job>, JobError> {
        if !self.store.exists(&store::program_path(&program_id)).await? {
            return Err(JobError::UnknownProgram(program_id));
        }
        if !uploading && !store::dataset_owned_by(&self.store, &dataset_id, principal).await? {
            return Err(JobError::UnknownDataset(dataset_id));
        }
        let workers = workers.max(1);
        let enclave_count = if workers == 1 { 1 } else { workers + 1 };
        let pending = self.pending.take(principal, 1)?;
        let held = self.enclaves.take(principal, enclave_count)?;
        let enclaves = if workers == 1 {
            Enclaves::One(self.launcher.spawn(Role::Train).await?)
        } else {
            let server = self.launcher.spawn(Role::ParameterServer);
            let trainers = futures::future::try_join_all(
                (0..workers).map(|_| self.launcher.spawn_worker(workers)),
            );
            let (server, trainers) = futures::future::try_join(server, trainers).await?;
            Enclaves::Distributed(server, trainers)
        };
        let id = JobId::random();
        let record = JobRecord {
            job_id: id.to_string(),
            program_id: program_id.to_string(),
            dataset_id: dataset_id.to_string(),
            state: JobState::Created,
            error: None,
            events: Vec::new(),
            workers,
            principal: principal.to_owned(),
            events_loaded: true,
        };
        self.store.put_json(&store::job_path(&id), &record).await?;
        let (commands, receiver) = mpsc::channel(8);
        let job = Arc::new(Job {
            id: id.clone(),
            program_id,
            dataset_id,
            workers,
            principal: principal.to_owned(),
            pending: StdMutex::new(Some(pending)),
            enclaves: StdMutex::new(Some(held)),
            start_deadline: tokio::time::Instant::now() + self.start_timeout,
            record: Mutex::new(record),
            commands: Some(commands),
            store: self.store.clone(),
        });
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), Arc::clone(&job));
        info!("job {id} created");
        match enclaves {
            Enclaves::One(enclave) => {
                tokio::spawn(run_job(Arc::clone(&job), enclave, receiver));
            }
            Enclaves::Distributed(server, trainers) => {
                tokio::spawn(crate::distributed::run_job(
                    Arc::clone(&job),
                    server,
                    trainers,
                    receiver,
                    self.launcher.clone(),
                ));
            }
        }
        Ok(job)
    }
}

/// A job's stored events, in sequence order.
async fn load_events(store: &Store, id: &JobId) -> Result<Vec<StoredEvent>, StoreError> {
    let mut found: Vec<(u64, object_store::path::Path)> = Vec::new();
    for path in store.list(&store::events_of(id)).await? {
        let Some(seq) = path
            .filename()
            .and_then(|name| name.strip_suffix(".bin"))
            .and_then(|digits| digits.parse::<u64>().ok())
        else {
            continue;
        };
        found.push((seq, path));
    }
    found.sort_by_key(|(seq, _)| *seq);
    let mut events = Vec::with_capacity(found.len());
    for (seq, path) in found {
        if let Some(bytes) = store.get(&path).await? {
            events.push(StoredEvent {
                seq,
                ciphertext: BASE64.encode(&bytes),
            });
        }
    }
    Ok(events)
}

/// A new job's enclaves.
enum Enclaves {
    One(Enclave),
    Distributed(Enclave, Vec<Enclave>),
}

/// Aborts a task when dropped.
pub(crate) struct AbortOnDrop<T>(pub(crate) JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) type FrameResult = Result<EnclaveFrame, FrameError>;

/// Reads an enclave's frames in a task of their own and queues them, so that waiting for
/// one is cancel-safe; the queue ends after the first error. The task stops when dropped.
pub(crate) fn read_frames(
    reader: tokio::net::tcp::OwnedReadHalf,
) -> (mpsc::Receiver<FrameResult>, AbortOnDrop<()>) {
    let (frame_tx, frames) = mpsc::channel::<FrameResult>(16);
    let task = AbortOnDrop(tokio::spawn(async move {
        let mut reader = reader;
        loop {
            let frame = read_frame::<EnclaveFrame>(&mut reader).await;
            let end = frame.is_err();
            if frame_tx.send(frame).await.is_err() || end {
                break;
            }
        }
    }));
    (frames, task)
}

/// The task that owns a job's enclave for the job's whole life.
async fn run_job(job: Arc<Job>, enclave: Enclave, mut commands: mpsc::Receiver<Command>) {
    let Enclave {
        reader,
        mut writer,
        instance,
        ..
    } = enclave;
    let (mut frames, _reader) = read_frames(reader);

    let mut deadline_armed = true;
    let outcome = loop {
        tokio::select! {
            biased;
            command = commands.recv() => match command {
                // Every sender is gone: the host is shutting down.
                None => break None,
                Some(Command::Evidence { nonce, reply, .. }) => {
                    let answer = evidence(&job, &mut writer, &mut frames, nonce).await;
                    let fatal = match &answer {
                        Err(JobError::Enclave(e)) if e.is_fatal() => Some(enclave_label(e)),
                        _ => None,
                    };
                    let _ = reply.send(answer);
                    if let Some(label) = fatal {
                        break Some(Err(label.to_owned()));
                    }
                }
                Some(Command::Start { requests: StartRequests::One(sealed_request) }) => {
                    break Some(train(&job, writer, &mut frames, &mut commands, sealed_request).await);
                }
                // `Job::start` lets only a one-enclave request through.
                Some(Command::Start { requests: StartRequests::Distributed(_) }) => {
                    break Some(Err(labels::PROTOCOL.to_owned()));
                }
            },
            () = tokio::time::sleep_until(job.start_deadline), if deadline_armed => {
                if !job.started_in_time().await {
                    break Some(Err(labels::NOT_STARTED.to_owned()));
                }
                deadline_armed = false;
            }
            frame = frames.recv() => {
                // Nothing is expected while the job waits for its owner.
                break Some(Err(match frame {
                    Some(Ok(_)) => labels::PROTOCOL,
                    Some(Err(_)) | None => labels::ENCLAVE_EXITED,
                }.to_owned()));
            }
        }
    };
    if let Some(mut instance) = instance {
        instance.kill().await;
    }
    if let Some(outcome) = outcome {
        job.finish(outcome).await;
    }
}

/// The label a broken enclave conversation fails a job with.
pub(crate) fn enclave_label(e: &EnclaveError) -> &'static str {
    match e {
        EnclaveError::Timeout(_) => labels::ENCLAVE_UNRESPONSIVE,
        EnclaveError::Unexpected(_) | EnclaveError::Frame(FrameError::Malformed(_)) => {
            labels::PROTOCOL
        }
        _ => labels::ENCLAVE_EXITED,
    }
}

pub(crate) async fn evidence(
    job: &Job,
    writer: &mut OwnedWriteHalf,
    frames: &mut mpsc::Receiver<FrameResult>,
    nonce: [u8; 32],
) -> Result<Vec<u8>, JobError> {
    let frame = HostFrame::GetEvidence {
        nonce,
        context: job.id.context(),
    };
    write_frame(writer, &frame)
        .await
        .map_err(EnclaveError::from)?;
    let answer = tokio::time::timeout(EVIDENCE_TIMEOUT, frames.recv())
        .await
        .map_err(|_| EnclaveError::Timeout(EVIDENCE_TIMEOUT))?;
    match answer {
        Some(Ok(EnclaveFrame::Evidence(bytes))) => Ok(bytes),
        Some(Ok(EnclaveFrame::Failed { public })) => {
            Err(EnclaveError::Refused(clean_label(&public)).into())
        }
        Some(Ok(other)) => Err(EnclaveError::Unexpected(other.kind()).into()),
        Some(Err(e)) => Err(EnclaveError::Frame(e).into()),
        None => Err(
            EnclaveError::Frame(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into())).into(),
        ),
    }
}

/// Why sending the training input stopped.
pub(crate) enum SendFailure {
    /// The host could not read its own store.
    Store,
    /// The enclave connection broke (the enclave may have refused and closed).
    Enclave,
}

/// What a training enclave is started with.
pub(crate) struct TrainingStart {
    /// Whose request it runs.
    pub request: StartRequest,
    /// A worker's parameter server.
    pub parameter_server: Option<String>,
    /// A worker's `(rank, workers)`: it gets only the chunks of the container that hold
    /// its shard (`DatasetHeader::shard`), not the whole container.
    pub shard: Option<(u32, u32)>,
}

/// Where a training enclave's request comes from.
pub(crate) enum StartRequest {
    /// The owner's, sealed to the enclave.
    Owner(Vec<u8>),
    /// A lost worker's ticket, for its replacement.
    Ticket(Vec<u8>),
}

/// Sends the start frame and the dataset container in parts.
pub(crate) async fn send_training_input(
    mut writer: OwnedWriteHalf,
    job: Arc<Job>,
    start: TrainingStart,
) -> Result<OwnedWriteHalf, SendFailure> {
    let program = match job.store.get(&store::program_path(&job.program_id)).await {
        Ok(Some(program)) => program,
        _ => return Err(SendFailure::Store),
    };
    let stored = match job.store.dataset(&job.dataset_id).await {
        Ok(Some(stored)) => stored,
        _ => return Err(SendFailure::Store),
    };
    let dataset = match start.shard {
        None => job.store.dataset_stream(&stored),
        Some((rank, workers)) => {
            let head = job
                .store
                .dataset_head(&stored, chiron_crypto::dataset::MAX_PREAMBLE_LEN as u64)
                .await
                .map_err(|_| SendFailure::Store)?;
            // The header is public and unauthenticated here: a wrong one only makes the
            // worker refuse what it gets.
            let ranges = chiron_crypto::dataset_part_ranges(&head, |header| {
                header.shard(rank, workers).map(|(_, ranges)| ranges)
            })
            .map_err(|_| SendFailure::Store)?;
            // Errors from here on come with the bytes.
            job.store.dataset_ranges(&stored, ranges)
        }
    };
    let job_id = job.id.to_string();
    let program = program.to_vec();
    let dataset_len = dataset.size;
    let start = match (start.request, start.parameter_server) {
        (StartRequest::Owner(sealed_request), parameter_server) => HostFrame::StartTraining {
            job_id,
            sealed_request,
            program,
            dataset_len,
            parameter_server,
        },
        (StartRequest::Ticket(ticket), Some(parameter_server)) => HostFrame::ResumeWorker {
            job_id,
            ticket,
            program,
            dataset_len,
            parameter_server,
            events_from: job.record().await.events.len() as u64,
        },
        (StartRequest::Ticket(_), None) => return Err(SendFailure::Enclave),
    };
    write_frame(&mut writer, &start)
        .await
        .map_err(|_| SendFailure::Enclave)?;
    drop(start);
    let mut sent = 0u64;
    let mut pending = BytesMut::new();
    let mut bytes = dataset.bytes;
    loop {
        let next: Option<Bytes> = match bytes.next().await {
            Some(Ok(chunk)) => Some(chunk),
            Some(Err(_)) => return Err(SendFailure::Store),
            None => None,
        };
        let done = next.is_none();
        if let Some(chunk) = next {
            pending.extend_from_slice(&chunk);
        }
        while pending.len() >= DATASET_PART || (done && !pending.is_empty()) {
            let take = pending.len().min(DATASET_PART);
            let part = pending.split_to(take);
            sent += part.len() as u64;
            write_frame(&mut writer, &HostFrame::DatasetPart(part.to_vec()))
                .await
                .map_err(|_| SendFailure::Enclave)?;
        }
        if done {
            break;
        }
    }
    // The file changed under the host while it was read: the enclave would wait forever.
    if sent != dataset.size {
        return Err(SendFailure::Store);
    }
    Ok(writer)
}

/// Runs a started job to its end; returns Ok on success or the public failure label.
async fn train(
    job: &Arc<Job>,
    writer: OwnedWriteHalf,
    frames: &mut mpsc::Receiver<FrameResult>,
    commands: &mut mpsc::Receiver<Command>,
    sealed_request: Vec<u8>,
) -> Result<(), String> {
    let mut sender = AbortOnDrop(tokio::spawn(send_training_input(
        writer,
        Arc::clone(job),
        TrainingStart {
            request: StartRequest::Owner(sealed_request),
            parameter_server: None,
            shard: None,
        },
    )));
    let mut sending = true;
    // Keeps the write half (and so the connection) open once the transfer is done.
    let mut _writer: Option<OwnedWriteHalf> = None;
    let mut closing: Option<tokio::time::Instant> = None;
    let mut commands_open = true;
    loop {
        let grace = async {
            match closing {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            sent = &mut sender.0, if sending => {
                sending = false;
                match sent {
                    Ok(Ok(writer)) => _writer = Some(writer),
                    Ok(Err(SendFailure::Store)) => return Err(labels::HOST_READ.to_owned()),
                    Ok(Err(SendFailure::Enclave)) | Err(_) => {
                        closing = Some(tokio::time::Instant::now() + CLOSING_GRACE);
                    }
                }
            }
            frame = frames.recv() => match frame {
                Some(Ok(EnclaveFrame::Event { ciphertext, .. })) => {
                    if ciphertext.len() > MAX_EVENT_LEN {
                        return Err(labels::PROTOCOL.to_owned());
                    }
                    job.push_event(&ciphertext).await;
                }
                Some(Ok(EnclaveFrame::Trained { sealed_model })) => {
                    let path = store::model_path(&job.id);
                    return match job.store.put(&path, Bytes::from(sealed_model)).await {
                        Ok(()) => Ok(()),
                        Err(e) => {
                            warn!("job {}: storing its model failed: {e}", job.id);
                            Err(labels::HOST_WRITE.to_owned())
                        }
                    };
                }
                Some(Ok(EnclaveFrame::Failed { public })) => return Err(clean_label(&public)),
                Some(Ok(_)) => return Err(labels::PROTOCOL.to_owned()),
                Some(Err(FrameError::Malformed(_) | FrameError::TooLarge(_))) => {
                    return Err(labels::PROTOCOL.to_owned());
                }
                Some(Err(FrameError::Io(_))) | None => return Err(labels::ENCLAVE_EXITED.to_owned()),
            },
            command = commands.recv(), if commands_open => match command {
                Some(Command::Evidence { reply, .. }) => {
                    let _ = reply.send(Err(job.wrong_state(JobState::Running, JobState::Created)));
                }
                // Refused before it is sent: the state is no longer Created.
                Some(Command::Start { .. }) => {}
                None => commands_open = false,
            },
            () = grace => return Err(labels::ENCLAVE_EXITED.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launcher::local::{EnclavePlatform, Processes};

    fn launcher() -> Launcher {
        Launcher::new(Processes::new(
            "chiron-enclave-never-started".into(),
            EnclavePlatform::Hardware { tee: "auto" },
        ))
    }

    #[tokio::test]
    async fn events_are_objects_of_their_own_and_an_inline_stream_moves_out() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open_local(dir.path()).expect("store");
        let id = JobId::random();
        // A record as hosts wrote them before: the stream inline.
        let old = serde_json::json!({
            "job_id": id.to_string(),
            "program_id": "ab".repeat(32),
            "dataset_id": "cd".repeat(16),
            "state": "Succeeded",
            "error": null,
            "events": [
                {"seq": 0, "ciphertext": BASE64.encode(b"first")},
                {"seq": 1, "ciphertext": BASE64.encode(b"second")},
            ],
            "workers": 1,
            "principal": "alice",
        });
        store
            .put_json(&store::job_path(&id), &old)
            .await
            .expect("put");
        let jobs = Jobs::load(store.clone(), launcher(), &Limits::default())
            .await
            .expect("load");
        let job = jobs.get("alice", &id).expect("alice's job");
        assert!(jobs.get("bob", &id).is_none());
        let events = job.events_from(1).await.events;
        assert_eq!(events, [(1, BASE64.encode(b"second"))]);
        let rewritten: serde_json::Value = store
            .get_json(&store::job_path(&id))
            .await
            .expect("get")
            .expect("present");
        assert!(rewritten.get("events").is_none(), "{rewritten}");
        assert_eq!(
            store
                .get(&store::event_path(&id, 0))
                .await
                .expect("get")
                .as_deref(),
            Some(&b"first"[..])
        );

        // A new event is one more object; the record is not rewritten.
        let before = store.get(&store::job_path(&id)).await.expect("get");
        job.push_event(b"third").await;
        assert_eq!(store.get(&store::job_path(&id)).await.expect("get"), before);
        drop((job, jobs));
        let jobs = Jobs::load(store, launcher(), &Limits::default())
            .await
            .expect("load again");
        let job = jobs.get("alice", &id).expect("alice's job");
        let seqs: Vec<u64> = job
            .events_from(0)
            .await
            .events
            .iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(seqs, [0, 1, 2]);
    }
}
