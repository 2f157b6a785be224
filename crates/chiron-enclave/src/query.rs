//! The query role: open a sealed model, then answer queries, each in a fresh sandbox
//! instance, with answers of a fixed size.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chiron_proto::owner::{AnswerPolicy, MAX_QUERY_BATCH, QUERY_INFO, QueryAnswer, QueryRequest};
use chiron_proto::wire::EnclaveFrame;
use chiron_sandbox::{Model, Program, Sandbox, SandboxConfig, runtime::argmax};
use sha2::{Digest, Sha256};

use crate::sealed::{SealedModel, model_key};
use crate::session::Enclave;

/// AAD of every answer: answers are encrypted under a per-query key, counter 0.
pub const ANSWER_AAD: &[u8] = b"chiron/v1 answer";

/// A loaded model and its terms.
pub struct Serving {
    job_id: String,
    sandbox: Sandbox,
    program: Program,
    model: Arc<Model>,
    answers: AnswerPolicy,
    budget_left: u64,
    /// Digests of the sealed queries answered so far: a replayed one is refused, so the
    /// platform cannot spend the owner's budget. At most one entry per answered query.
    answered: HashSet<[u8; 32]>,
    token_digest: [u8; 32],
    feature_dims: Vec<usize>,
    /// A private job's answer time: how long after its arrival every answer leaves.
    answer_time: Option<Duration>,
}

impl Serving {
    /// Unseals and checks a model; errors are fixed labels for the host.
    pub fn load(
        enclave: &Enclave,
        job_id: &str,
        sealed_model: &[u8],
        program: &[u8],
    ) -> Result<Self, &'static str> {
        let plaintext = model_key(&enclave.platform, &enclave.measurement)
            .unseal(job_id.as_bytes(), sealed_model)
            .map_err(|_| "sealed model failed authentication")?;
        let contents = SealedModel::decode(&plaintext).ok_or("sealed model is malformed")?;
        let digest: [u8; 32] = Sha256::digest(program).into();
        if digest != contents.program_digest {
            return Err("program mismatch");
        }
        let model = Model::from_bytes(&contents.model).map_err(|_| "sealed model is malformed")?;
        let header = model.header.clone().ok_or("sealed model is malformed")?;
        let answer_time = contents
            .answer_ms
            .map(|ms| Duration::from_millis(u64::from(ms)));
        let defaults = SandboxConfig::default();
        // Under a private answer time the program is stopped when the time is up, so no
        // answer can leave later than declared (give or take the deadline clock's tick).
        let config = SandboxConfig {
            predict_deadline: answer_time.map_or(defaults.predict_deadline, |t| {
                t.min(defaults.predict_deadline)
            }),
            ..defaults
        };
        let sandbox = Sandbox::new(config).map_err(|_| "sandbox failure")?;
        let program = sandbox.load(program).map_err(|_| "program refused")?;
        Ok(Self {
            job_id: job_id.to_owned(),
            sandbox,
            program,
            model: Arc::new(model),
            answers: contents.answers,
            budget_left: contents.query_budget,
            answered: HashSet::new(),
            token_digest: contents.query_token_digest,
            answer_time,
            feature_dims: header.dims.iter().map(|&d| d as usize).collect(),
        })
    }

    /// Answers one sealed query.
    pub fn answer(&mut self, enclave: &Enclave, sealed: &[u8]) -> EnclaveFrame {
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
            || request.inputs.len() != count * feature_len
        {
            return failed("malformed query");
        }
        let digest: [u8; 32] = Sha256::digest(sealed).into();
        if self.answered.contains(&digest) {
            return failed("query replayed");
        }
        if self.budget_left < u64::from(request.count) {
            return failed("query budget exhausted");
        }
        self.budget_left -= u64::from(request.count);
        self.answered.insert(digest);
        let mut shape = vec![count];
        shape.extend(&self.feature_dims);
        // A failure depends on the query's content, so the platform must not see it: it
        // becomes an answer of the same size as any other.
        let answer = match self.sandbox.predict(
            &self.program,
            Arc::clone(&self.model),
            shape,
            request.inputs,
        ) {
            Ok(scores) => QueryAnswer {
                classes: scores
                    .chunks_exact(scores.len() / count)
                    .flat_map(|row| top_k(row, self.answers.width()))
                    .collect(),
            },
            Err(_) => QueryAnswer::unanswered(count, self.answers),
        };
        // How long the program took depends on the model and the query: under a private
        // answer time the platform sees the declared time instead.
        let answer = match self.answer_time {
            Some(time) => {
                let elapsed = arrived.elapsed();
                std::thread::sleep(time.saturating_sub(elapsed));
                if elapsed > time {
                    QueryAnswer::unanswered(count, self.answers)
                } else {
                    answer
                }
            }
            None => answer,
        };
        EnclaveFrame::Answer(key.seal(0, ANSWER_AAD, &answer.encode()))
    }
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
