//! `chiron`: the command-line tool for data owners and providers.
//!
//! A thin shell over `chiron_client`; see `chiron --help`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use chiron_client::convert::{self, ConvertOptions, LabelledInputs, PlainDataset, Standardizer};
use chiron_client::owner::{self, JobTicket, PrivateTerms, QuerySession, TrainingTerms};
use chiron_client::{ClientError, HostClient};
use chiron_crypto::{DataKey, Policy};
use chiron_proto::api::JobState;
use chiron_proto::manifest::TermsError;
use chiron_proto::owner::{AnswerPolicy, MAX_TOP_K, OwnerEvent};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

#[derive(Parser)]
#[command(
    version,
    about = "Chiron: train on a provider's model without showing them your data"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Provider: registers a training program (.wasm) with the host; prints its id.
    Register {
        /// The host's URL.
        #[arg(long, default_value = "http://127.0.0.1:7700")]
        host: String,
        /// The compiled program.
        wasm: PathBuf,
    },
    /// Prints the measurement (hex SHA-256) of an enclave runtime binary you built or
    /// obtained from a reproducible build: the value to pass as `--expect-measurement`.
    Measure {
        /// The enclave binary.
        binary: PathBuf,
    },
    /// Owner: encrypts a dataset locally, uploads it, verifies the training enclave, releases
    /// the key to it and follows training.
    Train(TrainArgs),
    /// Owner: queries the trained model with a labelled test set and prints the accuracy.
    Evaluate(EvaluateArgs),
}

#[derive(Args)]
struct Trust {
    /// The enclave runtime measurement you accept (hex); repeat for several.
    #[arg(long = "expect-measurement", required = true)]
    measurements: Vec<String>,
    /// File holding the simulated platform's public key (hex). INSECURE: accepting a
    /// simulated platform means trusting whoever runs it.
    #[arg(long)]
    sim_platform_pub: PathBuf,
}

impl Trust {
    fn policy(&self) -> anyhow::Result<Policy> {
        let measurements = self
            .measurements
            .iter()
            .map(|m| parse_hex32(m).with_context(|| format!("bad measurement `{m}`")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let text = std::fs::read_to_string(&self.sim_platform_pub)
            .with_context(|| format!("cannot read {}", self.sim_platform_pub.display()))?;
        let platform = parse_hex32(text.trim()).context("bad simulated platform key")?;
        Ok(Policy::new(measurements).dangerous_accept_simulated_platform(platform))
    }
}

#[derive(Args)]
struct DataArgs {
    /// IDX image file (MNIST / Fashion-MNIST layout, optionally gzipped).
    #[arg(long, requires = "idx_labels", conflicts_with = "csv")]
    idx_images: Option<PathBuf>,
    /// IDX label file matching `--idx-images`.
    #[arg(long)]
    idx_labels: Option<PathBuf>,
    /// CSV file with a header row.
    #[arg(long, requires = "label_column")]
    csv: Option<PathBuf>,
    /// The CSV column holding the class.
    #[arg(long)]
    label_column: Option<String>,
    /// Use only the first N examples.
    #[arg(long)]
    limit: Option<usize>,
}

#[derive(Args)]
struct TrainArgs {
    /// The host's URL.
    #[arg(long, default_value = "http://127.0.0.1:7700")]
    host: String,
    /// The provider program to train with (its id, as printed by `register`).
    #[arg(long)]
    program: String,
    #[command(flatten)]
    data: DataArgs,
    /// Fraction of the examples held out for validation metrics.
    #[arg(long, default_value_t = 0.1)]
    valid_fraction: f32,
    /// Epochs the program may train for.
    #[arg(long, default_value_t = 3)]
    epochs: u32,
    /// Wall-clock budget in seconds; a private job always lasts it (default: 900 for a live
    /// job; for a private one, sized from the dataset and the program's declared needs).
    #[arg(long)]
    time_budget: Option<u32>,
    /// Answer with the k best classes instead of the label only (at most what the program's
    /// extraction policy allows).
    #[arg(long)]
    top_k: Option<u8>,
    /// Inputs the model may answer over its whole life (default: the most the program's
    /// extraction policy allows).
    #[arg(long)]
    query_budget: Option<u64>,
    #[command(flatten)]
    trust: Trust,
    /// Where to keep the job's ticket (contains secrets; created with mode 0600).
    #[arg(long, default_value = "chiron-job.json")]
    ticket: PathBuf,
    /// Seed of the training run's random stream, 64 hex digits (default: fresh and random).
    /// A fixed seed makes the run reproducible.
    #[arg(long)]
    seed: Option<String>,
    /// Report progress live instead of privately. DISCLOSES to the platform (and so to the
    /// provider) the job's run time, its number of progress events, the training enclave's
    /// peak memory, the sealed model's size and every query's latency, each of which the
    /// provider's program can make depend on your data.
    #[arg(long, conflicts_with_all = ["private", "private_memory_mib", "private_model_mib", "private_answer_ms"])]
    live: bool,
    /// Private mode, the default (kept for scripts written when live was the default): the
    /// platform sees the declared figures only. The enclave holds all progress reports until
    /// the time budget has passed, the job always lasts its whole budget, its peak memory is
    /// always `--private-memory-mib` and its model `--private-model-mib`.
    #[arg(long, alias = "private-timing")]
    private: bool,
    /// The training enclave's declared peak memory in MiB (a job that needs more fails;
    /// default: sized from the dataset and the program's declared needs).
    #[arg(long)]
    private_memory_mib: Option<u32>,
    /// The sealed model's declared size in MiB (a larger model fails the job; at most 63;
    /// default: the program's declared size plus 1 MiB).
    #[arg(long)]
    private_model_mib: Option<u32>,
    /// Every query is answered exactly this many milliseconds after it reaches the query
    /// enclave (a query the program cannot answer in time is unanswered; default 1000).
    #[arg(long)]
    private_answer_ms: Option<u32>,
}

#[derive(Args)]
struct EvaluateArgs {
    /// The host's URL.
    #[arg(long, default_value = "http://127.0.0.1:7700")]
    host: String,
    /// The job's ticket written by `train`.
    #[arg(long, default_value = "chiron-job.json")]
    ticket: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Inputs per query.
    #[arg(long, default_value_t = 250)]
    batch: usize,
    #[command(flatten)]
    trust: Trust,
}

/// The owner's local record of a job: the ticket plus what is needed to encode queries.
#[derive(Serialize, Deserialize)]
struct OwnerRecord {
    ticket: JobTicket,
    class_names: Vec<String>,
    standardizer: Option<Standardizer>,
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Register { host, wasm } => {
            let bytes =
                std::fs::read(&wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
            let created = HostClient::new(&host).register_program(&bytes)?;
            eprintln!(
                "extraction policy: {}{}",
                created.policy.manifest,
                if created.policy.declared {
                    ""
                } else {
                    " (no manifest in the program: the default policy)"
                }
            );
            println!("{}", created.program_id);
            Ok(())
        }
        Command::Measure { binary } => {
            let m = chiron_crypto::measure_file(&binary)
                .with_context(|| format!("cannot read {}", binary.display()))?;
            println!("{}", hex::encode(m));
            Ok(())
        }
        Command::Train(args) => train(args),
        Command::Evaluate(args) => evaluate(args),
    }
}

fn load_training_data(data: &DataArgs, valid_fraction: f32) -> anyhow::Result<PlainDataset> {
    let opts = ConvertOptions {
        valid_fraction,
        limit: data.limit,
        shuffle_seed: Some(0),
    };
    match (
        &data.idx_images,
        &data.idx_labels,
        &data.csv,
        &data.label_column,
    ) {
        (Some(images), Some(labels), None, _) => Ok(convert::from_idx(images, labels, &opts)?),
        (None, None, Some(csv), Some(column)) => Ok(convert::from_csv(csv, column, &opts)?),
        _ => bail!("give either --idx-images with --idx-labels, or --csv with --label-column"),
    }
}

fn train(args: TrainArgs) -> anyhow::Result<()> {
    let policy = args.trust.policy()?;
    let host = HostClient::new(&args.host);
    // The provider's extraction policy, before anything leaves this machine: terms beyond it
    // would only be refused by the enclave after the upload.
    let program = host.program(&args.program)?;
    let manifest = program.policy.manifest;
    let answers = args.top_k.map_or(AnswerPolicy::Label, AnswerPolicy::TopK);
    let query_budget = args.query_budget.unwrap_or(manifest.max_queries());
    manifest
        .permits(answers, query_budget)
        .map_err(refused_terms)?;
    eprintln!(
        "program {}: {} ({}); this model: {query_budget} queries, {answers}",
        program.program_id,
        manifest,
        if program.policy.declared {
            "the provider's manifest"
        } else {
            "no manifest: the default policy"
        },
    );
    let plain = load_training_data(&args.data, args.valid_fraction)?;
    let header = plain.header.clone();
    eprintln!(
        "dataset: {:?} {:?}, {} classes, {} training + {} validation examples",
        header.kind, header.dims, header.classes, header.train_count, header.valid_count
    );
    let (time_budget_secs, private) = if args.live {
        eprintln!("{LIVE_WARNING}");
        (args.time_budget.unwrap_or(LIVE_TIME_BUDGET_SECS), None)
    } else {
        // What the owner did not give is sized from public figures: the dataset's header
        // and the needs the program declares.
        let sized = owner::size_private_job(&header, &manifest.needs(), args.epochs)?;
        let terms = PrivateTerms {
            memory_mib: args.private_memory_mib.unwrap_or(sized.terms.memory_mib),
            model_mib: args.private_model_mib.unwrap_or(sized.terms.model_mib),
            answer_ms: args.private_answer_ms.unwrap_or(sized.terms.answer_ms),
        };
        terms
            .validate()
            .with_context(|| "the private figures cannot be honoured; nothing was uploaded")?;
        let time_budget_secs = args.time_budget.unwrap_or(sized.time_budget_secs);
        eprintln!(
            "private job (the platform sees only these figures; --live to follow progress): \
             {time_budget_secs} s, {} MiB of memory, a {} MiB model, answers {} ms after each \
             query",
            terms.memory_mib, terms.model_mib, terms.answer_ms
        );
        (time_budget_secs, Some(terms))
    };

    let key = DataKey::generate();
    let mut container = Vec::new();
    chiron_crypto::encrypt_dataset(&key, &header, plain.body.as_slice(), &mut container)?;
    drop(plain.body);
    let dataset = host.upload_dataset(&container)?;
    drop(container);
    eprintln!("uploaded encrypted dataset {}", dataset.dataset_id);

    let job = host.create_job(&args.program, &dataset.dataset_id)?;
    let terms = TrainingTerms {
        epochs: args.epochs,
        time_budget_secs,
        answers,
        query_budget,
        seed: args.seed.as_deref().map(parse_seed).transpose()?,
        private,
    };
    let ticket = owner::start_training(
        &host,
        &policy,
        &job.job_id,
        &args.program,
        &header,
        &key,
        &terms,
    )?;
    eprintln!(
        "enclave attested; data key released to job {}",
        ticket.job_id
    );
    let record = OwnerRecord {
        ticket,
        class_names: plain.class_names,
        standardizer: plain.standardizer,
    };
    write_secret(&args.ticket, &serde_json::to_vec_pretty(&record)?)?;
    if private.is_some() {
        eprintln!(
            "private mode: progress is held until the {time_budget_secs} s budget has passed"
        );
    }
    follow(&host, &record.ticket, args.epochs)
}

/// The time budget of a live job whose owner gives none.
const LIVE_TIME_BUDGET_SECS: u32 = 900;

/// What `--live` gives away, said before anything is uploaded.
const LIVE_WARNING: &str = "warning: --live discloses to the platform, and so to the provider, \
    this job's run time, its number of progress events, the training enclave's peak memory, \
    the sealed model's size and every query's latency; the provider's program chooses all of \
    them and can make them depend on your data (tens of bits per job). Leave out --live to \
    keep them private.";

/// Terms beyond the program's policy, said in the CLI's own words: which limit, and which
/// flag to change.
fn refused_terms(e: TermsError) -> anyhow::Error {
    let what = match e {
        TermsError::QueryBudget { asked, allowed } => format!(
            "--query-budget {asked} is above the program's maximum of {allowed} queries per \
             model: pass --query-budget {allowed} or less, or leave it out to take the maximum"
        ),
        TermsError::Answers { asked, allowed } => format!(
            "--top-k asks for {asked} answers, finer than the program allows ({allowed}): {}",
            match allowed {
                AnswerPolicy::TopK(k) if k > 1 => format!("pass --top-k {k} or less"),
                _ => "leave out --top-k (label answers only)".to_owned(),
            }
        ),
        TermsError::InvalidAnswers => format!("--top-k must be between 1 and {MAX_TOP_K}"),
    };
    anyhow::anyhow!(
        "the provider's extraction policy refuses these terms: {what}; nothing was uploaded"
    )
}

fn follow(host: &HostClient, ticket: &JobTicket, epochs: u32) -> anyhow::Result<()> {
    let bar = ProgressBar::new(u64::from(epochs));
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} training [{elapsed_precise}] {bar:30} epoch {pos}/{len} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut next = 0u64;
    loop {
        let (state, events) = ticket.events(host, next)?;
        next += events.len() as u64;
        for event in events {
            match event {
                OwnerEvent::Started { .. } => bar.set_message("running"),
                OwnerEvent::Padding => {}
                OwnerEvent::Metric { name, epoch, value } => {
                    bar.set_position(u64::from(epoch + 1).min(u64::from(epochs)));
                    let line = format!("epoch {epoch}: {name} = {value:.4}");
                    // A hidden bar (output not a terminal) swallows `println`.
                    if bar.is_hidden() {
                        eprintln!("{line}");
                    } else {
                        bar.println(line);
                    }
                }
                OwnerEvent::Finished {
                    parameters,
                    peak_memory_mib,
                } => {
                    bar.finish_with_message(format!(
                        "done ({parameters} parameters, peak memory {peak_memory_mib} MiB)"
                    ));
                    if bar.is_hidden() {
                        eprintln!(
                            "training finished in {:.1} s: model of {parameters} parameters \
                             sealed; the enclave's peak memory was {peak_memory_mib} MiB",
                            bar.elapsed().as_secs_f64()
                        );
                    }
                }
                OwnerEvent::Failed { detail } => {
                    bar.abandon_with_message("failed");
                    bail!("training failed: {detail}");
                }
            }
        }
        match state {
            JobState::Succeeded if bar.is_finished() => return Ok(()),
            // Its events are stored before its state changes: the host held them back.
            JobState::Succeeded => return Err(ClientError::WithheldEvents.into()),
            JobState::Failed if bar.is_finished() => bail!("training failed"),
            JobState::Failed => {
                // The enclave may have died before it could say why.
                let status = host.job_status(&ticket.job_id)?;
                bar.abandon_with_message("failed");
                bail!(
                    "training failed: {}",
                    status.error.unwrap_or_else(|| "no reason given".into())
                );
            }
            _ => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

fn parse_seed(text: &str) -> anyhow::Result<[u8; 32]> {
    hex::decode(text)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .with_context(|| format!("--seed must be 64 hex digits, not `{text}`"))
}

fn evaluate(args: EvaluateArgs) -> anyhow::Result<()> {
    let policy = args.trust.policy()?;
    let host = HostClient::new(&args.host);
    let text = std::fs::read(&args.ticket)
        .with_context(|| format!("cannot read ticket {}", args.ticket.display()))?;
    let record: OwnerRecord = serde_json::from_slice(&text).context("the ticket is damaged")?;
    let inputs = load_inputs(&args.data, &record)?;
    let session = QuerySession::open(&host, &policy, &record.ticket)?;
    eprintln!("query enclave attested");
    let feature_len = record.ticket.header.feature_len();
    let width = record.ticket.answers.width();
    let n = inputs.labels.len();
    let bar = ProgressBar::new(n as u64);
    let (mut correct, mut top_k_correct) = (0usize, 0usize);
    let batch = args.batch.max(1);
    for start in (0..n).step_by(batch) {
        let end = (start + batch).min(n);
        let values = inputs.features[start * feature_len..end * feature_len].to_vec();
        let answer = session.query(end - start, values)?;
        for (row, &label) in answer
            .classes
            .chunks_exact(width)
            .zip(&inputs.labels[start..end])
        {
            correct += usize::from(row[0] == label);
            top_k_correct += usize::from(row.contains(&label));
        }
        bar.inc((end - start) as u64);
    }
    bar.finish_and_clear();
    println!(
        "accuracy on {n} held-out examples through black-box queries: {:.2}%",
        100.0 * correct as f64 / n.max(1) as f64
    );
    if width > 1 {
        println!(
            "top-{width} accuracy: {:.2}%",
            100.0 * top_k_correct as f64 / n.max(1) as f64
        );
    }
    Ok(())
}

fn load_inputs(data: &DataArgs, record: &OwnerRecord) -> anyhow::Result<LabelledInputs> {
    match (
        &data.idx_images,
        &data.idx_labels,
        &data.csv,
        &data.label_column,
    ) {
        (Some(images), Some(labels), None, _) => {
            Ok(convert::load_idx_inputs(images, labels, data.limit)?)
        }
        (None, None, Some(csv), Some(column)) => Ok(convert::load_csv_inputs(
            csv,
            column,
            &record.class_names,
            record.standardizer.as_ref(),
            data.limit,
        )?),
        _ => bail!("give either --idx-images with --idx-labels, or --csv with --label-column"),
    }
}

fn parse_hex32(text: &str) -> anyhow::Result<[u8; 32]> {
    hex::decode(text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .context("expected 64 hex digits")
}

fn write_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}
