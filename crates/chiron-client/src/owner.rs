//! The data owner's side of the protocol: attest before any secret leaves, then train and
//! query through sealed messages only.

use chiron_attest::{Policy, VerifiedEnclave};
use chiron_crypto::channel::RESUME_SALT_LEN;
use chiron_crypto::{DataKey, ResponseKey};
use chiron_proto::api::{JobEnclave, SealedRequests};
use chiron_proto::dataset::DatasetHeader;
use chiron_proto::evidence::{Evidence, Role};
pub use chiron_proto::manifest::{DeclaredNeeds, ProgramPolicy};
pub use chiron_proto::owner::ExchangeTerms;
pub use chiron_proto::owner::PrivateTerms;
use chiron_proto::owner::{
    AnswerPolicy, MAX_TOP_K, OwnerEvent, PARAMETER_SERVER_INFO, ParameterServerRequest, QUERY_INFO,
    QueryAnswer, QueryRequest, TRAIN_INFO, TrainRequest, WorkerPlace,
};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{ClientError, HostClient};

/// AAD of every query answer (must match the enclave's).
const ANSWER_AAD: &[u8] = b"chiron/v1 answer";

/// What the owner asks of a training job.
#[derive(Clone, Debug)]
pub struct TrainingTerms {
    /// Epochs the program may use.
    pub epochs: u32,
    /// Wall-clock budget in seconds.
    pub time_budget_secs: u32,
    /// Answer granularity for the trained model: at most the program's policy allows
    /// ([`check_terms`]).
    pub answers: AnswerPolicy,
    /// Inputs the model may answer over its whole life, across query-enclave restarts: at
    /// most the program's policy allows ([`check_terms`]).
    pub query_budget: u64,
    /// Seed of the runtime's random stream (initialisation, shuffling); `None` draws a fresh
    /// one. Fixing it makes a run reproducible: the same seed, data and program give the same
    /// model, in the sandbox or natively.
    pub seed: Option<[u8; 32]>,
    /// Private mode: the platform sees the declared time budget, a fixed number of events
    /// and the declared peak memory, whatever the data (see [`PrivateTerms`]). `None` reports
    /// progress live, at the price of disclosing run time, event count and peak memory.
    ///
    /// The library has no default here: every caller chooses. The `chiron` CLI is private
    /// unless asked for `--live`, with figures from [`size_private_job`] unless given.
    pub private: Option<PrivateTerms>,
    /// When the time budget runs out after the program saved a model, keep that model (its
    /// last epoch's end) and succeed; `false` fails the job instead.
    pub keep_last_save: bool,
}

/// The least answer time of a private job whose owner does not choose one: long enough for
/// a batch of a few hundred images through the example CNN on two cores.
pub const DEFAULT_ANSWER_MS: u32 = 1000;
/// Inputs per query when the owner does not say (`chiron evaluate`/`predict --batch`, and
/// the Python client's `batch=`); a private job's answer time is sized for it.
pub const DEFAULT_QUERY_BATCH: usize = 250;
/// The time budget of a job whose program declares no training time.
pub const DEFAULT_TIME_BUDGET_SECS: u32 = 900;
/// The private memory of a job whose program declares none.
pub const DEFAULT_MEMORY_MIB: u32 = 2048;
/// The private model size of a job whose program declares none.
pub const DEFAULT_MODEL_MIB: u32 = 16;

/// A private job's figures, sized for a dataset and a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrivateSizing {
    /// The time budget (a private job always lasts it).
    pub time_budget_secs: u32,
    /// Memory, model size and answer time.
    pub terms: PrivateTerms,
}

/// Sizes a private job from public figures only, for an owner who does not give their own:
/// the dataset's header (the enclave holds the dataset in memory, and decrypts it within the
/// budget) and the needs the program's manifest declares (`needs`), each with headroom,
/// because a job that needs more than its figures fails.
///
/// - time: 1.5 × the declared milliseconds per 1000 examples per epoch × examples × epochs,
///   plus 15 s for starting and sealing and 0.1 s per MiB of dataset; 900 s when the program
///   declares no time;
/// - memory: the declared memory plus 256 MiB for the runtime and twice the dataset's size
///   (its ciphertext and plaintext); 2048 MiB plus that when undeclared;
/// - model: the declared size plus 1 MiB, at most 63; 16 MiB when undeclared;
/// - answer time: the declared training time of a [`DEFAULT_QUERY_BATCH`] of examples (a
///   forward and a backward pass, some three times an answer's work), at least
///   [`DEFAULT_ANSWER_MS`], so that a query of the default size fits it.
pub fn size_private_job(
    header: &DatasetHeader,
    needs: &DeclaredNeeds,
    epochs: u32,
) -> Result<PrivateSizing, ClientError> {
    let plaintext = header
        .plaintext_len()
        .map_err(|e| ClientError::Input(format!("the dataset header is unusable: {e}")))?;
    let dataset_mib = plaintext.div_ceil(1 << 20);
    let examples = u64::from(header.train_count) + u64::from(header.valid_count);
    let time_budget_secs = match needs.ms_per_1000_examples_epoch {
        Some(ms) => {
            let work_ms = u64::from(ms.get())
                .saturating_mul(examples)
                .saturating_mul(u64::from(epochs.max(1)))
                / 1000;
            // 1.5 × the work, in seconds, rounded up; 15 s and 0.1 s per MiB besides.
            (work_ms.saturating_mul(3) / 2).div_ceil(1000) + 15 + dataset_mib.div_ceil(10)
        }
        None => u64::from(DEFAULT_TIME_BUDGET_SECS),
    };
    let memory_mib =
        u64::from(needs.memory_mib.map_or(DEFAULT_MEMORY_MIB, |m| m.get())) + 256 + 2 * dataset_mib;
    let max_model_mib = (chiron_proto::wire::MAX_FRAME >> 20) as u32 - 1;
    let model_mib = needs
        .model_mib
        .map_or(DEFAULT_MODEL_MIB, |m| m.get().saturating_add(1))
        .min(max_model_mib);
    let answer_ms = needs
        .ms_per_1000_examples_epoch
        .map_or(0, |ms| {
            u64::from(ms.get()) * DEFAULT_QUERY_BATCH as u64 / 1000
        })
        .max(u64::from(DEFAULT_ANSWER_MS));
    let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    Ok(PrivateSizing {
        time_budget_secs: clamp(time_budget_secs),
        terms: PrivateTerms {
            memory_mib: clamp(memory_mib),
            model_mib,
            answer_ms: clamp(answer_ms),
        },
    })
}

/// The size, in KiB, of a distributed job's exchange messages when the owner gives none:
/// the exchange size the program's manifest declares or, when it declares none, the job's
/// sealed-model size (`model_mib`), which bounds what the parameters take on the wire but is
/// often far above it (the example CNN's 5 MiB against its 1.6 MiB of parameters on
/// Fashion-MNIST). Every message of the job, either way, is this size, so a tight figure is
/// what keeps the exchange cheap; a model whose parameters do not fit fails at its first
/// step with the size it needs.
pub fn exchange_message_kib(needs: &DeclaredNeeds, model_mib: u32) -> u32 {
    needs
        .exchange_kib
        .map_or(model_mib.saturating_mul(1024), std::num::NonZeroU32::get)
        .min(chiron_proto::owner::ExchangeTerms::MAX_MESSAGE_KIB)
}

/// The time budget of a live job whose owner gives none.
pub const LIVE_TIME_BUDGET_SECS: u32 = 900;

/// The public figures of a job as the owner gave them: a live job, or a private one whose
/// figures the owner may each leave out, to be sized by [`size_private_job`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    /// Report progress live (run time, events, memory, model size and query latencies then
    /// follow the program) instead of privately.
    pub live: bool,
    /// The wall-clock budget in seconds.
    pub time_budget_secs: Option<u32>,
    /// A private job's declared peak memory in MiB.
    pub memory_mib: Option<u32>,
    /// A private job's declared sealed-model size in MiB.
    pub model_mib: Option<u32>,
    /// A private job's answer time in milliseconds.
    pub answer_ms: Option<u32>,
}

impl Figures {
    /// The job's time budget and, for a private job, its terms: what the owner gave, the
    /// rest sized from the dataset's `header` and the program's declared `needs`.
    pub fn resolve(
        &self,
        header: &DatasetHeader,
        needs: &DeclaredNeeds,
        epochs: u32,
    ) -> Result<(u32, Option<PrivateTerms>), ClientError> {
        if self.live {
            return Ok((self.time_budget_secs.unwrap_or(LIVE_TIME_BUDGET_SECS), None));
        }
        let sized = size_private_job(header, needs, epochs)?;
        let terms = PrivateTerms {
            memory_mib: self.memory_mib.unwrap_or(sized.terms.memory_mib),
            model_mib: self.model_mib.unwrap_or(sized.terms.model_mib),
            answer_ms: self.answer_ms.unwrap_or(sized.terms.answer_ms),
        };
        terms.validate().map_err(|e| {
            ClientError::Input(format!(
                "the private figures cannot be honoured: {e}; nothing was uploaded"
            ))
        })?;
        Ok((
            self.time_budget_secs.unwrap_or(sized.time_budget_secs),
            Some(terms),
        ))
    }
}

/// Everything the owner keeps about a started job. Holds secrets (the event key and the
/// query token): store it like a private key.
#[derive(Clone, Serialize, Deserialize)]
pub struct JobTicket {
    /// The job's id at the host.
    pub job_id: String,
    /// The dataset's public header (shapes for queries).
    pub header: DatasetHeader,
    /// Answer granularity agreed at training time.
    pub answers: AnswerPolicy,
    /// Key of the job's encrypted event stream.
    pub event_key: [u8; 32],
    /// Secret that authorises queries on the model.
    pub query_token: [u8; 32],
    /// The seed of the training run's random stream, chosen by the owner or drawn for the
    /// job: the same seed, data and program train the same model again. (`None` in tickets
    /// written before it was recorded.)
    #[serde(default)]
    pub seed: Option<[u8; 32]>,
}

impl std::fmt::Debug for JobTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobTicket")
            .field("job_id", &self.job_id)
            .finish_non_exhaustive()
    }
}

/// Checks terms against a program's extraction policy (from [`HostClient::program`]) before
/// anything is uploaded: the owner's terms may only tighten the policy. The training enclave
/// checks again against the program it runs, and refuses the job ("terms refused") if the
/// host showed a policy the program does not declare.
pub fn check_terms(terms: &TrainingTerms, policy: &ProgramPolicy) -> Result<(), ClientError> {
    Ok(policy.manifest.permits(terms.answers, terms.query_budget)?)
}

/// SHA-256 of a job or model id: the `context` its evidence is bound to.
pub fn context_of(job_id: &str) -> [u8; 32] {
    Sha256::digest(job_id.as_bytes()).into()
}

fn fresh_nonce() -> [u8; 32] {
    let mut nonce = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    nonce
}

/// Fetches and verifies a job's training-enclave evidence against `policy`.
pub fn attest_training(
    host: &HostClient,
    policy: &Policy,
    job_id: &str,
) -> Result<VerifiedEnclave, ClientError> {
    let nonce = fresh_nonce();
    let raw = host.job_evidence(job_id, &nonce)?;
    verify(policy, &raw, Role::Train, &nonce, job_id)
}

fn verify(
    policy: &Policy,
    raw: &[u8],
    role: Role,
    nonce: &[u8; 32],
    job_id: &str,
) -> Result<VerifiedEnclave, ClientError> {
    let evidence = Evidence::from_bytes(raw).map_err(|_| ClientError::MalformedEvidence)?;
    Ok(chiron_attest::verify(
        policy,
        &evidence,
        role,
        nonce,
        &context_of(job_id),
    )?)
}

/// A distributed job's shape, as the owner asks for it.
#[derive(Clone, Debug)]
pub struct Distribution {
    /// Training enclaves (2 or more) and the size of their exchange messages.
    pub exchange: ExchangeTerms,
    /// The owner's policy as a policy file (`Policy::parse_spec`): every enclave of the job
    /// holds its peers to it, as the owner holds each of them.
    pub peer_policy: String,
    /// Rounds between the parameter server's sealed checkpoints (0: none); a lost server is
    /// replaced from the latest, losing at most this many rounds. A private (paced) job
    /// counts ticks instead.
    pub checkpoint_every: u32,
}

/// Fetches and verifies evidence from one enclave of a job.
pub fn attest_job_enclave(
    host: &HostClient,
    policy: &Policy,
    job_id: &str,
    enclave: JobEnclave,
) -> Result<VerifiedEnclave, ClientError> {
    let nonce = fresh_nonce();
    let raw = host.job_enclave_evidence(job_id, enclave, &nonce)?;
    let role = match enclave {
        JobEnclave::ParameterServer => Role::ParameterServer,
        JobEnclave::Worker(_) => Role::Worker,
    };
    verify(policy, &raw, role, &nonce, job_id)
}

/// [`start_training`] for a distributed job: attests the parameter server and every worker
/// against `policy` (the owner verifies each enclave itself), then seals to each its own
/// request: the data key and its rank to every worker, the exchange terms and the policy to
/// all. The ticket follows rank 0, whose model the job keeps.
#[allow(clippy::too_many_arguments)]
pub fn start_distributed_training(
    host: &HostClient,
    policy: &Policy,
    job_id: &str,
    program_id: &str,
    header: &DatasetHeader,
    data_key: &DataKey,
    terms: &TrainingTerms,
    distribution: &Distribution,
) -> Result<JobTicket, ClientError> {
    start_distributed_training_then(
        host,
        policy,
        job_id,
        program_id,
        header,
        data_key,
        terms,
        distribution,
        || Ok(()),
    )
}

/// [`start_distributed_training`] with `send_data` run once every enclave is attested and
/// before the key is released (see [`start_training_then`]).
#[allow(clippy::too_many_arguments)]
pub fn start_distributed_training_then(
    host: &HostClient,
    policy: &Policy,
    job_id: &str,
    program_id: &str,
    header: &DatasetHeader,
    data_key: &DataKey,
    terms: &TrainingTerms,
    distribution: &Distribution,
    send_data: impl FnOnce() -> Result<(), ClientError>,
) -> Result<JobTicket, ClientError> {
    distribution
        .exchange
        .validate()
        .map_err(ClientError::Input)?;
    let (template, query_token) = train_request(program_id, header, data_key, terms)?;
    let server = attest_job_enclave(host, policy, job_id, JobEnclave::ParameterServer)?;
    let server_request = ParameterServerRequest {
        exchange: distribution.exchange,
        peer_policy: distribution.peer_policy.clone(),
        time_budget_secs: terms.time_budget_secs,
        checkpoint_every: distribution.checkpoint_every,
    };
    let plaintext =
        postcard::to_allocvec(&server_request).map_err(|e| ClientError::Input(e.to_string()))?;
    let (parameter_server, _) = chiron_crypto::seal_to_enclave(
        &server.enclave_public_key(),
        PARAMETER_SERVER_INFO,
        job_id.as_bytes(),
        &plaintext,
    )?;
    let mut workers = Vec::new();
    let mut first_event_key = None;
    for rank in 0..distribution.exchange.workers {
        let enclave = attest_job_enclave(host, policy, job_id, JobEnclave::Worker(rank))?;
        let mut request = template.clone();
        request.distributed = Some(WorkerPlace {
            rank,
            exchange: distribution.exchange,
            peer_policy: distribution.peer_policy.clone(),
        });
        let (sealed, event_key) = seal_train_request(&enclave, job_id, &request)?;
        workers.push(sealed);
        first_event_key.get_or_insert(event_key);
    }
    let event_key = first_event_key.ok_or_else(|| ClientError::Input("no workers".into()))?;
    let body = postcard::to_allocvec(&SealedRequests {
        parameter_server,
        workers,
    })
    .map_err(|e| ClientError::Input(e.to_string()))?;
    send_data()?;
    host.start_job(job_id, &body)?;
    Ok(JobTicket {
        job_id: job_id.to_owned(),
        header: header.clone(),
        answers: terms.answers,
        event_key: event_key.to_bytes(),
        query_token,
        seed: Some(template.seed),
    })
}

/// `request` sealed to the attested `enclave` for `job_id`, and the key its events will
/// come back under.
fn seal_train_request(
    enclave: &VerifiedEnclave,
    job_id: &str,
    request: &TrainRequest,
) -> Result<(Vec<u8>, ResponseKey), ClientError> {
    let plaintext =
        postcard::to_allocvec(request).map_err(|e| ClientError::Input(e.to_string()))?;
    Ok(chiron_crypto::seal_to_enclave(
        &enclave.enclave_public_key(),
        TRAIN_INFO,
        job_id.as_bytes(),
        &plaintext,
    )?)
}

/// The request every training enclave of a job gets (before a worker's place is set), and
/// the query token whose digest it carries.
fn train_request(
    program_id: &str,
    header: &DatasetHeader,
    data_key: &DataKey,
    terms: &TrainingTerms,
) -> Result<(TrainRequest, [u8; 32]), ClientError> {
    let program_digest: [u8; 32] = hex::decode(program_id)
        .ok()
        .and_then(|d| d.try_into().ok())
        .ok_or_else(|| ClientError::Input(format!("`{program_id}` is not a program id")))?;
    if !terms.answers.is_valid() || terms.answers.width() > header.classes as usize {
        return Err(ClientError::Input(format!(
            "top-k must be between 1 and the class count (and at most {MAX_TOP_K})"
        )));
    }
    if let Some(private) = terms.private {
        private
            .validate()
            .map_err(|e| ClientError::Input(e.to_string()))?;
    }
    let seed = terms.seed.unwrap_or_else(fresh_nonce);
    let query_token = fresh_nonce();
    let request = TrainRequest {
        data_key: data_key.to_bytes(),
        program_digest,
        epochs: terms.epochs,
        time_budget_secs: terms.time_budget_secs,
        seed,
        answers: terms.answers,
        query_budget: terms.query_budget,
        query_token_digest: Sha256::digest(query_token).into(),
        private: terms.private,
        distributed: None,
        keep_last_save: terms.keep_last_save,
    };
    Ok((request, query_token))
}

/// Attests the job's training enclave and only then releases the data key to it, sealed to
/// the attested key. Returns the ticket to follow and later query the job.
pub fn start_training(
    host: &HostClient,
    policy: &Policy,
    job_id: &str,
    program_id: &str,
    header: &DatasetHeader,
    data_key: &DataKey,
    terms: &TrainingTerms,
) -> Result<JobTicket, ClientError> {
    start_training_then(
        host,
        policy,
        job_id,
        program_id,
        header,
        data_key,
        terms,
        || Ok(()),
    )
}

/// [`start_training`] with `send_data` run once the enclave is attested and before the key
/// is released: a job created on an upload still open ([`HostClient::create_upload`]) gets
/// its dataset only from an owner whose policy accepted its enclave, so a refused enclave
/// costs no upload.
#[allow(clippy::too_many_arguments)]
pub fn start_training_then(
    host: &HostClient,
    policy: &Policy,
    job_id: &str,
    program_id: &str,
    header: &DatasetHeader,
    data_key: &DataKey,
    terms: &TrainingTerms,
    send_data: impl FnOnce() -> Result<(), ClientError>,
) -> Result<JobTicket, ClientError> {
    let (request, query_token) = train_request(program_id, header, data_key, terms)?;
    let enclave = attest_training(host, policy, job_id)?;
    let (sealed, event_key) = seal_train_request(&enclave, job_id, &request)?;
    send_data()?;
    host.start_job(job_id, &sealed)?;
    Ok(JobTicket {
        job_id: job_id.to_owned(),
        header: header.clone(),
        answers: terms.answers,
        event_key: event_key.to_bytes(),
        query_token,
        seed: Some(request.seed),
    })
}

/// Where the owner's reading of a job's event stream stands: the next position, and whose
/// events it follows (the first rank 0's, under the owner's key, or those of the
/// replacement whose `Resumed` came last, under the key its salt derives). Start with
/// `EventCursor::default()` and hand the same cursor to every read of one stream.
#[derive(Clone, Debug, Default)]
pub struct EventCursor {
    next: u64,
    salt: Option<[u8; RESUME_SALT_LEN]>,
}

impl EventCursor {
    /// How many events have been read.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Opens the event at the cursor and moves past it. Under the owner's key while no
    /// replacement took over; otherwise (and from then on) only under the key derived
    /// from the salt the event carries: a new salt only on a `Resumed` event (a
    /// replacement taking over), and every other event under the salt of the last one. So
    /// the host can neither mix two enclaves' events nor go back to an earlier stream.
    fn open(
        &mut self,
        key: &ResponseKey,
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<OwnerEvent, ClientError> {
        let at = self.next;
        let tampered = || ClientError::TamperedEvent(at);
        let opened = |plaintext: Option<chiron_crypto::Zeroizing<Vec<u8>>>| {
            plaintext
                .and_then(|p| OwnerEvent::from_padded(&p).ok())
                .ok_or_else(tampered)
        };
        // Once a replacement took over, the owner's key opens nothing more: not tried.
        let under_owner_key = match self.salt {
            None => key.open(at, aad, ciphertext).ok(),
            Some(_) => None,
        };
        let event = match under_owner_key {
            Some(plaintext) => opened(Some(plaintext))?,
            None => {
                let (salt, sealed) = ciphertext
                    .split_first_chunk::<RESUME_SALT_LEN>()
                    .ok_or_else(tampered)?;
                let event = opened(key.resumed(salt).open(at, aad, sealed).ok())?;
                match event {
                    OwnerEvent::Resumed => self.salt = Some(*salt),
                    _ if self.salt == Some(*salt) => {}
                    _ => return Err(tampered()),
                }
                event
            }
        };
        self.next += 1;
        Ok(event)
    }
}

impl JobTicket {
    /// Decrypts the job's events from `cursor` on and moves it past them; each must be the
    /// next in sequence, of the stream the cursor follows ([`EventCursor`]), and a
    /// succeeded job's stream must end with its `Finished` event. A caller that reads the
    /// stream in slices and sees the job succeed with nothing new after an earlier slice must
    /// itself check that it saw `Finished` (see [`ClientError::WithheldEvents`]).
    pub fn events(
        &self,
        host: &HostClient,
        cursor: &mut EventCursor,
    ) -> Result<(chiron_proto::api::JobState, Vec<OwnerEvent>), ClientError> {
        use base64::Engine as _;
        let key = ResponseKey::from_bytes(self.event_key);
        let from = cursor.position();
        let slice = host.job_events(&self.job_id, from)?;
        let mut events = Vec::with_capacity(slice.events.len());
        for (seq, text) in &slice.events {
            let ciphertext = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| ClientError::TamperedEvent(*seq))?;
            // Opening at the expected position (not the claimed one) catches reordering,
            // dropping and replay by the host.
            events.push(cursor.open(&key, self.job_id.as_bytes(), &ciphertext)?);
        }
        // A successful job's stream ends with its `Finished` event (then, for a private job,
        // padding): a slice that reaches the end and lacks it was cut short by the host. A
        // slice of padding alone follows an earlier one that must have held it.
        let last_real = events
            .iter()
            .rev()
            .find(|e| !matches!(e, OwnerEvent::Padding));
        let cut_short = match last_real {
            Some(last) => !matches!(last, OwnerEvent::Finished { .. }),
            None => from == 0,
        };
        if slice.state == chiron_proto::api::JobState::Succeeded && cut_short {
            return Err(ClientError::WithheldEvents);
        }
        Ok((slice.state, events))
    }
}

/// An attested session with the query enclave serving a job's model.
///
/// The host stops a query enclave that sat idle (and may restart one that failed); a query
/// it answers with "no query enclave is running" makes the session attest the model's next
/// enclave against the same policy and send the query once more, sealed to that enclave.
pub struct QuerySession<'a> {
    host: &'a HostClient,
    ticket: &'a JobTicket,
    policy: Policy,
    enclave: std::cell::RefCell<VerifiedEnclave>,
}

impl<'a> QuerySession<'a> {
    /// Attests the query enclave of `ticket`'s model against `policy`.
    pub fn open(
        host: &'a HostClient,
        policy: &Policy,
        ticket: &'a JobTicket,
    ) -> Result<Self, ClientError> {
        let enclave = Self::attest(host, policy, ticket)?;
        Ok(Self {
            host,
            ticket,
            policy: policy.clone(),
            enclave: std::cell::RefCell::new(enclave),
        })
    }

    fn attest(
        host: &HostClient,
        policy: &Policy,
        ticket: &JobTicket,
    ) -> Result<VerifiedEnclave, ClientError> {
        let nonce = fresh_nonce();
        let raw = host.model_evidence(&ticket.job_id, &nonce)?;
        verify(policy, &raw, Role::Query, &nonce, &ticket.job_id)
    }

    /// Queries `count` inputs (`count × feature_len` values, same layout and scaling as the
    /// training features); returns, per input, the class indices the job's answer policy
    /// allows, best first.
    pub fn query(&self, count: usize, inputs: Vec<f32>) -> Result<QueryAnswer, ClientError> {
        let feature_len = self.ticket.header.feature_len();
        if count == 0 || inputs.len() != count * feature_len {
            return Err(ClientError::Input(format!(
                "{} values do not make {count} inputs of {feature_len}",
                inputs.len()
            )));
        }
        let request = QueryRequest {
            token: self.ticket.query_token,
            count: count as u32,
            inputs,
        };
        let plaintext =
            postcard::to_allocvec(&request).map_err(|e| ClientError::Input(e.to_string()))?;
        let send = |enclave: &VerifiedEnclave| {
            let (sealed, key) = chiron_crypto::seal_to_enclave(
                &enclave.enclave_public_key(),
                QUERY_INFO,
                self.ticket.job_id.as_bytes(),
                &plaintext,
            )?;
            Ok::<_, ClientError>((self.host.query(&self.ticket.job_id, &sealed), key))
        };
        let (mut reply, mut key) = send(&self.enclave.borrow())?;
        if matches!(reply, Err(ClientError::Host { status: 409, .. })) {
            let enclave = Self::attest(self.host, &self.policy, self.ticket)?;
            (reply, key) = send(&enclave)?;
            *self.enclave.borrow_mut() = enclave;
        }
        let encrypted = reply?;
        let answer = key
            .open(0, ANSWER_AAD, &encrypted)
            .map_err(|_| ClientError::TamperedAnswer)?;
        let answer = QueryAnswer::decode(&answer, count, self.ticket.answers)
            .ok_or(ClientError::TamperedAnswer)?;
        if answer.is_unanswered() {
            return Err(ClientError::Unanswered);
        }
        Ok(answer)
    }

    /// Queries every input of `features` (whole inputs, as for [`QuerySession::query`]) in
    /// queries of at most `batch`, calling `progress` with the inputs answered so far after
    /// each; returns all the answers, in input order.
    pub fn query_all(
        &self,
        features: &[f32],
        batch: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<QueryAnswer, ClientError> {
        let feature_len = self.ticket.header.feature_len().max(1);
        let n = features.len() / feature_len;
        let batch = batch.max(1);
        let width = self.ticket.answers.width();
        let mut all = QueryAnswer {
            classes: Vec::with_capacity(n * width),
            scores: Vec::with_capacity(if self.ticket.answers.has_scores() {
                n * width
            } else {
                0
            }),
        };
        for start in (0..n).step_by(batch) {
            let end = (start + batch).min(n);
            let values = features[start * feature_len..end * feature_len].to_vec();
            let answer = self.query(end - start, values)?;
            all.classes.extend_from_slice(&answer.classes);
            all.scores.extend_from_slice(&answer.scores);
            progress(end);
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use chiron_proto::dataset::{DatasetKind, ElementEncoding};

    use super::*;

    fn fashion(train_count: u32, valid_count: u32) -> DatasetHeader {
        DatasetHeader {
            kind: DatasetKind::Image,
            dims: vec![1, 28, 28],
            encoding: ElementEncoding::U8Unit,
            classes: 10,
            train_count,
            valid_count,
        }
    }

    #[test]
    fn a_replacement_s_events_open_at_their_position_under_its_salted_key_only() {
        let owner = ResponseKey::from_bytes([7; 32]);
        let sealed = |key: &ResponseKey, at: u64, event: &OwnerEvent| {
            key.seal(at, b"job", &event.to_padded())
        };
        let salted = |salt: [u8; RESUME_SALT_LEN], at: u64, event: &OwnerEvent| {
            [salt.as_slice(), &sealed(&owner.resumed(&salt), at, event)].concat()
        };
        let (first, second) = ([9u8; RESUME_SALT_LEN], [10u8; RESUME_SALT_LEN]);
        let metric = OwnerEvent::CutShort;
        // Rank 0's events 0 and 1, then its replacement's from 2 on.
        let stream = [
            sealed(&owner, 0, &metric),
            sealed(&owner, 1, &metric),
            salted(first, 2, &OwnerEvent::Resumed),
            salted(first, 3, &metric),
        ];
        let read = |events: &[Vec<u8>]| {
            let mut cursor = EventCursor::default();
            events
                .iter()
                .map(|e| cursor.open(&owner, b"job", e))
                .collect::<Result<Vec<_>, _>>()
        };
        assert_eq!(
            read(&stream).expect("authentic"),
            vec![
                metric.clone(),
                metric.clone(),
                OwnerEvent::Resumed,
                metric.clone()
            ]
        );
        let refused = |events: &[Vec<u8>], what: &str| {
            assert!(
                matches!(read(events), Err(ClientError::TamperedEvent(_))),
                "{what}"
            );
        };
        // Only at its position, only for its job, only with the salt it was sealed under.
        refused(&[stream[0].clone(), stream[2].clone()], "moved");
        let mut flipped = stream.clone();
        flipped[3][0] ^= 1;
        refused(&flipped, "another salt");
        let mut cursor = EventCursor::default();
        assert!(cursor.open(&owner, b"another job", &stream[0]).is_err());
        // No replacement's event without its Resumed, no going back to the owner's key after
        // it, and no other replacement's events without a Resumed of their own.
        refused(
            &[
                stream[0].clone(),
                stream[1].clone(),
                salted(first, 2, &metric),
            ],
            "no Resumed",
        );
        refused(
            &[
                stream[0].clone(),
                stream[1].clone(),
                stream[2].clone(),
                sealed(&owner, 3, &metric),
            ],
            "back to the owner's key",
        );
        refused(
            &[
                stream[0].clone(),
                stream[1].clone(),
                stream[2].clone(),
                salted(second, 3, &metric),
            ],
            "another replacement's event",
        );
        // A second replacement taking over says so.
        let again = [
            stream[0].clone(),
            stream[1].clone(),
            stream[2].clone(),
            salted(second, 3, &OwnerEvent::Resumed),
            salted(second, 4, &metric),
        ];
        assert_eq!(read(&again).expect("authentic").len(), 5);
    }

    #[test]
    fn exchange_messages_are_the_declared_size_or_else_the_model_size() {
        let declared = DeclaredNeeds {
            model_mib: NonZeroU32::new(4),
            exchange_kib: NonZeroU32::new(1648),
            ..DeclaredNeeds::default()
        };
        assert_eq!(exchange_message_kib(&declared, 5), 1648);
        assert_eq!(exchange_message_kib(&DeclaredNeeds::default(), 5), 5 * 1024);
        let huge = DeclaredNeeds {
            exchange_kib: NonZeroU32::new(u32::MAX),
            ..DeclaredNeeds::default()
        };
        assert_eq!(
            exchange_message_kib(&huge, 5),
            chiron_proto::owner::ExchangeTerms::MAX_MESSAGE_KIB
        );
    }

    #[test]
    fn private_jobs_are_sized_from_the_header_and_the_declared_needs() {
        // The demo: the CNN's manifest on all of Fashion-MNIST, 3 epochs.
        let cnn = DeclaredNeeds {
            memory_mib: NonZeroU32::new(512),
            model_mib: NonZeroU32::new(4),
            ms_per_1000_examples_epoch: NonZeroU32::new(1200),
            exchange_kib: NonZeroU32::new(1648),
        };
        let sizing = size_private_job(&fashion(57_000, 3_000), &cnn, 3).expect("sized");
        // 1.5 × 1.2 s × 60 × 3 = 324 s, + 15 s, + 46 MiB / 10 (60 000 × 788 bytes).
        assert_eq!(sizing.time_budget_secs, 324 + 15 + 5);
        assert_eq!(sizing.terms.memory_mib, 512 + 256 + 2 * 46);
        assert_eq!(sizing.terms.model_mib, 5);
        assert_eq!(sizing.terms.answer_ms, DEFAULT_ANSWER_MS);
        assert_eq!(sizing.terms.validate(), Ok(()));

        // Nothing declared: the fixed defaults (and the dataset's memory).
        let sizing =
            size_private_job(&fashion(100, 0), &DeclaredNeeds::default(), 1).expect("sized");
        assert_eq!(sizing.time_budget_secs, DEFAULT_TIME_BUDGET_SECS);
        assert_eq!(sizing.terms.memory_mib, DEFAULT_MEMORY_MIB + 256 + 2);
        assert_eq!(sizing.terms.model_mib, DEFAULT_MODEL_MIB);

        // A huge declaration is clamped to what a frame carries.
        let huge = DeclaredNeeds {
            model_mib: NonZeroU32::new(u32::MAX),
            ..DeclaredNeeds::default()
        };
        // A slow program's answers get the time its declared speed needs for a default
        // query: the vision transformer's 8 s per 1000 examples, 2 s for 250.
        let vit = DeclaredNeeds {
            ms_per_1000_examples_epoch: NonZeroU32::new(8000),
            ..DeclaredNeeds::default()
        };
        let sizing = size_private_job(&fashion(100, 0), &vit, 1).expect("sized");
        assert_eq!(sizing.terms.answer_ms, 2000);
        assert_eq!(sizing.terms.validate(), Ok(()));

        let sizing = size_private_job(&fashion(100, 0), &huge, 1).expect("sized");
        assert_eq!(sizing.terms.model_mib, 63);
        assert_eq!(sizing.terms.validate(), Ok(()));
        assert!(
            size_private_job(&fashion(0, 0), &cnn, 1).is_err(),
            "no examples"
        );
    }
}
