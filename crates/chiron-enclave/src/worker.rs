//! The worker role's link to its parameter server: the `ParameterExchange` the sandbox's
//! optimizer steps go through on a worker of a distributed job (`crate::ps` is the other end).
//!
//! Unpaced (a live job), a step sends its message and waits for the answer. Paced (a
//! private job), a thread of its own sends exactly one message per tick, the program's
//! request if one is waiting and `Idle` otherwise, and reads exactly one answer, whatever
//! the program does: the platform sees the schedule, never the program.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chiron_attest::Policy;
use chiron_attest::attester::Platform;
use chiron_channel::{LocalIdentity, PeerExpectation, RecordConfig, RecordReader, RecordWriter};
use chiron_proto::evidence::Role;
use chiron_proto::owner::{Pace, WorkerPlace};
use chiron_sandbox::exchange::{ExchangeError, ParameterExchange, Update};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use crate::exchange::{Rule, RuleExt, ToServer, ToWorker, fits, pad, pad_into, unpad};

type Stream = chiron_channel::AttestedStream<TcpStream>;

/// How long past a paced schedule's end a worker waits for a server that stopped answering.
const STALLED_SERVER: Duration = Duration::from_secs(30);

/// An attested connection to the job's parameter server. Shared: the sandbox steps through
/// one handle, and the training role says through another how the program ended.
#[derive(Clone)]
pub struct ServerLink(Arc<Link>, Arc<Mutex<ExchangeStats>>);

/// What a worker's steps spent on the exchange, for the owner.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExchangeStats {
    /// The server let this worker go (a replacement, behind the others, once rank 0 is
    /// done): its program was stopped, not failed.
    pub released: bool,
    /// Rounds (registrations and steps) completed.
    pub rounds: u64,
    /// Steps an asynchronous exchange dropped as too stale.
    pub dropped: u64,
    /// Time the program waited for them, from sending its gradients to holding the
    /// parameters back (under a paced exchange, the wait for the tick included).
    pub waiting: Duration,
}

enum Link {
    /// Each step is one round trip, when the program makes it.
    Eager(Box<Mutex<Connection>>),
    /// The pacing thread carries the program's requests at its ticks.
    Paced(Paced),
}

/// The program's side of a paced link.
struct Paced {
    requests: SyncSender<ToServer>,
    replies: Mutex<Receiver<Result<Vec<Vec<f32>>, String>>>,
    deadline: Instant,
}

struct Connection {
    runtime: tokio::runtime::Runtime,
    reader: RecordReader<ReadHalf<Stream>>,
    writer: RecordWriter<WriteHalf<Stream>>,
    size: usize,
    /// The last message sent and received: each round's megabytes reuse their memory.
    outbox: Vec<u8>,
    inbox: Vec<u8>,
    deadline: Instant,
    /// The server ended the job, or the connection broke for good: nothing more is sent.
    closed: bool,
    /// The last send or receive failed on the connection itself.
    broken: bool,
    /// How to reach a server again: the host replaces a lost server from its checkpoint.
    reconnect: Reconnect,
    /// The registrations the server answered, sent again to a replacement.
    registered: Registrations,
}

/// The optimizers a worker registered (their handles and the values it registered), in
/// order. A replacement server's checkpoint may predate them (a new server's first
/// checkpoint holds none), so a worker that reconnects registers them again before anything
/// else, and keeps the answers from its program: an optimizer the replacement already holds
/// goes on from its checkpoint, one it does not starts again from the values registered,
/// and either way the program's next step gets the replacement's parameters.
#[derive(Default)]
struct Registrations(Vec<(u32, Vec<Vec<f32>>)>);

impl Registrations {
    /// Keeps `message` if it is a registration.
    fn keep(&mut self, message: ToServer) {
        if let ToServer::Register { optimizer, values } = message {
            self.0.retain(|(kept, _)| *kept != optimizer);
            self.0.push((optimizer, values));
        }
    }

    /// The registrations to send again, in the order they were made.
    fn again(&self) -> impl DoubleEndedIterator<Item = ToServer> + '_ {
        self.0.iter().map(|(optimizer, values)| ToServer::Register {
            optimizer: *optimizer,
            values: values.clone(),
        })
    }
}

/// Everything needed to connect to the job's server, and attest it, again.
struct Reconnect {
    address: String,
    identity: LocalIdentity,
    expectation: PeerExpectation,
    rank: u32,
}

/// The exchange's error when the server lets a worker go (`ToWorker::Released`).
const RELEASED: &str = "the parameter server let this worker go: the job's rank 0 is done";

/// How long a worker waits between attempts to reach a replaced server.
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

impl ServerLink {
    /// Connects to the parameter server at `address` as worker `place.rank` of `job_id`,
    /// requires it to pass the owner's policy as this job's parameter server, and says
    /// hello; a paced exchange's ticks start then. Gives up at `deadline`.
    pub fn connect(
        platform: Arc<dyn Platform>,
        job_id: &str,
        place: &WorkerPlace,
        address: &str,
        deadline: Instant,
    ) -> Result<Self, String> {
        let policy = Policy::parse_spec(&place.peer_policy)
            .map_err(|e| format!("the owner's peer policy does not parse: {e}"))?;
        let context = chiron_attest::context_digest(job_id);
        let identity = LocalIdentity::new(platform, Role::Worker, context);
        let expectation = PeerExpectation::new(policy, Role::ParameterServer, context);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the exchange: {e}"))?;
        let size = place.exchange.message_bytes();
        let hello = pad(
            &ToServer::Hello {
                rank: place.rank,
                tick: 0,
            },
            size,
        )?;
        let (reader, writer) = runtime.block_on(async {
            let stream = tokio::time::timeout_at(
                deadline.into(),
                chiron_channel::connect(address, &identity, &expectation),
            )
            .await
            .map_err(|_| "the parameter server did not answer in time".to_owned())?
            .map_err(|e| format!("the parameter server was refused: {e}"))?;
            let (reader, mut writer) = stream.into_records(RecordConfig::default());
            writer
                .send_message(&hello)
                .await
                .map_err(|e| format!("the parameter server connection broke: {e}"))?;
            Ok::<_, String>((reader, writer))
        })?;
        let connection = Connection {
            runtime,
            reader,
            writer,
            size,
            outbox: Vec::new(),
            inbox: Vec::new(),
            deadline,
            closed: false,
            broken: false,
            reconnect: Reconnect {
                address: address.to_owned(),
                identity,
                expectation,
                rank: place.rank,
            },
            registered: Registrations::default(),
        };
        let link = match place.exchange.pace {
            None => Link::Eager(Box::new(Mutex::new(connection))),
            Some(pace) => {
                // The schedule runs to its end whenever the program stops: its own clock
                // decides when a stalled server is given up on, not the program's deadline.
                let mut connection = connection;
                connection.deadline = Instant::now() + pace.duration() + STALLED_SERVER;
                let (requests, pending) = std::sync::mpsc::sync_channel(1);
                let (answer, replies) = std::sync::mpsc::sync_channel(1);
                std::thread::Builder::new()
                    .name("chiron-exchange".into())
                    .spawn(move || keep_pace(connection, pace, &pending, &answer))
                    .map_err(|e| format!("cannot start the exchange: {e}"))?;
                Link::Paced(Paced {
                    requests,
                    replies: Mutex::new(replies),
                    deadline,
                })
            }
        };
        Ok(Self(Arc::new(link), Arc::default()))
    }

    /// What the steps so far spent on the exchange.
    pub fn stats(&self) -> ExchangeStats {
        *self.1.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the server let this worker go.
    pub fn released(&self) -> bool {
        self.stats().released
    }

    /// Tells the server the program ended: `Done` after it saved its model, `Abandon` when
    /// it failed (which ends the job on every worker).
    pub fn finish(&self, succeeded: bool) {
        let message = if succeeded {
            ToServer::Done
        } else {
            ToServer::Abandon
        };
        match &*self.0 {
            Link::Eager(connection) => {
                let mut connection = connection.lock().unwrap_or_else(PoisonError::into_inner);
                let _ = connection.send(&message);
                connection.closed = true;
            }
            // Carried at the next tick; the schedule goes on with `Idle`.
            Link::Paced(paced) => {
                let _ = paced.requests.try_send(message);
            }
        }
    }

    /// One round: `message` out, the server's parameters back, its time counted.
    fn round(&self, message: ToServer) -> Result<Vec<Vec<f32>>, ExchangeError> {
        let started = Instant::now();
        let (values, applied) = self.carry(message).inspect_err(|e| {
            if e.0 == RELEASED {
                self.1
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .released = true;
            }
        })?;
        let mut stats = self.1.lock().unwrap_or_else(PoisonError::into_inner);
        stats.rounds += 1;
        stats.dropped += u64::from(!applied);
        stats.waiting += started.elapsed();
        Ok(values)
    }

    /// Carries `message`; the parameters back, and whether the server applied the step.
    fn carry(&self, message: ToServer) -> Result<(Vec<Vec<f32>>, bool), ExchangeError> {
        match &*self.0 {
            Link::Eager(connection) => connection
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .round(message),
            Link::Paced(paced) => {
                let ended = || ExchangeError("the exchange's schedule has ended".into());
                paced.requests.send(message).map_err(|_| ended())?;
                let replies = paced.replies.lock().unwrap_or_else(PoisonError::into_inner);
                match replies.recv_timeout(paced.deadline.saturating_duration_since(Instant::now()))
                {
                    Ok(reply) => reply.map(|values| (values, true)).map_err(ExchangeError),
                    Err(RecvTimeoutError::Timeout) => {
                        Err(ExchangeError("the job's time budget ran out".into()))
                    }
                    Err(RecvTimeoutError::Disconnected) => Err(ended()),
                }
            }
        }
    }
}

/// The pacing thread: one message out and one answer in per tick, `pace.ticks` times.
///
/// A lost server is replaced by the host from its last checkpoint: the thread reconnects
/// (the ticks that pass meanwhile are skipped, so the schedule keeps to its clock), says at
/// which tick it goes on, and sends again what the lost server may not hold, since its
/// checkpoint may predate it: the registrations (see [`Registrations`]), then the program's
/// unanswered request, or that it was done.
fn keep_pace(
    mut connection: Connection,
    pace: Pace,
    pending: &Receiver<ToServer>,
    answer: &SyncSender<Result<Vec<Vec<f32>>, String>>,
) {
    let start = Instant::now();
    let tick = Duration::from_millis(u64::from(pace.tick_ms));
    // The request the server has not answered yet, kept to send again to a replacement.
    let mut unanswered: Option<ToServer> = None;
    // A registration sent again awaits its answer, which is not the program's.
    let mut registering_again = false;
    // The program's last word, sent again to a replacement: `Done` (true) or `Abandon`.
    let mut farewell: Option<bool> = None;
    // What a replacement is sent first, taken from the end; `true` marks a registration
    // sent again.
    let mut again: Vec<(ToServer, bool)> = Vec::new();
    let mut ended: Option<String> = None;
    let mut k = 0;
    while k < pace.ticks {
        std::thread::sleep((start + tick * k).saturating_duration_since(Instant::now()));
        let next = match registering_again {
            // One request at a time: the program's waits for the registrations before it.
            true => Some((ToServer::Idle, false)),
            false => again.pop(),
        };
        let (message, repeated) = match next {
            Some(entry) => entry,
            None => match (&ended, pending.try_recv()) {
                // A request too large for the job's messages is the program's error; the
                // tick still carries `Idle`, so the schedule keeps its shape whatever the
                // program asked for.
                (None, Ok(request)) => match fits(&request, connection.size) {
                    Ok(()) => (request, false),
                    Err(reason) => {
                        let _ = answer.send(Err(reason));
                        (ToServer::Idle, false)
                    }
                },
                (Some(reason), Ok(ToServer::Register { .. } | ToServer::Step { .. })) => {
                    let _ = answer.send(Err(reason.clone()));
                    (ToServer::Idle, false)
                }
                (_, Ok(_) | Err(TryRecvError::Empty | TryRecvError::Disconnected)) => {
                    (ToServer::Idle, false)
                }
            },
        };
        let reply = connection.send(&message).and_then(|()| connection.recv());
        match message {
            ToServer::Register { .. } if repeated => registering_again = true,
            ToServer::Register { .. } | ToServer::Step { .. } => unanswered = Some(message),
            ToServer::Done => farewell = Some(true),
            ToServer::Abandon => farewell = Some(false),
            ToServer::Hello { .. } | ToServer::Idle => {}
        }
        k += 1;
        match reply {
            Ok(ToWorker::Wait) => {}
            Ok(ToWorker::Parameters(_)) if registering_again => registering_again = false,
            Ok(ToWorker::Parameters(values)) if unanswered.is_some() => {
                if let Some(request) = unanswered.take() {
                    connection.registered.keep(request);
                }
                let _ = answer.send(Ok(values));
            }
            Ok(ToWorker::Parameters(_) | ToWorker::Stale(_)) => {
                ended.get_or_insert("the parameter server answered out of turn".into());
            }
            // A paced exchange keeps every worker to its schedule's end. The program's
            // request, sent or still waiting behind registrations sent again, gets the
            // reason; nothing more is sent again.
            Ok(over @ (ToWorker::Released | ToWorker::Refused(_))) => {
                let reason = match over {
                    ToWorker::Refused(reason) => {
                        format!("the parameter server ended the job: {reason}")
                    }
                    _ => RELEASED.to_owned(),
                };
                registering_again = false;
                if unanswered.take().or_else(|| waiting(&mut again)).is_some() {
                    let _ = answer.send(Err(reason.clone()));
                }
                again.clear();
                ended.get_or_insert(reason);
            }
            Err(e) => {
                // The server is gone: its replacement takes the schedule on at the tick the
                // clock has reached.
                let now = || {
                    let elapsed = start.elapsed().as_nanos();
                    let next = elapsed.div_ceil(tick.as_nanos().max(1));
                    let next = u32::try_from(next).unwrap_or(u32::MAX).max(k);
                    (next < pace.ticks).then_some(next)
                };
                let resumed = if connection.broken {
                    connection.reconnect(now)
                } else {
                    None
                };
                // The program's request may still wait behind registrations sent again, if
                // the connection broke again before they were through.
                let request = unanswered.take().or_else(|| waiting(&mut again));
                let Some(next) = resumed else {
                    // Nothing more can keep the schedule.
                    if request.is_some() {
                        let _ = answer.send(Err(e.0));
                    }
                    return;
                };
                k = next;
                // The registrations first (a worker that was done steps no more), then the
                // program's request, then the farewell.
                again.clear();
                registering_again = false;
                again.extend(farewell.map(|done| {
                    let farewell = if done {
                        ToServer::Done
                    } else {
                        ToServer::Abandon
                    };
                    (farewell, false)
                }));
                again.extend(request.map(|request| (request, false)));
                if farewell.is_none() && ended.is_none() {
                    again.extend(connection.registered.again().rev().map(|r| (r, true)));
                }
            }
        }
    }
    if unanswered.or_else(|| waiting(&mut again)).is_some() {
        let _ = answer.send(Err(
            "the exchange's schedule ran out before the program finished".into(),
        ));
    }
}

/// Takes the program's request out of what a paced worker is to send again, if it waits
/// there.
fn waiting(again: &mut Vec<(ToServer, bool)>) -> Option<ToServer> {
    let at = again.iter().position(|(message, repeated)| {
        !repeated && matches!(message, ToServer::Register { .. } | ToServer::Step { .. })
    })?;
    Some(again.remove(at).0)
}

impl Connection {
    fn send(&mut self, message: &ToServer) -> Result<(), ExchangeError> {
        if self.closed {
            return Err(ExchangeError("the parameter server ended the job".into()));
        }
        pad_into(message, self.size, &mut self.outbox).map_err(ExchangeError)?;
        let deadline = self.deadline;
        let (writer, bytes) = (&mut self.writer, &self.outbox);
        self.runtime
            .block_on(async {
                tokio::time::timeout_at(deadline.into(), writer.send_message(bytes)).await
            })
            .map_err(|_| ExchangeError("the job's time budget ran out".into()))?
            .map_err(|e| {
                self.broken = true;
                ExchangeError(format!("the parameter server connection broke: {e}"))
            })
    }

    fn recv(&mut self) -> Result<ToWorker, ExchangeError> {
        let (deadline, size) = (self.deadline, self.size);
        let (reader, inbox) = (&mut self.reader, &mut self.inbox);
        self.runtime
            .block_on(async {
                tokio::time::timeout_at(deadline.into(), reader.recv_message_into(size, inbox))
                    .await
            })
            .map_err(|_| ExchangeError("the job's time budget ran out".into()))?
            .map_err(|e| {
                self.broken = true;
                ExchangeError(format!("the parameter server connection broke: {e}"))
            })?;
        unpad::<ToWorker>(&self.inbox).map_err(ExchangeError)
    }

    /// Reaches the job's server again, attests it as the first time, and says hello with
    /// the tick `tick()` gives at that moment (it gives `None` once there is no tick left to
    /// go on at): retried until then or the deadline. The tick said, if it worked.
    fn reconnect(&mut self, tick: impl Fn() -> Option<u32>) -> Option<u32> {
        let again = &self.reconnect;
        let size = self.size;
        let deadline = self.deadline;
        let reached = self.runtime.block_on(async {
            while Instant::now() < deadline {
                tokio::time::sleep(RECONNECT_PAUSE).await;
                tick()?;
                let attempt = tokio::time::timeout_at(
                    deadline.into(),
                    chiron_channel::connect(&again.address, &again.identity, &again.expectation),
                )
                .await;
                let Ok(Ok(stream)) = attempt else { continue };
                let (reader, mut writer) = stream.into_records(RecordConfig::default());
                let at = tick()?;
                let hello = pad(
                    &ToServer::Hello {
                        rank: again.rank,
                        tick: at,
                    },
                    size,
                )
                .ok()?;
                if writer.send_message(&hello).await.is_ok() {
                    return Some((reader, writer, at));
                }
            }
            None
        });
        let (reader, writer, at) = reached?;
        self.reader = reader;
        self.writer = writer;
        self.broken = false;
        Some(at)
    }

    /// One unpaced round: `message` out, the server's parameters back. A server lost on
    /// the way is replaced by the host from its last checkpoint: the worker reconnects to the
    /// replacement and asks again.
    fn round(&mut self, message: ToServer) -> Result<(Vec<Vec<f32>>, bool), ExchangeError> {
        let mut reply = self.send(&message).and_then(|()| self.recv());
        while reply.is_err() && self.broken && self.reconnect(|| Some(0)).is_some() {
            reply = match self.register_again() {
                Ok(None) => self.send(&message).and_then(|()| self.recv()),
                Ok(Some(ended)) => Ok(ended),
                Err(e) => Err(e),
            };
        }
        match reply {
            Ok(ToWorker::Parameters(values)) => {
                self.registered.keep(message);
                Ok((values, true))
            }
            Ok(ToWorker::Stale(values)) => Ok((values, false)),
            Ok(ToWorker::Refused(reason)) => {
                self.closed = true;
                Err(ExchangeError(format!(
                    "the parameter server ended the job: {reason}"
                )))
            }
            Ok(ToWorker::Wait) => {
                self.closed = true;
                Err(ExchangeError(
                    "the parameter server paced an unpaced exchange".into(),
                ))
            }
            Ok(ToWorker::Released) => {
                self.closed = true;
                Err(ExchangeError(RELEASED.into()))
            }
            Err(e) => {
                self.closed = true;
                Err(e)
            }
        }
    }

    /// Sends a replacement server the registrations this worker made (see
    /// [`Registrations`]) and reads their answers, which are not the program's. `Some`
    /// answer other than parameters ends the round with it.
    fn register_again(&mut self) -> Result<Option<ToWorker>, ExchangeError> {
        let registrations: Vec<ToServer> = self.registered.again().collect();
        for registration in &registrations {
            self.send(registration)?;
            match self.recv()? {
                ToWorker::Parameters(_) | ToWorker::Stale(_) => {}
                ended => return Ok(Some(ended)),
            }
        }
        Ok(None)
    }
}

impl ParameterExchange for ServerLink {
    fn register(
        &mut self,
        optimizer: u32,
        values: Vec<Vec<f32>>,
    ) -> Result<Vec<Vec<f32>>, ExchangeError> {
        self.round(ToServer::Register { optimizer, values })
    }

    fn step(&mut self, optimizer: u32, update: Update) -> Result<Vec<Vec<f32>>, ExchangeError> {
        let rule = Rule::from_kind(update.kind)
            .ok_or_else(|| ExchangeError("an optimizer rule the exchange cannot carry".into()))?;
        self.round(ToServer::Step {
            optimizer,
            rule,
            max_grad_norm: update.max_grad_norm,
            gradients: update.gradients,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(optimizer: u32) -> ToServer {
        ToServer::Register {
            optimizer,
            values: vec![vec![1.0, 2.0]],
        }
    }

    #[test]
    fn registrations_are_sent_again_in_order_and_the_latest_of_a_handle_is_kept() {
        let mut registered = Registrations::default();
        registered.keep(register(7));
        registered.keep(ToServer::Idle);
        registered.keep(register(3));
        registered.keep(ToServer::Register {
            optimizer: 7,
            values: vec![vec![5.0]],
        });
        let again: Vec<(u32, Vec<Vec<f32>>)> = registered
            .again()
            .map(|message| match message {
                ToServer::Register { optimizer, values } => (optimizer, values),
                other => panic!("not a registration: {other:?}"),
            })
            .collect();
        assert_eq!(again, [(3, vec![vec![1.0, 2.0]]), (7, vec![vec![5.0]])]);
    }

    #[test]
    fn the_programs_request_is_found_behind_registrations_sent_again_and_nothing_else_is() {
        let step = ToServer::Step {
            optimizer: 3,
            rule: Rule {
                tag: 0,
                values: [0.1, 0.0, 0.0, 0.0, 0.0],
            },
            max_grad_norm: None,
            gradients: vec![None],
        };
        // As a reconnection lays them out, taken from the end: the farewell, the program's
        // request, then the registrations sent again.
        let mut again = vec![(ToServer::Done, false), (step, false), (register(3), true)];
        assert!(matches!(
            waiting(&mut again),
            Some(ToServer::Step { optimizer: 3, .. })
        ));
        assert!(matches!(
            again.as_slice(),
            [(ToServer::Done, false), (ToServer::Register { .. }, true)]
        ));
        // A registration sent again, or a farewell, is never the program's request.
        assert!(waiting(&mut again).is_none());
        assert_eq!(again.len(), 2);
    }
}
