//! [`Backend`] on the engine's own CPU kernels: im2col convolutions and dense products on
//! the `gemm` crate's micro-kernels, threads from `rayon`, and a small tape for gradients.
//!
//! Results do not depend on how work lands on threads: every reduction splits its work into
//! a fixed number of parts and adds them in order, so a seeded run gives the same model in
//! and out of the sandbox.

mod batched;
mod blocks;
mod conv;
mod elementwise;
mod gemm;
mod layout;
mod norm;
mod pool;
mod reduce;
mod tape;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use tape::CpuGradients;
use tape::Op;

use crate::interrupt::Pace;

use crate::{
    Backend, Binary, Conv2dOptions, EngineError, Interrupt, Normalized, Pool, Pool2dOptions,
    Reduce, Shape, Unary, check,
};

/// The engine's own CPU implementation of [`Backend`].
///
/// Its kernels stop part-way, with [`EngineError::Interrupted`], once its [`Interrupt`]
/// fires: they look at it every [`QUANTUM`](crate::QUANTUM) of work or so.
#[derive(Clone, Debug, Default)]
pub struct CpuBackend {
    interrupt: Interrupt,
}

impl CpuBackend {
    /// An engine on the CPU, using `rayon`'s global thread pool.
    pub fn new() -> Self {
        Self::default()
    }
}

/// A tensor: shared, immutable values and, if computed from a parameter, how.
#[derive(Clone)]
pub struct CpuTensor(Arc<Node>);

struct Node {
    /// Identity for the gradient walk; unique within the process.
    id: u64,
    dims: Vec<usize>,
    /// Shared with reshaped and detached views of the same values.
    data: Arc<Vec<f32>>,
    /// Whether gradients flow to this tensor (a parameter, or computed from one).
    tracked: bool,
    /// How it was computed; `None` for parameters and constants.
    op: Option<Op>,
}

impl std::fmt::Debug for CpuTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuTensor")
            .field("dims", &self.0.dims)
            .field("tracked", &self.0.tracked)
            .finish_non_exhaustive()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(op) = self.op.take() {
            tape::release(op);
        }
    }
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl CpuTensor {
    fn leaf(dims: Vec<usize>, data: Arc<Vec<f32>>, tracked: bool) -> Self {
        Self(Arc::new(Node {
            id: next_id(),
            dims,
            data,
            tracked,
            op: None,
        }))
    }

    /// A computed tensor; it records `op` only if an input is tracked.
    fn computed(dims: Vec<usize>, data: Vec<f32>, op: Op) -> Self {
        Self::computed_sharing(dims, Arc::new(data), op)
    }

    /// A computed tensor holding values it shares with another (a reshape).
    fn computed_sharing(dims: Vec<usize>, data: Arc<Vec<f32>>, op: Op) -> Self {
        let tracked = op.inputs().iter().any(|input| input.0.tracked);
        Self(Arc::new(Node {
            id: next_id(),
            dims,
            data,
            tracked,
            op: tracked.then_some(op),
        }))
    }

    fn dims(&self) -> &[usize] {
        &self.0.dims
    }

    fn data(&self) -> &[f32] {
        &self.0.data
    }
}

/// Runs kernel code, turning an unexpected panic into an error. Arguments are checked before
/// every kernel, so this is a second line of defence, not the first.
fn contained<T>(
    op: &'static str,
    f: impl FnOnce() -> Result<T, EngineError>,
) -> Result<T, EngineError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(Err(EngineError::Internal { op }))
}

/// `ln Σ exp(v)` over one row, computed from its maximum so it cannot overflow.
fn log_sum_exp(row: &[f32], pace: &mut Pace<'_>) -> Result<f32, EngineError> {
    let max = row_max(row, pace)?;
    let mut sum = 0.0f32;
    for chunk in row.chunks(ROW_CHUNK) {
        pace.step(4 * chunk.len())?;
        sum += chunk.iter().map(|&v| (v - max).exp()).sum::<f32>();
    }
    Ok(max + sum.ln())
}

/// Values of a row handled between two looks at the interrupt.
const ROW_CHUNK: usize = 1 << 16;

/// The largest value of a row (NaN skipped, as `f32::max` does).
fn row_max(row: &[f32], pace: &mut Pace<'_>) -> Result<f32, EngineError> {
    let mut max = f32::NEG_INFINITY;
    for chunk in row.chunks(ROW_CHUNK) {
        pace.step(chunk.len())?;
        max = chunk.iter().copied().fold(max, f32::max);
    }
    Ok(max)
}

fn softmax_rows(x: &[f32], last: usize, interrupt: &Interrupt) -> Result<Vec<f32>, EngineError> {
    let mut out = vec![0.0f32; x.len()];
    let mut pace = Pace::new(interrupt)?;
    for (o, row) in out.chunks_mut(last).zip(x.chunks(last)) {
        let max = row_max(row, &mut pace)?;
        let mut sum = 0.0f32;
        for (o, row) in o.chunks_mut(ROW_CHUNK).zip(row.chunks(ROW_CHUNK)) {
            pace.step(4 * row.len())?;
            for (o, &v) in o.iter_mut().zip(row) {
                *o = (v - max).exp();
                sum += *o;
            }
        }
        for o in o.chunks_mut(ROW_CHUNK) {
            pace.step(o.len())?;
            o.iter_mut().for_each(|o| *o /= sum);
        }
    }
    Ok(out)
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;
    type Gradients = CpuGradients;

    fn constant(&self, shape: &[usize], data: Vec<f32>) -> Result<CpuTensor, EngineError> {
        let shape = check::values(shape, data.len())?;
        Ok(CpuTensor::leaf(shape.0, Arc::new(data), false))
    }

    fn shared_constant(
        &self,
        shape: &[usize],
        data: &Arc<Vec<f32>>,
    ) -> Result<CpuTensor, EngineError> {
        let shape = check::values(shape, data.len())?;
        Ok(CpuTensor::leaf(shape.0, Arc::clone(data), false))
    }

    fn parameter(&self, shape: &[usize], data: Vec<f32>) -> Result<CpuTensor, EngineError> {
        let t = self.constant(shape, data)?;
        Ok(self.as_parameter(t))
    }

    fn shape(&self, t: &CpuTensor) -> Shape {
        Shape(t.0.dims.clone())
    }

    fn read(&self, t: &CpuTensor) -> Result<Vec<f32>, EngineError> {
        elementwise::copy(t.data(), &self.interrupt)
    }

    fn detach(&self, t: &CpuTensor) -> CpuTensor {
        CpuTensor::leaf(t.0.dims.clone(), t.0.data.clone(), false)
    }

    fn conv2d(
        &self,
        x: &CpuTensor,
        w: &CpuTensor,
        b: Option<&CpuTensor>,
        options: &Conv2dOptions,
    ) -> Result<CpuTensor, EngineError> {
        const OP: &str = "conv2d";
        let g = check::conv2d(x.dims(), w.dims(), b.map(|b| b.dims()), options)?;
        let y = contained(OP, || {
            conv::forward(&g, x.data(), w.data(), b.map(|b| b.data()), &self.interrupt)
        })?;
        Ok(CpuTensor::computed(
            vec![g.batch, g.outputs, g.out_h(), g.out_w()],
            y,
            Op::Conv {
                x: x.clone(),
                w: w.clone(),
                b: b.cloned(),
                geometry: g,
            },
        ))
    }

    fn pool2d(
        &self,
        kind: Pool,
        x: &CpuTensor,
        options: &Pool2dOptions,
    ) -> Result<CpuTensor, EngineError> {
        const OP: &str = "pool2d";
        let out = check::pool2d(x.dims(), options)?;
        let dims = dims4(x)?;
        let i = &self.interrupt;
        match kind {
            Pool::Max => {
                let (values, argmax) =
                    contained(OP, || pool::max_pool2d(x.data(), dims, out, options, i))?;
                Ok(CpuTensor::computed(
                    out.to_vec(),
                    values,
                    Op::MaxPool {
                        x: x.clone(),
                        argmax,
                    },
                ))
            }
            Pool::Avg => {
                let values = contained(OP, || pool::avg_pool2d(x.data(), dims, out, options, i))?;
                Ok(CpuTensor::computed(
                    out.to_vec(),
                    values,
                    Op::AvgPool {
                        x: x.clone(),
                        options: *options,
                        out,
                    },
                ))
            }
        }
    }

    fn max_pool2d(
        &self,
        x: &CpuTensor,
        kernel: usize,
        stride: usize,
    ) -> Result<CpuTensor, EngineError> {
        check::max_pool2d(x.dims(), kernel, stride)?;
        self.pool2d(Pool::Max, x, &Pool2dOptions::square(kernel, stride))
    }

    fn adaptive_avg_pool2d(
        &self,
        x: &CpuTensor,
        out: [usize; 2],
    ) -> Result<CpuTensor, EngineError> {
        let out = check::adaptive_avg_pool2d(x.dims(), out)?;
        let dims = dims4(x)?;
        let values = contained("adaptive_avg_pool2d", || {
            pool::adaptive_avg_pool2d(x.data(), dims, out, &self.interrupt)
        })?;
        Ok(CpuTensor::computed(
            out.to_vec(),
            values,
            Op::AdaptiveAvgPool { x: x.clone(), out },
        ))
    }

    fn linear(
        &self,
        x: &CpuTensor,
        w: &CpuTensor,
        b: Option<&CpuTensor>,
    ) -> Result<CpuTensor, EngineError> {
        const OP: &str = "linear";
        let [n, i, o] = check::linear(x.dims(), w.dims(), b.map(|b| b.dims()))?;
        let y = contained(OP, || {
            let mut y = vec![0.0f32; n * o];
            if let Some(b) = b {
                y.chunks_mut(o)
                    .for_each(|row| row.copy_from_slice(b.data()));
            }
            gemm::matmul(
                &mut y,
                o,
                gemm::View::rows(x.data(), n, i),
                gemm::View::rows(w.data(), i, o),
                b.is_some(),
                rayon::current_num_threads(),
                &self.interrupt,
            )?;
            Ok(y)
        })?;
        Ok(CpuTensor::computed(
            vec![n, o],
            y,
            Op::Linear {
                x: x.clone(),
                w: w.clone(),
                b: b.cloned(),
            },
        ))
    }

    fn unary(&self, op: Unary, x: &CpuTensor) -> Result<CpuTensor, EngineError> {
        let data = x.data();
        let i = &self.interrupt;
        let y = contained("unary", || match op {
            Unary::Relu => elementwise::map(data, i, |v| v.max(0.0)),
            Unary::Tanh => elementwise::map(data, i, f32::tanh),
            Unary::Sigmoid => elementwise::map(data, i, sigmoid),
            Unary::Sqrt => elementwise::map(data, i, f32::sqrt),
            Unary::Softmax => softmax_rows(data, x.dims().last().copied().unwrap_or(1), i),
            Unary::Exp => elementwise::map(data, i, f32::exp),
            Unary::Log => elementwise::map(data, i, f32::ln),
            Unary::Abs => elementwise::map(data, i, f32::abs),
            Unary::LeakyRelu => elementwise::map(data, i, |v| {
                if v > 0.0 {
                    v
                } else {
                    crate::LEAKY_RELU_SLOPE * v
                }
            }),
            Unary::Gelu => elementwise::map(data, i, |v| v * normal_cdf(v)),
            Unary::Silu => elementwise::map(data, i, |v| v * sigmoid(v)),
        })?;
        Ok(CpuTensor::computed(
            x.dims().to_vec(),
            y,
            Op::Unary { op, x: x.clone() },
        ))
    }

    fn binary(&self, op: Binary, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor, EngineError> {
        let out = check::broadcast_dims(a.dims(), b.dims())?;
        let f = binary_fn(op);
        let i = &self.interrupt;
        let y = contained("binary", || {
            if a.dims() == b.dims() {
                elementwise::zip(a.data(), b.data(), i, f)
            } else if let Some(bl) = blocked(&out, b.dims()).filter(|_| a.dims() == out) {
                blocks::map(bl, [a.data()], [b.data()], i, |[x], [y]| f(x, y))
            } else if let Some(bl) = blocked(&out, a.dims()).filter(|_| b.dims() == out) {
                blocks::map(bl, [b.data()], [a.data()], i, |[y], [x]| f(x, y))
            } else {
                layout::map(
                    &out,
                    [
                        (a.data(), layout::broadcast_strides(a.dims(), &out)),
                        (b.data(), layout::broadcast_strides(b.dims(), &out)),
                    ],
                    i,
                    |[x, y]| f(x, y),
                )
            }
        })?;
        Ok(CpuTensor::computed(
            out,
            y,
            Op::Binary {
                op,
                a: a.clone(),
                b: b.clone(),
            },
        ))
    }

    fn clamp(&self, x: &CpuTensor, min: f32, max: f32) -> Result<CpuTensor, EngineError> {
        check::clamp(min, max)?;
        let y = contained("clamp", || {
            elementwise::map(x.data(), &self.interrupt, |v| {
                if v < min {
                    min
                } else if v > max {
                    max
                } else {
                    v
                }
            })
        })?;
        Ok(CpuTensor::computed(
            x.dims().to_vec(),
            y,
            Op::Clamp {
                x: x.clone(),
                min,
                max,
            },
        ))
    }

    fn affine(&self, x: &CpuTensor, scale: f32, shift: f32) -> Result<CpuTensor, EngineError> {
        check::affine(scale, shift)?;
        let y = elementwise::map(x.data(), &self.interrupt, |v| v * scale + shift)?;
        Ok(CpuTensor::computed(
            x.dims().to_vec(),
            y,
            Op::Affine {
                x: x.clone(),
                scale,
            },
        ))
    }

    fn reshape(&self, x: &CpuTensor, shape: &[usize]) -> Result<CpuTensor, EngineError> {
        let target = check::reshape(x.dims(), shape)?;
        Ok(CpuTensor::computed_sharing(
            target.0,
            Arc::clone(&x.0.data),
            Op::Reshape { x: x.clone() },
        ))
    }

    fn cross_entropy(
        &self,
        logits: &CpuTensor,
        labels: &CpuTensor,
        smoothing: f32,
    ) -> Result<CpuTensor, EngineError> {
        const OP: &str = "cross_entropy";
        let [n, classes] = check::cross_entropy(logits.dims(), labels.dims())?;
        check::smoothing(smoothing)?;
        let labels = check::class_indices(labels.data(), classes)?;
        let s = f64::from(smoothing);
        let (loss, probabilities) = contained(OP, || {
            let mut pace = Pace::new(&self.interrupt)?;
            let mut probabilities = vec![0.0f32; n * classes];
            let mut total = 0.0f64;
            let rows = logits
                .data()
                .chunks(classes)
                .zip(probabilities.chunks_mut(classes));
            for ((row, p), &label) in rows.zip(&labels) {
                let lse = log_sum_exp(row, &mut pace)?;
                for (p, row) in p.chunks_mut(ROW_CHUNK).zip(row.chunks(ROW_CHUNK)) {
                    pace.step(4 * row.len())?;
                    for (p, &v) in p.iter_mut().zip(row) {
                        *p = (v - lse).exp();
                    }
                }
                let at_label = f64::from(row.get(label).copied().unwrap_or(f32::NAN) - lse);
                total += if smoothing == 0.0 {
                    at_label
                } else {
                    // Σ_c q_c (x_c − lse) with q = (1 − s)·[label] + s / C.
                    let mut sum = 0.0f64;
                    for chunk in row.chunks(ROW_CHUNK) {
                        pace.step(chunk.len())?;
                        sum += chunk.iter().map(|&v| f64::from(v - lse)).sum::<f64>();
                    }
                    (1.0 - s) * at_label + s * sum / classes as f64
                };
            }
            Ok(((-total / n as f64) as f32, probabilities))
        })?;
        Ok(CpuTensor::computed(
            vec![1],
            vec![loss],
            Op::CrossEntropy {
                logits: logits.clone(),
                probabilities,
                labels,
                smoothing,
            },
        ))
    }

    fn bce_with_logits(
        &self,
        logits: &CpuTensor,
        targets: &CpuTensor,
    ) -> Result<CpuTensor, EngineError> {
        check::bce_with_logits(logits.dims(), targets.dims())?;
        let loss = contained("bce_with_logits", || {
            let mut pace = Pace::new(&self.interrupt)?;
            let mut total = 0.0f64;
            for (x, t) in logits
                .data()
                .chunks(ROW_CHUNK)
                .zip(targets.data().chunks(ROW_CHUNK))
            {
                pace.step(8 * x.len())?;
                total += x
                    .iter()
                    .zip(t)
                    .map(|(&x, &t)| f64::from(x.max(0.0) - x * t + (-x.abs()).exp().ln_1p()))
                    .sum::<f64>();
            }
            Ok((total / logits.data().len().max(1) as f64) as f32)
        })?;
        Ok(CpuTensor::computed(
            vec![1],
            vec![loss],
            Op::BceWithLogits {
                logits: logits.clone(),
                targets: targets.clone(),
            },
        ))
    }

    fn mean(&self, x: &CpuTensor) -> Result<CpuTensor, EngineError> {
        let sum = elementwise::sum(x.data(), &self.interrupt)?;
        let mean = (sum / x.data().len() as f64) as f32;
        Ok(CpuTensor::computed(
            vec![1],
            vec![mean],
            Op::Mean { x: x.clone() },
        ))
    }

    fn reduce(
        &self,
        op: Reduce,
        x: &CpuTensor,
        axes: &[usize],
        keepdim: bool,
    ) -> Result<CpuTensor, EngineError> {
        let out = check::reduce("reduce", x.dims(), axes, keepdim)?;
        let plan = reduce::Rows::new(x.dims(), axes);
        let (values, saved) = contained("reduce", || {
            reduce::forward(op, &plan, x.data(), &self.interrupt)
        })?;
        Ok(CpuTensor::computed(
            out,
            values,
            Op::Reduce {
                op,
                x: x.clone(),
                plan,
                saved,
            },
        ))
    }

    fn argmax(&self, x: &CpuTensor, axis: usize, keepdim: bool) -> Result<CpuTensor, EngineError> {
        let out = check::reduce("argmax", x.dims(), &[axis], keepdim)?;
        let values = contained("argmax", || {
            reduce::argmax(x.data(), x.dims(), axis, &self.interrupt)
        })?;
        Ok(CpuTensor::leaf(out, Arc::new(values), false))
    }

    fn permute(&self, x: &CpuTensor, perm: &[usize]) -> Result<CpuTensor, EngineError> {
        let out = check::permute(x.dims(), perm)?;
        let y = contained("permute", || {
            layout::permute(x.data(), x.dims(), perm, &self.interrupt)
        })?;
        Ok(CpuTensor::computed(
            out,
            y,
            Op::Permute {
                x: x.clone(),
                perm: perm.to_vec(),
            },
        ))
    }

    fn concat(&self, xs: &[&CpuTensor], axis: usize) -> Result<CpuTensor, EngineError> {
        let dims: Vec<&[usize]> = xs.iter().map(|x| x.dims()).collect();
        let out = check::concat(&dims, axis)?;
        let parts: Vec<(&[f32], &[usize])> = xs.iter().map(|x| (x.data(), x.dims())).collect();
        let y = contained("concat", || layout::concat(&parts, axis, &self.interrupt))?;
        Ok(CpuTensor::computed(
            out,
            y,
            Op::Concat {
                xs: xs.iter().map(|&x| x.clone()).collect(),
                axis,
            },
        ))
    }

    fn narrow(
        &self,
        x: &CpuTensor,
        axis: usize,
        start: usize,
        len: usize,
    ) -> Result<CpuTensor, EngineError> {
        let out = check::narrow(x.dims(), axis, start, len)?;
        let y = contained("narrow", || {
            layout::narrow(x.data(), x.dims(), axis, start, len, &self.interrupt)
        })?;
        Ok(CpuTensor::computed(
            out,
            y,
            Op::Narrow {
                x: x.clone(),
                axis,
                start,
                len,
            },
        ))
    }

    fn index_select(
        &self,
        x: &CpuTensor,
        axis: usize,
        indices: &CpuTensor,
    ) -> Result<CpuTensor, EngineError> {
        const OP: &str = "index_select";
        let out = check::index_select(x.dims(), axis, indices.dims())?;
        let bound = x.dims().get(axis).copied().unwrap_or(0);
        let indices = check::indices(OP, indices.data(), bound)?;
        let y = contained(OP, || {
            layout::index_select(x.data(), x.dims(), axis, &indices, &self.interrupt)
        })?;
        Ok(CpuTensor::computed(
            out,
            y,
            Op::IndexSelect {
                x: x.clone(),
                axis,
                indices,
            },
        ))
    }

    fn matmul(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor, EngineError> {
        let geometry = check::matmul(a.dims(), b.dims())?;
        let y = contained("matmul", || {
            batched::forward(
                &geometry,
                (a.data(), a.dims()),
                (b.data(), b.dims()),
                &self.interrupt,
            )
        })?;
        Ok(CpuTensor::computed(
            geometry.out.clone(),
            y,
            Op::Matmul {
                a: a.clone(),
                b: b.clone(),
                geometry,
            },
        ))
    }

    fn normalize(
        &self,
        x: &CpuTensor,
        axes: &[usize],
        eps: f32,
    ) -> Result<Normalized<CpuTensor>, EngineError> {
        let stats = check::normalize(x.dims(), axes, eps)?;
        let plan = reduce::Rows::new(x.dims(), axes);
        let f = contained("normalize", || {
            norm::forward(&plan, x.data(), eps, &self.interrupt)
        })?;
        let output = CpuTensor::computed(
            x.dims().to_vec(),
            f.output,
            Op::Normalize {
                x: x.clone(),
                plan,
                inv_std: f.inv_std,
            },
        );
        Ok(Normalized {
            output,
            mean: CpuTensor::leaf(stats.clone(), Arc::new(f.mean), false),
            var: CpuTensor::leaf(stats, Arc::new(f.var), false),
        })
    }

    fn dropout(&self, x: &CpuTensor, p: f32, seed: u64) -> Result<CpuTensor, EngineError> {
        check::dropout(p)?;
        if p == 0.0 {
            // Every value kept, scaled by 1: the same values, the identity's gradient.
            return Ok(CpuTensor::computed_sharing(
                x.dims().to_vec(),
                Arc::clone(&x.0.data),
                Op::Reshape { x: x.clone() },
            ));
        }
        let (y, mask) = contained("dropout", || {
            let mask = crate::dropout_mask(x.data().len(), p, seed, &self.interrupt)?;
            let y = elementwise::zip(x.data(), &mask, &self.interrupt, |v, m| v * m)?;
            Ok((y, mask))
        })?;
        Ok(CpuTensor::computed(
            x.dims().to_vec(),
            y,
            Op::Dropout { x: x.clone(), mask },
        ))
    }

    fn backward(&self, loss: &CpuTensor) -> Result<CpuGradients, EngineError> {
        if loss.dims() != [1] || !loss.0.tracked {
            return Err(EngineError::NotDifferentiable);
        }
        contained("backward", || tape::backward(loss, &self.interrupt))
    }

    fn grad(&self, grads: &CpuGradients, param: &CpuTensor) -> Option<CpuTensor> {
        let g = grads.get(param.0.id)?;
        Some(CpuTensor::leaf(param.0.dims.clone(), Arc::clone(g), false))
    }

    fn as_parameter(&self, t: CpuTensor) -> CpuTensor {
        CpuTensor::leaf(t.0.dims.clone(), t.0.data.clone(), true)
    }

    fn with_interrupt(self, interrupt: Interrupt) -> Self {
        Self { interrupt }
    }
}

/// The dimensions of a rank-4 tensor (checked by the caller).
fn dims4(t: &CpuTensor) -> Result<[usize; 4], EngineError> {
    t.dims()
        .try_into()
        .map_err(|_| EngineError::Internal { op: "pool2d" })
}

/// Whether [`Binary::Maximum`] takes `a` (on ties too; a NaN on either side wins).
pub(crate) fn picks_first_max(a: f32, b: f32) -> bool {
    a >= b || a.is_nan()
}

/// Whether [`Binary::Minimum`] takes `a` (on ties too; a NaN on either side wins).
pub(crate) fn picks_first_min(a: f32, b: f32) -> bool {
    a <= b || a.is_nan()
}

/// The element-wise function of a [`Binary`] operation.
/// The blocked layout in which an operand shaped `operand` broadcasts over `out`: one
/// value per kept index, if its axes of more than one entry are contiguous.
pub(crate) fn blocked(out: &[usize], operand: &[usize]) -> Option<blocks::Blocks> {
    let shift = out.len().checked_sub(operand.len())?;
    let aligned: Vec<usize> = (0..out.len())
        .map(|i| i.checked_sub(shift).map_or(1, |j| operand[j]))
        .collect();
    blocks::Blocks::of(out, &aligned).filter(|b| b.kept == aligned.iter().product::<usize>())
}

fn binary_fn(op: Binary) -> fn(f32, f32) -> f32 {
    match op {
        Binary::Add => |x, y| x + y,
        Binary::Sub => |x, y| x - y,
        Binary::Mul => |x, y| x * y,
        Binary::Div => |x, y| x / y,
        Binary::Pow => f32::powf,
        Binary::Maximum => |x, y| if picks_first_max(x, y) { x } else { y },
        Binary::Minimum => |x, y| if picks_first_min(x, y) { x } else { y },
    }
}

/// The logistic function.
pub(crate) fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// The standard normal distribution's CDF, `Φ(x) = (1 + erf(x / √2)) / 2`.
pub(crate) fn normal_cdf(v: f32) -> f32 {
    0.5 * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2))
}

/// The standard normal density, `φ(x)`.
pub(crate) fn normal_pdf(v: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    INV_SQRT_2PI * (-0.5 * v * v).exp()
}

/// The error function, to within 1.5e-7 (Abramowitz and Stegun 7.1.26), computed in `f64`:
/// below `f32`'s resolution of the results it is used in.
fn erf(v: f32) -> f32 {
    let x = f64::from(v);
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let y = 1.0 - poly * (-x * x).exp();
    (if x < 0.0 { -y } else { y }) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    type R = Result<(), EngineError>;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|v| (((v + seed) * 37 % 19) as f32 - 9.0) / 6.0)
            .collect()
    }

    /// `Σ f(params) · w` and its gradient in each parameter, against central differences.
    fn check_gradients(
        engine: &CpuBackend,
        shapes: &[&[usize]],
        inputs: &[Vec<f32>],
        f: impl Fn(&[CpuTensor]) -> Result<CpuTensor, EngineError>,
        tolerance: f64,
    ) -> R {
        let params: Vec<CpuTensor> = shapes
            .iter()
            .zip(inputs)
            .map(|(s, v)| engine.parameter(s, v.clone()))
            .collect::<Result<_, _>>()?;
        let y = f(&params)?;
        let w_shape = engine.shape(&y).0;
        let w = engine.constant(&w_shape, values(layout::elements(&w_shape), 3))?;
        let loss_of = |params: &[CpuTensor]| -> Result<CpuTensor, EngineError> {
            let y = f(params)?;
            let weighted = engine.binary(Binary::Mul, &y, &w)?;
            engine
                .reduce(Reduce::Sum, &weighted, &[0], false)
                .and_then(|s| {
                    let n = layout::elements(s.dims());
                    engine
                        .reshape(&s, &[n])
                        .and_then(|s| engine.reduce(Reduce::Sum, &s, &[0], false))
                })
        };
        let grads = engine.backward(&loss_of(&params)?)?;
        for (p, (shape, input)) in shapes.iter().zip(inputs).enumerate() {
            let analytic = engine
                .grad(&grads, &params[p])
                .map(|g| g.data().to_vec())
                .unwrap_or_else(|| vec![0.0; input.len()]);
            for k in 0..input.len() {
                let h = 1e-2f32;
                let shifted = |delta: f32| -> Result<f64, EngineError> {
                    let mut moved = params.clone();
                    let mut v = input.clone();
                    v[k] += delta;
                    moved[p] = engine.constant(shape, v)?;
                    Ok(f64::from(loss_of(&moved)?.data()[0]))
                };
                let fd = (shifted(h)? - shifted(-h)?) / (2.0 * f64::from(h));
                let a = f64::from(analytic[k]);
                assert!(
                    (fd - a).abs() <= tolerance * fd.abs().max(1.0),
                    "input {p} {shape:?} [{k}]: finite differences {fd}, gradient {a}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn broadcast_binary_gradients_sum_back() -> R {
        let engine = CpuBackend::new();
        for op in [
            Binary::Add,
            Binary::Sub,
            Binary::Mul,
            Binary::Div,
            Binary::Pow,
            Binary::Maximum,
            Binary::Minimum,
        ] {
            for (sa, sb) in [
                (&[2, 3, 4][..], &[3, 1][..]),
                (&[4][..], &[2, 3, 4][..]),
                (&[2, 1, 4][..], &[1, 3, 1][..]),
                (&[2, 3][..], &[2, 3][..]),
            ] {
                let mut a = values(layout::elements(sa), 1);
                let mut b = values(layout::elements(sb), 2);
                if op == Binary::Pow {
                    // A positive base, so that both gradients are defined.
                    a.iter_mut().for_each(|v| *v = v.abs() + 0.5);
                }
                if op == Binary::Div {
                    b.iter_mut().for_each(|v| *v = v.abs() + 0.5);
                }
                if matches!(op, Binary::Maximum | Binary::Minimum) {
                    // Apart by more than the step, so no tie moves under it.
                    b.iter_mut().for_each(|v| *v += 0.0837);
                }
                check_gradients(
                    &engine,
                    &[sa, sb],
                    &[a, b],
                    |p| engine.binary(op, &p[0], &p[1]),
                    2e-2,
                )
                .inspect_err(|_| {
                    eprintln!("{op:?} {sa:?} {sb:?}");
                })?;
            }
        }
        Ok(())
    }

    #[test]
    fn ties_send_the_gradient_to_the_first_operand() -> R {
        let engine = CpuBackend::new();
        let a = engine.parameter(&[3], vec![1.0, 2.0, 3.0])?;
        let b = engine.parameter(&[3], vec![1.0, 5.0, 3.0])?;
        for op in [Binary::Maximum, Binary::Minimum] {
            let y = engine.binary(op, &a, &b)?;
            let loss = engine.reduce(Reduce::Sum, &y, &[0], false)?;
            let grads = engine.backward(&loss)?;
            let ga = engine.grad(&grads, &a).map(|g| g.data().to_vec());
            let gb = engine.grad(&grads, &b).map(|g| g.data().to_vec());
            let (wa, wb) = if op == Binary::Maximum {
                ([1.0, 0.0, 1.0], [0.0, 1.0, 0.0])
            } else {
                ([1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
            };
            assert_eq!(ga.as_deref(), Some(&wa[..]), "{op:?}");
            assert_eq!(gb.as_deref(), Some(&wb[..]), "{op:?}");
        }
        Ok(())
    }

    #[test]
    fn shape_ops_and_reductions_have_their_gradients() -> R {
        let engine = CpuBackend::new();
        let x = values(24, 0);
        let s: &[usize] = &[2, 3, 4];

        check_gradients(
            &engine,
            &[s],
            std::slice::from_ref(&x),
            |p| engine.permute(&p[0], &[2, 0, 1]),
            1e-2,
        )?;
        check_gradients(
            &engine,
            &[s],
            std::slice::from_ref(&x),
            |p| engine.narrow(&p[0], 1, 1, 2),
            1e-2,
        )?;
        check_gradients(
            &engine,
            &[s, &[2, 2, 4]],
            &[x.clone(), values(16, 5)],
            |p| engine.concat(&[&p[0], &p[1], &p[0]], 1),
            1e-2,
        )?;
        let ids = engine.constant(&[4], vec![2.0, 0.0, 2.0, 3.0])?;
        check_gradients(
            &engine,
            &[s],
            std::slice::from_ref(&x),
            |p| engine.index_select(&p[0], 2, &ids),
            1e-2,
        )?;
        // Distinct values, further apart than the finite differences' step: no ties.
        let distinct: Vec<f32> = (0..24).map(|k| ((k * 7) % 24) as f32 * 0.1 - 1.2).collect();
        for op in [
            Reduce::Sum,
            Reduce::Mean,
            Reduce::Max,
            Reduce::Min,
            Reduce::Var,
        ] {
            for (axes, keep) in [
                (&[1][..], false),
                (&[0, 2][..], true),
                (&[0, 1, 2][..], false),
            ] {
                check_gradients(
                    &engine,
                    &[s],
                    std::slice::from_ref(&distinct),
                    |p| engine.reduce(op, &p[0], axes, keep),
                    2e-2,
                )?;
            }
        }
        check_gradients(
            &engine,
            &[s],
            std::slice::from_ref(&x),
            |p| engine.clamp(&p[0], -0.7, 0.9),
            1e-2,
        )?;
        check_gradients(
            &engine,
            &[&[2, 1, 3, 4], &[3, 4, 2]],
            &[x.clone(), values(24, 7)],
            |p| engine.matmul(&p[0], &p[1]),
            2e-2,
        )?;
        check_gradients(
            &engine,
            &[&[3, 2, 2, 3]],
            &[values(36, 4)],
            |p| Ok(engine.normalize(&p[0], &[0, 2, 3], 1e-3)?.output),
            3e-2,
        )?;
        check_gradients(
            &engine,
            &[&[1, 2, 5, 4]],
            &[values(40, 2)],
            |p| {
                engine.pool2d(
                    Pool::Avg,
                    &p[0],
                    &Pool2dOptions {
                        kernel: [3, 2],
                        stride: [2, 1],
                        padding: [1, 1],
                    },
                )
            },
            1e-2,
        )?;
        check_gradients(
            &engine,
            &[&[1, 2, 5, 4]],
            &[values(40, 2)],
            |p| engine.adaptive_avg_pool2d(&p[0], [3, 3]),
            1e-2,
        )?;
        Ok(())
    }

    #[test]
    fn losses_follow_pytorch() -> R {
        let engine = CpuBackend::new();
        let logits = values(12, 1);
        let labels = engine.constant(&[3], vec![2.0, 0.0, 3.0])?;
        let s = 0.2f32;
        let ce = engine.cross_entropy(&engine.constant(&[3, 4], logits.clone())?, &labels, s)?;
        // By the definition: −Σ_c q_c log p_c, averaged over rows.
        let mut want = 0.0f64;
        for (r, row) in logits.chunks(4).enumerate() {
            let lse = row.iter().map(|&v| f64::from(v).exp()).sum::<f64>().ln();
            let label = [2, 0, 3][r];
            for (c, &v) in row.iter().enumerate() {
                let q = f64::from(s) / 4.0 + if c == label { 1.0 - f64::from(s) } else { 0.0 };
                want -= q * (f64::from(v) - lse);
            }
        }
        want /= 3.0;
        assert!(
            (f64::from(ce.data()[0]) - want).abs() < 1e-5,
            "{} vs {want}",
            ce.data()[0]
        );
        check_gradients(
            &engine,
            &[&[3, 4]],
            std::slice::from_ref(&logits),
            |p| engine.cross_entropy(&p[0], &labels, s),
            1e-2,
        )?;
        // Out of range smoothing is refused.
        assert!(engine.cross_entropy(&ce, &labels, 1.5).is_err());

        let x = vec![-30.0, -1.0, 0.0, 2.0, 40.0, 0.5];
        let t = vec![0.0, 1.0, 0.5, 1.0, 0.0, 0.25];
        let bce = engine.bce_with_logits(
            &engine.constant(&[2, 3], x.clone())?,
            &engine.constant(&[2, 3], t.clone())?,
        )?;
        let want: f64 = x
            .iter()
            .zip(&t)
            .map(|(&x, &t)| {
                let (x, t) = (f64::from(x), f64::from(t));
                // ln σ(x) = −softplus(−x), ln(1 − σ(x)) = −softplus(x).
                let softplus = |z: f64| z.max(0.0) + (-z.abs()).exp().ln_1p();
                t * softplus(-x) + (1.0 - t) * softplus(x)
            })
            .sum::<f64>()
            / 6.0;
        assert!(
            (f64::from(bce.data()[0]) - want).abs() < 1e-4,
            "{} vs {want}",
            bce.data()[0]
        );
        check_gradients(
            &engine,
            &[&[2, 3], &[2, 3]],
            &[values(6, 0), t],
            |p| engine.bce_with_logits(&p[0], &p[1]),
            1e-2,
        )?;
        Ok(())
    }

    #[test]
    fn dropout_uses_the_shared_mask() -> R {
        let engine = CpuBackend::new();
        let n = 40_000;
        for (p, seed) in [(0.3f32, 7u64), (0.9, 1), (0.5, u64::MAX)] {
            let x = engine.parameter(&[n], values(n, 0))?;
            let y = engine.dropout(&x, p, seed)?;
            let mask = crate::dropout_mask(n, p, seed, &Interrupt::new())?;
            let want: Vec<f32> = x.data().iter().zip(&mask).map(|(x, m)| x * m).collect();
            assert_eq!(y.data(), &want[..]);
            let loss = engine.reduce(Reduce::Sum, &y, &[0], false)?;
            let grads = engine.backward(&loss)?;
            assert_eq!(
                engine.grad(&grads, &x).map(|g| g.data().to_vec()),
                Some(mask)
            );
        }
        let x = engine.constant(&[3], vec![1.0, 2.0, 3.0])?;
        assert_eq!(engine.dropout(&x, 0.0, 3)?.data(), x.data());
        assert!(engine.dropout(&x, 1.0, 3).is_err());
        Ok(())
    }

    #[test]
    fn normalize_returns_statistics_and_argmax_picks_first() -> R {
        let engine = CpuBackend::new();
        let x = engine.constant(&[2, 3], vec![1.0, 4.0, 4.0, -1.0, -3.0, -1.0])?;
        let n = engine.normalize(&x, &[1], 1e-5)?;
        assert_eq!(n.mean.dims(), [2, 1]);
        assert_eq!(n.mean.data(), [3.0, -5.0 / 3.0]);
        assert!((n.var.data()[0] - 2.0).abs() < 1e-6);
        let a = engine.argmax(&x, 1, false)?;
        assert_eq!((a.dims(), a.data()), (&[2][..], &[1.0, 0.0][..]));
        let a = engine.argmax(&x, 0, true)?;
        assert_eq!((a.dims(), a.data()), (&[1, 3][..], &[0.0, 0.0, 0.0][..]));
        Ok(())
    }

    #[test]
    fn bad_arguments_are_errors() {
        let engine = CpuBackend::new();
        let x = engine.constant(&[2, 3], vec![0.0; 6]);
        let Ok(x) = x else { return };
        assert!(engine.reduce(Reduce::Sum, &x, &[2], false).is_err());
        assert!(engine.permute(&x, &[0, 0]).is_err());
        assert!(engine.narrow(&x, 1, 2, 2).is_err());
        assert!(engine.clamp(&x, 1.0, 0.0).is_err());
        for bad in [vec![3.0], vec![-1.0], vec![0.5], vec![f32::NAN]] {
            let Ok(ids) = engine.constant(&[1], bad) else {
                continue;
            };
            assert!(engine.index_select(&x, 1, &ids).is_err());
        }
        assert!(engine.matmul(&x, &x).is_err());
        assert!(
            engine
                .binary(
                    Binary::Add,
                    &x,
                    &engine.constant(&[2], vec![0.0; 2]).unwrap_or(x.clone())
                )
                .is_err()
        );
        assert!(engine.normalize(&x, &[0], 0.0).is_err());
        assert!(engine.adaptive_avg_pool2d(&x, [1, 1]).is_err());
    }

    #[test]
    fn an_interrupted_engine_stops_new_ops() -> R {
        let interrupt = Interrupt::new();
        let engine = CpuBackend::new().with_interrupt(interrupt.clone());
        let x = engine.constant(&[256, 256], vec![1.0; 1 << 16])?;
        interrupt.stop();
        assert_eq!(
            engine.reduce(Reduce::Sum, &x, &[1], false).err(),
            Some(EngineError::Interrupted)
        );
        assert_eq!(
            engine.permute(&x, &[1, 0]).err(),
            Some(EngineError::Interrupted)
        );
        assert_eq!(engine.matmul(&x, &x).err(), Some(EngineError::Interrupted));
        assert_eq!(
            engine.dropout(&x, 0.5, 1).err(),
            Some(EngineError::Interrupted)
        );
        assert_eq!(
            engine.normalize(&x, &[0], 1e-5).err(),
            Some(EngineError::Interrupted)
        );
        Ok(())
    }
}
