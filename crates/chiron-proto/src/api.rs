//! The host's public HTTP API (JSON bodies unless noted). Everything here is visible to the
//! platform, so none of it is secret: ids, public dataset headers, job states, ciphertext.
//!
//! Every request carries a principal's token, `Authorization: Bearer chiron_...` (401
//! without a valid one). The role column says who may call; an owner sees only the
//! datasets, jobs and models it created, and any other id answers 404 as one that does not
//! exist.
//!
//! | method and path | role | body | answer |
//! |---|---|---|---|
//! | `POST /v1/programs` | provider | wasm bytes | [`ProgramCreated`] |
//! | `GET /v1/programs/{id}` | any | – | [`ProgramInfo`] |
//! | `POST /v1/datasets` | owner | dataset container bytes | [`DatasetCreated`] |
//! | `POST /v1/uploads` | owner | [`CreateUpload`] | [`UploadStatus`] |
//! | `PUT /v1/uploads/{id}?offset=N` | owner | the container's bytes from `N` | [`UploadStatus`] |
//! | `GET /v1/uploads/{id}` | owner | – | [`UploadStatus`] |
//! | `DELETE /v1/uploads/{id}` | owner | – | 204 |
//! | `POST /v1/jobs` | owner | [`CreateJob`] | [`JobCreated`] |
//! | `GET /v1/jobs/{id}/evidence?nonce=HEX` | owner | – | evidence bytes |
//! | `POST /v1/jobs/{id}/start` | owner | sealed train request bytes | [`JobStatus`] |
//! | `GET /v1/jobs/{id}` | owner | – | [`JobStatus`] |
//! | `GET /v1/jobs/{id}/events?from=N` | owner | – | [`Events`] |
//! | `GET /v1/models/{job_id}/evidence?nonce=HEX` | owner | – | evidence bytes (query enclave) |
//! | `POST /v1/models/{job_id}/query` | owner | sealed query bytes | encrypted answer bytes |
//!
//! Errors come back as a non-2xx status with an [`ApiError`] body: 401 (no valid token),
//! 403 (a role the principal lacks), 404, 409 (wrong state; for a query, no query enclave is
//! running: attest again), 413 and 429 (a limit, named in the message).

use serde::{Deserialize, Serialize};

use crate::dataset::DatasetHeader;
use crate::manifest::ProgramPolicy;

/// A registered provider program and the extraction policy its manifest declares (read by
/// the host at registration; the enclaves read it again from the program they run).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramInfo {
    /// Hex SHA-256 of the wasm: the id owners pin in their training request.
    pub program_id: String,
    /// The program's policy: its manifest, or the default when it declares none.
    pub policy: ProgramPolicy,
}

/// The answer to a program registration.
pub type ProgramCreated = ProgramInfo;

/// An uploaded dataset.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatasetCreated {
    /// The dataset's id.
    pub dataset_id: String,
    /// Its public header, as read from the container.
    pub header: DatasetHeader,
}

/// Request to open a resumable dataset upload (`POST /v1/uploads`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUpload {
    /// The whole container's length in bytes.
    pub length: u64,
}

/// Where a resumable upload stands: the answer to creating it, to each part, and to
/// `GET /v1/uploads/{id}` (what a client asks after a broken connection or a host restart).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UploadStatus {
    /// The upload's id, which becomes the dataset's id.
    pub upload_id: String,
    /// The container's declared length.
    pub length: u64,
    /// Bytes stored so far: the next part starts here.
    pub offset: u64,
    /// The stored dataset, once the last part arrived.
    pub dataset: Option<DatasetCreated>,
}

/// Request to create a training job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateJob {
    /// A registered program.
    pub program_id: String,
    /// An uploaded dataset, or an upload of the caller's still open (its id): the job is
    /// then started only once the upload is complete, so that the owner can attest the
    /// job's enclaves before sending the data.
    pub dataset_id: String,
    /// Training enclaves: 1 (or absent) for one, 2 or more for a distributed job with a
    /// parameter server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<u32>,
}

/// Which of a job's enclaves a request addresses: the `enclave` query parameter of
/// `GET /v1/jobs/{id}/evidence`, `worker-<rank>` or `ps` (absent: `worker-0`, the only
/// training enclave of a one-worker job).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobEnclave {
    /// The training enclave of this rank.
    Worker(u32),
    /// A distributed job's parameter server.
    ParameterServer,
}

impl JobEnclave {
    /// Parses `worker-<rank>` or `ps`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ps" => Some(Self::ParameterServer),
            _ => text
                .strip_prefix("worker-")
                .filter(|rank| !rank.starts_with('+'))
                .and_then(|rank| rank.parse().ok())
                .map(Self::Worker),
        }
    }
}

impl std::fmt::Display for JobEnclave {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Worker(rank) => write!(f, "worker-{rank}"),
            Self::ParameterServer => f.write_str("ps"),
        }
    }
}

/// The body of `POST /v1/jobs/{id}/start` for a distributed job (postcard): one sealed
/// request per enclave, each sealed to that enclave's attested key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SealedRequests {
    /// The parameter server's `ParameterServerRequest`.
    pub parameter_server: Vec<u8>,
    /// Each worker's `TrainRequest`, by rank.
    pub workers: Vec<Vec<u8>>,
}

/// A created job; its training enclave is up and waiting for the owner.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobCreated {
    /// The job's id.
    pub job_id: String,
}

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    /// Enclave started, waiting for the owner's sealed request.
    Created,
    /// Training.
    Running,
    /// Trained; the sealed model is stored and queries can be served.
    Succeeded,
    /// Failed; details went to the owner's event stream.
    Failed,
}

/// A job's public status.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobStatus {
    /// The job's id.
    pub job_id: String,
    /// Its state.
    pub state: JobState,
    /// A data-independent failure label, when failed.
    pub error: Option<String>,
    /// Events stored so far.
    pub events: u64,
}

/// A slice of a job's encrypted event stream.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Events {
    /// The job's state when the slice was taken.
    pub state: JobState,
    /// Events from the requested position on, in order; each is `(seq, ciphertext)` with
    /// the ciphertext base64-encoded.
    pub events: Vec<(u64, String)>,
}

/// An error answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong, for the caller.
    pub error: String,
}
