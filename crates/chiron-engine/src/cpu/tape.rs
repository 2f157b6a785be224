//! Reverse-mode differentiation: each tensor computed from a parameter remembers the
//! operation that made it, and [`backward`] walks those records from the loss back to the
//! parameters.
//!
//! Both the walk and the release of a graph are iterative, so a program that chains a
//! million operations cannot overflow the runtime's stack.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::reduce::{self, Rows};
use super::{
    CpuTensor, batched, blocks, conv, elementwise, gemm::View, gemm::matmul, layout, norm, pool,
};
use crate::check::{Conv2d, Matmul};
use crate::interrupt::Pace;
use crate::{Binary, EngineError, Interrupt, Pool2dOptions, Reduce, Unary};

/// How a tracked tensor was computed: its inputs and what its gradient needs.
#[derive(Debug)]
pub(crate) enum Op {
    Conv {
        x: CpuTensor,
        w: CpuTensor,
        b: Option<CpuTensor>,
        geometry: Conv2d,
    },
    MaxPool {
        x: CpuTensor,
        /// For each output, the index in `x` of the value it took.
        argmax: Vec<u32>,
    },
    AvgPool {
        x: CpuTensor,
        options: Pool2dOptions,
        out: [usize; 4],
    },
    AdaptiveAvgPool {
        x: CpuTensor,
        out: [usize; 4],
    },
    Linear {
        x: CpuTensor,
        w: CpuTensor,
        b: Option<CpuTensor>,
    },
    Unary {
        op: Unary,
        x: CpuTensor,
    },
    /// Broadcasting: the output's shape is that of the tensor holding this op.
    Binary {
        op: Binary,
        a: CpuTensor,
        b: CpuTensor,
    },
    Clamp {
        x: CpuTensor,
        min: f32,
        max: f32,
    },
    Affine {
        x: CpuTensor,
        scale: f32,
    },
    /// Also the identity (dropout with `p = 0`).
    Reshape {
        x: CpuTensor,
    },
    CrossEntropy {
        logits: CpuTensor,
        probabilities: Vec<f32>,
        labels: Vec<usize>,
        smoothing: f32,
    },
    BceWithLogits {
        logits: CpuTensor,
        targets: CpuTensor,
    },
    Mean {
        x: CpuTensor,
    },
    Reduce {
        op: Reduce,
        x: CpuTensor,
        plan: Rows,
        saved: reduce::Saved,
    },
    Permute {
        x: CpuTensor,
        perm: Vec<usize>,
    },
    Concat {
        xs: Vec<CpuTensor>,
        axis: usize,
    },
    Narrow {
        x: CpuTensor,
        axis: usize,
        start: usize,
        len: usize,
    },
    IndexSelect {
        x: CpuTensor,
        axis: usize,
        indices: Vec<usize>,
    },
    Matmul {
        a: CpuTensor,
        b: CpuTensor,
        geometry: Matmul,
    },
    /// The output (the tensor holding this op) is the normalised value the backward needs.
    Normalize {
        x: CpuTensor,
        plan: Rows,
        inv_std: Vec<f32>,
    },
    Dropout {
        x: CpuTensor,
        mask: Vec<f32>,
    },
}

impl Op {
    pub(crate) fn inputs(&self) -> Vec<&CpuTensor> {
        match self {
            Op::Conv { x, w, b, .. } | Op::Linear { x, w, b } => {
                let mut v = vec![x, w];
                v.extend(b.as_ref());
                v
            }
            Op::Binary { a, b, .. } | Op::Matmul { a, b, .. } => vec![a, b],
            Op::BceWithLogits { logits, targets } => vec![logits, targets],
            Op::MaxPool { x, .. }
            | Op::AvgPool { x, .. }
            | Op::AdaptiveAvgPool { x, .. }
            | Op::Unary { x, .. }
            | Op::Clamp { x, .. }
            | Op::Affine { x, .. }
            | Op::Reshape { x }
            | Op::Mean { x }
            | Op::Reduce { x, .. }
            | Op::Permute { x, .. }
            | Op::Narrow { x, .. }
            | Op::IndexSelect { x, .. }
            | Op::Normalize { x, .. }
            | Op::Dropout { x, .. } => vec![x],
            Op::CrossEntropy { logits, .. } => vec![logits],
            Op::Concat { xs, .. } => xs.iter().collect(),
        }
    }

    /// The inputs, owned: what releasing a graph walks next.
    pub(crate) fn into_inputs(self) -> Vec<CpuTensor> {
        // The clones are the only handles left once `self` is dropped here.
        self.inputs().into_iter().cloned().collect()
    }
}

/// The gradients of one backward pass, by parameter.
#[derive(Debug, Default)]
pub struct CpuGradients {
    by_parameter: HashMap<u64, Arc<Vec<f32>>>,
}

impl CpuGradients {
    pub(crate) fn get(&self, id: u64) -> Option<&Arc<Vec<f32>>> {
        self.by_parameter.get(&id)
    }
}

/// Tracked tensors reachable from `root`, each after every tensor computed from it.
fn order(root: &CpuTensor, interrupt: &Interrupt) -> Result<Vec<CpuTensor>, EngineError> {
    let mut post = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![(root.clone(), false)];
    let mut pace = Pace::new(interrupt)?;
    while let Some((t, expanded)) = stack.pop() {
        // A node costs a few hundred nanoseconds: count it as that much work.
        pace.step(256)?;
        if expanded {
            post.push(t);
            continue;
        }
        if !seen.insert(t.0.id) {
            continue;
        }
        let inputs: Vec<CpuTensor> =
            t.0.op
                .as_ref()
                .map(|op| {
                    op.inputs()
                        .into_iter()
                        .filter(|i| i.0.tracked)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
        stack.push((t, true));
        stack.extend(inputs.into_iter().map(|i| (i, false)));
    }
    post.reverse();
    Ok(post)
}

fn accumulate(
    grads: &mut HashMap<u64, Vec<f32>>,
    t: &CpuTensor,
    g: Vec<f32>,
    interrupt: &Interrupt,
) -> Result<(), EngineError> {
    if !t.0.tracked {
        return Ok(());
    }
    match grads.get_mut(&t.0.id) {
        Some(sum) => elementwise::add_into(sum, &g, interrupt)?,
        None => {
            grads.insert(t.0.id, g);
        }
    }
    Ok(())
}

/// Back-propagates from the one-element `loss`, stopping between and inside the steps once
/// `interrupt` fires.
pub(crate) fn backward(
    loss: &CpuTensor,
    interrupt: &Interrupt,
) -> Result<CpuGradients, EngineError> {
    let mut grads: HashMap<u64, Vec<f32>> = HashMap::new();
    grads.insert(loss.0.id, vec![1.0]);
    let mut result = CpuGradients::default();
    for t in order(loss, interrupt)? {
        interrupt.check()?;
        let Some(g) = grads.remove(&t.0.id) else {
            continue;
        };
        let Some(op) = &t.0.op else {
            result.by_parameter.insert(t.0.id, Arc::new(g));
            continue;
        };
        for (input, grad) in input_grads(op, &t, &g, interrupt)? {
            accumulate(&mut grads, input, grad, interrupt)?;
        }
    }
    Ok(result)
}

/// The gradient of each (tracked) input of `op`, given the gradient `g` of its output `y`.
fn input_grads<'a>(
    op: &'a Op,
    y: &CpuTensor,
    g: &[f32],
    interrupt: &Interrupt,
) -> Result<InputGrads<'a>, EngineError> {
    let internal = |op: &'static str| EngineError::Internal { op };
    let i = interrupt;
    Ok(match op {
        Op::Conv { x, w, b, geometry } => {
            let want = (
                x.0.tracked,
                w.0.tracked,
                b.as_ref().is_some_and(|b| b.0.tracked),
            );
            let back = conv::backward(geometry, &x.0.data, &w.0.data, g, want, i)?;
            let mut v = Vec::new();
            v.extend(back.dx.map(|d| (x, d)));
            v.extend(back.dw.map(|d| (w, d)));
            if let (Some(b), Some(d)) = (b, back.db) {
                v.push((b, d));
            }
            v
        }
        Op::MaxPool { x, argmax } => {
            let mut dx = vec![0.0f32; x.0.data.len()];
            let mut pace = Pace::new(i)?;
            for (&at, &v) in argmax.iter().zip(g) {
                pace.step(1)?;
                let slot = dx
                    .get_mut(at as usize)
                    .ok_or(internal("max_pool2d backward"))?;
                *slot += v;
            }
            vec![(x, dx)]
        }
        Op::AvgPool { x, options, out } => {
            let dims = dims4(x).ok_or(internal("pool2d backward"))?;
            vec![(x, pool::avg_pool2d_backward(g, dims, *out, options, i)?)]
        }
        Op::AdaptiveAvgPool { x, out } => {
            let dims = dims4(x).ok_or(internal("adaptive_avg_pool2d backward"))?;
            vec![(x, pool::adaptive_avg_pool2d_backward(g, dims, *out, i)?)]
        }
        Op::Linear { x, w, b } => {
            let (n, inputs) = (x.0.dims[0], x.0.dims[1]);
            let o = w.0.dims[1];
            let threads = rayon::current_num_threads();
            let mut v = Vec::new();
            if x.0.tracked {
                let mut dx = vec![0.0f32; n * inputs];
                matmul(
                    &mut dx,
                    inputs,
                    View::rows(g, n, o),
                    View::transposed(&w.0.data, inputs, o),
                    false,
                    threads,
                    i,
                )?;
                v.push((x, dx));
            }
            if w.0.tracked {
                let mut dw = vec![0.0f32; inputs * o];
                matmul(
                    &mut dw,
                    o,
                    View::transposed(&x.0.data, n, inputs),
                    View::rows(g, n, o),
                    false,
                    threads,
                    i,
                )?;
                v.push((w, dw));
            }
            if let Some(b) = b.as_ref().filter(|b| b.0.tracked) {
                let mut db = vec![0.0f32; o];
                let mut pace = Pace::new(i)?;
                for row in g.chunks(o) {
                    pace.step(o)?;
                    db.iter_mut().zip(row).for_each(|(d, v)| *d += v);
                }
                v.push((b, db));
            }
            v
        }
        Op::Unary { op, x } => {
            let out = &y.0.data;
            let dx = match op {
                Unary::Relu => elementwise::zip(out, g, i, |y, g| if y > 0.0 { g } else { 0.0 })?,
                Unary::Tanh => elementwise::zip(out, g, i, |y, g| g * (1.0 - y * y))?,
                Unary::Sigmoid => elementwise::zip(out, g, i, |y, g| g * y * (1.0 - y))?,
                Unary::Sqrt => elementwise::zip(out, g, i, |y, g| g * 0.5 / y)?,
                Unary::Exp => elementwise::zip(out, g, i, |y, g| g * y)?,
                Unary::Log => elementwise::zip(x.data(), g, i, |x, g| g / x)?,
                Unary::Abs => elementwise::zip(x.data(), g, i, |x, g| {
                    if x > 0.0 {
                        g
                    } else if x < 0.0 {
                        -g
                    } else {
                        0.0
                    }
                })?,
                Unary::LeakyRelu => elementwise::zip(x.data(), g, i, |x, g| {
                    if x > 0.0 {
                        g
                    } else {
                        crate::LEAKY_RELU_SLOPE * g
                    }
                })?,
                Unary::Gelu => elementwise::zip(x.data(), g, i, |x, g| {
                    g * (super::normal_cdf(x) + x * super::normal_pdf(x))
                })?,
                Unary::Silu => elementwise::zip(x.data(), g, i, |x, g| {
                    let s = super::sigmoid(x);
                    g * s * (1.0 + x * (1.0 - s))
                })?,
                Unary::Softmax => {
                    let last = y.0.dims.last().copied().unwrap_or(1);
                    let mut dx = vec![0.0f32; g.len()];
                    let mut pace = Pace::new(i)?;
                    for ((d, yr), gr) in dx
                        .chunks_mut(last)
                        .zip(out.chunks(last))
                        .zip(g.chunks(last))
                    {
                        pace.step(4 * last)?;
                        let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
                        for ((d, &yv), &gv) in d.iter_mut().zip(yr).zip(gr) {
                            *d = yv * (gv - dot);
                        }
                    }
                    dx
                }
            };
            vec![(x, dx)]
        }
        Op::Binary { op, a, b } => binary_grads(*op, a, b, y, g, i)?,
        Op::Clamp { x, min, max } => {
            let (lo, hi) = (*min, *max);
            let dx = elementwise::zip(
                x.data(),
                g,
                i,
                |x, g| {
                    if x >= lo && x <= hi { g } else { 0.0 }
                },
            )?;
            vec![(x, dx)]
        }
        Op::Affine { x, scale } => {
            let s = *scale;
            vec![(x, elementwise::map(g, i, |g| g * s)?)]
        }
        Op::Reshape { x } => vec![(x, elementwise::copy(g, i)?)],
        Op::CrossEntropy {
            logits,
            probabilities,
            labels,
            smoothing,
        } => {
            let classes = logits.0.dims.get(1).copied().unwrap_or(1);
            let scale = g.first().copied().unwrap_or(0.0) / labels.len().max(1) as f32;
            // (p − q) · scale, with q = (1 − s)·[label] + s / C.
            let spread = scale * smoothing / classes as f32;
            let mut d = elementwise::map(probabilities, i, |p| p * scale - spread)?;
            let on_label = scale * (1.0 - smoothing);
            let mut pace = Pace::new(i)?;
            for (row, &label) in labels.iter().enumerate() {
                pace.step(1)?;
                *d.get_mut(row * classes + label)
                    .ok_or(internal("cross_entropy backward"))? -= on_label;
            }
            vec![(logits, d)]
        }
        Op::BceWithLogits { logits, targets } => {
            let n = logits.0.data.len().max(1) as f32;
            let scale = g.first().copied().unwrap_or(0.0) / n;
            let mut v = Vec::new();
            if logits.0.tracked {
                let d = elementwise::zip(logits.data(), targets.data(), i, |x, t| {
                    scale * (super::sigmoid(x) - t)
                })?;
                v.push((logits, d));
            }
            if targets.0.tracked {
                v.push((targets, elementwise::map(logits.data(), i, |x| -scale * x)?));
            }
            v
        }
        Op::Mean { x } => {
            let v = g.first().copied().unwrap_or(0.0) / x.0.data.len() as f32;
            vec![(x, elementwise::filled(x.0.data.len(), v, i)?)]
        }
        Op::Reduce { op, x, plan, saved } => {
            vec![(x, reduce::backward(*op, plan, x.data(), saved, g, i)?)]
        }
        Op::Permute { x, perm } => {
            vec![(x, layout::permute(g, y.dims(), &layout::inverse(perm), i)?)]
        }
        Op::Concat { xs, axis } => {
            let dims: Vec<&[usize]> = xs.iter().map(|x| x.dims()).collect();
            let parts = layout::split(g, &dims, *axis, i)?;
            xs.iter().zip(parts).collect()
        }
        Op::Narrow {
            x,
            axis,
            start,
            len,
        } => vec![(x, layout::unnarrow(g, x.dims(), *axis, *start, *len, i)?)],
        Op::IndexSelect { x, axis, indices } => {
            vec![(x, layout::index_add(g, x.dims(), *axis, indices, i)?)]
        }
        Op::Matmul { a, b, geometry } => {
            let (av, bv) = ((a.data(), a.dims()), (b.data(), b.dims()));
            let mut v = Vec::new();
            if a.0.tracked {
                v.push((a, batched::grad_a(geometry, av, bv, g, i)?));
            }
            if b.0.tracked {
                v.push((b, batched::grad_b(geometry, av, bv, g, i)?));
            }
            v
        }
        Op::Normalize { x, plan, inv_std } => {
            vec![(x, norm::backward(plan, y.data(), inv_std, g, i)?)]
        }
        Op::Dropout { x, mask } => vec![(x, elementwise::zip(g, mask, i, |g, m| g * m)?)],
    })
}

/// A gradient rule: an operand's gradient from `(g, a, b, y)` at one output position.
type Rule = fn(f32, f32, f32, f32) -> f32;

/// The gradient of each input that needs one.
type InputGrads<'a> = Vec<(&'a CpuTensor, Vec<f32>)>;

/// The gradients of a broadcasting binary operation's operands, each summed back to its
/// operand's shape.
fn binary_grads<'a>(
    op: Binary,
    a: &'a CpuTensor,
    b: &'a CpuTensor,
    y: &CpuTensor,
    g: &[f32],
    i: &Interrupt,
) -> Result<InputGrads<'a>, EngineError> {
    let out = y.dims();
    let own = layout::strides(out);
    let (sa, sb) = (
        layout::broadcast_strides(a.dims(), out),
        layout::broadcast_strides(b.dims(), out),
    );
    let (av, bv, yv) = (a.data(), b.data(), y.data());
    // The full-size gradient of `a` (then `b`) given by `f(g, a, b, y)`.
    let full = |f: Rule| {
        layout::map(
            out,
            [(g, own), (av, sa), (bv, sb), (yv, own)],
            i,
            move |[g, a, b, y]| f(g, a, b, y),
        )
    };
    let (fa, fb): (Rule, Rule) = match op {
        Binary::Add => (|g, _, _, _| g, |g, _, _, _| g),
        Binary::Sub => (|g, _, _, _| g, |g, _, _, _| -g),
        Binary::Mul => (|g, _, b, _| g * b, |g, a, _, _| g * a),
        Binary::Div => (|g, _, b, _| g / b, |g, _, b, y| -g * y / b),
        // PyTorch's conventions: no gradient through a zero exponent, and none to the
        // exponent where the base is 0 and the exponent not negative.
        Binary::Pow => (
            |g, a, b, _| {
                if b == 0.0 {
                    0.0
                } else {
                    g * b * a.powf(b - 1.0)
                }
            },
            |g, a, b, y| {
                if a == 0.0 && b >= 0.0 {
                    0.0
                } else {
                    g * y * a.ln()
                }
            },
        ),
        Binary::Maximum => (
            |g, a, b, _| if super::picks_first_max(a, b) { g } else { 0.0 },
            |g, a, b, _| if super::picks_first_max(a, b) { 0.0 } else { g },
        ),
        Binary::Minimum => (
            |g, a, b, _| if super::picks_first_min(a, b) { g } else { 0.0 },
            |g, a, b, _| if super::picks_first_min(a, b) { 0.0 } else { g },
        ),
    };
    if let Some(v) = blocked_grads(a, b, out, g, yv, (fa, fb), i)? {
        return Ok(v);
    }
    // Sums and differences pass `g` through as it is (negated for `b` of a difference).
    let full = |f: Rule, first: bool| match (op, first) {
        (Binary::Add, _) | (Binary::Sub, true) => elementwise::copy(g, i),
        (Binary::Sub, false) => elementwise::map(g, i, |g| -g),
        _ => full(f),
    };
    let mut v = Vec::new();
    if a.0.tracked {
        v.push((a, to_shape(full(fa, true)?, out, a.dims(), i)?));
    }
    if b.0.tracked {
        v.push((b, to_shape(full(fb, false)?, out, b.dims(), i)?));
    }
    Ok(v)
}

/// The gradients of a binary operation whose one operand is full-size and whose other holds
/// one value per kept index of a blocked layout (a per-channel scale or shift): the first by
/// a blocked map, the second by blocked sums, without strided walks or a full-size
/// intermediate. `None` for other layouts.
fn blocked_grads<'a>(
    a: &'a CpuTensor,
    b: &'a CpuTensor,
    out: &[usize],
    g: &[f32],
    y: &[f32],
    (fa, fb): (Rule, Rule),
    i: &Interrupt,
) -> Result<Option<InputGrads<'a>>, EngineError> {
    if a.dims() == b.dims() {
        return Ok(None);
    }
    let (full_is_a, layout) = if a.dims() == out {
        (true, super::blocked(out, b.dims()))
    } else if b.dims() == out {
        (false, super::blocked(out, a.dims()))
    } else {
        return Ok(None);
    };
    let Some(bl) = layout else {
        return Ok(None);
    };
    let (full, kept) = if full_is_a { (a, b) } else { (b, a) };
    // `rule(g, a, b, y)` from the full value `f` and the kept value `k`.
    let apply = move |rule: Rule, g: f32, f: f32, k: f32, y: f32| {
        if full_is_a {
            rule(g, f, k, y)
        } else {
            rule(g, k, f, y)
        }
    };
    let grad_full = |rule: Rule| {
        blocks::map(
            bl,
            [g, full.data(), y],
            [kept.data()],
            i,
            move |[g, f, y], [k]| apply(rule, g, f, k, y),
        )
    };
    let grad_kept = |rule: Rule| -> Result<Vec<f32>, EngineError> {
        let sums = blocks::sums(
            bl,
            [g, full.data(), y],
            [kept.data()],
            i,
            move |[g, f, y], [k]| f64::from(apply(rule, g, f, k, y)),
        )?;
        Ok(sums.into_iter().map(|s| s as f32).collect())
    };
    let (full_rule, kept_rule) = if full_is_a { (fa, fb) } else { (fb, fa) };
    let mut v = Vec::new();
    if a.0.tracked {
        v.push((
            a,
            if full_is_a {
                grad_full(full_rule)?
            } else {
                grad_kept(kept_rule)?
            },
        ));
    }
    if b.0.tracked {
        v.push((
            b,
            if full_is_a {
                grad_kept(kept_rule)?
            } else {
                grad_full(full_rule)?
            },
        ));
    }
    Ok(Some(v))
}

/// A full-size gradient summed down to an operand's shape (moved through if it is that).
fn to_shape(
    full: Vec<f32>,
    out: &[usize],
    dims: &[usize],
    i: &Interrupt,
) -> Result<Vec<f32>, EngineError> {
    if out == dims {
        Ok(full)
    } else {
        reduce::sum_to(&full, out, dims, i)
    }
}

/// The dimensions of a rank-4 tensor.
fn dims4(t: &CpuTensor) -> Option<[usize; 4]> {
    t.dims().try_into().ok()
}

/// Releases a graph without recursion: inputs this node held last are taken apart here.
pub(crate) fn release(op: Op) {
    let mut stack = op.into_inputs();
    while let Some(t) = stack.pop() {
        if let Ok(mut node) = Arc::try_unwrap(t.0)
            && let Some(op) = node.op.take()
        {
            stack.extend(op.into_inputs());
        }
    }
}
