//! The public HTTP API (see the table in `chiron_proto::api`).
//!
//! Every request carries a principal's bearer token (`Authorization: Bearer chiron_...`,
//! issued by `chiron-host principal add`): providers register programs; owners upload
//! datasets, run jobs and query models, and see only their own. Another principal's
//! dataset, job or model answers exactly as one that does not exist.
//!
//! Errors are JSON [`ApiError`]s with fixed texts, ids and limits: never anything from a
//! request body, and never anything an enclave said except its public failure label.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::BytesMut;
use chiron_proto::api::{
    ApiError, CreateJob, CreateUpload, DatasetCreated, Events, JobCreated, JobEnclave, JobState,
    JobStatus, ProgramCreated, ProgramInfo, UploadStatus,
};
use chiron_proto::evidence::{Evidence, TeeKind};
use chiron_proto::manifest::program_policy;
use chiron_proto::owner::ExchangeTerms;
use chiron_proto::wire::MAX_FRAME;
use futures::StreamExt;
use serde::Deserialize;
use tracing::{error, info, warn};

use crate::enclave::{EnclaveError, clean_label};
use crate::ids::{BadId, DatasetId, JobId, ProgramId, parse_nonce};
use crate::jobs::{Job, JobError, Jobs, StartRequests};
use crate::limits::{Limits, Pool, RateLimiter, Refusal};
use crate::models::{ModelError, Models};
use crate::principals::{Principal, Principals, Role};
use crate::store::{self, Store, StoreError};
use crate::uploads::{self as resumable, UploadError, Uploads};

/// Largest program: it must fit in one frame next to the sealed request.
pub const PROGRAM_LIMIT: usize = MAX_FRAME - (1 << 20);
/// Largest sealed training request (a few hundred bytes in practice).
pub const START_LIMIT: usize = 1 << 20;
/// Largest sealed query: it must fit in one frame.
pub const QUERY_LIMIT: usize = MAX_FRAME - 1024;
/// Bytes of an upload read before its public header is parsed; a valid container's
/// preamble, header and nonce are far smaller.
const HEADER_PREFIX: usize = resumable::HEADER_PREFIX;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The object store.
    pub store: Store,
    /// The jobs.
    pub jobs: Arc<Jobs>,
    /// The query enclaves.
    pub models: Arc<Models>,
    /// Loads programs as the enclaves will, so that one they would refuse is refused at
    /// registration, before any owner uploads data for it.
    pub checker: Arc<chiron_sandbox::Sandbox>,
    /// Vendor endorsements the operator keeps fresh (DCAP collateral from the platform's
    /// PCCS, an SNP VCEK), attached to evidence that comes without its own. They are signed by
    /// the vendor, so the host supplying them gives it no say in the verdict.
    pub endorsements: Arc<Endorsements>,
    /// Who may call.
    pub principals: Arc<Principals>,
    /// What callers may use.
    pub limits: Arc<Limits>,
    /// Each principal's request rate.
    pub rate: Arc<RateLimiter>,
    /// Dataset uploads open.
    pub upload_slots: Arc<Pool>,
    /// Resumable uploads.
    pub uploads: Arc<Uploads>,
}

impl AppState {
    /// The limiters that `limits` configures.
    pub fn limiters(limits: &Limits) -> (Arc<RateLimiter>, Arc<Pool>) {
        (
            Arc::new(RateLimiter::new(limits)),
            Pool::new(
                "dataset uploads in progress",
                (limits.max_uploads, "max-uploads"),
                (
                    limits.max_uploads_per_principal,
                    "max-uploads-per-principal",
                ),
                "; retry when an upload of yours has completed or been deleted",
            ),
        )
    }
}

/// Endorsements the host attaches to evidence, by TEE.
#[derive(Debug, Default)]
pub struct Endorsements(Vec<(TeeKind, Vec<u8>)>);

impl Endorsements {
    /// From `TEE=FILE` arguments (`sgx=collateral.json`).
    pub fn read(arguments: &[String]) -> anyhow::Result<Self> {
        let out = arguments
            .iter()
            .map(|argument| chiron_attest::read_endorsements(argument))
            .collect::<Result<_, _>>()
            .map_err(anyhow::Error::msg)?;
        Ok(Self(out))
    }

    /// `evidence` with the endorsements for its TEE attached if it has none; evidence that
    /// does not decode is passed on untouched, for the owner's verifier to refuse.
    fn attach(&self, evidence: Vec<u8>) -> Vec<u8> {
        let Ok(mut decoded) = Evidence::from_bytes(&evidence) else {
            return evidence;
        };
        let Some((_, bytes)) = self.0.iter().find(|(tee, _)| *tee == decoded.tee) else {
            return evidence;
        };
        if !decoded.endorsements.is_empty() {
            return evidence;
        }
        decoded.endorsements = bytes.clone();
        decoded.to_bytes().unwrap_or(evidence)
    }
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/v1/programs",
            post(post_program).layer(DefaultBodyLimit::max(PROGRAM_LIMIT)),
        )
        .route("/v1/programs/{id}", get(get_program))
        // Streamed and bounded by the handler itself.
        .route(
            "/v1/datasets",
            post(post_dataset).layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/uploads", post(create_upload))
        .route(
            "/v1/uploads/{id}",
            get(upload_status)
                .put(upload_part)
                .delete(cancel_upload)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/jobs", post(post_job))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/evidence", get(job_evidence))
        .route(
            "/v1/jobs/{id}/start",
            post(start_job).layer(DefaultBodyLimit::max(START_LIMIT)),
        )
        .route("/v1/jobs/{id}/events", get(job_events))
        .route("/v1/models/{id}/evidence", get(model_evidence))
        .route(
            "/v1/models/{id}/query",
            post(query_model).layer(DefaultBodyLimit::max(QUERY_LIMIT)),
        )
        .fallback(no_route)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

/// The caller's principal, from its bearer token, within its request rate.
async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let principal = match token {
        Some(token) => state.principals.authenticate(token).await,
        None => None,
    };
    let Some(principal) = principal else {
        let mut response = HttpError::new(
            StatusCode::UNAUTHORIZED,
            "send your API token as `Authorization: Bearer <token>` (the operator issues it \
             with `chiron-host principal add`; the client reads it from CHIRON_TOKEN)",
        )
        .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"chiron\""),
        );
        return response;
    };
    if let Err(refusal) = state.rate.check(&principal.name) {
        return HttpError::from(refusal).into_response();
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// The caller, checked to act in `role`.
fn acting_as(principal: &Principal, role: Role) -> Result<(), HttpError> {
    if principal.is(role) {
        Ok(())
    } else {
        Err(HttpError::new(
            StatusCode::FORBIDDEN,
            format!(
                "principal `{}` does not have the {role} role; the operator grants roles \
                 with `chiron-host principal add --role {role}`",
                principal.name
            ),
        ))
    }
}

type Caller = Extension<Arc<Principal>>;

/// An error answer: a status and an [`ApiError`] body.
#[derive(Debug)]
pub struct HttpError {
    status: StatusCode,
    message: String,
    /// Seconds after which the same request will pass (`Retry-After`), when known.
    retry_after: Option<u64>,
}

impl HttpError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, message)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        // Messages carry fixed texts, ids, limits, public labels and OS errors: safe to log.
        if self.status == StatusCode::BAD_GATEWAY {
            warn!("answering 502: {}", self.message);
        } else if self.status.is_server_error() {
            error!("answering {}: {}", self.status.as_u16(), self.message);
        }
        let mut response = (
            self.status,
            Json(ApiError {
                error: self.message,
            }),
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<Refusal> for HttpError {
    fn from(refusal: Refusal) -> Self {
        Self {
            retry_after: refusal
                .retry_after
                .map(|wait| wait.as_secs_f64().ceil() as u64),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, refusal.to_string())
        }
    }
}

impl From<UploadError> for HttpError {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::Unknown(_) => Self::not_found(e.to_string()),
            UploadError::WrongOffset { .. } => Self::conflict(e.to_string()),
            UploadError::TooLong { .. }
            | UploadError::BadPart(_)
            | UploadError::BadContainer(_)
            | UploadError::Interrupted => Self::bad_request(e.to_string()),
            UploadError::TooLarge { .. } => Self::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
            UploadError::Limit(refusal) => refusal.into(),
            UploadError::Store(e) => e.into(),
            UploadError::Internal => Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

impl From<BadId> for HttpError {
    fn from(e: BadId) -> Self {
        Self::bad_request(e.to_string())
    }
}

impl From<StoreError> for HttpError {
    fn from(e: StoreError) -> Self {
        error!("object store: {e}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the host's object store failed; see the host's log",
        )
    }
}

impl From<JobError> for HttpError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::UnknownProgram(_) | JobError::UnknownDataset(_) => {
                Self::not_found(e.to_string())
            }
            JobError::WrongState { .. } => Self::conflict(e.to_string()),
            JobError::EnclaveGone(_) => Self::bad_gateway(e.to_string()),
            JobError::NoSuchEnclave { .. } => Self::not_found(e.to_string()),
            JobError::BadStart { .. } => Self::bad_request(e.to_string()),
            JobError::Limit(refusal) => refusal.into(),
            JobError::Enclave(EnclaveError::Refused(label)) => Self::bad_gateway(label),
            JobError::Enclave(e) => Self::bad_gateway(format!("training enclave: {e}")),
            JobError::Store(e) => e.into(),
        }
    }
}

impl HttpError {
    /// Maps a model error; `refused` is the status for an enclave's refusal of the request.
    fn from_model(e: ModelError, refused: StatusCode) -> Self {
        match e {
            ModelError::NotLoaded(_) => Self::conflict(e.to_string()),
            ModelError::Refused(label) => Self::new(refused, label),
            ModelError::LoadRefused(_)
            | ModelError::Unavailable
            | ModelError::Start(_)
            | ModelError::Missing(_) => Self::bad_gateway(e.to_string()),
            ModelError::TooLarge if refused == StatusCode::BAD_REQUEST => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
            }
            ModelError::TooLarge => Self::bad_gateway(e.to_string()),
            ModelError::Store(e) => e.into(),
            ModelError::Limit(refusal) => refusal.into(),
            ModelError::Internal => Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

fn body_error(rejection: &BytesRejection, limit: usize, what: &str) -> HttpError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{what} exceeds this endpoint's limit of {limit} bytes"),
        )
    } else {
        HttpError::bad_request(format!("could not read the request body ({what})"))
    }
}

fn octets(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
}

fn job(state: &AppState, caller: &Principal, id: &str) -> Result<(JobId, Arc<Job>), HttpError> {
    acting_as(caller, Role::Owner)?;
    let id = JobId::parse(id)?;
    let job = state.jobs.get(&caller.name, &id).ok_or_else(|| {
        HttpError::not_found(format!("no job {id}; create one with POST /v1/jobs"))
    })?;
    Ok((id, job))
}

async fn succeeded_job(
    state: &AppState,
    caller: &Principal,
    id: &str,
) -> Result<(JobId, Arc<Job>), HttpError> {
    let (id, job) = job(state, caller, id)?;
    let job_state = job.state().await;
    if job_state != JobState::Succeeded {
        return Err(HttpError::conflict(format!(
            "model {id} is not available: its job is {job_state:?}; models are served once the \
             job has Succeeded"
        )));
    }
    Ok((id, job))
}

#[derive(Deserialize)]
struct NonceParam {
    nonce: String,
}

/// Which enclave of a job (`ps`, `worker-<rank>`); absent: `worker-0`.
#[derive(Deserialize)]
struct EnclaveParam {
    enclave: Option<String>,
}

fn nonce(param: Result<Query<NonceParam>, QueryRejection>) -> Result<[u8; 32], HttpError> {
    let Query(param) = param.map_err(|_| {
        HttpError::bad_request("add ?nonce=<64 hex characters> (your fresh 32-byte nonce)")
    })?;
    Ok(parse_nonce(&param.nonce)?)
}

#[derive(Deserialize)]
struct FromParam {
    from: Option<u64>,
}

async fn no_route() -> HttpError {
    HttpError::not_found("no such endpoint; the API is listed in chiron_proto::api")
}

async fn post_program(
    State(state): State<AppState>,
    Extension(caller): Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ProgramCreated>, HttpError> {
    acting_as(&caller, Role::Provider)?;
    let wasm = body.map_err(|r| body_error(&r, PROGRAM_LIMIT, "the program"))?;
    if !wasm.starts_with(b"\0asm") {
        return Err(HttpError::bad_request(
            "the body must be a binary WebAssembly module (starting with \\0asm)",
        ));
    }
    // The provider's extraction policy, shown to owners before they upload anything (the
    // enclaves read it again from the program they run).
    let policy = program_policy(&wasm).map_err(|e| {
        HttpError::bad_request(format!(
            "the program's manifest cannot be read ({e}); declare it once, with \
             chiron_sdk::manifest!"
        ))
    })?;
    // What the enclave's loader checks (imports inside the Chiron ABI with their types, the
    // exports present and typed), checked now rather than after an owner released a key.
    let checker = Arc::clone(&state.checker);
    let module = wasm.clone();
    let checked = tokio::task::spawn_blocking(move || checker.load(&module).map(drop))
        .await
        .map_err(|_| {
            HttpError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the program check did not finish",
            )
        })?;
    if let Err(e) = checked {
        return Err(HttpError::bad_request(format!(
            "{}; `chiron check` shows the same before registering",
            clean_label(&e.to_string())
        )));
    }
    let id = ProgramId::of_wasm(&wasm);
    let path = store::program_path(&id);
    if !state.store.exists(&path).await? {
        state.store.put(&path, wasm).await?;
    }
    info!("program {id} registered by {}", caller.name);
    Ok(Json(ProgramCreated {
        program_id: id.to_string(),
        policy,
    }))
}

/// Any principal may read a program's policy: the provider hands its id to the owners it
/// serves, and a program holds nothing secret of anyone's (the host checks it, the enclave
/// runs it).
async fn get_program(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ProgramInfo>, HttpError> {
    let id = ProgramId::parse(&id)?;
    let wasm = state
        .store
        .get(&store::program_path(&id))
        .await?
        .ok_or_else(|| {
            HttpError::not_found(format!(
                "no program {id}; register one with POST /v1/programs"
            ))
        })?;
    let policy = program_policy(&wasm).map_err(|e| {
        error!("stored program {id} no longer parses: {e}");
        HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the stored program is damaged; see the host's log",
        )
    })?;
    Ok(Json(ProgramInfo {
        program_id: id.to_string(),
        policy,
    }))
}

async fn post_dataset(
    State(state): State<AppState>,
    Extension(caller): Caller,
    body: Body,
) -> Result<Json<DatasetCreated>, HttpError> {
    acting_as(&caller, Role::Owner)?;
    let _uploading = state.upload_slots.take(&caller.name, 1)?;
    let dataset_limit = state.limits.max_dataset_bytes;
    let interrupted = || HttpError::bad_request("the dataset upload was interrupted; retry it");
    let mut stream = body.into_data_stream();
    // Read enough to parse the public header, or the whole body if it is shorter.
    let mut prefix = BytesMut::new();
    let mut ended = false;
    while prefix.len() < HEADER_PREFIX {
        match stream.next().await {
            Some(Ok(chunk)) => prefix.extend_from_slice(&chunk),
            Some(Err(_)) => return Err(interrupted()),
            None => {
                ended = true;
                break;
            }
        }
    }
    let header = chiron_crypto::read_dataset_header(&prefix).map_err(|e| {
        HttpError::bad_request(format!(
            "not a valid encrypted dataset container ({e}); create one with the owner client"
        ))
    })?;
    let expected = chiron_crypto::dataset::container_len(&header)
        .map_err(|e| HttpError::bad_request(format!("the dataset header cannot be used ({e})")))?;
    if expected > dataset_limit {
        return Err(HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the dataset container would be {expected} bytes, above this host's limit of \
                 {dataset_limit} bytes (`max-dataset-bytes`)"
            ),
        ));
    }
    let length_error = |found: u64| {
        HttpError::bad_request(format!(
            "the upload is {found} bytes but its header implies {expected}: the file was cut \
             short or has extra data"
        ))
    };
    if prefix.len() as u64 > expected {
        return Err(length_error(prefix.len() as u64));
    }
    let id = DatasetId::random();
    let path = store::dataset_path(&id);
    let owner = store::DatasetOwner {
        principal: caller.name.clone(),
    };
    state
        .store
        .put_json(&store::dataset_owner_path(&id), &owner)
        .await?;
    // The owner is recorded first, so that no container exists without one; a failed
    // upload takes its record with it.
    let stored = async {
        let mut writer = state.store.writer(&path).await?;
        let mut total = prefix.len() as u64;
        writer.put(prefix.freeze());
        if !ended {
            while let Some(chunk) = stream.next().await {
                let Ok(chunk) = chunk else {
                    let _ = writer.abort().await;
                    return Err(interrupted());
                };
                total += chunk.len() as u64;
                if total > expected {
                    let _ = writer.abort().await;
                    return Err(length_error(total));
                }
                if let Err(e) = writer.wait_for_capacity(4).await {
                    let _ = writer.abort().await;
                    return Err(StoreError::from(e).into());
                }
                writer.put(chunk);
            }
        }
        if total != expected {
            let _ = writer.abort().await;
            return Err(length_error(total));
        }
        writer
            .finish()
            .await
            .map_err(|e| HttpError::from(StoreError::from(e)))?;
        Ok::<_, HttpError>(())
    }
    .await;
    if stored.is_err() {
        let _ = state.store.delete(&store::dataset_owner_path(&id)).await;
    }
    stored?;
    info!("dataset {id} stored");
    Ok(Json(DatasetCreated {
        dataset_id: id.to_string(),
        header,
    }))
}

async fn create_upload(
    State(state): State<AppState>,
    Extension(caller): Caller,
    body: Result<Json<CreateUpload>, JsonRejection>,
) -> Result<Json<UploadStatus>, HttpError> {
    acting_as(&caller, Role::Owner)?;
    let Json(request) = body.map_err(|_| {
        HttpError::bad_request(
            "the body must be JSON {\"length\": <the container's length in bytes>} with \
             Content-Type: application/json",
        )
    })?;
    Ok(Json(
        state.uploads.create(&caller.name, request.length).await?,
    ))
}

async fn upload_status(
    State(state): State<AppState>,
    Extension(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<UploadStatus>, HttpError> {
    acting_as(&caller, Role::Owner)?;
    let id = DatasetId::parse(&id)?;
    Ok(Json(state.uploads.status(&caller.name, &id).await?))
}

async fn cancel_upload(
    State(state): State<AppState>,
    Extension(caller): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, HttpError> {
    acting_as(&caller, Role::Owner)?;
    let id = DatasetId::parse(&id)?;
    state.uploads.cancel(&caller.name, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct OffsetParam {
    offset: u64,
}

async fn upload_part(
    State(state): State<AppState>,
    Extension(caller): Caller,
    Path(id): Path<String>,
    param: Result<Query<OffsetParam>, QueryRejection>,
    body: Body,
) -> Result<Json<UploadStatus>, HttpError> {
    acting_as(&caller, Role::Owner)?;
    let id = DatasetId::parse(&id)?;
    let Query(OffsetParam { offset }) = param.map_err(|_| {
        HttpError::bad_request("add ?offset=<the byte of the container this part starts at>")
    })?;
    // Streamed into the store as it arrives, and bounded by `put_part` itself.
    let part = body.into_data_stream();
    Ok(Json(
        state
            .uploads
            .put_part(&caller.name, &id, offset, part)
            .await?,
    ))
}

async fn post_job(
    State(state): State<AppState>,
    Extension(caller): Caller,
    body: Result<Json<CreateJob>, JsonRejection>,
) -> Result<Json<JobCreated>, HttpError> {
    acting_as(&caller, Role::Owner)?;
    let Json(request) = body.map_err(|_| {
        HttpError::bad_request(
            "the body must be JSON {\"program_id\": \"<64 hex>\", \"dataset_id\": \"<32 hex>\"} \
             with Content-Type: application/json",
        )
    })?;
    let program_id = ProgramId::parse(&request.program_id)?;
    let dataset_id = DatasetId::parse(&request.dataset_id)?;
    let workers = request.workers.unwrap_or(1);
    if !(1..=ExchangeTerms::MAX_WORKERS).contains(&workers) {
        return Err(HttpError::bad_request(format!(
            "workers must be 1 to {}, not {workers}",
            ExchangeTerms::MAX_WORKERS
        )));
    }
    // A job may be created on an upload still open, so that the owner attests its enclave
    // before sending the dataset; it is started once the upload is complete.
    let uploading = state.uploads.is_open(&caller.name, &dataset_id);
    let job = state
        .jobs
        .create(&caller.name, program_id, dataset_id, workers, uploading)
        .await?;
    Ok(Json(JobCreated {
        job_id: job.id.to_string(),
    }))
}

async fn get_job(
    State(state): State<AppState>,
    Extension(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<JobStatus>, HttpError> {
    let (_, job) = job(&state, &caller, &id)?;
    Ok(Json(job.status().await))
}

async fn job_evidence(
    State(state): State<AppState>,
    Extension(caller): Caller,
    Path(id): Path<String>,
    param: Result<Query<NonceParam>, QueryRejection>,
    enclave: Result<Query<EnclaveParam>, QueryRejection>,
) -> Result<Response, HttpError> {
    let (_, job) = job(&state, &caller, &id)?;
    let Query(EnclaveParam { enclave }) =
        enclave.map_err(|_| HttpError::bad_request("?enclave= must be `ps` or `worker-<rank>`"))?;
    let enclave = match enclave.as_deref() {
        None => JobEnclave::Worker(0),
        Some(text) => JobEnclave::parse(text)
            .ok_or_else(|| HttpError::bad_request("?enclave= must be `ps` or `worker-<rank>`"))?,
    };
    let nonce = nonce(param)?;
    Ok(octets(
        state
            .endorsements
            .attach(job.evidence(enclave, nonce).await?),
    ))
}

async fn start_job(
    State(state): State<AppState>,
    Extension(caller): Caller,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<JobStatus>, HttpError> {
    let (_, job) = job(&state, &caller, &id)?;
    let sealed = body.map_err(|r| body_error(&r, START_LIMIT, "the sealed request"))?;
    if sealed.is_empty() {
        return Err(HttpError::bad_request(
            "the body must be the training request sealed to the job's attested enclave key",
        ));
    }
    let requests = if job.workers > 1 {
        StartRequests::Distributed(postcard::from_bytes(&sealed).map_err(|_| {
            HttpError::bad_request(
                "a distributed job's start body is its sealed requests (postcard                  `SealedRequests`): the parameter server's, then each worker's",
            )
        })?)
    } else {
        StartRequests::One(sealed.to_vec())
    };
    Ok(Json(job.start(requests).await?))
}

async fn job_events(
    State(state): State<AppState>,
    Extension(caller): Caller,
    Path(id): Path<String>,
    param: Result<Query<FromParam>, QueryRejection>,
) -> Result<Json<Events>, HttpError> {
    let (_, job) = job(&state, &caller, &id)?;
    let Query(param) = param.map_err(|_| {
        HttpError::bad_request("?from= must be a non-negative integer (an event sequence number)")
    })?;
    Ok(Json(job.events_from(param.from.unwrap_or(0)).await))
}

async fn model_evidence(
    State(state): State<AppState>,
    Extension(caller): Caller,
    Path(id): Path<String>,
    param: Result<Query<NonceParam>, QueryRejection>,
) -> Result<Response, HttpError> {
    let (id, job) = succeeded_job(&state, &caller, &id).await?;
    let nonce = nonce(param)?;
    let evidence = state
        .models
        .evidence(&caller.name, &id, &job.program_id, nonce)
        .await
        .map_err(|e| HttpError::from_model(e, StatusCode::BAD_GATEWAY))?;
    Ok(octets(state.endorsements.attach(evidence)))
}

async fn query_model(
    State(state): State<AppState>,
    Extension(caller): Caller,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let (id, _) = succeeded_job(&state, &caller, &id).await?;
    let sealed = body.map_err(|r| body_error(&r, QUERY_LIMIT, "the sealed query"))?;
    if sealed.is_empty() {
        return Err(HttpError::bad_request(
            "the body must be a query sealed to the model's attested query-enclave key",
        ));
    }
    let answer = state
        .models
        .query(&id, sealed.to_vec())
        .await
        .map_err(|e| HttpError::from_model(e, StatusCode::BAD_REQUEST))?;
    Ok(octets(answer))
}
