//! The whole service, as an owner uses it: a real `chiron-host` and its enclave processes on
//! loopback. For each network it times a training job from upload to sealed model, reads the
//! training enclave's peak memory from the owner's `Finished` event, and times queries through
//! the full path (HTTP to the host, HPKE to the query enclave, a fresh sandbox instance, the
//! encrypted answer back).

use std::time::{Duration, Instant};

use anyhow::bail;
use chiron_client::HostClient;
use chiron_client::owner::{self, EventCursor, JobTicket, QuerySession, TrainingTerms};
use chiron_crypto::DataKey;
use chiron_proto::api::JobState;
use chiron_proto::dataset::DatasetHeader;
use chiron_proto::owner::{AnswerPolicy, OwnerEvent};

use chiron_bench::{HostProcess, owner_policy};

use crate::{median, percentile};

/// What one network measured through the service.
pub struct ServiceFigures {
    /// From the start of the upload to the sealed model.
    pub job: Duration,
    /// The training enclave's peak resident memory, MiB (owner's `Finished` event).
    pub peak_memory_mib: u32,
    /// Single-input query latencies, microseconds.
    pub single: Vec<f64>,
    /// Images per second in queries of 256.
    pub batched: f64,
}

/// Trains `wasm` on the dataset through a fresh service, then times `queries` single-input
/// queries and a few batched ones.
pub fn measure(
    wasm: &[u8],
    header: &DatasetHeader,
    body: &[u8],
    queries: usize,
) -> anyhow::Result<ServiceFigures> {
    let service = HostProcess::start()?;
    let host = service.client();
    let policy = owner_policy(&service.dir)?;

    let started = Instant::now();
    let program = host.register_program(wasm)?;
    let key = DataKey::generate();
    let mut container = Vec::new();
    chiron_crypto::encrypt_dataset(&key, header, body, &mut container)?;
    let dataset = host.upload_dataset(&container)?;
    let job = host.create_job(&program.program_id, &dataset.dataset_id)?;
    let terms = TrainingTerms {
        epochs: 1,
        time_budget_secs: 3600,
        answers: AnswerPolicy::Label,
        // All the program's policy allows.
        query_budget: program.policy.manifest.max_queries(),
        seed: Some([7; 32]),
        private: None,
        keep_last_save: true,
    };
    let ticket = owner::start_training(
        &host,
        &policy,
        &job.job_id,
        &program.program_id,
        header,
        &key,
        &terms,
    )?;
    let peak_memory_mib = wait_finished(&host, &ticket)?;
    let job = started.elapsed();

    let session = QuerySession::open(&host, &policy, &ticket)?;
    let feature_len = header.feature_len();
    let input = vec![0.5f32; feature_len];
    // Warm-up: the first query also starts nothing new, but fills caches.
    for _ in 0..5 {
        session.query(1, input.clone())?;
    }
    let mut single = Vec::with_capacity(queries);
    for _ in 0..queries {
        let t = Instant::now();
        session.query(1, input.clone())?;
        single.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let batch = 256;
    let rounds = 5;
    let t = Instant::now();
    for _ in 0..rounds {
        session.query(batch, vec![0.5f32; batch * feature_len])?;
    }
    let batched = (batch * rounds) as f64 / t.elapsed().as_secs_f64();
    Ok(ServiceFigures {
        job,
        peak_memory_mib,
        single,
        batched,
    })
}

/// Prints one row of the service table.
pub fn print_row(net: &str, figures: &ServiceFigures) {
    println!(
        "| {net} | {:.1} s | {} MiB | {:.0} µs / {:.0} µs | {:.0} img/s |",
        figures.job.as_secs_f64(),
        figures.peak_memory_mib,
        median(&figures.single),
        percentile(&figures.single, 0.99),
        figures.batched,
    );
}

/// Follows the job until the host has stored its model; the peak memory its `Finished` event
/// reports.
fn wait_finished(host: &HostClient, ticket: &JobTicket) -> anyhow::Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(3600);
    let mut cursor = EventCursor::default();
    let mut peak = None;
    loop {
        let (state, events) = ticket.events(host, &mut cursor)?;
        for event in events {
            match event {
                OwnerEvent::Finished {
                    peak_memory_mib, ..
                } => peak = Some(peak_memory_mib),
                OwnerEvent::Failed { detail } => bail!("the benchmark job failed: {detail}"),
                _ => {}
            }
        }
        match (state, peak) {
            (JobState::Succeeded, Some(peak)) => return Ok(peak),
            (JobState::Failed, _) => bail!("the benchmark job failed"),
            _ => {}
        }
        if Instant::now() > deadline {
            bail!("the benchmark job did not finish within an hour");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
