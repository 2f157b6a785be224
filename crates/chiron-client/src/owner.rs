//! The data owner's side of the protocol: attest before any secret leaves, then train and
//! query through sealed messages only.

use chiron_crypto::{DataKey, Policy, ResponseKey, VerifiedEnclave};
use chiron_proto::dataset::DatasetHeader;
use chiron_proto::evidence::{Evidence, Role};
pub use chiron_proto::owner::PrivateTerms;
use chiron_proto::owner::{
    AnswerPolicy, OwnerEvent, QUERY_INFO, QueryAnswer, QueryRequest, TRAIN_INFO, TrainRequest,
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
    /// Answer granularity for the trained model.
    pub answers: AnswerPolicy,
    /// Queries allowed per query-enclave session.
    pub query_budget: u64,
    /// Seed of the runtime's random stream (initialisation, shuffling); `None` draws a fresh
    /// one. Fixing it makes a run reproducible: the same seed, data and program give the same
    /// model, in the sandbox or natively.
    pub seed: Option<[u8; 32]>,
    /// Private mode: the platform sees the declared time budget, a fixed number of events
    /// and the declared peak memory, whatever the data (see [`PrivateTerms`]). `None` reports
    /// progress live, at the price of disclosing run time, event count and peak memory.
    pub private: Option<PrivateTerms>,
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
}

impl std::fmt::Debug for JobTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobTicket")
            .field("job_id", &self.job_id)
            .finish_non_exhaustive()
    }
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
    Ok(chiron_crypto::verify(
        policy,
        &evidence,
        role,
        nonce,
        &context_of(job_id),
    )?)
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
    let program_digest: [u8; 32] = hex::decode(program_id)
        .ok()
        .and_then(|d| d.try_into().ok())
        .ok_or_else(|| ClientError::Input(format!("`{program_id}` is not a program id")))?;
    if terms.answers.width() == 0 || terms.answers.width() > header.classes as usize {
        return Err(ClientError::Input(
            "top-k must be between 1 and the class count".into(),
        ));
    }
    if let Some(private) = terms.private {
        private
            .validate()
            .map_err(|e| ClientError::Input(e.to_string()))?;
    }
    let enclave = attest_training(host, policy, job_id)?;
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
    };
    let plaintext =
        postcard::to_allocvec(&request).map_err(|e| ClientError::Input(e.to_string()))?;
    let (sealed, event_key) = chiron_crypto::seal_to_enclave(
        &enclave.enclave_public_key(),
        TRAIN_INFO,
        job_id.as_bytes(),
        &plaintext,
    )?;
    host.start_job(job_id, &sealed)?;
    Ok(JobTicket {
        job_id: job_id.to_owned(),
        header: header.clone(),
        answers: terms.answers,
        event_key: event_key.to_bytes(),
        query_token,
    })
}

impl JobTicket {
    /// Decrypts the job's events from `from` on; each must be the next in sequence, and a
    /// succeeded job's stream must end with its `Finished` event. A caller that reads the
    /// stream in slices and sees the job succeed with nothing new after an earlier slice must
    /// itself check that it saw `Finished` (see [`ClientError::WithheldEvents`]).
    pub fn events(
        &self,
        host: &HostClient,
        from: u64,
    ) -> Result<(chiron_proto::api::JobState, Vec<OwnerEvent>), ClientError> {
        use base64::Engine as _;
        let key = ResponseKey::from_bytes(self.event_key);
        let slice = host.job_events(&self.job_id, from)?;
        let mut events = Vec::with_capacity(slice.events.len());
        for (i, (seq, text)) in slice.events.iter().enumerate() {
            let expected = from + i as u64;
            let ciphertext = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| ClientError::TamperedEvent(*seq))?;
            // Opening at the expected position (not the claimed one) catches reordering,
            // dropping and replay by the host.
            let plaintext = key
                .open(expected, self.job_id.as_bytes(), &ciphertext)
                .map_err(|_| ClientError::TamperedEvent(expected))?;
            let event = OwnerEvent::from_padded(&plaintext)
                .map_err(|_| ClientError::TamperedEvent(expected))?;
            events.push(event);
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
pub struct QuerySession<'a> {
    host: &'a HostClient,
    ticket: &'a JobTicket,
    enclave: VerifiedEnclave,
}

impl<'a> QuerySession<'a> {
    /// Attests the query enclave of `ticket`'s model against `policy`.
    pub fn open(
        host: &'a HostClient,
        policy: &Policy,
        ticket: &'a JobTicket,
    ) -> Result<Self, ClientError> {
        let nonce = fresh_nonce();
        let raw = host.model_evidence(&ticket.job_id, &nonce)?;
        let enclave = verify(policy, &raw, Role::Query, &nonce, &ticket.job_id)?;
        Ok(Self {
            host,
            ticket,
            enclave,
        })
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
        let (sealed, key) = chiron_crypto::seal_to_enclave(
            &self.enclave.enclave_public_key(),
            QUERY_INFO,
            self.ticket.job_id.as_bytes(),
            &plaintext,
        )?;
        let encrypted = self.host.query(&self.ticket.job_id, &sealed)?;
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
}
