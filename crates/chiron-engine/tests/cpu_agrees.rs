//! The engine's own CPU kernels against `burn`'s: the same network, the same parameters, the
//! same losses and gradients, over shapes that exercise padding, strides, tiling and every
//! element-wise operation.

mod common;

use chiron_engine::{
    Backend, Binary, Conv2dOptions, CpuBackend, EngineError, FlexBackend, Optimizer, OptimizerKind,
    Unary,
};
use common::values;

fn assert_close(what: &str, a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-4 * scale.max(1.0) + 1e-5,
            "{what}[{i}]: cpu {x} vs flex {y} (scale {scale})"
        );
    }
}

/// One convolutional network's loss and parameter gradients, on either backend.
struct Case {
    input: [usize; 4],
    conv: [usize; 4],
    stride: usize,
    padding: usize,
    pool: (usize, usize),
    classes: usize,
}

fn run<B: Backend>(engine: &B, case: &Case) -> Result<(f32, Vec<Vec<f32>>), EngineError> {
    let [n, c, h, w] = case.input;
    let [o, _, kh, kw] = case.conv;
    let x = engine.constant(&case.input, values(n * c * h * w, 1))?;
    let cw = engine.parameter(&case.conv, values(o * c * kh * kw, 2))?;
    let cb = engine.parameter(&[o], values(o, 3))?;
    let y = engine.conv2d(
        &x,
        &cw,
        Some(&cb),
        &Conv2dOptions::square(case.stride, case.padding),
    )?;
    let y = engine.unary(Unary::Tanh, &y)?;
    // A second convolution, so that the first one's output gradient flows into an input.
    let w2 = engine.parameter(&[6, o, 3, 3], values(6 * o * 9, 6))?;
    let y = engine.conv2d(&y, &w2, None, &Conv2dOptions::square(1, 1))?;
    let y = engine.max_pool2d(&y, case.pool.0, case.pool.1)?;
    let dims = engine.shape(&y).dims().to_vec();
    let features: usize = dims[1..].iter().product();
    let y = engine.reshape(&y, &[n, features])?;
    let lw = engine.parameter(
        &[features, case.classes],
        values(features * case.classes, 4),
    )?;
    let lb = engine.parameter(&[case.classes], values(case.classes, 5))?;
    let logits = engine.linear(&y, &lw, Some(&lb))?;
    let labels: Vec<f32> = (0..n).map(|i| (i % case.classes) as f32).collect();
    let labels = engine.constant(&[n], labels)?;
    let loss = engine.cross_entropy(&logits, &labels, 0.0)?;
    let grads = engine.backward(&loss)?;
    let mut out = Vec::new();
    for p in [&cw, &cb, &w2, &lw, &lb] {
        let g = engine
            .grad(&grads, p)
            .ok_or(EngineError::NotDifferentiable)?;
        out.push(engine.read(&g)?);
    }
    Ok((engine.read(&loss)?[0], out))
}

/// Shapes that exercise padding, strides, tiling and short blocks.
fn conv_cases() -> [Case; 5] {
    [
        // Net A's first layer, padded, at batch 3.
        Case {
            input: [3, 3, 32, 32],
            conv: [8, 3, 3, 3],
            stride: 1,
            padding: 1,
            pool: (2, 2),
            classes: 10,
        },
        // Strided, unpadded, non-square input and kernel, overlapping pool windows.
        Case {
            input: [2, 4, 11, 9],
            conv: [5, 4, 3, 2],
            stride: 2,
            padding: 0,
            pool: (3, 1),
            classes: 4,
        },
        // Padding wider than the kernel reach, stride 3, batch 1.
        Case {
            input: [1, 2, 7, 7],
            conv: [3, 2, 2, 2],
            stride: 3,
            padding: 2,
            pool: (1, 1),
            classes: 3,
        },
        // Blocks of several images, the last one short (20 = 6 × 3 + 2).
        Case {
            input: [20, 5, 10, 10],
            conv: [7, 5, 3, 3],
            stride: 1,
            padding: 1,
            pool: (2, 2),
            classes: 5,
        },
        // Many positions per image: the patch matrix is tiled (K = 64·25 = 1600 rows).
        Case {
            input: [2, 64, 60, 60],
            conv: [4, 64, 5, 5],
            stride: 1,
            padding: 2,
            pool: (4, 4),
            classes: 2,
        },
    ]
}

#[test]
fn convolutional_networks_agree_with_burn() {
    let cases = conv_cases();
    for (i, case) in cases.iter().enumerate() {
        let (cpu_loss, cpu) = run(&CpuBackend::new(), case).expect("cpu");
        let (flex_loss, flex) = run(&FlexBackend::new(), case).expect("flex");
        assert!(
            (cpu_loss - flex_loss).abs() < 1e-4,
            "case {i}: loss {cpu_loss} vs {flex_loss}"
        );
        for (j, (a, b)) in cpu.iter().zip(&flex).enumerate() {
            assert_close(&format!("case {i} grad {j}"), a, b);
        }
    }
}

fn elementwise<B: Backend>(engine: &B) -> Result<Vec<Vec<f32>>, EngineError> {
    let a = engine.parameter(&[4, 6], values(24, 7))?;
    let b = engine.parameter(&[4, 6], values(24, 8).iter().map(|v| v + 2.0).collect())?;
    let mut outs = Vec::new();
    let mut acc = engine.affine(&a, 0.5, 0.25)?;
    for op in [Binary::Add, Binary::Sub, Binary::Mul, Binary::Div] {
        acc = engine.binary(op, &acc, &b)?;
        outs.push(engine.read(&acc)?);
    }
    for op in [Unary::Relu, Unary::Sigmoid, Unary::Tanh, Unary::Softmax] {
        acc = engine.unary(op, &acc)?;
        outs.push(engine.read(&acc)?);
    }
    let positive = engine.unary(Unary::Sqrt, &engine.binary(Binary::Mul, &acc, &acc)?)?;
    let loss = engine.mean(&engine.binary(Binary::Mul, &positive, &a)?)?;
    outs.push(engine.read(&loss)?);
    let grads = engine.backward(&loss)?;
    for p in [&a, &b] {
        let g = engine
            .grad(&grads, p)
            .ok_or(EngineError::NotDifferentiable)?;
        outs.push(engine.read(&g)?);
    }
    Ok(outs)
}

#[test]
fn elementwise_functions_and_their_gradients_agree_with_burn() {
    let cpu = elementwise(&CpuBackend::new()).expect("cpu");
    let flex = elementwise(&FlexBackend::new()).expect("flex");
    for (i, (a, b)) in cpu.iter().zip(&flex).enumerate() {
        assert_close(&format!("output {i}"), a, b);
    }
}

/// The host sizes an enclave's thread pool to the cores it shares with other enclaves, so
/// the number of threads must change only the speed: the same network gives bit for bit the
/// same loss and gradients on one thread and on several.
#[test]
fn the_thread_count_changes_no_result() {
    // Net A's shapes at a training batch, then the agreement tests' shapes.
    let net_a = Case {
        input: [64, 1, 28, 28],
        conv: [32, 1, 3, 3],
        stride: 1,
        padding: 1,
        pool: (2, 2),
        classes: 10,
    };
    let cases: Vec<Case> = std::iter::once(net_a).chain(conv_cases()).collect();
    let on = |threads: usize, case: &Case| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool");
        let (loss, grads) = pool.install(|| run(&CpuBackend::new(), case)).expect("cpu");
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        (
            loss.to_bits(),
            grads.iter().map(|g| bits(g)).collect::<Vec<_>>(),
        )
    };
    for (i, case) in cases.iter().enumerate() {
        let alone = on(1, case);
        for threads in [2, 3, 8] {
            assert!(
                on(threads, case) == alone,
                "case {i}: {threads} threads give another result than one"
            );
        }
    }
    let trained = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool")
            .install(|| train(&CpuBackend::new()))
            .expect("cpu")
    };
    assert_eq!(trained(1), trained(4), "ten training steps");
}

/// Ten SGD-momentum steps of a small MLP: parameters after training agree.
fn train<B: Backend>(engine: &B) -> Result<Vec<Vec<f32>>, EngineError> {
    let x = engine.constant(&[16, 12], values(192, 9))?;
    let labels = engine.constant(&[16], (0..16).map(|i| (i % 3) as f32).collect())?;
    let mut params = vec![
        engine.parameter(&[12, 20], values(240, 10).iter().map(|v| v * 0.3).collect())?,
        engine.parameter(&[20], vec![0.0; 20])?,
        engine.parameter(&[20, 3], values(60, 11).iter().map(|v| v * 0.3).collect())?,
        engine.parameter(&[3], vec![0.0; 3])?,
    ];
    let kind = OptimizerKind::Sgd {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 0.0,
    };
    let mut optimizer = Optimizer::<B>::new(kind, params.len())?;
    for _ in 0..10 {
        let h = engine.unary(
            Unary::Relu,
            &engine.linear(&x, &params[0], Some(&params[1]))?,
        )?;
        let logits = engine.linear(&h, &params[2], Some(&params[3]))?;
        let loss = engine.cross_entropy(&logits, &labels, 0.0)?;
        let grads = engine.backward(&loss)?;
        optimizer.step(engine, &mut params, &grads)?;
    }
    params.iter().map(|p| engine.read(p)).collect()
}

#[test]
fn training_steps_agree_with_burn() {
    let cpu = train(&CpuBackend::new()).expect("cpu");
    let flex = train(&FlexBackend::new()).expect("flex");
    for (i, (a, b)) in cpu.iter().zip(&flex).enumerate() {
        assert_close(&format!("parameter {i}"), a, b);
    }
}

#[test]
fn a_long_chain_of_operations_is_released_without_recursion() {
    let engine = CpuBackend::new();
    let p = engine.parameter(&[1], vec![1.0]).expect("parameter");
    let mut t = p.clone();
    for _ in 0..1_000_000 {
        t = engine.affine(&t, 1.0, 0.0).expect("affine");
    }
    let grads = engine.backward(&t).expect("backward");
    let g = engine.grad(&grads, &p).expect("gradient");
    assert_eq!(engine.read(&g).expect("read"), vec![1.0]);
    drop(t);
}

#[test]
fn gradients_are_only_for_what_took_part() {
    let engine = CpuBackend::new();
    let used = engine.parameter(&[2], vec![1.0, 2.0]).expect("parameter");
    let unused = engine.parameter(&[2], vec![3.0, 4.0]).expect("parameter");
    let loss = engine
        .mean(&engine.binary(Binary::Mul, &used, &used).expect("mul"))
        .expect("mean");
    let grads = engine.backward(&loss).expect("backward");
    assert_eq!(
        engine
            .read(&engine.grad(&grads, &used).expect("used"))
            .expect("read"),
        vec![1.0, 2.0]
    );
    assert!(engine.grad(&grads, &unused).is_none());
    let constant = engine.constant(&[1], vec![1.0]).expect("constant");
    assert_eq!(
        engine.backward(&constant).err(),
        Some(EngineError::NotDifferentiable)
    );
}

/// The element-wise functions added for provider models, each through a loss: `mean(f(x) ⊙
/// w)`, its value and its gradient with respect to `x`.
const NEW_UNARY: [Unary; 6] = [
    Unary::Exp,
    Unary::Log,
    Unary::Abs,
    Unary::LeakyRelu,
    Unary::Gelu,
    Unary::Silu,
];

/// Inputs for `op`, spread over [-3, 3) and kept 0.05 away from 0 (where `abs` and leaky ReLU
/// have their kink), positive for `log`.
fn unary_inputs(op: Unary, n: usize, seed: u64) -> Vec<f32> {
    values(n, seed)
        .into_iter()
        .map(|v| {
            let v = 3.0 * v;
            let v = if v.abs() < 0.05 { v + 0.1 } else { v };
            if op == Unary::Log { v.abs() + 0.05 } else { v }
        })
        .collect()
}

fn unary_loss<B: Backend>(
    engine: &B,
    op: Unary,
    dims: &[usize],
    x: Vec<f32>,
) -> Result<(Vec<f32>, f32, Vec<f32>), EngineError> {
    let n = x.len();
    let x = engine.parameter(dims, x)?;
    let y = engine.unary(op, &x)?;
    let w = engine.constant(dims, values(n, 99))?;
    let loss = engine.mean(&engine.binary(Binary::Mul, &y, &w)?)?;
    let grads = engine.backward(&loss)?;
    let g = engine
        .grad(&grads, &x)
        .ok_or(EngineError::NotDifferentiable)?;
    let loss = engine.read(&loss)?.first().copied().unwrap_or(f32::NAN);
    Ok((engine.read(&y)?, loss, engine.read(&g)?))
}

#[test]
fn new_element_wise_functions_and_their_gradients_agree_with_burn() {
    // Batch 1, a single element, and odd sizes.
    for dims in [vec![1, 1], vec![1, 13], vec![3, 5, 7]] {
        let n = dims.iter().product();
        for op in NEW_UNARY {
            let x = unary_inputs(op, n, 31);
            let (cy, cl, cg) = unary_loss(&CpuBackend::new(), op, &dims, x.clone()).expect("cpu");
            let (fy, fl, fg) = unary_loss(&FlexBackend::new(), op, &dims, x).expect("flex");
            assert_close(&format!("{op:?} {dims:?} values"), &cy, &fy);
            assert_close(&format!("{op:?} {dims:?} loss"), &[cl], &[fl]);
            assert_close(&format!("{op:?} {dims:?} gradient"), &cg, &fg);
        }
    }
}

#[test]
fn new_element_wise_gradients_match_finite_differences() {
    let dims = [2, 5];
    let engine = CpuBackend::new();
    for op in NEW_UNARY {
        let x = unary_inputs(op, 10, 47);
        let (_, _, grad) = unary_loss(&engine, op, &dims, x.clone()).expect("grad");
        for i in 0..x.len() {
            // Central differences in f64 from f32 losses: h large enough for f32's precision,
            // small enough for the curvature of these functions over [-3, 3].
            let h = 1e-2f32;
            let at = |delta: f32| {
                let mut moved = x.clone();
                moved[i] += delta;
                f64::from(unary_loss(&engine, op, &dims, moved).expect("loss").1)
            };
            let numeric = (at(h) - at(-h)) / (2.0 * f64::from(h));
            let analytic = f64::from(grad[i]);
            assert!(
                (numeric - analytic).abs() <= 2e-3 * analytic.abs().max(0.05),
                "{op:?}[{i}] at {}: analytic {analytic} vs numeric {numeric}",
                x[i]
            );
        }
    }
}

#[test]
fn new_element_wise_functions_follow_ieee_at_the_edges() {
    let engine = CpuBackend::new();
    let x = engine
        .constant(&[5], vec![-1.0, 0.0, 1.0, 100.0, -100.0])
        .expect("constant");
    let read = |op| {
        engine
            .read(&engine.unary(op, &x).expect("unary"))
            .expect("read")
    };
    let log = read(Unary::Log);
    assert!(log[0].is_nan() && log[1] == f32::NEG_INFINITY && log[2] == 0.0);
    assert_eq!(read(Unary::Exp)[3], f32::INFINITY);
    assert!(read(Unary::Exp)[4] < 1e-40);
    assert_eq!(read(Unary::Gelu)[3], 100.0);
    assert!(read(Unary::Gelu)[4].abs() < 1e-30);
    assert!(read(Unary::Silu)[4].abs() < 1e-30);
    assert_eq!(read(Unary::LeakyRelu), vec![-0.01, 0.0, 1.0, 100.0, -1.0]);
}
