//! The owner's queries on a trained model: `evaluate` (labelled inputs, a report) and
//! `predict` (unlabelled inputs, a CSV of answers).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use chiron_client::evaluation::Tally;
use chiron_client::owner::QuerySession;
use chiron_client::record::OwnerRecord;
use chiron_client::{ClientError, HostClient};
use chiron_proto::owner::QueryAnswer;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::{DataArgs, HostArgs, Trust};

/// What every query command needs: the model's ticket, the inputs and whom to trust.
#[derive(Args)]
struct QueryArgs {
    #[command(flatten)]
    host: HostArgs,
    /// The job's ticket written by `train`.
    #[arg(long, default_value = "chiron-job.json")]
    ticket: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Inputs per query (a private job's answer time is sized for the default).
    #[arg(long, default_value_t = chiron_client::owner::DEFAULT_QUERY_BATCH)]
    batch: usize,
    #[command(flatten)]
    trust: Trust,
}

#[derive(Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    query: QueryArgs,
    /// Print the report as one JSON object (accuracy, per-class figures, confusion matrix).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct PredictArgs {
    #[command(flatten)]
    query: QueryArgs,
    /// Where to write the answers as CSV (default: standard output).
    #[arg(long, short)]
    output: Option<PathBuf>,
}

/// Checks that inputs of shape `dims` are what the model of `record` was trained on, before
/// a query is spent: inputs of another shape would be refused by the enclave or, worse,
/// answered.
fn check_shape(record: &OwnerRecord, dims: &[u32]) -> anyhow::Result<()> {
    chiron_client::convert::check_query_dims(dims, &record.ticket.header)
        .with_context(|| format!("job {}", record.ticket.job_id))
}

/// Sends `features` (`n` examples) in queries of at most `batch` inputs, with a progress
/// bar; returns the answers in input order: `width` classes per input and, for scored
/// answers, as many scores.
fn answer_all(
    host: &HostClient,
    trust: &Trust,
    record: &OwnerRecord,
    features: &[f32],
    n: usize,
    batch: usize,
) -> anyhow::Result<QueryAnswer> {
    let policy = trust.policy()?;
    let session = QuerySession::open(host, &policy, &record.ticket)?;
    eprintln!("query enclave attested");
    let bar = ProgressBar::new(n as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} querying [{elapsed_precise}] {bar:30} {pos}/{len} inputs ({per_sec}, {eta} left)",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let answered = session.query_all(features, batch, |done| bar.set_position(done as u64));
    let answers = match (answered, record.private_answer_ms) {
        (Err(ClientError::Unanswered), Some(ms)) => bail!(
            "the provider's program could not answer a query of up to {batch} inputs within \
             this private job's answer time of {ms} ms; a smaller --batch asks less of each \
             answer"
        ),
        (answers, _) => answers?,
    };
    bar.finish_and_clear();
    Ok(answers)
}

/// `chiron evaluate`: accuracy, per-class precision and recall and the confusion matrix of
/// the model on a labelled test set, through black-box queries.
pub fn evaluate(EvaluateArgs { query: args, json }: EvaluateArgs) -> anyhow::Result<()> {
    let host = args.host.client()?;
    let record = OwnerRecord::load(&args.ticket)?;
    let inputs = match args.data.labelled(&record) {
        Ok(inputs) => inputs,
        // Inputs of another kind fail on their labels first; their shape says more.
        Err(e) => {
            if let Ok(unlabelled) = args.data.unlabelled(&record) {
                check_shape(&record, &unlabelled.dims)?;
            }
            return Err(e);
        }
    };
    check_shape(&record, &inputs.dims)?;
    let n = inputs.labels.len();
    let classes = answer_all(&host, &args.trust, &record, &inputs.features, n, args.batch)?.classes;
    let width = record.ticket.answers.width();
    let mut tally = Tally::new(record.ticket.header.classes as usize, width);
    tally.add(&classes, &inputs.labels);
    let report = tally.finish(&record.class_names);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

/// `chiron predict`: the model's answers on unlabelled inputs, as CSV: `index,label` (or
/// `index,label_1,…,label_k` for top-k answers, each label followed by its `score` column
/// when the model's terms carry scores), with the class names of the training data.
pub fn predict(
    PredictArgs {
        query: args,
        output,
    }: PredictArgs,
) -> anyhow::Result<()> {
    let host = args.host.client()?;
    let record = OwnerRecord::load(&args.ticket)?;
    let inputs = args.data.unlabelled(&record)?;
    check_shape(&record, &inputs.dims)?;
    // Refuse an existing output before any query is spent.
    let mut out: Box<dyn Write> = match &output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .with_context(|| {
                    format!(
                        "cannot create {} (an existing file is never overwritten)",
                        path.display()
                    )
                })?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let n = inputs.len();
    let answers = answer_all(&host, &args.trust, &record, &inputs.features, n, args.batch)?;
    let width = record.ticket.answers.width();
    let scored = record.ticket.answers.has_scores();
    let columns: Vec<String> = (1..=width)
        .flat_map(|k| {
            let suffix = if width == 1 {
                String::new()
            } else {
                format!("_{k}")
            };
            let score = scored.then(|| format!("score{suffix}"));
            std::iter::once(format!("label{suffix}")).chain(score)
        })
        .collect();
    writeln!(out, "index,{}", columns.join(","))?;
    for (i, row) in answers.classes.chunks_exact(width).enumerate() {
        let scores = answers.scores.get(i * width..(i + 1) * width);
        let fields: Vec<String> = row
            .iter()
            .enumerate()
            .flat_map(|(j, &c)| {
                let score = scores.map(|s| format!("{:.6}", s[j]));
                std::iter::once(csv_field(&record.class_name(c))).chain(score)
            })
            .collect();
        writeln!(out, "{i},{}", fields.join(","))?;
    }
    out.flush()?;
    if let Some(path) = &output {
        eprintln!("{n} answers written to {}", path.display());
    }
    Ok(())
}

/// A CSV field: quoted when it holds a separator, a quote or a line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}
