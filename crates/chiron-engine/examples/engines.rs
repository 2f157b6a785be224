//! Net A (3 × conv3×3+ReLU+maxpool2 with 32/64/128 channels, fc 2048→256→10) trained with
//! SGD momentum on each backend in turn, interleaved, and timed: training images per second
//! at batch 64 and 128, and single-image forward latency.
//!
//! ```sh
//! cargo run --release --example engines -- [rounds]
//! ```

use std::time::Instant;

use chiron_engine::{
    Backend, Conv2dOptions, CpuBackend, EngineError, FlexBackend, Optimizer, OptimizerKind, Unary,
};

fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

const SHAPES: [&[usize]; 10] = [
    &[32, 3, 3, 3],
    &[32],
    &[64, 32, 3, 3],
    &[64],
    &[128, 64, 3, 3],
    &[128],
    &[2048, 256],
    &[256],
    &[256, 10],
    &[10],
];

fn parameters<B: Backend>(engine: &B) -> Result<Vec<B::Tensor>, EngineError> {
    SHAPES
        .iter()
        .enumerate()
        .map(|(i, shape)| {
            let n: usize = shape.iter().product();
            let fan_in: usize = if shape.len() > 1 {
                shape[1..]
                    .iter()
                    .product::<usize>()
                    .max(shape[0].min(shape[1]))
            } else {
                1
            };
            let scale = if shape.len() == 1 {
                0.0
            } else {
                (2.0 / fan_in as f32).sqrt()
            };
            engine.parameter(shape, values(n, i as u64 + 1, scale))
        })
        .collect()
}

fn forward<B: Backend>(
    engine: &B,
    p: &[B::Tensor],
    x: &B::Tensor,
) -> Result<B::Tensor, EngineError> {
    let mut h = x.clone();
    for layer in 0..3 {
        h = engine.conv2d(
            &h,
            &p[2 * layer],
            Some(&p[2 * layer + 1]),
            &Conv2dOptions::square(1, 1),
        )?;
        h = engine.unary(Unary::Relu, &h)?;
        h = engine.max_pool2d(&h, 2, 2)?;
    }
    let n = engine.shape(&h).dims()[0];
    h = engine.reshape(&h, &[n, 2048])?;
    h = engine.unary(Unary::Relu, &engine.linear(&h, &p[6], Some(&p[7]))?)?;
    engine.linear(&h, &p[8], Some(&p[9]))
}

/// Images per second over `steps` training steps at `batch`.
fn train<B: Backend>(engine: &B, batch: usize, steps: usize) -> Result<f64, EngineError> {
    let mut p = parameters(engine)?;
    let kind = OptimizerKind::Sgd {
        lr: 0.01,
        momentum: 0.9,
        weight_decay: 0.0,
    };
    let mut opt = Optimizer::<B>::new(kind, p.len())?;
    let x = engine.constant(&[batch, 3, 32, 32], values(batch * 3 * 1024, 99, 1.0))?;
    let labels = engine.constant(&[batch], (0..batch).map(|i| (i % 10) as f32).collect())?;
    let mut step = |p: &mut Vec<B::Tensor>| -> Result<(), EngineError> {
        let loss = engine.cross_entropy(&forward(engine, p, &x)?, &labels, 0.0)?;
        let grads = engine.backward(&loss)?;
        opt.step(engine, p, &grads)
    };
    step(&mut p)?; // warm-up
    let start = Instant::now();
    for _ in 0..steps {
        step(&mut p)?;
    }
    Ok((batch * steps) as f64 / start.elapsed().as_secs_f64())
}

/// Median single-image forward latency in microseconds.
fn latency<B: Backend>(engine: &B, runs: usize) -> Result<f64, EngineError> {
    let p: Vec<B::Tensor> = parameters(engine)?
        .iter()
        .map(|t| engine.detach(t))
        .collect();
    let x = engine.constant(&[1, 3, 32, 32], values(3 * 1024, 7, 1.0))?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        engine.read(&forward(engine, &p, &x)?)?;
        times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[runs / 2])
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), EngineError> {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let (cpu, flex) = (CpuBackend::new(), FlexBackend::new());
    if std::env::args().nth(2).as_deref() == Some("cpu-only") {
        // For profiling the own kernels alone.
        println!("cpu img/s, batch 64: {:.0}", train(&cpu, 64, 5 * rounds)?);
        return Ok(());
    }
    println!(
        "net A, {rounds} interleaved rounds, {} threads",
        rayon::current_num_threads()
    );
    println!("| measure | cpu (own kernels) | flex (burn) | cpu / flex |");
    println!("|---|---|---|---|");
    for batch in [64, 128] {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            if round % 2 == 0 {
                a.push(train(&cpu, batch, 5)?);
                b.push(train(&flex, batch, 5)?);
            } else {
                b.push(train(&flex, batch, 5)?);
                a.push(train(&cpu, batch, 5)?);
            }
        }
        let (a, b) = (median(a), median(b));
        println!(
            "| training img/s, batch {batch} | {a:.0} | {b:.0} | {:.2} |",
            a / b
        );
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        a.push(latency(&cpu, 50)?);
        b.push(latency(&flex, 50)?);
    }
    let (a, b) = (median(a), median(b));
    println!(
        "| single-image forward, µs | {a:.0} | {b:.0} | {:.2} |",
        a / b
    );
    Ok(())
}
