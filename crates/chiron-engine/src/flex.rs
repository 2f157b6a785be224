//! [`Backend`] on `burn`'s pure-Rust `flex` CPU backend with its autodiff decorator.

use std::panic::{AssertUnwindSafe, catch_unwind};

use burn_tensor::{
    Device, Gradients, Int, Tensor, TensorData, activation, module,
    ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions},
};

use crate::{
    Backend, Binary, Conv2dOptions, EngineError, Normalized, Pool, Pool2dOptions, Reduce, Shape,
    Unary, check,
};

/// A `burn` tensor of rank 1 to 4; the host ABI is rank-dynamic, `burn` is not.
#[derive(Clone, Debug)]
pub enum FlexTensor {
    /// Rank 1.
    R1(Tensor<1>),
    /// Rank 2.
    R2(Tensor<2>),
    /// Rank 3.
    R3(Tensor<3>),
    /// Rank 4.
    R4(Tensor<4>),
}

/// Applies `$body` to the inner tensor whatever its rank, keeping the rank.
macro_rules! map_rank {
    ($t:expr, $x:ident => $body:expr) => {
        match $t {
            FlexTensor::R1($x) => FlexTensor::R1($body),
            FlexTensor::R2($x) => FlexTensor::R2($body),
            FlexTensor::R3($x) => FlexTensor::R3($body),
            FlexTensor::R4($x) => FlexTensor::R4($body),
        }
    };
}

/// Evaluates `$body` with the inner tensor whatever its rank.
macro_rules! with_rank {
    ($t:expr, $x:ident => $body:expr) => {
        match $t {
            FlexTensor::R1($x) => $body,
            FlexTensor::R2($x) => $body,
            FlexTensor::R3($x) => $body,
            FlexTensor::R4($x) => $body,
        }
    };
}

/// Applies a same-rank binary function to two tensors of equal rank.
macro_rules! zip_rank {
    ($a:expr, $b:expr, $x:ident, $y:ident => $body:expr) => {
        match ($a, $b) {
            (FlexTensor::R1($x), FlexTensor::R1($y)) => Some(FlexTensor::R1($body)),
            (FlexTensor::R2($x), FlexTensor::R2($y)) => Some(FlexTensor::R2($body)),
            (FlexTensor::R3($x), FlexTensor::R3($y)) => Some(FlexTensor::R3($body)),
            (FlexTensor::R4($x), FlexTensor::R4($y)) => Some(FlexTensor::R4($body)),
            _ => None,
        }
    };
}

/// The default engine: `burn` `flex` (SIMD, rayon) with autodiff.
#[derive(Clone, Debug)]
pub struct FlexBackend {
    device: Device,
}

impl Default for FlexBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl FlexBackend {
    /// An engine on the CPU.
    pub fn new() -> Self {
        Self {
            device: Device::flex().autodiff(),
        }
    }

    /// A tensor of `data` in `shape`, whose element count `check::values` has checked.
    fn tensor_from_data(&self, shape: &Shape, data: Vec<f32>) -> FlexTensor {
        let d = shape.dims();
        let td = TensorData::new(data, d.to_vec());
        let dev = &self.device;
        match d.len() {
            1 => FlexTensor::R1(Tensor::from_data(td, dev)),
            2 => FlexTensor::R2(Tensor::from_data(td, dev)),
            3 => FlexTensor::R3(Tensor::from_data(td, dev)),
            _ => FlexTensor::R4(Tensor::from_data(td, dev)),
        }
    }
}

/// Runs engine code, turning an unexpected panic inside `burn` into an error. Arguments are
/// validated before every call, so this is a second line of defence, not the first.
fn contained<T>(op: &'static str, f: impl FnOnce() -> T) -> Result<T, EngineError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| EngineError::Internal { op })
}

fn shape_err(op: &'static str, detail: String) -> EngineError {
    EngineError::Shape { op, detail }
}

fn dims_of(t: &FlexTensor) -> Vec<usize> {
    with_rank!(t, x => x.dims().to_vec())
}

fn rank4(op: &'static str, t: &FlexTensor) -> Result<Tensor<4>, EngineError> {
    match t {
        FlexTensor::R4(x) => Ok(x.clone()),
        other => Err(shape_err(
            op,
            format!("expected rank 4, got {:?}", dims_of(other)),
        )),
    }
}

fn rank2(op: &'static str, t: &FlexTensor) -> Result<Tensor<2>, EngineError> {
    match t {
        FlexTensor::R2(x) => Ok(x.clone()),
        other => Err(shape_err(
            op,
            format!("expected rank 2, got {:?}", dims_of(other)),
        )),
    }
}

fn rank1(op: &'static str, t: &FlexTensor) -> Result<Tensor<1>, EngineError> {
    match t {
        FlexTensor::R1(x) => Ok(x.clone()),
        other => Err(shape_err(
            op,
            format!("expected rank 1, got {:?}", dims_of(other)),
        )),
    }
}

/// `dims` with leading 1s up to rank 4.
fn dims4(dims: &[usize]) -> [usize; 4] {
    let mut out = [1; 4];
    out[4 - dims.len()..].copy_from_slice(dims);
    out
}

/// The tensor viewed at rank 4, with leading 1s.
fn lift(t: &FlexTensor) -> Tensor<4> {
    let shape = dims4(&dims_of(t));
    with_rank!(t.clone(), x => x.reshape(shape))
}

/// A rank-4 tensor viewed with `dims` (same element count, rank 1 to 4).
fn lower(t: Tensor<4>, dims: &[usize]) -> FlexTensor {
    match *dims {
        [a] => FlexTensor::R1(t.reshape([a])),
        [a, b] => FlexTensor::R2(t.reshape([a, b])),
        [a, b, c] => FlexTensor::R3(t.reshape([a, b, c])),
        _ => FlexTensor::R4(t.reshape(dims4(dims))),
    }
}

/// `x` (dimensions `dims`) as `[kept, reduced]`: the axes outside `axes` first, then `axes`
/// in increasing order, the two groups flattened in row-major order.
fn gather_reduced(x: &FlexTensor, dims: &[usize], axes: &[usize]) -> Tensor<2> {
    let shift = 4 - dims.len();
    let full = dims4(dims);
    let reduced = |a: usize| a >= shift && axes.contains(&(a - shift));
    let order: Vec<usize> = (0..4)
        .filter(|&a| !reduced(a))
        .chain((0..4).filter(|&a| reduced(a)))
        .collect();
    let kept: usize = (0..4).filter(|&a| !reduced(a)).map(|a| full[a]).product();
    let span: usize = (0..4).filter(|&a| reduced(a)).map(|a| full[a]).product();
    let order: [usize; 4] = [order[0], order[1], order[2], order[3]];
    lift(x).permute(order).reshape([kept, span])
}

impl Backend for FlexBackend {
    type Tensor = FlexTensor;
    type Gradients = Gradients;

    fn constant(&self, shape: &[usize], data: Vec<f32>) -> Result<FlexTensor, EngineError> {
        let shape = check::values(shape, data.len())?;
        Ok(self.tensor_from_data(&shape, data))
    }

    fn parameter(&self, shape: &[usize], data: Vec<f32>) -> Result<FlexTensor, EngineError> {
        let t = self.constant(shape, data)?;
        Ok(self.as_parameter(t))
    }

    fn shape(&self, t: &FlexTensor) -> Shape {
        Shape(dims_of(t))
    }

    fn read(&self, t: &FlexTensor) -> Result<Vec<f32>, EngineError> {
        let data = contained("read", || with_rank!(t, x => x.to_data()))?;
        data.try_into_vec::<f32>()
            .map_err(|_| EngineError::Internal { op: "read" })
    }

    fn detach(&self, t: &FlexTensor) -> FlexTensor {
        map_rank!(t.clone(), x => x.inner())
    }

    fn conv2d(
        &self,
        x: &FlexTensor,
        w: &FlexTensor,
        b: Option<&FlexTensor>,
        options: &Conv2dOptions,
    ) -> Result<FlexTensor, EngineError> {
        const OP: &str = "conv2d";
        check::conv2d(&dims_of(x), &dims_of(w), b.map(dims_of).as_deref(), options)?;
        let (x, w) = (rank4(OP, x)?, rank4(OP, w)?);
        let b = b.map(|b| rank1(OP, b)).transpose()?;
        let &Conv2dOptions {
            stride,
            padding,
            dilation,
            groups,
        } = options;
        contained(OP, || {
            let opts = ConvOptions::new(stride, padding, dilation, groups);
            FlexTensor::R4(module::conv2d(x, w, b, opts))
        })
    }

    fn pool2d(
        &self,
        kind: Pool,
        x: &FlexTensor,
        options: &Pool2dOptions,
    ) -> Result<FlexTensor, EngineError> {
        const OP: &str = "pool2d";
        check::pool2d(&dims_of(x), options)?;
        let x = rank4(OP, x)?;
        let &Pool2dOptions {
            kernel,
            stride,
            padding,
        } = options;
        contained(OP, || {
            FlexTensor::R4(match kind {
                // burn pads max pooling with -inf.
                Pool::Max => module::max_pool2d(
                    x,
                    MaxPoolOptions::new(kernel)
                        .with_stride(stride)
                        .with_padding(padding),
                ),
                Pool::Avg => module::avg_pool2d(
                    x,
                    AvgPoolOptions::new(kernel)
                        .with_stride(stride)
                        .with_padding(padding)
                        .with_count_include_pad(true),
                ),
            })
        })
    }

    fn adaptive_avg_pool2d(
        &self,
        x: &FlexTensor,
        out: [usize; 2],
    ) -> Result<FlexTensor, EngineError> {
        const OP: &str = "adaptive_avg_pool2d";
        check::adaptive_avg_pool2d(&dims_of(x), out)?;
        let x = rank4(OP, x)?;
        contained(OP, || FlexTensor::R4(module::adaptive_avg_pool2d(x, out)))
    }

    fn linear(
        &self,
        x: &FlexTensor,
        w: &FlexTensor,
        b: Option<&FlexTensor>,
    ) -> Result<FlexTensor, EngineError> {
        const OP: &str = "linear";
        check::linear(&dims_of(x), &dims_of(w), b.map(dims_of).as_deref())?;
        let (x, w) = (rank2(OP, x)?, rank2(OP, w)?);
        let b = b.map(|b| rank1(OP, b)).transpose()?;
        contained(OP, || FlexTensor::R2(module::linear(x, w, b)))
    }

    fn unary(&self, op: Unary, x: &FlexTensor) -> Result<FlexTensor, EngineError> {
        let x = x.clone();
        contained("unary", || match op {
            Unary::Relu => map_rank!(x, t => activation::relu(t)),
            Unary::Tanh => map_rank!(x, t => activation::tanh(t)),
            Unary::Sigmoid => map_rank!(x, t => activation::sigmoid(t)),
            Unary::Sqrt => map_rank!(x, t => t.sqrt()),
            Unary::Softmax => map_rank!(x, t => {
                let last = t.dims().len() - 1;
                activation::softmax(t, last)
            }),
            Unary::Exp => map_rank!(x, t => t.exp()),
            Unary::Log => map_rank!(x, t => t.log()),
            Unary::Abs => map_rank!(x, t => t.abs()),
            Unary::LeakyRelu => {
                map_rank!(x, t => activation::leaky_relu(t, f64::from(crate::LEAKY_RELU_SLOPE)))
            }
            Unary::Gelu => map_rank!(x, t => activation::gelu(t)),
            Unary::Silu => map_rank!(x, t => activation::silu(t)),
        })
    }

    fn binary(
        &self,
        op: Binary,
        a: &FlexTensor,
        b: &FlexTensor,
    ) -> Result<FlexTensor, EngineError> {
        const OP: &str = "binary";
        let out = check::broadcast_dims(&dims_of(a), &dims_of(b))?;
        let (a, b) = (a.clone(), b.clone());
        contained(OP, || {
            // Both operands lifted to rank 4 and expanded to the output: the gradient of the
            // expansion sums back over the broadcast axes.
            let shape = dims4(&out);
            let (a, b) = (lift(&a).expand(shape), lift(&b).expand(shape));
            let y = match op {
                Binary::Add => a.add(b),
                Binary::Sub => a.sub(b),
                Binary::Mul => a.mul(b),
                Binary::Div => a.div(b),
                Binary::Pow => a.powf(b),
                // `a` where it wins or ties (or is NaN, which propagates as in PyTorch), else
                // `b`; `mask_where` routes the gradient the same way.
                Binary::Maximum => {
                    let take_a = a
                        .clone()
                        .greater_equal(b.clone())
                        .bool_or(a.clone().is_nan());
                    b.mask_where(take_a, a)
                }
                Binary::Minimum => {
                    let take_a = a.clone().lower_equal(b.clone()).bool_or(a.clone().is_nan());
                    b.mask_where(take_a, a)
                }
            };
            lower(y, &out)
        })
    }

    fn clamp(&self, x: &FlexTensor, min: f32, max: f32) -> Result<FlexTensor, EngineError> {
        check::clamp(min, max)?;
        let x = x.clone();
        // Filled values take no gradient; the rest (min <= x <= max) pass it, as in PyTorch.
        contained("clamp", || {
            map_rank!(x, t => {
                let below = t.clone().lower_scalar(min);
                let above = t.clone().greater_scalar(max);
                t.mask_fill(below, min).mask_fill(above, max)
            })
        })
    }

    fn affine(&self, x: &FlexTensor, scale: f32, shift: f32) -> Result<FlexTensor, EngineError> {
        check::affine(scale, shift)?;
        let x = x.clone();
        contained(
            "affine",
            || map_rank!(x, t => t.mul_scalar(scale).add_scalar(shift)),
        )
    }

    fn reshape(&self, x: &FlexTensor, shape: &[usize]) -> Result<FlexTensor, EngineError> {
        let target = check::reshape(&dims_of(x), shape)?;
        let d = target.dims().to_vec();
        let x = x.clone();
        contained("reshape", || {
            with_rank!(x, t => match d.len() {
                1 => FlexTensor::R1(t.reshape([d[0]])),
                2 => FlexTensor::R2(t.reshape([d[0], d[1]])),
                3 => FlexTensor::R3(t.reshape([d[0], d[1], d[2]])),
                _ => FlexTensor::R4(t.reshape([d[0], d[1], d[2], d[3]])),
            })
        })
    }

    fn cross_entropy(
        &self,
        logits: &FlexTensor,
        labels: &FlexTensor,
        smoothing: f32,
    ) -> Result<FlexTensor, EngineError> {
        const OP: &str = "cross_entropy";
        let [n, classes] = check::cross_entropy(&dims_of(logits), &dims_of(labels))?;
        check::smoothing(smoothing)?;
        let logits = rank2(OP, logits)?;
        let labels = check::class_indices(&self.read(labels)?, classes)?;
        // PyTorch's smoothed target: `smoothing / C` everywhere, plus `1 - smoothing` on the
        // label.
        let spread = smoothing / classes as f32;
        let mut target = vec![spread; n * classes];
        for (row, label) in labels.into_iter().enumerate() {
            target[row * classes + label] += 1.0 - smoothing;
        }
        let target: Tensor<2> =
            Tensor::from_data(TensorData::new(target, vec![n, classes]), &self.device);
        contained(OP, || {
            let log_p = activation::log_softmax(logits, 1);
            FlexTensor::R1(log_p.mul(target).sum().div_scalar(n as f32).neg())
        })
    }

    fn bce_with_logits(
        &self,
        logits: &FlexTensor,
        targets: &FlexTensor,
    ) -> Result<FlexTensor, EngineError> {
        const OP: &str = "bce_with_logits";
        check::bce_with_logits(&dims_of(logits), &dims_of(targets))?;
        let (x, t) = (logits.clone(), targets.clone());
        contained(OP, || {
            // -(t log σ(x) + (1 - t) log σ(-x)), with burn's overflow-free log σ.
            let (x, t) = (lift(&x), lift(&t));
            let positive = t.clone().mul(activation::log_sigmoid(x.clone()));
            let negative = t
                .neg()
                .add_scalar(1.0)
                .mul(activation::log_sigmoid(x.neg()));
            FlexTensor::R1(positive.add(negative).neg().mean())
        })
    }

    fn mean(&self, x: &FlexTensor) -> Result<FlexTensor, EngineError> {
        let x = x.clone();
        contained("mean", || FlexTensor::R1(with_rank!(x, t => t.mean())))
    }

    fn reduce(
        &self,
        op: Reduce,
        x: &FlexTensor,
        axes: &[usize],
        keepdim: bool,
    ) -> Result<FlexTensor, EngineError> {
        const OP: &str = "reduce";
        let dims = dims_of(x);
        let out = check::reduce(OP, &dims, axes, keepdim)?;
        let x = x.clone();
        contained(OP, || {
            // The reduced axes moved last (in their order) and flattened: one row per output
            // value, so "first" means first in row-major order within the reduced block.
            let rows = gather_reduced(&x, &dims, axes);
            let y = match op {
                Reduce::Sum => rows.sum_dim(1),
                Reduce::Mean => rows.mean_dim(1),
                Reduce::Max => rows.max_dim(1),
                Reduce::Min => rows.min_dim(1),
                Reduce::Var => {
                    let shape = rows.dims();
                    let mean = rows.clone().mean_dim(1).expand(shape);
                    let centred = rows.sub(mean);
                    centred.clone().mul(centred).mean_dim(1)
                }
            };
            let count = y.dims()[0];
            lower(y.reshape([1, 1, 1, count]), &out)
        })
    }

    fn argmax(
        &self,
        x: &FlexTensor,
        axis: usize,
        keepdim: bool,
    ) -> Result<FlexTensor, EngineError> {
        const OP: &str = "argmax";
        let dims = dims_of(x);
        let out = check::reduce(OP, &dims, &[axis], keepdim)?;
        let x = x.clone();
        contained(OP, || {
            // Integer indices carry no gradient; the result is a constant of the same graph.
            let rows = gather_reduced(&x, &dims, &[axis]);
            let count = rows.dims()[0];
            let index = rows.argmax(1).float();
            lower(index.detach().reshape([1, 1, 1, count]), &out)
        })
    }

    fn permute(&self, x: &FlexTensor, perm: &[usize]) -> Result<FlexTensor, EngineError> {
        const OP: &str = "permute";
        let dims = dims_of(x);
        let out = check::permute(&dims, perm)?;
        let shift = 4 - dims.len();
        // Leading axes added by the lift stay in place.
        let mut axes = [0, 1, 2, 3];
        for (i, &p) in perm.iter().enumerate() {
            axes[shift + i] = shift + p;
        }
        let x = x.clone();
        contained(OP, || lower(lift(&x).permute(axes), &out))
    }

    fn concat(&self, xs: &[&FlexTensor], axis: usize) -> Result<FlexTensor, EngineError> {
        const OP: &str = "concat";
        let all: Vec<Vec<usize>> = xs.iter().map(|x| dims_of(x)).collect();
        let refs: Vec<&[usize]> = all.iter().map(Vec::as_slice).collect();
        let out = check::concat(&refs, axis)?;
        let shift = 4 - out.len();
        let xs: Vec<FlexTensor> = xs.iter().map(|&x| x.clone()).collect();
        contained(OP, || {
            let parts = xs.iter().map(lift).collect();
            lower(Tensor::cat(parts, axis + shift), &out)
        })
    }

    fn narrow(
        &self,
        x: &FlexTensor,
        axis: usize,
        start: usize,
        len: usize,
    ) -> Result<FlexTensor, EngineError> {
        const OP: &str = "narrow";
        let dims = dims_of(x);
        let out = check::narrow(&dims, axis, start, len)?;
        let shift = 4 - dims.len();
        let x = x.clone();
        contained(OP, || {
            lower(lift(&x).narrow(axis + shift, start, len), &out)
        })
    }

    fn index_select(
        &self,
        x: &FlexTensor,
        axis: usize,
        indices: &FlexTensor,
    ) -> Result<FlexTensor, EngineError> {
        const OP: &str = "index_select";
        let dims = dims_of(x);
        let out = check::index_select(&dims, axis, &dims_of(indices))?;
        let picked = check::indices(OP, &self.read(indices)?, dims[axis])?;
        let shift = 4 - dims.len();
        let x = x.clone();
        let device = self.device.clone();
        contained(OP, || {
            let count = picked.len();
            // Each index is below a tensor dimension, which is at most 2^28.
            let picked: Vec<i64> = picked.into_iter().map(|i| i as i64).collect();
            let picked: Tensor<1, Int> =
                Tensor::from_data(TensorData::new(picked, vec![count]), &device);
            lower(lift(&x).select(axis + shift, picked), &out)
        })
    }

    fn matmul(&self, a: &FlexTensor, b: &FlexTensor) -> Result<FlexTensor, EngineError> {
        const OP: &str = "matmul";
        let product = check::matmul(&dims_of(a), &dims_of(b))?;
        let (a, b) = (a.clone(), b.clone());
        contained(OP, || {
            // Both lifted to rank 4 and expanded to the broadcast batch (two axes, leading 1s).
            let batch = dims4(&product.out);
            let a = lift(&a).expand([batch[0], batch[1], product.n, product.k]);
            let b = lift(&b).expand([batch[0], batch[1], product.k, product.m]);
            lower(a.matmul(b), &product.out)
        })
    }

    fn normalize(
        &self,
        x: &FlexTensor,
        axes: &[usize],
        eps: f32,
    ) -> Result<Normalized<FlexTensor>, EngineError> {
        const OP: &str = "normalize";
        let dims = dims_of(x);
        let stats = check::normalize(&dims, axes, eps)?;
        let shift = 4 - dims.len();
        let x = x.clone();
        contained(OP, || {
            let x = lift(&x);
            let shape = x.dims();
            // Means over equal-sized groups, one axis at a time (burn keeps each axis as a 1).
            let mean_over = |t: Tensor<4>| axes.iter().fold(t, |t, &a| t.mean_dim(a + shift));
            let mean = mean_over(x.clone());
            let centred = x.sub(mean.clone().expand(shape));
            let var = mean_over(centred.clone().mul(centred.clone()));
            let scale = var.clone().add_scalar(eps).sqrt().expand(shape);
            Normalized {
                output: lower(centred.div(scale), &dims),
                mean: lower(mean.detach(), &stats),
                var: lower(var.detach(), &stats),
            }
        })
    }

    fn dropout(&self, x: &FlexTensor, p: f32, seed: u64) -> Result<FlexTensor, EngineError> {
        const OP: &str = "dropout";
        check::dropout(p)?;
        let shape = self.shape(x);
        let mask = crate::dropout_mask(shape.elements(), p, seed, &crate::Interrupt::new())?;
        let mask = self.tensor_from_data(&shape, mask);
        let x = x.clone();
        contained(OP, || zip_rank!(x, mask, t, m => t.mul(m)))?
            .ok_or(EngineError::Internal { op: OP })
    }

    fn backward(&self, loss: &FlexTensor) -> Result<Gradients, EngineError> {
        match loss {
            FlexTensor::R1(l) if l.dims() == [1] && l.is_tracked() => {
                contained("backward", || l.backward())
            }
            _ => Err(EngineError::NotDifferentiable),
        }
    }

    fn grad(&self, grads: &Gradients, param: &FlexTensor) -> Option<FlexTensor> {
        match param {
            FlexTensor::R1(p) => p.grad(grads).map(FlexTensor::R1),
            FlexTensor::R2(p) => p.grad(grads).map(FlexTensor::R2),
            FlexTensor::R3(p) => p.grad(grads).map(FlexTensor::R3),
            FlexTensor::R4(p) => p.grad(grads).map(FlexTensor::R4),
        }
    }

    fn as_parameter(&self, t: FlexTensor) -> FlexTensor {
        // Parameters re-enter autodiff as fresh leaves; dropping `require_grad` here would
        // silently stop learning.
        map_rank!(t, x => x.inner().autodiff().require_grad())
    }
}
