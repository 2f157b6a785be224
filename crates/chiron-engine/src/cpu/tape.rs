//! Reverse-mode differentiation: each tensor computed from a parameter remembers the
//! operation that made it, and [`backward`] walks those records from the loss back to the
//! parameters.
//!
//! Both the walk and the release of a graph are iterative, so a program that chains a
//! million operations cannot overflow the runtime's stack.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::{CpuTensor, conv, elementwise, gemm::View, gemm::matmul};
use crate::check::Conv2d;
use crate::interrupt::Pace;
use crate::{Binary, EngineError, Interrupt, Unary};

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
    Linear {
        x: CpuTensor,
        w: CpuTensor,
        b: Option<CpuTensor>,
    },
    Unary {
        op: Unary,
        x: CpuTensor,
    },
    Binary {
        op: Binary,
        a: CpuTensor,
        b: CpuTensor,
    },
    Affine {
        x: CpuTensor,
        scale: f32,
    },
    Reshape {
        x: CpuTensor,
    },
    CrossEntropy {
        logits: CpuTensor,
        probabilities: Vec<f32>,
        labels: Vec<usize>,
    },
    Mean {
        x: CpuTensor,
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
            Op::Binary { a, b, .. } => vec![a, b],
            Op::MaxPool { x, .. }
            | Op::Unary { x, .. }
            | Op::Affine { x, .. }
            | Op::Reshape { x }
            | Op::Mean { x } => vec![x],
            Op::CrossEntropy { logits, .. } => vec![logits],
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
) -> Result<Vec<(&'a CpuTensor, Vec<f32>)>, EngineError> {
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
        Op::Binary { op, a, b } => {
            let (av, bv) = (&a.0.data, &b.0.data);
            let mut v = Vec::new();
            match op {
                Binary::Add => {
                    v.push((a, elementwise::copy(g, i)?));
                    v.push((b, elementwise::copy(g, i)?));
                }
                Binary::Sub => {
                    v.push((a, elementwise::copy(g, i)?));
                    v.push((b, elementwise::map(g, i, |g| -g)?));
                }
                Binary::Mul => {
                    if a.0.tracked {
                        v.push((a, elementwise::zip(g, bv, i, |g, b| g * b)?));
                    }
                    if b.0.tracked {
                        v.push((b, elementwise::zip(g, av, i, |g, a| g * a)?));
                    }
                }
                Binary::Div => {
                    if a.0.tracked {
                        v.push((a, elementwise::zip(g, bv, i, |g, b| g / b)?));
                    }
                    if b.0.tracked {
                        let quotient = &y.0.data;
                        let gq = elementwise::zip(g, quotient, i, |g, q| g * q)?;
                        v.push((b, elementwise::zip(&gq, bv, i, |gq, b| -gq / b)?));
                    }
                }
            }
            v
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
        } => {
            let classes = logits.0.dims[1];
            let scale = g.first().copied().unwrap_or(0.0) / labels.len() as f32;
            let mut d = elementwise::map(probabilities, i, |p| p * scale)?;
            for (row, &label) in labels.iter().enumerate() {
                d[row * classes + label] -= scale;
            }
            vec![(logits, d)]
        }
        Op::Mean { x } => {
            let v = g.first().copied().unwrap_or(0.0) / x.0.data.len() as f32;
            vec![(x, elementwise::filled(x.0.data.len(), v, i)?)]
        }
    })
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
