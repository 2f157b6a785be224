//! [`Backend`] on the engine's own CPU kernels: im2col convolutions and dense products on
//! the `gemm` crate's micro-kernels, threads from `rayon`, and a small tape for gradients.
//!
//! Results do not depend on how work lands on threads: every reduction splits its work into
//! a fixed number of parts and adds them in order, so a seeded run gives the same model in
//! and out of the sandbox.

mod conv;
mod elementwise;
mod gemm;
mod pool;
mod tape;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use tape::CpuGradients;
use tape::Op;

use crate::interrupt::Pace;

use crate::{Backend, Binary, EngineError, Interrupt, Shape, Unary, check};

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
        stride: usize,
        padding: usize,
    ) -> Result<CpuTensor, EngineError> {
        const OP: &str = "conv2d";
        let g = check::conv2d(x.dims(), w.dims(), b.map(|b| b.dims()), stride, padding)?;
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

    fn max_pool2d(
        &self,
        x: &CpuTensor,
        kernel: usize,
        stride: usize,
    ) -> Result<CpuTensor, EngineError> {
        let out = check::max_pool2d(x.dims(), kernel, stride)?;
        let dims: [usize; 4] = [x.dims()[0], x.dims()[1], x.dims()[2], x.dims()[3]];
        let (values, argmax) = contained("max_pool2d", || {
            pool::max_pool2d(x.data(), dims, out, kernel, stride, &self.interrupt)
        })?;
        Ok(CpuTensor::computed(
            out.to_vec(),
            values,
            Op::MaxPool {
                x: x.clone(),
                argmax,
            },
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
        check::same_shape(a.dims(), b.dims())?;
        let (av, bv) = (a.data(), b.data());
        let i = &self.interrupt;
        let y = contained("binary", || match op {
            Binary::Add => elementwise::zip(av, bv, i, |x, y| x + y),
            Binary::Sub => elementwise::zip(av, bv, i, |x, y| x - y),
            Binary::Mul => elementwise::zip(av, bv, i, |x, y| x * y),
            Binary::Div => elementwise::zip(av, bv, i, |x, y| x / y),
        })?;
        Ok(CpuTensor::computed(
            a.dims().to_vec(),
            y,
            Op::Binary {
                op,
                a: a.clone(),
                b: b.clone(),
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
    ) -> Result<CpuTensor, EngineError> {
        const OP: &str = "cross_entropy";
        let [n, classes] = check::cross_entropy(logits.dims(), labels.dims())?;
        let labels = check::class_indices(labels.data(), classes)?;
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
                total += f64::from(row[label] - lse);
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
