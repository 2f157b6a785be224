//! The optimizers against their definitions (PyTorch's formulations), computed here in `f64`
//! step by step, on both the engine's CPU kernels and `burn`'s: the loss `mean(p ⊙ w)` has the
//! constant gradient `w / n`, so every update can be written out by hand.

#![allow(clippy::expect_used)] // test helpers: a failed step is a failed test

mod common;

use chiron_engine::{
    Backend, Binary, CpuBackend, EngineError, FlexBackend, Optimizer, OptimizerKind,
};
use common::values;

const N: usize = 6;
const STEPS: usize = 4;

/// The parameters after `STEPS` steps of `kind` (with gradient clipping at `clip`).
fn run<B: Backend>(
    engine: &B,
    kind: OptimizerKind,
    clip: Option<f32>,
) -> Result<Vec<f32>, EngineError> {
    let mut params = vec![engine.parameter(&[2, 3], values(N, 5))?];
    let w = engine.constant(&[2, 3], values(N, 6))?;
    let mut opt = Optimizer::new(kind, 1)?;
    if let Some(max_norm) = clip {
        opt.clip_grad_norm(max_norm)?;
    }
    for _ in 0..STEPS {
        let loss = engine.mean(&engine.binary(Binary::Mul, &params[0], &w)?)?;
        let grads = engine.backward(&loss)?;
        opt.step(engine, &mut params, &grads)?;
    }
    engine.read(&params[0])
}

/// What the definition gives, in `f64`: `update(step, p, g, state)` changes `p` in place.
fn expected(clip: Option<f64>, mut update: impl FnMut(i32, &mut [f64], &[f64])) -> Vec<f64> {
    let mut p: Vec<f64> = values(N, 5).into_iter().map(f64::from).collect();
    let mut g: Vec<f64> = values(N, 6)
        .into_iter()
        .map(|w| f64::from(w) / N as f64)
        .collect();
    if let Some(max) = clip {
        let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm > max {
            g.iter_mut().for_each(|v| *v *= max / (norm + 1e-6));
        }
    }
    for t in 1..=STEPS as i32 {
        update(t, &mut p, &g);
    }
    p
}

fn check(kind: OptimizerKind, clip: Option<f32>, want: &[f64]) {
    for (name, got) in [
        ("cpu", run(&CpuBackend::new(), kind, clip).expect("cpu")),
        ("flex", run(&FlexBackend::new(), kind, clip).expect("flex")),
    ] {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (f64::from(*g) - w).abs() <= 1e-5 * w.abs().max(1.0),
                "{kind:?} {name}[{i}]: {g} vs {w}"
            );
        }
    }
}

#[test]
fn nesterov_follows_its_definition() {
    let (lr, mu, wd) = (0.1, 0.9, 0.01);
    let mut v = [0f64; N];
    let want = expected(None, |t, p, g| {
        for i in 0..N {
            let gi = g[i] + wd * p[i];
            v[i] = if t == 1 { gi } else { mu * v[i] + gi };
            p[i] -= lr * (gi + mu * v[i]);
        }
    });
    let kind = OptimizerKind::Nesterov {
        lr: lr as f32,
        momentum: mu as f32,
        weight_decay: wd as f32,
    };
    check(kind, None, &want);
}

#[test]
fn adamw_follows_its_definition() {
    let (lr, b1, b2, eps, wd) = (0.01, 0.9, 0.999, 1e-8, 0.1);
    let (mut m, mut v) = ([0f64; N], [0f64; N]);
    let want = expected(None, |t, p, g| {
        for i in 0..N {
            p[i] *= 1.0 - lr * wd;
            m[i] = b1 * m[i] + (1.0 - b1) * g[i];
            v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
            let m_hat = m[i] / (1.0 - b1.powi(t));
            let v_hat = v[i] / (1.0 - b2.powi(t));
            p[i] -= lr * m_hat / (v_hat.sqrt() + eps);
        }
    });
    let kind = OptimizerKind::AdamW {
        lr: lr as f32,
        beta1: b1 as f32,
        beta2: b2 as f32,
        eps: eps as f32,
        weight_decay: wd as f32,
    };
    check(kind, None, &want);
}

#[test]
fn rmsprop_follows_its_definition() {
    let (lr, alpha, eps, wd) = (0.01, 0.99, 1e-8, 0.05);
    let mut v = [0f64; N];
    let want = expected(None, |_, p, g| {
        for i in 0..N {
            let gi = g[i] + wd * p[i];
            v[i] = alpha * v[i] + (1.0 - alpha) * gi * gi;
            p[i] -= lr * gi / (v[i].sqrt() + eps);
        }
    });
    let kind = OptimizerKind::RmsProp {
        lr: lr as f32,
        alpha: alpha as f32,
        eps: eps as f32,
        weight_decay: wd as f32,
    };
    check(kind, None, &want);
}

#[test]
fn gradient_clipping_scales_to_the_norm_and_leaves_small_gradients_alone() {
    let sgd = OptimizerKind::Sgd {
        lr: 0.5,
        momentum: 0.0,
        weight_decay: 0.0,
    };
    for max_norm in [0.01f32, 10.0] {
        let want = expected(Some(f64::from(max_norm)), |_, p, g| {
            for i in 0..N {
                p[i] -= 0.5 * g[i];
            }
        });
        check(sgd, Some(max_norm), &want);
    }
}

#[test]
fn out_of_range_hyper_parameters_are_refused() {
    let bad = [
        OptimizerKind::Nesterov {
            lr: 0.1,
            momentum: 0.0,
            weight_decay: 0.0,
        },
        OptimizerKind::AdamW {
            lr: 0.1,
            beta1: 1.0,
            beta2: 0.9,
            eps: 1e-8,
            weight_decay: 0.0,
        },
        OptimizerKind::RmsProp {
            lr: f32::NAN,
            alpha: 0.9,
            eps: 1e-8,
            weight_decay: 0.0,
        },
        OptimizerKind::RmsProp {
            lr: 0.1,
            alpha: 0.9,
            eps: 0.0,
            weight_decay: 0.0,
        },
    ];
    for kind in bad {
        assert!(Optimizer::<CpuBackend>::new(kind, 1).is_err(), "{kind:?}");
    }
    let mut opt = Optimizer::<CpuBackend>::new(
        OptimizerKind::RmsProp {
            lr: 0.1,
            alpha: 0.9,
            eps: 1e-8,
            weight_decay: 0.0,
        },
        1,
    )
    .expect("valid");
    for max_norm in [0.0, -1.0, f32::INFINITY, f32::NAN] {
        assert!(opt.clip_grad_norm(max_norm).is_err(), "{max_norm}");
    }
    assert!(opt.set_lr(0.5).is_ok());
    assert!(opt.set_lr(-0.5).is_err());
}

/// Steps `kind` twice, saves its state, then steps twice more from the saved state and from
/// the live optimizer: the two must agree bit for bit (Adam's step count and both buffers
/// travel with the state), and a state of the wrong shape is refused.
#[test]
fn a_saved_state_continues_exactly_where_it_left_off() {
    let engine = CpuBackend::new();
    let kinds = [
        OptimizerKind::Adam {
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
        },
        OptimizerKind::Nesterov {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 1e-3,
        },
        OptimizerKind::RmsProp {
            lr: 0.01,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
        },
    ];
    for kind in kinds {
        let w = engine.constant(&[N], values(N, 6)).expect("w");
        let step = |opt: &mut Optimizer<CpuBackend>, params: &mut Vec<_>| {
            let loss = engine
                .mean(&engine.binary(Binary::Mul, &params[0], &w).expect("mul"))
                .expect("mean");
            let grads = engine.backward(&loss).expect("backward");
            opt.step(&engine, params, &grads).expect("step");
        };
        let mut params = vec![engine.parameter(&[N], values(N, 5)).expect("p")];
        let mut live = Optimizer::new(kind, 1).expect("optimizer");
        live.clip_grad_norm(0.5).expect("clip");
        step(&mut live, &mut params);
        step(&mut live, &mut params);
        let saved = live.state(&engine).expect("state");
        let mut restored =
            Optimizer::from_state(&engine, saved.clone(), &[&[N]]).expect("restores");
        assert_eq!(restored.state(&engine).expect("state"), saved);
        let mut twin = vec![
            engine
                .parameter(&[N], engine.read(&params[0]).expect("read"))
                .expect("p"),
        ];
        for _ in 0..2 {
            step(&mut live, &mut params);
            step(&mut restored, &mut twin);
        }
        assert_eq!(
            engine.read(&params[0]).expect("read"),
            engine.read(&twin[0]).expect("read"),
            "{kind:?}"
        );
        let mut wrong = saved;
        wrong.first.push(None);
        assert!(Optimizer::<CpuBackend>::from_state(&engine, wrong, &[&[N]]).is_err());
    }
}
