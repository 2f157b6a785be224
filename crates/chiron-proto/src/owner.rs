//! Messages between the data owner and an enclave. They only ever travel encrypted (HPKE to
//! the attested enclave key one way, the owner's response key the other), so the host sees
//! their ciphertext and nothing else.

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::wire::EVENT_PLAINTEXT_LEN;

/// HPKE `info` for a training request.
pub const TRAIN_INFO: &[u8] = b"chiron/v1 train request";
/// HPKE `info` for a parameter server's request.
pub const PARAMETER_SERVER_INFO: &[u8] = b"chiron/v1 parameter server request";
/// HPKE `info` for a query.
pub const QUERY_INFO: &[u8] = b"chiron/v1 query";
/// Largest number of inputs in one query.
pub const MAX_QUERY_BATCH: u32 = 1024;
/// Largest top-k an answer may carry: the owner's terms, a program's manifest and the query
/// enclave all refuse a larger one.
pub const MAX_TOP_K: u8 = 10;

/// The granularity of query answers, fixed when training starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AnswerPolicy {
    /// The most likely class only.
    Label,
    /// The `k` most likely classes, best first, without scores.
    TopK(u8),
    /// The `k` most likely classes, best first, each with its probability: the softmax of
    /// the program's scores for the input (only where the program's manifest allows scores).
    Scored(u8),
}

impl AnswerPolicy {
    /// The policy an owner asks for with a top-k (`None`: the label only) and with or
    /// without scores.
    pub fn asked(top_k: Option<u8>, scores: bool) -> Self {
        match (top_k, scores) {
            (None, false) => Self::Label,
            (Some(k), false) => Self::TopK(k),
            (k, true) => Self::Scored(k.unwrap_or(1)),
        }
    }

    /// Classes per answered input.
    pub fn width(self) -> usize {
        match self {
            Self::Label => 1,
            Self::TopK(k) | Self::Scored(k) => usize::from(k),
        }
    }

    /// Whether answers carry a probability with each class.
    pub fn has_scores(self) -> bool {
        matches!(self, Self::Scored(_))
    }

    /// Whether the policy can be served: a top-k between 1 and [`MAX_TOP_K`].
    pub fn is_valid(self) -> bool {
        match self {
            Self::Label => true,
            Self::TopK(k) | Self::Scored(k) => (1..=MAX_TOP_K).contains(&k),
        }
    }
}

impl std::fmt::Display for AnswerPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Label => f.write_str("label only"),
            Self::TopK(k) => write!(f, "top-{k}"),
            Self::Scored(k) => write!(f, "top-{k} with scores"),
        }
    }
}

/// What the owner asks a training enclave to do (sent sealed).
///
/// It carries the owner's data key, so it is wiped when dropped (the key, the seed, the digests
/// and the figures; the answer policy and the private terms are not secrets), and its `Debug`
/// output leaves the key, seed and digests out.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct TrainRequest {
    /// Key of the encrypted dataset.
    pub data_key: [u8; 32],
    /// SHA-256 of the provider program the owner agreed to; the enclave refuses another.
    pub program_digest: [u8; 32],
    /// Epochs the program may use.
    pub epochs: u32,
    /// Wall-clock budget in seconds; the program is stopped when it runs out.
    pub time_budget_secs: u32,
    /// Seed of the runtime's random stream.
    pub seed: [u8; 32],
    /// Granularity of answers the query enclave will give: at most the program manifest's
    /// finest (`crate::manifest`), or the enclave refuses the terms.
    #[zeroize(skip)]
    pub answers: AnswerPolicy,
    /// Inputs the model may answer over its whole life, across query-enclave restarts: at
    /// most the program manifest's maximum, or the enclave refuses the terms.
    pub query_budget: u64,
    /// SHA-256 of the secret that authorises queries on the resulting model.
    pub query_token_digest: [u8; 32],
    /// Private mode: what the platform can measure of the job is fixed by these terms, not
    /// by the data. `None`: progress is reported live, and run time, event count and peak
    /// memory are visible to the platform.
    #[zeroize(skip)]
    pub private: Option<PrivateTerms>,
    /// A worker of a distributed job: its place in it. `None`: the job's only training
    /// enclave.
    #[zeroize(skip)]
    pub distributed: Option<WorkerPlace>,
    /// When the time budget runs out after the program saved a model (programs save at each
    /// epoch's end), that model is sealed and the job succeeds, with
    /// [`OwnerEvent::CutShort`] said first. `false`: the job fails instead.
    pub keep_last_save: bool,
}

/// A worker's place in a distributed job (in its sealed [`TrainRequest`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerPlace {
    /// This worker's rank, `0..workers`: which shard of the training examples it reads.
    /// Rank 0's parameters start the job and its model is the one sealed for queries.
    pub rank: u32,
    /// The job's public exchange terms, the same in every enclave's request.
    pub exchange: ExchangeTerms,
    /// The parameter servers this worker accepts, as a policy file
    /// (`chiron_attest::Policy::parse_spec`): the owner's own policy.
    pub peer_policy: String,
}

/// What the owner asks a distributed job's parameter server to do (sent sealed). It holds
/// no data key: the server sees gradients and parameters, never examples.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParameterServerRequest {
    /// The job's public exchange terms.
    pub exchange: ExchangeTerms,
    /// The workers this server accepts, as a policy file: the owner's own policy.
    pub peer_policy: String,
    /// The job's time budget in seconds (the server gives up on its workers after it).
    pub time_budget_secs: u32,
    /// Every this many rounds, the server seals its state (parameters, optimizer state,
    /// round) for the host to keep, so that a server lost mid-job is replaced losing at most
    /// this many rounds; also once before the first round, so that a server lost before one
    /// fell due is replaced too. 0: never (a lost server fails the job). A paced exchange counts
    /// ticks instead (its rounds follow the program; a round takes at least a tick), and its
    /// checkpoints all have one size.
    pub checkpoint_every: u32,
}

/// The public shape of a distributed job's parameter traffic: the platform may see these,
/// and nothing else about the exchange depends on anything but them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeTerms {
    /// Training enclaves, 2 or more.
    pub workers: u32,
    /// Size of every exchange message in either direction, in KiB: the largest the model's
    /// parameters (and so its gradients) may take.
    pub message_kib: u32,
    /// A paced exchange (required of a private job): every worker sends one message per
    /// tick and the server answers each at a fixed point of the tick, whatever the program
    /// is doing. `None`: messages go when the program steps (a live job).
    pub pace: Option<Pace>,
    /// How the server combines the workers' steps.
    pub rounds: Rounds,
}

/// How a parameter server combines its workers' steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rounds {
    /// Every step waits for every worker still training; the server averages their
    /// gradients and applies one update.
    #[default]
    Synchronous,
    /// Each worker's step is applied as it comes, unless the parameters it was computed on
    /// are more than `max_staleness` updates old (then it is dropped, and the worker gets the
    /// current parameters). Unpaced exchanges only.
    Asynchronous {
        /// Updates that may have happened since the worker got its parameters.
        max_staleness: u32,
    },
}

/// The public schedule of a paced exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pace {
    /// Time between ticks, in milliseconds.
    pub tick_ms: u32,
    /// Ticks in the job: every connection carries exactly this many messages each way.
    pub ticks: u32,
}

impl Pace {
    /// The shortest tick.
    pub const MIN_TICK_MS: u32 = 10;

    /// The pace for a job of `time_budget_secs` with ticks of `tick_ms`: as many ticks as
    /// fit in nine tenths of the budget (the rest is the job's start and its sealing).
    pub fn for_budget(time_budget_secs: u32, tick_ms: u32) -> Self {
        let usable_ms = u64::from(time_budget_secs) * 900;
        Self {
            tick_ms,
            ticks: u32::try_from(usable_ms / u64::from(tick_ms.max(1))).unwrap_or(u32::MAX),
        }
    }

    /// How long the schedule lasts.
    pub fn duration(&self) -> std::time::Duration {
        std::time::Duration::from_millis(u64::from(self.tick_ms) * u64::from(self.ticks))
    }
}

impl ExchangeTerms {
    /// Most workers a job may have.
    pub const MAX_WORKERS: u32 = 64;
    /// Largest exchange message, in KiB (1 GiB).
    pub const MAX_MESSAGE_KIB: u32 = 1 << 20;

    /// Every message's size in bytes.
    pub fn message_bytes(&self) -> usize {
        self.message_kib as usize * 1024
    }

    /// Checks the figures are in range.
    pub fn validate(&self) -> Result<(), String> {
        if !(2..=Self::MAX_WORKERS).contains(&self.workers) {
            return Err(format!(
                "a distributed job has 2 to {} workers, not {}",
                Self::MAX_WORKERS,
                self.workers
            ));
        }
        if !(1..=Self::MAX_MESSAGE_KIB).contains(&self.message_kib) {
            return Err(format!(
                "exchange messages are 1 KiB to 1 GiB, not {} KiB",
                self.message_kib
            ));
        }
        if self.pace.is_some() && self.rounds != Rounds::Synchronous {
            return Err("a paced exchange runs synchronous rounds only".into());
        }
        if let Some(pace) = self.pace
            && (pace.tick_ms < Pace::MIN_TICK_MS || pace.ticks == 0)
        {
            return Err(format!(
                "a paced exchange needs ticks of at least {} ms and at least one tick",
                Pace::MIN_TICK_MS
            ));
        }
        Ok(())
    }
}

/// Terms of a private job. The enclave holds every event until the time budget (counted from
/// the job's start) has passed, then releases exactly [`HELD_EVENT_SLOTS`] events (padded
/// with [`OwnerEvent::Padding`]) and ends the job; before that it raises its peak resident
/// memory to exactly `memory_mib` and pads the sealed model to exactly `model_mib`. The
/// platform then sees the same event count, sizes, completion time, peak memory and model size
/// whatever the data made the program do, at the cost of no progress reports during training,
/// a job that always lasts its budget, and memory and storage held to the declared figures. A
/// job whose peak memory or model exceeds its figure fails. The model's query enclave then
/// answers every query exactly `answer_ms` after it arrived; a query the program cannot answer
/// in that time is unanswered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivateTerms {
    /// The training enclave's declared peak resident memory, in MiB.
    pub memory_mib: u32,
    /// The sealed model's declared size, in MiB (below the 64 MiB frame limit).
    pub model_mib: u32,
    /// How long after its arrival every query is answered, in milliseconds (at least 1).
    pub answer_ms: u32,
}

impl PrivateTerms {
    /// The declared peak in bytes.
    pub fn memory_bytes(&self) -> u64 {
        u64::from(self.memory_mib) << 20
    }

    /// The declared sealed-model plaintext size in bytes.
    pub fn model_bytes(&self) -> usize {
        (self.model_mib as usize) << 20
    }

    /// Checks the figures: every one at least 1, and a model that fits in one frame (with a
    /// little overhead beyond its size). Both the owner's client and the enclave check.
    pub fn validate(&self) -> Result<(), PrivateTermsError> {
        if self.model_mib == 0 || self.model_bytes() >= crate::wire::MAX_FRAME {
            return Err(PrivateTermsError::ModelSize);
        }
        if self.memory_mib == 0 || self.answer_ms == 0 {
            return Err(PrivateTermsError::Zero);
        }
        Ok(())
    }
}

/// Private terms that cannot be honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PrivateTermsError {
    /// The model size is 0 or would not fit in one frame.
    #[error("a private job's model size must be 1 to {} MiB", (crate::wire::MAX_FRAME >> 20) - 1)]
    ModelSize,
    /// The memory budget or the answer time is 0.
    #[error("a private job's memory budget and answer time must be at least 1")]
    Zero,
}

/// Events released by a private job, always exactly this many. A job with more
/// events keeps the first `HELD_EVENT_SLOTS - 1` and its final one.
pub const HELD_EVENT_SLOTS: usize = 256;

impl std::fmt::Debug for TrainRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainRequest")
            .field("epochs", &self.epochs)
            .field("time_budget_secs", &self.time_budget_secs)
            .field("answers", &self.answers)
            .field("private", &self.private)
            .field("keep_last_save", &self.keep_last_save)
            .finish_non_exhaustive()
    }
}

/// One event on the owner's encrypted stream. Serialised and zero-padded to
/// [`EVENT_PLAINTEXT_LEN`] before encryption.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OwnerEvent {
    /// The enclave decrypted the dataset and started the program.
    Started {
        /// Training examples.
        train_count: u32,
        /// Validation examples.
        valid_count: u32,
    },
    /// A metric the program reported.
    Metric {
        /// Its name (at most 32 bytes).
        name: String,
        /// Epoch it belongs to.
        epoch: u32,
        /// Its value.
        value: f32,
    },
    /// Training succeeded and the sealed model is stored.
    Finished {
        /// Parameters in the model.
        parameters: u64,
        /// The training enclave's peak resident memory in MiB (before a private job's padding):
        /// what to declare for a private run of the same job.
        peak_memory_mib: u32,
    },
    /// The job failed; the text is for the owner only.
    Failed {
        /// What went wrong (truncated to fit the event).
        detail: String,
    },
    /// Fills a private job's event stream to its fixed length; carries nothing.
    Padding,
    /// The time budget ran out before the program finished: the model sealed is the one it
    /// saved last (said just before [`OwnerEvent::Finished`]).
    CutShort,
    /// Rank 0 of a distributed (live) job was lost and a replacement took over: the events
    /// that follow are the replacement's, its program started again from the parameter
    /// server's current parameters (its epochs count from the first again). Sent under a key
    /// derived from the owner's and a salt in clear before the ciphertext
    /// (`ResponseKey::resumed` in `chiron-crypto`).
    Resumed,
    /// How far the program says an epoch is (live jobs only, at most one a second).
    Progress {
        /// The epoch, from 0.
        epoch: u32,
        /// Steps done in it.
        step: u32,
        /// Steps in it.
        steps: u32,
    },
}

impl OwnerEvent {
    /// Encodes and pads the event to the fixed event size, truncating a long failure text.
    pub fn to_padded(&self) -> Vec<u8> {
        let mut event = self.clone();
        loop {
            if let Ok(mut bytes) = postcard::to_allocvec(&event)
                && bytes.len() <= EVENT_PLAINTEXT_LEN
            {
                bytes.resize(EVENT_PLAINTEXT_LEN, 0);
                return bytes;
            }
            match &mut event {
                Self::Failed { detail } if !detail.is_empty() => {
                    let mut cut = detail.len().saturating_sub(16);
                    while !detail.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    detail.truncate(cut);
                }
                Self::Metric { name, .. } if !name.is_empty() => name.clear(),
                _ => {
                    event = Self::Failed {
                        detail: String::new(),
                    }
                }
            }
        }
    }

    /// Decodes a padded event.
    pub fn from_padded(bytes: &[u8]) -> Result<Self, postcard::Error> {
        if bytes.len() != EVENT_PLAINTEXT_LEN {
            return Err(postcard::Error::DeserializeUnexpectedEnd);
        }
        postcard::take_from_bytes(bytes).map(|(event, _)| event)
    }
}

/// A query (sent sealed to the query enclave).
#[derive(Clone, Serialize, Deserialize)]
pub struct QueryRequest {
    /// The secret whose digest the training request named.
    pub token: [u8; 32],
    /// Number of inputs.
    pub count: u32,
    /// `count × feature_len` values, in the dataset's layout and encoding as `f32`.
    pub inputs: Vec<f32>,
}

/// A query's answer: for each input, [`AnswerPolicy::width`] class indices, best first, and
/// under [`AnswerPolicy::Scored`] as many probabilities. Always `count × width` entries of
/// four bytes each (twice that with scores), so its encoded size depends only on public
/// values (a varint encoding would reveal which classes were predicted). An entry
/// [`QueryAnswer::NO_CLASS`] pads a top-k row when there are fewer than k classes (its score
/// is 0); an answer made of nothing else means the program failed on the query, which the
/// platform must not tell from a success (so it is an answer like any other, not an error).
#[derive(Clone, Debug, PartialEq)]
pub struct QueryAnswer {
    /// Class indices, row-major.
    pub classes: Vec<u32>,
    /// The probability of each entry of `classes`, under [`AnswerPolicy::Scored`]; empty
    /// otherwise.
    pub scores: Vec<f32>,
}

impl QueryAnswer {
    /// Marks "no class" in an answer.
    pub const NO_CLASS: u32 = u32::MAX;

    /// The answer to a query the program failed on.
    pub fn unanswered(count: usize, policy: AnswerPolicy) -> Self {
        let entries = count * policy.width();
        Self {
            classes: vec![Self::NO_CLASS; entries],
            scores: if policy.has_scores() {
                vec![0.0; entries]
            } else {
                Vec::new()
            },
        }
    }

    /// Whether this is [`QueryAnswer::unanswered`].
    pub fn is_unanswered(&self) -> bool {
        self.classes.iter().all(|&c| c == Self::NO_CLASS)
    }

    /// Fixed-width little-endian encoding: the classes, then the scores.
    pub fn encode(&self) -> Vec<u8> {
        self.classes
            .iter()
            .flat_map(|c| c.to_le_bytes())
            .chain(self.scores.iter().flat_map(|s| s.to_le_bytes()))
            .collect()
    }

    /// Decodes an answer for `count` inputs under `policy`.
    pub fn decode(bytes: &[u8], count: usize, policy: AnswerPolicy) -> Option<Self> {
        let entries = count.checked_mul(policy.width())?;
        let words = if policy.has_scores() {
            entries.checked_mul(2)?
        } else {
            entries
        };
        if bytes.len() != words.checked_mul(4)? {
            return None;
        }
        let mut words = bytes.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]);
        let classes = words
            .by_ref()
            .take(entries)
            .map(u32::from_le_bytes)
            .collect();
        let scores = words.map(f32::from_le_bytes).collect();
        Some(Self { classes, scores })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_train_request_wipes_its_key_and_hides_it() {
        fn wiped_on_drop<T: ZeroizeOnDrop>(_: &T) {}
        let mut request = TrainRequest {
            data_key: [0xa5; 32],
            program_digest: [1; 32],
            epochs: 2,
            time_budget_secs: 3,
            seed: [0x5a; 32],
            answers: AnswerPolicy::TopK(2),
            query_budget: 4,
            query_token_digest: [5; 32],
            private: None,
            distributed: None,
            keep_last_save: true,
        };
        let debug = format!("{request:?}");
        assert!(!debug.contains("165") && !debug.contains("a5"), "{debug}");
        wiped_on_drop(&request);
        // What dropping it does.
        request.zeroize();
        assert_eq!(request.data_key, [0; 32]);
        assert_eq!(request.seed, [0; 32]);
        assert_eq!(request.answers, AnswerPolicy::TopK(2));
    }

    #[test]
    fn events_have_one_size_whatever_their_content() {
        let short = OwnerEvent::Finished {
            parameters: 1,
            peak_memory_mib: 2,
        }
        .to_padded();
        let long = OwnerEvent::Failed {
            detail: "é".repeat(1000),
        }
        .to_padded();
        assert_eq!(short.len(), EVENT_PLAINTEXT_LEN);
        assert_eq!(long.len(), EVENT_PLAINTEXT_LEN);
        assert_eq!(
            OwnerEvent::from_padded(&short).expect("decodes"),
            OwnerEvent::Finished {
                parameters: 1,
                peak_memory_mib: 2,
            }
        );
        assert!(matches!(
            OwnerEvent::from_padded(&long),
            Ok(OwnerEvent::Failed { .. })
        ));
    }

    #[test]
    fn answers_decode_only_at_their_exact_size() {
        let answer = QueryAnswer {
            classes: vec![1, 0, 2, 2, 1, 0],
            scores: Vec::new(),
        };
        let bytes = answer.encode();
        assert_eq!(bytes.len(), 6 * 4);
        assert_eq!(
            QueryAnswer::decode(&bytes, 2, AnswerPolicy::TopK(3)),
            Some(answer)
        );
        assert_eq!(QueryAnswer::decode(&bytes, 3, AnswerPolicy::TopK(3)), None);
        assert_eq!(
            QueryAnswer::decode(&bytes, 2, AnswerPolicy::Scored(3)),
            None
        );
        // With scores: the classes, then a probability for each.
        let scored = QueryAnswer {
            classes: vec![1, 0, 2, QueryAnswer::NO_CLASS],
            scores: vec![0.75, 0.25, 1.0, 0.0],
        };
        let bytes = scored.encode();
        assert_eq!(bytes.len(), 2 * 4 * 4);
        assert_eq!(
            QueryAnswer::decode(&bytes, 2, AnswerPolicy::Scored(2)),
            Some(scored)
        );
        assert_eq!(QueryAnswer::decode(&bytes, 2, AnswerPolicy::TopK(2)), None);
        let unanswered = QueryAnswer::unanswered(2, AnswerPolicy::Scored(2));
        assert_eq!(
            unanswered.encode().len(),
            bytes.len(),
            "same size as an answer"
        );
        assert!(unanswered.is_unanswered());
        // A count whose byte length overflows is refused, not wrapped around to match.
        assert_eq!(
            QueryAnswer::decode(&[], usize::MAX / 4 + 1, AnswerPolicy::Label),
            None
        );
        assert_eq!(
            QueryAnswer::decode(&bytes, usize::MAX, AnswerPolicy::TopK(u8::MAX)),
            None
        );
    }
}
