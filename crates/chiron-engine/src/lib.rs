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
mod flat;
mod flex;
mod interrupt;
#[cfg(feature = "libtorch")]
mod libtorch;
mod optim;
mod shape;

pub use check::broadcast_dims;
pub use cpu::{CpuBackend, CpuGradients, CpuTensor};
pub use error::EngineError;
pub use flat::FlatOptimizer;
pub use flex::FlexBackend;
pub use interrupt::{Interrupt, QUANTUM};
#[cfg(feature = "libtorch")]
pub use libtorch::TchBackend;
pub use optim::{Optimizer, OptimizerKind, OptimizerState};
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

    /// 2-D convolution: `x` is `[N, C, H, W]`, `w` is `[O, C / groups, KH, KW]`, `b` is
    /// `[O]`, with PyTorch's `Conv2d` geometry ([`Conv2dOptions`]).
    fn conv2d(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: Option<&Self::Tensor>,
        options: &Conv2dOptions,
    ) -> Result<Self::Tensor, EngineError>;
    /// 2-D pooling over `[N, C, H, W]`: the maximum, or the mean with padding counted as
    /// zeros (PyTorch's `count_include_pad=True`); max pooling pads with `-inf`.
    fn pool2d(
        &self,
        kind: Pool,
        x: &Self::Tensor,
        options: &Pool2dOptions,
    ) -> Result<Self::Tensor, EngineError>;
    /// 2-D max pooling over `[N, C, H, W]` with a square window and no padding.
    fn max_pool2d(
        &self,
        x: &Self::Tensor,
        kernel: usize,
        stride: usize,
    ) -> Result<Self::Tensor, EngineError> {
        self.pool2d(Pool::Max, x, &Pool2dOptions::square(kernel, stride))
    }
    /// Adaptive average pooling of `[N, C, H, W]` to `[N, C, out[0], out[1]]` (PyTorch's
    /// windows: from `floor(i·H/out)` to `ceil((i+1)·H/out)`); `[1, 1]` is global pooling.
    fn adaptive_avg_pool2d(
        &self,
        x: &Self::Tensor,
        out: [usize; 2],
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
    /// Element-wise binary function with NumPy broadcasting: shapes are aligned at their
    /// last dimension and each pair of dimensions must be equal or contain a 1.
    fn binary(
        &self,
        op: Binary,
        a: &Self::Tensor,
        b: &Self::Tensor,
    ) -> Result<Self::Tensor, EngineError>;
    /// `min(max(x, min), max)`, element-wise; the gradient passes where `x` is inside.
    fn clamp(&self, x: &Self::Tensor, min: f32, max: f32) -> Result<Self::Tensor, EngineError>;
    /// `scale · x + shift`, element-wise.
    fn affine(&self, x: &Self::Tensor, scale: f32, shift: f32)
    -> Result<Self::Tensor, EngineError>;
    /// The same values viewed with another shape of the same element count.
    fn reshape(&self, x: &Self::Tensor, shape: &[usize]) -> Result<Self::Tensor, EngineError>;
    /// Mean softmax cross-entropy of logits `[N, C]` against class indices `[N]` (as `f32`),
    /// with label smoothing `smoothing` in `[0, 1]` (PyTorch's: the target puts
    /// `1 - smoothing + smoothing / C` on the label and `smoothing / C` elsewhere).
    /// Returns a one-element tensor.
    fn cross_entropy(
        &self,
        logits: &Self::Tensor,
        labels: &Self::Tensor,
        smoothing: f32,
    ) -> Result<Self::Tensor, EngineError>;
    /// Mean binary cross-entropy of `logits` against `targets` in `[0, 1]` of the same shape,
    /// computed from the logits without overflow (PyTorch's `BCEWithLogitsLoss`). Returns a
    /// one-element tensor.
    fn bce_with_logits(
        &self,
        logits: &Self::Tensor,
        targets: &Self::Tensor,
    ) -> Result<Self::Tensor, EngineError>;
    /// Mean over all elements, as a one-element tensor.
    fn mean(&self, x: &Self::Tensor) -> Result<Self::Tensor, EngineError>;
    /// Reduces `axes` (distinct, each below the rank) with `op`. With `keepdim` each reduced
    /// axis stays as a 1; without, it is removed, and reducing every axis gives `[1]`.
    fn reduce(
        &self,
        op: Reduce,
        x: &Self::Tensor,
        axes: &[usize],
        keepdim: bool,
    ) -> Result<Self::Tensor, EngineError>;
    /// The index of the largest value along `axis` (the first, on ties), as `f32`; not
    /// differentiable. Shaped as [`Backend::reduce`] over that one axis.
    fn argmax(
        &self,
        x: &Self::Tensor,
        axis: usize,
        keepdim: bool,
    ) -> Result<Self::Tensor, EngineError>;

    /// The axes reordered: output axis `i` is input axis `perm[i]`.
    fn permute(&self, x: &Self::Tensor, perm: &[usize]) -> Result<Self::Tensor, EngineError>;
    /// Tensors of the same rank joined along `axis`; every other dimension must agree.
    fn concat(&self, xs: &[&Self::Tensor], axis: usize) -> Result<Self::Tensor, EngineError>;
    /// `len` entries of `axis` from `start`.
    fn narrow(
        &self,
        x: &Self::Tensor,
        axis: usize,
        start: usize,
        len: usize,
    ) -> Result<Self::Tensor, EngineError>;
    /// The entries of `axis` named by `indices`, a rank-1 tensor of exact integer indices
    /// (as `f32`) below that dimension, in their order, repeats allowed (embedding lookup is
    /// `index_select(table, 0, ids)`). The gradient adds back into the selected entries.
    fn index_select(
        &self,
        x: &Self::Tensor,
        axis: usize,
        indices: &Self::Tensor,
    ) -> Result<Self::Tensor, EngineError>;
    /// Matrix product over the last two axes, `[.., n, k] · [.., k, m]`, with the leading
    /// (batch) axes broadcast as in [`Backend::binary`].
    fn matmul(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor, EngineError>;
    /// `(x - mean) / sqrt(var + eps)` with the mean and the (biased) variance taken over
    /// `axes`: batch norm is `axes = [0, 2, 3]` on images, layer norm the last axis. Returns
    /// the normalised tensor (differentiable) and the mean and variance, shaped as
    /// [`Backend::reduce`] with `keepdim`, cut from the graph (for running statistics).
    fn normalize(
        &self,
        x: &Self::Tensor,
        axes: &[usize],
        eps: f32,
    ) -> Result<Normalized<Self::Tensor>, EngineError>;
    /// Inverted dropout: each value is zeroed with probability `p` and the rest scaled by
    /// `1 / (1 - p)`, by the mask [`dropout_mask`] draws from `seed`, so every backend drops
    /// the same values.
    fn dropout(&self, x: &Self::Tensor, p: f32, seed: u64) -> Result<Self::Tensor, EngineError>;
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
    /// `a^b` (`powf`; the gradient in `b` is `a^b ln a`, `NaN` for `a < 0` as in PyTorch).
    Pow,
    /// `max(a, b)` (the gradient goes to `a` on ties).
    Maximum,
    /// `min(a, b)` (the gradient goes to `a` on ties).
    Minimum,
}

/// Reductions over chosen axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reduce {
    /// The sum.
    Sum,
    /// The mean.
    Mean,
    /// The largest value (the gradient goes to the first maximum).
    Max,
    /// The smallest value (the gradient goes to the first minimum).
    Min,
    /// The biased variance, `mean((x - mean(x))^2)` (PyTorch's `var(correction=0)`).
    Var,
}

/// Kinds of [`Backend::pool2d`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    /// The window's largest value (the gradient goes to the first maximum).
    Max,
    /// The window's mean, padding counted as zeros.
    Avg,
}

/// The geometry of a 2-D convolution, as PyTorch's `Conv2d` takes it: `[height, width]`
/// pairs and a group count that divides both the input and output channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dOptions {
    /// Step between windows.
    pub stride: [usize; 2],
    /// Zeros added on each side.
    pub padding: [usize; 2],
    /// Spacing between kernel taps.
    pub dilation: [usize; 2],
    /// Channel groups (the input channels for a depthwise convolution).
    pub groups: usize,
}

impl Conv2dOptions {
    /// Square stride and padding, no dilation, one group.
    pub fn square(stride: usize, padding: usize) -> Self {
        Self {
            stride: [stride; 2],
            padding: [padding; 2],
            dilation: [1; 2],
            groups: 1,
        }
    }
}

/// The window of a 2-D pooling, as `[height, width]` pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dOptions {
    /// Window size.
    pub kernel: [usize; 2],
    /// Step between windows.
    pub stride: [usize; 2],
    /// Padding on each side (at most half the window, as in PyTorch).
    pub padding: [usize; 2],
}

impl Pool2dOptions {
    /// A square window of `kernel`, moved by `stride`, no padding.
    pub fn square(kernel: usize, stride: usize) -> Self {
        Self {
            kernel: [kernel; 2],
            stride: [stride; 2],
            padding: [0; 2],
        }
    }
}

/// What [`Backend::normalize`] returns.
#[derive(Clone, Debug)]
pub struct Normalized<T> {
    /// `(x - mean) / sqrt(var + eps)`.
    pub output: T,
    /// The mean over the normalised axes (kept as 1s), outside any gradient graph.
    pub mean: T,
    /// The biased variance over the same axes, outside any gradient graph.
    pub var: T,
}

/// The keep mask of [`Backend::dropout`] for `len` values: `1 / (1 - p)` where a value is
/// kept, `0` where it is dropped, drawn from ChaCha20 seeded with `seed` (one `u32` per value,
/// dropped when below `p · 2^32`). Shared by every backend so that they agree exactly; drawn
/// in chunks that look at `interrupt` between them, since `len` is the program's choice.
pub fn dropout_mask(
    len: usize,
    p: f32,
    seed: u64,
    interrupt: &Interrupt,
) -> Result<Vec<f32>, EngineError> {
    use rand::{RngCore, SeedableRng};
    /// Values drawn between two looks at the interrupt.
    const CHUNK: usize = 1 << 16;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let threshold = (f64::from(p) * 4_294_967_296.0) as u64;
    let keep = 1.0 / (1.0 - p);
    let mut mask = Vec::with_capacity(len);
    let mut pace = interrupt::Pace::new(interrupt)?;
    while mask.len() < len {
        let n = (len - mask.len()).min(CHUNK);
        pace.step(16 * n)?;
        mask.extend((0..n).map(|_| {
            if u64::from(rng.next_u32()) < threshold {
                0.0
            } else {
                keep
            }
        }));
    }
    Ok(mask)
}
