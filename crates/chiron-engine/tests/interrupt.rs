//! A deadline stops every kernel soon after it passes: the bound LEAKAGE.md states.
//!
//! Each case is an operation a program could size to run for seconds (or hours). Its
//! engine's interrupt is set to fire 20 ms after the operation starts; the test measures how
//! long after that the operation returned, checks that it returned `Interrupted`, and
//! prints the figure. The assertion allows 100 ms (a shared, noisy CI machine); the
//! measured figures are what LEAKAGE.md reports.
#![allow(clippy::expect_used)] // test helpers: a failed step is a failed test

use std::time::{Duration, Instant};

use chiron_engine::{Backend, Binary, Conv2dOptions, CpuBackend, EngineError, Interrupt, Unary};

const FIRE_AFTER: Duration = Duration::from_millis(20);
const BOUND: Duration = Duration::from_millis(100);

fn values(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i % 17) as f32 - 8.0) / 16.0).collect()
}

/// Runs `op` on an engine whose interrupt fires [`FIRE_AFTER`] from now; returns how long
/// after the deadline it came back.
fn overrun<T: std::fmt::Debug>(
    name: &str,
    op: impl FnOnce(&CpuBackend) -> Result<T, EngineError>,
) -> Duration {
    let interrupt = Interrupt::new();
    let engine = CpuBackend::new().with_interrupt(interrupt.clone());
    let deadline = Instant::now() + FIRE_AFTER;
    interrupt.set_deadline(deadline);
    let result = op(&engine);
    let late = Instant::now().saturating_duration_since(deadline);
    assert!(
        matches!(result, Err(EngineError::Interrupted)),
        "{name}: {result:?}"
    );
    eprintln!("{name}: returned {late:?} after its deadline");
    late
}

#[test]
fn every_kernel_stops_soon_after_its_deadline() {
    let big = CpuBackend::new();
    let side = 2048;
    let x = big
        .parameter(&[side, side], values(side * side))
        .expect("x");
    let w = big
        .parameter(&[side, side], values(side * side))
        .expect("w");
    let images = big
        .constant(&[8, 64, 128, 128], values(8 * 64 * 128 * 128))
        .expect("images");
    let kernel = big
        .parameter(&[64, 64, 3, 3], values(64 * 64 * 9))
        .expect("kernel");
    let plane = big
        .constant(&[1, 1, 4096, 4096], values(4096 * 4096))
        .expect("plane");
    let long = big.constant(&[1 << 26], values(1 << 26)).expect("long");
    let rows = big.constant(&[2, 1 << 24], values(1 << 25)).expect("rows");
    // A graph whose backward pass is two 2048³ products.
    let loss = big
        .mean(&big.linear(&x, &w, None).expect("forward"))
        .expect("loss");

    let cases: Vec<Duration> = vec![
        overrun("linear 2048x2048x2048", |e| e.linear(&x, &w, None)),
        overrun("conv2d 8x64x128x128, 3x3x64", |e| {
            e.conv2d(&images, &kernel, None, &Conv2dOptions::square(1, 1))
        }),
        overrun("max_pool2d 4096x4096, window 64", |e| {
            e.max_pool2d(&plane, 64, 1)
        }),
        overrun("tanh over 2^26 values", |e| e.unary(Unary::Tanh, &long)),
        overrun("division over 2^26 values", |e| {
            e.binary(Binary::Div, &long, &long)
        }),
        overrun("softmax over rows of 2^24", |e| {
            e.unary(Unary::Softmax, &rows)
        }),
        overrun("backward through a 2048^3 product", |e| e.backward(&loss)),
    ];
    let worst = cases.iter().max().copied().unwrap_or_default();
    eprintln!("worst: {worst:?}");
    assert!(worst <= BOUND, "a kernel ran {worst:?} past its deadline");
}

#[test]
fn an_interrupted_engine_refuses_further_work() {
    let interrupt = Interrupt::new();
    let engine = CpuBackend::new().with_interrupt(interrupt.clone());
    let a = engine.constant(&[1 << 17], values(1 << 17)).expect("a");
    assert!(engine.unary(Unary::Relu, &a).is_ok());
    interrupt.stop();
    assert_eq!(
        engine.unary(Unary::Relu, &a).map(|_| ()),
        Err(EngineError::Interrupted)
    );
}
