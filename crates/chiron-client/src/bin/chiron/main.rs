//! `chiron`: the command-line tool for data owners and providers.
//!
//! A thin shell over `chiron_client`; see `chiron --help`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use chiron_attest::Policy;
use chiron_attest::policy::DcapTcbStatus;
use chiron_client::convert::{
    self, ConvertOptions, DataSource, Inputs, LabelledInputs, PlainDataset,
};
use chiron_client::owner::{self, ExchangeTerms, TrainingTerms};
use chiron_client::record::{OwnerRecord, ProgramRecord};
use chiron_client::{ClientError, HostClient};
use chiron_crypto::DataKey;
use chiron_proto::manifest::TermsError;
use chiron_proto::owner::{AnswerPolicy, MAX_TOP_K, Pace, Rounds};
use clap::{Args, Parser, Subcommand};

mod jobs;
mod new_program;
mod queries;

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
    /// Provider: checks a program (.wasm) as the enclave will load it (only the Chiron ABI
    /// imported, `chiron_train`, `chiron_predict` and `memory` exported) and prints its
    /// extraction policy; the host runs the same check at registration.
    Check {
        /// The compiled program.
        wasm: PathBuf,
    },
    /// Provider: trains a program (.wasm) in the same sandbox the enclave uses, on plaintext
    /// data the provider owns, showing its `chiron_sdk::println!` lines, panic messages and
    /// metrics here. Never for an owner's data: that only ever goes to an enclave.
    RunLocal(RunLocalArgs),
    /// Provider: creates a new program's crate from the template, ready to build for the
    /// sandbox.
    NewProgram(new_program::NewProgramArgs),
    /// Provider: registers a training program (.wasm) with the host; prints its id.
    Register {
        #[command(flatten)]
        host: HostArgs,
        /// The compiled program.
        wasm: PathBuf,
    },
    /// Prints what to pin for an enclave runtime: the simulated measurement (hex SHA-256) of a
    /// binary you built or obtained from a reproducible build (`--sim-measurement`), or the
    /// SGX identity in a signed Gramine enclave's SIGSTRUCT (`--sgx-mrenclave`, ...).
    Measure {
        /// The enclave binary (simulated platform).
        #[arg(
            required_unless_present = "sgx_sigstruct",
            conflicts_with = "sgx_sigstruct"
        )]
        binary: Option<PathBuf>,
        /// The `.sig` file `gramine-sgx-sign` wrote for the enclave's manifest.
        #[arg(long, value_name = "FILE")]
        sgx_sigstruct: Option<PathBuf>,
    },
    /// Owner: encrypts a dataset locally, uploads it, verifies the training enclave, releases
    /// the key to it and follows training.
    Train(TrainArgs),
    /// Owner: follows a job to its end, as `train` does (after an interruption, say).
    Attach(jobs::TicketArgs),
    /// Owner: a job's state, failure reason, seed and metrics so far.
    Status(jobs::StatusArgs),
    /// Owner: the tickets in a folder, each with its job's state.
    Jobs(jobs::JobsArgs),
    /// Owner: queries the trained model with a labelled test set and prints its accuracy,
    /// per-class precision and recall, and confusion matrix.
    Evaluate(queries::EvaluateArgs),
    /// Owner: the trained model's answers on unlabelled inputs, as CSV.
    Predict(queries::PredictArgs),
}

/// What the owner accepts as an enclave: reference values for each TEE, and the platform
/// state (TCB) tolerated. With none given, nothing is accepted. Each flag is one rule of the
/// policy file format (`chiron_attest::Policy::parse_spec`), which `--policy` reads whole.
#[derive(Args)]
struct Trust {
    /// A policy file (one rule per line: `sgx-mrenclave HEX`, `tdx-mrtd HEX`, ...); the flags
    /// below add to it.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// SGX: an MRENCLAVE you accept (hex, as `chiron measure --sgx-sigstruct` prints it);
    /// repeat for several.
    #[arg(long = "sgx-mrenclave", value_name = "HEX")]
    sgx_mrenclaves: Vec<String>,
    /// SGX: accept any enclave of this signer (hex MRSIGNER) with `--sgx-isv-prod-id` and at
    /// least `--sgx-min-isv-svn`.
    #[arg(long, value_name = "HEX", requires_all = ["sgx_isv_prod_id", "sgx_min_isv_svn"])]
    sgx_mrsigner: Option<String>,
    /// SGX: the product id that goes with `--sgx-mrsigner`.
    #[arg(long, requires = "sgx_mrsigner")]
    sgx_isv_prod_id: Option<u16>,
    /// SGX: the lowest security version that goes with `--sgx-mrsigner`.
    #[arg(long, requires = "sgx_mrsigner")]
    sgx_min_isv_svn: Option<u16>,
    /// TDX: an MRTD you accept (hex, 48 bytes); repeat for several.
    #[arg(long = "tdx-mrtd", value_name = "HEX")]
    tdx_mrtds: Vec<String>,
    /// TDX: RTMR0..3 that must also match, as four comma-separated hex values (`-` for one
    /// not checked); applies to every `--tdx-mrtd`.
    #[arg(long, value_name = "HEX,HEX,HEX,HEX", requires = "tdx_mrtds")]
    tdx_rtmrs: Option<String>,
    /// SEV-SNP: a launch measurement you accept (hex, 48 bytes); repeat for several.
    #[arg(long = "snp-measurement", value_name = "HEX")]
    snp_measurements: Vec<String>,
    /// SEV-SNP: the lowest TCB accepted, as `bootloader:tee:snp:microcode`.
    #[arg(long, value_name = "B:T:S:M")]
    snp_min_tcb: Option<String>,
    /// SEV-SNP: accept hosts with simultaneous multithreading enabled.
    #[arg(long)]
    snp_allow_smt: bool,
    /// SGX/TDX: also accept platforms with this TCB status (default: UpToDate only), if every
    /// advisory that applies is accepted with `--accept-advisory`; repeat for several.
    #[arg(
        long = "accept-tcb-status",
        value_name = "STATUS",
        value_parser = clap::builder::PossibleValuesParser::new(DcapTcbStatus::ALL.map(DcapTcbStatus::name)),
    )]
    tcb_statuses: Vec<String>,
    /// SGX/TDX: an Intel security advisory you accept (e.g. INTEL-SA-00615); repeat.
    #[arg(long = "accept-advisory", value_name = "ID")]
    advisories: Vec<String>,
    /// Vendor endorsements you hold (DCAP collateral JSON for SGX/TDX, the VCEK or VLEK DER
    /// for SEV-SNP), used when the evidence carries none: `TEE=FILE`, e.g.
    /// `sgx=collateral.json`; repeat.
    #[arg(long = "endorsements", value_name = "TEE=FILE")]
    endorsements: Vec<String>,
    /// INSECURE, development only: accept the simulated platform whose public key (hex) is in
    /// FILE. A simulated platform proves nothing; whoever runs it can forge evidence and read
    /// your data.
    #[arg(long, value_name = "FILE", requires = "sim_measurements")]
    dangerous_sim_platform: Option<PathBuf>,
    /// With `--dangerous-sim-platform`: a runtime measurement you accept (hex SHA-256, as
    /// `chiron measure BINARY` prints it); repeat for several.
    #[arg(
        long = "sim-measurement",
        value_name = "HEX",
        requires = "dangerous_sim_platform"
    )]
    sim_measurements: Vec<String>,
}

/// One policy-file rule from command-line values, which must each be one word.
fn rule(name: &str, values: &[&str]) -> anyhow::Result<String> {
    for value in values {
        anyhow::ensure!(
            !value.is_empty() && !value.contains(|c: char| c.is_whitespace() || c == '#'),
            "bad value `{value}` for {name}"
        );
    }
    Ok(format!("{name} {}\n", values.join(" ")))
}

impl Trust {
    fn policy(&self) -> anyhow::Result<Policy> {
        Ok(self.policy_with_spec()?.0)
    }

    /// The policy, and the policy file it was read from (what a distributed job's enclaves
    /// hold each other to). Endorsement files stay with the owner: the enclaves verify each
    /// other with the endorsements that travel inside evidence.
    fn policy_with_spec(&self) -> anyhow::Result<(Policy, String)> {
        use chiron_proto::evidence::TeeKind;
        let mut spec = match &self.policy {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the policy {}", path.display()))?,
            None => String::new(),
        };
        spec.push('\n');
        for m in &self.sgx_mrenclaves {
            spec += &rule("sgx-mrenclave", &[m])?;
        }
        if let (Some(signer), Some(product), Some(svn)) = (
            &self.sgx_mrsigner,
            self.sgx_isv_prod_id,
            self.sgx_min_isv_svn,
        ) {
            spec += &rule(
                "sgx-mrsigner",
                &[signer, &product.to_string(), &svn.to_string()],
            )?;
        }
        for m in &self.tdx_mrtds {
            let mut values = vec![m.as_str()];
            values.extend(self.tdx_rtmrs.as_deref());
            spec += &rule("tdx-mrtd", &values)?;
        }
        for m in &self.snp_measurements {
            spec += &rule("snp-measurement", &[m])?;
        }
        if let Some(tcb) = &self.snp_min_tcb {
            spec += &rule("snp-min-tcb", &[tcb])?;
        }
        if self.snp_allow_smt {
            spec += &rule("snp-allow-smt", &[])?;
        }
        for status in &self.tcb_statuses {
            spec += &rule("accept-tcb-status", &[status])?;
        }
        for id in &self.advisories {
            spec += &rule("accept-advisory", &[id])?;
        }
        if let Some(path) = &self.dangerous_sim_platform {
            let key = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            for m in &self.sim_measurements {
                spec += &rule("dangerous-simulated-platform", &[key.trim(), m])?;
            }
        }
        // Line numbers count the policy file's lines, then one line for each flag's rule.
        let mut policy = Policy::parse_spec(&spec).map_err(anyhow::Error::msg)?;
        for entry in &self.endorsements {
            policy = policy
                .with_endorsements_file(entry)
                .map_err(anyhow::Error::msg)?;
        }
        anyhow::ensure!(
            TeeKind::ALL.into_iter().any(|t| policy.accepts_tee(t)),
            "no enclave would be accepted: give the reference values you pin \
             (--sgx-mrenclave, --sgx-mrsigner, --tdx-mrtd or --snp-measurement, or --policy)"
        );
        Ok((policy, spec))
    }
}

/// The owner's data: exactly one source, in one of the formats understood.
#[derive(Args)]
struct DataArgs {
    /// IDX image file (MNIST / Fashion-MNIST layout, optionally gzipped).
    #[arg(long, help_heading = "Data")]
    idx_images: Option<PathBuf>,
    /// IDX label file matching `--idx-images` (`predict` needs none).
    #[arg(long, requires = "idx_images", help_heading = "Data")]
    idx_labels: Option<PathBuf>,
    /// CSV table, raw or gzipped; by default its first line names the columns.
    #[arg(long, help_heading = "Data")]
    csv: Option<PathBuf>,
    /// The CSV column holding the class (its position `0`, `1`, ... with `--csv-no-header`);
    /// `predict` leaves it out if the file has it.
    #[arg(long, requires = "csv", help_heading = "Data")]
    label_column: Option<String>,
    /// The CSV line (from 0) that names the columns; the lines before it are skipped.
    #[arg(long, value_name = "N", requires = "csv", help_heading = "Data")]
    csv_header_row: Option<usize>,
    /// No CSV line names the columns: they are `0`, `1`, ... by position (with
    /// `--csv-header-row N`, lines 0 to N are skipped, as scikit-learn's count line is).
    #[arg(long, requires = "csv", help_heading = "Data")]
    csv_no_header: bool,
    /// A folder of PNG or JPEG images with one subfolder per class, named by the class.
    #[arg(long, value_name = "DIR", help_heading = "Data")]
    image_folder: Option<PathBuf>,
    /// CIFAR-10 or CIFAR-100 binary batch files (`data_batch_1.bin` ..., `train.bin`).
    #[arg(long, num_args = 1.., value_name = "FILE", help_heading = "Data")]
    cifar: Vec<PathBuf>,
    /// Which CIFAR labels the files hold: `10`, `100` (the fine classes) or `100-coarse`.
    #[arg(long, default_value = "10", value_parser = ["10", "100", "100-coarse"], help_heading = "Data")]
    cifar_labels: String,
    /// NumPy `.npy` features array: `[n, rows, cols]` or `[n, channels, rows, cols]` images
    /// (uint8 pixels), or `[n, columns]` tables.
    #[arg(long, value_name = "FILE", help_heading = "Data")]
    npy: Option<PathBuf>,
    /// NumPy `.npy` labels array (integers) for `--npy` (`predict` needs none).
    #[arg(long, value_name = "FILE", requires = "npy", help_heading = "Data")]
    npy_labels: Option<PathBuf>,
    /// NumPy `.npz` archive holding the features and labels arrays.
    #[arg(long, value_name = "FILE", help_heading = "Data")]
    npz: Option<PathBuf>,
    /// The features array's name in `--npz` (default: `x`, else `x_train`).
    #[arg(long, value_name = "NAME", requires = "npz", help_heading = "Data")]
    npz_features: Option<String>,
    /// The labels array's name in `--npz` (default: `y`, else `y_train`).
    #[arg(long, value_name = "NAME", requires = "npz", help_heading = "Data")]
    npz_labels: Option<String>,
    /// Use only the first N examples.
    #[arg(long, help_heading = "Data")]
    limit: Option<usize>,
}

impl DataArgs {
    /// The one source the flags name.
    fn source(&self) -> anyhow::Result<DataSource> {
        let mut sources = Vec::new();
        if let Some(images) = &self.idx_images {
            sources.push(DataSource::Idx(convert::idx::IdxFiles {
                images: images.clone(),
                labels: self.idx_labels.clone(),
            }));
        }
        if let Some(path) = &self.csv {
            sources.push(DataSource::Csv(convert::csv::CsvFile {
                path: path.clone(),
                label_column: self.label_column.clone(),
                header: convert::csv::CsvHeader::from_flags(
                    self.csv_header_row,
                    self.csv_no_header,
                ),
            }));
        }
        if let Some(dir) = &self.image_folder {
            sources.push(DataSource::ImageFolder(
                convert::image_folder::ImageFolder { dir: dir.clone() },
            ));
        }
        if !self.cifar.is_empty() {
            sources.push(DataSource::Cifar(convert::cifar::CifarFiles {
                files: self.cifar.clone(),
                labels: match self.cifar_labels.as_str() {
                    "100" => convert::cifar::CifarLabels::Cifar100Fine,
                    "100-coarse" => convert::cifar::CifarLabels::Cifar100Coarse,
                    _ => convert::cifar::CifarLabels::Cifar10,
                },
            }));
        }
        if let Some(features) = &self.npy {
            sources.push(DataSource::Npy(convert::numpy::NpyFiles {
                features: features.clone(),
                labels: self.npy_labels.clone(),
            }));
        }
        if let Some(path) = &self.npz {
            sources.push(DataSource::Npz(convert::numpy::NpzFile {
                path: path.clone(),
                features_key: self.npz_features.clone(),
                labels_key: self.npz_labels.clone(),
            }));
        }
        match sources.len() {
            1 => Ok(sources.remove(0)),
            0 => bail!(
                "no data given: name it with one of --idx-images, --csv, --image-folder,                  --cifar, --npy or --npz"
            ),
            _ => bail!(
                "several data sources given: name exactly one of --idx-images, --csv,                  --image-folder, --cifar, --npy or --npz"
            ),
        }
    }

    /// The training set, `valid_fraction` of it held out.
    fn training(&self, valid_fraction: f32) -> anyhow::Result<PlainDataset> {
        let opts = ConvertOptions {
            valid_fraction,
            limit: self.limit,
            shuffle_seed: Some(0),
        };
        Ok(self.source()?.load_training(&opts)?)
    }

    /// Labelled query inputs, encoded as the model of `record` was trained.
    fn labelled(&self, record: &OwnerRecord) -> anyhow::Result<LabelledInputs> {
        Ok(self.source()?.load_labelled(
            &record.class_names,
            record.standardizer.as_ref(),
            self.limit,
        )?)
    }

    /// Unlabelled query inputs, encoded as the model of `record` was trained.
    fn unlabelled(&self, record: &OwnerRecord) -> anyhow::Result<Inputs> {
        Ok(self
            .source()?
            .load_unlabelled(record.standardizer.as_ref(), self.limit)?)
    }
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    host: HostArgs,
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
    /// Answer each class with its probability (where the program's extraction policy allows
    /// scores).
    #[arg(long)]
    scores: bool,
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
    /// Training enclaves: more than 1 trains one model on that many enclaves, each on its
    /// share of the training examples, through a parameter server (synchronous rounds of
    /// averaged gradients).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    workers: u32,
    /// A private distributed job's exchange tick in milliseconds: every worker sends one
    /// message per tick and its parameter server answers each, so a step takes at least one
    /// tick. Public, like the rest of the schedule.
    #[arg(long, default_value_t = 200)]
    exchange_tick_ms: u32,
    /// A distributed job's checkpoint interval in rounds (a private job: exchange ticks):
    /// the parameter server seals its state this often (and once when its workers have
    /// connected), and a lost server is replaced from the latest (0: never).
    #[arg(long, default_value_t = 100)]
    checkpoint_every: u32,
    /// A live distributed job's rounds are asynchronous: each worker's step is applied as it
    /// comes, unless its parameters are more than this many updates old (default:
    /// synchronous rounds, every step averaged over all workers).
    #[arg(long, value_name = "MAX_STALENESS")]
    asynchronous: Option<u32>,
    /// A distributed job's exchange message size in KiB, in both directions (default: the
    /// exchange size the program declares, or else its model size plus 1 MiB): the model's
    /// parameters must fit.
    #[arg(long)]
    exchange_kib: Option<u32>,
    /// Fail the job when its time budget runs out. By default the model the program saved
    /// last (programs save at each epoch's end) is kept and answers queries.
    #[arg(long)]
    no_partial_model: bool,
}

#[derive(Args)]
struct RunLocalArgs {
    /// The compiled program.
    wasm: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Fraction of the examples held out as the validation split.
    #[arg(long, default_value_t = 0.1)]
    valid_fraction: f32,
    /// Epochs the program may train for.
    #[arg(long, default_value_t = 3)]
    epochs: u32,
    /// Wall-clock budget in seconds.
    #[arg(long, default_value_t = 900)]
    time_budget: u32,
    /// The run's random stream (64 hex digits; default: zeros, so runs repeat).
    #[arg(long)]
    seed: Option<String>,
    /// Fail when the time budget runs out, instead of keeping the model the program saved
    /// last, as a job does.
    #[arg(long)]
    no_partial_model: bool,
}

/// Which host, and who calls it.
#[derive(Args)]
struct HostArgs {
    /// The host's URL.
    #[arg(long, env = "CHIRON_HOST", default_value = "http://127.0.0.1:7700")]
    host: String,
    /// Your API token, issued by the host's operator (`chiron-host principal add`).
    #[arg(
        long,
        env = "CHIRON_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
}

impl HostArgs {
    fn client(&self) -> anyhow::Result<HostClient> {
        if !(self.host.starts_with("http://") || self.host.starts_with("https://")) {
            bail!(
                "--host must be the host's URL, with its scheme: `http://{}`, not `{}`",
                self.host.trim_start_matches('/'),
                self.host
            );
        }
        let client = HostClient::new(&self.host);
        Ok(match &self.token {
            Some(token) => client.with_token(token),
            None => client,
        })
    }
}

fn main() {
    // `run-local` trains in this process.
    chiron_sandbox::memory::keep_freed_memory();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {}", report(&e));
        if let Some(hint) = hint(&e) {
            eprintln!("hint: {hint}");
        }
        std::process::exit(1);
    }
}

/// What to do about an error, in this tool's flags, where the library's text cannot name
/// them.
fn hint(e: &anyhow::Error) -> Option<&'static str> {
    use chiron_attest::AttestationError;
    let attestation = e
        .chain()
        .find_map(|cause| match cause.downcast_ref::<ClientError>() {
            Some(ClientError::Attestation(a)) => Some(a),
            _ => cause.downcast_ref::<AttestationError>(),
        })?;
    match attestation {
        AttestationError::UntrustedPlatform { .. } => Some(
            "for a development host on the simulated platform, pass \
             --dangerous-sim-platform <its public key file> with --sim-measurement <the \
             runtime's measurement>; never for real data",
        ),
        AttestationError::TeeNotAccepted { .. } => Some(
            "give reference values for that TEE (--sgx-mrenclave, --tdx-mrtd, --snp-measurement \
             ..., or a --policy file)",
        ),
        AttestationError::WrongMeasurement { .. } => Some(
            "`chiron measure` prints what to pin for a runtime build you trust; pass it with \
             --sim-measurement (or the TEE's own flag)",
        ),
        _ => None,
    }
}

/// An error and its causes on one line, each cause once: library errors often repeat their
/// source's text in their own, which `{:#}` would print twice.
fn report(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Register { host, wasm } => {
            let bytes =
                std::fs::read(&wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
            let created = host.client()?.register_program(&bytes)?;
            eprintln!(
                "extraction policy: {}{}",
                created.policy.manifest,
                if created.policy.declared {
                    ""
                } else {
                    " (no manifest in the program: the default policy)"
                }
            );
            eprintln!("{}", takes(created.policy.inputs.as_ref()));
            println!("{}", created.program_id);
            Ok(())
        }
        Command::Check { wasm } => {
            let bytes =
                std::fs::read(&wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
            let sandbox = chiron_sandbox::Sandbox::new(chiron_sandbox::SandboxConfig::default())
                .context("cannot start the sandbox")?;
            sandbox
                .load(&bytes)
                .with_context(|| format!("{} would be refused", wasm.display()))?;
            let policy = chiron_proto::manifest::program_policy(&bytes)
                .with_context(|| format!("{}: the manifest cannot be read", wasm.display()))?;
            println!(
                "{}: loads; extraction policy: {}{}",
                wasm.display(),
                policy.manifest,
                if policy.declared {
                    ""
                } else {
                    " (no manifest in the program: the default policy)"
                }
            );
            println!("{}", takes(policy.inputs.as_ref()));
            for warning in chiron_sandbox::lint::warnings(&bytes) {
                eprintln!("warning: {}: {warning}", wasm.display());
            }
            Ok(())
        }
        Command::Measure {
            binary,
            sgx_sigstruct,
        } => {
            if let Some(path) = sgx_sigstruct {
                let bytes = std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let sig = chiron_attest::sigstruct::parse(&bytes)
                    .with_context(|| format!("{} is not a valid SIGSTRUCT", path.display()))?;
                anyhow::ensure!(
                    !sig.debug,
                    "{} signs a debug enclave, whose memory the host can read; owners' \
                     verifiers refuse it: sign with sgx.debug = false",
                    path.display()
                );
                println!("--sgx-mrenclave {}", hex::encode(sig.mrenclave));
                println!(
                    "--sgx-mrsigner {} --sgx-isv-prod-id {} --sgx-min-isv-svn {}",
                    hex::encode(sig.mrsigner),
                    sig.isv_prod_id,
                    sig.isv_svn
                );
            } else if let Some(binary) = binary {
                let m = chiron_attest::measure_file(&binary)
                    .with_context(|| format!("cannot read {}", binary.display()))?;
                println!("{}", hex::encode(m));
            }
            Ok(())
        }
        Command::Train(args) => train(args),
        Command::RunLocal(args) => run_local(args),
        Command::NewProgram(args) => new_program::new_program(args),
        Command::Attach(args) => jobs::attach(args),
        Command::Status(args) => jobs::status(args),
        Command::Jobs(args) => jobs::jobs(args),
        Command::Evaluate(args) => queries::evaluate(args),
        Command::Predict(args) => queries::predict(args),
    }
}

fn run_local(args: RunLocalArgs) -> anyhow::Result<()> {
    use chiron_sandbox::{Sandbox, SandboxConfig, TrainJob, TrainingData};
    let bytes = std::fs::read(&args.wasm)
        .with_context(|| format!("cannot read {}", args.wasm.display()))?;
    let sandbox = Sandbox::new(SandboxConfig::default()).context("cannot start the sandbox")?;
    let program = sandbox
        .load(&bytes)
        .with_context(|| format!("{} would be refused", args.wasm.display()))?;
    let plain = args.data.training(args.valid_fraction)?;
    let data = TrainingData::from_plaintext(plain.header, plain.body)
        .context("the dataset cannot be used")?;
    let seed = args
        .seed
        .as_deref()
        .map(parse_seed)
        .transpose()?
        .unwrap_or([0; 32]);
    let job = TrainJob::new(
        std::sync::Arc::new(data),
        seed,
        args.epochs,
        Duration::from_secs(u64::from(args.time_budget)),
    )
    .with_metrics(|m| eprintln!("metric {} (epoch {}): {}", m.name, m.epoch, m.value))
    .with_log(|text| {
        for line in text.lines() {
            eprintln!("program: {line}");
        }
    });
    let started = std::time::Instant::now();
    let chiron_sandbox::Trained { model, cut_short } = sandbox
        .train(&program, job.keep_last_save(!args.no_partial_model))
        .context("the program failed (its last words, if any, are above)")?;
    if cut_short {
        eprintln!(
            "the {} s time budget ran out: the model is the one the program saved last",
            args.time_budget
        );
    }
    let parameters: usize = model.tensors.iter().map(|(_, values)| values.len()).sum();
    println!(
        "trained in {:.1} s: a model of {} tensors, {parameters} parameters, {} bytes of metadata",
        started.elapsed().as_secs_f64(),
        model.tensors.len(),
        model.meta.len()
    );
    Ok(())
}

fn train(args: TrainArgs) -> anyhow::Result<()> {
    let (policy, policy_spec) = args.trust.policy_with_spec()?;
    let host = args.host.client()?;
    // A ticket holds its job's keys and query token, which exist nowhere else: never
    // overwrite one, and say so before anything is uploaded.
    OwnerRecord::check_free(&args.ticket).context("nothing was uploaded")?;
    // The provider's extraction policy, before anything leaves this machine: terms beyond it
    // would only be refused by the enclave after the upload.
    let program = host.program(&args.program)?;
    let manifest = program.policy.manifest;
    let answers = AnswerPolicy::asked(args.top_k, args.scores);
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
    let plain = args.data.training(args.valid_fraction)?;
    let header = plain.header.clone();
    // A dataset the program does not take would only be refused by the enclave after the
    // upload.
    if let Some(inputs) = &program.policy.inputs {
        inputs.accepts(&header).map_err(|e| {
            anyhow::anyhow!(
                "program {} does not take this dataset: {e}; it takes {inputs} (nothing was \
                 uploaded)",
                args.program
            )
        })?;
    }
    eprintln!(
        "dataset: {:?} {:?}, {} classes, {} training + {} validation examples",
        header.kind, header.dims, header.classes, header.train_count, header.valid_count
    );
    let figures = owner::Figures {
        live: args.live,
        time_budget_secs: args.time_budget,
        memory_mib: args.private_memory_mib,
        model_mib: args.private_model_mib,
        answer_ms: args.private_answer_ms,
    };
    // What the owner did not give is sized from public figures: the dataset's header and
    // the needs the program declares.
    let (time_budget_secs, private) = figures.resolve(&header, &manifest.needs(), args.epochs)?;
    match &private {
        None => eprintln!("{LIVE_WARNING}"),
        Some(terms) => eprintln!(
            "private job (the platform sees only these figures; --live to follow progress): \
             {time_budget_secs} s, {} MiB of memory, a {} MiB model, answers {} ms after each \
             query",
            terms.memory_mib, terms.model_mib, terms.answer_ms
        ),
    }

    let key = DataKey::generate();
    // The container is sealed as it is sent, once the enclaves are attested.
    let container_len = chiron_crypto::dataset::container_len(&header)?;
    let bar = indicatif::ProgressBar::new(container_len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} uploading [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} \
             ({bytes_per_sec}, {eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let shown = bar.clone();
    let uploader = host
        .clone()
        .with_upload_progress(move |sent, _| shown.set_position(sent));
    // The job is created on the upload before its data is sent: its enclaves are attested
    // first, so an enclave the policy refuses costs no upload.
    let opened = host.create_upload(container_len)?;
    let dataset_id = opened.upload_id.clone();
    let job = host
        .create_distributed_job(&args.program, &dataset_id, args.workers)
        .inspect_err(|_| {
            let _ = host.cancel_upload(&dataset_id);
        })?;
    let send_data = || {
        eprintln!("attested; encrypting and uploading the dataset");
        let sent = uploader.upload_encrypted(opened, &key, &header, plain.body.as_slice());
        bar.finish_and_clear();
        let dataset = sent.inspect_err(|_| {
            let _ = host.cancel_upload(&dataset_id);
        })?;
        eprintln!("uploaded encrypted dataset {}", dataset.dataset_id);
        Ok(())
    };
    let nothing_sent = |e: ClientError| {
        let _ = host.cancel_upload(&dataset_id);
        e
    };
    let terms = TrainingTerms {
        epochs: args.epochs,
        time_budget_secs,
        answers,
        query_budget,
        seed: args.seed.as_deref().map(parse_seed).transpose()?,
        private,
        keep_last_save: !args.no_partial_model,
    };
    let ticket = if args.workers > 1 {
        let needs = manifest.needs();
        let model_mib = match private {
            Some(terms) => terms.model_mib,
            None => {
                owner::size_private_job(&header, &needs, args.epochs)?
                    .terms
                    .model_mib
            }
        };
        let distribution = owner::Distribution {
            exchange: ExchangeTerms {
                workers: args.workers,
                message_kib: args
                    .exchange_kib
                    .unwrap_or_else(|| owner::exchange_message_kib(&needs, model_mib)),
                // Private: one message per tick each way, on a schedule fixed by the terms.
                pace: private.map(|_| Pace::for_budget(time_budget_secs, args.exchange_tick_ms)),
                rounds: match args.asynchronous {
                    Some(max_staleness) => Rounds::Asynchronous { max_staleness },
                    None => Rounds::Synchronous,
                },
            },
            peer_policy: policy_spec,
            checkpoint_every: args.checkpoint_every,
        };
        let ticket = owner::start_distributed_training_then(
            &host,
            &policy,
            &job.job_id,
            &args.program,
            &header,
            &key,
            &terms,
            &distribution,
            send_data,
        )
        .map_err(nothing_sent)?;
        eprintln!(
            "parameter server and {} workers attested; data key released to job {} \
             (exchange messages of {} KiB)",
            args.workers, ticket.job_id, distribution.exchange.message_kib
        );
        ticket
    } else {
        let ticket = owner::start_training_then(
            &host,
            &policy,
            &job.job_id,
            &args.program,
            &header,
            &key,
            &terms,
            send_data,
        )
        .map_err(nothing_sent)?;
        eprintln!(
            "enclave attested; data key released to job {}",
            ticket.job_id
        );
        ticket
    };
    drop(plain.body);
    if let Some(seed) = ticket.seed {
        eprintln!(
            "seed {}: pass it to --seed to train the same model again",
            hex::encode(seed)
        );
    }
    let record = OwnerRecord::started(
        ticket,
        ProgramRecord {
            id: args.program.clone(),
            inputs: program.policy.inputs,
        },
        plain.class_names,
        plain.standardizer,
        args.epochs,
        time_budget_secs,
        private.as_ref(),
    );
    record.save_new(&args.ticket)?;
    eprintln!(
        "ticket written to {} (keep it: it alone can read this job's results and query its model)",
        args.ticket.display()
    );
    if private.is_some() {
        eprintln!(
            "private mode: progress is held until the {time_budget_secs} s budget has passed"
        );
    }
    let (outcome, events) = jobs::follow(&host, &record)?;
    jobs::conclude(&record, &args.ticket, outcome, &events)
}

/// What a program says it takes, in a line.
fn takes(inputs: Option<&chiron_proto::inputs::InputSpec>) -> String {
    match inputs {
        Some(inputs) => format!("takes: {inputs}"),
        None => "takes: any dataset (no inputs declaration in the program)".to_owned(),
    }
}

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
                AnswerPolicy::TopK(k) | AnswerPolicy::Scored(k) if k > 1 => {
                    format!("pass --top-k {k} or less")
                }
                _ => "leave out --top-k (label answers only)".to_owned(),
            }
        ),
        TermsError::InvalidAnswers => format!("--top-k must be between 1 and {MAX_TOP_K}"),
        TermsError::Scores => "--scores asks for probabilities, which the program does not \
                               allow (its answers carry classes only): leave out --scores"
            .to_owned(),
    };
    anyhow::anyhow!(
        "the provider's extraction policy refuses these terms: {what}; nothing was uploaded"
    )
}

fn parse_seed(text: &str) -> anyhow::Result<[u8; 32]> {
    hex::decode(text)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .with_context(|| format!("--seed must be 64 hex digits, not `{text}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_untrusted_simulated_platform_names_the_flag_to_use() {
        let e = anyhow::Error::from(ClientError::Attestation(
            chiron_attest::AttestationError::UntrustedPlatform {
                platform_key: "ab".repeat(32),
            },
        ))
        .context("cannot start the job");
        let hint = hint(&e).expect("a hint");
        assert!(hint.contains("--dangerous-sim-platform"), "{hint}");
        assert!(!report(&e).contains("Policy::"), "{}", report(&e));
    }

    #[test]
    fn a_cause_repeated_in_its_errors_text_is_printed_once() {
        let header = chiron_proto::dataset::HeaderError::Classes(1);
        let crypto = chiron_crypto::CryptoError::from(header);
        let client = chiron_client::ClientError::from(crypto);
        let e = anyhow::Error::from(client).context("cannot encrypt the dataset");
        let text = report(&e);
        let detail = chiron_proto::dataset::HeaderError::Classes(1).to_string();
        assert_eq!(text.matches(&detail).count(), 1, "{text}");
        assert!(
            text.starts_with("cannot encrypt the dataset: encryption failed"),
            "{text}"
        );
    }
}
