//! [`Backend`] on `burn`'s pure-Rust `flex` CPU backend with its autodiff decorator.

use std::panic::{AssertUnwindSafe, catch_unwind};

use burn_tensor::{
    Device, Gradients, Tensor, TensorData, activation, module,
    ops::{ConvOptions, MaxPoolOptions},
};

use crate::{Backend, Binary, EngineError, Shape, Unary, check};

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
        stride: usize,
        padding: usize,
    ) -> Result<FlexTensor, EngineError> {
        const OP: &str = "conv2d";
        check::conv2d(
            &dims_of(x),
            &dims_of(w),
            b.map(dims_of).as_deref(),
            stride,
            padding,
        )?;
        let (x, w) = (rank4(OP, x)?, rank4(OP, w)?);
        let b = b.map(|b| rank1(OP, b)).transpose()?;
        let opts = ConvOptions::new([stride; 2], [padding; 2], [1; 2], 1);
        contained(OP, || FlexTensor::R4(module::conv2d(x, w, b, opts)))
    }

    fn max_pool2d(
        &self,
        x: &FlexTensor,
        kernel: usize,
        stride: usize,
    ) -> Result<FlexTensor, EngineError> {
        const OP: &str = "max_pool2d";
        check::max_pool2d(&dims_of(x), kernel, stride)?;
        let x = rank4(OP, x)?;
        let mut opts = MaxPoolOptions::new([kernel; 2]);
        opts.stride = [stride; 2];
        contained(OP, || FlexTensor::R4(module::max_pool2d(x, opts)))
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
        check::same_shape(&dims_of(a), &dims_of(b))?;
        let (a, b) = (a.clone(), b.clone());
        contained("binary", || match op {
            Binary::Add => zip_rank!(a, b, x, y => x.add(y)),
            Binary::Sub => zip_rank!(a, b, x, y => x.sub(y)),
            Binary::Mul => zip_rank!(a, b, x, y => x.mul(y)),
            Binary::Div => zip_rank!(a, b, x, y => x.div(y)),
        })?
        .ok_or(EngineError::Internal { op: "binary" })
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
    ) -> Result<FlexTensor, EngineError> {
        const OP: &str = "cross_entropy";
        let [n, classes] = check::cross_entropy(&dims_of(logits), &dims_of(labels))?;
        let logits = rank2(OP, logits)?;
        let labels = check::class_indices(&self.read(labels)?, classes)?;
        let mut one_hot = vec![0.0f32; n * classes];
        for (row, label) in labels.into_iter().enumerate() {
            one_hot[row * classes + label] = 1.0;
        }
        let target: Tensor<2> =
            Tensor::from_data(TensorData::new(one_hot, vec![n, classes]), &self.device);
        contained(OP, || {
            let log_p = activation::log_softmax(logits, 1);
            FlexTensor::R1(log_p.mul(target).sum().div_scalar(n as f32).neg())
        })
    }

    fn mean(&self, x: &FlexTensor) -> Result<FlexTensor, EngineError> {
        let x = x.clone();
        contained("mean", || FlexTensor::R1(with_rank!(x, t => t.mean())))
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
