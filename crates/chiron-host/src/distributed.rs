//! A distributed job's task: it owns the job's parameter server and its workers.
//!
//! The owner attests every enclave (`GET /v1/jobs/{id}/evidence?enclave=...`) and seals one
//! request to each. On start the host hands the parameter server its request and learns the
//! port its workers connect to; then it sends each worker its request, the program, the
//! dataset container and that address. Workers and server attest each other on connecting,
//! so the address is only a hint. Rank 0's events are the job's events and its sealed model
//! is the job's model; the other workers' events are dropped (their ciphertexts are for the
//! owner alone, and the owner follows rank 0). The job succeeds once rank 0 has sealed its
//! model and the server has served every worker; any enclave's failure fails the job.
//!
//! A lost worker does not end the job: each worker handed the host its ticket (its
//! request, sealed to the runtime on this platform), and a replacement started from it
//! attests to the server and joins the rounds. Rank 0 hands one over in a live job only:
//! its replacement goes on with the job's events (under a key of its own, which the owner
//! derives) and seals the job's model; a private job's event stream has a fixed length, so
//! its rank 0 is not replaced. A lost server is replaced from its latest checkpoint.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chiron_proto::api::{JobEnclave, JobState};
use chiron_proto::wire::{EnclaveFrame, FrameError, HostFrame};
use std::net::SocketAddr;
use tokio::net::tcp::OwnedWriteHalf;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::enclave::{Enclave, EnclaveError, Role, clean_label, write_frame};
use crate::jobs::{
    AbortOnDrop, CLOSING_GRACE, Command, FrameResult, Job, JobError, MAX_EVENT_LEN, SendFailure,
    StartRequest, StartRequests, TrainingStart, enclave_label, evidence, labels, read_frames,
    send_training_input,
};
use crate::launcher::{Instance, Launcher};
use crate::store;

/// How long the relay may take to see the enclaves' connections close after a job ends.
const RELAY_DRAIN: Duration = Duration::from_secs(5);

/// How long the other workers' last frames are awaited once rank 0's model is stored (the
/// job has ended by then; a private job's workers each pad their memory and wait for their
/// own deadline before they send it).
const WORKER_DRAIN: Duration = Duration::from_secs(15);

/// How many times a job's lost parameter server is replaced before the job fails.
const MAX_REPLACEMENTS: u32 = 3;

/// How many lost workers a job replaces before a loss fails it.
const MAX_WORKER_REPLACEMENTS: u32 = 3;

/// Largest worker ticket kept (a sealed request: the owner's terms and policy).
const MAX_TICKET_LEN: usize = 1 << 20;

/// How long the parameter server may take to say where it listens.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(60);

/// One enclave of the job as the task holds it.
struct Member {
    writer: Option<OwnedWriteHalf>,
    frames: mpsc::Receiver<FrameResult>,
    _reader: AbortOnDrop<()>,
    instance: Option<Instance>,
    /// Where its peers reach it.
    ip: std::net::IpAddr,
}

impl Member {
    fn new(enclave: Enclave) -> Self {
        let Enclave {
            reader,
            writer,
            ip,
            instance,
        } = enclave;
        let (frames, reader) = read_frames(reader);
        Self {
            writer: Some(writer),
            frames,
            _reader: reader,
            instance,
            ip,
        }
    }
}

impl Member {
    /// Takes `replacement`'s place (its writer apart) and stops the enclave it replaces;
    /// returns the replacement's frames.
    async fn replace_with(&mut self, replacement: Member) -> mpsc::Receiver<FrameResult> {
        let Member {
            frames,
            _reader,
            instance,
            ip,
            ..
        } = replacement;
        self._reader = _reader;
        self.ip = ip;
        if let Some(mut old) = std::mem::replace(&mut self.instance, instance) {
            old.kill().await;
        }
        frames
    }
}

/// The task that owns a distributed job's enclaves for the job's whole life.
pub async fn run_job(
    job: Arc<Job>,
    server: Enclave,
    workers: Vec<Enclave>,
    mut commands: mpsc::Receiver<Command>,
    launcher: Launcher,
) {
    let mut server = Member::new(server);
    let mut workers: Vec<Member> = workers.into_iter().map(Member::new).collect();
    let mut deadline_armed = true;
    let outcome = loop {
        let command = if deadline_armed {
            match tokio::time::timeout_at(job.start_deadline(), commands.recv()).await {
                Ok(command) => command,
                Err(_) if job.started_in_time().await => {
                    deadline_armed = false;
                    continue;
                }
                Err(_) => break Some(Err(labels::NOT_STARTED.to_owned())),
            }
        } else {
            commands.recv().await
        };
        let Some(command) = command else {
            // Every sender is gone: the host is shutting down.
            break None;
        };
        match command {
            Command::Evidence {
                enclave,
                nonce,
                reply,
            } => {
                let member = match enclave {
                    JobEnclave::ParameterServer => Some(&mut server),
                    JobEnclave::Worker(rank) => workers.get_mut(rank as usize),
                };
                let answer = match member {
                    Some(Member {
                        writer: Some(writer),
                        frames,
                        ..
                    }) => evidence(&job, writer, frames, nonce).await,
                    _ => Err(JobError::EnclaveGone(job.id.clone())),
                };
                let fatal = match &answer {
                    Err(JobError::Enclave(e)) if e.is_fatal() => Some(enclave_label(e)),
                    _ => None,
                };
                let _ = reply.send(answer);
                if let Some(label) = fatal {
                    break Some(Err(label.to_owned()));
                }
            }
            Command::Start {
                requests: StartRequests::Distributed(sealed),
            } => {
                break Some(
                    train(
                        &job,
                        &launcher,
                        &mut server,
                        &mut workers,
                        &mut commands,
                        sealed.parameter_server,
                        sealed.workers,
                    )
                    .await,
                );
            }
            // `Job::start` lets only a distributed request through.
            Command::Start { .. } => break Some(Err(labels::PROTOCOL.to_owned())),
        }
    };
    for member in std::iter::once(&mut server).chain(workers.iter_mut()) {
        if let Some(instance) = member.instance.as_mut() {
            instance.kill().await;
        }
    }
    if let Some(outcome) = outcome {
        job.finish(outcome).await;
    }
}

/// Sends a parameter server its start frame and returns the port its workers connect to.
async fn start_server(
    writer: &mut OwnedWriteHalf,
    frames: &mut mpsc::Receiver<FrameResult>,
    start: &HostFrame,
) -> Result<u16, String> {
    write_frame(writer, start)
        .await
        .map_err(|e| enclave_label(&EnclaveError::from(e)))?;
    match tokio::time::timeout(LISTEN_TIMEOUT, frames.recv()).await {
        Ok(Some(Ok(EnclaveFrame::PeersAt { port }))) => Ok(port),
        Ok(Some(Ok(EnclaveFrame::Failed { public }))) => Err(clean_label(&public)),
        Ok(Some(Ok(_))) => Err(labels::PROTOCOL.to_owned()),
        Ok(Some(Err(_)) | None) => Err(labels::ENCLAVE_EXITED.to_owned()),
        Err(_) => Err(labels::ENCLAVE_UNRESPONSIVE.to_owned()),
    }
}

/// Launches a parameter server to take over `job` from its latest checkpoint; returns it
/// (its writer apart) and the port its workers reconnect to.
async fn replace_server(
    job: &Job,
    launcher: &Launcher,
) -> Result<(Member, OwnedWriteHalf, u16), String> {
    let checkpoint = match job.store.get(&store::checkpoint_path(&job.id)).await {
        Ok(Some(checkpoint)) => checkpoint.to_vec(),
        _ => return Err(labels::HOST_READ.to_owned()),
    };
    let enclave = launcher
        .spawn(Role::ParameterServer)
        .await
        .map_err(|e| enclave_label(&e))?;
    let mut member = Member::new(enclave);
    let mut writer = member.writer.take().ok_or(labels::PROTOCOL)?;
    let start = HostFrame::ResumeParameterServer {
        job_id: job.id.to_string(),
        checkpoint,
    };
    let port = start_server(&mut writer, &mut member.frames, &start).await?;
    Ok((member, writer, port))
}

/// Launches a worker to replace lost worker `rank` from its ticket; returns it (its
/// writer apart) and the task that sends it its input.
async fn replace_worker(
    job: &Arc<Job>,
    launcher: &Launcher,
    rank: usize,
    workers: u32,
    ticket: Vec<u8>,
    address: &str,
) -> Result<
    (
        Member,
        impl std::future::Future<Output = (usize, Result<OwnedWriteHalf, SendFailure>)> + use<>,
    ),
    String,
> {
    let enclave = launcher
        .spawn_worker(workers)
        .await
        .map_err(|e| enclave_label(&e))?;
    let mut member = Member::new(enclave);
    let writer = member.writer.take().ok_or(labels::PROTOCOL)?;
    let start = TrainingStart {
        request: StartRequest::Ticket(ticket),
        parameter_server: Some(address.to_owned()),
        shard: Some((rank as u32, workers)),
    };
    let job = Arc::clone(job);
    let sender = async move { (rank, send_training_input(writer, job, start).await) };
    Ok((member, sender))
}

/// Which enclave a frame came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum From {
    Server,
    Worker(usize),
}

#[allow(clippy::too_many_arguments)]
async fn train(
    job: &Arc<Job>,
    launcher: &Launcher,
    server: &mut Member,
    workers: &mut [Member],
    commands: &mut mpsc::Receiver<Command>,
    server_request: Vec<u8>,
    worker_requests: Vec<Vec<u8>>,
) -> Result<(), String> {
    let started = tokio::time::Instant::now();
    // The parameter server first: the workers need its port.
    let mut server_writer = server.writer.take().ok_or(labels::PROTOCOL)?;
    let start = HostFrame::StartParameterServer {
        job_id: job.id.to_string(),
        sealed_request: server_request,
    };
    let port = start_server(&mut server_writer, &mut server.frames, &start).await?;
    // The workers reach the server through the host's relay, as through any network.
    let relay_listener = tokio::net::TcpListener::bind(launcher.relay_bind())
        .await
        .map_err(|_| labels::HOST_RELAY.to_owned())?;
    let address = launcher.relay_address(
        relay_listener
            .local_addr()
            .map_err(|_| labels::HOST_RELAY.to_owned())?
            .port(),
    );
    let (stop_relay, stop) = tokio::sync::oneshot::channel();
    let mut stop_relay = Some(stop_relay);
    let (retarget, target) = watch::channel(SocketAddr::new(server.ip, port));
    let mut relay = AbortOnDrop(tokio::spawn(crate::relay::relay(
        relay_listener,
        target,
        started,
        stop,
    )));

    // Then every worker's input, concurrently.
    let workers_count = u32::try_from(workers.len()).map_err(|_| labels::PROTOCOL)?;
    let mut senders = JoinSet::new();
    for (rank, (member, sealed)) in workers.iter_mut().zip(worker_requests).enumerate() {
        let writer = member.writer.take().ok_or(labels::PROTOCOL)?;
        let job = Arc::clone(job);
        let address = address.clone();
        senders.spawn(async move {
            let start = TrainingStart {
                request: StartRequest::Owner(sealed),
                parameter_server: Some(address),
                shard: Some((rank as u32, workers_count)),
            };
            (rank, send_training_input(writer, job, start).await)
        });
    }
    // Frames from every enclave, tagged with their source.
    let (merged_tx, mut merged) = mpsc::channel::<(From, Option<FrameResult>)>(64);
    // Also serves a replacement server's frames.
    let forward = |from: From, mut frames: mpsc::Receiver<FrameResult>| {
        let tx = merged_tx.clone();
        AbortOnDrop(tokio::spawn(async move {
            loop {
                let frame = frames.recv().await;
                let end = !matches!(frame, Some(Ok(_)));
                if tx.send((from, frame)).await.is_err() || end {
                    break;
                }
            }
        }))
    };
    let sources = std::iter::once((From::Server, &mut server.frames)).chain(
        workers
            .iter_mut()
            .enumerate()
            .map(|(rank, m)| (From::Worker(rank), &mut m.frames)),
    );
    let mut forwarders: Vec<_> = sources
        .map(|(from, frames)| forward(from, std::mem::replace(frames, mpsc::channel(1).1)))
        .collect();
    // Where the latest checkpoint stored was taken ("round 40", or a paced job's "tick 40").
    let mut checkpoint: Option<String> = None;
    let mut replacements = 0u32;
    let mut tickets: Vec<Option<Vec<u8>>> = vec![None; workers.len()];
    let mut worker_replacements = 0u32;

    // Keeps the write halves (and so the connections) open once the transfers are done.
    let mut _writers = vec![server_writer];
    let mut model_stored = false;
    let mut served = false;
    let mut finished = vec![false; workers.len()];
    // The first failure: the job's label. The job still waits (a grace period at most) for
    // rank 0 to end, since rank 0's events tell the owner why.
    let mut failed: Option<String> = None;
    let mut closing: Option<tokio::time::Instant> = None;
    // Workers whose connection has ended, whether or not they said their last frame.
    let mut ended = vec![false; workers.len()];
    // Set once rank 0's model is stored and the server has finished: the other workers' last
    // frames are still read (for a bounded time), so that what the host logs and relays does
    // not depend on when the job's task happens to end.
    let mut draining: Option<tokio::time::Instant> = None;
    let mut commands_open = true;
    loop {
        if model_stored && served {
            if draining.is_none() {
                // The job's end, as anyone sees it, is rank 0's: what follows is cleanup,
                // whose length follows the other workers' timing and must not show in it.
                job.finish(Ok(())).await;
                // The server has closed its connections: the relay closes the workers' ends
                // too (a worker waiting on the exchange then ends) and finishes its accounts.
                if let Some(stop) = stop_relay.take() {
                    let _ = stop.send(());
                }
                // The server has served: stopping it ends any worker still waiting on it.
                if let Some(instance) = server.instance.as_mut() {
                    instance.kill().await;
                }
                let _ = tokio::time::timeout(RELAY_DRAIN, &mut relay.0).await;
            }
            let deadline =
                *draining.get_or_insert_with(|| tokio::time::Instant::now() + WORKER_DRAIN);
            let all_ended = finished.iter().zip(&ended).all(|(f, e)| *f || *e);
            if all_ended || tokio::time::Instant::now() >= deadline {
                return Ok(());
            }
        }
        if let (true, Some(label)) = (finished[0], &failed) {
            return Err(label.clone());
        }
        let grace = async {
            match closing {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        let drained = async {
            match draining {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        let failure = tokio::select! {
            Some(sent) = senders.join_next(), if !senders.is_empty() => match sent {
                Ok((_, Ok(writer))) => {
                    _writers.push(writer);
                    None
                }
                Ok((_, Err(SendFailure::Store))) => Some((None, labels::HOST_READ.to_owned())),
                Ok((_, Err(SendFailure::Enclave))) | Err(_) => {
                    closing.get_or_insert(tokio::time::Instant::now() + CLOSING_GRACE);
                    None
                }
            },
            Some((from, frame)) = merged.recv() => {
                if let (From::Worker(rank), false) = (from, matches!(frame, Some(Ok(_)))) {
                    ended[rank] = true;
                }
                match (from, frame) {
                // The job is done: what the others still say changes nothing.
                (_, _) if draining.is_some() => None,
                (From::Server, Some(Ok(EnclaveFrame::Served))) => {
                    served = true;
                    None
                }
                (From::Server, Some(Ok(EnclaveFrame::Checkpoint { round, paced, sealed }))) => {
                    let path = store::checkpoint_path(&job.id);
                    match job.store.put(&path, Bytes::from(sealed)).await {
                        Ok(()) => {
                            let at = format!("{} {round}", if paced { "tick" } else { "round" });
                            info!("job {}: checkpoint after {at} stored", job.id);
                            checkpoint = Some(at);
                            None
                        }
                        Err(e) => {
                            warn!("job {}: storing a checkpoint failed: {e}", job.id);
                            Some((None, labels::HOST_WRITE.to_owned()))
                        }
                    }
                }
                // The server is lost: a replacement takes over from the latest checkpoint.
                (From::Server, Some(Err(FrameError::Io(_))) | None)
                    if !served
                        && failed.is_none()
                        && replacements < MAX_REPLACEMENTS
                        && checkpoint.is_some() =>
                {
                    replacements += 1;
                    match replace_server(job, launcher).await {
                        Ok((member, writer, port)) => {
                            info!(
                                "job {}: parameter server lost; a replacement resumed from the \
                                 checkpoint after {}",
                                job.id,
                                checkpoint.as_deref().unwrap_or_default()
                            );
                            let ip = member.ip;
                            let frames = server.replace_with(member).await;
                            forwarders.push(forward(From::Server, frames));
                            _writers.push(writer);
                            let _ = retarget.send(SocketAddr::new(ip, port));
                            None
                        }
                        Err(label) => Some((Some(From::Server), label)),
                    }
                }
                (From::Worker(rank), Some(Ok(EnclaveFrame::WorkerTicket { sealed })))
                    if sealed.len() <= MAX_TICKET_LEN =>
                {
                    tickets[rank] = Some(sealed);
                    None
                }
                (From::Worker(rank), Some(Ok(EnclaveFrame::Released))) if rank != 0 => {
                    finished[rank] = true;
                    None
                }
                // A lost worker that left its ticket: a replacement takes its place.
                (From::Worker(rank), Some(Err(FrameError::Io(_))) | None)
                    if !finished[rank]
                        && !finished[0]
                        && failed.is_none()
                        && !served
                        && worker_replacements < MAX_WORKER_REPLACEMENTS
                        && tickets[rank].is_some() =>
                {
                    worker_replacements += 1;
                    let ticket = tickets[rank].clone().unwrap_or_default();
                    match replace_worker(job, launcher, rank, workers_count, ticket, &address).await {
                        Ok((member, sender)) => {
                            info!(
                                "job {}: worker {rank} lost; a replacement takes its place",
                                job.id
                            );
                            senders.spawn(sender);
                            ended[rank] = false;
                            let frames = workers[rank].replace_with(member).await;
                            forwarders.push(forward(From::Worker(rank), frames));
                            None
                        }
                        Err(label) => Some((Some(from), label)),
                    }
                }
                (From::Worker(rank), Some(Ok(EnclaveFrame::Event { ciphertext, .. }))) => {
                    if ciphertext.len() > MAX_EVENT_LEN {
                        Some((Some(from), labels::PROTOCOL.to_owned()))
                    } else {
                        if rank == 0 {
                            job.push_event(&ciphertext).await;
                        }
                        None
                    }
                }
                (From::Worker(rank), Some(Ok(EnclaveFrame::Trained { sealed_model }))) => {
                    finished[rank] = true;
                    if rank == 0 && failed.is_none() {
                        let path = store::model_path(&job.id);
                        if let Err(e) = job.store.put(&path, Bytes::from(sealed_model)).await {
                            warn!("job {}: storing its model failed: {e}", job.id);
                            return Err(labels::HOST_WRITE.to_owned());
                        }
                        model_stored = true;
                    }
                    None
                }
                (_, Some(Ok(EnclaveFrame::Failed { public }))) => {
                    Some((Some(from), clean_label(&public)))
                }
                (_, Some(Ok(_))) => Some((Some(from), labels::PROTOCOL.to_owned())),
                (_, Some(Err(FrameError::Malformed(_) | FrameError::TooLarge(_)))) => {
                    Some((Some(from), labels::PROTOCOL.to_owned()))
                }
                // A worker that finished may close its connection before the server ends.
                (From::Worker(rank), Some(Err(FrameError::Io(_))) | None) if finished[rank] => None,
                (_, Some(Err(FrameError::Io(_))) | None) => {
                    Some((Some(from), labels::ENCLAVE_EXITED.to_owned()))
                }
                }
            },
            command = commands.recv(), if commands_open => {
                match command {
                    Some(Command::Evidence { reply, .. }) => {
                        let _ = reply
                            .send(Err(job.wrong_state(JobState::Running, JobState::Created)));
                    }
                    // Refused before it is sent: the state is no longer Created.
                    Some(Command::Start { .. }) => {}
                    None => commands_open = false,
                }
                None
            },
            () = grace => {
                return Err(failed.unwrap_or_else(|| labels::ENCLAVE_EXITED.to_owned()));
            }
            // The top of the loop ends the job.
            () = drained => None,
        };
        if let Some((from, label)) = failure
            && draining.is_none()
        {
            let label = failed.get_or_insert(label).clone();
            // Rank 0 has said all it will: the job ends with the first failure.
            if from.is_none() || from == Some(From::Worker(0)) || finished[0] {
                return Err(label);
            }
            closing.get_or_insert(tokio::time::Instant::now() + CLOSING_GRACE);
        }
    }
}
