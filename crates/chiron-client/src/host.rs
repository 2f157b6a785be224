//! A typed HTTP client for the host's public API (see `chiron_proto::api`).

use std::io::Read;

use chiron_proto::api::{
    ApiError, CreateJob, CreateUpload, DatasetCreated, Events, JobCreated, JobEnclave, JobStatus,
    ProgramCreated, ProgramInfo, UploadStatus,
};
use serde::de::DeserializeOwned;

use crate::ClientError;

/// Largest answer body read from the host.
const MAX_BODY: u64 = 64 << 20;
/// How long a request waits in all for the host's request rate to let it through.
const RATE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);
/// Bytes per part of a resumable upload (the host takes up to 16 MiB).
pub const UPLOAD_PART: usize = 16 << 20;
/// Failed attempts in a row after which an upload gives up; with the pause between them,
/// about a minute without the host.
const UPLOAD_ATTEMPTS: u32 = 60;
/// The pause after a failed attempt.
const UPLOAD_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// The untrusted host's API. Nothing sent through it is secret: datasets are ciphertext,
/// keys and queries are sealed to an attested enclave before they get here. The API token
/// only says who calls (see [`HostClient::with_token`]).
#[derive(Clone)]
pub struct HostClient {
    base: String,
    agent: ureq::Agent,
    token: Option<String>,
    upload_part: usize,
    upload_progress: Option<std::sync::Arc<UploadProgress>>,
}

/// Told `(bytes the host holds, bytes in all)` after each part of an upload.
pub type UploadProgress = dyn Fn(u64, u64) + Send + Sync;

impl std::fmt::Debug for HostClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostClient")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl HostClient {
    /// A client for the host at `base` (e.g. `http://127.0.0.1:7700`).
    pub fn new(base: &str) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(600)))
            .build();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            agent: config.into(),
            token: None,
            upload_part: UPLOAD_PART,
            upload_progress: None,
        }
    }

    /// Calls `progress` after each part of an upload the host stored (for a progress bar).
    pub fn with_upload_progress(
        mut self,
        progress: impl Fn(u64, u64) + Send + Sync + 'static,
    ) -> Self {
        self.upload_progress = Some(std::sync::Arc::new(progress));
        self
    }

    /// Uploads datasets in parts of `bytes` (the host takes 64 KiB to 16 MiB) instead of
    /// [`UPLOAD_PART`].
    pub fn with_upload_part(mut self, bytes: usize) -> Self {
        self.upload_part = bytes;
        self
    }

    /// Sends `token` (issued by the host's operator with `chiron-host principal add`) as
    /// the bearer token of every request.
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.trim().to_owned());
        self
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authorized<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(token) => request.header("Authorization", format!("Bearer {token}")),
            None => request,
        }
    }

    fn post(&self, path: &str) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
        self.authorized(self.agent.post(&self.url(path)))
    }

    /// Sends a request; when the host answers 429 with `Retry-After` (the request rate),
    /// waits as long and sends it again, for up to [`RATE_PATIENCE`] in all. Limits that
    /// come with no such time (enclaves, uploads) are the caller's to handle.
    fn paced(&self, send: impl Fn() -> Reply) -> Reply {
        let mut waited = std::time::Duration::ZERO;
        loop {
            let reply = send();
            let wait = match &reply {
                Ok(response) if response.status().as_u16() == 429 => response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|secs| std::time::Duration::from_secs(secs.max(1))),
                _ => None,
            };
            match wait {
                Some(wait) if waited + wait <= RATE_PATIENCE => {
                    std::thread::sleep(wait);
                    waited += wait;
                }
                _ => return reply,
            }
        }
    }

    fn delete(&self, path: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        self.authorized(self.agent.delete(&self.url(path)))
    }

    fn put(&self, path: &str) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
        self.authorized(self.agent.put(&self.url(path)))
    }

    fn get(&self, path: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        self.authorized(self.agent.get(&self.url(path)))
    }

    /// Registers a provider program; returns its id (hex SHA-256).
    pub fn register_program(&self, wasm: &[u8]) -> Result<ProgramCreated, ClientError> {
        let r = self.paced(|| self.post("/v1/programs").send(wasm));
        json(r)
    }

    /// A registered program's id and extraction policy, as the host read it from the
    /// program's manifest. The host is not trusted: the enclave enforces the policy it reads
    /// from the program it runs; this copy lets the owner refuse terms before uploading.
    pub fn program(&self, program_id: &str) -> Result<ProgramInfo, ClientError> {
        if program_id.is_empty() || !program_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ClientError::Input(format!(
                "`{program_id}` is not a program id (64 hex digits)"
            )));
        }
        json(self.paced(|| self.get(&format!("/v1/programs/{program_id}")).call()))
    }

    /// Uploads an encrypted dataset container in parts ([`UPLOAD_PART`] by default), carrying on from
    /// where the host's store stands after a broken connection or a host restart.
    /// An upload that fails for good is deleted, so that it does not hold a place under the
    /// host's limits until it expires.
    pub fn upload_dataset(&self, container: &[u8]) -> Result<DatasetCreated, ClientError> {
        let opened = self.create_upload(container.len() as u64)?;
        let id = opened.upload_id.clone();
        let uploaded = self.resume_upload(opened, container);
        if uploaded.is_err() {
            let _ = self.cancel_upload(&id);
        }
        uploaded
    }

    /// Deletes an upload that has not completed.
    pub fn cancel_upload(&self, upload_id: &str) -> Result<(), ClientError> {
        checked_id(upload_id, "an upload id")?;
        let path = format!("/v1/uploads/{upload_id}");
        checked(self.paced(|| self.delete(&path).call())).map(drop)
    }

    /// Uploads a container in one streamed request (`POST /v1/datasets`): no parts, and
    /// nothing to resume if the connection breaks.
    pub fn upload_dataset_in_one_request(
        &self,
        container: &[u8],
    ) -> Result<DatasetCreated, ClientError> {
        json(self.paced(|| self.post("/v1/datasets").send(container)))
    }

    /// Opens a resumable upload of `length` bytes; its id becomes the dataset's.
    pub fn create_upload(&self, length: u64) -> Result<UploadStatus, ClientError> {
        json(self.paced(|| self.post("/v1/uploads").send_json(&CreateUpload { length })))
    }

    /// Where upload `upload_id` stands in the host's store.
    pub fn upload_status(&self, upload_id: &str) -> Result<UploadStatus, ClientError> {
        checked_id(upload_id, "an upload id")?;
        json(self.paced(|| self.get(&format!("/v1/uploads/{upload_id}")).call()))
    }

    /// Stores the part of an upload that starts at byte `offset`.
    pub fn upload_part(
        &self,
        upload_id: &str,
        offset: u64,
        part: &[u8],
    ) -> Result<UploadStatus, ClientError> {
        checked_id(upload_id, "an upload id")?;
        json(self.paced(|| {
            self.put(&format!("/v1/uploads/{upload_id}?offset={offset}"))
                .send(part)
        }))
    }

    /// Sends the rest of `container` from where `status` stands, part by part. A broken
    /// connection, a host that is restarting or a part the host stored without the answer
    /// arriving makes it ask the host where the upload stands and go on from there; it gives
    /// up after about a minute without progress.
    pub fn resume_upload(
        &self,
        mut status: UploadStatus,
        container: &[u8],
    ) -> Result<DatasetCreated, ClientError> {
        let mut failures = 0;
        loop {
            if let Some(dataset) = status.dataset {
                return Ok(dataset);
            }
            if status.length != container.len() as u64 || status.offset > status.length {
                return Err(ClientError::Input(format!(
                    "upload {} is of {} bytes, this container of {}",
                    status.upload_id,
                    status.length,
                    container.len()
                )));
            }
            let start = usize::try_from(status.offset).unwrap_or(usize::MAX);
            let end = start.saturating_add(self.upload_part).min(container.len());
            let sent = self.upload_part(&status.upload_id, status.offset, &container[start..end]);
            match sent {
                Ok(next) => {
                    status = next;
                    failures = 0;
                    if let Some(progress) = &self.upload_progress {
                        progress(status.offset, status.length);
                    }
                }
                Err(e) if retryable(&e) && failures < UPLOAD_ATTEMPTS => {
                    failures += 1;
                    std::thread::sleep(UPLOAD_PAUSE);
                    loop {
                        match self.upload_status(&status.upload_id) {
                            Ok(now) => {
                                status = now;
                                break;
                            }
                            Err(e) if retryable(&e) && failures < UPLOAD_ATTEMPTS => {
                                failures += 1;
                                std::thread::sleep(UPLOAD_PAUSE);
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Creates a training job (the host starts its enclave).
    pub fn create_job(
        &self,
        program_id: &str,
        dataset_id: &str,
    ) -> Result<JobCreated, ClientError> {
        self.create_distributed_job(program_id, dataset_id, 1)
    }

    /// Creates a training job of `workers` training enclaves (with a parameter server when
    /// there are several).
    pub fn create_distributed_job(
        &self,
        program_id: &str,
        dataset_id: &str,
        workers: u32,
    ) -> Result<JobCreated, ClientError> {
        let body = CreateJob {
            program_id: program_id.to_owned(),
            dataset_id: dataset_id.to_owned(),
            workers: (workers != 1).then_some(workers),
        };
        let r = self.paced(|| self.post("/v1/jobs").send_json(&body));
        json(r)
    }

    /// Evidence from a job's training enclave over `nonce`.
    pub fn job_evidence(&self, job_id: &str, nonce: &[u8; 32]) -> Result<Vec<u8>, ClientError> {
        let path = format!("/v1/jobs/{job_id}/evidence?nonce={}", hex::encode(nonce));
        bytes(self.paced(|| self.get(&path).call()))
    }

    /// Evidence from one enclave of a job over `nonce`.
    pub fn job_enclave_evidence(
        &self,
        job_id: &str,
        enclave: JobEnclave,
        nonce: &[u8; 32],
    ) -> Result<Vec<u8>, ClientError> {
        let path = format!(
            "/v1/jobs/{job_id}/evidence?nonce={}&enclave={enclave}",
            hex::encode(nonce)
        );
        bytes(self.paced(|| self.get(&path).call()))
    }

    /// Hands the sealed training request to the job's enclave.
    pub fn start_job(&self, job_id: &str, sealed: &[u8]) -> Result<JobStatus, ClientError> {
        let path = format!("/v1/jobs/{job_id}/start");
        json(self.paced(|| self.post(&path).send(sealed)))
    }

    /// A job's public status.
    pub fn job_status(&self, job_id: &str) -> Result<JobStatus, ClientError> {
        json(self.paced(|| self.get(&format!("/v1/jobs/{job_id}")).call()))
    }

    /// A job's encrypted events from sequence number `from`.
    pub fn job_events(&self, job_id: &str, from: u64) -> Result<Events, ClientError> {
        let path = format!("/v1/jobs/{job_id}/events?from={from}");
        json(self.paced(|| self.get(&path).call()))
    }

    /// Evidence from the query enclave serving a job's model.
    pub fn model_evidence(&self, job_id: &str, nonce: &[u8; 32]) -> Result<Vec<u8>, ClientError> {
        let path = format!("/v1/models/{job_id}/evidence?nonce={}", hex::encode(nonce));
        bytes(self.paced(|| self.get(&path).call()))
    }

    /// Sends a sealed query; returns the encrypted answer.
    pub fn query(&self, job_id: &str, sealed: &[u8]) -> Result<Vec<u8>, ClientError> {
        let path = format!("/v1/models/{job_id}/query");
        bytes(self.paced(|| self.post(&path).send(sealed)))
    }
}

/// Whether an upload step may succeed if tried again: the connection broke, the host is
/// restarting, or the host stored a part whose answer was lost (409: ask where it stands).
fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Http(_) => true,
        ClientError::Host { status, .. } => matches!(status, 409 | 502 | 503 | 504),
        _ => false,
    }
}

fn checked_id(id: &str, what: &str) -> Result<(), ClientError> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ClientError::Input(format!("`{id}` is not {what} (hex)")));
    }
    Ok(())
}

type Reply = Result<ureq::http::Response<ureq::Body>, ureq::Error>;

fn checked(reply: Reply) -> Result<ureq::http::Response<ureq::Body>, ClientError> {
    let mut response = reply.map_err(|e| ClientError::Http(e.to_string()))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let mut text = String::new();
    let _ = response
        .body_mut()
        .as_reader()
        .take(64 * 1024)
        .read_to_string(&mut text);
    let message = serde_json::from_str::<ApiError>(&text)
        .map(|e| e.error)
        .unwrap_or(text);
    Err(ClientError::Host {
        status: status.as_u16(),
        message,
    })
}

fn json<T: DeserializeOwned>(reply: Reply) -> Result<T, ClientError> {
    let mut response = checked(reply)?;
    response
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_json()
        .map_err(|e| ClientError::Http(e.to_string()))
}

fn bytes(reply: Reply) -> Result<Vec<u8>, ClientError> {
    let mut response = checked(reply)?;
    response
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_vec()
        .map_err(|e| ClientError::Http(e.to_string()))
}
