//! `chiron-bench`: what confinement costs in training throughput, and how the engine
//! compares with PyTorch.
//!
//! For each benchmark network and batch size, three configurations train the same program
//! (`programs/bench`), interleaved round by round so that machine drift cancels:
//!
//! - **native**: the program linked natively, the engine called directly; no sandbox, no
//!   crypto;
//! - **confined**: the enclave runtime's path in one process: the dataset encrypted with a
//!   fresh data key, decrypted, the wasm program trained in the sandbox, the model
//!   serialised and sealed;
//! - **pytorch**: `bench/torch_bench.py`, the same networks in PyTorch CPU with as many
//!   threads as the engine uses; skipped when `torch` cannot be imported.
//!
//! Throughput is images per second over intervals of `chiron_bench_nets::INTERVAL` steps,
//! timed by the program's `step` metrics (the program has no clock); the first interval
//! of every run is warm-up and is dropped. The table quotes medians over all rounds.
//!
//! A second table times queries on the trained models: one input per query, natively and
//! in the sandbox (a fresh wasm instance per query, as the query enclave serves them),
//! interleaved in blocks, and batched sandboxed queries.
//!
//! A third trains each network through the whole service (a real host and enclave processes
//! on loopback), reports the training enclave's peak memory, and times queries through the
//! full path: HTTP, HPKE, the query enclave, a fresh instance, the encrypted answer.
//!
//! A fourth times ingest: the owner's encryption sealed straight into the upload to a real
//! `chiron-host` process over loopback (which streams it into its object store), its stages
//! alone, the enclave's decryption, and a `dd` write of the same size beside the store.

mod service;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chiron_bench::HostProcess;
use chiron_bench_nets::INTERVAL;
use chiron_client::convert::{self, ConvertOptions};
use chiron_crypto::{DataKey, SealingKey};
use chiron_proto::dataset::{DatasetHeader, DatasetKind, ElementEncoding};
use chiron_sandbox::{Model, Program, Sandbox, SandboxConfig, TrainJob, TrainingData};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Training throughput: native engine, confined path, PyTorch")]
struct Cli {
    /// Rounds; each runs every configuration once, in alternating order.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Measured intervals per run (after one warm-up interval).
    #[arg(long, default_value_t = 5)]
    intervals: u32,
    /// Networks to run.
    #[arg(long, value_delimiter = ',', default_value = "a,b")]
    nets: Vec<NetName>,
    /// Batch sizes to run (64 and 128 are built).
    #[arg(long, value_delimiter = ',', default_value = "64,128")]
    batches: Vec<u32>,
    /// Where the benchmark wasm programs are.
    #[arg(long, default_value = "programs/target/wasm32-unknown-unknown/release")]
    programs: PathBuf,
    /// Fashion-MNIST training images (real inputs for net B).
    #[arg(
        long,
        default_value = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
    )]
    fmnist_images: PathBuf,
    /// Fashion-MNIST training labels.
    #[arg(
        long,
        default_value = "/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz"
    )]
    fmnist_labels: PathBuf,
    /// Size of the ingest benchmark's dataset in MiB (0 skips it).
    #[arg(long, default_value_t = 1024)]
    ingest_mib: u64,
    /// Single-input queries timed per configuration and network.
    #[arg(long, default_value_t = 400)]
    queries: usize,
    /// Single-input queries timed through the whole service (0 skips the service table).
    #[arg(long, default_value_t = 200)]
    service_queries: usize,
    /// The PyTorch script.
    #[arg(long, default_value = "bench/torch_bench.py")]
    torch_script: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum NetName {
    A,
    B,
}

/// What one configuration measured over all rounds.
#[derive(Default)]
struct Samples {
    /// Images per second, one per measured interval.
    throughput: Vec<f64>,
    /// Per-job work outside training (decrypt, seal), one per run.
    overhead: Vec<Duration>,
}

fn main() -> anyhow::Result<()> {
    // As in the enclave, so that both sides of a comparison allocate alike.
    chiron_sandbox::memory::keep_freed_memory();
    let cli = Cli::parse();
    let sandbox = Sandbox::new(SandboxConfig::default()).context("cannot start the sandbox")?;
    let torch = torch_available();
    println!("{}", machine());
    println!(
        "rounds {}, {} measured intervals of {INTERVAL} steps per run; medians\n",
        cli.rounds, cli.intervals
    );
    println!(
        "| net | batch | (a) native img/s | (b) confined img/s | (b)/(a) | (c) PyTorch img/s | (a)/(c) | confined per-job decrypt+seal |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut trained: Vec<(NetName, Vec<u8>, Model)> = Vec::new();
    for &net in &cli.nets {
        for &batch in &cli.batches {
            let entry = native_entry(batch)?;
            let wasm_path = cli.programs.join(format!("bench_b{batch}.wasm"));
            let wasm = std::fs::read(&wasm_path).with_context(|| {
                format!(
                    "cannot read {} (build programs/ first: scripts/build.sh)",
                    wasm_path.display()
                )
            })?;
            let program = sandbox.load(&wasm).context("benchmark program refused")?;
            let examples = batch * INTERVAL * (cli.intervals + 1);
            let (header, body) = dataset(net, examples, &cli)?;
            let key = DataKey::generate();
            let mut container = Vec::new();
            chiron_crypto::encrypt_dataset(&key, &header, body.as_slice(), &mut container)?;

            let (mut native, mut confined, mut pytorch) =
                (Samples::default(), Samples::default(), Samples::default());
            let mut last_model = None;
            for round in 0..cli.rounds {
                // Alternate the order so neither configuration always runs on a warmer machine.
                let order: [u8; 3] = if round % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
                for which in order {
                    match which {
                        0 => run_native(entry, &header, &body, batch, &mut native)?,
                        1 => {
                            last_model = Some(run_confined(
                                &sandbox,
                                &program,
                                &key,
                                &container,
                                batch,
                                &mut confined,
                            )?);
                        }
                        _ if torch => {
                            run_torch(&cli.torch_script, net, batch, cli.intervals, &mut pytorch)?
                        }
                        _ => {}
                    }
                }
            }
            let (a, b) = (median(&native.throughput), median(&confined.throughput));
            let c = (!pytorch.throughput.is_empty()).then(|| median(&pytorch.throughput));
            let overhead = median_duration(&confined.overhead);
            println!(
                "| {net:?} | {batch} | {a:.0} | {b:.0} | {:.3} | {} | {} | {:.0} ms |",
                b / a,
                c.map_or("skipped (no torch)".into(), |c| format!("{c:.0}")),
                c.map_or("–".into(), |c| format!("{:.3}", a / c)),
                overhead.as_secs_f64() * 1e3,
            );
            if let Some(model) = last_model {
                trained.retain(|(n, _, _)| *n != net);
                trained.push((net, wasm, model));
            }
        }
    }

    println!(
        "\n| net | native predict p50 / p99 | sandboxed predict (fresh instance) p50 / p99 | fresh-instance cost (p50 difference) | sandboxed, batches of 256 |"
    );
    println!("|---|---|---|---|---|");
    for (net, wasm, model) in trained {
        let program = sandbox.load(&wasm).context("benchmark program refused")?;
        query_bench(&sandbox, &program, net, Arc::new(model), cli.queries)?;
    }
    if cli.service_queries > 0 {
        service_bench(&cli)?;
    }
    if cli.ingest_mib > 0 {
        ingest_bench(cli.ingest_mib)?;
    }
    Ok(())
}

/// One batch-64 job per network through a real host and enclaves, then queries through the
/// whole path.
fn service_bench(cli: &Cli) -> anyhow::Result<()> {
    println!(
        "\n| net (batch 64, whole service) | upload to sealed model | training enclave peak memory | single-input query p50 / p99 | queries of 256 |"
    );
    println!("|---|---|---|---|---|");
    let batch = 64;
    let wasm_path = cli.programs.join(format!("bench_b{batch}.wasm"));
    let wasm = std::fs::read(&wasm_path)
        .with_context(|| format!("cannot read {}", wasm_path.display()))?;
    for &net in &cli.nets {
        let (header, body) = dataset(net, batch * INTERVAL * (cli.intervals + 1), cli)?;
        let figures = service::measure(&wasm, &header, &body, cli.service_queries)?;
        service::print_row(&format!("{net:?}"), &figures);
    }
    Ok(())
}

/// Encrypts a dataset of `mib` MiB, uploads it to a `chiron-host` started for the purpose,
/// and decrypts it again; prints each stage's rate and the end-to-end rate.
///
/// Ingest as the product runs it, beside its parts and a plain disk write of the same size:
///
/// - **sealed into the upload**: what `chiron train` and the Python client do, the owner's
///   encryption sealing parts while the parts before are sent to a real host process (which
///   streams them into its object store on local disk);
/// - its stages alone, one after the other: encrypting the whole container into memory, then
///   the resumable upload of it, and the one-request upload the host also serves;
/// - the enclave's decryption of the stored container (it receives the whole container
///   before decrypting), into a fresh buffer as before and in place as now, so end to end is
///   the streamed upload plus the decryption in place;
/// - `dd` writing as many bytes to a file beside the host's store, plain (into the page
///   cache, as the store writes) and synced, as the reference for the disk the store uses.
///
/// Every stage starts after a `sync`, so that none pays for the one before's writeback.
fn ingest_bench(mib: u64) -> anyhow::Result<()> {
    let example = 4 + 3 * 32 * 32;
    let examples = u32::try_from((mib << 20) / example).context("dataset too large")?;
    let (header, body) = noise_images(examples);
    let bytes = body.len() as f64;
    let key = DataKey::generate();
    let length = chiron_crypto::dataset::container_len(&header)?;

    let host = HostProcess::start()?;
    let client = host.client();
    let opened = client.create_upload(length).context("upload failed")?;
    sync()?;
    let t = Instant::now();
    client
        .upload_encrypted(opened, &key, &header, body.as_slice())
        .context("upload failed")?;
    let streamed = t.elapsed();
    drop(host);

    sync()?;
    let t = Instant::now();
    let mut container = Vec::with_capacity(usize::try_from(length)?);
    chiron_crypto::encrypt_dataset(&key, &header, body.as_slice(), &mut container)?;
    let encrypt = t.elapsed();
    drop(body);

    // The resumable upload of the whole container, and beside it the one streamed request
    // the host also serves, each to a fresh host.
    let host = HostProcess::start()?;
    sync()?;
    let t = Instant::now();
    host.client()
        .upload_dataset(&container)
        .context("upload failed")?;
    let upload = t.elapsed();
    // `dd` varies by a factor of several from one write to the next on a virtual disk: the
    // median of three of each.
    let mut dd = Vec::new();
    let mut dd_synced = Vec::new();
    for _ in 0..3 {
        sync()?;
        dd.push(dd_write(&host.dir.join("dd.out"), mib, false)?);
        sync()?;
        dd_synced.push(dd_write(&host.dir.join("dd.out"), mib, true)?);
    }
    dd.sort();
    dd_synced.sort();
    let (dd, dd_synced) = (dd[1], dd_synced[1]);
    drop(host);
    let host = HostProcess::start()?;
    sync()?;
    let t = Instant::now();
    host.client()
        .upload_dataset_in_one_request(&container)
        .context("upload failed")?;
    let one_request = t.elapsed();
    drop(host);

    // Into a fresh buffer (the enclave before), then in place (the enclave now).
    let t = Instant::now();
    let (_, plain) = chiron_crypto::decrypt_dataset(&key, &container)?;
    let decrypt_copied = t.elapsed();
    drop(std::hint::black_box(plain));
    let t = Instant::now();
    let (_, plain) = chiron_crypto::decrypt_dataset_in_place(&key, container)?;
    let decrypt = t.elapsed();
    std::hint::black_box(plain);

    let mb = |d: Duration| bytes / 1e6 / d.as_secs_f64();
    println!(
        "\n| ingest, {mib} MiB | sealed into the upload | owner encrypts (alone) | upload (alone) | encrypt, then upload | one-request upload (alone) | enclave decrypts (into a fresh buffer) | enclave decrypts (in place) | end to end | `dd` (median of 3) | `dd`, synced (median of 3) | end to end / `dd` |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| MB/s | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} |",
        mb(streamed),
        mb(encrypt),
        mb(upload),
        mb(encrypt + upload),
        mb(one_request),
        mb(decrypt_copied),
        mb(decrypt),
        mb(streamed + decrypt),
        mb(dd),
        mb(dd_synced),
        dd.as_secs_f64() / (streamed + decrypt).as_secs_f64()
    );
    Ok(())
}

/// Flushes the page cache's dirty pages to disk.
fn sync() -> anyhow::Result<()> {
    let status = Command::new("sync").status().context("cannot run sync")?;
    anyhow::ensure!(status.success(), "sync failed");
    Ok(())
}

/// How long `dd` takes to write `mib` MiB of zeros to `path` (and, if `synced`, to sync
/// them to disk).
fn dd_write(path: &Path, mib: u64, synced: bool) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let mut dd = Command::new("dd");
    dd.arg("if=/dev/zero")
        .arg(format!("of={}", path.display()))
        .args(["bs=1M", &format!("count={mib}"), "status=none"]);
    if synced {
        dd.arg("conv=fsync");
    }
    let status = dd.status().context("cannot run dd")?;
    let took = t.elapsed();
    anyhow::ensure!(status.success(), "dd failed");
    let _ = std::fs::remove_file(path);
    Ok(took)
}

/// Times single-input queries natively and sandboxed, interleaved in blocks of 20, then
/// batched sandboxed queries.
fn query_bench(
    sandbox: &Sandbox,
    program: &Program,
    net: NetName,
    model: Arc<Model>,
    queries: usize,
) -> anyhow::Result<()> {
    let dims: Vec<usize> = match net {
        NetName::A => vec![3, 32, 32],
        NetName::B => vec![1, 28, 28],
    };
    let feature_len: usize = dims.iter().product();
    let input: Vec<f32> = (0..feature_len).map(|i| (i % 251) as f32 / 251.0).collect();
    let shape = |n: usize| {
        let mut s = vec![n];
        s.extend(&dims);
        s
    };
    let (mut native, mut sandboxed) = (Vec::new(), Vec::new());
    for _ in 0..queries.div_ceil(20) {
        for _ in 0..20 {
            let t = Instant::now();
            chiron_reference::predict_program(
                chiron_bench_nets::predict,
                Arc::clone(&model),
                shape(1),
                input.clone(),
            )?;
            native.push(t.elapsed().as_secs_f64());
        }
        for _ in 0..20 {
            let t = Instant::now();
            sandbox.predict(program, Arc::clone(&model), shape(1), input.clone())?;
            sandboxed.push(t.elapsed().as_secs_f64());
        }
    }
    let batch: Vec<f32> = input
        .iter()
        .copied()
        .cycle()
        .take(256 * feature_len)
        .collect();
    let mut batched = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        sandbox.predict(program, Arc::clone(&model), shape(256), batch.clone())?;
        batched.push(256.0 / t.elapsed().as_secs_f64());
    }
    let us = |v: f64| v * 1e6;
    println!(
        "| {net:?} | {:.0} µs / {:.0} µs | {:.0} µs / {:.0} µs | {:.0} µs | {:.0} img/s |",
        us(median(&native)),
        us(percentile(&native, 0.99)),
        us(median(&sandboxed)),
        us(percentile(&sandboxed, 0.99)),
        us(median(&sandboxed) - median(&native)),
        median(&batched),
    );
    Ok(())
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn native_entry(batch: u32) -> anyhow::Result<fn()> {
    fn b64() {
        chiron_bench_nets::train(64)
    }
    fn b128() {
        chiron_bench_nets::train(128)
    }
    match batch {
        64 => Ok(b64),
        128 => Ok(b128),
        other => bail!("batch {other} is not built; the benchmark programs exist for 64 and 128"),
    }
}

/// The dataset for `net`: Fashion-MNIST (real) for net B; for net A, 3×32×32 images of
/// seeded noise (no CIFAR-style set is installed, and throughput does not depend on pixel
/// values).
fn dataset(net: NetName, examples: u32, cli: &Cli) -> anyhow::Result<(DatasetHeader, Vec<u8>)> {
    match net {
        NetName::B => {
            let opts = ConvertOptions {
                valid_fraction: 0.0,
                limit: Some(examples as usize),
                shuffle_seed: None,
            };
            let plain = convert::from_idx(&cli.fmnist_images, &cli.fmnist_labels, &opts)
                .context("Fashion-MNIST is needed for net B (scripts/setup.sh installs it)")?;
            Ok((plain.header, plain.body))
        }
        NetName::A => Ok(noise_images(examples)),
    }
}

/// `examples` 3×32×32 images of seeded noise with labels cycling through 10 classes, as
/// one training split: throughput and ingest rates do not depend on pixel values.
fn noise_images(examples: u32) -> (DatasetHeader, Vec<u8>) {
    let header = DatasetHeader {
        kind: DatasetKind::Image,
        dims: vec![3, 32, 32],
        encoding: ElementEncoding::U8Unit,
        classes: 10,
        train_count: examples,
        valid_count: 0,
    };
    let mut body: Vec<u8> = (0..examples).flat_map(|i| (i % 10).to_le_bytes()).collect();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    body.extend((0..examples as usize * 3 * 32 * 32).map(|_| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 56) as u8
    }));
    (header, body)
}

/// Collects the times at which the program reported `step`.
fn step_clock() -> (
    Arc<Mutex<Vec<Instant>>>,
    impl FnMut(chiron_sandbox::Metric) + Send,
) {
    let times = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&times);
    (times, move |m: chiron_sandbox::Metric| {
        if m.name == "step"
            && let Ok(mut t) = sink.lock()
        {
            t.push(Instant::now());
        }
    })
}

/// Images per second between consecutive reports (the span before the first is warm-up).
fn throughputs(times: &Mutex<Vec<Instant>>, batch: u32) -> anyhow::Result<Vec<f64>> {
    let times = times
        .lock()
        .map_err(|_| anyhow::anyhow!("metric clock poisoned"))?;
    if times.len() < 2 {
        bail!("the program reported {} steps; expected more", times.len());
    }
    Ok(times
        .windows(2)
        .map(|w| f64::from(batch * INTERVAL) / (w[1] - w[0]).as_secs_f64())
        .collect())
}

fn run_native(
    entry: fn(),
    header: &DatasetHeader,
    body: &[u8],
    batch: u32,
    out: &mut Samples,
) -> anyhow::Result<()> {
    let data = Arc::new(TrainingData::from_plaintext(header.clone(), body.to_vec())?);
    let (times, sink) = step_clock();
    chiron_reference::train_program(entry, data, [7; 32], 1, sink)?;
    out.throughput.extend(throughputs(&times, batch)?);
    Ok(())
}

fn run_confined(
    sandbox: &Sandbox,
    program: &Program,
    key: &DataKey,
    container: &[u8],
    batch: u32,
    out: &mut Samples,
) -> anyhow::Result<Model> {
    let started = Instant::now();
    let (header, body) = chiron_crypto::decrypt_dataset(key, container)?;
    let data = Arc::new(TrainingData::from_plaintext(header, body)?);
    let decrypted = started.elapsed();
    let (times, sink) = step_clock();
    let job = TrainJob::new(data, [7; 32], 1, Duration::from_secs(3600)).with_metrics(sink);
    let model = sandbox.train(program, job)?.model;
    let sealing = Instant::now();
    let sealed = SealingKey::derive(&[1; 32], &[2; 32], b"chiron-bench model")
        .seal(b"bench job", &model.to_bytes());
    std::hint::black_box(sealed);
    out.overhead.push(decrypted + sealing.elapsed());
    out.throughput.extend(throughputs(&times, batch)?);
    Ok(model)
}

fn torch_available() -> bool {
    Command::new("python3")
        .args(["-c", "import torch"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run_torch(
    script: &Path,
    net: NetName,
    batch: u32,
    intervals: u32,
    out: &mut Samples,
) -> anyhow::Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let output = Command::new("python3")
        .arg(script)
        .args(["--net", if net == NetName::A { "a" } else { "b" }])
        .args(["--batch", &batch.to_string()])
        .args(["--interval", &INTERVAL.to_string()])
        .args(["--intervals", &intervals.to_string()])
        .args(["--threads", &threads.to_string()])
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let seconds: Vec<f64> =
        serde_json::from_slice(&output.stdout).context("the PyTorch script printed no JSON")?;
    out.throughput
        .extend(seconds.iter().map(|s| f64::from(batch * INTERVAL) / s));
    Ok(())
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn median_duration(values: &[Duration]) -> Duration {
    let secs: Vec<f64> = values.iter().map(Duration::as_secs_f64).collect();
    Duration::from_secs_f64(median(&secs).max(0.0))
}

/// The machine, for the table's caption.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("machine: {cpu}, {threads} hardware threads available")
}
