//! The provider's toolbox on both engines: convolution options, pooling, broadcasting binary
//! operations, clamp, reductions, shape operations, batched products, normalisation,
//! dropout and the losses.
//!
//! - Every case of a table runs on [`CpuBackend`] and on the reference [`FlexBackend`]: same
//!   shapes, same values, same parameter gradients (of `mean(op(x) · w)` for a fixed `w`).
//! - The CPU engine's gradients are checked against central differences.
//! - Small hand-computed cases pin the semantics both could share by mistake (ties, padding,
//!   windows, smoothing).
//! - Hostile arguments are errors on both engines, of the same kind, never panics.

mod common;

use std::mem::discriminant;
use std::panic::{AssertUnwindSafe, catch_unwind};

use chiron_engine::{
    Backend, Binary, Conv2dOptions, CpuBackend, EngineError, FlexBackend, Interrupt, Pool,
    Pool2dOptions, Reduce, dropout_mask,
};
use common::values;

type R<T> = Result<T, EngineError>;

/// Tensor dimensions in a table of cases.
type Dims = &'static [usize];

// ---------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------

/// How an input is filled.
#[derive(Clone, Debug)]
enum Fill {
    /// In [-1, 1).
    Random(u64),
    /// In [0.5, 1.5): bases of powers, divisors.
    Positive(u64),
    /// In [0, 1): probabilities.
    Unit(u64),
    /// Distinct values 0.05 apart, shifted by the offset: no ties, and no value within 0.01
    /// of a multiple of 0.05 (kinks of max, min and clamp stay out of reach of differences).
    Grid(u64, f32),
    /// Exactly these values.
    Given(Vec<f32>),
}

fn fill(f: &Fill, n: usize) -> Vec<f32> {
    match f {
        Fill::Random(seed) => values(n, *seed),
        Fill::Positive(seed) => values(n, *seed).iter().map(|v| v.abs() + 0.5).collect(),
        Fill::Unit(seed) => values(n, *seed).iter().map(|v| (v + 1.0) / 2.0).collect(),
        Fill::Grid(seed, offset) => {
            let keys = values(n, *seed);
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]));
            let mut out = vec![0.0; n];
            for (rank, &i) in order.iter().enumerate() {
                out[i] = (rank as f32 - (n / 2) as f32) * 0.05 + offset;
            }
            out
        }
        Fill::Given(v) => v.clone(),
    }
}

#[derive(Clone, Debug)]
struct Input {
    dims: Vec<usize>,
    fill: Fill,
    /// A parameter (its gradient is compared) or a constant.
    trainable: bool,
}

fn param(dims: &[usize], fill: Fill) -> Input {
    Input {
        dims: dims.to_vec(),
        fill,
        trainable: true,
    }
}

fn fixed(dims: &[usize], fill: Fill) -> Input {
    Input {
        dims: dims.to_vec(),
        fill,
        trainable: false,
    }
}

fn rnd(dims: &[usize], seed: u64) -> Input {
    param(dims, Fill::Random(seed))
}

fn grid(dims: &[usize], seed: u64) -> Input {
    param(dims, Fill::Grid(seed, 0.01))
}

/// An operation and its non-tensor arguments; the tensors are the case's inputs in order.
#[derive(Clone, Debug)]
enum Op {
    /// `x, w[, b]`.
    Conv(Conv2dOptions),
    Pool(Pool, Pool2dOptions),
    /// The provided square, unpadded max pooling.
    MaxPool(usize, usize),
    Adaptive([usize; 2]),
    Binary(Binary),
    Clamp(f32, f32),
    Reduce(Reduce, Vec<usize>, bool),
    Argmax(usize, bool),
    Permute(Vec<usize>),
    /// Every input, along the axis.
    Concat(usize),
    Narrow(usize, usize, usize),
    /// `x, indices`.
    IndexSelect(usize),
    Matmul,
    /// The normalised output (the statistics are checked by hand below).
    Normalize(Vec<usize>),
    Dropout(f32, u64),
    /// `logits, labels`.
    CrossEntropy(f32),
    /// `logits, targets`.
    Bce,
}

struct Case {
    name: String,
    op: Op,
    inputs: Vec<Input>,
}

fn case(name: impl Into<String>, op: Op, inputs: Vec<Input>) -> Case {
    Case {
        name: name.into(),
        op,
        inputs,
    }
}

fn apply<B: Backend>(e: &B, op: &Op, xs: &[B::Tensor]) -> R<B::Tensor> {
    match op {
        Op::Conv(o) => e.conv2d(&xs[0], &xs[1], xs.get(2), o),
        Op::Pool(kind, o) => e.pool2d(*kind, &xs[0], o),
        Op::MaxPool(k, s) => e.max_pool2d(&xs[0], *k, *s),
        Op::Adaptive(out) => e.adaptive_avg_pool2d(&xs[0], *out),
        Op::Binary(b) => e.binary(*b, &xs[0], &xs[1]),
        Op::Clamp(lo, hi) => e.clamp(&xs[0], *lo, *hi),
        Op::Reduce(r, axes, keep) => e.reduce(*r, &xs[0], axes, *keep),
        Op::Argmax(axis, keep) => e.argmax(&xs[0], *axis, *keep),
        Op::Permute(perm) => e.permute(&xs[0], perm),
        Op::Concat(axis) => e.concat(&xs.iter().collect::<Vec<_>>(), *axis),
        Op::Narrow(axis, start, len) => e.narrow(&xs[0], *axis, *start, *len),
        Op::IndexSelect(axis) => e.index_select(&xs[0], *axis, &xs[1]),
        Op::Matmul => e.matmul(&xs[0], &xs[1]),
        Op::Normalize(axes) => Ok(e.normalize(&xs[0], axes, 1e-5)?.output),
        Op::Dropout(p, seed) => e.dropout(&xs[0], *p, *seed),
        Op::CrossEntropy(s) => e.cross_entropy(&xs[0], &xs[1], *s),
        Op::Bce => e.bce_with_logits(&xs[0], &xs[1]),
    }
}

fn conv(stride: [usize; 2], padding: [usize; 2], dilation: [usize; 2], groups: usize) -> Op {
    Op::Conv(Conv2dOptions {
        stride,
        padding,
        dilation,
        groups,
    })
}

fn pool(kind: Pool, kernel: [usize; 2], stride: [usize; 2], padding: [usize; 2]) -> Op {
    Op::Pool(
        kind,
        Pool2dOptions {
            kernel,
            stride,
            padding,
        },
    )
}

fn cases() -> Vec<Case> {
    let mut cases = vec![
        // Convolutions: [N, C, H, W] with [O, C / groups, KH, KW] (and a bias).
        case(
            "conv square, padded, bias",
            Op::Conv(Conv2dOptions::square(1, 1)),
            vec![rnd(&[2, 3, 5, 7], 1), rnd(&[4, 3, 3, 3], 2), rnd(&[4], 3)],
        ),
        case(
            "conv rectangular kernel, strides, padding and dilation",
            conv([2, 1], [1, 2], [2, 1], 1),
            vec![rnd(&[1, 2, 9, 6], 4), rnd(&[3, 2, 3, 2], 5), rnd(&[3], 6)],
        ),
        case(
            "conv dilated both ways, no bias, batch 1, prime sizes",
            conv([1, 1], [0, 0], [2, 3], 1),
            vec![rnd(&[1, 1, 7, 11], 7), rnd(&[5, 1, 3, 3], 8)],
        ),
        case(
            "conv stride larger than the kernel",
            conv([3, 2], [2, 0], [1, 1], 1),
            vec![rnd(&[2, 2, 7, 5], 9), rnd(&[3, 2, 2, 2], 10), rnd(&[3], 11)],
        ),
        case(
            "conv grouped (2 groups)",
            conv([1, 1], [1, 1], [1, 1], 2),
            vec![
                rnd(&[2, 4, 5, 5], 12),
                rnd(&[6, 2, 3, 3], 13),
                rnd(&[6], 14),
            ],
        ),
        case(
            "conv depthwise, multiplier 2, strided and dilated",
            conv([2, 1], [1, 2], [2, 1], 3),
            vec![
                rnd(&[1, 3, 9, 6], 15),
                rnd(&[6, 1, 3, 5], 16),
                rnd(&[6], 17),
            ],
        ),
        case(
            "conv 1x1 kernel on a 1x1 image",
            Op::Conv(Conv2dOptions::square(1, 0)),
            vec![
                rnd(&[3, 5, 1, 1], 18),
                rnd(&[2, 5, 1, 1], 19),
                rnd(&[2], 20),
            ],
        ),
        // Pooling.
        case(
            "max pool padded",
            pool(Pool::Max, [3, 3], [2, 2], [1, 1]),
            vec![grid(&[1, 2, 7, 5], 21)],
        ),
        case(
            "max pool rectangular, padded one way",
            pool(Pool::Max, [2, 3], [1, 2], [1, 0]),
            vec![grid(&[2, 1, 5, 7], 22)],
        ),
        case(
            "avg pool padded (counting the padding)",
            pool(Pool::Avg, [3, 2], [2, 1], [1, 1]),
            vec![rnd(&[1, 2, 7, 5], 23)],
        ),
        case(
            "avg pool unpadded on an odd size",
            pool(Pool::Avg, [2, 2], [2, 2], [0, 0]),
            vec![rnd(&[2, 3, 5, 7], 24)],
        ),
        case(
            "avg pool window 1",
            pool(Pool::Avg, [1, 1], [1, 1], [0, 0]),
            vec![rnd(&[1, 1, 3, 2], 25)],
        ),
        case(
            "max pool provided square",
            Op::MaxPool(2, 2),
            vec![grid(&[2, 3, 5, 4], 26)],
        ),
        case(
            "max pool overlapping windows",
            Op::MaxPool(3, 1),
            vec![grid(&[1, 2, 5, 6], 27)],
        ),
        // Adaptive pooling.
        case(
            "adaptive pool non-divisible",
            Op::Adaptive([3, 2]),
            vec![rnd(&[2, 3, 7, 5], 28)],
        ),
        case(
            "adaptive pool global",
            Op::Adaptive([1, 1]),
            vec![rnd(&[2, 3, 7, 5], 29)],
        ),
        case(
            "adaptive pool identity",
            Op::Adaptive([7, 5]),
            vec![rnd(&[1, 2, 7, 5], 30)],
        ),
        case(
            "adaptive pool 5x13 to 3x4",
            Op::Adaptive([3, 4]),
            vec![rnd(&[1, 1, 5, 13], 31)],
        ),
        // Clamp.
        case("clamp", Op::Clamp(-0.2, 0.3), vec![grid(&[3, 5], 32)]),
        case(
            "clamp one-sided",
            Op::Clamp(f32::NEG_INFINITY, 0.1),
            vec![grid(&[2, 3, 4], 33)],
        ),
        case(
            "clamp to a point",
            Op::Clamp(0.0, 0.0),
            vec![grid(&[7], 34)],
        ),
        // Permutations.
        case(
            "permute rank 4",
            Op::Permute(vec![3, 1, 0, 2]),
            vec![rnd(&[2, 3, 4, 5], 35)],
        ),
        case(
            "permute rank 3",
            Op::Permute(vec![2, 0, 1]),
            vec![rnd(&[2, 3, 5], 36)],
        ),
        case(
            "permute rank 2",
            Op::Permute(vec![1, 0]),
            vec![rnd(&[3, 7], 37)],
        ),
        case(
            "permute identity",
            Op::Permute(vec![0, 1, 2, 3]),
            vec![rnd(&[1, 3, 1, 2], 38)],
        ),
        // Concatenation.
        case(
            "concat 3 tensors, middle axis",
            Op::Concat(1),
            vec![
                rnd(&[2, 1, 3], 39),
                rnd(&[2, 4, 3], 40),
                rnd(&[2, 2, 3], 41),
            ],
        ),
        case(
            "concat rank 1",
            Op::Concat(0),
            vec![rnd(&[3], 42), rnd(&[1], 43), rnd(&[5], 44)],
        ),
        case(
            "concat last axis of rank 4",
            Op::Concat(3),
            vec![rnd(&[2, 1, 3, 2], 45), rnd(&[2, 1, 3, 1], 46)],
        ),
        case("concat one tensor", Op::Concat(0), vec![rnd(&[2, 3], 47)]),
        // Narrowing.
        case(
            "narrow at the start",
            Op::Narrow(1, 0, 2),
            vec![rnd(&[3, 5, 2], 48)],
        ),
        case(
            "narrow at the end",
            Op::Narrow(3, 4, 3),
            vec![rnd(&[1, 2, 3, 7], 49)],
        ),
        case("narrow to one", Op::Narrow(0, 6, 1), vec![rnd(&[7], 50)]),
        case(
            "narrow to the whole",
            Op::Narrow(0, 0, 2),
            vec![rnd(&[2, 3], 51)],
        ),
        // Index selection.
        case(
            "embedding lookup with repeats",
            Op::IndexSelect(0),
            vec![
                rnd(&[10, 4], 52),
                fixed(&[5], Fill::Given(vec![3.0, 3.0, 0.0, 9.0, 3.0])),
            ],
        ),
        case(
            "index_select middle axis",
            Op::IndexSelect(1),
            vec![
                rnd(&[2, 5, 3], 53),
                fixed(&[4], Fill::Given(vec![4.0, 0.0, 4.0, 2.0])),
            ],
        ),
        case(
            "index_select last axis of rank 4",
            Op::IndexSelect(3),
            vec![rnd(&[2, 1, 2, 3], 54), fixed(&[1], Fill::Given(vec![2.0]))],
        ),
        case(
            "index_select rank 1",
            Op::IndexSelect(0),
            vec![
                rnd(&[3], 55),
                fixed(&[7], Fill::Given(vec![2.0, 1.0, 0.0, 0.0, 1.0, 2.0, 2.0])),
            ],
        ),
        // Products.
        case(
            "matmul 2-D",
            Op::Matmul,
            vec![rnd(&[2, 3], 56), rnd(&[3, 5], 57)],
        ),
        case(
            "matmul batched",
            Op::Matmul,
            vec![rnd(&[2, 3, 4], 58), rnd(&[2, 4, 5], 59)],
        ),
        case(
            "matmul broadcast batch both sides",
            Op::Matmul,
            vec![rnd(&[2, 1, 3, 4], 60), rnd(&[5, 4, 2], 61)],
        ),
        case(
            "matmul matrix times batch",
            Op::Matmul,
            vec![rnd(&[3, 4], 62), rnd(&[7, 4, 2], 63)],
        ),
        case(
            "matmul batch of 1x1",
            Op::Matmul,
            vec![rnd(&[3, 1, 1], 64), rnd(&[1, 1], 65)],
        ),
        case(
            "matmul batch axes 1 against 3",
            Op::Matmul,
            vec![rnd(&[2, 1, 3, 4], 66), rnd(&[1, 3, 4, 2], 67)],
        ),
        // Normalisation.
        case(
            "batch norm over [0, 2, 3]",
            Op::Normalize(vec![0, 2, 3]),
            vec![rnd(&[2, 3, 4, 5], 68)],
        ),
        case(
            "layer norm over the last axis",
            Op::Normalize(vec![1]),
            vec![rnd(&[4, 7], 69)],
        ),
        case(
            "normalize rank 3 last axis",
            Op::Normalize(vec![2]),
            vec![rnd(&[2, 3, 5], 70)],
        ),
        case(
            "normalize over every axis",
            Op::Normalize(vec![1, 0]),
            vec![rnd(&[3, 5], 71)],
        ),
        // Dropout.
        case("dropout 0", Op::Dropout(0.0, 1), vec![rnd(&[3, 5], 72)]),
        case(
            "dropout 0.5",
            Op::Dropout(0.5, 2),
            vec![rnd(&[2, 3, 7], 73)],
        ),
        case(
            "dropout 0.9 rank 4",
            Op::Dropout(0.9, 3),
            vec![rnd(&[2, 3, 2, 5], 74)],
        ),
        // Losses.
        case(
            "bce",
            Op::Bce,
            vec![rnd(&[3, 5], 75), fixed(&[3, 5], Fill::Unit(76))],
        ),
        case(
            "bce rank 4 with trainable targets",
            Op::Bce,
            vec![rnd(&[2, 1, 3, 1], 77), param(&[2, 1, 3, 1], Fill::Unit(78))],
        ),
        case(
            "bce rank 1, hard targets",
            Op::Bce,
            vec![
                param(&[4], Fill::Given(vec![-3.0, 0.5, 2.0, -0.25])),
                fixed(&[4], Fill::Given(vec![0.0, 1.0, 1.0, 0.0])),
            ],
        ),
    ];

    // Label smoothing, including none and full, a batch of 1 and a single class.
    let labels = |v: &[f32]| fixed(&[v.len()], Fill::Given(v.to_vec()));
    for s in [0.0, 0.1, 0.5, 1.0] {
        cases.push(case(
            format!("cross_entropy smoothing {s}"),
            Op::CrossEntropy(s),
            vec![rnd(&[4, 5], 79), labels(&[0.0, 4.0, 2.0, 4.0])],
        ));
    }
    cases.push(case(
        "cross_entropy batch 1",
        Op::CrossEntropy(0.2),
        vec![rnd(&[1, 3], 80), labels(&[1.0])],
    ));
    cases.push(case(
        "cross_entropy one class",
        Op::CrossEntropy(0.3),
        vec![rnd(&[3, 1], 81), labels(&[0.0, 0.0, 0.0])],
    ));

    // Binary operations over broadcasting corner cases; `Div` and `Pow` keep their second
    // and first operand positive, `Maximum`/`Minimum` operands never come within 0.015.
    let pairs: [(Dims, Dims); 6] = [
        (&[2, 3], &[2, 3]),
        (&[1], &[2, 3, 4]),
        (&[2, 1, 4], &[3, 1]),
        (&[5], &[2, 1, 3, 5]),
        (&[3, 1], &[1, 4]),
        (&[2, 3, 1, 1], &[1, 1, 2, 3]),
    ];
    let ops = [
        Binary::Add,
        Binary::Sub,
        Binary::Mul,
        Binary::Div,
        Binary::Pow,
        Binary::Maximum,
        Binary::Minimum,
    ];
    for (i, (a, b)) in pairs.iter().enumerate() {
        for (j, op) in ops.iter().enumerate() {
            let seed = 100 + 10 * i as u64 + j as u64;
            let (fa, fb) = match op {
                Binary::Div => (Fill::Random(seed), Fill::Positive(seed + 1)),
                Binary::Pow => (Fill::Positive(seed), Fill::Random(seed + 1)),
                Binary::Maximum | Binary::Minimum => {
                    (Fill::Grid(seed, 0.01), Fill::Grid(seed + 1, 0.035))
                }
                _ => (Fill::Random(seed), Fill::Random(seed + 1)),
            };
            for (x, y, fx, fy) in [(a, b, &fa, &fb), (b, a, &fa, &fb)] {
                if i == 0 && x == b {
                    continue;
                }
                cases.push(case(
                    format!("{op:?} {x:?} with {y:?}"),
                    Op::Binary(*op),
                    vec![param(x, fx.clone()), param(y, fy.clone())],
                ));
            }
        }
    }

    // Reductions over one, several (unsorted) and all axes, with and without keepdim.
    let axis_sets: [(Dims, Dims); 6] = [
        (&[2, 3, 4, 5], &[1]),
        (&[2, 3, 4, 5], &[0, 2]),
        (&[2, 3, 4, 5], &[3, 1]),
        (&[2, 3, 4, 5], &[0, 1, 2, 3]),
        (&[3, 5], &[0]),
        (&[7], &[0]),
    ];
    let reduces = [
        Reduce::Sum,
        Reduce::Mean,
        Reduce::Max,
        Reduce::Min,
        Reduce::Var,
    ];
    for (k, (dims, axes)) in axis_sets.iter().enumerate() {
        for (j, r) in reduces.iter().enumerate() {
            for keep in [false, true] {
                cases.push(case(
                    format!("{r:?} of {dims:?} over {axes:?} keepdim {keep}"),
                    Op::Reduce(*r, axes.to_vec(), keep),
                    vec![grid(dims, 200 + 10 * k as u64 + j as u64)],
                ));
            }
        }
    }
    let argmaxes: [(Dims, usize); 4] =
        [(&[2, 3, 4], 0), (&[2, 3, 4], 1), (&[2, 3, 4], 2), (&[7], 0)];
    for (dims, axis) in argmaxes {
        for keep in [false, true] {
            cases.push(case(
                format!("argmax of {dims:?} along {axis} keepdim {keep}"),
                Op::Argmax(axis, keep),
                vec![fixed(dims, Fill::Grid(300 + axis as u64, 0.01))],
            ));
        }
    }
    cases
}

// ---------------------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct Outcome {
    dims: Vec<usize>,
    values: Vec<f32>,
    /// One per trainable input; `None` where the engine gave no gradient.
    grads: Vec<Option<Vec<f32>>>,
}

fn count(dims: &[usize]) -> usize {
    dims.iter().product()
}

fn data_of(case: &Case) -> Vec<Vec<f32>> {
    case.inputs
        .iter()
        .map(|i| fill(&i.fill, count(&i.dims)))
        .collect()
}

/// The inputs as tensors: trainable ones as parameters if `train`, the rest as constants.
fn build<B: Backend>(e: &B, case: &Case, data: &[Vec<f32>], train: bool) -> R<Vec<B::Tensor>> {
    case.inputs
        .iter()
        .zip(data)
        .map(|(input, d)| {
            if train && input.trainable {
                e.parameter(&input.dims, d.clone())
            } else {
                e.constant(&input.dims, d.clone())
            }
        })
        .collect()
}

/// `mean(y · w)` for a fixed pseudo-random `w` shaped as `y`.
fn loss<B: Backend>(e: &B, y: &B::Tensor) -> R<B::Tensor> {
    let shape = e.shape(y);
    let w = e.constant(shape.dims(), values(shape.elements(), 7777))?;
    e.mean(&e.binary(Binary::Mul, y, &w)?)
}

fn run<B: Backend>(e: &B, case: &Case) -> R<Outcome> {
    let data = data_of(case);
    let xs = build(e, case, &data, true)?;
    let y = apply(e, &case.op, &xs)?;
    let mut grads = Vec::new();
    if case.inputs.iter().any(|i| i.trainable) {
        let g = e.backward(&loss(e, &y)?)?;
        for (input, x) in case.inputs.iter().zip(&xs) {
            if input.trainable {
                grads.push(e.grad(&g, x).map(|t| e.read(&t)).transpose()?);
            }
        }
    }
    Ok(Outcome {
        dims: e.shape(&y).dims().to_vec(),
        values: e.read(&y)?,
        grads,
    })
}

/// The loss of [`run`] with every input a constant holding `data`.
fn loss_value<B: Backend>(e: &B, case: &Case, data: &[Vec<f32>]) -> R<f32> {
    let xs = build(e, case, data, false)?;
    let y = apply(e, &case.op, &xs)?;
    Ok(e.read(&loss(e, &y)?)?[0])
}

/// Runs `f`, turning a panic into a message.
fn guarded<T>(f: impl FnOnce() -> R<T>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("error: {e}")),
        Err(p) => Err(format!(
            "PANIC: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    }
}

/// The first element where `a` and `b` differ by more than `rel` of their size (or of a
/// hundredth of the largest magnitude in `b`, for values that cancel).
fn mismatch(a: &[f32], b: &[f32], rel: f32) -> Option<String> {
    if a.len() != b.len() {
        return Some(format!("{} values against {}", a.len(), b.len()));
    }
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).enumerate().find_map(|(i, (&x, &y))| {
        let same = x == y || (x.is_nan() && y.is_nan());
        let tol = rel * x.abs().max(y.abs()).max(scale * 1e-2) + 1e-7;
        let off = (x - y).abs() > tol || (x - y).is_nan();
        (!same && off).then(|| format!("[{i}]: {x} against {y}"))
    })
}

fn report(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} failing:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------
// Agreement and finite differences
// ---------------------------------------------------------------------------------------

#[test]
fn engines_agree_on_values_and_gradients() {
    let (cpu, flex) = (CpuBackend::new(), FlexBackend::new());
    let mut failures = Vec::new();
    for case in cases() {
        let name = &case.name;
        let (c, f) = match (guarded(|| run(&cpu, &case)), guarded(|| run(&flex, &case))) {
            (Ok(c), Ok(f)) => (c, f),
            (c, f) => {
                failures.push(format!(
                    "{name}: cpu {:?}, flex {:?}",
                    c.map(|_| "ok"),
                    f.map(|_| "ok")
                ));
                continue;
            }
        };
        if c.dims != f.dims {
            failures.push(format!("{name}: shape {:?} against {:?}", c.dims, f.dims));
            continue;
        }
        if let Some(m) = mismatch(&c.values, &f.values, 2e-4) {
            failures.push(format!("{name}: values {m}"));
        }
        for (i, (gc, gf)) in c.grads.iter().zip(&f.grads).enumerate() {
            match (gc, gf) {
                (Some(gc), Some(gf)) => {
                    if let Some(m) = mismatch(gc, gf, 2e-4) {
                        failures.push(format!("{name}: gradient of input {i} {m}"));
                    }
                }
                (gc, gf) => failures.push(format!(
                    "{name}: gradient of input {i} present on cpu {}, on flex {}",
                    gc.is_some(),
                    gf.is_some()
                )),
            }
        }
    }
    report(&failures);
}

#[test]
fn cpu_gradients_match_central_differences() {
    // Large enough for f32 losses to resolve, small enough to stay off every kink (the grid
    // keeps values 0.01 or more from them).
    const H: f32 = 1e-2;
    let cpu = CpuBackend::new();
    let mut failures = Vec::new();
    for case in cases() {
        let name = &case.name;
        let outcome = match guarded(|| run(&cpu, &case)) {
            Ok(o) => o,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let data = data_of(&case);
        let trainable = case
            .inputs
            .iter()
            .enumerate()
            .filter(|(_, input)| input.trainable);
        for ((i, _), grad) in trainable.zip(&outcome.grads) {
            let Some(grad) = grad else {
                failures.push(format!("{name}: no gradient for input {i}"));
                continue;
            };
            let n = grad.len();
            let scale = grad.iter().fold(0f32, |m, g| m.max(g.abs()));
            let mut picks = vec![0, n / 3, 2 * n / 3, n - 1];
            picks.dedup();
            for k in picks {
                let at = |delta: f32| {
                    let mut d = data.clone();
                    d[i][k] += delta;
                    guarded(|| loss_value(&cpu, &case, &d))
                };
                let (up, down) = match (at(H), at(-H)) {
                    (Ok(u), Ok(d)) => (u, d),
                    (u, d) => {
                        failures.push(format!("{name}: {u:?} {d:?}"));
                        continue;
                    }
                };
                let numeric = (up - down) / (2.0 * H);
                let tol = 2e-2 * numeric.abs().max(grad[k].abs()).max(scale * 0.05) + 1e-6;
                if (numeric - grad[k]).abs() > tol {
                    failures.push(format!(
                        "{name}: input {i}[{k}] gradient {} against difference {numeric}",
                        grad[k]
                    ));
                }
            }
        }
    }
    report(&failures);
}

// ---------------------------------------------------------------------------------------
// Semantics by hand, on each engine
// ---------------------------------------------------------------------------------------

fn assert_near(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?} against {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
            "{what}: {got:?} against {want:?}"
        );
    }
}

/// The gradients of `mean(op(params))` for each parameter.
fn mean_grads<B: Backend>(e: &B, params: &[B::Tensor], y: &B::Tensor) -> R<Vec<Vec<f32>>> {
    let g = e.backward(&e.mean(y)?)?;
    params
        .iter()
        .map(|p| e.read(&e.grad(&g, p).ok_or(EngineError::NotDifferentiable)?))
        .collect()
}

fn ties_go_to_the_first<B: Backend>(e: &B) -> R<()> {
    let data = vec![1.0, 3.0, 3.0, 2.0, 2.0, 0.0];
    let x = e.constant(&[2, 3], data.clone())?;
    let am = e.argmax(&x, 1, false)?;
    assert_eq!(e.shape(&am).dims(), [2]);
    assert_eq!(e.read(&am)?, [1.0, 0.0]);
    let am = e.argmax(&x, 0, true)?;
    assert_eq!(e.shape(&am).dims(), [1, 3]);
    assert_eq!(e.read(&am)?, [1.0, 0.0, 0.0]);

    let p = e.parameter(&[2, 3], data.clone())?;
    // The indices of a parameter are a constant that can still meet it.
    let scaled = e.binary(Binary::Mul, &e.argmax(&p, 1, true)?, &p)?;
    let g = mean_grads(e, std::slice::from_ref(&p), &scaled)?;
    assert_near(
        "argmax as a constant",
        &g[0],
        &[1.0 / 6.0, 1.0 / 6.0, 1.0 / 6.0, 0.0, 0.0, 0.0],
    );
    let y = e.reduce(Reduce::Max, &p, &[1], false)?;
    assert_eq!(e.read(&y)?, [3.0, 2.0]);
    assert_near(
        "max ties",
        &mean_grads(e, std::slice::from_ref(&p), &y)?[0],
        &[0.0, 0.5, 0.0, 0.5, 0.0, 0.0],
    );
    let y = e.reduce(Reduce::Max, &p, &[1, 0], false)?;
    assert_eq!(e.shape(&y).dims(), [1]);
    assert_near(
        "max all",
        &mean_grads(e, std::slice::from_ref(&p), &y)?[0],
        &[0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
    );
    let q = e.parameter(&[2, 2], vec![1.0, 0.0, 0.0, 5.0])?;
    let y = e.reduce(Reduce::Min, &q, &[0, 1], true)?;
    assert_eq!(e.shape(&y).dims(), [1, 1]);
    assert_near(
        "min ties",
        &mean_grads(e, &[q], &y)?[0],
        &[0.0, 1.0, 0.0, 0.0],
    );

    let a = e.parameter(&[3], vec![1.0, 2.0, 3.0])?;
    let b = e.parameter(&[3], vec![1.0, 5.0, 0.0])?;
    let third = 1.0 / 3.0;
    let y = e.binary(Binary::Maximum, &a, &b)?;
    assert_eq!(e.read(&y)?, [1.0, 5.0, 3.0]);
    let g = mean_grads(e, &[a.clone(), b.clone()], &y)?;
    assert_near("maximum a", &g[0], &[third, 0.0, third]);
    assert_near("maximum b", &g[1], &[0.0, third, 0.0]);
    let y = e.binary(Binary::Minimum, &a, &b)?;
    assert_eq!(e.read(&y)?, [1.0, 2.0, 0.0]);
    let g = mean_grads(e, &[a, b], &y)?;
    assert_near("minimum a", &g[0], &[third, third, 0.0]);
    assert_near("minimum b", &g[1], &[0.0, 0.0, third]);

    let x = e.parameter(&[4], vec![-2.0, -0.5, 0.5, 2.0])?;
    let y = e.clamp(&x, -1.0, 1.0)?;
    assert_eq!(e.read(&y)?, [-1.0, -0.5, 0.5, 1.0]);
    assert_near(
        "clamp",
        &mean_grads(e, &[x], &y)?[0],
        &[0.0, 0.25, 0.25, 0.0],
    );
    Ok(())
}

fn windows_follow_pytorch<B: Backend>(e: &B) -> R<()> {
    // Adaptive windows from floor(i·H/out) to ceil((i+1)·H/out): [0, 2), [1, 4), [3, 5).
    let x = e.constant(&[1, 1, 5, 1], vec![1.0, 2.0, 3.0, 4.0, 5.0])?;
    let y = e.adaptive_avg_pool2d(&x, [3, 1])?;
    assert_near("adaptive", &e.read(&y)?, &[1.5, 3.0, 4.5]);
    // Every padded 3x3 window covers the whole 2x2 input: the mean counts 9 cells...
    let x = e.constant(&[1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0])?;
    let padded = Pool2dOptions {
        kernel: [3, 3],
        stride: [1, 1],
        padding: [1, 1],
    };
    let y = e.pool2d(Pool::Avg, &x, &padded)?;
    assert_near("avg pool padding", &e.read(&y)?, &[10.0 / 9.0; 4]);
    // ...and the maximum never sees the padding.
    let x = e.constant(&[1, 1, 2, 2], vec![-1.0, -2.0, -3.0, -4.0])?;
    let y = e.pool2d(Pool::Max, &x, &padded)?;
    assert_near("max pool padding", &e.read(&y)?, &[-1.0; 4]);
    // Dilation 2 on a 1x5 row with a [1, 1] kernel: taps at 0 and 2, stride 2.
    let x = e.constant(&[1, 1, 1, 5], vec![1.0, 2.0, 3.0, 4.0, 5.0])?;
    let w = e.constant(&[1, 1, 1, 2], vec![1.0, 10.0])?;
    let options = Conv2dOptions {
        stride: [1, 2],
        padding: [0, 0],
        dilation: [1, 2],
        groups: 1,
    };
    let y = e.conv2d(&x, &w, None, &options)?;
    assert_near("dilated conv", &e.read(&y)?, &[31.0, 53.0]);
    // Two groups of one channel each: each output sees only its own input channel.
    let x = e.constant(&[1, 2, 1, 1], vec![2.0, 3.0])?;
    let w = e.constant(&[2, 1, 1, 1], vec![10.0, 100.0])?;
    let grouped = Conv2dOptions {
        groups: 2,
        ..Conv2dOptions::square(1, 0)
    };
    assert_near(
        "grouped conv",
        &e.read(&e.conv2d(&x, &w, None, &grouped)?)?,
        &[20.0, 300.0],
    );
    Ok(())
}

fn losses_follow_pytorch<B: Backend>(e: &B) -> R<()> {
    let logits = [0.5f32, -1.0, 2.0, 0.0, 0.25, -0.75];
    let labels = [0usize, 2];
    for s in [0.0f32, 0.1, 1.0] {
        let l = e.constant(&[2, 3], logits.to_vec())?;
        let y = e.constant(&[2], labels.iter().map(|&c| c as f32).collect())?;
        let got = e.read(&e.cross_entropy(&l, &y, s)?)?;
        let mut want = 0.0f64;
        for (row, &label) in labels.iter().enumerate() {
            let z: Vec<f64> = logits[3 * row..3 * row + 3]
                .iter()
                .map(|&v| f64::from(v))
                .collect();
            let lse = z.iter().map(|v| v.exp()).sum::<f64>().ln();
            for (c, v) in z.iter().enumerate() {
                let target = f64::from(s) / 3.0 + if c == label { 1.0 - f64::from(s) } else { 0.0 };
                want -= target * (v - lse);
            }
        }
        assert_near(&format!("smoothing {s}"), &got, &[(want / 2.0) as f32]);
    }
    // Logits far out of exp's range stay finite.
    let x = [-100.0f32, -1.0, 0.0, 1.0, 100.0, 1e4, -1e4];
    let t = [0.0f32, 1.0, 0.5, 0.25, 1.0, 0.0, 1.0];
    let got = e.read(&e.bce_with_logits(
        &e.constant(&[7], x.to_vec())?,
        &e.constant(&[7], t.to_vec())?,
    )?)?;
    let want = x
        .iter()
        .zip(&t)
        .map(|(&x, &t)| {
            let (x, t) = (f64::from(x), f64::from(t));
            x.max(0.0) - x * t + (-x.abs()).exp().ln_1p()
        })
        .sum::<f64>()
        / 7.0;
    assert_near("bce", &got, &[want as f32]);
    // The gradient of bce is (σ(x) - t) / n, also at 0.
    let p = e.parameter(&[2], vec![0.0, 2.0])?;
    let t = e.constant(&[2], vec![0.25, 1.0])?;
    let g = e.backward(&e.bce_with_logits(&p, &t)?)?;
    let g = e.read(&e.grad(&g, &p).ok_or(EngineError::NotDifferentiable)?)?;
    let sigmoid = |v: f32| 1.0 / (1.0 + (-v).exp());
    assert_near(
        "bce gradient",
        &g,
        &[(0.5 - 0.25) / 2.0, (sigmoid(2.0) - 1.0) / 2.0],
    );
    Ok(())
}

fn shapes_and_statistics<B: Backend>(e: &B) -> R<()> {
    // Embedding: the gradient adds back into repeated rows.
    let table = e.parameter(&[4, 2], values(8, 3))?;
    let ids = e.constant(&[3], vec![1.0, 1.0, 3.0])?;
    let y = e.index_select(&table, 0, &ids)?;
    let sixth = 1.0 / 6.0;
    let want = [0.0, 0.0, 2.0 * sixth, 2.0 * sixth, 0.0, 0.0, sixth, sixth];
    assert_near(
        "embedding gradient",
        &mean_grads(e, &[table], &y)?[0],
        &want,
    );

    let x = e.constant(&[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])?;
    let t = e.permute(&x, &[1, 0])?;
    assert_eq!(e.shape(&t).dims(), [3, 2]);
    assert_eq!(e.read(&t)?, [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    let n = e.narrow(&x, 1, 2, 1)?;
    assert_eq!(e.read(&n)?, [3.0, 6.0]);
    let c = e.concat(&[&x, &n, &x], 1)?;
    assert_eq!(e.shape(&c).dims(), [2, 7]);
    assert_eq!(
        e.read(&c)?,
        [
            1.0, 2.0, 3.0, 3.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 6.0, 4.0, 5.0, 6.0
        ]
    );
    // [2, 1, 2] · [2, 1]: each batch's rows times the one column.
    let m = e.matmul(
        &e.reshape(&x, &[3, 1, 2])?,
        &e.constant(&[2, 1], vec![1.0, -1.0])?,
    )?;
    assert_eq!(e.shape(&m).dims(), [3, 1, 1]);
    assert_eq!(e.read(&m)?, [-1.0, -1.0, -1.0]);

    // Statistics over [0, 2, 3] against a direct computation, and a unit output.
    let data = values(2 * 3 * 4 * 5, 11);
    let p = e.parameter(&[2, 3, 4, 5], data.clone())?;
    let n = e.normalize(&p, &[0, 2, 3], 1e-5)?;
    assert_eq!(e.shape(&n.mean).dims(), [1, 3, 1, 1]);
    assert_eq!(e.shape(&n.var).dims(), [1, 3, 1, 1]);
    let (mut means, mut vars) = (Vec::new(), Vec::new());
    for c in 0..3 {
        let xs: Vec<f64> = (0..2)
            .flat_map(|b| (0..20).map(move |i| b * 60 + c * 20 + i))
            .map(|i| f64::from(data[i]))
            .collect();
        let mean = xs.iter().sum::<f64>() / 40.0;
        means.push(mean as f32);
        vars.push((xs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 40.0) as f32);
    }
    assert_near("batch mean", &e.read(&n.mean)?, &means);
    assert_near("batch var", &e.read(&n.var)?, &vars);
    let stats = e.reduce(Reduce::Var, &n.output, &[0, 2, 3], false)?;
    for v in e.read(&stats)? {
        assert!((v - 1.0).abs() < 1e-3, "normalised variance {v}");
    }
    // The statistics are outside the graph.
    match e.backward(&e.mean(&n.mean)?) {
        Err(_) => {}
        Ok(g) => assert!(e.grad(&g, &p).is_none(), "the mean carries a gradient"),
    }
    let n = e.normalize(&p, &[3], 1e-5)?;
    assert_eq!(e.shape(&n.mean).dims(), [2, 3, 4, 1]);
    Ok(())
}

fn dropout_uses_the_shared_mask<B: Backend>(e: &B) -> R<()> {
    let x = e.constant(&[10, 100], vec![1.0; 1000])?;
    let y = e.read(&e.dropout(&x, 0.3, 9)?)?;
    assert_eq!(y, dropout_mask(1000, 0.3, 9, &Interrupt::new())?);
    let dropped = y.iter().filter(|&&v| v == 0.0).count();
    assert!((200..400).contains(&dropped), "{dropped} of 1000 dropped");
    let data = values(12, 4);
    let x = e.constant(&[3, 4], data.clone())?;
    assert_eq!(e.read(&e.dropout(&x, 0.0, 1)?)?, data);
    Ok(())
}

macro_rules! semantics {
    ($($engine:ident: $make:expr),*) => {
        $(mod $engine {
            use super::*;

            #[test]
            fn ties_go_to_the_first() -> R<()> {
                super::ties_go_to_the_first(&$make)
            }

            #[test]
            fn windows_follow_pytorch() -> R<()> {
                super::windows_follow_pytorch(&$make)
            }

            #[test]
            fn losses_follow_pytorch() -> R<()> {
                super::losses_follow_pytorch(&$make)
            }

            #[test]
            fn shapes_and_statistics() -> R<()> {
                super::shapes_and_statistics(&$make)
            }

            #[test]
            fn dropout_uses_the_shared_mask() -> R<()> {
                super::dropout_uses_the_shared_mask(&$make)
            }
        })*
    };
}

semantics!(cpu: CpuBackend::new(), flex: FlexBackend::new());

// ---------------------------------------------------------------------------------------
// Hostile arguments
// ---------------------------------------------------------------------------------------

type Attempt<B> = Box<dyn Fn(&B) -> R<()>>;

/// A parameter of `dims`.
fn t<B: Backend>(e: &B, dims: &[usize]) -> R<B::Tensor> {
    e.parameter(dims, values(count(dims), 5))
}

/// A rank-1 constant of `v`.
fn given<B: Backend>(e: &B, v: &[f32]) -> R<B::Tensor> {
    e.constant(&[v.len()], v.to_vec())
}

fn done<T>(r: R<T>) -> R<()> {
    r.map(|_| ())
}

/// Each case builds valid tensors and asks for something invalid.
fn hostile<B: Backend + 'static>() -> Vec<(String, Attempt<B>)> {
    let mut cases: Vec<(String, Attempt<B>)> = Vec::new();
    let mut add = |name: String, f: Attempt<B>| cases.push((name, f));

    // Convolution: a depthwise-able input [1, 4, 9, 6].
    let good = Conv2dOptions {
        stride: [1, 1],
        padding: [0, 0],
        dilation: [1, 1],
        groups: 1,
    };
    let bad_options = [
        ("zero groups", Conv2dOptions { groups: 0, ..good }),
        (
            "3 groups of 4 channels",
            Conv2dOptions { groups: 3, ..good },
        ),
        (
            "stride 0",
            Conv2dOptions {
                stride: [0, 1],
                ..good
            },
        ),
        (
            "stride 65",
            Conv2dOptions {
                stride: [1, 65],
                ..good
            },
        ),
        (
            "huge stride",
            Conv2dOptions {
                stride: [usize::MAX, 1],
                ..good
            },
        ),
        (
            "dilation 0",
            Conv2dOptions {
                dilation: [1, 0],
                ..good
            },
        ),
        (
            "huge dilation",
            Conv2dOptions {
                dilation: [1 << 40, 1],
                ..good
            },
        ),
        (
            "dilation past the input",
            Conv2dOptions {
                dilation: [5, 1],
                ..good
            },
        ),
        (
            "padding 65",
            Conv2dOptions {
                padding: [65, 0],
                ..good
            },
        ),
        (
            "huge padding",
            Conv2dOptions {
                padding: [0, usize::MAX],
                ..good
            },
        ),
    ];
    for (name, options) in bad_options {
        add(
            format!("conv2d {name}"),
            Box::new(move |e: &B| {
                done(e.conv2d(&t(e, &[1, 4, 9, 6])?, &t(e, &[8, 4, 3, 3])?, None, &options))
            }),
        );
    }
    let shapes: [(&str, Dims, Dims, Option<Dims>, usize); 6] = [
        (
            "kernel channels per group",
            &[1, 4, 9, 6],
            &[8, 4, 3, 3],
            None,
            2,
        ),
        ("input rank 3", &[4, 9, 6], &[8, 4, 3, 3], None, 1),
        ("kernel rank 2", &[1, 4, 9, 6], &[8, 36], None, 1),
        ("bias length", &[1, 4, 9, 6], &[8, 4, 3, 3], Some(&[7]), 1),
        ("bias rank", &[1, 4, 9, 6], &[8, 4, 3, 3], Some(&[8, 1]), 1),
        (
            "kernel larger than input",
            &[1, 4, 2, 6],
            &[8, 4, 3, 3],
            None,
            1,
        ),
    ];
    for (name, x, w, b, groups) in shapes {
        add(
            format!("conv2d {name}"),
            Box::new(move |e: &B| {
                let options = Conv2dOptions { groups, ..good };
                let b = b.map(|b| t(e, b)).transpose()?;
                done(e.conv2d(&t(e, x)?, &t(e, w)?, b.as_ref(), &options))
            }),
        );
    }
    add(
        "conv2d output beyond the element limit".into(),
        Box::new(move |e: &B| {
            let options = Conv2dOptions {
                padding: [16, 16],
                ..good
            };
            done(e.conv2d(
                &t(e, &[1, 1, 64, 64])?,
                &t(e, &[1 << 16, 1, 1, 1])?,
                None,
                &options,
            ))
        }),
    );

    // Pooling on [1, 2, 5, 4].
    let window = |kernel, stride, padding| Pool2dOptions {
        kernel,
        stride,
        padding,
    };
    let bad_windows = [
        ("kernel 0", window([0, 2], [1, 1], [0, 0])),
        ("stride 0", window([2, 2], [0, 1], [0, 0])),
        ("stride 65", window([2, 2], [1, 65], [0, 0])),
        ("huge stride", window([2, 2], [usize::MAX, 1], [0, 0])),
        (
            "padding over half the window",
            window([3, 3], [1, 1], [2, 0]),
        ),
        (
            "window larger than the input",
            window([6, 2], [1, 1], [0, 0]),
        ),
        ("huge window", window([usize::MAX, 2], [1, 1], [0, 0])),
    ];
    for kind in [Pool::Max, Pool::Avg] {
        for (name, options) in bad_windows {
            add(
                format!("pool2d {kind:?} {name}"),
                Box::new(move |e: &B| done(e.pool2d(kind, &t(e, &[1, 2, 5, 4])?, &options))),
            );
        }
        add(
            format!("pool2d {kind:?} rank 3"),
            Box::new(move |e: &B| {
                done(e.pool2d(kind, &t(e, &[2, 5, 4])?, &window([2, 2], [1, 1], [0, 0])))
            }),
        );
    }
    add(
        "max_pool2d huge stride".into(),
        Box::new(|e: &B| done(e.max_pool2d(&t(e, &[1, 1, 4, 4])?, 2, 1 << 40))),
    );
    add(
        "max_pool2d window 0".into(),
        Box::new(|e: &B| done(e.max_pool2d(&t(e, &[1, 1, 4, 4])?, 0, 1))),
    );
    for (name, out) in [
        ("zero output", [0, 1]),
        ("output beyond input", [6, 1]),
        ("huge output", [1, usize::MAX]),
    ] {
        add(
            format!("adaptive_avg_pool2d {name}"),
            Box::new(move |e: &B| done(e.adaptive_avg_pool2d(&t(e, &[1, 2, 5, 4])?, out))),
        );
    }
    add(
        "adaptive_avg_pool2d rank 2".into(),
        Box::new(|e: &B| done(e.adaptive_avg_pool2d(&t(e, &[5, 4])?, [1, 1]))),
    );

    // Broadcasting.
    let pairs: [(&str, Dims, Dims); 3] = [
        ("[2, 3] with [3, 2]", &[2, 3], &[3, 2]),
        ("rank 4 with rank 3", &[2, 1, 3, 4], &[5, 2, 4]),
        ("beyond the element limit", &[1 << 16, 1], &[1, 1 << 16]),
    ];
    for (name, a, b) in pairs {
        for op in [Binary::Add, Binary::Pow, Binary::Maximum, Binary::Minimum] {
            add(
                format!("binary {op:?} {name}"),
                Box::new(move |e: &B| done(e.binary(op, &t(e, a)?, &t(e, b)?))),
            );
        }
    }

    // Clamp.
    for (lo, hi) in [(f32::NAN, 1.0), (0.0, f32::NAN), (1.0, -1.0)] {
        add(
            format!("clamp {lo}..{hi}"),
            Box::new(move |e: &B| done(e.clamp(&t(e, &[3, 4])?, lo, hi))),
        );
    }

    // Axes.
    let bad_axes: [Dims; 5] = [&[], &[3], &[1, 1], &[0, 3, 1], &[usize::MAX]];
    for axes in bad_axes {
        for op in [Reduce::Sum, Reduce::Max, Reduce::Var] {
            add(
                format!("reduce {op:?} over {axes:?} of rank 3"),
                Box::new(move |e: &B| done(e.reduce(op, &t(e, &[2, 3, 4])?, axes, false))),
            );
        }
        add(
            format!("normalize over {axes:?} of rank 3"),
            Box::new(move |e: &B| done(e.normalize(&t(e, &[2, 3, 4])?, axes, 1e-5))),
        );
    }
    for eps in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        add(
            format!("normalize eps {eps}"),
            Box::new(move |e: &B| done(e.normalize(&t(e, &[2, 3])?, &[1], eps))),
        );
    }
    for axis in [3, usize::MAX] {
        add(
            format!("argmax along {axis} of rank 3"),
            Box::new(move |e: &B| done(e.argmax(&t(e, &[2, 3, 4])?, axis, true))),
        );
    }
    let bad_perms: [Dims; 5] = [&[0, 1], &[0, 1, 2, 3], &[0, 0, 1], &[0, 1, 3], &[]];
    for perm in bad_perms {
        add(
            format!("permute rank 3 by {perm:?}"),
            Box::new(move |e: &B| done(e.permute(&t(e, &[2, 3, 4])?, perm))),
        );
    }

    // Concatenation.
    add(
        "concat of nothing".into(),
        Box::new(|e: &B| done(e.concat(&[], 0))),
    );
    let bad_concats: [(&str, Dims, Dims, usize); 4] = [
        ("ranks differ", &[2, 3], &[2, 3, 1], 0),
        ("dimension off the axis differs", &[2, 3], &[3, 3], 1),
        ("axis past the rank", &[2, 3], &[2, 3], 2),
        ("huge axis", &[2, 3], &[2, 3], usize::MAX),
    ];
    for (name, a, b, axis) in bad_concats {
        add(
            format!("concat {name}"),
            Box::new(move |e: &B| done(e.concat(&[&t(e, a)?, &t(e, b)?, &t(e, a)?], axis))),
        );
    }

    // Narrowing [4, 5] along 1.
    for (axis, start, len) in [
        (1, 0, 0),
        (1, 3, 3),
        (1, 5, 1),
        (1, usize::MAX, 2),
        (1, 2, usize::MAX),
        (2, 0, 1),
    ] {
        add(
            format!("narrow axis {axis} {len} from {start}"),
            Box::new(move |e: &B| done(e.narrow(&t(e, &[4, 5])?, axis, start, len))),
        );
    }

    // Index selection from a [10, 4] table.
    for bad in [1e9, -1.0, 0.5, f32::NAN, f32::INFINITY, 10.0] {
        add(
            format!("index_select index {bad}"),
            Box::new(move |e: &B| {
                done(e.index_select(&t(e, &[10, 4])?, 0, &given(e, &[0.0, bad, 1.0])?))
            }),
        );
    }
    add(
        "index_select indices of rank 2".into(),
        Box::new(|e: &B| {
            let ids = e.constant(&[1, 2], vec![0.0, 1.0])?;
            done(e.index_select(&t(e, &[10, 4])?, 0, &ids))
        }),
    );
    add(
        "index_select axis past the rank".into(),
        Box::new(|e: &B| done(e.index_select(&t(e, &[10, 4])?, 2, &given(e, &[0.0])?))),
    );
    add(
        "index_select output beyond the element limit".into(),
        Box::new(|e: &B| {
            let ids = e.constant(&[1 << 15], vec![1.0; 1 << 15])?;
            done(e.index_select(&t(e, &[2, 1 << 14])?, 0, &ids))
        }),
    );

    // Products.
    let bad_products: [(&str, Dims, Dims); 5] = [
        ("rank 1", &[4], &[4, 2]),
        ("inner dimensions differ", &[3, 4], &[3, 2]),
        ("batches do not broadcast", &[2, 3, 4], &[3, 4, 2]),
        (
            "batches of rank 4 do not broadcast",
            &[2, 1, 3, 4],
            &[3, 2, 4, 2],
        ),
        (
            "output beyond the element limit",
            &[1 << 15, 1],
            &[1, 1 << 15],
        ),
    ];
    for (name, a, b) in bad_products {
        add(
            format!("matmul {name}"),
            Box::new(move |e: &B| done(e.matmul(&t(e, a)?, &t(e, b)?))),
        );
    }

    // Dropout.
    for p in [1.0, 1.5, -0.1, f32::NAN, f32::INFINITY] {
        add(
            format!("dropout p {p}"),
            Box::new(move |e: &B| done(e.dropout(&t(e, &[3, 4])?, p, 1))),
        );
    }

    // Losses on [4, 3] logits.
    for s in [2.0, -0.1, f32::NAN, f32::INFINITY] {
        add(
            format!("cross_entropy smoothing {s}"),
            Box::new(move |e: &B| {
                done(e.cross_entropy(&t(e, &[4, 3])?, &given(e, &[0.0, 1.0, 2.0, 0.0])?, s))
            }),
        );
    }
    for (name, labels) in [
        ("label = classes", [0.0, 3.0, 1.0, 2.0]),
        ("label NaN", [0.0, f32::NAN, 1.0, 2.0]),
        ("label 1e9", [0.0, 1e9, 1.0, 2.0]),
        ("label -1", [0.0, -1.0, 1.0, 2.0]),
        ("label 0.5", [0.0, 0.5, 1.0, 2.0]),
    ] {
        add(
            format!("cross_entropy {name}"),
            Box::new(move |e: &B| done(e.cross_entropy(&t(e, &[4, 3])?, &given(e, &labels)?, 0.1))),
        );
    }
    let bad_bce: [(&str, Dims, Dims); 3] = [
        ("shapes differ", &[4, 3], &[3, 4]),
        ("targets broadcast", &[4, 3], &[1, 3]),
        ("ranks differ", &[4, 3], &[12]),
    ];
    for (name, a, b) in bad_bce {
        add(
            format!("bce_with_logits {name}"),
            Box::new(move |e: &B| done(e.bce_with_logits(&t(e, a)?, &t(e, b)?))),
        );
    }
    cases
}

#[test]
fn hostile_arguments_are_errors_on_both_engines() {
    let (cpu, flex) = (CpuBackend::new(), FlexBackend::new());
    let mut failures = Vec::new();
    for ((name, on_cpu), (_, on_flex)) in hostile::<CpuBackend>()
        .iter()
        .zip(&hostile::<FlexBackend>())
    {
        let outcome = |r: std::thread::Result<R<()>>| match r {
            Ok(Ok(())) => Err("accepted".to_string()),
            Ok(Err(e)) => Ok(e),
            Err(_) => Err("PANIC".to_string()),
        };
        let c = outcome(catch_unwind(AssertUnwindSafe(|| on_cpu(&cpu))));
        let f = outcome(catch_unwind(AssertUnwindSafe(|| on_flex(&flex))));
        match (c, f) {
            (Ok(c), Ok(f)) if discriminant(&c) == discriminant(&f) => {}
            (c, f) => failures.push(format!("{name}: cpu {c:?}, flex {f:?}")),
        }
    }
    report(&failures);
}
