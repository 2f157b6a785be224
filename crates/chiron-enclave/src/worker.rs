//! The worker role's link to its parameter server: the `ParameterExchange` the sandbox's
//! optimizer steps go through on a worker of a distributed job (`crate::ps` is the other end).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use chiron_attest::Policy;
use chiron_attest::attester::Platform;
use chiron_channel::{LocalIdentity, PeerExpectation, RecordConfig, RecordReader, RecordWriter};
use chiron_proto::evidence::Role;
use chiron_proto::owner::WorkerPlace;
use chiron_sandbox::exchange::{ExchangeError, ParameterExchange, Update};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use crate::exchange::{Rule, RuleExt, ToServer, ToWorker, pad, unpad};

type Stream = chiron_channel::AttestedStream<TcpStream>;

/// An attested connection to the job's parameter server. Shared: the sandbox steps through
/// one handle, and the training role says through another how the program ended.
#[derive(Clone)]
pub struct ServerLink(Arc<Mutex<Connection>>);

struct Connection {
    runtime: tokio::runtime::Runtime,
    reader: RecordReader<ReadHalf<Stream>>,
    writer: RecordWriter<WriteHalf<Stream>>,
    size: usize,
    deadline: Instant,
    /// The server ended the job, or the connection broke: nothing more is sent.
    closed: bool,
}

impl ServerLink {
    /// Connects to the parameter server at `address` as worker `place.rank` of `job_id`,
    /// requires it to pass the owner's policy as this job's parameter server, and says
    /// hello. Gives up at `deadline`.
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
        let hello = pad(&ToServer::Hello { rank: place.rank }, size)?;
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
        Ok(Self(Arc::new(Mutex::new(Connection {
            runtime,
            reader,
            writer,
            size,
            deadline,
            closed: false,
        }))))
    }

    fn connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells the server the program ended: `Done` after it saved its model, `Abandon` when
    /// it failed (which ends the job on every worker).
    pub fn finish(&self, succeeded: bool) {
        let mut connection = self.connection();
        let message = if succeeded {
            ToServer::Done
        } else {
            ToServer::Abandon
        };
        let _ = connection.send(&message);
        connection.closed = true;
    }
}

impl Connection {
    fn send(&mut self, message: &ToServer) -> Result<(), ExchangeError> {
        if self.closed {
            return Err(ExchangeError("the parameter server ended the job".into()));
        }
        let bytes = pad(message, self.size).map_err(ExchangeError)?;
        let deadline = self.deadline;
        let writer = &mut self.writer;
        self.runtime
            .block_on(async {
                tokio::time::timeout_at(deadline.into(), writer.send_message(&bytes)).await
            })
            .map_err(|_| ExchangeError("the job's time budget ran out".into()))?
            .map_err(|e| ExchangeError(format!("the parameter server connection broke: {e}")))
    }

    /// One round: `message` out, the server's parameters back.
    fn round(&mut self, message: &ToServer) -> Result<Vec<Vec<f32>>, ExchangeError> {
        let sent = self.send(message);
        let received = sent.and_then(|()| {
            let (deadline, size) = (self.deadline, self.size);
            let reader = &mut self.reader;
            self.runtime
                .block_on(async {
                    tokio::time::timeout_at(deadline.into(), reader.recv_message(size)).await
                })
                .map_err(|_| ExchangeError("the job's time budget ran out".into()))?
                .map_err(|e| ExchangeError(format!("the parameter server connection broke: {e}")))
        });
        let reply = received.and_then(|bytes| unpad::<ToWorker>(&bytes).map_err(ExchangeError));
        match reply {
            Ok(ToWorker::Parameters(values)) => Ok(values),
            Ok(ToWorker::Refused(reason)) => {
                self.closed = true;
                Err(ExchangeError(format!(
                    "the parameter server ended the job: {reason}"
                )))
            }
            Err(e) => {
                self.closed = true;
                Err(e)
            }
        }
    }
}

impl ParameterExchange for ServerLink {
    fn register(
        &mut self,
        optimizer: u32,
        values: Vec<Vec<f32>>,
    ) -> Result<Vec<Vec<f32>>, ExchangeError> {
        self.connection()
            .round(&ToServer::Register { optimizer, values })
    }

    fn step(&mut self, optimizer: u32, update: Update) -> Result<Vec<Vec<f32>>, ExchangeError> {
        let rule = Rule::from_kind(update.kind)
            .ok_or_else(|| ExchangeError("an optimizer rule the exchange cannot carry".into()))?;
        self.connection().round(&ToServer::Step {
            optimizer,
            rule,
            max_grad_norm: update.max_grad_norm,
            gradients: update.gradients,
        })
    }
}
