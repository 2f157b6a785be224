//! With the `libtorch` feature: `TchBackend` computes what `FlexBackend` computes (forward
//! values, gradients, optimizer steps, refusals), its gradients do not accumulate from one
//! step into the next, and training does not hold on to old graphs.
#![cfg(feature = "libtorch")]
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;

mod common;

use chiron_engine::{
    Backend, Binary, Conv2dOptions, EngineError, FlexBackend, Optimizer, OptimizerKind, TchBackend,
    Unary,
};
use common::values;

/// `actual` within `tolerance` of `expected`, relative to the largest expected magnitude.
fn assert_agree(what: &str, actual: &[f32], expected: &[f32], tolerance: f32) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths");
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= tolerance * scale,
            "{what}, element {i}: libtorch {a} vs flex {e} (scale {scale})"
        );
    }
}

const BATCH: usize = 4;
const CLASSES: usize = 5;

/// Parameter shapes of a small conv net: conv 3→6 (3×3, pad 1), relu, pool 2, conv 6→8
/// (3×3, stride 2, pad 1), sigmoid, linear 8·2·2→16, tanh, linear 16→5.
const SHAPES: [&[usize]; 8] = [
    &[6, 3, 3, 3],
    &[6],
    &[8, 6, 3, 3],
    &[8],
    &[32, 16],
    &[16],
    &[16, CLASSES],
    &[CLASSES],
];

fn parameters<B: Backend>(engine: &B) -> Vec<B::Tensor> {
    SHAPES
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let n = s.iter().product();
            let scaled = values(n, 100 + i as u64).iter().map(|v| v * 0.5).collect();
            engine.parameter(s, scaled).unwrap()
        })
        .collect()
}

fn batch<B: Backend>(engine: &B, seed: u64) -> (B::Tensor, B::Tensor) {
    let x = engine
        .constant(&[BATCH, 3, 8, 8], values(BATCH * 3 * 64, seed))
        .unwrap();
    let labels = (0..BATCH).map(|i| ((i as u64 + seed) % 5) as f32).collect();
    (x, engine.constant(&[BATCH], labels).unwrap())
}

/// Logits and loss of the small conv net.
fn forward<B: Backend>(
    engine: &B,
    p: &[B::Tensor],
    x: &B::Tensor,
    y: &B::Tensor,
) -> [B::Tensor; 2] {
    let h = engine
        .conv2d(x, &p[0], Some(&p[1]), &Conv2dOptions::square(1, 1))
        .unwrap();
    let h = engine.unary(Unary::Relu, &h).unwrap();
    let h = engine.max_pool2d(&h, 2, 2).unwrap();
    let h = engine
        .conv2d(&h, &p[2], Some(&p[3]), &Conv2dOptions::square(2, 1))
        .unwrap();
    let h = engine.unary(Unary::Sigmoid, &h).unwrap();
    let h = engine.reshape(&h, &[BATCH, 32]).unwrap();
    let h = engine.linear(&h, &p[4], Some(&p[5])).unwrap();
    let h = engine.unary(Unary::Tanh, &h).unwrap();
    let logits = engine.linear(&h, &p[6], Some(&p[7])).unwrap();
    let loss = engine.cross_entropy(&logits, y, 0.0).unwrap();
    [logits, loss]
}

/// Logits, loss and every parameter's gradient, read out.
fn pass<B: Backend>(engine: &B, params: &[B::Tensor], seed: u64) -> Vec<Vec<f32>> {
    let (x, y) = batch(engine, seed);
    let [logits, loss] = forward(engine, params, &x, &y);
    let grads = engine.backward(&loss).unwrap();
    let mut out = vec![engine.read(&logits).unwrap(), engine.read(&loss).unwrap()];
    for p in params {
        let g = engine
            .grad(&grads, p)
            .expect("every parameter has a gradient");
        out.push(engine.read(&g).unwrap());
    }
    out
}

#[test]
fn forward_and_gradients_agree_with_flex() {
    let (flex, tch) = (FlexBackend::new(), TchBackend::new());
    let expected = pass(&flex, &parameters(&flex), 7);
    let actual = pass(&tch, &parameters(&tch), 7);
    let names = ["logits", "loss"];
    for (i, (a, e)) in actual.iter().zip(&expected).enumerate() {
        let what = names
            .get(i)
            .map_or(format!("gradient {}", i - 2), |n| n.to_string());
        assert_agree(&what, a, e, 1e-4);
    }
}

#[test]
fn other_operations_agree_with_flex() {
    let expected = ops(&FlexBackend::new(), &[3, 7], values(21, 9));
    let actual = ops(&TchBackend::new(), &[3, 7], values(21, 9));
    for (i, (a, e)) in actual.iter().zip(&expected).enumerate() {
        assert_agree(&format!("operation {i}"), a, e, 1e-5);
    }
}

/// Softmax, sqrt, the binary operations, affine, mean, pools with a window larger than its
/// stride and with the largest stride allowed, and a constant from shared values.
fn ops<B: Backend>(engine: &B, shape: &[usize], data: Vec<f32>) -> Vec<Vec<f32>> {
    let x = engine.constant(shape, data.clone()).unwrap();
    let positive: Vec<f32> = data.iter().map(|v| v.abs() + 0.5).collect();
    let y = engine.constant(shape, positive).unwrap();
    let image = engine.reshape(&x, &[1, 1, 3, 7]).unwrap();
    let results = [
        engine.unary(Unary::Softmax, &x),
        engine.unary(Unary::Sqrt, &y),
        engine.binary(Binary::Add, &x, &y),
        engine.binary(Binary::Sub, &x, &y),
        engine.binary(Binary::Mul, &x, &y),
        engine.binary(Binary::Div, &x, &y),
        engine.affine(&x, -1.5, 0.25),
        engine.affine(&x, 2.0, 0.0),
        engine.mean(&x),
        engine.max_pool2d(&image, 3, 2),
        engine.max_pool2d(&image, 2, 64),
        engine.shared_constant(shape, &Arc::new(data)),
    ];
    results
        .into_iter()
        .map(|r| engine.read(&r.unwrap()).unwrap())
        .collect()
}

/// Parameters after `steps` optimizer steps on fresh batches.
fn train<B: Backend>(engine: &B, kind: OptimizerKind, steps: u64) -> Vec<Vec<f32>> {
    let mut params = parameters(engine);
    let mut opt = Optimizer::<B>::new(kind, params.len()).unwrap();
    for step in 0..steps {
        let (x, y) = batch(engine, 40 + step);
        let [_, loss] = forward(engine, &params, &x, &y);
        let grads = engine.backward(&loss).unwrap();
        opt.step(engine, &mut params, &grads).unwrap();
    }
    params.iter().map(|p| engine.read(p).unwrap()).collect()
}

#[test]
fn optimizer_steps_agree_with_flex() {
    let kinds = [
        OptimizerKind::Sgd {
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 1e-3,
        },
        OptimizerKind::Adam {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        },
    ];
    for kind in kinds {
        let expected = train(&FlexBackend::new(), kind, 5);
        let actual = train(&TchBackend::new(), kind, 5);
        for (i, (a, e)) in actual.iter().zip(&expected).enumerate() {
            assert_agree(&format!("{kind:?}: parameter {i}"), a, e, 1e-4);
        }
    }
}

#[test]
fn gradients_do_not_accumulate_across_passes() {
    let engine = TchBackend::new();
    let params = parameters(&engine);
    let first = pass(&engine, &params, 1);
    // Another pass on other data, then the first data again: the same gradients, not sums.
    pass(&engine, &params, 2);
    let again = pass(&engine, &params, 1);
    assert_eq!(first, again);
}

#[test]
fn gradients_go_only_to_parameters_that_took_part() {
    let engine = TchBackend::new();
    let used = engine.parameter(&[2, 3], values(6, 1)).unwrap();
    let unused = engine.parameter(&[3], values(3, 2)).unwrap();
    let x = engine.constant(&[4, 2], values(8, 3)).unwrap();
    let loss = engine
        .mean(&engine.linear(&x, &used, None).unwrap())
        .unwrap();
    let grads = engine.backward(&loss).unwrap();
    assert!(engine.grad(&grads, &used).is_some());
    assert!(engine.grad(&grads, &unused).is_none());
    // A detached copy or a view is not the parameter.
    assert!(engine.grad(&grads, &engine.detach(&used)).is_none());
    let view = engine.reshape(&used, &[6]).unwrap();
    assert!(engine.grad(&grads, &view).is_none());
    // Clones are the same parameter.
    assert!(engine.grad(&grads, &used.clone()).is_some());
}

#[test]
fn backward_refusals_match_flex() {
    fn refusals<B: Backend>(engine: &B) -> Vec<Result<(), EngineError>> {
        let p = engine.parameter(&[3], vec![1.0, 2.0, 3.0]).unwrap();
        let c = engine.constant(&[1], vec![1.0]).unwrap();
        let h = engine.unary(Unary::Tanh, &p).unwrap();
        let loss = engine.mean(&h).unwrap();
        let other = engine
            .mean(&engine.binary(Binary::Mul, &h, &h).unwrap())
            .unwrap();
        let itself = engine.parameter(&[1], vec![3.0]).unwrap();
        let own = engine.backward(&itself).map(|g| {
            let g = engine.grad(&g, &itself).unwrap();
            assert_eq!(engine.read(&g).unwrap(), vec![1.0]);
        });
        vec![
            engine.backward(&c).map(drop),
            engine.backward(&p).map(drop),
            engine.backward(&engine.detach(&loss)).map(drop),
            engine.backward(&loss).map(drop),
            // The graph behind `h` was consumed by the pass above.
            engine.backward(&other).map(drop),
            own,
        ]
    }
    let expected = refusals(&FlexBackend::new());
    assert_eq!(refusals(&TchBackend::new()), expected);
    assert!(matches!(expected[3], Ok(())));
    assert!(matches!(expected[4], Err(EngineError::Internal { .. })));
}

#[test]
fn hostile_arguments_get_the_same_errors_as_flex() {
    fn errors<B: Backend>(engine: &B) -> Vec<EngineError> {
        let x = engine.constant(&[1, 2, 5, 5], values(50, 40)).unwrap();
        let w3 = engine.constant(&[4, 3, 3, 3], values(108, 41)).unwrap();
        let w2 = engine.constant(&[4, 2, 3, 3], values(72, 41)).unwrap();
        let w_big = engine.constant(&[1, 2, 9, 9], values(162, 42)).unwrap();
        let flat = engine.constant(&[4, 3], values(12, 43)).unwrap();
        let b5 = engine.constant(&[5], values(5, 44)).unwrap();
        let labels = engine.constant(&[4], vec![0.0, 1.0, 7.0, 2.0]).unwrap();
        let halves = engine.constant(&[4], vec![0.0, 0.5, 1.0, 2.0]).unwrap();
        let nan = engine
            .constant(&[4], vec![0.0, f32::NAN, 1.0, 2.0])
            .unwrap();
        // A small input and kernel whose padded output would exceed the size limit.
        let image = engine.constant(&[1, 1, 64, 64], values(4096, 45)).unwrap();
        let many = engine
            .constant(&[1 << 16, 1, 1, 1], values(1 << 16, 46))
            .unwrap();
        [
            engine.conv2d(&x, &w3, None, &Conv2dOptions::square(1, 0)),
            engine.conv2d(&flat, &w3, None, &Conv2dOptions::square(1, 0)),
            engine.conv2d(&x, &flat, None, &Conv2dOptions::square(1, 0)),
            engine.conv2d(&x, &w_big, None, &Conv2dOptions::square(1, 0)),
            engine.conv2d(&x, &w2, None, &Conv2dOptions::square(0, 0)),
            engine.conv2d(&x, &w2, None, &Conv2dOptions::square(65, 0)),
            engine.conv2d(&x, &w2, None, &Conv2dOptions::square(1, 65)),
            engine.conv2d(&x, &w2, Some(&b5), &Conv2dOptions::square(1, 0)),
            engine.conv2d(&image, &many, None, &Conv2dOptions::square(1, 16)),
            engine.max_pool2d(&x, 0, 1),
            engine.max_pool2d(&x, 2, 0),
            engine.max_pool2d(&x, 9, 1),
            engine.max_pool2d(&flat, 2, 2),
            engine.linear(&flat, &flat, None),
            engine.linear(&x, &flat, None),
            engine.linear(
                &flat,
                &engine.constant(&[3, 2], values(6, 1)).unwrap(),
                Some(&b5),
            ),
            engine.binary(Binary::Add, &x, &flat),
            engine.affine(&x, f32::INFINITY, 0.0),
            engine.affine(&x, 1.0, f32::NAN),
            engine.reshape(&flat, &[5, 3]),
            engine.reshape(&flat, &[0, 3]),
            engine.reshape(&flat, &[1, 1, 1, 1, 12]),
            engine.cross_entropy(&x, &flat, 0.0),
            engine.cross_entropy(&flat, &b5, 0.0),
            engine.cross_entropy(&flat, &labels, 0.0),
            engine.cross_entropy(&flat, &halves, 0.0),
            engine.cross_entropy(&flat, &nan, 0.0),
            engine.constant(&[2, 2], vec![1.0; 3]),
            engine.shared_constant(&[2, 2], &Arc::new(vec![1.0; 5])),
            engine.shared_constant(&[2, 0], &Arc::new(vec![])),
            engine.constant(&[1 << 20, 1 << 20], vec![]),
        ]
        .into_iter()
        .map(|r| r.err().expect("a hostile argument was accepted"))
        .collect()
    }
    assert_eq!(errors(&TchBackend::new()), errors(&FlexBackend::new()));
}

/// Resident memory of this process, from `/proc` (Linux).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[test]
fn training_does_not_keep_old_graphs() {
    let engine = TchBackend::new();
    let mut params = parameters(&engine);
    let kind = OptimizerKind::Sgd {
        lr: 0.01,
        momentum: 0.9,
        weight_decay: 0.0,
    };
    let mut opt = Optimizer::<TchBackend>::new(kind, params.len()).unwrap();
    // Batches of 64 images 3×32×32: each step's graph holds several MiB of activations.
    let x = engine
        .constant(&[64, 3, 32, 32], values(64 * 3 * 1024, 5))
        .unwrap();
    let y = engine
        .constant(&[64], (0..64).map(|i| (i % 5) as f32).collect())
        .unwrap();
    let mut step = |params: &mut Vec<_>| {
        let h = engine
            .conv2d(
                &x,
                &params[0],
                Some(&params[1]),
                &Conv2dOptions::square(1, 1),
            )
            .unwrap();
        let h = engine.max_pool2d(&h, 4, 4).unwrap();
        let h = engine
            .conv2d(
                &h,
                &params[2],
                Some(&params[3]),
                &Conv2dOptions::square(2, 1),
            )
            .unwrap();
        let h = engine.max_pool2d(&h, 2, 2).unwrap();
        let h = engine.reshape(&h, &[64, 32]).unwrap();
        let h = engine.linear(&h, &params[4], Some(&params[5])).unwrap();
        let logits = engine.linear(&h, &params[6], Some(&params[7])).unwrap();
        let loss = engine.cross_entropy(&logits, &y, 0.0).unwrap();
        let grads = engine.backward(&loss).unwrap();
        opt.step(&engine, params, &grads).unwrap();
    };
    for _ in 0..20 {
        step(&mut params);
    }
    let Some(before) = resident_bytes() else {
        return;
    };
    for _ in 0..200 {
        step(&mut params);
    }
    let after = resident_bytes().unwrap_or(before);
    // Each step's graph holds about 3 MiB: 200 leaked graphs would be hundreds of MiB.
    assert!(
        after < before + (64 << 20),
        "resident memory grew from {before} to {after} bytes over 200 steps"
    );
}
