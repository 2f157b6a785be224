//! [`Tensor`]: an owned handle to a tensor that lives in the runtime.

use std::fmt;

use crate::{len_u32, sys};

/// Largest rank [`Tensor::shape`] reads in one call (it retries for more).
const SHAPE_CAP: usize = 8;

/// A tensor held by the runtime, named by a handle this value owns.
///
/// Operations return new tensors; dropping a `Tensor` frees its handle, so temporaries are
/// released as soon as they go out of scope and a training loop holds a bounded number of
/// handles. Values are `f32`, row-major; images are `[N, C, H, W]`.
///
/// A tensor computed from [parameters](Tensor::parameter) records how it was computed, so
/// that [`Optimizer::step`](crate::Optimizer::step) can back-propagate from a loss.
///
/// Shapes and arguments are checked by the runtime; a mismatch traps the program (the job
/// fails with an error that only the data owner sees).
pub struct Tensor {
    handle: u32,
}

/// How [`Tensor::parameter`] initialises a parameter, drawing from the runtime's seeded
/// random stream (so the same seed gives the same model, in the sandbox or natively).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// All zeros.
    Zeros,
    /// Uniform on `[-a, a]`.
    Uniform(f32),
    /// Normal with mean 0 and standard deviation `std`.
    Normal(f32),
    /// Every value `value` (a normalisation's scale starts at 1).
    Constant(f32),
    /// He/Kaiming uniform for ReLU layers: uniform on `[-b, b]` with `b = sqrt(6 / fan_in)`
    /// (gain `sqrt(2)`, PyTorch's `kaiming_uniform_(nonlinearity="relu")`).
    KaimingUniform {
        /// Inputs feeding one output: `in_features` for a linear layer, `C·KH·KW` for a
        /// convolution.
        fan_in: u32,
    },
}

impl Init {
    /// PyTorch's default for `nn.Linear` and `nn.Conv2d`, weights and biases alike:
    /// `kaiming_uniform_(a = sqrt(5))`, which is uniform on `[-1/sqrt(fan_in), 1/sqrt(fan_in)]`.
    ///
    /// # Panics
    /// If `fan_in` is 0.
    pub fn torch_default(fan_in: u32) -> Init {
        assert!(fan_in > 0, "fan_in must be positive");
        Init::Uniform(1.0 / (fan_in as f32).sqrt())
    }

    /// The ABI's `(init, a)` pair.
    fn abi(self) -> (u32, f32) {
        match self {
            Init::Zeros => (sys::INIT_ZEROS, 0.0),
            Init::Uniform(a) => (sys::INIT_UNIFORM, a),
            Init::Normal(std) => (sys::INIT_NORMAL, std),
            Init::Constant(value) => (sys::INIT_CONSTANT, value),
            Init::KaimingUniform { fan_in } => {
                assert!(fan_in > 0, "fan_in must be positive");
                (sys::INIT_UNIFORM, (6.0 / fan_in as f32).sqrt())
            }
        }
    }
}

/// Kinds of [`Tensor::pool2d`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    /// The window's largest value.
    Max,
    /// The window's mean, padding counted as zeros (PyTorch's `count_include_pad=True`).
    Avg,
}

impl Pool {
    /// The ABI's `POOL_*` code.
    fn abi(self) -> u32 {
        match self {
            Pool::Max => sys::POOL_MAX,
            Pool::Avg => sys::POOL_AVG,
        }
    }
}

/// The raw handles of `tensors`, for calls that take a list.
pub(crate) fn handles(tensors: &[&Tensor]) -> Vec<u32> {
    tensors.iter().map(|t| t.handle).collect()
}

impl Tensor {
    /// A constant tensor of the given shape from row-major `data`.
    ///
    /// # Panics
    /// If `data.len()` is not the product of `shape`.
    pub fn new(data: &[f32], shape: &[u32]) -> Tensor {
        let elements = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d as usize));
        assert_eq!(
            elements,
            Some(data.len()),
            "{} values do not fill shape {shape:?}",
            data.len()
        );
        // SAFETY: both pointers name live buffers of the given lengths, only read during
        // the call.
        let handle = unsafe {
            sys::chiron_tensor(
                data.as_ptr(),
                len_u32(data.len()),
                shape.as_ptr(),
                len_u32(shape.len()),
            )
        };
        Tensor::from_handle(handle)
    }

    /// A new trainable parameter of the given shape.
    pub fn parameter(shape: &[u32], init: Init) -> Tensor {
        let (code, a) = init.abi();
        // SAFETY: `shape` is a live buffer of `shape.len()` dimensions, only read during
        // the call.
        let handle =
            unsafe { sys::chiron_parameter(shape.as_ptr(), len_u32(shape.len()), code, a) };
        Tensor::from_handle(handle)
    }

    /// Takes ownership of a raw handle returned by a [`sys`] call: dropping the result
    /// frees it. A handle that is not live traps the program at its first use.
    pub fn from_handle(handle: u32) -> Tensor {
        Tensor { handle }
    }

    /// The raw handle, still owned by `self`.
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// Gives up ownership of the handle without freeing it.
    pub fn into_handle(self) -> u32 {
        let handle = self.handle;
        std::mem::forget(self);
        handle
    }

    /// The tensor's dimensions.
    pub fn shape(&self) -> Vec<u32> {
        let mut dims = [0u32; SHAPE_CAP];
        // SAFETY: `dims` is writable for `SHAPE_CAP` values and the runtime writes at most
        // `cap` of them.
        let rank = unsafe { sys::chiron_shape(self.handle, dims.as_mut_ptr(), SHAPE_CAP as u32) };
        let rank = rank as usize;
        if rank <= SHAPE_CAP {
            return dims[..rank].to_vec();
        }
        let mut dims = vec![0u32; rank];
        // SAFETY: `dims` is writable for `rank` values, the `cap` passed.
        unsafe { sys::chiron_shape(self.handle, dims.as_mut_ptr(), len_u32(rank)) };
        dims
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape().iter().map(|&d| d as usize).product()
    }

    /// Copies the values out, row-major.
    pub fn to_vec(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.numel()];
        // SAFETY: `out` is writable for exactly its length, which the runtime checks
        // against the tensor's element count.
        unsafe { sys::chiron_read(self.handle, out.as_mut_ptr(), len_u32(out.len())) };
        out
    }

    /// The value of a one-element tensor (a loss, a mean).
    ///
    /// # Panics
    /// If the tensor does not have exactly one element.
    pub fn item(&self) -> f32 {
        match self.to_vec()[..] {
            [v] => v,
            ref other => panic!("item() of a tensor with {} elements", other.len()),
        }
    }

    /// 2-D convolution of `self` `[N, C, H, W]` with kernels `w` `[O, C, KH, KW]` and an
    /// optional bias `b` `[O]`; square `stride` and zero `padding`.
    pub fn conv2d(&self, w: &Tensor, b: Option<&Tensor>, stride: u32, padding: u32) -> Tensor {
        // SAFETY: handle-only call; the runtime validates every handle and shape.
        Tensor::from_handle(unsafe {
            sys::chiron_conv2d(self.handle, w.handle, opt(b), stride, padding)
        })
    }

    /// Max pooling of `self` `[N, C, H, W]` with a `kernel`×`kernel` window.
    pub fn max_pool2d(&self, kernel: u32, stride: u32) -> Tensor {
        // SAFETY: handle-only call; the runtime validates its arguments.
        Tensor::from_handle(unsafe { sys::chiron_max_pool2d(self.handle, kernel, stride) })
    }

    /// 2-D convolution with PyTorch's full `Conv2d` geometry: `self` `[N, C, H, W]`, kernels
    /// `w` `[O, C / groups, KH, KW]`, optional bias `b` `[O]`; `stride`, `padding` (zeros on
    /// each side) and `dilation` (spacing between kernel taps) as `[height, width]`. `groups`
    /// must divide `C` and `O`; `groups = C` is a depthwise convolution.
    pub fn conv2d_ex(
        &self,
        w: &Tensor,
        b: Option<&Tensor>,
        stride: [u32; 2],
        padding: [u32; 2],
        dilation: [u32; 2],
        groups: u32,
    ) -> Tensor {
        // SAFETY: handle-only call; the runtime validates every handle and argument.
        Tensor::from_handle(unsafe {
            sys::chiron_conv2d_ex(
                self.handle,
                w.handle,
                opt(b),
                stride[0],
                stride[1],
                padding[0],
                padding[1],
                dilation[0],
                dilation[1],
                groups,
            )
        })
    }

    /// 2-D pooling of `self` `[N, C, H, W]`: a `kernel` window (`[height, width]`) moved by
    /// `stride`, with `padding` on each side (at most half the window). Max pooling pads with
    /// `-inf`; average pooling counts padding as zeros.
    pub fn pool2d(
        &self,
        kind: Pool,
        kernel: [u32; 2],
        stride: [u32; 2],
        padding: [u32; 2],
    ) -> Tensor {
        // SAFETY: handle-only call; the runtime validates its arguments.
        Tensor::from_handle(unsafe {
            sys::chiron_pool2d(
                kind.abi(),
                self.handle,
                kernel[0],
                kernel[1],
                stride[0],
                stride[1],
                padding[0],
                padding[1],
            )
        })
    }

    /// Average pooling of `self` `[N, C, H, W]` with a `kernel`×`kernel` window and no
    /// padding.
    pub fn avg_pool2d(&self, kernel: u32, stride: u32) -> Tensor {
        self.pool2d(Pool::Avg, [kernel; 2], [stride; 2], [0; 2])
    }

    /// Adaptive average pooling of `self` `[N, C, H, W]` to `[N, C, out_h, out_w]`
    /// (PyTorch's `AdaptiveAvgPool2d` windows).
    pub fn adaptive_avg_pool2d(&self, out_h: u32, out_w: u32) -> Tensor {
        // SAFETY: handle-only call; the runtime validates its arguments.
        Tensor::from_handle(unsafe { sys::chiron_adaptive_avg_pool2d(self.handle, out_h, out_w) })
    }

    /// The mean of each channel of `self` `[N, C, H, W]`, as `[N, C, 1, 1]`.
    pub fn global_avg_pool2d(&self) -> Tensor {
        self.adaptive_avg_pool2d(1, 1)
    }

    /// `self · w + b` with `self` `[N, I]`, `w` `[I, O]` (note: input-major, the transpose
    /// of PyTorch's `nn.Linear.weight`) and optional `b` `[O]`.
    pub fn linear(&self, w: &Tensor, b: Option<&Tensor>) -> Tensor {
        // SAFETY: handle-only call; the runtime validates every handle and shape.
        Tensor::from_handle(unsafe { sys::chiron_linear(self.handle, w.handle, opt(b)) })
    }

    fn unary(&self, op: u32) -> Tensor {
        // SAFETY: handle-only call; the runtime validates the handle.
        Tensor::from_handle(unsafe { sys::chiron_unary(op, self.handle) })
    }

    fn binary(&self, op: u32, other: &Tensor) -> Tensor {
        // SAFETY: handle-only call; the runtime validates both handles and their shapes.
        Tensor::from_handle(unsafe { sys::chiron_binary(op, self.handle, other.handle) })
    }

    /// `max(x, 0)`, element-wise.
    pub fn relu(&self) -> Tensor {
        self.unary(sys::UNARY_RELU)
    }

    /// Hyperbolic tangent, element-wise.
    pub fn tanh(&self) -> Tensor {
        self.unary(sys::UNARY_TANH)
    }

    /// Logistic sigmoid, element-wise.
    pub fn sigmoid(&self) -> Tensor {
        self.unary(sys::UNARY_SIGMOID)
    }

    /// Square root, element-wise.
    pub fn sqrt(&self) -> Tensor {
        self.unary(sys::UNARY_SQRT)
    }

    /// Softmax over the last dimension.
    pub fn softmax(&self) -> Tensor {
        self.unary(sys::UNARY_SOFTMAX)
    }

    /// `e^x`, element-wise.
    pub fn exp(&self) -> Tensor {
        self.unary(sys::UNARY_EXP)
    }

    /// Natural logarithm, element-wise (`NaN` below zero, `-inf` at zero).
    pub fn log(&self) -> Tensor {
        self.unary(sys::UNARY_LOG)
    }

    /// `|x|`, element-wise (gradient 0 at 0).
    pub fn abs(&self) -> Tensor {
        self.unary(sys::UNARY_ABS)
    }

    /// Leaky ReLU, element-wise: `x` above zero, `0.01 x` below (PyTorch's default slope).
    pub fn leaky_relu(&self) -> Tensor {
        self.unary(sys::UNARY_LEAKY_RELU)
    }

    /// GELU, element-wise: `x Φ(x)`, exact (PyTorch's default form).
    pub fn gelu(&self) -> Tensor {
        self.unary(sys::UNARY_GELU)
    }

    /// SiLU (swish), element-wise: `x σ(x)`.
    pub fn silu(&self) -> Tensor {
        self.unary(sys::UNARY_SILU)
    }

    /// `self + other`, element-wise; shapes broadcast as in NumPy (aligned at the last
    /// axis, each pair of dimensions equal or one of them 1).
    pub fn add(&self, other: &Tensor) -> Tensor {
        self.binary(sys::BINARY_ADD, other)
    }

    /// `self - other`, element-wise; shapes broadcast as in NumPy (aligned at the last
    /// axis, each pair of dimensions equal or one of them 1).
    pub fn sub(&self, other: &Tensor) -> Tensor {
        self.binary(sys::BINARY_SUB, other)
    }

    /// `self * other`, element-wise; shapes broadcast as in NumPy (aligned at the last
    /// axis, each pair of dimensions equal or one of them 1).
    pub fn mul(&self, other: &Tensor) -> Tensor {
        self.binary(sys::BINARY_MUL, other)
    }

    /// `self / other`, element-wise; shapes broadcast as in NumPy (aligned at the last
    /// axis, each pair of dimensions equal or one of them 1).
    pub fn div(&self, other: &Tensor) -> Tensor {
        self.binary(sys::BINARY_DIV, other)
    }

    /// A `[1]` constant holding `value`, which broadcasts against any tensor.
    pub fn scalar(value: f32) -> Tensor {
        Tensor::new(&[value], &[1])
    }

    /// `self ^ exponent`, element-wise, shapes broadcast (`NaN` for a negative base and a
    /// non-integer exponent, as `powf`).
    pub fn pow(&self, exponent: &Tensor) -> Tensor {
        self.binary(sys::BINARY_POW, exponent)
    }

    /// `self ^ e`, element-wise.
    pub fn powf(&self, e: f32) -> Tensor {
        self.pow(&Tensor::scalar(e))
    }

    /// `max(self, other)`, element-wise, shapes broadcast (the gradient goes to `self` on
    /// ties).
    pub fn maximum(&self, other: &Tensor) -> Tensor {
        self.binary(sys::BINARY_MAXIMUM, other)
    }

    /// `min(self, other)`, element-wise, shapes broadcast (the gradient goes to `self` on
    /// ties).
    pub fn minimum(&self, other: &Tensor) -> Tensor {
        self.binary(sys::BINARY_MINIMUM, other)
    }

    /// `min(max(self, min), max)`, element-wise; the gradient passes where the value is
    /// inside `[min, max]`.
    pub fn clamp(&self, min: f32, max: f32) -> Tensor {
        // SAFETY: handle-only call; the runtime validates the handle and bounds.
        Tensor::from_handle(unsafe { sys::chiron_clamp(self.handle, min, max) })
    }

    /// `self²`, element-wise.
    pub fn square(&self) -> Tensor {
        self.mul(self)
    }

    /// `scale · self + shift`, element-wise (normalisation, scaling by a constant).
    pub fn affine(&self, scale: f32, shift: f32) -> Tensor {
        // SAFETY: handle-only call; the runtime validates the handle and coefficients.
        Tensor::from_handle(unsafe { sys::chiron_affine(self.handle, scale, shift) })
    }

    /// The same values with another shape of the same element count.
    pub fn reshape(&self, shape: &[u32]) -> Tensor {
        // SAFETY: `shape` is a live buffer of `shape.len()` dimensions, only read during
        // the call.
        Tensor::from_handle(unsafe {
            sys::chiron_reshape(self.handle, shape.as_ptr(), len_u32(shape.len()))
        })
    }

    /// `[N, ...]` reshaped to `[N, rest]`.
    pub fn flatten(&self) -> Tensor {
        let shape = self.shape();
        let rows = shape.first().copied().unwrap_or(1);
        let rest = shape.iter().skip(1).product::<u32>();
        self.reshape(&[rows, rest])
    }

    /// Mean softmax cross-entropy of logits `self` `[N, C]` against class indices `labels`
    /// `[N]`; a `[1]` tensor to pass to [`Optimizer::step`](crate::Optimizer::step).
    pub fn cross_entropy(&self, labels: &Tensor) -> Tensor {
        // SAFETY: handle-only call; the runtime validates both handles and their shapes.
        Tensor::from_handle(unsafe { sys::chiron_cross_entropy(self.handle, labels.handle) })
    }

    /// Mean of all elements; a `[1]` tensor.
    pub fn mean(&self) -> Tensor {
        // SAFETY: handle-only call; the runtime validates the handle.
        Tensor::from_handle(unsafe { sys::chiron_mean(self.handle) })
    }

    /// Mean softmax cross-entropy with label smoothing `smoothing` in `[0, 1]` (PyTorch's
    /// `label_smoothing`: the target puts `1 - smoothing + smoothing / C` on the label and
    /// `smoothing / C` on every other class); a `[1]` tensor.
    pub fn cross_entropy_smoothed(&self, labels: &Tensor, smoothing: f32) -> Tensor {
        // SAFETY: handle-only call; the runtime validates both handles and the smoothing.
        Tensor::from_handle(unsafe {
            sys::chiron_cross_entropy_smoothed(self.handle, labels.handle, smoothing)
        })
    }

    /// Mean binary cross-entropy of logits `self` against `targets` in `[0, 1]` of the same
    /// shape, computed from the logits without overflow (PyTorch's `BCEWithLogitsLoss`); a
    /// `[1]` tensor.
    pub fn bce_with_logits(&self, targets: &Tensor) -> Tensor {
        // SAFETY: handle-only call; the runtime validates both handles and their shapes.
        Tensor::from_handle(unsafe { sys::chiron_bce_with_logits(self.handle, targets.handle) })
    }

    /// Mean squared error between `self` and `target` (shapes broadcast); a `[1]` tensor.
    pub fn mse(&self, target: &Tensor) -> Tensor {
        self.sub(target).square().mean()
    }

    fn reduce(&self, op: u32, axes: &[u32], keepdim: bool) -> Tensor {
        // SAFETY: `axes` is a live buffer of `axes.len()` values, only read during the call.
        Tensor::from_handle(unsafe {
            sys::chiron_reduce(
                op,
                self.handle,
                axes.as_ptr(),
                len_u32(axes.len()),
                u32::from(keepdim),
            )
        })
    }

    /// Sum of all elements; a `[1]` tensor.
    pub fn sum(&self) -> Tensor {
        let axes: Vec<u32> = (0..len_u32(self.shape().len())).collect();
        self.reduce(sys::REDUCE_SUM, &axes, false)
    }

    /// Sums over `axes` (distinct, each below the rank). With `keepdim` each reduced axis
    /// stays as a 1; without, it is removed (reducing every axis gives `[1]`).
    pub fn sum_dims(&self, axes: &[u32], keepdim: bool) -> Tensor {
        self.reduce(sys::REDUCE_SUM, axes, keepdim)
    }

    /// Means over `axes`, shaped as [`Tensor::sum_dims`].
    pub fn mean_dims(&self, axes: &[u32], keepdim: bool) -> Tensor {
        self.reduce(sys::REDUCE_MEAN, axes, keepdim)
    }

    /// Maxima over `axes`, shaped as [`Tensor::sum_dims`] (the gradient goes to the first
    /// maximum).
    pub fn max_dims(&self, axes: &[u32], keepdim: bool) -> Tensor {
        self.reduce(sys::REDUCE_MAX, axes, keepdim)
    }

    /// Minima over `axes`, shaped as [`Tensor::sum_dims`].
    pub fn min_dims(&self, axes: &[u32], keepdim: bool) -> Tensor {
        self.reduce(sys::REDUCE_MIN, axes, keepdim)
    }

    /// Biased variances over `axes` (`mean((x - mean(x))²)`, PyTorch's
    /// `var(correction=0)`), shaped as [`Tensor::sum_dims`].
    pub fn var_dims(&self, axes: &[u32], keepdim: bool) -> Tensor {
        self.reduce(sys::REDUCE_VAR, axes, keepdim)
    }

    /// Index of the largest value along `axis` (the first on ties), as `f32`; not
    /// differentiable. Shaped as [`Tensor::sum_dims`] over that one axis.
    pub fn argmax(&self, axis: u32, keepdim: bool) -> Tensor {
        // SAFETY: handle-only call; the runtime validates its arguments.
        Tensor::from_handle(unsafe { sys::chiron_argmax(self.handle, axis, u32::from(keepdim)) })
    }

    /// The axes reordered: output axis `i` is input axis `perm[i]` (a permutation of
    /// `0..rank`).
    pub fn permute(&self, perm: &[u32]) -> Tensor {
        // SAFETY: `perm` is a live buffer of `perm.len()` values, only read during the call.
        Tensor::from_handle(unsafe {
            sys::chiron_permute(self.handle, perm.as_ptr(), len_u32(perm.len()))
        })
    }

    /// Axes `a` and `b` swapped.
    ///
    /// # Panics
    /// If either is not below the rank.
    pub fn transpose(&self, a: u32, b: u32) -> Tensor {
        let rank = len_u32(self.shape().len());
        assert!(
            a < rank && b < rank,
            "transpose({a}, {b}) of a rank-{rank} tensor"
        );
        let mut perm: Vec<u32> = (0..rank).collect();
        perm.swap(a as usize, b as usize);
        self.permute(&perm)
    }

    /// `tensors` (at least one, of the same rank) joined along `axis`; every other
    /// dimension must agree.
    pub fn concat(tensors: &[&Tensor], axis: u32) -> Tensor {
        let handles = handles(tensors);
        // SAFETY: `handles` is a live buffer of `handles.len()` values, only read during the
        // call.
        Tensor::from_handle(unsafe {
            sys::chiron_concat(handles.as_ptr(), len_u32(handles.len()), axis)
        })
    }

    /// `len` entries of `axis` from `start`.
    pub fn narrow(&self, axis: u32, start: u32, len: u32) -> Tensor {
        // SAFETY: handle-only call; the runtime validates its arguments.
        Tensor::from_handle(unsafe { sys::chiron_narrow(self.handle, axis, start, len) })
    }

    /// The entries of `axis` at `indices`, a rank-1 tensor of integer indices (as `f32`), in
    /// their order, repeats allowed: an embedding lookup is `table.index_select(0, &ids)`.
    /// The gradient adds back into the selected entries.
    pub fn index_select(&self, axis: u32, indices: &Tensor) -> Tensor {
        // SAFETY: handle-only call; the runtime validates both handles and the indices.
        Tensor::from_handle(unsafe { sys::chiron_index_select(self.handle, axis, indices.handle) })
    }

    /// Matrix product over the last two axes, `[.., n, k] · [.., k, m]`, leading (batch)
    /// axes broadcast.
    pub fn matmul(&self, other: &Tensor) -> Tensor {
        // SAFETY: handle-only call; the runtime validates both handles and their shapes.
        Tensor::from_handle(unsafe { sys::chiron_matmul(self.handle, other.handle) })
    }

    /// `(self - mean) / sqrt(var + eps)` with the mean and biased variance over `axes`
    /// (batch norm: `[0, 2, 3]` on images; layer norm: the last axis). Returns the
    /// normalised tensor (differentiable), then the mean and the variance (axes kept as 1s,
    /// outside the gradient graph: for running statistics).
    pub fn normalize(&self, axes: &[u32], eps: f32) -> (Tensor, Tensor, Tensor) {
        let mut out = [0u32; 3];
        // SAFETY: `axes` is a live buffer of `axes.len()` values, only read during the call;
        // `out` is writable for the three handles the runtime writes.
        unsafe {
            sys::chiron_normalize(
                self.handle,
                axes.as_ptr(),
                len_u32(axes.len()),
                eps,
                out.as_mut_ptr(),
            )
        };
        let [output, mean, var] = out.map(Tensor::from_handle);
        (output, mean, var)
    }

    /// Inverted dropout: each value zeroed with probability `p` (in `[0, 1)`) and the rest
    /// scaled by `1 / (1 - p)`, the mask drawn from the runtime's seeded stream. Apply it in
    /// training only; it does not look at [`no_grad`](crate::no_grad).
    pub fn dropout(&self, p: f32) -> Tensor {
        // SAFETY: handle-only call; the runtime validates the handle and probability.
        Tensor::from_handle(unsafe { sys::chiron_dropout(self.handle, p) })
    }

    /// How many rows of logits `self` `[N, C]` have their maximum at the class in `labels`
    /// `[N]` (for accuracy).
    pub fn count_correct(&self, labels: &Tensor) -> u32 {
        // SAFETY: handle-only call; the runtime validates both handles and their shapes.
        unsafe { sys::chiron_count_correct(self.handle, labels.handle) }
    }
}

/// The ABI encoding of an optional tensor argument.
fn opt(t: Option<&Tensor>) -> u32 {
    t.map_or(sys::NONE, |t| t.handle)
}

impl Drop for Tensor {
    fn drop(&mut self) {
        // SAFETY: `self` owns this live handle and nothing uses it after the drop.
        unsafe { sys::chiron_free(self.handle) }
    }
}

impl fmt::Debug for Tensor {
    /// Shows the handle only: reading the shape would be a host call, and the values are
    /// never to be printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tensor")
            .field("handle", &self.handle)
            .finish()
    }
}

macro_rules! binary_operator {
    ($trait:ident, $method:ident) => {
        impl std::ops::$trait<&Tensor> for &Tensor {
            type Output = Tensor;

            fn $method(self, rhs: &Tensor) -> Tensor {
                Tensor::$method(self, rhs)
            }
        }
    };
}

binary_operator!(Add, add);
binary_operator!(Sub, sub);
binary_operator!(Mul, mul);
binary_operator!(Div, div);
