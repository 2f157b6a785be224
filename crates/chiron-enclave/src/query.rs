//! The query role: open a sealed model, then answer queries, each in a fresh sandbox
//! instance, with answers of a fixed size, under the program's extraction policy and a query
//! budget counted per model across restarts ([`crate::counter`]).
//!
//! `predict` runs on a worker thread; the serving thread waits for it until the answer is
//! due (a private job's declared answer time, or the sandbox's deadline for a live one) and
//! then sends what the worker produced, or the same-size "unanswered" answer if it is not
//! done. A worker stuck in a long native call therefore cannot make an answer leave late; its
//! result, when it comes, is discarded.

use std::collections::HashSet;
use std::io::Read;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use chiron_proto::manifest;
use chiron_proto::owner::{AnswerPolicy, MAX_QUERY_BATCH, QUERY_INFO, QueryAnswer, QueryRequest};
use chiron_proto::wire::{EnclaveFrame, HostFrame, read_frame};
use chiron_sandbox::{Model, Program, Sandbox, SandboxConfig, runtime::argmax};
use sha2::{Digest, Sha256};

use crate::counter::{CounterSeal, CounterState};
use crate::identity::Enclave;
use crate::sealed::SealedModel;

/// AAD of every answer: answers are encrypted under a per-query key, counter 0.
pub const ANSWER_AAD: &[u8] = b"chiron/v1 answer";

/// How long past the sandbox's `predict` deadline a live query waits for its worker: the
/// deadline stops wasm, not a native call already running.
const LIVE_GRACE: Duration = Duration::from_secs(1);

/// A loaded model and its terms.
pub struct Serving {
    job_id: String,
    sandbox: Arc<Sandbox>,
    program: Arc<Program>,
    model: Arc<Model>,
    answers: AnswerPolicy,
    /// Inputs the model may answer over its life (the owner's terms, within the program's
    /// policy).
    budget: u64,
    counter_seal: CounterSeal,
    /// The latest counter state sent to the host: every input answered so far is in it.
    counter: CounterState,
    /// Digests of the sealed queries answered by this process: a replayed one is refused,
    /// so the platform cannot spend the owner's budget. At most one entry per answered
    /// query. Not persisted: queries are sealed to this process's ephemeral key, so no query
    /// sealed to an earlier process opens here.
    answered: HashSet<[u8; 32]>,
    token_digest: [u8; 32],
    feature_dims: Vec<usize>,
    /// A private job's answer time: how long after its arrival every answer leaves.
    answer_time: Option<Duration>,
    /// How long a live query waits for its worker.
    live_wait: Duration,
}

impl Serving {
    /// Unseals and checks a model, its program's policy and its stored query counter;
    /// errors are fixed labels for the host.
    pub fn load(
        enclave: &Enclave,
        job_id: &str,
        sealed_model: &[u8],
        program: &[u8],
        counter: Option<&[u8]>,
    ) -> Result<Self, &'static str> {
        let key = enclave.model_key()?;
        let plaintext = key
            .unseal(job_id.as_bytes(), sealed_model)
            .map_err(|_| "sealed model failed authentication")?;
        let contents = SealedModel::decode(&plaintext).ok_or("sealed model is malformed")?;
        let digest: [u8; 32] = Sha256::digest(program).into();
        if digest != contents.program_digest {
            return Err("program mismatch");
        }
        // The training enclave checked the owner's terms against the program's policy; the
        // sealed terms are checked again, against the program this enclave runs.
        let policy = manifest::program_policy(program).map_err(|_| "program refused")?;
        policy
            .manifest
            .permits(contents.answers, contents.query_budget)
            .map_err(|_| "terms refused")?;
        let counter_seal = CounterSeal::new(key, job_id, sealed_model);
        let counter = counter_seal
            .open(counter)
            .map_err(|_| "query counter failed authentication")?;
        let model = Model::from_bytes(&contents.model).map_err(|_| "sealed model is malformed")?;
        let header = model.header.clone().ok_or("sealed model is malformed")?;
        let answer_time = contents
            .answer_ms
            .map(|ms| Duration::from_millis(u64::from(ms)));
        let defaults = enclave.sandbox_config();
        // Under a private answer time the program is stopped when the time is up (give or
        // take the deadline clock's tick); the serving thread answers then in any case.
        let config = SandboxConfig {
            predict_deadline: answer_time.map_or(defaults.predict_deadline, |t| {
                t.min(defaults.predict_deadline)
            }),
            ..defaults
        };
        let live_wait = config.predict_deadline + LIVE_GRACE;
        let sandbox = Sandbox::new(config).map_err(|_| "sandbox failure")?;
        let program = sandbox.load(program).map_err(|_| "program refused")?;
        Ok(Self {
            job_id: job_id.to_owned(),
            sandbox: Arc::new(sandbox),
            program: Arc::new(program),
            model: Arc::new(model),
            answers: contents.answers,
            budget: contents.query_budget,
            counter_seal,
            counter,
            answered: HashSet::new(),
            token_digest: contents.query_token_digest,
            answer_time,
            live_wait,
            feature_dims: header.dims.iter().map(|&d| d as usize).collect(),
        })
    }

    /// Answers one sealed query. Spending the budget takes one exchange with the host (the
    /// counter's write-ahead), read from `input`.
    pub fn answer(
        &mut self,
        enclave: &Enclave,
        sealed: &[u8],
        input: &mut impl Read,
    ) -> EnclaveFrame {
        let arrived = Instant::now();
        let failed = |public: &str| EnclaveFrame::Failed {
            public: public.to_owned(),
        };
        let Ok((bytes, key)) = enclave
            .keypair
            .open(QUERY_INFO, self.job_id.as_bytes(), sealed)
        else {
            return failed("query failed authentication");
        };
        let Ok(request) = postcard::from_bytes::<QueryRequest>(&bytes) else {
            return failed("malformed query");
        };
        let token_digest: [u8; 32] = Sha256::digest(request.token).into();
        if token_digest != self.token_digest {
            return failed("query not authorised");
        }
        let count = request.count as usize;
        let feature_len: usize = self.feature_dims.iter().product();
        if request.count == 0
            || request.count > MAX_QUERY_BATCH
            || Some(request.inputs.len()) != count.checked_mul(feature_len)
        {
            return failed("malformed query");
        }
        let digest: [u8; 32] = Sha256::digest(sealed).into();
        if self.answered.contains(&digest) {
            return failed("query replayed");
        }
        let used = match self.counter.used.checked_add(u64::from(request.count)) {
            Some(used) if used <= self.budget => used,
            _ => return failed("query budget exhausted"),
        };
        if let Err(public) = self.spend(enclave, used, input) {
            return failed(public);
        }
        self.answered.insert(digest);
        let answer = self.run_predict(count, request.inputs, arrived);
        EnclaveFrame::Answer(key.seal(0, ANSWER_AAD, &answer.encode()))
    }

    /// Write-ahead: has the host store the counter with `used` inputs before any of them is
    /// answered. The state in memory advances first, so a failed exchange never lets an input
    /// go uncounted.
    fn spend(
        &mut self,
        enclave: &Enclave,
        used: u64,
        input: &mut impl Read,
    ) -> Result<(), &'static str> {
        let version = self
            .counter
            .version
            .checked_add(1)
            .ok_or("query counter exhausted")?;
        self.counter = CounterState { version, used };
        let sealed = self.counter_seal.seal(self.counter);
        enclave
            .send(&EnclaveFrame::StoreCounter { version, sealed })
            .map_err(|_| "query counter not stored")?;
        match read_frame::<HostFrame>(input) {
            Ok(HostFrame::CounterStored { version: stored }) if stored == version => Ok(()),
            _ => Err("query counter not stored"),
        }
    }

    /// Runs `predict` on a worker thread and returns its answer when it is due: at the
    /// private answer time (counted from `arrived`), or when the worker is done for a live
    /// job (at most the deadline plus [`LIVE_GRACE`]). A worker not done by then is left to
    /// finish on its own; the query is unanswered.
    fn run_predict(&self, count: usize, inputs: Vec<f32>, arrived: Instant) -> QueryAnswer {
        let due = match self.answer_time {
            Some(time) => arrived + time,
            None => Instant::now() + self.live_wait,
        };
        let (done, result) = mpsc::sync_channel(1);
        let sandbox = Arc::clone(&self.sandbox);
        let program = Arc::clone(&self.program);
        let model = Arc::clone(&self.model);
        let answers = self.answers;
        let mut shape = vec![count];
        shape.extend(&self.feature_dims);
        let worker = std::thread::Builder::new()
            .name("predict".into())
            .spawn(move || {
                // A failure depends on the query's content, so the platform must not see it:
                // it becomes an answer of the same size as any other.
                let answer = sandbox
                    .predict(&program, model, shape, inputs)
                    .ok()
                    .and_then(|scores| answer_of(&scores, count, answers));
                // The serving thread may have stopped waiting: the answer is then dropped.
                let _ = done.send(answer);
            });
        let answer = match worker {
            Ok(_) => result
                .recv_timeout(due.saturating_duration_since(Instant::now()))
                .ok()
                .flatten(),
            Err(_) => None,
        };
        if self.answer_time.is_some() {
            // How long the program took depends on the model and the query: the platform sees
            // the declared time instead.
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        answer.unwrap_or_else(|| QueryAnswer::unanswered(count, self.answers))
    }
}

/// The answer to `count` inputs from their scores (`count` rows of equal width) under
/// `policy`: its width of classes per row and, for [`AnswerPolicy::Scored`], their
/// probabilities; `None` when the scores do not make `count` rows.
fn answer_of(scores: &[f32], count: usize, policy: AnswerPolicy) -> Option<QueryAnswer> {
    if count == 0 || scores.is_empty() || !scores.len().is_multiple_of(count) {
        return None;
    }
    let rows = scores.chunks_exact(scores.len() / count);
    let width = policy.width();
    let mut answer = QueryAnswer {
        classes: Vec::with_capacity(count * width),
        scores: Vec::new(),
    };
    for row in rows {
        // Scores that are not finite rank as the largest (+∞) or smallest (−∞, NaN)
        // finite ones, for the classes and their probabilities alike.
        let row: Vec<f32> = row.iter().copied().map(finite).collect();
        let best = top_k(&row, width);
        if policy.has_scores() {
            let probabilities = softmax(&row);
            answer.scores.extend(best.iter().map(|&class| {
                probabilities
                    .get(class as usize)
                    .copied()
                    .unwrap_or_default()
            }));
        }
        answer.classes.extend(best);
    }
    Some(answer)
}

/// The `k` best classes, best first (ties to the lower index); always `k` entries, padded
/// with [`QueryAnswer::NO_CLASS`] when there are fewer than `k` classes.
fn top_k(row: &[f32], k: usize) -> Vec<u32> {
    if k == 1 {
        return vec![argmax(row) as u32];
    }
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    let mut out: Vec<u32> = order.into_iter().take(k).map(|i| i as u32).collect();
    out.resize(k, QueryAnswer::NO_CLASS);
    out
}

/// A score as a finite one: +∞ as the largest, −∞ and NaN as the smallest.
fn finite(v: f32) -> f32 {
    if v.is_nan() {
        f32::MIN
    } else {
        v.clamp(f32::MIN, f32::MAX)
    }
}

/// The softmax of a row of finite scores, computed from its largest so that no term
/// overflows (a row of equal scores, the smallest included, gets equal probabilities).
fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::MIN, f32::max);
    let exps: Vec<f32> = row.iter().map(|&v| (v - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_become_fixed_width_rows_or_nothing() {
        let classes = |scores: &[f32], count, width| {
            answer_of(scores, count, AnswerPolicy::TopK(width)).map(|a| a.classes)
        };
        let scores = [0.1, 0.7, 0.2, 0.9, 0.05, 0.05];
        assert_eq!(classes(&scores, 2, 2), Some(vec![1, 2, 0, 1]));
        assert_eq!(
            answer_of(&scores, 3, AnswerPolicy::Label),
            Some(QueryAnswer {
                classes: vec![1, 1, 0],
                scores: Vec::new()
            })
        );
        assert_eq!(classes(&scores[..1], 2, 1), None, "fewer scores than rows");
        assert_eq!(classes(&scores[..5], 2, 1), None, "ragged rows");
        assert_eq!(classes(&[], 1, 1), None);
        assert_eq!(
            classes(&[0.5], 1, 3),
            Some(vec![0, QueryAnswer::NO_CLASS, QueryAnswer::NO_CLASS])
        );
    }

    #[test]
    fn scored_answers_carry_each_class_probability() {
        // Logits ln 1, ln 3, ln 6 and a row of huge ones (no overflow: softmax from the max).
        let scores = [0.0, 3f32.ln(), 6f32.ln(), 1000.0, 0.0, 1000.0];
        let answer = answer_of(&scores, 2, AnswerPolicy::Scored(2)).expect("two rows");
        assert_eq!(answer.classes, vec![2, 1, 0, 2]);
        let expected = [0.6, 0.3, 0.5, 0.5];
        assert_eq!(answer.scores.len(), 4);
        for (got, want) in answer.scores.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{:?}", answer.scores);
        }
        // Scores that are not finite still make probabilities.
        let odd = answer_of(
            &[
                f32::INFINITY,
                0.0,
                f32::NAN,
                f32::NEG_INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
            ],
            2,
            AnswerPolicy::Scored(3),
        )
        .expect("two rows");
        assert_eq!(odd.classes, vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(odd.scores[..3], [1.0, 0.0, 0.0]);
        for third in &odd.scores[3..] {
            assert!((third - 1.0 / 3.0).abs() < 1e-6, "{:?}", odd.scores);
        }
        // A row with fewer classes than k: padding scores 0, as an unanswered query's do.
        let padded = answer_of(&[1.0], 1, AnswerPolicy::Scored(3)).expect("one row");
        assert_eq!(padded.scores, vec![1.0, 0.0, 0.0]);
        assert_eq!(
            padded.encode().len(),
            QueryAnswer::unanswered(1, AnswerPolicy::Scored(3))
                .encode()
                .len()
        );
    }

    #[test]
    fn the_sandbox_can_be_shared_with_a_worker() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Sandbox>();
        shareable::<Program>();
        shareable::<Model>();
    }
}
