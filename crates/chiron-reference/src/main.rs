//! `chiron-reference`: trains an example program natively (no sandbox, no crypto) on real
//! data and reports held-out accuracy, the baseline the confined path is compared with.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use chiron_client::convert::{self, ConvertOptions};
use chiron_reference::Example;
use chiron_sandbox::TrainingData;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Train an example program natively and measure held-out accuracy")]
struct Cli {
    /// Which example program.
    #[arg(long, value_enum, default_value = "cnn")]
    program: Example,
    /// Training images (IDX).
    #[arg(long)]
    train_images: PathBuf,
    /// Training labels (IDX).
    #[arg(long)]
    train_labels: PathBuf,
    /// Test images (IDX).
    #[arg(long)]
    test_images: PathBuf,
    /// Test labels (IDX).
    #[arg(long)]
    test_labels: PathBuf,
    /// Epochs.
    #[arg(long, default_value_t = 3)]
    epochs: u32,
    /// Validation fraction held out of the training file.
    #[arg(long, default_value_t = 0.1)]
    valid_fraction: f32,
    /// Seed of the runtime's random stream (hex, 64 digits); zeros by default.
    #[arg(long)]
    seed: Option<String>,
}

fn main() -> anyhow::Result<()> {
    // As in the enclave, so that both sides of a comparison allocate alike.
    chiron_sandbox::memory::keep_freed_memory();
    let cli = Cli::parse();
    let opts = ConvertOptions {
        valid_fraction: cli.valid_fraction,
        limit: None,
        shuffle_seed: Some(0),
    };
    let plain = convert::from_idx(&cli.train_images, &cli.train_labels, &opts)?;
    let data = Arc::new(TrainingData::from_plaintext(plain.header, plain.body)?);
    let seed: [u8; 32] = match &cli.seed {
        Some(text) => hex::decode(text)
            .ok()
            .and_then(|b| b.try_into().ok())
            .context("--seed must be 64 hex digits")?,
        None => [0; 32],
    };
    let started = Instant::now();
    let model = chiron_reference::train(cli.program, data, seed, cli.epochs, |m| {
        eprintln!("epoch {}: {} = {:.4}", m.epoch, m.name, m.value)
    })?;
    let trained = started.elapsed();
    let test = convert::load_idx_inputs(&cli.test_images, &cli.test_labels, None)?;
    let model = Arc::new(model);
    let feature_len: usize = test.dims.iter().map(|&d| d as usize).product();
    let n = test.labels.len();
    let mut correct = 0usize;
    for start in (0..n).step_by(250) {
        let end = (start + 250).min(n);
        let mut shape = vec![end - start];
        shape.extend(test.dims.iter().map(|&d| d as usize));
        let scores = chiron_reference::predict(
            cli.program,
            Arc::clone(&model),
            shape,
            test.features[start * feature_len..end * feature_len].to_vec(),
        )?;
        let classes = scores.len() / (end - start);
        for (row, &label) in scores.chunks_exact(classes).zip(&test.labels[start..end]) {
            correct += usize::from(chiron_sandbox::runtime::argmax(row) as u32 == label);
        }
    }
    println!(
        "native {:?}: {:.2}% on {n} test examples after {} epochs ({:.1} s training)",
        cli.program,
        100.0 * correct as f64 / n as f64,
        cli.epochs,
        trained.as_secs_f64()
    );
    Ok(())
}
