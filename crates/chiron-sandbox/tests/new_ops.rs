//! The second ABI's operations in the runtime: each is charged its declared cost before the
//! engine runs it (a budget one short refuses it and spends nothing; a dropout refused draws
//! nothing from the seeded stream), its ABI codes and list arguments are checked, results
//! computed with gradients off are cut from the graph, and the time left is coarse.
#![allow(clippy::expect_used)] // test helpers: a failed step is a failed test

mod common;

use std::time::{Duration, Instant};

use chiron_engine::cost::{self, Cost};
use chiron_engine::{
    Conv2dOptions, CpuBackend, EngineError, OptimizerKind, Pool, Pool2dOptions, Reduce,
};
use chiron_sandbox::runtime::{MAX_AXES, MAX_CONCAT, Runtime};
use chiron_sandbox::{Limit, Quotas, SandboxError};

type Rt = Runtime<CpuBackend>;
type Op = Box<dyn Fn(&mut Rt, &[u32]) -> Result<u32, SandboxError>>;

/// A runtime with `compute` operations of budget.
fn runtime(compute: u64) -> Rt {
    common::predict_runtime_with(
        [0.5, -1.0, 2.0, 0.25],
        Quotas {
            compute,
            ..Quotas::default()
        },
    )
}

/// Constants of `shapes` (values `0, 1, 2, ...` modulo `modulo`), in a fresh runtime with
/// `compute` left once they are made.
fn with_inputs(compute: u64, shapes: &[&[usize]], modulo: usize) -> (Rt, Vec<u32>) {
    let setup = shapes
        .iter()
        .fold(Cost::default(), |acc, s| acc.plus(cost::tensor(s)));
    let mut rt = runtime(setup.flops + compute);
    let handles = shapes
        .iter()
        .map(|s| {
            let n = s.iter().product::<usize>();
            let values = (0..n).map(|i| (i % modulo) as f32).collect();
            rt.tensor_from(values, s).expect("input")
        })
        .collect();
    (rt, handles)
}

/// One op, its inputs and the cost it declares.
struct Case {
    name: &'static str,
    inputs: Vec<Vec<usize>>,
    modulo: usize,
    cost: Cost,
    op: Op,
}

fn case(
    name: &'static str,
    inputs: &[&[usize]],
    cost: Cost,
    op: impl Fn(&mut Rt, &[u32]) -> Result<u32, SandboxError> + 'static,
) -> Case {
    Case {
        name,
        inputs: inputs.iter().map(|s| s.to_vec()).collect(),
        modulo: 3,
        cost,
        op: Box::new(op),
    }
}

fn cases() -> Vec<Case> {
    let conv = Conv2dOptions {
        stride: [2, 1],
        padding: [1, 0],
        dilation: [1, 2],
        groups: 2,
    };
    let pool = Pool2dOptions {
        kernel: [3, 2],
        stride: [2, 2],
        padding: [1, 1],
    };
    vec![
        case(
            "conv2d_ex",
            &[&[2, 4, 6, 6], &[4, 2, 3, 3]],
            cost::conv2d(&[2, 4, 6, 6], &[4, 2, 3, 3], &conv),
            move |rt, h| rt.conv2d_ex(h[0], h[1], u32::MAX, &conv),
        ),
        case(
            "conv2d (square)",
            &[&[2, 4, 6, 6], &[3, 4, 3, 3]],
            cost::conv2d(&[2, 4, 6, 6], &[3, 4, 3, 3], &Conv2dOptions::square(1, 1)),
            |rt, h| rt.conv2d(h[0], h[1], u32::MAX, 1, 1),
        ),
        case(
            "pool2d",
            &[&[2, 4, 6, 6]],
            cost::pool2d(Pool::Avg, &[2, 4, 6, 6], &pool),
            move |rt, h| rt.pool2d(1, h[0], &pool),
        ),
        case(
            "max_pool2d",
            &[&[2, 4, 6, 6]],
            cost::max_pool2d(&[2, 4, 6, 6], 2, 2),
            |rt, h| rt.max_pool2d(h[0], 2, 2),
        ),
        case(
            "adaptive_avg_pool2d",
            &[&[2, 4, 6, 6]],
            cost::adaptive_avg_pool2d(&[2, 4, 6, 6], [2, 3]),
            |rt, h| rt.adaptive_avg_pool2d(h[0], 2, 3),
        ),
        case(
            "binary (pow, broadcast)",
            &[&[4, 1, 3], &[5, 1]],
            cost::binary(&[4, 1, 3], &[5, 1]),
            |rt, h| rt.binary(4, h[0], h[1]),
        ),
        case("clamp", &[&[4, 5]], cost::elementwise(&[4, 5]), |rt, h| {
            rt.clamp(h[0], 0.5, 1.5)
        }),
        case(
            "reduce",
            &[&[4, 5, 6]],
            cost::reduce(Reduce::Var, &[4, 5, 6], &[0, 2]),
            |rt, h| rt.reduce(4, h[0], &[0, 2], 1),
        ),
        case("argmax", &[&[4, 5]], cost::argmax(&[4, 5], 1), |rt, h| {
            rt.argmax(h[0], 1, 0)
        }),
        case(
            "permute",
            &[&[4, 5, 6]],
            cost::permute(&[4, 5, 6]),
            |rt, h| rt.permute(h[0], &[2, 0, 1]),
        ),
        case(
            "concat",
            &[&[2, 3], &[5, 3]],
            cost::concat([&[2, 3][..], &[5, 3][..]]),
            |rt, h| rt.concat(&[h[0], h[1]], 0),
        ),
        case(
            "narrow",
            &[&[6, 3]],
            cost::narrow(&[6, 3], 0, 4),
            |rt, h| rt.narrow(h[0], 0, 1, 4),
        ),
        case(
            "index_select",
            &[&[5, 3], &[4]],
            cost::index_select(&[5, 3], 0, &[4]),
            |rt, h| rt.index_select(h[0], 0, h[1]),
        ),
        case(
            "matmul",
            &[&[3, 4, 5], &[2, 1, 5, 7]],
            cost::matmul(&[3, 4, 5], &[2, 1, 5, 7]),
            |rt, h| rt.matmul(h[0], h[1]),
        ),
        case(
            "normalize",
            &[&[4, 5, 6]],
            cost::normalize(&[4, 5, 6], &[0, 2]),
            |rt, h| rt.normalize(h[0], &[0, 2], 1e-5).map(|[out, _, _]| out),
        ),
        case("dropout", &[&[4, 5]], cost::dropout(&[4, 5]), |rt, h| {
            rt.dropout(h[0], 0.5)
        }),
        case(
            "cross_entropy_smoothed",
            &[&[4, 3], &[4]],
            cost::cross_entropy_smoothed(&[4, 3]),
            |rt, h| rt.cross_entropy_smoothed(h[0], h[1], 0.1),
        ),
        case(
            "cross_entropy",
            &[&[4, 3], &[4]],
            cost::cross_entropy(&[4, 3]),
            |rt, h| rt.cross_entropy(h[0], h[1]),
        ),
        case(
            "bce_with_logits",
            &[&[4, 3], &[4, 3]],
            cost::bce_with_logits(&[4, 3]),
            |rt, h| rt.bce_with_logits(h[0], h[1]),
        ),
    ]
}

#[test]
fn each_new_op_is_charged_its_cost_before_it_runs() {
    for case in cases() {
        let shapes: Vec<&[usize]> = case.inputs.iter().map(Vec::as_slice).collect();
        assert!(case.cost.flops > 0, "{}: a cost", case.name);

        // One short: refused, and nothing spent.
        let (mut rt, h) = with_inputs(case.cost.flops - 1, &shapes, case.modulo);
        let err = (case.op)(&mut rt, &h).expect_err("over budget");
        assert!(
            matches!(err, SandboxError::Limit(Limit::Compute)),
            "{}: {err:?}",
            case.name
        );
        assert_eq!(rt.compute_left(), case.cost.flops - 1, "{}", case.name);

        // Exactly enough: it runs, all of it spent, and its result is there.
        let (mut rt, h) = with_inputs(case.cost.flops, &shapes, case.modulo);
        let out = (case.op)(&mut rt, &h).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(rt.compute_left(), 0, "{}", case.name);
        assert!(!rt.shape(out).expect("a result").is_empty());
    }
}

#[test]
fn a_product_beyond_the_budget_is_refused_without_running() {
    // [4096, 4096] · [4096, 4096]: 2^37 operations, seconds of work if it ran.
    let mut rt = runtime(1 << 36);
    let a = rt.parameter(&[4096, 4096], 0, 0.0).expect("a");
    let b = rt.parameter(&[4096, 4096], 0, 0.0).expect("b");
    let started = Instant::now();
    let err = rt.matmul(a, b).expect_err("over budget");
    assert!(
        matches!(err, SandboxError::Limit(Limit::Compute)),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(500), "it ran");
    // A grouped convolution of the same kind of size.
    let x = rt.parameter(&[64, 64, 64, 64], 0, 0.0).expect("x");
    let w = rt.parameter(&[64, 64, 3, 3], 0, 0.0).expect("w");
    let options = Conv2dOptions {
        padding: [64, 64],
        ..Conv2dOptions::square(1, 0)
    };
    let started = Instant::now();
    let err = rt.conv2d_ex(x, w, u32::MAX, &options).expect_err("over");
    assert!(
        matches!(err, SandboxError::Limit(Limit::Compute)),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(500), "it ran");
}

#[test]
fn a_refused_dropout_draws_nothing_from_the_stream() {
    let first = runtime(u64::MAX).random_u64();
    let (mut rt, h) = with_inputs(cost::dropout(&[4, 5]).flops - 1, &[&[4, 5]], 3);
    rt.dropout(h[0], 0.5).expect_err("over budget");
    assert_eq!(rt.random_u64(), first, "the stream did not move");
    let (mut rt, h) = with_inputs(u64::MAX / 2, &[&[4, 5]], 3);
    rt.dropout(h[0], 0.5).expect("fits");
    assert_ne!(rt.random_u64(), first, "one seed was drawn");
}

/// A loss `cross_entropy(x · w)` of the query input against label 0.
fn loss(rt: &mut Rt, w: u32) -> u32 {
    let x = rt.query_input().expect("x");
    let labels = rt.tensor_from(vec![0.0], &[1]).expect("labels");
    let logits = rt.linear(x, w, u32::MAX).expect("logits");
    rt.cross_entropy(logits, labels).expect("loss")
}

#[test]
fn results_computed_with_gradients_off_are_cut_from_the_graph() {
    let mut rt = runtime(u64::MAX);
    let w = rt.parameter(&[4, 3], 1, 0.5).expect("w");
    let kind = OptimizerKind::Sgd {
        lr: 0.1,
        momentum: 0.0,
        weight_decay: 0.0,
    };
    let opt = rt.optimizer(vec![w], kind).expect("opt");

    // Off: the loss cannot be stepped on, and says why.
    assert_eq!(rt.set_grad_enabled(0).expect("off"), 1);
    assert_eq!(rt.set_grad_enabled(0).expect("still off"), 0);
    let untracked = loss(&mut rt, w);
    // A parameter made while gradients are off is still trainable.
    let w2 = rt.parameter(&[4, 3], 1, 0.5).expect("w2");
    assert_eq!(rt.set_grad_enabled(1).expect("on"), 0);
    let err = rt.optimizer_step(opt, untracked).expect_err("no graph");
    assert!(
        matches!(&err, SandboxError::Abi { call: "optimizer_step", detail } if detail.contains("gradients off")),
        "{err:?}"
    );
    // Built on with gradients back on, it is still outside the graph: the graph is cut,
    // not just the label.
    let scaled = rt.affine(untracked, 2.0, 0.0).expect("scaled");
    let err = rt.optimizer_step(opt, scaled).expect_err("no graph");
    assert!(
        matches!(err, SandboxError::Engine(EngineError::NotDifferentiable)),
        "{err:?}"
    );

    // On: both parameters train.
    let before = rt.read(w).expect("w");
    let tracked = loss(&mut rt, w);
    rt.optimizer_step(opt, tracked).expect("step");
    assert_ne!(rt.read(w).expect("w"), before);
    let opt2 = rt.optimizer(vec![w2], kind).expect("opt2");
    let tracked = loss(&mut rt, w2);
    rt.optimizer_step(opt2, tracked)
        .expect("a parameter made under no-grad trains");

    let err = rt.set_grad_enabled(2).expect_err("not a flag");
    assert!(
        matches!(
            err,
            SandboxError::Abi {
                call: "set_grad_enabled",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn unknown_codes_and_long_lists_are_misuse() {
    let (mut rt, h) = with_inputs(u64::MAX / 2, &[&[2, 3], &[1, 1, 4, 4]], 3);
    let abi = |r: Result<u32, SandboxError>, call: &str| match r {
        Err(SandboxError::Abi { call: c, .. }) if c == call => {}
        other => panic!("{call}: {other:?}"),
    };
    abi(rt.binary(7, h[0], h[0]), "binary");
    abi(rt.reduce(5, h[0], &[0], 0), "reduce");
    abi(rt.reduce(0, h[0], &[0], 2), "reduce");
    abi(rt.reduce(0, h[0], &[0; MAX_AXES + 1], 0), "reduce");
    abi(rt.argmax(h[0], 0, 7), "argmax");
    abi(rt.permute(h[0], &[0; MAX_AXES + 1]), "permute");
    abi(rt.concat(&[], 0), "concat");
    abi(rt.concat(&vec![h[0]; MAX_CONCAT + 1], 0), "concat");
    abi(rt.concat(&[h[0], 999_999], 0), "concat");
    abi(rt.pool2d(2, h[1], &Pool2dOptions::square(2, 2)), "pool2d");
    let err = rt
        .normalize(h[0], &[0; MAX_AXES + 1], 1e-5)
        .expect_err("long");
    assert!(
        matches!(
            err,
            SandboxError::Abi {
                call: "normalize",
                ..
            }
        ),
        "{err:?}"
    );
    // The codes of the contract are known.
    for code in 0..=6 {
        rt.binary(code, h[0], h[0]).expect("a binary op");
    }
    for code in 0..=4 {
        rt.reduce(code, h[0], &[1], 0).expect("a reduction");
    }
    for kind in 0..=1 {
        rt.pool2d(kind, h[1], &Pool2dOptions::square(2, 2))
            .expect("a pooling");
    }
}

#[test]
fn a_constant_parameter_holds_its_value() {
    let mut rt = runtime(u64::MAX);
    let p = rt.parameter(&[2, 3], 3, -0.5).expect("constant");
    assert_eq!(rt.read(p).expect("read"), vec![-0.5; 6]);
    rt.parameter(&[2], 3, f32::NAN).expect_err("not finite");
    rt.parameter(&[2], 1, -0.5).expect_err("a negative scale");
}

#[test]
fn the_time_left_is_coarse_and_unbounded_without_a_deadline() {
    let rt = runtime(u64::MAX);
    assert_eq!(rt.time_left_ms(), u64::MAX);
    rt.interrupt()
        .set_deadline(Instant::now() + Duration::from_millis(1_250));
    let left = rt.time_left_ms();
    assert!(
        left.is_multiple_of(100) && (1_000..=1_200).contains(&left),
        "{left}"
    );
    rt.interrupt().set_deadline(Instant::now());
    assert_eq!(rt.time_left_ms(), 0);
}
