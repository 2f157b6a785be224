//! The parameter-server role: holds a distributed job's parameters and optimizer state,
//! and applies each round's gradients, averaged over the workers.
//!
//! Rounds are synchronous: the server reads one message from every worker still training,
//! in rank order, and answers all of them only once all have arrived. In a round every
//! worker registers the same optimizer (the server keeps rank 0's values, so every worker
//! starts from the same parameters) or steps the same optimizer (the server averages the
//! gradients each parameter received, then applies the program's rule as the workers
//! report it: learning rate, clipping). A worker that is done leaves the rounds; one that
//! failed or fell out of step ends the job for all.
//!
//! In a live job (an unpaced exchange) a worker other than rank 0 that breaks its
//! connection is lost, not fatal: the rounds go on without it, and a replacement of that
//! rank (which the host starts from the lost worker's ticket) is admitted as the first was,
//! registers, gets the current parameters and joins the next round. Once rank 0 is done the
//! job's model is sealed, and workers still running (replacements, behind the others) are
//! let go. Rank 0, whose events and model are the job's, is replaced too (its replacement
//! goes on with the owner's events under a key of its own): until it is back the server
//! waits for it, even once the others are done. A paced exchange's rank 0 is not replaced,
//! since a private job's events have a fixed count.
//!
//! The server seals checkpoints for the host: every `checkpoint_every` rounds and whenever a
//! worker leaves, or, paced, every `checkpoint_every` ticks at one size. A server that takes
//! over from one waits for the workers to reconnect and goes on where the checkpoint was.
//!
//! The server never sees an example: it holds no data key. It accepts only workers whose
//! evidence the owner's policy accepts, attesting to the worker role for this job, and a
//! worker accepts it only on the same terms (`chiron_channel`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chiron_attest::Policy;
use chiron_channel::{LocalIdentity, PeerExpectation, RecordConfig, RecordReader, RecordWriter};
use chiron_crypto::SealingKey;
use chiron_engine::{FlatOptimizer, OptimizerState};
use chiron_proto::evidence::Role;
use chiron_proto::owner::{
    ExchangeTerms, PARAMETER_SERVER_INFO, Pace, ParameterServerRequest, Rounds,
};
use chiron_proto::wire::EnclaveFrame;
use serde::{Deserialize, Serialize};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};

use crate::exchange::{
    ParametersAnswer, Rule, RuleExt, ToServer, ToWorker, frame, pad, pad_into, unpad,
};
use crate::identity::Enclave;

type Stream = chiron_channel::AttestedStream<TcpStream>;

/// How late past its point in the tick an answer may leave before the server calls the
/// tick too short (scheduling noise, well under the timing quantum the design declares).
const LATE: Duration = Duration::from_millis(50);

/// How long past what is left of its schedule a paced replacement server waits for the
/// workers to reconnect (each retries every quarter second).
const RECONNECT_GRACE: Duration = Duration::from_secs(5);

/// Up to this batch growth (workers averaged in one step), an adaptive rule's learning rate
/// grows linearly, as SGD's does: measured at two workers, within 0.2 point of one worker's
/// accuracy on the mean of 8 seeds, where the square root of the growth was 0.85 below on 4
/// (BENCHMARKS.md). Beyond it, the rate grows by the square root of the growth past it, so
/// that a large job does not multiply Adam's rate by its worker count, which linear scaling
/// only survives with a warm-up (not built).
const ADAPTIVE_LINEAR_UP_TO: f32 = 4.0;

/// The program's rule for a step that averages `batches` workers' gradients, one batch of
/// the program's each: the learning rate scaled as large-batch training scales it (linearly
/// for SGD and Nesterov; for the adaptive rules linearly up to [`ADAPTIVE_LINEAR_UP_TO`],
/// then by the square root), so that N workers, which take 1/N of the steps per epoch, get
/// about as far in an epoch as one.
fn scaled_for(rule: Rule, batches: usize) -> Rule {
    let growth = batches.max(1) as f32;
    let mut scaled = rule;
    // Every rule's learning rate is its first value; tags 0 and 2 are SGD and Nesterov.
    scaled.values[0] *= match rule.tag {
        0 | 2 => growth,
        _ if growth <= ADAPTIVE_LINEAR_UP_TO => growth,
        _ => ADAPTIVE_LINEAR_UP_TO * (growth / ADAPTIVE_LINEAR_UP_TO).sqrt(),
    };
    scaled
}

/// The parameters the server holds for `optimizer`, which answer a round. (A free function,
/// so that the server's outbox can be borrowed beside them.)
fn held_params(optimizers: &BTreeMap<u32, Held>, optimizer: u32) -> Result<&[Vec<f32>], String> {
    optimizers
        .get(&optimizer)
        .map(|held| held.params.as_slice())
        .ok_or_else(|| "a step of an optimizer never registered".to_owned())
}

/// The host's start frame, unpacked.
pub struct Start {
    pub job_id: String,
    /// Where the server's request comes from.
    pub from: Source,
    /// Where to listen for the workers.
    pub listen: String,
}

/// A new server's request, or a lost one's checkpoint.
pub enum Source {
    /// The owner's sealed `ParameterServerRequest`.
    Owner(Vec<u8>),
    /// A sealed [`Checkpoint`] of the server this one replaces.
    Checkpoint(Vec<u8>),
}

/// A server's state, sealed to the runtime and platform every `checkpoint_every` rounds (a
/// paced exchange: ticks): what a replacement needs to go on, the owner's request included
/// (sealed to the lost server's own key, it opens nowhere else).
#[derive(Serialize, Deserialize)]
struct Checkpoint {
    request: ParameterServerRequest,
    round: u64,
    /// A paced exchange: the ticks of its schedule done (0 unpaced).
    tick: u64,
    /// A paced exchange: the ranks connected and not lost, done or not. Their schedules go
    /// on, so a replacement waits for every one of them.
    connected: Vec<u32>,
    /// A paced exchange: the failure the rest of its schedule answers with (`Refused`).
    /// A replacement keeps answering so: when a job failed must not show when its server
    /// is lost.
    failure: Option<String>,
    /// The ranks still training.
    active: Vec<u32>,
    /// The ranks lost before they were done: the only ones a replacement may take.
    lost: Vec<u32>,
    /// Rank 0 was done: no worker is taken back.
    rank_zero_done: bool,
    optimizers: Vec<SavedOptimizer>,
}

#[derive(Serialize, Deserialize)]
struct SavedOptimizer {
    handle: u32,
    values: Vec<Vec<f32>>,
    state: Option<SavedState>,
}

/// `chiron_engine::OptimizerState` on the wire.
#[derive(Serialize, Deserialize)]
struct SavedState {
    rule: Rule,
    step: u32,
    max_grad_norm: Option<f32>,
    first: Vec<Option<Vec<f32>>>,
    second: Vec<Option<Vec<f32>>>,
}

/// Room in a paced checkpoint beyond the owner's request and three exchange messages' worth of
/// values (parameters and two moments per value, Adam's and AdamW's state): the ranks, the
/// counters and a failure's reason.
const CHECKPOINT_MARGIN: usize = 64 << 10;

/// The longest failure reason a paced checkpoint keeps (the rest is cut).
const MAX_SAVED_FAILURE: usize = 1024;

/// A paced checkpoint's plaintext size: public, from the owner's request alone, so that
/// every checkpoint of a private job has the same size whatever the program registered.
fn paced_checkpoint_bytes(request: &ParameterServerRequest) -> usize {
    let request_bytes = postcard::experimental::serialized_size(request).unwrap_or(0);
    request_bytes
        .saturating_add(request.exchange.message_bytes().saturating_mul(3))
        .saturating_add(CHECKPOINT_MARGIN)
}

/// Room in a `Checkpoint` frame beyond the plaintext: the seal's nonce and tag, the frame's
/// encoding.
const FRAME_ROOM: usize = 4 << 10;

/// Whether a job under `request` takes checkpoints: when it asked for them and, paced, when
/// its checkpoints fit one frame to the host (messages up to some 21 MiB). Public terms
/// decide it, nothing else.
fn takes_checkpoints(request: &ParameterServerRequest) -> bool {
    request.checkpoint_every > 0
        && (request.exchange.pace.is_none()
            || paced_checkpoint_bytes(request).saturating_add(FRAME_ROOM)
                <= chiron_proto::wire::MAX_FRAME)
}

/// The checkpoint's associated data: its job, so a checkpoint opens for no other.
fn checkpoint_aad(job_id: &str) -> Vec<u8> {
    [b"chiron/v1 checkpoint ".as_slice(), job_id.as_bytes()].concat()
}

/// Serves one job's workers until they are all done; returns the frame that ends it. The
/// frame before it, [`EnclaveFrame::PeersAt`], is sent through `enclave` once listening.
pub fn run(enclave: &Enclave, start: Start) -> EnclaveFrame {
    match serve(enclave, start) {
        Ok(()) => EnclaveFrame::Served,
        Err(public) => EnclaveFrame::Failed {
            public: public.to_owned(),
        },
    }
}

fn serve(enclave: &Enclave, start: Start) -> Result<(), &'static str> {
    let sealing = enclave.checkpoint_key();
    let (request, resumed) = match start.from {
        Source::Owner(sealed) => {
            let (bytes, _) = enclave
                .keypair
                .open(PARAMETER_SERVER_INFO, start.job_id.as_bytes(), &sealed)
                .map_err(|_| "parameter server request failed authentication")?;
            let request: ParameterServerRequest =
                postcard::from_bytes(&bytes).map_err(|_| "malformed parameter server request")?;
            (request, None)
        }
        Source::Checkpoint(sealed) => {
            let bytes = sealing
                .as_ref()
                .ok_or("this TEE offers no sealing key, so checkpoints cannot be opened here")?
                .unseal(&checkpoint_aad(&start.job_id), &sealed)
                .map_err(|_| "checkpoint failed authentication")?;
            let checkpoint: Checkpoint = unpad(&bytes).map_err(|_| "malformed checkpoint")?;
            (checkpoint.request.clone(), Some(checkpoint))
        }
    };
    request
        .exchange
        .validate()
        .map_err(|_| "malformed parameter server request")?;
    let policy = Policy::parse_spec(&request.peer_policy)
        .map_err(|_| "malformed parameter server request")?;
    // Several threads: each round's messages are decrypted in parallel.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 16));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|_| "parameter server failed")?;
    // A guard against workers that never come or stall, not a schedule: a paced exchange
    // runs its ticks from when the workers connect, after the job's start.
    let deadline = Instant::now()
        + Duration::from_secs(u64::from(request.time_budget_secs))
        + request
            .exchange
            .pace
            .map_or(Duration::ZERO, |p| p.duration());
    runtime.block_on(async {
        let listener = TcpListener::bind(&start.listen)
            .await
            .map_err(|_| "parameter server cannot listen")?;
        let port = listener
            .local_addr()
            .map_err(|_| "parameter server cannot listen")?
            .port();
        enclave
            .send(&EnclaveFrame::PeersAt { port })
            .map_err(|_| "host connection failed")?;
        let context = chiron_attest::context_digest(&start.job_id);
        let identity = LocalIdentity::new(
            Arc::clone(&enclave.platform),
            Role::ParameterServer,
            context,
        );
        let expectation = PeerExpectation::new(policy, Role::Worker, context);
        let terms = request.exchange;
        // A replacement waits for the workers still training when its checkpoint was taken
        // (one is taken whenever a worker leaves); a paced one for every worker whose
        // schedule goes on, training or done.
        let (expected, lost): (BTreeSet<u32>, BTreeSet<u32>) = match &resumed {
            Some(checkpoint) if terms.pace.is_some() => (
                checkpoint.connected.iter().copied().collect(),
                checkpoint.lost.iter().copied().collect(),
            ),
            Some(checkpoint) if checkpoint.rank_zero_done => Default::default(),
            Some(checkpoint) => (
                checkpoint.active.iter().copied().collect(),
                checkpoint.lost.iter().copied().collect(),
            ),
            None => ((0..terms.workers).collect(), BTreeSet::new()),
        };
        // A paced replacement waits no longer than what is left of the schedule (and a
        // grace for the reconnections): a worker that does not come back by then is lost.
        let give_up = match (&resumed, terms.pace) {
            (Some(checkpoint), Some(pace)) => {
                let left = u64::from(pace.ticks).saturating_sub(checkpoint.tick);
                Some(
                    Instant::now()
                        + Duration::from_millis(left.saturating_mul(u64::from(pace.tick_ms)))
                        + RECONNECT_GRACE,
                )
            }
            _ => None,
        };
        let workers = tokio::time::timeout_at(
            deadline.into(),
            admit(
                &listener,
                &identity,
                &expectation,
                terms,
                (&expected, &lost),
                give_up,
            ),
        )
        .await
        .map_err(|_| "workers did not connect in time")?;
        let (replacements, accepting) = {
            let (links, task) =
                admit_replacements(listener, identity, expectation, terms.message_bytes());
            (Some(links), Some(task))
        };
        let mut server = Server {
            replacements,
            replaced: BTreeSet::new(),
            rank_zero_done: false,
            lost: BTreeSet::new(),
            workers,
            terms,
            optimizers: BTreeMap::new(),
            rounds_done: 0,
            ticks_done: 0,
            failure: None,
            outbox: Arc::new(Vec::new()),
            checkpoints: sealing.filter(|_| takes_checkpoints(&request)),
            paced_checkpoint_bytes: paced_checkpoint_bytes(&request),
            job_id: start.job_id.clone(),
            request: request.clone(),
            enclave,
        };
        match resumed {
            Some(checkpoint) => server
                .restore(checkpoint)
                .map_err(|_| "malformed checkpoint")?,
            None => server
                .first_checkpoint()
                .map_err(|_| "parameter server failed")?,
        }
        // Whether a paced exchange ran its schedule to the end (answering `Refused` after a
        // failure), so that every connection carried exactly its ticks' messages.
        let (outcome, schedule_kept) =
            match tokio::time::timeout_at(deadline.into(), server.rounds()).await {
                Ok(outcome) => (outcome, server.terms.pace.is_some()),
                Err(_) => (Err("the job's time budget ran out".into()), false),
            };
        if let Some(task) = accepting {
            task.abort();
        }
        match outcome {
            Ok(()) => Ok(()),
            Err(reason) => {
                // After a kept schedule one message more would be one more than it has.
                if !schedule_kept {
                    server.refuse_all(&reason).await;
                }
                Err("parameter server ended the job")
            }
        }
    })
}

/// A worker's receiving end and the last message it sent, whose memory the next reuses.
struct Inbox {
    reader: RecordReader<ReadHalf<Stream>>,
    message: Vec<u8>,
}

impl Inbox {
    fn new(reader: RecordReader<ReadHalf<Stream>>) -> Self {
        Self {
            reader,
            message: Vec::new(),
        }
    }

    /// Receives the next message of `size` bytes, which [`Inbox::message`] then holds.
    async fn next(&mut self, size: usize) -> Result<(), chiron_channel::ChannelError> {
        self.reader.recv_message_into(size, &mut self.message).await
    }

    /// The message [`Inbox::next`] received, decoded.
    fn decode(&self) -> Result<ToServer, String> {
        unpad::<ToServer>(&self.message)
    }
}

/// One connected worker.
struct Link {
    rank: u32,
    /// `None` only while an asynchronous exchange waits on it.
    reader: Option<Inbox>,
    /// `None` only while a round's answer goes out on a task of its own.
    writer: Option<RecordWriter<WriteHalf<Stream>>>,
    /// Still taking part in rounds.
    active: bool,
    /// A paced exchange: the tick of the worker's schedule its next message is for.
    next_tick: u32,
}

impl Link {
    /// Sends one message; whether it went (not if the connection broke or is gone).
    async fn send(&mut self, message: &[u8]) -> bool {
        match self.writer.as_mut() {
            Some(writer) => writer.send_message(message).await.is_ok(),
            None => false,
        }
    }

    fn new(
        rank: u32,
        next_tick: u32,
        reader: RecordReader<ReadHalf<Stream>>,
        writer: RecordWriter<WriteHalf<Stream>>,
    ) -> Self {
        Self {
            rank,
            reader: Some(Inbox::new(reader)),
            writer: Some(writer),
            active: true,
            next_tick,
        }
    }
}

/// Accepts and attests a worker's connection and reads its hello: its rank and its ends.
/// `None` for a connection that fails any of it (another job, another build, no evidence).
async fn accept_worker(
    listener: &TcpListener,
    identity: &LocalIdentity,
    expectation: &PeerExpectation,
    size: usize,
) -> Option<Link> {
    let stream = chiron_channel::accept(listener, identity, expectation)
        .await
        .ok()?;
    let (mut reader, writer) = stream.into_records(RecordConfig::default());
    let bytes = reader.recv_message(size).await.ok()?;
    match unpad::<ToServer>(&bytes) {
        Ok(ToServer::Hello { rank, tick }) => Some(Link::new(rank, tick, reader, writer)),
        _ => None,
    }
}

/// Accepts workers until every `expected` rank has connected. A connection that fails its
/// handshake is dropped and the server waits on. An attested worker of this job says its
/// rank truly; one of a `lost` rank (a replacement of a worker lost before this server's
/// checkpoint) is admitted too, and a later one for a rank replaces the earlier (a worker
/// restarted before the rounds began). A rank that was done is never taken. At `give_up`,
/// if given, the workers connected so far are all there is; under a paced exchange, it
/// comes no later than what is left of the schedule (and the grace) from where the first
/// reconnected worker's hello says the schedule is (the checkpoint may be far behind it).
async fn admit(
    listener: &TcpListener,
    identity: &LocalIdentity,
    expectation: &PeerExpectation,
    terms: ExchangeTerms,
    (expected, lost): (&BTreeSet<u32>, &BTreeSet<u32>),
    mut give_up: Option<Instant>,
) -> Vec<Link> {
    let mut links: BTreeMap<u32, Link> = BTreeMap::new();
    while !expected.iter().all(|rank| links.contains_key(rank)) {
        let accepting = accept_worker(listener, identity, expectation, terms.message_bytes());
        let accepted = match give_up {
            Some(at) => match tokio::time::timeout_at(at.into(), accepting).await {
                Ok(accepted) => accepted,
                Err(_) => break,
            },
            None => accepting.await,
        };
        let Some(link) = accepted else {
            continue;
        };
        if let (Some(at), Some(pace)) = (give_up.as_mut(), terms.pace)
            && link.next_tick > 0
        {
            let left = u64::from(pace.ticks.saturating_sub(link.next_tick));
            let end = Instant::now()
                + Duration::from_millis(left.saturating_mul(u64::from(pace.tick_ms)))
                + RECONNECT_GRACE;
            *at = (*at).min(end);
        }
        if expected.contains(&link.rank) || lost.contains(&link.rank) {
            links.insert(link.rank, link);
        }
    }
    links.into_values().collect()
}

/// Admits replacements of lost workers while the rounds run: each attested connection's
/// link goes to the rounds, which decide whether to take it.
fn admit_replacements(
    listener: TcpListener,
    identity: LocalIdentity,
    expectation: PeerExpectation,
    size: usize,
) -> (
    tokio::sync::mpsc::Receiver<Link>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let task = tokio::spawn(async move {
        loop {
            if let Some(link) = accept_worker(&listener, &identity, &expectation, size).await
                && tx.send(link).await.is_err()
            {
                return;
            }
        }
    });
    (rx, task)
}

/// What a worker's reader brought back.
enum Arrival {
    /// A message, decoded (or why it would not decode).
    Message(Result<ToServer, String>),
    /// The connection broke.
    Broken,
}

/// Worker `rank`'s next message, decoded on the task that read it (so that a round's
/// messages are decrypted and decoded on the server's cores at once), with its inbox back.
async fn next_message(rank: u32, mut inbox: Inbox, size: usize) -> (u32, Inbox, Arrival) {
    let arrival = match inbox.next(size).await {
        Ok(()) => Arrival::Message(inbox.decode()),
        Err(_) => Arrival::Broken,
    };
    (rank, inbox, arrival)
}

/// The next replacement admitted, if replacements are taken at all.
async fn next_replacement(
    replacements: &mut Option<tokio::sync::mpsc::Receiver<Link>>,
) -> Option<Link> {
    match replacements {
        Some(replacements) => replacements.recv().await,
        None => std::future::pending().await,
    }
}

/// A synchronous round's answers: which optimizer's parameters go to whom.
#[derive(Debug, Default, PartialEq, Eq)]
struct Answers {
    /// The optimizer the round registered or stepped: its parameters answer every worker
    /// not in `own`.
    all: Option<u32>,
    /// By rank: workers that registered again an optimizer the server holds, other than
    /// `all` (a replacement, or a worker that reconnected, of a program with several
    /// optimizers, while the others step another one): each gets that optimizer's
    /// parameters as the server holds them.
    own: BTreeMap<u32, u32>,
}

impl Answers {
    /// The answers of a round that registered or stepped `all`, with `catching_up` workers
    /// (rank, optimizer) registering again what the server holds.
    fn new(all: Option<u32>, catching_up: Vec<(u32, u32)>) -> Self {
        let own = catching_up
            .into_iter()
            .filter(|&(_, optimizer)| Some(optimizer) != all)
            .collect();
        Self { all, own }
    }

    /// Whether anybody is answered.
    fn any(&self) -> bool {
        self.all.is_some() || !self.own.is_empty()
    }
}

/// A step as the round applies it: optimizer, rule, clipping norm, gradients.
type Step = (u32, Rule, Option<f32>, Vec<Option<Vec<f32>>>);

/// A synchronous round's messages, sorted by what they ask.
#[derive(Debug, Default)]
struct SortedRound {
    /// Ranks done with their program.
    left: Vec<u32>,
    /// (rank, optimizer): registrations of an optimizer the server holds, whose values have
    /// the lengths of the parameters it holds.
    catching_up: Vec<(u32, u32)>,
    /// Registrations of an optimizer the server does not hold yet: its handle and values.
    starting: Vec<(u32, Vec<Vec<f32>>)>,
    /// Steps.
    steps: Vec<Step>,
}

/// Sorts a round's messages (in rank order) against the `optimizers` the server holds.
fn sort_round(
    optimizers: &BTreeMap<u32, Held>,
    messages: Vec<(u32, ToServer)>,
) -> Result<SortedRound, String> {
    let mut sorted = SortedRound::default();
    for (rank, message) in messages {
        match message {
            ToServer::Done => sorted.left.push(rank),
            ToServer::Abandon => return Err(format!("worker {rank} failed")),
            ToServer::Hello { .. } => return Err(format!("worker {rank} said hello twice")),
            ToServer::Idle => {
                return Err(format!("worker {rank} idled in an unpaced exchange"));
            }
            ToServer::Register { optimizer, values } => match optimizers.get(&optimizer) {
                Some(held) if values.iter().map(Vec::len).eq(held.lens()) => {
                    sorted.catching_up.push((rank, optimizer));
                }
                Some(_) => {
                    return Err(format!(
                        "workers out of step: worker {rank} registers other parameters than \
                         the optimizer holds"
                    ));
                }
                None => sorted.starting.push((optimizer, values)),
            },
            ToServer::Step {
                optimizer,
                rule,
                max_grad_norm,
                gradients,
            } => sorted
                .steps
                .push((optimizer, rule, max_grad_norm, gradients)),
        }
    }
    Ok(sorted)
}

/// One optimizer's parameters and state, as the server holds them: flat values, since every
/// rule is element-wise. The parameters' lengths are fixed at registration.
struct Held {
    params: Vec<Vec<f32>>,
    optimizer: Option<FlatOptimizer>,
}

impl Held {
    /// Each parameter's length.
    fn lens(&self) -> impl Iterator<Item = usize> + '_ {
        self.params.iter().map(Vec::len)
    }
}

struct Server<'a> {
    /// One link per rank, in rank order.
    workers: Vec<Link>,
    /// Replacements of lost workers, admitted while the rounds run.
    replacements: Option<tokio::sync::mpsc::Receiver<Link>>,
    /// Ranks a replacement took since this server began.
    replaced: BTreeSet<u32>,
    /// Rank 0 is done: the job's model is sealed, and the workers still running are let go.
    rank_zero_done: bool,
    /// Ranks lost before they were done and not back yet (since this server began, or
    /// before, when it took over from a checkpoint): the only ranks a replacement may take.
    lost: BTreeSet<u32>,
    terms: ExchangeTerms,
    optimizers: BTreeMap<u32, Held>,
    /// Rounds completed since the job began: those that stepped an optimizer or started
    /// one (not those in which workers only registered again what the server holds).
    rounds_done: u64,
    /// A paced exchange: the ticks of its schedule done, since the job began.
    ticks_done: u64,
    /// A paced exchange resumed from a checkpoint: the failure its schedule answered with.
    failure: Option<String>,
    /// The last answer sent: each round's answer reuses its memory (shared with the tasks
    /// that send it only while they run).
    outbox: Arc<Vec<u8>>,
    /// The key checkpoints are sealed under, when the job asked for them.
    checkpoints: Option<SealingKey>,
    /// Every paced checkpoint's plaintext size ([`paced_checkpoint_bytes`]).
    paced_checkpoint_bytes: usize,
    job_id: String,
    request: ParameterServerRequest,
    enclave: &'a Enclave,
}

impl Server<'_> {
    /// Seals the state for the host, when a checkpoint is due.
    fn checkpoint_if_due(&self) -> Result<(), String> {
        let every = u64::from(self.request.checkpoint_every);
        if every == 0 || !self.rounds_done.is_multiple_of(every) {
            return Ok(());
        }
        self.checkpoint()
    }

    /// Seals the state for the host now (when the job asked for checkpoints). A paced
    /// exchange's are taken at fixed ticks only ([`Server::paced_checkpoint`]).
    fn checkpoint(&self) -> Result<(), String> {
        let Some(key) = &self.checkpoints else {
            return Ok(());
        };
        if self.terms.pace.is_some() {
            return Ok(());
        }
        let checkpoint = frame(&self.state(self.saved_optimizers()?, 0, &BTreeSet::new(), None))?;
        let sealed = key.seal(&checkpoint_aad(&self.job_id), &checkpoint);
        self.send_checkpoint(sealed, self.rounds_done)
    }

    /// A new server's checkpoint, once its workers are admitted and before any round (a
    /// paced exchange: before its first tick, where every worker's schedule starts), so that
    /// a server lost before its first due checkpoint is replaced too. It holds no optimizer:
    /// the workers register theirs again with a replacement (`crate::worker`).
    fn first_checkpoint(&self) -> Result<(), String> {
        if self.terms.pace.is_none() {
            return self.checkpoint();
        }
        let mut failure = None;
        match self.paced_checkpoint(0, &BTreeSet::new(), &mut failure)? {
            Some(sealed) => self.send_checkpoint(sealed, 0),
            None => Ok(()),
        }
    }

    /// A paced exchange's checkpoint of the state after tick `tick`, when one is due then
    /// (every `checkpoint_every` ticks, whatever the program did): sealed, and always
    /// [`paced_checkpoint_bytes`] long, failure or not, so the host sees the schedule in
    /// them, nothing else. It is made before the tick's answers and sent after them
    /// ([`Server::send_checkpoint`]), so that when it goes does not follow how much state
    /// there was to encode. A state too large for it fails the job (the one bit a program
    /// can choose to show), and the checkpoint then carries the failure alone.
    fn paced_checkpoint(
        &self,
        tick: u64,
        broken: &BTreeSet<u32>,
        failure: &mut Option<String>,
    ) -> Result<Option<Vec<u8>>, String> {
        let every = u64::from(self.request.checkpoint_every);
        let Some(key) = &self.checkpoints else {
            return Ok(None);
        };
        if every == 0 || !tick.is_multiple_of(every) {
            return Ok(None);
        }
        let size = self.paced_checkpoint_bytes;
        let full = self.saved_optimizers().and_then(|optimizers| {
            pad(&self.state(optimizers, tick, broken, failure.clone()), size)
        });
        let plaintext = match full {
            Ok(plaintext) => plaintext,
            Err(_) => {
                failure.get_or_insert_with(|| {
                    "the optimizer state does not fit the job's checkpoints".to_owned()
                });
                pad(&self.state(Vec::new(), tick, broken, failure.clone()), size)?
            }
        };
        Ok(Some(key.seal(&checkpoint_aad(&self.job_id), &plaintext)))
    }

    /// The optimizers' parameters and state, as a checkpoint keeps them.
    fn saved_optimizers(&self) -> Result<Vec<SavedOptimizer>, String> {
        let mut optimizers = Vec::new();
        for (&handle, held) in &self.optimizers {
            let state = match &held.optimizer {
                Some(optimizer) => {
                    let state = optimizer.state();
                    Some(SavedState {
                        rule: Rule::from_kind(state.kind).ok_or("an unknown optimizer rule")?,
                        step: state.step,
                        max_grad_norm: state.max_grad_norm,
                        first: state.first,
                        second: state.second,
                    })
                }
                None => None,
            };
            optimizers.push(SavedOptimizer {
                handle,
                values: held.params.clone(),
                state,
            });
        }
        Ok(optimizers)
    }

    /// The server's state with `optimizers`, at `tick` of a paced exchange; `broken`: the
    /// connections a paced exchange saw end.
    fn state(
        &self,
        optimizers: Vec<SavedOptimizer>,
        tick: u64,
        broken: &BTreeSet<u32>,
        failure: Option<String>,
    ) -> Checkpoint {
        let ticks = self.terms.pace.map(|pace| pace.ticks);
        Checkpoint {
            request: self.request.clone(),
            round: self.rounds_done,
            tick,
            active: self
                .workers
                .iter()
                .filter(|w| w.active)
                .map(|w| w.rank)
                .collect(),
            connected: self
                .workers
                .iter()
                .filter(|w| ticks.is_some_and(|ticks| w.next_tick < ticks))
                .filter(|w| w.reader.is_some() && !broken.contains(&w.rank))
                .filter(|w| !self.lost.contains(&w.rank))
                .map(|w| w.rank)
                .collect(),
            lost: self.lost.iter().copied().collect(),
            rank_zero_done: self.rank_zero_done,
            optimizers,
            failure: failure.map(|mut reason| {
                reason.truncate(reason.floor_char_boundary(MAX_SAVED_FAILURE));
                reason
            }),
        }
    }

    /// Sends a sealed checkpoint to the host, taken at `position` (a round, or a paced
    /// exchange's tick).
    fn send_checkpoint(&self, sealed: Vec<u8>, position: u64) -> Result<(), String> {
        self.enclave
            .send(&EnclaveFrame::Checkpoint {
                round: position,
                paced: self.terms.pace.is_some(),
                sealed,
            })
            .map_err(|_| "the host connection failed".to_owned())
    }

    /// Takes over from a checkpoint.
    fn restore(&mut self, checkpoint: Checkpoint) -> Result<(), String> {
        self.rounds_done = checkpoint.round;
        self.ticks_done = checkpoint.tick;
        self.rank_zero_done = checkpoint.rank_zero_done;
        self.failure = checkpoint.failure;
        // A paced exchange's workers that were done come back too, for their schedules; a
        // replacement of a lost worker trains.
        for worker in &mut self.workers {
            let replacement = checkpoint.lost.contains(&worker.rank);
            worker.active = checkpoint.active.contains(&worker.rank) || replacement;
            if replacement {
                self.replaced.insert(worker.rank);
            }
        }
        // Lost ranks that did not come back with the others may still be replaced.
        self.lost = checkpoint
            .lost
            .iter()
            .copied()
            .filter(|rank| self.index(*rank).is_none())
            .collect();
        // A paced exchange's worker that did not come back in time: lost if it was
        // training (rank 0's loss fails the job, as it would have the lost server's).
        for &rank in &checkpoint.connected {
            if self.index(rank).is_some() || !checkpoint.active.contains(&rank) {
                continue;
            }
            if rank == 0 {
                self.failure
                    .get_or_insert_with(|| "worker 0 did not come back".to_owned());
            } else {
                self.lost.insert(rank);
            }
        }
        for saved in checkpoint.optimizers {
            let lens: Vec<usize> = saved.values.iter().map(Vec::len).collect();
            let params = saved.values;
            let optimizer = match saved.state {
                Some(state) => {
                    let state = OptimizerState {
                        kind: state.rule.kind().ok_or("an unknown optimizer rule")?,
                        step: state.step,
                        max_grad_norm: state.max_grad_norm,
                        first: state.first,
                        second: state.second,
                    };
                    Some(FlatOptimizer::from_state(state, &lens).map_err(|e| e.to_string())?)
                }
                None => None,
            };
            self.optimizers
                .insert(saved.handle, Held { params, optimizer });
        }
        Ok(())
    }

    /// Runs the exchange: paced when the terms say so, else round by round as the workers
    /// step.
    async fn rounds(&mut self) -> Result<(), String> {
        match (self.terms.pace, self.terms.rounds) {
            (Some(pace), _) => self.paced_rounds(pace).await,
            (None, Rounds::Synchronous) => self.eager_rounds().await,
            (None, Rounds::Asynchronous { max_staleness }) => {
                self.async_rounds(max_staleness).await
            }
        }
    }

    /// An asynchronous exchange: each worker's message is handled as it arrives. A step is
    /// applied alone, unless more than `max_staleness` updates happened since the worker got
    /// the parameters it computed on (then it is dropped); either way the worker gets the
    /// current parameters back.
    async fn async_rounds(&mut self, max_staleness: u32) -> Result<(), String> {
        let size = self.terms.message_bytes();
        // The update count each worker's parameters are from.
        let mut seen: BTreeMap<u32, u64> = BTreeMap::new();
        let mut waiting = tokio::task::JoinSet::new();
        for worker in &mut self.workers {
            let reader = worker
                .reader
                .take()
                .ok_or("a worker's connection went missing")?;
            seen.insert(worker.rank, self.rounds_done);
            waiting.spawn(next_message(worker.rank, reader, size));
        }
        let mut replacements = self.replacements.take();
        loop {
            // Rank 0's model is the job's: while it is lost, its replacement is awaited,
            // even once every other worker is done.
            if waiting.is_empty() && !self.lost.contains(&0) {
                break;
            }
            let arrived = tokio::select! {
                arrived = waiting.join_next(), if !waiting.is_empty() => match arrived {
                    Some(arrived) => arrived,
                    None => break,
                },
                Some(link) = next_replacement(&mut replacements) => {
                    if let Some(i) = self.take_back(link).await {
                        let worker = &mut self.workers[i];
                        if let Some(reader) = worker.reader.take() {
                            // A worker that reconnected resends the step it computed
                            // before: its staleness counts from then. A new one registers
                            // first, which sets it.
                            seen.entry(worker.rank).or_insert(self.rounds_done);
                            waiting.spawn(next_message(worker.rank, reader, size));
                        }
                    }
                    continue;
                }
                else => return Err("worker 0 broke its connection".into()),
            };
            let (rank, reader, arrival) =
                arrived.map_err(|_| "a worker's reader failed".to_owned())?;
            let Arrival::Message(message) = arrival else {
                self.lose(rank)?;
                continue;
            };
            let i = self.index(rank).ok_or("a worker's link went missing")?;
            let message = message.map_err(|e| format!("worker {rank}: {e}"))?;
            let answer = match message {
                ToServer::Done => {
                    self.workers[i].active = false;
                    self.rank_zero_done |= rank == 0;
                    // A replacement must not wait for a worker that has left.
                    self.checkpoint()?;
                    continue;
                }
                ToServer::Abandon => return Err(format!("worker {rank} failed")),
                ToServer::Hello { .. } | ToServer::Idle => {
                    return Err(format!("worker {rank} broke the protocol"));
                }
                // Rank 0's model is sealed: what this worker would do next is for nothing.
                ToServer::Register { .. } | ToServer::Step { .. } if self.rank_zero_done => {
                    self.release(i).await;
                    continue;
                }
                ToServer::Register { optimizer, values } => {
                    (self.register(vec![(optimizer, values)])?, true)
                }
                ToServer::Step {
                    optimizer,
                    rule,
                    max_grad_norm,
                    gradients,
                } => {
                    let staleness = self.rounds_done - seen.get(&rank).copied().unwrap_or(0);
                    if staleness <= u64::from(max_staleness) {
                        self.step(vec![(optimizer, rule, max_grad_norm, gradients)])?;
                        self.rounds_done += 1;
                        self.checkpoint_if_due()?;
                        (optimizer, true)
                    } else {
                        (optimizer, false)
                    }
                }
            };
            seen.insert(rank, self.rounds_done);
            let (optimizer, applied) = answer;
            let params = held_params(&self.optimizers, optimizer)?;
            let answer = match applied {
                true => ParametersAnswer::Applied(params),
                false => ParametersAnswer::Stale(params),
            };
            pad_into(&answer, size, Arc::make_mut(&mut self.outbox))?;
            if !self.workers[i].send(&self.outbox).await {
                self.lose(rank)?;
                continue;
            }
            waiting.spawn(next_message(rank, reader, size));
        }
        Ok(())
    }

    /// Where worker `rank`'s link is.
    fn index(&self, rank: u32) -> Option<usize> {
        self.workers.iter().position(|w| w.rank == rank)
    }

    /// Worker `rank` broke its connection before it was done: it is lost and the rounds go
    /// on (a replacement may take its place; until rank 0's does, the server waits for it
    /// once the others are done).
    fn lose(&mut self, rank: u32) -> Result<(), String> {
        let broke = || format!("worker {rank} broke its connection");
        let i = self.index(rank).ok_or_else(broke)?;
        let worker = &mut self.workers[i];
        worker.active = false;
        worker.reader = None;
        self.lost.insert(rank);
        // A replacement server must not wait for it.
        self.checkpoint()
    }

    /// Takes a replacement in: a worker of a rank that was lost (before this server, a
    /// replacement itself, took over, or since), before rank 0 is done.
    /// Returns its index. One turned away once rank 0 is done is told so (`Released`), so
    /// that it stops; another's connection is dropped, and it tries again (a replacement
    /// may reach the server before the server has noticed the loss it replaces).
    async fn take_back(&mut self, mut link: Link) -> Option<usize> {
        let place = if self.rank_zero_done || !self.lost.remove(&link.rank) {
            None
        } else {
            match self.index(link.rank) {
                Some(i) => Some(Ok(i)),
                None => Some(Err(self.workers.partition_point(|w| w.rank < link.rank))),
            }
        };
        if place.is_some() {
            self.replaced.insert(link.rank);
        }
        match place {
            Some(Ok(i)) => {
                self.workers[i] = link;
                Some(i)
            }
            Some(Err(i)) => {
                self.workers.insert(i, link);
                Some(i)
            }
            None => {
                if self.rank_zero_done
                    && let Ok(bytes) = pad(&ToWorker::Released, self.terms.message_bytes())
                {
                    link.send(&bytes).await;
                }
                None
            }
        }
    }

    /// Takes in the replacements admitted since the last round.
    async fn take_back_waiting(&mut self) {
        while let Some(link) = self
            .replacements
            .as_mut()
            .and_then(|replacements| replacements.try_recv().ok())
        {
            self.take_back(link).await;
        }
    }

    /// Lets worker `i` go: rank 0 is done.
    async fn release(&mut self, i: usize) {
        let worker = &mut self.workers[i];
        worker.active = false;
        if let Ok(bytes) = pad(&ToWorker::Released, self.terms.message_bytes()) {
            worker.send(&bytes).await;
        }
    }

    /// A paced exchange: exactly `pace.ticks` messages from every worker and as many
    /// answers to each, the answers sent half a tick after the last message of the tick
    /// arrived (the workers send at their ticks, so when that is depends on the schedule
    /// alone). A worker's request waits at the server until every worker still training
    /// has one; then the round runs. A failure does not end the schedule: the server
    /// answers `Refused` for the rest of it, so the traffic keeps its shape.
    ///
    /// A server that took over from a checkpoint follows the workers' schedules from where
    /// they reconnected (each says its tick), each worker to its schedule's end.
    async fn paced_rounds(&mut self, pace: Pace) -> Result<(), String> {
        let size = self.terms.message_bytes();
        let half_tick = Duration::from_millis(u64::from(pace.tick_ms / 2));
        // By rank: a request waiting for its round, and connections that are gone.
        let mut pending: BTreeMap<u32, ToServer> = BTreeMap::new();
        let mut broken: BTreeSet<u32> = BTreeSet::new();
        let mut failure: Option<String> = self.failure.take();
        let ticks = u64::from(pace.ticks);
        // A server that took over goes on from the earliest tick a reconnected worker said
        // (a replacement worker's schedule starts at 0, and ends with the server's).
        if let Some(earliest) = self
            .workers
            .iter()
            .map(|w| w.next_tick)
            .filter(|&tick| tick > 0)
            .min()
        {
            self.ticks_done = self.ticks_done.max(u64::from(earliest));
        }
        let schedule_over = |worker: &Link| u64::from(worker.next_tick) >= ticks;
        // The answers that never change, encoded once: every tick sends messages of the
        // job's size, megabytes each, to every worker.
        let wait = pad(&ToWorker::Wait, size)?;
        let let_go = pad(&ToWorker::Released, size)?;
        while self.ticks_done < ticks {
            // A replacement of a lost worker joins at this tick; it keeps its own schedule,
            // which the server's reads follow.
            self.take_back_waiting().await;
            for worker in self.workers.iter().filter(|w| w.reader.is_some()) {
                if broken.remove(&worker.rank) {
                    pending.remove(&worker.rank);
                }
            }
            let mut released = BTreeSet::new();
            let mut lost = Vec::new();
            // The workers whose message this tick was read: each gets one answer.
            let mut heard = BTreeSet::new();
            for worker in self.workers.iter_mut() {
                // A worker whose schedule is ahead of the server's (it reconnected later
                // than another) is read at its own tick, so every schedule ends with the
                // server's; one behind (a replacement worker, on a schedule of its own)
                // is read every tick.
                let ahead = u64::from(worker.next_tick) > self.ticks_done;
                if broken.contains(&worker.rank) || schedule_over(worker) || ahead {
                    continue;
                }
                let Some(reader) = worker.reader.as_mut() else {
                    return Err("a worker's connection went missing".into());
                };
                let message = match reader.next(size).await {
                    Ok(()) => reader.decode(),
                    Err(_) => {
                        broken.insert(worker.rank);
                        lost.push(worker.rank);
                        continue;
                    }
                };
                worker.next_tick = worker.next_tick.saturating_add(1);
                heard.insert(worker.rank);
                let problem = match message {
                    Ok(ToServer::Idle) => None,
                    Ok(ToServer::Done) => {
                        worker.active = false;
                        self.rank_zero_done |= worker.rank == 0;
                        None
                    }
                    Ok(ToServer::Abandon) => Some("failed".to_owned()),
                    Ok(ToServer::Hello { .. }) => Some("said hello twice".to_owned()),
                    // A replacement behind rank 0, which is done: let go. (A first worker
                    // goes on stepping alone: when it ends must not depend on its data.)
                    Ok(ToServer::Register { .. } | ToServer::Step { .. })
                        if self.rank_zero_done
                            && worker.active
                            && self.replaced.contains(&worker.rank) =>
                    {
                        worker.active = false;
                        released.insert(worker.rank);
                        None
                    }
                    Ok(request) if !pending.contains_key(&worker.rank) && worker.active => {
                        pending.insert(worker.rank, request);
                        None
                    }
                    Ok(_) => Some("sent a request out of turn".to_owned()),
                    Err(e) => Some(e),
                };
                if let Some(problem) = problem {
                    failure.get_or_insert(format!("worker {} {problem}", worker.rank));
                }
            }
            for rank in lost {
                self.lose_paced(rank, &mut failure);
                pending.remove(&rank);
            }
            let arrived = tokio::time::Instant::now();
            let ready = failure.is_none()
                && !pending.is_empty()
                && self
                    .workers
                    .iter()
                    .all(|w| !w.active || pending.contains_key(&w.rank));
            let mut answered = BTreeSet::new();
            let mut answering = Answers::default();
            if ready {
                let messages: Vec<(u32, ToServer)> = std::mem::take(&mut pending)
                    .into_iter()
                    .inspect(|(rank, _)| {
                        answered.insert(*rank);
                    })
                    .collect();
                match self.round(messages) {
                    Ok(answers) => answering = answers,
                    Err(reason) => {
                        failure.get_or_insert(reason);
                    }
                }
            }
            // The parameters the round's workers get: their own optimizer's, or else the
            // round's, encoded into the outbox as in a live job's rounds.
            let mut everyone = false;
            let mut own: BTreeMap<u32, Arc<Vec<u8>>> = BTreeMap::new();
            if failure.is_none() {
                let encoded = self
                    .encode_for_everyone(answering.all, size)
                    .and_then(|all| Ok((all, self.own_answers(&answering.own, size)?)));
                match encoded {
                    Ok(encoded) => (everyone, own) = encoded,
                    Err(reason) => {
                        failure.get_or_insert(reason);
                    }
                }
            }
            let refused;
            let other = match &failure {
                Some(reason) => {
                    refused = pad(&ToWorker::Refused(reason.clone()), size)?;
                    &refused
                }
                None => &wait,
            };
            let checkpoint = self.paced_checkpoint(self.ticks_done + 1, &broken, &mut failure)?;
            tokio::time::sleep_until(arrived + half_tick).await;
            if tokio::time::Instant::now() > arrived + half_tick + LATE {
                failure.get_or_insert_with(|| {
                    format!(
                        "the exchange's {} ms tick is too short for this model's rounds",
                        pace.tick_ms
                    )
                });
            }
            let mut lost = Vec::new();
            for worker in self.workers.iter_mut() {
                if broken.contains(&worker.rank) || !heard.contains(&worker.rank) {
                    continue;
                }
                let in_round = answered.contains(&worker.rank);
                let bytes = match (own.get(&worker.rank), everyone) {
                    (Some(parameters), _) if in_round => &**parameters,
                    (None, true) if in_round => &**self.outbox,
                    _ if released.contains(&worker.rank) && failure.is_none() => &let_go,
                    _ => other,
                };
                if !worker.send(bytes).await {
                    broken.insert(worker.rank);
                    lost.push(worker.rank);
                }
            }
            for rank in lost {
                self.lose_paced(rank, &mut failure);
            }
            self.ticks_done += 1;
            if let Some(sealed) = checkpoint {
                self.send_checkpoint(sealed, self.ticks_done)?;
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// A paced exchange's worker `rank` broke its connection. One that was done is no
    /// loss; another is lost as in a live job ([`Server::lose`]), its rounds go on without
    /// it and a replacement may take its place, except rank 0, whose loss ends the job (the
    /// schedule still runs to its end, with `Refused`).
    fn lose_paced(&mut self, rank: u32, failure: &mut Option<String>) {
        let training = self.index(rank).is_some_and(|i| self.workers[i].active);
        if !training {
            if let Some(i) = self.index(rank) {
                self.workers[i].reader = None;
            }
            return;
        }
        let lost = match rank {
            0 => Err(format!("worker {rank} broke its connection")),
            _ => self.lose(rank),
        };
        if let Err(reason) = lost {
            failure.get_or_insert(reason);
        }
    }

    /// Runs rounds as the workers step, until every worker is done (or, once rank 0 is,
    /// let go).
    async fn eager_rounds(&mut self) -> Result<(), String> {
        let size = self.terms.message_bytes();
        // Rank 0's model is the job's: while it is lost, its replacement is awaited, even
        // once every other worker is done.
        while self.workers.iter().any(|w| w.active) || self.lost.contains(&0) {
            self.take_back_waiting().await;
            if !self.workers.iter().any(|w| w.active) {
                let link = match self.replacements.as_mut() {
                    Some(replacements) => replacements.recv().await,
                    None => None,
                };
                let Some(link) = link else {
                    return Err("worker 0 broke its connection".into());
                };
                self.take_back(link).await;
                continue;
            }
            // Every worker's message is read and decrypted at once, on the server's cores;
            // the round then takes them in rank order, whatever order they came in.
            let mut lost = Vec::new();
            let mut reading = tokio::task::JoinSet::new();
            for worker in self.workers.iter_mut().filter(|w| w.active) {
                match worker.reader.take() {
                    Some(reader) => {
                        reading.spawn(next_message(worker.rank, reader, size));
                    }
                    None => lost.push(worker.rank),
                }
            }
            let mut arrived = Vec::new();
            while let Some(read) = reading.join_next().await {
                let (rank, reader, arrival) =
                    read.map_err(|_| "a worker's reader failed".to_owned())?;
                let i = self.index(rank).ok_or("a worker's link went missing")?;
                match arrival {
                    Arrival::Message(message) => arrived.push((rank, message)),
                    Arrival::Broken => lost.push(rank),
                }
                self.workers[i].reader = Some(reader);
            }
            arrived.sort_unstable_by_key(|(rank, _)| *rank);
            let messages = arrived
                .into_iter()
                .map(|(rank, message)| {
                    message
                        .map(|message| (rank, message))
                        .map_err(|e| format!("worker {rank}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            for rank in lost {
                self.lose(rank)?;
            }
            if messages
                .iter()
                .any(|(rank, m)| *rank == 0 && matches!(m, ToServer::Done))
            {
                return self.release_behind(messages).await;
            }
            let active = self.workers.iter().filter(|w| w.active).count();
            let answers = self.round(messages)?;
            if answers.all.is_some() {
                self.rounds_done += 1;
                self.checkpoint_if_due()?;
            }
            // A replacement must not wait for a worker that has left.
            if self.workers.iter().filter(|w| w.active).count() < active {
                self.checkpoint()?;
            }
            self.encode_for_everyone(answers.all, size)?;
            if answers.any() {
                let own = self.own_answers(&answers.own, size)?;
                let everyone = answers.all.is_some();
                for rank in self.answer_all(everyone, &own).await? {
                    self.lose(rank)?;
                }
            }
        }
        Ok(())
    }

    /// Sends every worker still training its answer, each on a task of its own, so that
    /// the answers are encrypted on the server's cores at once and none waits for another's
    /// to drain: its `own` answer if it has one, else the outbox when `everyone` is
    /// answered. The ranks whose connection broke.
    async fn answer_all(
        &mut self,
        everyone: bool,
        own: &BTreeMap<u32, Arc<Vec<u8>>>,
    ) -> Result<Vec<u32>, String> {
        let mut lost = Vec::new();
        let mut sending = tokio::task::JoinSet::new();
        for worker in self.workers.iter_mut().filter(|w| w.active) {
            let rank = worker.rank;
            let outbox = match own.get(&rank) {
                Some(answer) => Arc::clone(answer),
                None if everyone => Arc::clone(&self.outbox),
                None => continue,
            };
            let Some(mut writer) = worker.writer.take() else {
                lost.push(rank);
                continue;
            };
            sending.spawn(async move {
                let sent = writer.send_message(&outbox).await.is_ok();
                (rank, writer, sent)
            });
        }
        while let Some(sent) = sending.join_next().await {
            let (rank, writer, sent) = sent.map_err(|_| "a worker's writer failed".to_owned())?;
            let i = self.index(rank).ok_or("a worker's link went missing")?;
            self.workers[i].writer = Some(writer);
            if !sent {
                lost.push(rank);
            }
        }
        lost.sort_unstable();
        Ok(lost)
    }

    /// The round in which rank 0 is done: the workers done with it leave, and those still
    /// running (replacements, behind the others) are let go.
    async fn release_behind(&mut self, messages: Vec<(u32, ToServer)>) -> Result<(), String> {
        self.rank_zero_done = true;
        for (rank, message) in messages {
            let i = self.index(rank).ok_or("a worker's link went missing")?;
            match message {
                ToServer::Done => self.workers[i].active = false,
                ToServer::Abandon => return Err(format!("worker {rank} failed")),
                _ => self.release(i).await,
            }
        }
        Ok(())
    }

    /// One round's messages, in rank order: whom the round answers with which optimizer's
    /// parameters (nobody when it only let workers go).
    fn round(&mut self, messages: Vec<(u32, ToServer)>) -> Result<Answers, String> {
        let sorted = sort_round(&self.optimizers, messages)?;
        for rank in sorted.left {
            self.leave(rank);
        }
        let all = match (sorted.starting.is_empty(), sorted.steps.is_empty()) {
            (true, true) => None,
            (false, true) => Some(self.register(sorted.starting)?),
            (true, false) => Some(self.step(sorted.steps)?),
            (false, false) => {
                return Err("workers out of step: some register while others step".into());
            }
        };
        Ok(Answers::new(all, sorted.catching_up))
    }

    fn leave(&mut self, rank: u32) {
        if let Some(worker) = self.workers.iter_mut().find(|w| w.rank == rank) {
            worker.active = false;
        }
    }

    /// The answers of `own` (rank → optimizer), each optimizer's encoded once and shared by
    /// the ranks it answers (after a server is replaced, every worker registers again).
    fn own_answers(
        &self,
        own: &BTreeMap<u32, u32>,
        size: usize,
    ) -> Result<BTreeMap<u32, Arc<Vec<u8>>>, String> {
        let mut encoded: BTreeMap<u32, Arc<Vec<u8>>> = BTreeMap::new();
        let mut answers = BTreeMap::new();
        for (&rank, &optimizer) in own {
            let bytes = match encoded.get(&optimizer) {
                Some(bytes) => Arc::clone(bytes),
                None => {
                    let bytes = Arc::new(self.answer(optimizer, size)?);
                    encoded.insert(optimizer, Arc::clone(&bytes));
                    bytes
                }
            };
            answers.insert(rank, bytes);
        }
        Ok(answers)
    }

    /// Encodes the parameters of `optimizer`, the one the round stepped or registered for
    /// everyone (if any), as an answer of `size` bytes into the outbox, whose memory every
    /// round reuses; whether there was one.
    fn encode_for_everyone(&mut self, optimizer: Option<u32>, size: usize) -> Result<bool, String> {
        let Some(optimizer) = optimizer else {
            return Ok(false);
        };
        pad_into(
            &ParametersAnswer::Applied(held_params(&self.optimizers, optimizer)?),
            size,
            Arc::make_mut(&mut self.outbox),
        )?;
        Ok(true)
    }

    /// `optimizer`'s parameters as an answer of `size` bytes.
    fn answer(&self, optimizer: u32, size: usize) -> Result<Vec<u8>, String> {
        let params = held_params(&self.optimizers, optimizer)?;
        pad(&ParametersAnswer::Applied(params), size)
    }

    /// Every remaining worker registers one optimizer: the first one's values start it.
    /// The optimizer, whose parameters answer.
    fn register(&mut self, registers: Vec<(u32, Vec<Vec<f32>>)>) -> Result<u32, String> {
        let optimizer = registers[0].0;
        let lens: Vec<usize> = registers[0].1.iter().map(Vec::len).collect();
        for (other, values) in &registers {
            if *other != optimizer || values.iter().map(Vec::len).ne(lens.iter().copied()) {
                return Err("workers out of step: they register different optimizers".into());
            }
        }
        if self.optimizers.contains_key(&optimizer) {
            return Ok(optimizer);
        }
        let values = registers
            .into_iter()
            .next()
            .map(|(_, v)| v)
            .unwrap_or_default();
        self.optimizers.insert(
            optimizer,
            Held {
                params: values,
                optimizer: None,
            },
        );
        Ok(optimizer)
    }

    /// Every remaining worker steps one optimizer: average and apply. The optimizer, whose
    /// parameters answer.
    fn step(&mut self, steps: Vec<Step>) -> Result<u32, String> {
        let (optimizer, rule, max_grad_norm) = (steps[0].0, steps[0].1, steps[0].2);
        if steps
            .iter()
            .any(|(o, r, m, _)| (*o, *r, *m) != (optimizer, rule, max_grad_norm))
        {
            return Err("workers out of step: they step different optimizers".into());
        }
        let held = self
            .optimizers
            .get_mut(&optimizer)
            .ok_or("a step of an optimizer never registered")?;
        let kind = scaled_for(rule, steps.len())
            .kind()
            .ok_or("an unknown optimizer rule")?;
        if steps.iter().any(|(.., g)| g.len() != held.params.len()) {
            return Err("a step with the wrong number of gradients".into());
        }
        // Each worker's gradients, parameter by parameter: the first one present becomes
        // the sum, the others are added into it.
        let mut by_worker: Vec<_> = steps.into_iter().map(|(.., g)| g.into_iter()).collect();
        let mut gradients = Vec::with_capacity(held.params.len());
        for len in held.lens() {
            let mut sum: Option<Vec<f32>> = None;
            let mut count = 0u32;
            for grads in &mut by_worker {
                let Some(grad) = grads.next().flatten() else {
                    continue;
                };
                if grad.len() != len {
                    return Err("a gradient of the wrong length".into());
                }
                count += 1;
                match &mut sum {
                    Some(sum) => sum.iter_mut().zip(&grad).for_each(|(s, g)| *s += g),
                    None => sum = Some(grad),
                }
            }
            let average = sum.map(|mut sum| {
                if count > 1 {
                    let scale = 1.0 / count as f32;
                    sum.iter_mut().for_each(|s| *s *= scale);
                }
                sum
            });
            gradients.push(average);
        }
        let state = match &mut held.optimizer {
            Some(state) => {
                state.set_kind(kind).map_err(|e| e.to_string())?;
                state
            }
            None => held
                .optimizer
                .insert(FlatOptimizer::new(kind, held.params.len()).map_err(|e| e.to_string())?),
        };
        if let Some(norm) = max_grad_norm {
            state.clip_grad_norm(norm).map_err(|e| e.to_string())?;
        }
        state
            .step(&mut held.params, &mut gradients)
            .map_err(|e| e.to_string())?;
        Ok(optimizer)
    }

    /// Tells every worker still connected that the job is over, so none waits for its
    /// deadline.
    async fn refuse_all(&mut self, reason: &str) {
        let Ok(bytes) = pad(
            &ToWorker::Refused(reason.to_owned()),
            self.terms.message_bytes(),
        ) else {
            return;
        };
        for worker in &mut self.workers {
            worker.send(&bytes).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        message_kib: u32,
        pace: Option<Pace>,
        checkpoint_every: u32,
    ) -> ParameterServerRequest {
        ParameterServerRequest {
            exchange: ExchangeTerms {
                workers: 2,
                message_kib,
                pace,
                rounds: Rounds::Synchronous,
            },
            peer_policy: "dangerous-simulated-platform 00 00\n".to_owned(),
            time_budget_secs: 60,
            checkpoint_every,
        }
    }

    fn held(lens: &[usize]) -> Held {
        Held {
            params: lens.iter().map(|&n| vec![0.5; n]).collect(),
            optimizer: None,
        }
    }

    fn register(optimizer: u32, lens: &[usize]) -> ToServer {
        ToServer::Register {
            optimizer,
            values: lens.iter().map(|&n| vec![1.0; n]).collect(),
        }
    }

    fn step(optimizer: u32) -> ToServer {
        ToServer::Step {
            optimizer,
            rule: Rule {
                tag: 0,
                values: [0.1, 0.0, 0.0, 0.0, 0.0],
            },
            max_grad_norm: None,
            gradients: vec![Some(vec![1.0; 3])],
        }
    }

    /// A program with two optimizers: a worker that comes back while the others step the
    /// second registers both again, and gets each one's parameters while the others go on.
    #[test]
    fn a_worker_registering_again_while_the_others_step_another_optimizer_is_answered_apart() {
        let optimizers = BTreeMap::from([(1, held(&[3])), (2, held(&[3]))]);
        let sorted = sort_round(
            &optimizers,
            vec![(0, step(2)), (1, register(1, &[3])), (2, step(2))],
        )
        .expect("in step");
        assert_eq!(sorted.catching_up, vec![(1, 1)]);
        assert!(sorted.starting.is_empty());
        assert_eq!(sorted.steps.len(), 2);
        let answers = Answers::new(Some(2), sorted.catching_up);
        assert_eq!(answers.all, Some(2));
        assert_eq!(answers.own, BTreeMap::from([(1, 1)]));

        // Registering again the optimizer the others step: it gets the round's answer.
        let answers = Answers::new(Some(2), vec![(1, 2)]);
        assert!(answers.own.is_empty());
        // Only workers registering again: each gets its own optimizer's parameters.
        let sorted = sort_round(
            &optimizers,
            vec![(0, register(1, &[3])), (1, register(2, &[3]))],
        )
        .expect("in step");
        let answers = Answers::new(None, sorted.catching_up);
        assert!(answers.any());
        assert_eq!(answers.own, BTreeMap::from([(0, 1), (1, 2)]));
        assert!(!Answers::new(None, Vec::new()).any());
    }

    #[test]
    fn registrations_start_an_optimizer_or_must_match_the_one_held() {
        let optimizers = BTreeMap::from([(1, held(&[3, 2]))]);
        let sorted = sort_round(
            &optimizers,
            vec![
                (0, register(7, &[4])),
                (1, register(7, &[4])),
                (2, ToServer::Done),
            ],
        )
        .expect("a new optimizer");
        assert_eq!(sorted.starting.len(), 2);
        assert!(sorted.catching_up.is_empty());
        assert_eq!(sorted.left, vec![2]);
        // Registering the held optimizer with other parameters is not catching up.
        let refused = sort_round(&optimizers, vec![(0, register(1, &[3, 3]))]).unwrap_err();
        assert!(refused.contains("out of step"), "{refused}");
        let refused = sort_round(&optimizers, vec![(1, ToServer::Abandon)]).unwrap_err();
        assert!(refused.contains("worker 1 failed"), "{refused}");
    }

    #[test]
    fn the_learning_rate_grows_linearly_and_an_adaptive_one_by_the_square_root_past_four() {
        let rate = |tag: u8, batches: usize| {
            let rule = Rule {
                tag,
                values: [0.5, 0.9, 0.999, 1e-8, 0.0],
            };
            scaled_for(rule, batches).values[0] / 0.5
        };
        for (batches, sgd, adam) in [
            (0, 1.0, 1.0),
            (1, 1.0, 1.0),
            (2, 2.0, 2.0),
            (4, 4.0, 4.0),
            (16, 16.0, 8.0),
            (64, 64.0, 16.0),
        ] {
            assert_eq!(rate(0, batches), sgd, "SGD, {batches}");
            assert_eq!(rate(2, batches), sgd, "Nesterov, {batches}");
            for adaptive in [1, 3, 4] {
                assert_eq!(rate(adaptive, batches), adam, "rule {adaptive}, {batches}");
            }
        }
        // The rest of the rule is the program's.
        let rule = Rule {
            tag: 1,
            values: [0.5, 0.9, 0.999, 1e-8, 0.0],
        };
        assert_eq!(scaled_for(rule, 8).values[1..], rule.values[1..]);
    }

    #[test]
    fn a_paced_checkpoint_has_a_size_the_terms_fix_and_fits_a_frame_or_is_not_taken() {
        let pace = Some(Pace::for_budget(60, 25));
        // Three messages' worth of values, the request and the margin.
        let small = request(2048, pace, 20);
        let size = paced_checkpoint_bytes(&small);
        assert!(size >= 3 * (2048 << 10) + CHECKPOINT_MARGIN, "{size}");
        assert!(takes_checkpoints(&small));
        // 32 MiB messages: a paced checkpoint would not fit one 64 MiB frame to the host,
        // so none is taken; a live job's checkpoints are sized by the model, and are.
        assert!(!takes_checkpoints(&request(32 << 10, pace, 20)));
        assert!(takes_checkpoints(&request(32 << 10, None, 20)));
        // Asked for none.
        assert!(!takes_checkpoints(&request(2048, pace, 0)));
        assert!(!takes_checkpoints(&request(2048, None, 0)));
    }
}
