//! Frames between the untrusted host and an enclave process, over one TCP connection.
//!
//! Each frame is a little-endian `u32` length followed by that many bytes of postcard.
//! Everything secret inside a frame is already encrypted end to end (to the enclave's
//! attested key, to the owner's response key, or sealed), so the host relays but cannot read
//! or undetectably alter it. The frames themselves are not trusted by either side.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use thiserror::Error;

/// Largest frame accepted (dataset ciphertext travels in parts below this).
pub const MAX_FRAME: usize = 64 << 20;
/// Size of one dataset part sent by the host.
pub const DATASET_PART: usize = 8 << 20;
/// Size of every owner event after padding: events are all the same size on the wire, so
/// their length says nothing about their content.
pub const EVENT_PLAINTEXT_LEN: usize = 256;
/// The line an enclave prints on standard output once it listens: `PREFIX <port>`.
pub const LISTENING_PREFIX: &str = "CHIRON-ENCLAVE-LISTENING";

/// Host → enclave.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum HostFrame {
    /// Asks for attestation evidence over the owner's `nonce`, for the job or model whose id
    /// hashes to `context`.
    GetEvidence {
        /// The verifier's fresh nonce.
        nonce: [u8; 32],
        /// SHA-256 of the job or model id.
        context: [u8; 32],
    },
    /// Training role: the owner's request, HPKE-sealed to the enclave's key.
    StartTraining {
        /// Job id the enclave serves (bound into every sealed output).
        job_id: String,
        /// The owner's sealed `TrainRequest`.
        sealed_request: Vec<u8>,
        /// The provider program (wasm); its digest is checked against the owner's request.
        program: Vec<u8>,
        /// Total length of the dataset ciphertext about to follow.
        dataset_len: u64,
        /// A worker of a distributed job: where its parameter server listens (from the
        /// host, so unauthenticated; the worker attests the server it reaches).
        parameter_server: Option<String>,
    },
    /// Parameter-server role: the owner's request, HPKE-sealed to the enclave's key. The
    /// enclave answers [`EnclaveFrame::PeersAt`], then serves the job's workers until they
    /// are done ([`EnclaveFrame::Served`]).
    StartParameterServer {
        /// Job id the server serves.
        job_id: String,
        /// The owner's sealed `ParameterServerRequest`.
        sealed_request: Vec<u8>,
    },
    /// Parameter-server role: take over a job whose server was lost, from its latest
    /// checkpoint ([`EnclaveFrame::Checkpoint`]). Answered as `StartParameterServer` is; the
    /// workers reconnect and attest to the new server.
    ResumeParameterServer {
        /// Job id the server serves.
        job_id: String,
        /// The sealed checkpoint.
        checkpoint: Vec<u8>,
    },
    /// Training role: the next part of the dataset ciphertext.
    DatasetPart(Vec<u8>),
    /// Query role: the model to serve, sealed by a training enclave, and its program. An
    /// enclave loads one model, once.
    LoadModel {
        /// Job id that produced the model (the sealing context).
        job_id: String,
        /// The sealed model blob.
        sealed_model: Vec<u8>,
        /// The provider program (wasm).
        program: Vec<u8>,
        /// The latest sealed query counter the host stored for the model
        /// ([`EnclaveFrame::StoreCounter`]); `None` before the model's first query.
        counter: Option<Vec<u8>>,
    },
    /// Query role: one query, HPKE-sealed by the owner to the enclave's key.
    Query {
        /// The owner's sealed `QueryRequest`.
        sealed: Vec<u8>,
    },
    /// Query role: the counter of [`EnclaveFrame::StoreCounter`] is stored; the enclave may
    /// now answer the query that spends it.
    CounterStored {
        /// The version stored.
        version: u64,
    },
    /// Worker role: replace a lost worker of a live distributed job. Followed by the
    /// dataset as [`HostFrame::StartTraining`] is; the request comes from the lost worker's
    /// ticket ([`EnclaveFrame::WorkerTicket`]) instead of the owner.
    ResumeWorker {
        /// Job id the worker serves.
        job_id: String,
        /// The lost worker's sealed ticket.
        ticket: Vec<u8>,
        /// The provider program (wasm); its digest is checked against the request.
        program: Vec<u8>,
        /// Total length of the dataset ciphertext about to follow.
        dataset_len: u64,
        /// Where its parameter server listens (unauthenticated, as in `StartTraining`).
        parameter_server: String,
        /// How many events the job's stream holds: a replacement of rank 0 numbers its
        /// events on from there. Unauthenticated: a count too high makes the owner's client
        /// refuse the events that follow (each is sealed at its position); one too low
        /// drops the lost rank 0's last events, as killing it earlier would have.
        events_from: u64,
    },
}

/// Enclave → host.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum EnclaveFrame {
    /// Signed evidence (postcard-encoded `Evidence`).
    Evidence(Vec<u8>),
    /// An event for the owner, encrypted under the owner's response key at counter `seq`.
    Event {
        /// Position in the job's event stream (also the AEAD counter).
        seq: u64,
        /// Ciphertext of a padded `OwnerEvent`.
        ciphertext: Vec<u8>,
    },
    /// Training finished; the sealed model for the object store.
    Trained {
        /// The sealed model blob.
        sealed_model: Vec<u8>,
    },
    /// Query role: the model is loaded and the enclave accepts queries.
    Ready,
    /// Parameter-server role: the port its workers connect to.
    PeersAt {
        /// TCP port on the enclave's address.
        port: u16,
    },
    /// Parameter-server role: every worker is done; the server has ended.
    Served,
    /// Parameter-server role: the job's state after `round` rounds, sealed to this runtime
    /// on this platform, for the host to keep (replacing the previous one) and hand to a
    /// server that takes over ([`HostFrame::ResumeParameterServer`]).
    Checkpoint {
        /// Rounds the state includes; for a paced exchange, the ticks of its schedule done
        /// instead (its rounds follow the program, so they are not told).
        round: u64,
        /// `round` counts a paced exchange's ticks.
        paced: bool,
        /// The sealed state.
        sealed: Vec<u8>,
    },
    /// Query role, in the middle of a query: the model's query counter, sealed, to be stored
    /// next to the model before the enclave answers (write-ahead). The host answers with
    /// [`HostFrame::CounterStored`], then receives the query's answer.
    StoreCounter {
        /// The counter's version, one more than the last (also inside the seal).
        version: u64,
        /// The sealed counter state, always the same size.
        sealed: Vec<u8>,
    },
    /// A query's answer, encrypted under that query's response key.
    Answer(Vec<u8>),
    /// The request failed. `public` is a fixed label safe for the host to log; details, if
    /// any, went to the owner as an encrypted event.
    Failed {
        /// A data-independent label, e.g. "program failed".
        public: String,
    },
    /// Worker role, once its request opened (live distributed jobs): the request sealed to
    /// this runtime on this platform, for the host to keep and hand to a replacement should
    /// this worker be lost ([`HostFrame::ResumeWorker`]).
    WorkerTicket {
        /// The sealed request.
        sealed: Vec<u8>,
    },
    /// Worker role: let go before its program ended, since the job's rank 0 is done (a
    /// replacement worker, behind the others). Not a failure.
    Released,
}

/// What every frame type tells about itself without revealing its contents: its direction
/// and the name of its variant, for logs and error messages.
pub trait Frame: Serialize + DeserializeOwned {
    /// `"host->enclave"` or `"enclave->host"`.
    const DIRECTION: &'static str;
    /// The variant's name.
    fn kind(&self) -> &'static str;
}

impl Frame for HostFrame {
    const DIRECTION: &'static str = "host->enclave";
    fn kind(&self) -> &'static str {
        match self {
            Self::GetEvidence { .. } => "GetEvidence",
            Self::StartTraining { .. } => "StartTraining",
            Self::StartParameterServer { .. } => "StartParameterServer",
            Self::ResumeParameterServer { .. } => "ResumeParameterServer",
            Self::ResumeWorker { .. } => "ResumeWorker",
            Self::DatasetPart(_) => "DatasetPart",
            Self::LoadModel { .. } => "LoadModel",
            Self::Query { .. } => "Query",
            Self::CounterStored { .. } => "CounterStored",
        }
    }
}

impl Frame for EnclaveFrame {
    const DIRECTION: &'static str = "enclave->host";
    fn kind(&self) -> &'static str {
        match self {
            Self::Evidence(_) => "Evidence",
            Self::Event { .. } => "Event",
            Self::Trained { .. } => "Trained",
            Self::PeersAt { .. } => "PeersAt",
            Self::Served => "Served",
            Self::Checkpoint { .. } => "Checkpoint",
            Self::WorkerTicket { .. } => "WorkerTicket",
            Self::Released => "Released",
            Self::Ready => "Ready",
            Self::StoreCounter { .. } => "StoreCounter",
            Self::Answer(_) => "Answer",
            Self::Failed { .. } => "Failed",
        }
    }
}

/// A frame that could not be read or written.
#[derive(Debug, Error)]
pub enum FrameError {
    /// The connection failed or closed.
    #[error("connection to the enclave failed: {0}")]
    Io(#[from] std::io::Error),
    /// A length above [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// Bytes that do not decode.
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
}

/// Writes one frame.
pub fn write_frame<T: Serialize>(w: &mut impl Write, frame: &T) -> Result<(), FrameError> {
    let bytes = postcard::to_allocvec(frame)?;
    if bytes.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(bytes.len()));
    }
    w.write_all(&(bytes.len() as u32).to_le_bytes())?;
    w.write_all(&bytes)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame.
pub fn read_frame<T: DeserializeOwned>(r: &mut impl Read) -> Result<T, FrameError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(postcard::from_bytes(&buf)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_reject_garbage() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &EnclaveFrame::Answer(vec![1, 2, 3])).expect("write");
        let back: EnclaveFrame = read_frame(&mut buf.as_slice()).expect("read");
        assert!(matches!(back, EnclaveFrame::Answer(v) if v == [1, 2, 3]));

        let huge = (u32::MAX).to_le_bytes();
        assert!(matches!(
            read_frame::<EnclaveFrame>(&mut huge.as_slice()),
            Err(FrameError::TooLarge(_))
        ));
        let junk = [3u8, 0, 0, 0, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame::<EnclaveFrame>(&mut junk.as_slice()),
            Err(FrameError::Malformed(_))
        ));
    }
}
