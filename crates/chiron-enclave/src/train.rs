//! The training role: open the owner's request, decrypt the data, run the program, seal.

use std::io::Read;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chiron_crypto::DataKey;
use chiron_proto::owner::{HELD_EVENT_SLOTS, OwnerEvent, TRAIN_INFO, TrainRequest};
use chiron_proto::wire::{DATASET_PART, EnclaveFrame, HostFrame, read_frame, write_frame};
use chiron_sandbox::{Sandbox, SandboxConfig, TrainJob, TrainingData};
use sha2::{Digest, Sha256};

use crate::memory;
use crate::sealed::{EncodeError, SealedModel, model_key};
use crate::session::Enclave;

/// Largest dataset container accepted (the plaintext bound plus encryption overhead).
const MAX_CONTAINER: u64 = chiron_proto::dataset::MAX_PLAINTEXT_LEN + (1 << 30);

/// The host's start frame, unpacked.
pub struct Start {
    pub job_id: String,
    pub sealed_request: Vec<u8>,
    pub program: Vec<u8>,
    pub dataset_len: u64,
}

/// A failure: a fixed label for the host and, when the owner's channel exists, a detail
/// for the owner.
struct Failure {
    public: &'static str,
    detail: String,
}

fn fail(public: &'static str, detail: impl ToString) -> Failure {
    Failure {
        public,
        detail: detail.to_string(),
    }
}

/// Runs one training job and returns the frame that ends it.
pub fn run(enclave: &Enclave, start: Start, input: &mut impl Read) -> EnclaveFrame {
    let started = Instant::now();
    // Receive the dataset first, whatever happens, so the connection stays in step.
    let container = receive_dataset(input, start.dataset_len);
    let opened = enclave
        .keypair
        .open(TRAIN_INFO, start.job_id.as_bytes(), &start.sealed_request);
    let (request_bytes, response_key) = match opened {
        Ok(opened) => opened,
        // Without the owner's key there is no one to tell the detail to.
        Err(_) => return failed("training request failed authentication"),
    };
    let request: Result<TrainRequest, Failure> = postcard::from_bytes(&request_bytes)
        .map_err(|e| fail("malformed training request", e))
        .and_then(
            |request: TrainRequest| match request.private.map(|p| p.validate()) {
                Some(Err(e)) => Err(fail("malformed training request", e)),
                _ => Ok(request),
            },
        );
    // Private mode: everything the platform sees next happens at the budget's end.
    let private = request.as_ref().ok().and_then(|r| r.private);
    let deadline = request
        .as_ref()
        .ok()
        .filter(|r| r.private.is_some())
        .map(|r| started + Duration::from_secs(u64::from(r.time_budget_secs)));
    let events = Events {
        out: enclave.sender(),
        job_id: start.job_id.clone(),
        key: response_key,
        seq: Arc::new(AtomicU64::new(0)),
        held: deadline.map(|_| Arc::new(Mutex::new(Vec::new()))),
    };
    let outcome = (|| {
        let request = request?;
        let container = container.map_err(|e| fail("dataset transfer failed", e))?;
        train(enclave, &start, request, &container, &events, deadline)
    })();
    // For the owner (who sizes private jobs by it), before any padding.
    let peak_memory_mib = memory::Usage::read()
        .map(|usage| u32::try_from(usage.peak >> 20).unwrap_or(u32::MAX))
        .unwrap_or(0);
    // Whatever the program allocated, and whether or not it failed, the platform sees the
    // declared peak. Going over it is the program's doing, so it gets the program's label.
    let outcome = match private {
        Some(terms) => {
            let padded = memory::pad_peak_to(terms.memory_bytes());
            outcome.and_then(|ok| padded.map(|()| ok).map_err(|e| fail("program failed", e)))
        }
        None => outcome,
    };
    let frame = match outcome {
        Ok((sealed_model, parameters)) => {
            events.emit(&OwnerEvent::Finished {
                parameters,
                peak_memory_mib,
            });
            EnclaveFrame::Trained { sealed_model }
        }
        Err(f) => {
            events.emit(&OwnerEvent::Failed { detail: f.detail });
            failed(f.public)
        }
    };
    if let Some(deadline) = deadline {
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
        events.release();
    }
    frame
}

fn failed(public: &str) -> EnclaveFrame {
    EnclaveFrame::Failed {
        public: public.to_owned(),
    }
}

fn receive_dataset(input: &mut impl Read, len: u64) -> Result<Vec<u8>, String> {
    if len > MAX_CONTAINER {
        return Err(format!("dataset of {len} bytes is above the limit"));
    }
    let mut container = Vec::with_capacity(len as usize);
    while (container.len() as u64) < len {
        match read_frame::<HostFrame>(input) {
            Ok(HostFrame::DatasetPart(part))
                if part.len() <= DATASET_PART
                    && container.len() as u64 + part.len() as u64 <= len =>
            {
                container.extend_from_slice(&part)
            }
            Ok(_) => return Err("unexpected frame during the dataset transfer".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(container)
}

fn train(
    enclave: &Enclave,
    start: &Start,
    request: TrainRequest,
    container: &[u8],
    events: &Events,
    deadline: Option<Instant>,
) -> Result<(Vec<u8>, u64), Failure> {
    let digest: [u8; 32] = Sha256::digest(&start.program).into();
    if digest != request.program_digest {
        return Err(fail(
            "program mismatch",
            "the host supplied a different program than the one the owner approved",
        ));
    }
    let key = DataKey::from_bytes(request.data_key);
    let (header, body) = chiron_crypto::decrypt_dataset(&key, container).map_err(|e| {
        fail(
            "dataset failed authentication",
            format!("the dataset the host supplied is not the one you uploaded: {e}"),
        )
    })?;
    let data =
        TrainingData::from_plaintext(header, body).map_err(|e| fail("dataset is malformed", e))?;
    events.emit(&OwnerEvent::Started {
        train_count: data.header().train_count,
        valid_count: data.header().valid_count,
    });

    let sandbox = Sandbox::new(SandboxConfig::default()).map_err(|e| fail("sandbox failure", e))?;
    let program = sandbox
        .load(&start.program)
        .map_err(|e| fail(e.public_class(), e))?;
    let metrics_events = events.clone();
    // Under private timing the budget counts from the job's start, so that the program is
    // stopped by the time the events are released.
    let time_budget = match deadline {
        Some(deadline) => deadline.saturating_duration_since(Instant::now()),
        None => Duration::from_secs(u64::from(request.time_budget_secs)),
    };
    let job = TrainJob::new(Arc::new(data), request.seed, request.epochs, time_budget)
        .with_metrics(move |m| {
            metrics_events.emit(&OwnerEvent::Metric {
                name: m.name,
                epoch: m.epoch,
                value: m.value,
            })
        });
    let model = sandbox
        .train(&program, job)
        .map_err(|e| fail(e.public_class(), e))?;
    let parameters = model.parameter_count() as u64;
    let contents = SealedModel {
        program_digest: digest,
        answers: request.answers,
        query_budget: request.query_budget,
        query_token_digest: request.query_token_digest,
        answer_ms: request.private.map(|p| p.answer_ms),
        model: model.to_bytes(),
    };
    // Too large a model is the program's doing, so it gets the program's label.
    let plaintext = contents
        .encode(request.private.map(|p| p.model_bytes()))
        .map_err(|e| match e {
            EncodeError::TooLarge { .. } => fail("program failed", e),
            EncodeError::Encode(_) => fail("sealing failed", e),
        })?;
    let sealed = model_key(&enclave.platform, &enclave.measurement)
        .seal(start.job_id.as_bytes(), &plaintext);
    Ok((sealed, parameters))
}

/// The owner's encrypted event stream for one job: fixed-size events, each encrypted under
/// the owner's response key at its sequence number, so the host can neither read, reorder
/// nor drop one unnoticed.
#[derive(Clone)]
struct Events {
    out: Arc<Mutex<TcpStream>>,
    job_id: String,
    key: chiron_crypto::ResponseKey,
    seq: Arc<AtomicU64>,
    /// Under private timing, the events held back until [`Events::release`].
    held: Option<Arc<Mutex<Vec<OwnerEvent>>>>,
}

impl Events {
    fn emit(&self, event: &OwnerEvent) {
        match &self.held {
            Some(held) => {
                if let Ok(mut held) = held.lock() {
                    held.push(event.clone());
                }
            }
            None => self.send(event),
        }
    }

    /// Sends the held events as exactly [`HELD_EVENT_SLOTS`] frames: the first ones and the
    /// final one when there are too many, padding when there are too few.
    fn release(&self) {
        let Some(held) = &self.held else { return };
        let mut events = held
            .lock()
            .map(|mut held| std::mem::take(&mut *held))
            .unwrap_or_default();
        if events.len() > HELD_EVENT_SLOTS {
            let last = events.pop();
            events.truncate(HELD_EVENT_SLOTS - 1);
            events.extend(last);
        }
        events.resize(HELD_EVENT_SLOTS, OwnerEvent::Padding);
        for event in &events {
            self.send(event);
        }
    }

    fn send(&self, event: &OwnerEvent) {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        let ciphertext = self
            .key
            .seal(seq, self.job_id.as_bytes(), &event.to_padded());
        let frame = EnclaveFrame::Event { seq, ciphertext };
        // A lost event cannot be reported anywhere else; the job's end frame still is.
        if let Ok(mut out) = self.out.lock() {
            let _ = write_frame(&mut *out, &frame);
        }
    }
}
