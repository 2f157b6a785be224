//! The Chiron ML engine: dynamic-shape tensors with autodiff and optimizers.
//!
//! The enclave runtime executes every tensor operation a sandboxed provider program asks
//! for through the [`Backend`] trait. The trait is deliberately small and shape-checked so
//! that a faster backend (libtorch, a GPU) can be added without changing the host ABI that
//! provider programs are compiled against. Three implement it:
//!
//! - [`CpuBackend`], the default: the engine's own pure-Rust CPU kernels (im2col
//!   convolutions on the `gemm` crate's micro-kernels, `rayon` threads, a small gradient
//!   tape).
//! - [`FlexBackend`], on `burn`'s pure-Rust `flex` CPU backend: the reference the default is
//!   tested against.
//! - `TchBackend`, on libtorch, behind the `libtorch` feature.
//!
//! Every operation validates its arguments before touching the engine, because its inputs
//! come from untrusted code: a bad shape is an [`EngineError`], never a panic.
//!
//! ```
//! use chiron_engine::{Backend, CpuBackend, Unary};
//! let engine = CpuBackend::new();
//! let x = engine.constant(&[1, 3], vec![1.0, -2.0, 3.0]).unwrap();
//! let y = engine.unary(Unary::Relu, &x).unwrap();
//! assert_eq!(engine.read(&y).unwrap(), vec![1.0, 0.0, 3.0]);
//! ```

use std::sync::Arc;

mod check;
pub mod cost;
mod cpu;
mod error;
mod flex;
mod interrupt;
#[cfg(feature = "libtorch")]
mod libtorch;
mod optim;
mod shape;

pub use cpu::{CpuBackend, CpuGradients, CpuTensor};
pub use error::EngineError;
pub use flex::FlexBackend;
pub use interrupt::{Interrupt, QUANTUM};
#[cfg(feature = "libtorch")]
pub use libtorch::TchBackend;
pub use optim::{Optimizer, OptimizerKind};
pub use shape::{MAX_RANK, Shape};

/// The engine the runtime is built with: the pure-Rust [`CpuBackend`] by default.
#[cfg(not(feature = "libtorch"))]
pub type DefaultBackend = CpuBackend;
/// The engine the runtime is built with: libtorch ([`TchBackend`]), as the `libtorch`
/// feature asks.
#[cfg(feature = "libtorch")]
pub type DefaultBackend = TchBackend;

/// The operations the runtime's ML engine offers to provider programs.
///
/// Tensors are `f32`, of rank 1 to [`MAX_RANK`], in row-major layout. Images are `NCHW`.
/// Implementations must check every precondition and return [`EngineError`] instead of
/// panicking: the arguments come from untrusted code.
pub trait Backend {
    /// A tensor handle. Cloning is cheap (reference counted) and shares storage.
    type Tensor: Clone;
    /// Gradients produced by one backward pass.
    type Gradients;

    /// A constant tensor (no gradient) from row-major data.
    fn constant(&self, shape: &[usize], data: Vec<f32>) -> Result<Self::Tensor, EngineError>;
    /// A constant holding `data`, shared with its owner (the runtime's loaded model) where
    /// the backend can hold shared values, copied otherwise.
    fn shared_constant(
        &self,
        shape: &[usize],
        data: &Arc<Vec<f32>>,
    ) -> Result<Self::Tensor, EngineError> {
        self.constant(shape, data.as_ref().clone())
    }
    /// A trainable parameter (gradient retained by [`Backend::backward`]).
    fn parameter(&self, shape: &[usize], data: Vec<f32>) -> Result<Self::Tensor, EngineError>;
    /// The tensor's shape.
    fn shape(&self, t: &Self::Tensor) -> Shape;
    /// Copies the tensor's values out, row-major.
    fn read(&self, t: &Self::Tensor) -> Result<Vec<f32>, EngineError>;
    /// The same values, cut from any autodiff graph (for evaluation and optimizer state).
    fn detach(&self, t: &Self::Tensor) -> Self::Tensor;

    /// 2-D convolution: `x` is `[N, C, H, W]`, `w` is `[O, C, KH, KW]`, `b` is `[O]`.
    fn conv2d(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: Option<&Self::Tensor>,
        stride: usize,
        padding: usize,
    ) -> Result<Self::Tensor, EngineError>;
    /// 2-D max pooling over `[N, C, H, W]` with a square window.
    fn max_pool2d(
        &self,
        x: &Self::Tensor,
        kernel: usize,
        stride: usize,
    ) -> Result<Self::Tensor, EngineError>;
    /// Affine map `x · w + b` with `x` `[N, I]`, `w` `[I, O]`, `b` `[O]`.
    fn linear(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: Option<&Self::Tensor>,
    ) -> Result<Self::Tensor, EngineError>;
    /// Element-wise unary function.
    fn unary(&self, op: Unary, x: &Self::Tensor) -> Result<Self::Tensor, EngineError>;
    /// Element-wise binary function of two tensors of the same shape.
    fn binary(
        &self,
        op: Binary,
        a: &Self::Tensor,
        b: &Self::Tensor,
    ) -> Result<Self::Tensor, EngineError>;
    /// `scale · x + shift`, element-wise.
    fn affine(&self, x: &Self::Tensor, scale: f32, shift: f32)
    -> Result<Self::Tensor, EngineError>;
    /// The same values viewed with another shape of the same element count.
    fn reshape(&self, x: &Self::Tensor, shape: &[usize]) -> Result<Self::Tensor, EngineError>;
    /// Mean softmax cross-entropy of logits `[N, C]` against class indices `[N]` (as `f32`).
    /// Returns a one-element tensor.
    fn cross_entropy(
        &self,
        logits: &Self::Tensor,
        labels: &Self::Tensor,
    ) -> Result<Self::Tensor, EngineError>;
    /// Mean over all elements, as a one-element tensor.
    fn mean(&self, x: &Self::Tensor) -> Result<Self::Tensor, EngineError>;

    /// Back-propagates from a one-element tensor.
    fn backward(&self, loss: &Self::Tensor) -> Result<Self::Gradients, EngineError>;
    /// The gradient of `param` in `grads`, if it took part in the pass.
    fn grad(&self, grads: &Self::Gradients, param: &Self::Tensor) -> Option<Self::Tensor>;
    /// Re-wraps updated values as a trainable parameter.
    fn as_parameter(&self, t: Self::Tensor) -> Self::Tensor;

    /// The same engine, stopping its operations with [`EngineError::Interrupted`] once
    /// `interrupt` fires. [`CpuBackend`] looks at it inside its kernels, every
    /// [`QUANTUM`] of work or so; a backend whose kernels cannot be stopped part-way keeps
    /// this default and ignores it (the runtime still looks before every operation).
    fn with_interrupt(self, interrupt: Interrupt) -> Self
    where
        Self: Sized,
    {
        let _ = interrupt;
        self
    }
}

/// Element-wise unary functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unary {
    /// `max(x, 0)`.
    Relu,
    /// Hyperbolic tangent.
    Tanh,
    /// Logistic sigmoid.
    Sigmoid,
    /// Square root (optimizer internals).
    Sqrt,
    /// Softmax over the last dimension.
    Softmax,
    /// `e^x`.
    Exp,
    /// Natural logarithm (`NaN` below zero, `-inf` at zero, as in IEEE 754).
    Log,
    /// `|x|` (its gradient at 0 is 0).
    Abs,
    /// Leaky ReLU with PyTorch's default slope: `x` above 0, `0.01 x` below.
    LeakyRelu,
    /// GELU, the exact form `x Φ(x)` with the normal distribution's CDF (PyTorch's default).
    Gelu,
    /// SiLU (swish): `x σ(x)`.
    Silu,
}

/// Slope of [`Unary::LeakyRelu`] below zero.
pub const LEAKY_RELU_SLOPE: f32 = 0.01;

/// Element-wise binary functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Binary {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b`.
    Div,
}
