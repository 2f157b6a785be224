//! Training a provider's program on the owner's arrays, following the job, and querying its
//! model: the `chiron train`, `attach`, `evaluate` and `predict` flows of the CLI, on the
//! same library calls.

use std::path::{Path, PathBuf};

use chiron_attest::Policy;
use chiron_client::convert::arrays::{self, ArrayView, Dtype, Labels};
use chiron_client::convert::{self, ConvertOptions};
use chiron_client::evaluation::Tally;
use chiron_client::history::History;
use chiron_client::owner::{self, EventCursor, QuerySession, TrainingTerms};
use chiron_client::record::{self, OwnerRecord, ProgramRecord};
use chiron_client::{ClientError, HostClient};
use chiron_crypto::DataKey;
use chiron_proto::api::JobState;
use chiron_proto::manifest::TermsError;
use chiron_proto::owner::{AnswerPolicy, MAX_TOP_K, OwnerEvent, QueryAnswer};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::Failure;
use crate::host::{Host, Trust, state_name};

/// Labels as Python hands them over: integers, else names.
#[derive(FromPyObject)]
pub(crate) enum LabelsArg {
    /// Integer labels.
    Integers(Vec<i64>),
    /// Named labels.
    Names(Vec<String>),
}

impl From<LabelsArg> for Labels {
    fn from(labels: LabelsArg) -> Self {
        match labels {
            LabelsArg::Integers(v) => Self::Integers(v),
            LabelsArg::Names(v) => Self::Names(v),
        }
    }
}

/// Terms beyond the program's policy, in the Python API's words: which limit, and which
/// argument to change.
fn refused_terms(e: TermsError) -> Failure {
    let what = match e {
        TermsError::QueryBudget { asked, allowed } => format!(
            "query_budget={asked} is above the program's maximum of {allowed} queries per \
             model: pass query_budget={allowed} or less, or leave it out to take the maximum"
        ),
        TermsError::Answers { asked, allowed } => format!(
            "top_k asks for {asked} answers, finer than the program allows ({allowed}): {}",
            match allowed {
                AnswerPolicy::TopK(k) | AnswerPolicy::Scored(k) if k > 1 => {
                    format!("pass top_k={k} or less")
                }
                _ => "leave out top_k (label answers only)".to_owned(),
            }
        ),
        TermsError::InvalidAnswers => format!("top_k must be between 1 and {MAX_TOP_K}"),
        TermsError::Scores => "scores=True asks for probabilities, which the program does not \
                               allow (its answers carry classes only): leave out scores"
            .to_owned(),
    };
    Failure::Terms(format!(
        "the provider's extraction policy refuses these terms: {what}; nothing was uploaded"
    ))
}

fn parse_seed(text: &str) -> Result<[u8; 32], Failure> {
    hex::decode(text)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| Failure::Input(format!("seed must be 64 hex digits, not {text:?}")))
}

/// What `train` asks for, beyond the data.
struct TrainRequest {
    program_id: String,
    ticket: PathBuf,
    epochs: u32,
    valid_fraction: f32,
    shuffle_seed: u64,
    limit: Option<usize>,
    live: bool,
    time_budget: Option<u32>,
    top_k: Option<u8>,
    scores: bool,
    query_budget: Option<u64>,
    seed: Option<[u8; 32]>,
    keep_last_save: bool,
    private_memory_mib: Option<u32>,
    private_model_mib: Option<u32>,
    private_answer_ms: Option<u32>,
}

/// The CLI's `train`, on arrays: refuses an existing ticket, converts the data, checks the
/// terms against the program's policy, encrypts and uploads the dataset, attests the job's
/// enclave and only then releases the data key to it, and writes the ticket. Returns the
/// record and what the CLI would have said along the way.
fn start(
    client: &HostClient,
    policy: &Policy,
    features: &ArrayView<'_>,
    columns: Option<&[String]>,
    labels: &Labels,
    request: &TrainRequest,
) -> Result<(OwnerRecord, Vec<String>), Failure> {
    let mut notes = Vec::new();
    // A ticket holds its job's keys and query token, which exist nowhere else: never
    // overwrite one, and say so before anything is uploaded.
    OwnerRecord::check_free(&request.ticket)?;
    let opts = ConvertOptions {
        valid_fraction: request.valid_fraction,
        limit: request.limit,
        shuffle_seed: Some(request.shuffle_seed),
    };
    let plain = arrays::from_arrays(features, columns, labels, &opts)?;
    // The provider's extraction policy, before anything leaves this machine.
    let program = client.program(&request.program_id)?;
    let manifest = program.policy.manifest;
    let answers = AnswerPolicy::asked(request.top_k, request.scores);
    let query_budget = request.query_budget.unwrap_or(manifest.max_queries());
    manifest
        .permits(answers, query_budget)
        .map_err(refused_terms)?;
    notes.push(format!(
        "program {}: {} ({}); this model: {query_budget} queries, {answers}",
        program.program_id,
        manifest,
        if program.policy.declared {
            "the provider's manifest"
        } else {
            "no manifest: the default policy"
        },
    ));
    let header = plain.header.clone();
    notes.push(format!(
        "dataset: {:?} {:?}, {} classes, {} training + {} validation examples",
        header.kind, header.dims, header.classes, header.train_count, header.valid_count
    ));
    let figures = owner::Figures {
        live: request.live,
        time_budget_secs: request.time_budget,
        memory_mib: request.private_memory_mib,
        model_mib: request.private_model_mib,
        answer_ms: request.private_answer_ms,
    };
    let (time_budget_secs, private) =
        figures.resolve(&header, &manifest.needs(), request.epochs)?;
    if let Some(terms) = &private {
        notes.push(format!(
            "private job (the platform sees only these figures; live=True to follow \
             progress): {time_budget_secs} s, {} MiB of memory, a {} MiB model, answers {} ms \
             after each query",
            terms.memory_mib, terms.model_mib, terms.answer_ms
        ));
    }

    let key = DataKey::generate();
    // The job is created on the upload before its data is sent: its enclave is attested
    // first, so an enclave the policy refuses costs no upload (the container is sealed as
    // it is sent).
    let container_len =
        chiron_crypto::dataset::container_len(&header).map_err(ClientError::from)?;
    let opened = client.create_upload(container_len)?;
    let dataset_id = opened.upload_id.clone();
    let job = client
        .create_job(&request.program_id, &dataset_id)
        .inspect_err(|_| {
            let _ = client.cancel_upload(&dataset_id);
        })?;
    let terms = TrainingTerms {
        epochs: request.epochs,
        time_budget_secs,
        answers,
        query_budget,
        seed: request.seed,
        private,
        keep_last_save: request.keep_last_save,
    };
    let mut uploaded = None;
    let ticket = owner::start_training_then(
        client,
        policy,
        &job.job_id,
        &request.program_id,
        &header,
        &key,
        &terms,
        || {
            uploaded = Some(
                client
                    .upload_encrypted(opened, &key, &header, plain.body.as_slice())?
                    .dataset_id,
            );
            Ok(())
        },
    )
    .map_err(|error| {
        let _ = client.cancel_upload(&dataset_id);
        Failure::InJob {
            job_id: job.job_id.clone(),
            error,
        }
    })?;
    drop(plain.body);
    if let Some(dataset) = uploaded {
        notes.push(format!("uploaded encrypted dataset {dataset}"));
    }
    notes.push(format!(
        "enclave attested; data key released to job {}",
        ticket.job_id
    ));
    if let Some(seed) = ticket.seed {
        notes.push(format!(
            "seed {}: pass it as seed= to train the same model again",
            hex::encode(seed)
        ));
    }
    let record = OwnerRecord::started(
        ticket,
        ProgramRecord {
            id: request.program_id.clone(),
            inputs: program.policy.inputs,
        },
        plain.class_names,
        plain.standardizer,
        request.epochs,
        time_budget_secs,
        private.as_ref(),
    );
    record.save_new(&request.ticket)?;
    notes.push(format!(
        "ticket written to {} (keep it: it alone can read this job's results and query its \
         model)",
        request.ticket.display()
    ));
    if private.is_some() {
        notes.push(format!(
            "private mode: progress is held until the {time_budget_secs} s budget has passed"
        ));
    }
    Ok((record, notes))
}

/// Trains program `program_id` on the owner's examples: `features` (C-ordered element bytes
/// of `shape` and NumPy type `dtype`; `columns` names a table's columns), one label per
/// example, trusting the enclaves `trust` accepts; writes the job's ticket to `ticket`
/// (never over an existing file) and returns the started job. The `chiron` package's
/// `chiron.train` turns arrays and frames into these arguments.
#[pyfunction]
#[pyo3(signature = (
    host, program_id, features, shape, dtype, columns, labels, trust, *,
    ticket, epochs = 3, valid_fraction = 0.1, live = false, time_budget = None, top_k = None,
    scores = false, query_budget = None, seed = None, shuffle_seed = 0, limit = None, keep_last_save = true,
    private_memory_mib = None, private_model_mib = None, private_answer_ms = None,
))]
#[allow(clippy::too_many_arguments)]
pub fn train(
    py: Python<'_>,
    host: &Bound<'_, Host>,
    program_id: String,
    features: &[u8],
    shape: Vec<usize>,
    dtype: &str,
    columns: Option<Vec<String>>,
    labels: LabelsArg,
    trust: &Bound<'_, Trust>,
    ticket: PathBuf,
    epochs: u32,
    valid_fraction: f32,
    live: bool,
    time_budget: Option<u32>,
    top_k: Option<u8>,
    scores: bool,
    query_budget: Option<u64>,
    seed: Option<String>,
    shuffle_seed: u64,
    limit: Option<usize>,
    keep_last_save: bool,
    private_memory_mib: Option<u32>,
    private_model_mib: Option<u32>,
    private_answer_ms: Option<u32>,
) -> PyResult<Job> {
    let client = host.get().client.clone();
    let policy = trust.get().policy.clone();
    let request = TrainRequest {
        program_id,
        ticket,
        epochs,
        valid_fraction,
        shuffle_seed,
        limit,
        live,
        time_budget,
        top_k,
        scores,
        query_budget,
        seed: seed.as_deref().map(parse_seed).transpose()?,
        keep_last_save,
        private_memory_mib,
        private_model_mib,
        private_answer_ms,
    };
    let labels = Labels::from(labels);
    let dtype = Dtype::parse(dtype).map_err(Failure::from)?;
    let (record, notes) = py.detach(|| {
        let view = ArrayView::new(features, &shape, dtype)?;
        start(
            &client,
            &policy,
            &view,
            columns.as_deref(),
            &labels,
            &request,
        )
    })?;
    Ok(Job {
        client,
        record,
        ticket: request.ticket,
        trust: Some(policy),
        events: Vec::new(),
        cursor: EventCursor::default(),
        finished: false,
        notes,
    })
}

/// A training job and its model, known by its ticket: follow it with `poll`, query its model
/// with `predict` and `evaluate`. The `chiron` package's `chiron.Job` wraps it.
#[pyclass(module = "chiron._native")]
pub struct Job {
    client: HostClient,
    record: OwnerRecord,
    ticket: PathBuf,
    /// The policy queries attest the query enclave against.
    trust: Option<Policy>,
    /// Every event read so far, padding included.
    events: Vec<OwnerEvent>,
    /// Where the next read starts, and whose events the stream follows.
    cursor: EventCursor,
    /// The `Finished` event was among them.
    finished: bool,
    notes: Vec<String>,
}

/// An event as a Python dict, `None` for padding.
fn event_dict<'py>(py: Python<'py>, event: &OwnerEvent) -> PyResult<Option<Bound<'py, PyDict>>> {
    let out = PyDict::new(py);
    match event {
        OwnerEvent::Padding => return Ok(None),
        OwnerEvent::Started {
            train_count,
            valid_count,
        } => {
            out.set_item("kind", "started")?;
            out.set_item("train_count", train_count)?;
            out.set_item("valid_count", valid_count)?;
        }
        OwnerEvent::Metric { name, epoch, value } => {
            out.set_item("kind", "metric")?;
            out.set_item("name", name)?;
            out.set_item("epoch", epoch)?;
            out.set_item("value", value)?;
        }
        OwnerEvent::CutShort => out.set_item("kind", "cut_short")?,
        OwnerEvent::Resumed => out.set_item("kind", "resumed")?,
        OwnerEvent::Progress { epoch, step, steps } => {
            out.set_item("kind", "progress")?;
            out.set_item("epoch", epoch)?;
            out.set_item("step", step)?;
            out.set_item("steps", steps)?;
        }
        OwnerEvent::Finished {
            parameters,
            peak_memory_mib,
        } => {
            out.set_item("kind", "finished")?;
            out.set_item("parameters", parameters)?;
            out.set_item("peak_memory_mib", peak_memory_mib)?;
        }
        OwnerEvent::Failed { detail } => {
            out.set_item("kind", "failed")?;
            out.set_item("detail", detail)?;
        }
    }
    Ok(Some(out))
}

impl Job {
    fn policy(&self, trust: Option<&Bound<'_, Trust>>) -> Result<Policy, Failure> {
        match (trust, &self.trust) {
            (Some(trust), _) => Ok(trust.get().policy.clone()),
            (None, Some(policy)) => Ok(policy.clone()),
            (None, None) => Err(Failure::Input(
                "queries attest the model's enclave first: give the trust policy \
                 (trust=chiron.Trust(...)) to Job.load or to this call"
                    .into(),
            )),
        }
    }

    /// Sends `features` in queries of at most `batch` inputs; returns the answers in input
    /// order.
    fn answer_all(
        &self,
        policy: &Policy,
        features: &[f32],
        batch: usize,
    ) -> Result<QueryAnswer, Failure> {
        let session = QuerySession::open(&self.client, policy, &self.record.ticket)?;
        match (
            session.query_all(features, batch, |_| {}),
            self.record.private_answer_ms,
        ) {
            (Err(ClientError::Unanswered), Some(ms)) => Err(Failure::Other(format!(
                "the provider's program could not answer a query of up to {batch} inputs \
                 within this private job's answer time of {ms} ms; a smaller batch asks less \
                 of each answer"
            ))),
            (answers, _) => Ok(answers?),
        }
    }
}

#[pymethods]
impl Job {
    /// Re-attaches to a job from its ticket file (written by `chiron.train` or `chiron train`);
    /// `trust` is the policy its model's query enclave must satisfy.
    #[staticmethod]
    #[pyo3(signature = (path, host, trust = None))]
    fn load(
        path: PathBuf,
        host: &Bound<'_, Host>,
        trust: Option<&Bound<'_, Trust>>,
    ) -> PyResult<Self> {
        let record = OwnerRecord::load(&path).map_err(Failure::from)?;
        Ok(Self {
            client: host.get().client.clone(),
            record,
            ticket: path,
            trust: trust.map(|t| t.get().policy.clone()),
            events: Vec::new(),
            cursor: EventCursor::default(),
            finished: false,
            notes: Vec::new(),
        })
    }

    /// Sets the trust policy for queries.
    fn set_trust(&mut self, trust: &Bound<'_, Trust>) {
        self.trust = Some(trust.get().policy.clone());
    }

    /// The job's id at the host.
    #[getter]
    fn job_id(&self) -> &str {
        &self.record.ticket.job_id
    }

    /// The ticket file.
    #[getter]
    fn ticket(&self) -> PathBuf {
        self.ticket.clone()
    }

    /// The name of each class index, as the training labels named them.
    #[getter]
    fn class_names(&self) -> Vec<String> {
        self.record.class_names.clone()
    }

    /// The epochs allowed (None in old tickets).
    #[getter]
    fn epochs(&self) -> Option<u32> {
        self.record.epochs
    }

    /// Whether the model's answers carry each class's probability (trained with
    /// `scores=True`).
    #[getter]
    fn scores(&self) -> bool {
        self.record.ticket.answers.has_scores()
    }

    /// The training run's seed (hex), to train the same model again.
    #[getter]
    fn seed(&self) -> Option<String> {
        self.record.ticket.seed.map(hex::encode)
    }

    /// Classes per answer: 1 for labels, k for top-k answers.
    #[getter]
    fn answer_width(&self) -> usize {
        self.record.ticket.answers.width()
    }

    /// The training examples' kind (`image` or `tabular`) and shape.
    #[getter]
    fn input_shape(&self) -> (String, Vec<u32>) {
        let header = &self.record.ticket.header;
        (
            format!("{:?}", header.kind).to_lowercase(),
            header.dims.clone(),
        )
    }

    /// A private job's answer time in milliseconds; None for a live job.
    #[getter]
    fn private_answer_ms(&self) -> Option<u32> {
        self.record.private_answer_ms
    }

    /// What training said along the way (program policy, dataset, upload, attestation).
    #[getter]
    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    /// Seconds until a private job's progress is released; None for a live job or once due.
    fn private_wait_secs(&self) -> Option<u64> {
        self.record.private_wait().map(|wait| wait.as_secs())
    }

    /// Reads the job's new events, each authenticated in sequence: a dict with `state`, the
    /// new `events` (dicts with `kind`: `started`, `progress`, `metric`, `cut_short`,
    /// `finished`, `failed`), `failure` (the owner's failure detail, else the host's label) and `done`.
    /// A host that reports success but withholds the final event raises `TamperingError`.
    fn poll<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (client, ticket, cursor) = (&self.client, &self.record.ticket, &mut self.cursor);
        let (state, events) = py
            .detach(|| ticket.events(client, cursor))
            .map_err(Failure::from)?;
        let list = PyList::empty(py);
        let mut failure = None;
        for event in &events {
            match event {
                OwnerEvent::Finished { .. } => self.finished = true,
                OwnerEvent::Failed { detail } => failure = Some(detail.clone()),
                _ => {}
            }
            if let Some(dict) = event_dict(py, event)? {
                list.append(dict)?;
            }
        }
        self.events.extend(events);
        if state == JobState::Succeeded && !self.finished {
            // Its events are stored before its state changes: the host held them back.
            return Err(Failure::Client(ClientError::WithheldEvents).into());
        }
        if state == JobState::Failed && failure.is_none() {
            // The enclave may have died before it could say why.
            let status = py
                .detach(|| client.job_status(&ticket.job_id))
                .map_err(Failure::from)?;
            failure = Some(status.error.unwrap_or_else(|| "no reason given".into()));
        }
        let done = failure.is_some() || (state == JobState::Succeeded && self.finished);
        let out = PyDict::new(py);
        out.set_item("state", state_name(state))?;
        out.set_item("events", list)?;
        out.set_item("failure", failure)?;
        out.set_item("done", done)?;
        Ok(out)
    }

    /// Every metric read so far: dicts of `epoch` (0-based), `name` and `value`, in the order
    /// the program reported them.
    fn history<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for point in History::from_events(&self.events).points {
            let dict = PyDict::new(py);
            dict.set_item("epoch", point.epoch)?;
            dict.set_item("name", point.name)?;
            dict.set_item("value", point.value)?;
            list.append(dict)?;
        }
        Ok(list)
    }

    /// Writes the job's metrics (CSV, JSON lines) and training curves (SVG, PNG) beside its
    /// ticket, as the CLI does when a job ends; returns the files written.
    fn write_records(&self) -> PyResult<Vec<PathBuf>> {
        Ok(write_records(&self.ticket, &self.events)?)
    }

    /// The model's answers on unlabelled inputs (element bytes of `shape` and `dtype`, as for
    /// `train`), in queries of at most `batch` inputs: the class names, `answer_width` per
    /// input, that width, and for a model whose answers carry scores a probability per class
    /// name (else an empty list). Inputs of another shape than the training examples are
    /// refused before any query.
    #[pyo3(signature = (features, shape, dtype, columns = None, batch = chiron_client::owner::DEFAULT_QUERY_BATCH, trust = None))]
    #[allow(clippy::too_many_arguments)]
    fn predict(
        &self,
        py: Python<'_>,
        features: &[u8],
        shape: Vec<usize>,
        dtype: &str,
        columns: Option<Vec<String>>,
        batch: usize,
        trust: Option<&Bound<'_, Trust>>,
    ) -> PyResult<(Vec<String>, usize, Vec<f32>)> {
        let policy = self.policy(trust)?;
        let dtype = Dtype::parse(dtype).map_err(Failure::from)?;
        let answers = py.detach(|| {
            let view = ArrayView::new(features, &shape, dtype)?;
            let inputs = arrays::inputs_from_array(
                &view,
                columns.as_deref(),
                self.record.standardizer.as_ref(),
            )?;
            convert::check_query_dims(&inputs.dims, &self.record.ticket.header)?;
            self.answer_all(&policy, &inputs.features, batch)
        })?;
        let names = answers
            .classes
            .iter()
            .map(|&c| self.record.class_name(c))
            .collect();
        Ok((names, self.record.ticket.answers.width(), answers.scores))
    }

    /// The model's figures on labelled inputs, through black-box queries: accuracy,
    /// per-class precision, recall and F1, the confusion matrix; as the JSON of
    /// `chiron evaluate --json` and as its text report.
    #[pyo3(signature = (features, shape, dtype, columns, labels, batch = chiron_client::owner::DEFAULT_QUERY_BATCH, trust = None))]
    #[allow(clippy::too_many_arguments)]
    fn evaluate(
        &self,
        py: Python<'_>,
        features: &[u8],
        shape: Vec<usize>,
        dtype: &str,
        columns: Option<Vec<String>>,
        labels: LabelsArg,
        batch: usize,
        trust: Option<&Bound<'_, Trust>>,
    ) -> PyResult<(String, String)> {
        let policy = self.policy(trust)?;
        let dtype = Dtype::parse(dtype).map_err(Failure::from)?;
        let labels = Labels::from(labels);
        let record = &self.record;
        let report = py.detach(|| {
            let view = ArrayView::new(features, &shape, dtype)?;
            let columns = columns.as_deref();
            let standardizer = record.standardizer.as_ref();
            let header = &record.ticket.header;
            let inputs = match arrays::labelled_from_arrays(
                &view,
                columns,
                &labels,
                &record.class_names,
                standardizer,
            ) {
                Ok(inputs) => inputs,
                // Inputs of another kind fail on their labels first; their shape says more.
                Err(e) => {
                    if let Ok(unlabelled) = arrays::inputs_from_array(&view, columns, standardizer)
                    {
                        convert::check_query_dims(&unlabelled.dims, header)?;
                    }
                    return Err(Failure::from(e));
                }
            };
            convert::check_query_dims(&inputs.dims, header)?;
            let classes = self.answer_all(&policy, &inputs.features, batch)?.classes;
            let mut tally = Tally::new(header.classes as usize, record.ticket.answers.width());
            tally.add(&classes, &inputs.labels);
            Ok::<_, Failure>(tally.finish(&record.class_names))
        })?;
        let json = serde_json::to_string(&report).map_err(|e| Failure::Other(e.to_string()))?;
        Ok((json, report.to_string()))
    }

    fn __repr__(&self) -> String {
        format!(
            "chiron.Job(job_id={:?}, ticket={:?})",
            self.record.ticket.job_id,
            self.ticket.display().to_string()
        )
    }
}

/// The CLI's records of a job, beside its ticket: metrics as CSV and JSON lines, training
/// curves as SVG and PNG.
fn write_records(ticket: &Path, events: &[OwnerEvent]) -> Result<Vec<PathBuf>, Failure> {
    let history = History::from_events(events);
    if history.is_empty() {
        return Ok(Vec::new());
    }
    let plot = |e: chiron_client::history::HistoryError| Failure::Other(e.to_string());
    let mut csv = Vec::new();
    history.write_csv(&mut csv).map_err(plot)?;
    let mut jsonl = Vec::new();
    history.write_jsonl(&mut jsonl).map_err(plot)?;
    let files = [
        ("metrics.csv", csv),
        ("metrics.jsonl", jsonl),
        ("curves.svg", history.to_svg().map_err(plot)?.into_bytes()),
        ("curves.png", history.to_png().map_err(plot)?),
    ];
    let mut written = Vec::new();
    for (suffix, bytes) in files {
        let path = record::beside(ticket, suffix);
        std::fs::write(&path, bytes)
            .map_err(|e| Failure::Other(format!("cannot write {}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}
