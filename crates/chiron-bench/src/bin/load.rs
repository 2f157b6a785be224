//! The service under load: a real `chiron-host` (simulated platform, loopback) with tight
//! limits, N owners at once each uploading the Iris table, training the example MLP on it and
//! querying the model, while flood threads query one other model as fast as the host lets
//! them. Refused requests (429) are retried after a pause, as a client would, and counted by
//! the limit that refused them. Prints throughput, latency percentiles, the host process's
//! peak memory and the refusals, and checks that nothing was lost: every upload complete,
//! every job ended with a state and, if failed, a reason.
//!
//! ```text
//! cargo run --release -p chiron-bench --bin load -- --owners 8 --queries 20 --flood-threads 4
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chiron_attest::Policy;
use chiron_bench::{HostProcess, owner_policy};
use chiron_client::convert::{self, ConvertOptions, PlainDataset};
use chiron_client::owner::{self, EventCursor, JobTicket, QuerySession, TrainingTerms};
use chiron_client::{ClientError, HostClient};
use chiron_crypto::DataKey;
use chiron_proto::api::JobState;
use chiron_proto::owner::AnswerPolicy;
use clap::Parser;

#[derive(Parser)]
#[command(about = "The service under load: concurrent owners and a query flood")]
struct Cli {
    /// Owners working at once, each with its own principal.
    #[arg(long, default_value_t = 8)]
    owners: usize,
    /// Queries each owner sends once its model is trained (10 inputs each).
    #[arg(long, default_value_t = 20)]
    queries: usize,
    /// Threads flooding one model with single-input queries while the owners work.
    #[arg(long, default_value_t = 4)]
    flood_threads: usize,
    /// The host's limits, as its options (the defaults are tight on purpose, to be reached).
    #[arg(
        long,
        allow_hyphen_values = true,
        value_delimiter = ' ',
        default_value = "--max-training-enclaves 4 --max-query-enclaves 6 --query-idle-timeout-secs 5 --max-uploads 4 --requests-per-second 200 --request-burst 200"
    )]
    limits: Vec<String>,
}

/// Requests refused at a limit, by the limit's option name.
#[derive(Default)]
struct Refusals(Mutex<BTreeMap<String, u64>>);

impl Refusals {
    fn note(&self, message: &str) {
        let limit = message.split('`').nth(1).unwrap_or("unnamed").to_owned();
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(limit)
            .or_default() += 1;
    }
}

/// Latencies of one kind of request, in seconds.
#[derive(Default)]
struct Latencies(Mutex<Vec<f64>>);

impl Latencies {
    fn add(&self, since: Instant) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(since.elapsed().as_secs_f64());
    }

    fn row(&self, what: &str, wall: f64) -> String {
        let mut values = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        values.sort_by(f64::total_cmp);
        let at = |p: f64| {
            values
                .get(((values.len().max(1) - 1) as f64 * p).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        format!(
            "| {what} | {} | {:.1}/s | {:.1} ms | {:.1} ms |",
            values.len(),
            values.len() as f64 / wall,
            at(0.5) * 1e3,
            at(0.99) * 1e3
        )
    }
}

/// Everything the threads share.
struct Load {
    url: String,
    policy: Policy,
    program_id: String,
    data: PlainDataset,
    inputs: Vec<f32>,
    refusals: Refusals,
    uploads: Latencies,
    jobs: Latencies,
    queries: Latencies,
    flood: Latencies,
    deadline: Instant,
}

impl Load {
    /// `call` until it is not refused at a limit, pausing between tries.
    fn patiently<T>(
        &self,
        mut call: impl FnMut() -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        loop {
            match call() {
                Err(ClientError::Host {
                    status: 429,
                    message,
                }) if Instant::now() < self.deadline => {
                    self.refusals.note(&message);
                    std::thread::sleep(Duration::from_millis(250));
                }
                other => return other,
            }
        }
    }

    fn terms() -> TrainingTerms {
        TrainingTerms {
            epochs: 30,
            time_budget_secs: 300,
            answers: AnswerPolicy::Label,
            query_budget: 100_000,
            seed: None,
            private: None,
            keep_last_save: true,
        }
    }

    /// One owner's whole visit: upload, train, query.
    fn owner(&self, host: &HostClient, queries: usize) -> anyhow::Result<JobTicket> {
        let key = DataKey::generate();
        let mut container = Vec::new();
        chiron_crypto::encrypt_dataset(
            &key,
            &self.data.header,
            self.data.body.as_slice(),
            &mut container,
        )?;
        let t = Instant::now();
        let dataset = self.patiently(|| host.upload_dataset(&container))?;
        self.uploads.add(t);

        let t = Instant::now();
        let job = self.patiently(|| host.create_job(&self.program_id, &dataset.dataset_id))?;
        let ticket = owner::start_training(
            host,
            &self.policy,
            &job.job_id,
            &self.program_id,
            &self.data.header,
            &key,
            &Self::terms(),
        )?;
        let mut cursor = EventCursor::default();
        loop {
            let (state, _) = self.patiently(|| ticket.events(host, &mut cursor))?;
            match state {
                JobState::Succeeded => break,
                JobState::Failed => {
                    let status = host.job_status(&ticket.job_id)?;
                    bail!("job failed: {}", status.error.unwrap_or_default());
                }
                _ if Instant::now() > self.deadline => bail!("job did not end in time"),
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        self.jobs.add(t);

        let session = self.patiently(|| QuerySession::open(host, &self.policy, &ticket))?;
        for _ in 0..queries {
            let t = Instant::now();
            self.patiently(|| session.query(10, self.inputs.clone()))?;
            self.queries.add(t);
        }
        Ok(ticket)
    }
}

fn iris() -> anyhow::Result<PlainDataset> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../chiron-client/tests/data/iris.csv");
    let opts = ConvertOptions {
        valid_fraction: 0.2,
        limit: None,
        shuffle_seed: Some(1),
    };
    convert::from_csv(&path, "species", &opts).with_context(|| format!("{}", path.display()))
}

/// The host process's peak resident memory (`VmHWM`), MiB.
fn peak_memory_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let limits: Vec<String> = cli.limits.into_iter().filter(|a| !a.is_empty()).collect();
    let service = HostProcess::start_with(&limits)?;
    let provider =
        HostClient::new(&service.url).with_token(&service.add_principal("provider", "provider")?);
    let wasm_path = std::env::current_exe()?
        .parent()
        .context("no directory")?
        .join("../../programs/target/wasm32-unknown-unknown/release/chiron_mlp.wasm");
    let wasm = std::fs::read(&wasm_path)
        .with_context(|| format!("{} (scripts/build.sh builds it)", wasm_path.display()))?;
    let program = provider.register_program(&wasm)?;
    let data = iris()?;
    let inputs: Vec<f32> = convert::load_csv_inputs(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../chiron-client/tests/data/iris.csv"),
        "species",
        &data.class_names,
        data.standardizer.as_ref(),
        Some(10),
    )?
    .features;
    let load = Arc::new(Load {
        url: service.url.clone(),
        policy: owner_policy(&service.dir)?,
        program_id: program.program_id,
        data,
        inputs,
        refusals: Refusals::default(),
        uploads: Latencies::default(),
        jobs: Latencies::default(),
        queries: Latencies::default(),
        flood: Latencies::default(),
        deadline: Instant::now() + Duration::from_secs(600),
    });

    // Every principal is issued first: a token the host has not seen yet waits up to a
    // second for the host's next reload of its principals, which is not what this measures.
    let flooder =
        HostClient::new(&load.url).with_token(&service.add_principal("flooder", "owner")?);
    let tokens = (0..cli.owners)
        .map(|i| service.add_principal(&format!("owner-{i}"), "owner"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    std::thread::sleep(Duration::from_millis(1500));
    // The flooded model: trained first, by an owner of its own.
    let flooded = load.owner(&flooder, 0)?;

    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let flood: Vec<_> = (0..cli.flood_threads)
        .map(|_| {
            let (load, done, host, ticket) = (
                Arc::clone(&load),
                Arc::clone(&done),
                flooder.clone(),
                flooded.clone(),
            );
            std::thread::spawn(move || -> anyhow::Result<()> {
                let session =
                    load.patiently(|| QuerySession::open(&host, &load.policy, &ticket))?;
                let one = load.inputs[..4].to_vec();
                while !done.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    load.patiently(|| session.query(1, one.clone()))?;
                    load.flood.add(t);
                }
                Ok(())
            })
        })
        .collect();
    let mut owners = Vec::new();
    for token in tokens {
        let load = Arc::clone(&load);
        let queries = cli.queries;
        owners.push(std::thread::spawn(move || {
            let host = HostClient::new(&load.url).with_token(&token);
            load.owner(&host, queries).map(|ticket| (host, ticket))
        }));
    }
    let mut failed = Vec::new();
    let mut tickets = Vec::new();
    for owner in owners {
        match owner.join() {
            Ok(Ok(done)) => tickets.push(done),
            Ok(Err(e)) => failed.push(e.to_string()),
            Err(_) => failed.push("owner thread panicked".into()),
        }
    }
    done.store(true, Ordering::Relaxed);
    for thread in flood {
        if let Ok(Err(e)) = thread.join() {
            failed.push(format!("flood: {e}"));
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let peak = peak_memory_mib(service.pid());

    // Nothing lost: every job the host accepted ended, succeeded or with its reason.
    let mut unended = 0;
    for (host, ticket) in &tickets {
        let status = host.job_status(&ticket.job_id)?;
        let ended = match status.state {
            JobState::Succeeded => true,
            JobState::Failed => status.error.is_some(),
            _ => false,
        };
        if !ended {
            unended += 1;
        }
    }

    println!(
        "\n{} owners at once ({} queries of 10 inputs each) and {} threads flooding one model, {:.1} s",
        cli.owners, cli.queries, cli.flood_threads, wall
    );
    println!("host limits: {}\n", limits.join(" "));
    println!("| requests | count | throughput | p50 | p99 |");
    println!("|---|---|---|---|---|");
    println!(
        "{}",
        load.uploads.row("dataset upload (Iris, resumable)", wall)
    );
    println!(
        "{}",
        load.jobs.row("job: create to Succeeded (30 epochs)", wall)
    );
    println!("{}", load.queries.row("owners' queries (10 inputs)", wall));
    println!(
        "{}",
        load.flood.row("flood queries (1 input, one model)", wall)
    );
    println!(
        "\nhost peak memory: {}",
        peak.map_or("unknown".into(), |mib| format!("{mib:.0} MiB"))
    );
    let refusals = load.refusals.0.lock().unwrap_or_else(|e| e.into_inner());
    println!(
        "refusals (429, retried): {}",
        if refusals.is_empty() {
            "none".to_owned()
        } else {
            refusals
                .iter()
                .map(|(limit, n)| format!("{limit} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    println!(
        "owners finished: {} of {}; jobs not ended: {unended}; errors: {failed:?}",
        tickets.len(),
        cli.owners
    );
    if !failed.is_empty() || unended > 0 {
        bail!("work was lost under load");
    }
    Ok(())
}
