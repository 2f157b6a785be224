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
            Init::KaimingUniform { fan_in } => {
                assert!(fan_in > 0, "fan_in must be positive");
                (sys::INIT_UNIFORM, (6.0 / fan_in as f32).sqrt())
            }
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

    /// `self + other`, element-wise (same shapes; no broadcasting).
    pub fn add(&self, other: &Tensor) -> Tensor {
        self.binary(sys::BINARY_ADD, other)
    }

    /// `self - other`, element-wise (same shapes; no broadcasting).
    pub fn sub(&self, other: &Tensor) -> Tensor {
        self.binary(sys::BINARY_SUB, other)
    }

    /// `self * other`, element-wise (same shapes; no broadcasting).
    pub fn mul(&self, other: &Tensor) -> Tensor {
        self.binary(sys::BINARY_MUL, other)
    }

    /// `self / other`, element-wise (same shapes; no broadcasting).
    pub fn div(&self, other: &Tensor) -> Tensor {
        self.binary(sys::BINARY_DIV, other)
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
