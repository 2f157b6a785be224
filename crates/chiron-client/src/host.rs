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
        status: UploadStatus,
        container: &[u8],
    ) -> Result<DatasetCreated, ClientError> {
        if status.length != container.len() as u64 {
            return Err(ClientError::Input(format!(
                "upload {} is of {} bytes, this container of {}",
                status.upload_id,
                status.length,
                container.len()
            )));
        }
        self.send_parts(status, &mut Whole(container))
    }

    /// Encrypts a dataset straight into upload `opened`: `body`, the plaintext `header`
    /// describes, is sealed under `key` on every core (as [`chiron_crypto::encrypt_dataset`]
    /// seals it) while the parts already sealed are sent, so the container is never whole
    /// in memory and encryption and upload overlap. `opened` must be an upload of
    /// [`chiron_crypto::dataset::container_len`]`(header)` bytes with nothing stored yet.
    /// Resumes like [`HostClient::resume_upload`] from where the host's store stands, as long
    /// as that is within the part being sent (the host stores whole parts); a host that lost
    /// parts it had acknowledged fails the upload, since the container is sealed under a
    /// fresh nonce each time and cannot be made again.
    pub fn upload_encrypted(
        &self,
        opened: UploadStatus,
        key: &chiron_crypto::DataKey,
        header: &chiron_proto::dataset::DatasetHeader,
        body: impl Read + Send,
    ) -> Result<DatasetCreated, ClientError> {
        let length = chiron_crypto::dataset::container_len(header)?;
        if opened.length != length || opened.offset != 0 {
            return Err(ClientError::Input(format!(
                "upload {} is of {} bytes with {} stored, this dataset's container of {length} \
                 with none",
                opened.upload_id, opened.length, opened.offset
            )));
        }
        let part_len = self.upload_part;
        let (parts_out, parts_in) = std::sync::mpsc::sync_channel(1);
        let (spare_out, spare_in) = std::sync::mpsc::sync_channel(2);
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let mut writer = PartWriter {
                    part_len,
                    part: Vec::with_capacity(part_len),
                    parts: parts_out,
                    spare: spare_in,
                };
                let sealed = chiron_crypto::encrypt_dataset(key, header, body, &mut writer)
                    .and_then(|_| writer.send_last());
                if let Err(e) = sealed {
                    // Only fails when the uploader has stopped, and so no longer listens.
                    let _ = writer.parts.send(Err(e));
                }
            });
            let mut parts = Sealed {
                parts: parts_in,
                spare: spare_out,
                current: Vec::new(),
                start: 0,
            };
            // Dropping the parts (on success or failure) stops the encryption thread.
            self.send_parts(opened, &mut parts)
        })
    }

    /// Sends parts from `source`, starting where `status` stands, until the host has the
    /// whole container; retries as [`HostClient::resume_upload`] describes.
    fn send_parts(
        &self,
        mut status: UploadStatus,
        source: &mut dyn PartSource,
    ) -> Result<DatasetCreated, ClientError> {
        let mut failures = 0;
        loop {
            if let Some(dataset) = status.dataset {
                return Ok(dataset);
            }
            if status.offset > status.length {
                return Err(ClientError::Input(format!(
                    "upload {} is of {} bytes, {} stored",
                    status.upload_id, status.length, status.offset
                )));
            }
            let part = source.part_at(status.offset, self.upload_part)?;
            let sent = self.upload_part(&status.upload_id, status.offset, part);
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
/// Where an upload's bytes come from.
trait PartSource {
    /// Up to `max` bytes of the container from byte `offset` on.
    fn part_at(&mut self, offset: u64, max: usize) -> Result<&[u8], ClientError>;
}

/// A container whole in memory.
struct Whole<'c>(&'c [u8]);

impl PartSource for Whole<'_> {
    fn part_at(&mut self, offset: u64, max: usize) -> Result<&[u8], ClientError> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.0.len());
        let end = start.saturating_add(max).min(self.0.len());
        Ok(&self.0[start..end])
    }
}

/// A container sealed as it is sent: the parts come from the encryption thread in order,
/// and only the one being sent is kept.
struct Sealed {
    parts: std::sync::mpsc::Receiver<Result<Vec<u8>, chiron_crypto::CryptoError>>,
    /// Buffers sent, handed back for the next parts (fresh ones would be faulted in anew).
    spare: std::sync::mpsc::SyncSender<Vec<u8>>,
    current: Vec<u8>,
    /// The container offset of `current`'s first byte.
    start: u64,
}

impl PartSource for Sealed {
    fn part_at(&mut self, offset: u64, max: usize) -> Result<&[u8], ClientError> {
        while offset >= self.start + self.current.len() as u64 {
            let next = match self.parts.recv() {
                Ok(part) => part?,
                Err(_) => {
                    return Err(ClientError::Input(
                        "the host asks for bytes past the end of the container".into(),
                    ));
                }
            };
            self.start += self.current.len() as u64;
            let sent = std::mem::replace(&mut self.current, next);
            let _ = self.spare.try_send(sent);
        }
        if offset < self.start {
            return Err(ClientError::Input(format!(
                "the host lost bytes {offset}..{} of the upload that it had acknowledged; \
                 upload the dataset again",
                self.start
            )));
        }
        // Within the current part: the host stores whole parts, so `offset` is its start
        // unless parts were sent in other sizes.
        let from = usize::try_from(offset - self.start).unwrap_or(usize::MAX);
        let end = from.saturating_add(max).min(self.current.len());
        Ok(&self.current[from..end])
    }
}

/// The encryption thread's output: cuts the container into parts of `part_len` bytes.
struct PartWriter {
    part_len: usize,
    part: Vec<u8>,
    parts: std::sync::mpsc::SyncSender<Result<Vec<u8>, chiron_crypto::CryptoError>>,
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
}

impl PartWriter {
    /// Hands over the part being filled.
    fn send_part(&mut self) -> std::io::Result<()> {
        let mut next = self.spare.try_recv().unwrap_or_default();
        next.clear();
        next.reserve(self.part_len);
        let full = std::mem::replace(&mut self.part, next);
        self.parts
            .send(Ok(full))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "upload stopped"))
    }

    /// Hands over the last, shorter part, if any.
    fn send_last(&mut self) -> Result<(), chiron_crypto::CryptoError> {
        if !self.part.is_empty() {
            self.send_part()?;
        }
        Ok(())
    }
}

impl std::io::Write for PartWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = self.part_len - self.part.len();
        let n = room.min(data.len());
        self.part.extend_from_slice(&data[..n]);
        if self.part.len() == self.part_len {
            self.send_part()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// A source of the parts `parts`, already sealed.
    fn sealed(parts: &[&[u8]]) -> Sealed {
        let (parts_out, parts_in) = std::sync::mpsc::sync_channel(parts.len());
        for part in parts {
            parts_out.send(Ok(part.to_vec())).expect("room");
        }
        let (spare, _) = std::sync::mpsc::sync_channel(2);
        Sealed {
            parts: parts_in,
            spare,
            current: Vec::new(),
            start: 0,
        }
    }

    #[test]
    fn sealed_parts_are_served_in_order_and_resumed_within_the_current_one() {
        let mut source = sealed(&[b"abcd", b"efgh", b"ij"]);
        assert_eq!(source.part_at(0, 4).expect("first"), b"abcd");
        // A part the host stored in part, or whose answer was lost: asked for again.
        assert_eq!(source.part_at(2, 4).expect("rest of the first"), b"cd");
        assert_eq!(source.part_at(4, 4).expect("second"), b"efgh");
        assert_eq!(source.part_at(8, 4).expect("last"), b"ij");
        let err = source.part_at(10, 4).expect_err("past the end");
        assert!(err.to_string().contains("past the end"), "{err}");
    }

    #[test]
    fn a_host_that_lost_acknowledged_parts_fails_the_upload_with_the_reason() {
        let mut source = sealed(&[b"abcd", b"efgh"]);
        source.part_at(4, 4).expect("second");
        let err = source.part_at(0, 4).expect_err("gone");
        assert!(err.to_string().contains("lost bytes 0..4"), "{err}");
        assert!(
            err.to_string().contains("upload the dataset again"),
            "{err}"
        );
    }

    #[test]
    fn the_encryption_side_cuts_the_container_into_parts_of_the_upload_size() {
        use std::io::Write;
        let (parts, received) = std::sync::mpsc::sync_channel(8);
        let (_, spare) = std::sync::mpsc::sync_channel(2);
        let mut writer = PartWriter {
            part_len: 4,
            part: Vec::new(),
            parts,
            spare,
        };
        writer.write_all(b"abcdefghij").expect("written");
        writer.send_last().expect("last");
        let cut: Vec<Vec<u8>> = received.try_iter().map(|p| p.expect("part")).collect();
        assert_eq!(cut, [&b"abcd"[..], b"efgh", b"ij"]);
        // The uploader gone, the encryption stops with an error instead of blocking.
        drop(received);
        let err = writer.write_all(b"klmn").expect_err("nobody listens");
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
    }
}
