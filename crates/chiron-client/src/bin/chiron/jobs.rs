//! The owner's jobs: following one to its end (`train`, `attach`), its status, the list of
//! tickets, and the records written beside a ticket when its job ends.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use chiron_client::history::History;
use chiron_client::owner::EventCursor;
use chiron_client::record::{self, OwnerRecord};
use chiron_client::{ClientError, HostClient};
use chiron_proto::api::JobState;
use chiron_proto::owner::OwnerEvent;
use clap::Args;
use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use serde::Serialize;

use crate::HostArgs;

/// How a followed job ended.
pub enum Outcome {
    /// Its model is sealed and answers queries.
    Succeeded,
    /// It failed, for this reason (the owner's detail when the enclave gave one).
    Failed(String),
}

/// The epoch bar's rate and time left, once epochs have been seen to end: " (12.5 s/epoch,
/// 3m left)". Nothing before then (and so nothing while a private job holds its progress).
fn epoch_pace(state: &ProgressState, out: &mut dyn std::fmt::Write) {
    let per_sec = state.per_sec();
    if state.pos() == 0 || !per_sec.is_finite() || per_sec <= 0.0 {
        return;
    }
    let left = state.len().map(|len| len.saturating_sub(state.pos()));
    let _ = write!(out, " ({:.1} s/epoch", 1.0 / per_sec);
    if let Some(left) = left {
        let _ = write!(
            out,
            ", {} left",
            indicatif::HumanDuration(Duration::from_secs_f64(left as f64 / per_sec))
        );
    }
    let _ = out.write_str(")");
}

/// Follows the job of `record` until it ends, showing progress on stderr; returns how it
/// ended and all its events.
pub fn follow(
    host: &HostClient,
    record: &OwnerRecord,
) -> anyhow::Result<(Outcome, Vec<OwnerEvent>)> {
    let ticket = &record.ticket;
    let bar = match record.epochs {
        Some(epochs) => ProgressBar::new(u64::from(epochs)),
        None => ProgressBar::no_length(),
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} training [{elapsed_precise}] {bar:30} epoch {pos}/{len}{pace} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key("pace", epoch_pace),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let say = |line: &str| {
        // A hidden bar (output not a terminal) swallows `println`.
        if bar.is_hidden() {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
    };
    let mut all: Vec<OwnerEvent> = Vec::new();
    let mut cursor = EventCursor::default();
    let mut finished = false;
    loop {
        let (state, events) = ticket.events(host, &mut cursor)?;
        for event in &events {
            match event {
                OwnerEvent::Started { .. } => bar.set_message("running"),
                OwnerEvent::Padding => {}
                OwnerEvent::Metric { name, epoch, value } => {
                    bar.set_position(u64::from(epoch + 1).min(bar.length().unwrap_or(u64::MAX)));
                    say(&format!("epoch {}: {name} = {value:.4}", epoch + 1));
                }
                OwnerEvent::Progress { epoch, step, steps } => {
                    bar.set_position(u64::from(*epoch).min(bar.length().unwrap_or(u64::MAX)));
                    bar.set_message(format!("epoch {}: step {step}/{steps}", epoch + 1));
                }
                OwnerEvent::Resumed => say(
                    "rank 0's enclave was lost and a replacement took over: its program \
                     starts again from the parameter server's parameters, from the first epoch",
                ),
                OwnerEvent::CutShort => say(
                    "the time budget ran out before the program finished: the model kept is \
                     the one it saved last (see the metrics above)",
                ),
                OwnerEvent::Finished {
                    parameters,
                    peak_memory_mib,
                } => {
                    finished = true;
                    bar.finish_with_message(format!(
                        "done ({parameters} parameters, peak memory {peak_memory_mib} MiB)"
                    ));
                    if bar.is_hidden() {
                        eprintln!(
                            "training finished: a model of {parameters} parameters sealed; the \
                             enclave's peak memory was {peak_memory_mib} MiB"
                        );
                    }
                }
                OwnerEvent::Failed { detail } => {
                    bar.abandon_with_message("failed");
                    all.extend(events.iter().cloned());
                    return Ok((Outcome::Failed(detail.clone()), all));
                }
            }
        }
        all.extend(events);
        match state {
            JobState::Succeeded if finished => return Ok((Outcome::Succeeded, all)),
            // Its events are stored before its state changes: the host held them back.
            JobState::Succeeded => return Err(ClientError::WithheldEvents.into()),
            JobState::Failed => {
                // The enclave may have died before it could say why.
                let status = host.job_status(&ticket.job_id)?;
                bar.abandon_with_message("failed");
                let why = status.error.unwrap_or_else(|| "no reason given".into());
                return Ok((Outcome::Failed(why), all));
            }
            _ => {
                if let Some(left) = record.private_wait() {
                    bar.set_message(format!(
                        "private: progress is released with the results in {}",
                        clock(left)
                    ));
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}", s / 60, s % 60)
}

/// Writes the job's metrics (CSV and JSON lines) and training curves (SVG and PNG) beside its
/// ticket; returns the files written.
pub fn write_records(ticket_path: &Path, events: &[OwnerEvent]) -> anyhow::Result<Vec<PathBuf>> {
    let history = History::from_events(events);
    if history.is_empty() {
        return Ok(Vec::new());
    }
    let mut written = Vec::new();
    let mut put = |suffix: &str, bytes: Vec<u8>| -> anyhow::Result<()> {
        let path = record::beside(ticket_path, suffix);
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
        Ok(())
    };
    let mut csv = Vec::new();
    history.write_csv(&mut csv)?;
    put("metrics.csv", csv)?;
    let mut jsonl = Vec::new();
    history.write_jsonl(&mut jsonl)?;
    put("metrics.jsonl", jsonl)?;
    put("curves.svg", history.to_svg()?.into_bytes())?;
    put("curves.png", history.to_png()?)?;
    Ok(written)
}

/// Prints a job's result on stdout, writes its records and turns a failure into the error
/// the command ends with.
pub fn conclude(
    record: &OwnerRecord,
    ticket_path: &Path,
    outcome: Outcome,
    events: &[OwnerEvent],
) -> anyhow::Result<()> {
    let written = write_records(ticket_path, events)?;
    let job = &record.ticket.job_id;
    match &outcome {
        Outcome::Succeeded => println!("job {job}: succeeded"),
        Outcome::Failed(why) => println!("job {job}: failed: {why}"),
    }
    println!("ticket: {}", ticket_path.display());
    if let Some(seed) = record.ticket.seed {
        println!("seed: {}", hex::encode(seed));
    }
    for (name, points) in History::from_events(events).series() {
        if let Some((epoch, value)) = points.last() {
            println!("{name}: {value:.4} (epoch {})", epoch + 1);
        }
    }
    if events.iter().any(|e| matches!(e, OwnerEvent::CutShort)) {
        println!("note: the time budget ran out; the model is the program's last save");
    }
    if !written.is_empty() {
        let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
        println!("records: {}", names.join(", "));
    }
    match outcome {
        Outcome::Succeeded => Ok(()),
        Outcome::Failed(why) => bail!("training failed: {why}"),
    }
}

/// Which ticket a command is about.
#[derive(Args)]
pub struct TicketArgs {
    #[command(flatten)]
    pub host: HostArgs,
    /// The job's ticket, written by `train`.
    #[arg(long, default_value = "chiron-job.json")]
    pub ticket: PathBuf,
}

/// `chiron attach`: follows a job to its end, as `train` does.
pub fn attach(args: TicketArgs) -> anyhow::Result<()> {
    let record = OwnerRecord::load(&args.ticket)?;
    let host = args.host.client()?;
    eprintln!("following job {}", record.ticket.job_id);
    let (outcome, events) = follow(&host, &record)?;
    conclude(&record, &args.ticket, outcome, &events)
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub ticket: TicketArgs,
    /// Print the status as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// What `chiron status` reports.
#[derive(Serialize)]
struct Status {
    job_id: String,
    state: JobState,
    /// The program trained, and the datasets it takes (`None` in older tickets).
    program: Option<chiron_client::record::ProgramRecord>,
    /// The dataset's kind and shape, which queries must match.
    kind: chiron_proto::dataset::DatasetKind,
    dims: Vec<u32>,
    /// The owner's failure detail, else the host's public label.
    failure: Option<String>,
    seed: Option<String>,
    /// The time budget ran out and the model is the program's last save.
    cut_short: bool,
    /// A private job holds its progress until this many seconds from now.
    private_results_in_secs: Option<u64>,
    metrics: Vec<chiron_client::history::MetricPoint>,
}

/// `chiron status`: a job's state, failure reason and metrics so far, without waiting.
pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let record = OwnerRecord::load(&args.ticket.ticket)?;
    let host = args.ticket.host.client()?;
    let ticket = &record.ticket;
    let public = host.job_status(&ticket.job_id)?;
    let (_, events) = ticket.events(&host, &mut EventCursor::default())?;
    let detail = events.iter().find_map(|e| match e {
        OwnerEvent::Failed { detail } => Some(detail.clone()),
        _ => None,
    });
    let status = Status {
        job_id: ticket.job_id.clone(),
        state: public.state,
        program: record.program.clone(),
        kind: ticket.header.kind,
        dims: ticket.header.dims.clone(),
        failure: detail.or(public.error),
        seed: ticket.seed.map(hex::encode),
        cut_short: events.iter().any(|e| matches!(e, OwnerEvent::CutShort)),
        private_results_in_secs: match public.state {
            JobState::Created | JobState::Running => record.private_wait().map(|d| d.as_secs()),
            _ => None,
        },
        metrics: History::from_events(&events).points,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    println!("job {}: {}", status.job_id, state_word(status.state));
    if let Some(program) = &status.program {
        match &program.inputs {
            Some(inputs) => println!("program: {} (takes {inputs})", program.id),
            None => println!("program: {}", program.id),
        }
    }
    println!(
        "trained on: {:?} data of shape {:?}",
        status.kind, status.dims
    );
    if let Some(why) = &status.failure {
        println!("failure: {why}");
    }
    if let Some(seed) = &status.seed {
        println!("seed: {seed}");
    }
    if status.cut_short {
        println!("note: the time budget ran out; the model is the program's last save");
    }
    if let Some(secs) = status.private_results_in_secs {
        println!(
            "private: progress is released with the results in {}",
            clock(Duration::from_secs(secs))
        );
    }
    for (name, points) in History::from_events(&events).series() {
        let values: Vec<String> = points.iter().map(|(_, v)| format!("{v:.4}")).collect();
        println!("{name} by epoch: {}", values.join(" "));
    }
    Ok(())
}

fn state_word(state: JobState) -> &'static str {
    match state {
        JobState::Created => "waiting for its start",
        JobState::Running => "running",
        JobState::Succeeded => "succeeded (its model answers queries)",
        JobState::Failed => "failed",
    }
}

#[derive(Args)]
pub struct JobsArgs {
    #[command(flatten)]
    pub host: HostArgs,
    /// The folder holding your tickets.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
}

/// `chiron jobs`: the tickets in a folder, each with its job's state at the host.
pub fn jobs(args: JobsArgs) -> anyhow::Result<()> {
    let host = args.host.client()?;
    let tickets = record::tickets_in(&args.dir)?;
    if tickets.is_empty() {
        eprintln!("no tickets in {}", args.dir.display());
        return Ok(());
    }
    println!("{:<32}  {:<24}  {:<10}  seed", "ticket", "job", "state");
    for (path, record) in tickets {
        let state = match host.job_status(&record.ticket.job_id) {
            Ok(status) => format!("{:?}", status.state).to_lowercase(),
            Err(ClientError::Host { status: 404, .. }) => "unknown".to_owned(),
            Err(ClientError::Host { status, .. }) => format!("error {status}"),
            Err(e) => return Err(e).context("cannot reach the host"),
        };
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let seed = record
            .ticket
            .seed
            .map_or_else(|| "—".to_owned(), |s| hex::encode(&s[..8]) + "…");
        println!(
            "{name:<32}  {:<24}  {state:<10}  {seed}",
            record.ticket.job_id
        );
    }
    Ok(())
}
