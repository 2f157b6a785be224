//! The engine's kernels against plain reference loops, its gradients against finite
//! differences, its optimizers on a problem with a known answer, and its argument checks
//! against the inputs a hostile program would send.
//!
//! Every check is written once over [`Backend`] and runs against [`FlexBackend`], and, with
//! the `libtorch` feature, against `TchBackend` too (the `libtorch::` tests).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use chiron_engine::{
    Backend, Binary, Conv2dOptions, EngineError, FlexBackend, Optimizer, OptimizerKind, Shape,
    Unary,
};
use common::values;

/// One `#[test]` per check, each on a fresh engine from `$engine`.
macro_rules! kernel_tests {
    ($engine:expr) => {
        #[test]
        fn conv2d_matches_a_direct_convolution() {
            check_conv2d(&$engine);
        }

        #[test]
        fn max_pool_and_linear_match_plain_loops() {
            check_max_pool_and_linear(&$engine);
        }

        #[test]
        fn cross_entropy_is_the_mean_negative_log_softmax() {
            check_cross_entropy(&$engine);
        }

        #[test]
        fn gradients_match_finite_differences() {
            check_gradients(&$engine);
        }

        #[test]
        fn optimizers_reach_the_least_squares_solution() {
            check_optimizers(&$engine);
        }

        #[test]
        fn hostile_arguments_are_errors_not_panics() {
            check_hostile_arguments(&$engine);
        }
    };
}

kernel_tests!(FlexBackend::new());

#[cfg(feature = "libtorch")]
mod libtorch {
    use super::*;
    kernel_tests!(chiron_engine::TchBackend::new());
}

fn assert_close(actual: &[f32], expected: &[f32], tolerance: f32) {
    assert_eq!(actual.len(), expected.len());
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= tolerance * (1.0 + e.abs()),
            "element {i}: {a} vs {e}"
        );
    }
}

/// Direct convolution, `x` `[n, c, h, w]`, `w` `[o, c, k, k]`.
#[allow(clippy::too_many_arguments)]
fn conv_reference(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    (n, c, h, wd): (usize, usize, usize, usize),
    (o, k): (usize, usize),
    stride: usize,
    pad: usize,
) -> Vec<f32> {
    let oh = (h + 2 * pad - k) / stride + 1;
    let ow = (wd + 2 * pad - k) / stride + 1;
    let mut out = vec![0f32; n * o * oh * ow];
    for ni in 0..n {
        for oi in 0..o {
            for y in 0..oh {
                for xx in 0..ow {
                    let mut acc = b[oi];
                    for ci in 0..c {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (y * stride + ky) as isize - pad as isize;
                                let ix = (xx * stride + kx) as isize - pad as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xv = x[((ni * c + ci) * h + iy as usize) * wd + ix as usize];
                                let wv = w[((oi * c + ci) * k + ky) * k + kx];
                                acc += xv * wv;
                            }
                        }
                    }
                    out[((ni * o + oi) * oh + y) * ow + xx] = acc;
                }
            }
        }
    }
    out
}

fn check_conv2d<B: Backend>(engine: &B) {
    for &(stride, pad) in &[(1, 0), (1, 1), (2, 1)] {
        let (n, c, h, w, o, k) = (2, 3, 7, 6, 4, 3);
        let xv = values(n * c * h * w, 1);
        let wv = values(o * c * k * k, 2);
        let bv = values(o, 3);
        let x = engine.constant(&[n, c, h, w], xv.clone()).unwrap();
        let wt = engine.constant(&[o, c, k, k], wv.clone()).unwrap();
        let bt = engine.constant(&[o], bv.clone()).unwrap();
        let y = engine
            .conv2d(&x, &wt, Some(&bt), &Conv2dOptions::square(stride, pad))
            .unwrap();
        let expected = conv_reference(&xv, &wv, &bv, (n, c, h, w), (o, k), stride, pad);
        assert_close(&engine.read(&y).unwrap(), &expected, 1e-5);
        let oh = (h + 2 * pad - k) / stride + 1;
        let ow = (w + 2 * pad - k) / stride + 1;
        assert_eq!(engine.shape(&y).dims(), &[n, o, oh, ow]);
    }
}

fn check_max_pool_and_linear<B: Backend>(engine: &B) {
    let xv = values(2 * 4 * 4, 4);
    let x = engine.constant(&[1, 2, 4, 4], xv.clone()).unwrap();
    let pooled = engine.read(&engine.max_pool2d(&x, 2, 2).unwrap()).unwrap();
    let mut expected = Vec::new();
    for ch in 0..2 {
        for y in 0..2 {
            for xx in 0..2 {
                let at = |dy: usize, dx: usize| xv[(ch * 4 + 2 * y + dy) * 4 + 2 * xx + dx];
                expected.push(at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1)));
            }
        }
    }
    assert_eq!(pooled, expected);

    let (n, i, o) = (3, 5, 4);
    let (xv, wv, bv) = (values(n * i, 5), values(i * o, 6), values(o, 7));
    let x = engine.constant(&[n, i], xv.clone()).unwrap();
    let w = engine.constant(&[i, o], wv.clone()).unwrap();
    let b = engine.constant(&[o], bv.clone()).unwrap();
    let y = engine
        .read(&engine.linear(&x, &w, Some(&b)).unwrap())
        .unwrap();
    let expected: Vec<f32> = (0..n * o)
        .map(|at| {
            let (r, col) = (at / o, at % o);
            bv[col] + (0..i).map(|k| xv[r * i + k] * wv[k * o + col]).sum::<f32>()
        })
        .collect();
    assert_close(&y, &expected, 1e-5);
}

fn check_cross_entropy<B: Backend>(engine: &B) {
    let logits = [2.0f32, 1.0, 0.1, -1.0, 3.0, 0.5];
    let labels = [0.0f32, 1.0];
    let l = engine.constant(&[2, 3], logits.to_vec()).unwrap();
    let y = engine.constant(&[2], labels.to_vec()).unwrap();
    let loss = engine
        .read(&engine.cross_entropy(&l, &y, 0.0).unwrap())
        .unwrap();
    let row = |r: usize, label: usize| {
        let z = &logits[r * 3..r * 3 + 3];
        let log_sum = z.iter().map(|v| v.exp()).sum::<f32>().ln();
        log_sum - z[label]
    };
    assert_close(&loss, &[(row(0, 0) + row(1, 1)) / 2.0], 1e-6);
}

/// Loss of a small conv → relu → pool → linear → cross-entropy network.
fn network_loss<B: Backend>(engine: &B, params: &[B::Tensor]) -> f32 {
    let x = engine.constant(&[2, 1, 6, 6], values(72, 11)).unwrap();
    let y = engine.constant(&[2], vec![1.0, 2.0]).unwrap();
    let loss = forward(engine, params, &x, &y);
    engine.read(&loss).unwrap()[0]
}

fn forward<B: Backend>(engine: &B, p: &[B::Tensor], x: &B::Tensor, y: &B::Tensor) -> B::Tensor {
    let h = engine
        .conv2d(x, &p[0], Some(&p[1]), &Conv2dOptions::square(1, 1))
        .unwrap();
    let h = engine.unary(Unary::Tanh, &h).unwrap();
    let h = engine.max_pool2d(&h, 2, 2).unwrap();
    let h = engine.reshape(&h, &[2, 2 * 3 * 3]).unwrap();
    let logits = engine.linear(&h, &p[2], Some(&p[3])).unwrap();
    engine.cross_entropy(&logits, y, 0.0).unwrap()
}

fn check_gradients<B: Backend>(engine: &B) {
    let shapes: [&[usize]; 4] = [&[2, 1, 3, 3], &[2], &[18, 3], &[3]];
    let data: Vec<Vec<f32>> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| values(s.iter().product(), 20 + i as u64))
        .collect();
    let params: Vec<_> = shapes
        .iter()
        .zip(&data)
        .map(|(s, d)| engine.parameter(s, d.clone()).unwrap())
        .collect();
    let x = engine.constant(&[2, 1, 6, 6], values(72, 11)).unwrap();
    let y = engine.constant(&[2], vec![1.0, 2.0]).unwrap();
    let grads = engine.backward(&forward(engine, &params, &x, &y)).unwrap();

    let h = 1e-2f32;
    for (pi, shape) in shapes.iter().enumerate() {
        let analytic = engine
            .read(
                &engine
                    .grad(&grads, &params[pi])
                    .expect("every parameter has a gradient"),
            )
            .unwrap();
        for e in 0..data[pi].len() {
            let with = |delta: f32| {
                let mut moved: Vec<_> = data
                    .iter()
                    .zip(&shapes)
                    .map(|(d, s)| engine.constant(s, d.clone()).unwrap())
                    .collect();
                let mut d = data[pi].clone();
                d[e] += delta;
                moved[pi] = engine.constant(shape, d).unwrap();
                network_loss(engine, &moved)
            };
            let numeric = (with(h) - with(-h)) / (2.0 * h);
            assert!(
                (numeric - analytic[e]).abs() < 2e-3 + 2e-2 * numeric.abs(),
                "parameter {pi} element {e}: analytic {} numeric {numeric}",
                analytic[e]
            );
        }
    }
}

/// Least squares `min |x·w - t|²` from `w = 0`, where the exact answer is known.
fn fit<B: Backend>(engine: &B, kind: OptimizerKind, steps: usize) -> Vec<f32> {
    let target = [0.5f32, -1.5, 2.0];
    let xv = values(32 * 3, 30);
    let tv: Vec<f32> = xv
        .chunks(3)
        .map(|r| r.iter().zip(&target).map(|(a, b)| a * b).sum())
        .collect();
    let x = engine.constant(&[32, 3], xv).unwrap();
    let t = engine.constant(&[32, 1], tv).unwrap();
    let mut params = vec![engine.parameter(&[3, 1], vec![0.0; 3]).unwrap()];
    let mut opt = Optimizer::<B>::new(kind, 1).unwrap();
    for _ in 0..steps {
        let pred = engine.linear(&x, &params[0], None).unwrap();
        let diff = engine.binary(Binary::Sub, &pred, &t).unwrap();
        let sq = engine.binary(Binary::Mul, &diff, &diff).unwrap();
        let loss = engine.mean(&sq).unwrap();
        let grads = engine.backward(&loss).unwrap();
        opt.step(engine, &mut params, &grads).unwrap();
    }
    let w = engine.read(&params[0]).unwrap();
    for (got, want) in w.iter().zip(&target) {
        assert!((got - want).abs() < 0.02, "{kind:?}: {w:?} vs {target:?}");
    }
    w
}

fn check_optimizers<B: Backend>(engine: &B) {
    fit(
        engine,
        OptimizerKind::Sgd {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
        },
        300,
    );
    fit(
        engine,
        OptimizerKind::Adam {
            lr: 0.05,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        },
        600,
    );
}

fn check_hostile_arguments<B: Backend>(engine: &B) {
    let x = engine.constant(&[1, 2, 5, 5], values(50, 40)).unwrap();
    let w3 = engine.constant(&[4, 3, 3, 3], values(108, 41)).unwrap();
    let w_big = engine.constant(&[1, 2, 9, 9], values(162, 42)).unwrap();
    let flat = engine.constant(&[4, 3], values(12, 43)).unwrap();

    let cases: Vec<(&str, Result<_, EngineError>)> = vec![
        (
            "channel mismatch",
            engine.conv2d(&x, &w3, None, &Conv2dOptions::square(1, 0)),
        ),
        (
            "kernel larger than input",
            engine.conv2d(&x, &w_big, None, &Conv2dOptions::square(1, 0)),
        ),
        (
            "stride zero",
            engine.conv2d(&x, &w3, None, &Conv2dOptions::square(0, 0)),
        ),
        ("pool window zero", engine.max_pool2d(&x, 0, 1)),
        ("pool window too large", engine.max_pool2d(&x, 9, 1)),
        ("linear inner mismatch", engine.linear(&flat, &flat, None)),
        (
            "binary shape mismatch",
            engine.binary(Binary::Add, &x, &flat),
        ),
        ("reshape changes count", engine.reshape(&flat, &[5, 3])),
        ("cross-entropy rank", engine.cross_entropy(&x, &flat, 0.0)),
        ("data length", engine.constant(&[2, 2], vec![1.0; 3])),
    ];
    for (name, result) in cases {
        assert!(result.is_err(), "{name} was accepted");
    }
    assert!(matches!(
        Shape::new(&[1 << 20, 1 << 20]),
        Err(EngineError::TooLarge { .. })
    ));
    assert!(Shape::new(&[usize::MAX, usize::MAX, 2, 2]).is_err());
    assert!(Shape::new(&[]).is_err());
    assert!(Shape::new(&[1, 0]).is_err());
    assert!(Shape::new(&[1, 1, 1, 1, 1]).is_err());

    let labels = engine.constant(&[4], vec![0.0, 1.0, 7.0, 2.0]).unwrap();
    assert!(
        engine.cross_entropy(&flat, &labels, 0.0).is_err(),
        "a label outside the class range was accepted"
    );
    let bad = OptimizerKind::Sgd {
        lr: f32::NAN,
        momentum: 0.0,
        weight_decay: 0.0,
    };
    assert!(Optimizer::<B>::new(bad, 1).is_err());
}
