//! The parameter exchange's cost per round, without training: a real parameter-server
//! enclave process (simulated platform) and N workers in this process, attested to each other
//! over `chiron-channel`, each sending a gradient of P floats per round in messages of the
//! given size; the server averages them, applies SGD and sends the parameters back. Prints
//! the median round time (from the first worker sending to the last holding the answer) for
//! each worker count, and the server process's CPU time per round (from `/proc`), for
//! BENCHMARKS.md's scaling model.
//!
//! ```text
//! cargo run --release -p chiron-bench --bin exchange -- --workers 2,3,4 --floats 421642 --message-kib 2048
//! ```

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chiron_attest::Policy;
use chiron_attest::attester::sim::SimPlatform;
use chiron_channel::{LocalIdentity, PeerExpectation, RecordConfig};
use chiron_proto::evidence::{Evidence, Role};
use chiron_proto::exchange::{Rule, ToServer, ToWorker, pad, unpad};
use chiron_proto::owner::{ExchangeTerms, PARAMETER_SERVER_INFO, ParameterServerRequest, Rounds};
use chiron_proto::wire::{EnclaveFrame, HostFrame, LISTENING_PREFIX, read_frame, write_frame};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Parameter exchange: round time against worker count")]
struct Cli {
    /// Worker counts to measure (2 or more: a distributed job has at least two).
    #[arg(long, value_delimiter = ',', default_value = "2,3,4")]
    workers: Vec<u32>,
    /// Parameters exchanged per round (the demo CNN has 421 642).
    #[arg(long, default_value_t = 421_642)]
    floats: usize,
    /// Every message's size in KiB.
    #[arg(long, default_value_t = 2048)]
    message_kib: u32,
    /// Rounds timed per worker count (after the registration and 3 untimed steps); at
    /// least 1.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u16).range(1..))]
    rounds: u16,
    /// The enclave binary.
    #[arg(long, default_value = "target/release/chiron-enclave")]
    enclave: std::path::PathBuf,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let dir = std::env::temp_dir().join(format!("chiron-exchange-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let key = dir.join("sim-platform.key");
    let status = Command::new(&cli.enclave)
        .args(["init-platform", "--key"])
        .arg(&key)
        .status()
        .context("cannot run the enclave binary (run scripts/build.sh first)")?;
    if !status.success() {
        bail!("init-platform failed");
    }
    let measurement = chiron_attest::measure_file(&cli.enclave)?;
    let platform = Arc::new(SimPlatform::load_or_create(&key, measurement)?);
    let spec = format!(
        "dangerous-simulated-platform {} {}\n",
        hex::encode(platform.public_key()),
        hex::encode(measurement)
    );
    println!(
        "| workers | message | round time (median) | per worker | server CPU per round |\n\
         |---|---|---|---|---|"
    );
    for &workers in &cli.workers {
        let measured = measure(&cli, &key, &platform, &spec, workers)?;
        let server_cpu = measured.server_cpu.map_or("—".to_owned(), |cpu| {
            format!("{:.2} ms", cpu.as_secs_f64() * 1e3 / f64::from(cli.rounds))
        });
        println!(
            "| {workers} | {} KiB | {:.1} ms | {:.1} ms | {server_cpu} |",
            cli.message_kib,
            measured.median.as_secs_f64() * 1e3,
            measured.median.as_secs_f64() * 1e3 / f64::from(workers)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A parameter server enclave process, spoken to as its host.
struct Server {
    child: Child,
    stream: TcpStream,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One worker count's rounds.
struct Measured {
    /// The median round time.
    median: Duration,
    /// The server process's CPU time (all its threads, user and system) over the timed
    /// rounds, where `/proc` tells it.
    server_cpu: Option<Duration>,
}

/// CPU time process `pid` has used so far, all threads, user and system (`/proc/<pid>/stat`).
fn cpu_time(pid: u32) -> Option<Duration> {
    // Clock ticks per second of `/proc`'s times: `USER_HZ`, fixed at 100 by Linux's ABI.
    const TICKS_PER_SECOND: u64 = 100;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: fields are counted after it.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    // After the name: state (field 3), ..., utime (14) and stime (15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis(
        (utime + stime) * 1000 / TICKS_PER_SECOND,
    ))
}

fn measure(
    cli: &Cli,
    key: &Path,
    platform: &Arc<SimPlatform>,
    spec: &str,
    workers: u32,
) -> anyhow::Result<Measured> {
    let job_id = format!("exchange-bench-{workers}");
    let context = chiron_attest::context_digest(&job_id);
    let mut child = Command::new(&cli.enclave)
        .args(["serve", "--role", "ps", "--dangerous-simulated-platform"])
        .arg(key)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
    let port = loop {
        let mut line = String::new();
        if stdout.read_line(&mut line)? == 0 {
            bail!("the enclave printed no port");
        }
        if let Some(port) = line.strip_prefix(LISTENING_PREFIX) {
            break port.trim().parse::<u16>()?;
        }
    };
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    let server_pid = child.id();
    let mut server = Server { child, stream };
    let policy = Policy::parse_spec(spec)?;
    write_frame(
        &mut server.stream,
        &HostFrame::GetEvidence {
            nonce: [1; 32],
            context,
        },
    )?;
    let EnclaveFrame::Evidence(bytes) = read_frame(&mut server.stream)? else {
        bail!("no evidence");
    };
    let verified = chiron_attest::verify(
        &policy,
        &Evidence::from_bytes(&bytes)?,
        Role::ParameterServer,
        &[1; 32],
        &context,
    )?;
    let exchange = ExchangeTerms {
        workers,
        message_kib: cli.message_kib,
        pace: None,
        rounds: Rounds::Synchronous,
    };
    let request = ParameterServerRequest {
        exchange,
        peer_policy: spec.to_owned(),
        time_budget_secs: 3600,
        checkpoint_every: 0,
    };
    let (sealed, _) = chiron_crypto::seal_to_enclave(
        &verified.enclave_public_key(),
        PARAMETER_SERVER_INFO,
        job_id.as_bytes(),
        &postcard::to_allocvec(&request)?,
    )?;
    write_frame(
        &mut server.stream,
        &HostFrame::StartParameterServer {
            job_id: job_id.clone(),
            sealed_request: sealed,
        },
    )?;
    let port = match read_frame(&mut server.stream)? {
        EnclaveFrame::PeersAt { port } => port,
        EnclaveFrame::Failed { public } => bail!("the server refused: {public}"),
        other => bail!("the server did not listen: {other:?}"),
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let size = exchange.message_bytes();
    let floats = cli.floats;
    let rounds = usize::from(cli.rounds);
    let times = runtime.block_on(async {
        let expected = PeerExpectation::new(policy, Role::ParameterServer, context);
        let mut links = Vec::new();
        for rank in 0..workers {
            let identity = LocalIdentity::new(platform.clone(), Role::Worker, context);
            let stream = chiron_channel::connect(("127.0.0.1", port), &identity, &expected).await?;
            let (reader, mut writer) = stream.into_records(RecordConfig::default());
            writer
                .send_message(
                    &pad(&ToServer::Hello { rank, tick: 0 }, size).map_err(anyhow::Error::msg)?,
                )
                .await?;
            // Each worker keeps its answer's memory from round to round, as the runtime's do.
            links.push((reader, writer, Vec::new()));
        }
        let register = pad(
            &ToServer::Register {
                optimizer: 1,
                values: vec![vec![0.5; floats]],
            },
            size,
        )
        .map_err(anyhow::Error::msg)?;
        let step = pad(
            &ToServer::Step {
                optimizer: 1,
                rule: Rule {
                    tag: 0,
                    values: [0.01, 0.0, 0.0, 0.0, 0.0],
                },
                max_grad_norm: None,
                gradients: vec![Some(vec![0.25; floats])],
            },
            size,
        )
        .map_err(anyhow::Error::msg)?;
        let (register, step) = (Arc::new(register), Arc::new(step));
        let mut times = Vec::new();
        let mut cpu_before = None;
        for round in 0..rounds + 4 {
            if round == 4 {
                cpu_before = cpu_time(server_pid);
            }
            let message = if round == 0 { &register } else { &step };
            let started = Instant::now();
            // Every worker's round at once, as the workers of a job would.
            let mut tasks = Vec::new();
            for (mut reader, mut writer, mut answer) in links.drain(..) {
                let message = Arc::clone(message);
                tasks.push(tokio::spawn(async move {
                    writer.send_message(&message).await?;
                    reader.recv_message_into(size, &mut answer).await?;
                    match unpad::<ToWorker>(&answer).map_err(anyhow::Error::msg)? {
                        ToWorker::Parameters(_) => Ok::<_, anyhow::Error>((reader, writer, answer)),
                        other => bail!("unexpected answer {other:?}"),
                    }
                }));
            }
            for task in tasks {
                links.push(task.await??);
            }
            if round >= 4 {
                times.push(started.elapsed());
            }
        }
        let server_cpu = cpu_before
            .zip(cpu_time(server_pid))
            .map(|(before, after)| after.saturating_sub(before));
        Ok::<_, anyhow::Error>((times, server_cpu))
    })?;
    drop(server);
    let (mut times, server_cpu) = times;
    times.sort();
    Ok(Measured {
        median: times.get(times.len() / 2).copied().unwrap_or_default(),
        server_cpu,
    })
}
