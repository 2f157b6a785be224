//! [`Backend`] on libtorch through `tch`, behind the `libtorch` feature.
//!
//! The semantics are those of [`crate::FlexBackend`]: the same argument checks (the shared
//! `check` module), then the operation through a fallible `tch` call (`f_*`), so a libtorch
//! exception becomes an [`EngineError`]; `catch_unwind` is a second line of defence, as in
//! `flex`.
//!
//! Gradients: every tensor carries the set of parameters it was computed from, so
//! [`Backend::backward`] asks libtorch's autograd engine for the gradients of exactly those
//! parameters (`torch.autograd.grad`, not `.backward()`): nothing is accumulated into the
//! parameters' `.grad` fields, so gradients cannot leak from one step into the next, and the
//! graph's saved buffers are freed by the pass (no `retain_graph`), as in `burn`, where a
//! second backward through the same graph is an error too.
//!
//! Threads: libtorch's intra-op pool is set once per process to the number of available
//! cores, as many as `flex`'s rayon pool uses (libtorch's own default is the number of
//! physical cores).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};

use tch::{Device, Kind, Reduction, Tensor};

use crate::{
    Backend, Binary, Conv2dOptions, EngineError, Normalized, Pool, Pool2dOptions, Reduce, Shape,
    Unary, check,
};

/// Numbers parameters so gradients can be matched to them (process-wide, never reused).
static NEXT_PARAMETER: AtomicU64 = AtomicU64::new(1);

/// Sets libtorch's intra-op thread count once per process.
static THREADS: Once = Once::new();

/// A parameter (a leaf of the autodiff graph) as seen by the tensors computed from it.
struct Leaf {
    id: u64,
    // `tch::Tensor` is `Send` but not `Sync`; the lock makes the shared leaf `Sync` so that
    // tensors stay `Send`. It is taken once per backward pass, never contended.
    value: Mutex<Tensor>,
}

/// The parameters a tensor depends on, sorted by id, without duplicates.
type Leaves = Arc<[Arc<Leaf>]>;

/// A libtorch tensor (`f32`, CPU) with the parameters it was computed from.
pub struct TchTensor {
    value: Tensor,
    shape: Shape,
    leaves: Leaves,
    /// `Some(id)` when this tensor is a parameter itself.
    parameter: Option<u64>,
}

impl Clone for TchTensor {
    fn clone(&self) -> Self {
        Self {
            value: self.value.shallow_clone(),
            shape: self.shape.clone(),
            leaves: Arc::clone(&self.leaves),
            parameter: self.parameter,
        }
    }
}

impl std::fmt::Debug for TchTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TchTensor")
            .field("shape", &self.shape.dims())
            .field("parameter", &self.parameter)
            .field("depends_on", &self.leaves.len())
            .finish()
    }
}

/// The gradients of one backward pass: one tensor per parameter that took part.
pub struct TchGradients {
    /// Sorted by parameter id.
    grads: Vec<(u64, Tensor)>,
}

impl std::fmt::Debug for TchGradients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TchGradients")
            .field("parameters", &self.grads.len())
            .finish()
    }
}

/// The optional engine: libtorch (CPU) with its autograd, through `tch`.
#[derive(Clone, Debug)]
pub struct TchBackend {
    _private: (),
}

impl Default for TchBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl TchBackend {
    /// An engine on the CPU, with libtorch's intra-op threads set to the available cores.
    pub fn new() -> Self {
        THREADS.call_once(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let cores = i32::try_from(cores).unwrap_or(i32::MAX);
            // If libtorch refuses, it keeps its own default; nothing to undo.
            let _ = catch_unwind(|| tch::set_num_threads(cores));
        });
        Self { _private: () }
    }

    /// A constant copied from `data`, checked as [`Backend::constant`] checks it.
    fn constant_from(&self, shape: &[usize], data: &[f32]) -> Result<TchTensor, EngineError> {
        let shape = check::values(shape, data.len())?;
        let value = from_values("tensor", shape.dims(), data)?;
        Ok(TchTensor {
            value,
            shape,
            leaves: no_leaves(),
            parameter: None,
        })
    }
}

/// Runs engine code, turning an unexpected panic inside `tch` into an error. Arguments are
/// validated before every call and libtorch's exceptions come back as `Err` from the `f_*`
/// functions, so this is a second line of defence, not the first.
fn contained<T>(
    op: &'static str,
    f: impl FnOnce() -> Result<T, tch::TchError>,
) -> Result<T, EngineError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        // libtorch's message may name values; the program only learns which operation failed.
        Ok(Err(_)) | Err(_) => Err(EngineError::Internal { op }),
    }
}

fn no_leaves() -> Leaves {
    Arc::from(Vec::new())
}

/// The parameters of `a` and `b` together.
fn union(a: &Leaves, b: &Leaves) -> Leaves {
    if b.is_empty() || Arc::ptr_eq(a, b) {
        return Arc::clone(a);
    }
    if a.is_empty() {
        return Arc::clone(b);
    }
    let mut merged: Vec<Arc<Leaf>> = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (x, y) = (&a[i], &b[j]);
        if x.id < y.id {
            merged.push(Arc::clone(x));
            i += 1;
        } else if y.id < x.id {
            merged.push(Arc::clone(y));
            j += 1;
        } else {
            merged.push(Arc::clone(x));
            i += 1;
            j += 1;
        }
    }
    merged.extend(a[i..].iter().cloned());
    merged.extend(b[j..].iter().cloned());
    Arc::from(merged)
}

/// Converts a dimension or window argument for libtorch.
fn int(op: &'static str, v: usize) -> Result<i64, EngineError> {
    i64::try_from(v).map_err(|_| EngineError::Argument {
        op,
        detail: format!("{v} out of range"),
    })
}

fn ints(op: &'static str, dims: &[usize]) -> Result<Vec<i64>, EngineError> {
    dims.iter().map(|&d| int(op, d)).collect()
}

/// Wraps an operation's result, reading its shape back from libtorch.
fn wrap(op: &'static str, value: Tensor, leaves: Leaves) -> Result<TchTensor, EngineError> {
    let dims = contained(op, || Ok(value.size()))?
        .into_iter()
        .map(|d| usize::try_from(d).map_err(|_| EngineError::Internal { op }))
        .collect::<Result<Vec<_>, _>>()?;
    let shape = Shape::new(&dims).map_err(|_| EngineError::Internal { op })?;
    Ok(TchTensor {
        value,
        shape,
        leaves,
        parameter: None,
    })
}

/// A fresh tensor holding `data` in `dims`, copied once.
///
/// `tch`'s `from_slice` fills a new tensor with zeros (a parallel region, slow when other
/// work holds a core) and then copies; this allocates without filling and copies once.
#[allow(unsafe_code)]
fn from_values(op: &'static str, dims: &[usize], data: &[f32]) -> Result<Tensor, EngineError> {
    let sizes = ints(op, dims)?;
    contained(op, || {
        let t = Tensor::f_empty(&sizes, (Kind::Float, Device::Cpu))?;
        let fits = t.f_kind()? == Kind::Float
            && t.is_contiguous()
            && t.numel() == data.len()
            && !t.data_ptr().is_null();
        if !fits {
            return Err(tch::TchError::Shape(format!(
                "{op}: unexpected fresh tensor"
            )));
        }
        // SAFETY: `t` was just allocated by libtorch as a contiguous CPU tensor of
        // `data.len()` `f32` elements (checked above), so its data pointer is valid for that
        // many writes; no other handle to it exists yet, and `data` is a separate Rust slice.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), t.data_ptr().cast::<f32>(), data.len());
        }
        Ok(t)
    })
}

/// A tensor that fails every later operation: what the infallible trait methods return in
/// the (unexpected) case that libtorch refuses to detach a tensor.
fn broken(t: &TchTensor) -> TchTensor {
    TchTensor {
        value: Tensor::new(),
        shape: t.shape.clone(),
        leaves: no_leaves(),
        parameter: None,
    }
}

impl Backend for TchBackend {
    type Tensor = TchTensor;
    type Gradients = TchGradients;

    fn constant(&self, shape: &[usize], data: Vec<f32>) -> Result<TchTensor, EngineError> {
        self.constant_from(shape, &data)
    }

    fn shared_constant(
        &self,
        shape: &[usize],
        data: &Arc<Vec<f32>>,
    ) -> Result<TchTensor, EngineError> {
        // libtorch cannot borrow Rust memory safely: copy once, straight from the shared values.
        self.constant_from(shape, data)
    }

    fn parameter(&self, shape: &[usize], data: Vec<f32>) -> Result<TchTensor, EngineError> {
        let t = self.constant(shape, data)?;
        Ok(self.as_parameter(t))
    }

    fn shape(&self, t: &TchTensor) -> Shape {
        t.shape.clone()
    }

    fn read(&self, t: &TchTensor) -> Result<Vec<f32>, EngineError> {
        let n = t.shape.elements();
        let mut out = vec![0f32; n];
        contained("read", || t.value.f_copy_data(&mut out, n))?;
        Ok(out)
    }

    fn detach(&self, t: &TchTensor) -> TchTensor {
        match contained("detach", || t.value.f_detach()) {
            Ok(value) => TchTensor {
                value,
                shape: t.shape.clone(),
                leaves: no_leaves(),
                parameter: None,
            },
            Err(_) => broken(t),
        }
    }

    fn conv2d(
        &self,
        x: &TchTensor,
        w: &TchTensor,
        b: Option<&TchTensor>,
        options: &Conv2dOptions,
    ) -> Result<TchTensor, EngineError> {
        const OP: &str = "conv2d";
        check::conv2d(
            x.shape.dims(),
            w.shape.dims(),
            b.map(|b| b.shape.dims()),
            options,
        )?;
        let stride = ints(OP, &options.stride)?;
        let padding = ints(OP, &options.padding)?;
        let dilation = ints(OP, &options.dilation)?;
        let groups = int(OP, options.groups)?;
        let value = contained(OP, || {
            x.value.f_conv2d(
                &w.value,
                b.map(|b| &b.value),
                &stride,
                &padding,
                &dilation,
                groups,
            )
        })?;
        let mut leaves = union(&x.leaves, &w.leaves);
        if let Some(b) = b {
            leaves = union(&leaves, &b.leaves);
        }
        wrap(OP, value, leaves)
    }

    fn pool2d(
        &self,
        kind: Pool,
        x: &TchTensor,
        options: &Pool2dOptions,
    ) -> Result<TchTensor, EngineError> {
        const OP: &str = "pool2d";
        check::pool2d(x.shape.dims(), options)?;
        let kernel = ints(OP, &options.kernel)?;
        let stride = ints(OP, &options.stride)?;
        let padding = ints(OP, &options.padding)?;
        let value = contained(OP, || match kind {
            Pool::Max => x
                .value
                .f_max_pool2d(&kernel, &stride, &padding, [1; 2], false),
            // count_include_pad = true, no divisor override.
            Pool::Avg => x
                .value
                .f_avg_pool2d(&kernel, &stride, &padding, false, true, None::<i64>),
        })?;
        wrap(OP, value, Arc::clone(&x.leaves))
    }

    fn adaptive_avg_pool2d(
        &self,
        x: &TchTensor,
        out: [usize; 2],
    ) -> Result<TchTensor, EngineError> {
        const OP: &str = "adaptive_avg_pool2d";
        check::adaptive_avg_pool2d(x.shape.dims(), out)?;
        let out = ints(OP, &out)?;
        let value = contained(OP, || x.value.f_adaptive_avg_pool2d(&out))?;
        wrap(OP, value, Arc::clone(&x.leaves))
    }

    fn linear(
        &self,
        x: &TchTensor,
        w: &TchTensor,
        b: Option<&TchTensor>,
    ) -> Result<TchTensor, EngineError> {
        const OP: &str = "linear";
        check::linear(x.shape.dims(), w.shape.dims(), b.map(|b| b.shape.dims()))?;
        let value = contained(OP, || match b {
            Some(b) => b.value.f_addmm(&x.value, &w.value),
            None => x.value.f_mm(&w.value),
        })?;
        let mut leaves = union(&x.leaves, &w.leaves);
        if let Some(b) = b {
            leaves = union(&leaves, &b.leaves);
        }
        wrap(OP, value, leaves)
    }

    fn unary(&self, op: Unary, x: &TchTensor) -> Result<TchTensor, EngineError> {
        let t = &x.value;
        let value = contained("unary", || match op {
            Unary::Relu => t.f_relu(),
            Unary::Tanh => t.f_tanh(),
            Unary::Sigmoid => t.f_sigmoid(),
            Unary::Sqrt => t.f_sqrt(),
            Unary::Softmax => t.f_softmax(-1, Kind::Float),
            Unary::Exp => t.f_exp(),
            Unary::Log => t.f_log(),
            Unary::Abs => t.f_abs(),
            Unary::LeakyRelu => t.f_leaky_relu(),
            Unary::Gelu => t.f_gelu("none"),
            Unary::Silu => t.f_silu(),
        })?;
        wrap("unary", value, Arc::clone(&x.leaves))
    }

    fn binary(&self, op: Binary, a: &TchTensor, b: &TchTensor) -> Result<TchTensor, EngineError> {
        // libtorch broadcasts as NumPy does; the check bounds the result first.
        check::broadcast_dims(a.shape.dims(), b.shape.dims())?;
        let (x, y) = (&a.value, &b.value);
        let value = contained("binary", || match op {
            Binary::Add => x.f_add(y),
            Binary::Sub => x.f_sub(y),
            Binary::Mul => x.f_mul(y),
            Binary::Div => x.f_div(y),
            Binary::Pow => x.f_pow(y),
            // `torch.maximum` splits the gradient on ties; the engine gives it to `a` (and
            // keeps a NaN of either side), so choose with `where`.
            Binary::Maximum => {
                let take_a = x.f_ge_tensor(y)?.f_logical_or(&x.f_isnan()?)?;
                x.f_where_self(&take_a, y)
            }
            Binary::Minimum => {
                let take_a = x.f_le_tensor(y)?.f_logical_or(&x.f_isnan()?)?;
                x.f_where_self(&take_a, y)
            }
        })?;
        wrap("binary", value, union(&a.leaves, &b.leaves))
    }

    fn clamp(&self, x: &TchTensor, min: f32, max: f32) -> Result<TchTensor, EngineError> {
        check::clamp(min, max)?;
        let value = contained("clamp", || x.value.f_clamp(f64::from(min), f64::from(max)))?;
        wrap("clamp", value, Arc::clone(&x.leaves))
    }

    fn affine(&self, x: &TchTensor, scale: f32, shift: f32) -> Result<TchTensor, EngineError> {
        check::affine(scale, shift)?;
        let value = contained("affine", || {
            let scaled = x.value.f_mul_scalar(f64::from(scale))?;
            // The optimizers mostly scale; adding zero would only cost a pass over memory.
            if shift == 0.0 {
                Ok(scaled)
            } else {
                scaled.f_add_scalar(f64::from(shift))
            }
        })?;
        wrap("affine", value, Arc::clone(&x.leaves))
    }

    fn reshape(&self, x: &TchTensor, shape: &[usize]) -> Result<TchTensor, EngineError> {
        let target = check::reshape(x.shape.dims(), shape)?;
        let dims = ints("reshape", target.dims())?;
        let value = contained("reshape", || x.value.f_reshape(&dims))?;
        Ok(TchTensor {
            value,
            shape: target,
            leaves: Arc::clone(&x.leaves),
            parameter: None,
        })
    }

    fn cross_entropy(
        &self,
        logits: &TchTensor,
        labels: &TchTensor,
        smoothing: f32,
    ) -> Result<TchTensor, EngineError> {
        const OP: &str = "cross_entropy";
        let [_, classes] = check::cross_entropy(logits.shape.dims(), labels.shape.dims())?;
        check::smoothing(smoothing)?;
        let target = check::class_indices(&self.read(labels)?, classes)?
            .into_iter()
            .map(|class| int(OP, class))
            .collect::<Result<Vec<_>, _>>()?;
        // Labels are values, not part of the graph: only the logits' parameters get gradients.
        let value = contained(OP, || {
            let target = Tensor::f_from_slice(&target)?;
            logits
                .value
                .f_cross_entropy_loss(
                    &target,
                    None::<&Tensor>,
                    Reduction::Mean,
                    -100,
                    f64::from(smoothing),
                )?
                .f_reshape([1])
        })?;
        wrap(OP, value, Arc::clone(&logits.leaves))
    }

    fn bce_with_logits(
        &self,
        logits: &TchTensor,
        targets: &TchTensor,
    ) -> Result<TchTensor, EngineError> {
        const OP: &str = "bce_with_logits";
        check::bce_with_logits(logits.shape.dims(), targets.shape.dims())?;
        let value = contained(OP, || {
            logits
                .value
                .f_binary_cross_entropy_with_logits(
                    &targets.value,
                    None::<&Tensor>,
                    None::<&Tensor>,
                    Reduction::Mean,
                )?
                .f_reshape([1])
        })?;
        wrap(OP, value, union(&logits.leaves, &targets.leaves))
    }

    fn mean(&self, x: &TchTensor) -> Result<TchTensor, EngineError> {
        let value = contained("mean", || x.value.f_mean(Kind::Float)?.f_reshape([1]))?;
        wrap("mean", value, Arc::clone(&x.leaves))
    }

    fn reduce(
        &self,
        op: Reduce,
        x: &TchTensor,
        axes: &[usize],
        keepdim: bool,
    ) -> Result<TchTensor, EngineError> {
        const OP: &str = "reduce";
        let dims = x.shape.dims();
        let out = check::reduce(OP, dims, axes, keepdim)?;
        let out_sizes = ints(OP, &out)?;
        let dim = ints(OP, axes)?;
        // `amax`/`amin` split the gradient between ties; the engine gives it to the first
        // extremum in row-major order: the reduced axes moved last and flattened, then
        // `max(dim)` (whose index is the first extremum).
        let kept: Vec<usize> = (0..dims.len()).filter(|a| !axes.contains(a)).collect();
        let mut order = ints(OP, &kept)?;
        let mut sorted = dim.clone();
        sorted.sort_unstable();
        order.extend(&sorted);
        let rows = int(OP, kept.iter().map(|&a| dims[a]).product())?;
        let value = contained(OP, || {
            let t = &x.value;
            let reduced = match op {
                Reduce::Sum => t.f_sum_dim_intlist(&dim, keepdim, Kind::Float)?,
                Reduce::Mean => t.f_mean_dim(&dim, keepdim, Kind::Float)?,
                Reduce::Var => t.f_var_correction(&dim, 0i64, keepdim)?,
                Reduce::Max => {
                    t.f_permute(&order)?
                        .f_reshape([rows, -1])?
                        .f_max_dim(1, false)?
                        .0
                }
                Reduce::Min => {
                    t.f_permute(&order)?
                        .f_reshape([rows, -1])?
                        .f_min_dim(1, false)?
                        .0
                }
            };
            reduced.f_reshape(&out_sizes)
        })?;
        wrap(OP, value, Arc::clone(&x.leaves))
    }

    fn argmax(&self, x: &TchTensor, axis: usize, keepdim: bool) -> Result<TchTensor, EngineError> {
        const OP: &str = "argmax";
        let out = check::reduce(OP, x.shape.dims(), &[axis], keepdim)?;
        let out = ints(OP, &out)?;
        let axis = int(OP, axis)?;
        let value = contained(OP, || {
            x.value
                .f_detach()?
                .f_argmax(axis, keepdim)?
                .f_to_kind(Kind::Float)?
                .f_reshape(&out)
        })?;
        wrap(OP, value, no_leaves())
    }

    fn permute(&self, x: &TchTensor, perm: &[usize]) -> Result<TchTensor, EngineError> {
        const OP: &str = "permute";
        check::permute(x.shape.dims(), perm)?;
        let perm = ints(OP, perm)?;
        let value = contained(OP, || x.value.f_permute(&perm))?;
        wrap(OP, value, Arc::clone(&x.leaves))
    }

    fn concat(&self, xs: &[&TchTensor], axis: usize) -> Result<TchTensor, EngineError> {
        const OP: &str = "concat";
        let dims: Vec<&[usize]> = xs.iter().map(|x| x.shape.dims()).collect();
        check::concat(&dims, axis)?;
        let axis = int(OP, axis)?;
        let values: Vec<&Tensor> = xs.iter().map(|x| &x.value).collect();
        let value = contained(OP, || Tensor::f_cat(&values, axis))?;
        let leaves = xs
            .iter()
            .fold(no_leaves(), |leaves, x| union(&leaves, &x.leaves));
        wrap(OP, value, leaves)
    }

    fn narrow(
        &self,
        x: &TchTensor,
        axis: usize,
        start: usize,
        len: usize,
    ) -> Result<TchTensor, EngineError> {
        const OP: &str = "narrow";
        check::narrow(x.shape.dims(), axis, start, len)?;
        let (axis, start, len) = (int(OP, axis)?, int(OP, start)?, int(OP, len)?);
        let value = contained(OP, || x.value.f_narrow(axis, start, len))?;
        wrap(OP, value, Arc::clone(&x.leaves))
    }

    fn index_select(
        &self,
        x: &TchTensor,
        axis: usize,
        indices: &TchTensor,
    ) -> Result<TchTensor, EngineError> {
        const OP: &str = "index_select";
        let dims = x.shape.dims();
        check::index_select(dims, axis, indices.shape.dims())?;
        let picked = check::indices(OP, &self.read(indices)?, dims[axis])?;
        let picked = ints(OP, &picked)?;
        let axis = int(OP, axis)?;
        // Indices are values, not part of the graph.
        let value = contained(OP, || {
            let picked = Tensor::f_from_slice(&picked)?;
            x.value.f_index_select(axis, &picked)
        })?;
        wrap(OP, value, Arc::clone(&x.leaves))
    }

    fn matmul(&self, a: &TchTensor, b: &TchTensor) -> Result<TchTensor, EngineError> {
        const OP: &str = "matmul";
        // Both of rank 2 or more: `torch.matmul` is then the batched product with broadcast
        // batch axes.
        check::matmul(a.shape.dims(), b.shape.dims())?;
        let value = contained(OP, || a.value.f_matmul(&b.value))?;
        wrap(OP, value, union(&a.leaves, &b.leaves))
    }

    fn normalize(
        &self,
        x: &TchTensor,
        axes: &[usize],
        eps: f32,
    ) -> Result<Normalized<TchTensor>, EngineError> {
        const OP: &str = "normalize";
        check::normalize(x.shape.dims(), axes, eps)?;
        let dim = ints(OP, axes)?;
        let (output, mean, var) = contained(OP, || {
            let (var, mean) = x.value.f_var_mean_correction(&dim, 0i64, true)?;
            let output = x
                .value
                .f_sub(&mean)?
                .f_div(&var.f_add_scalar(f64::from(eps))?.f_sqrt()?)?;
            Ok((output, mean.f_detach()?, var.f_detach()?))
        })?;
        Ok(Normalized {
            output: wrap(OP, output, Arc::clone(&x.leaves))?,
            mean: wrap(OP, mean, no_leaves())?,
            var: wrap(OP, var, no_leaves())?,
        })
    }

    fn dropout(&self, x: &TchTensor, p: f32, seed: u64) -> Result<TchTensor, EngineError> {
        const OP: &str = "dropout";
        check::dropout(p)?;
        let mask = crate::dropout_mask(x.shape.elements(), p, seed, &crate::Interrupt::new())?;
        let mask = from_values(OP, x.shape.dims(), &mask)?;
        let value = contained(OP, || x.value.f_mul(&mask))?;
        wrap(OP, value, Arc::clone(&x.leaves))
    }

    fn backward(&self, loss: &TchTensor) -> Result<TchGradients, EngineError> {
        const OP: &str = "backward";
        if loss.shape.dims() != [1] || loss.leaves.is_empty() || !loss.value.requires_grad() {
            return Err(EngineError::NotDifferentiable);
        }
        let inputs = loss
            .leaves
            .iter()
            .map(|leaf| {
                leaf.value
                    .lock()
                    .map(|t| t.shallow_clone())
                    .map_err(|_| EngineError::Internal { op: OP })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // `torch.autograd.grad` for exactly these parameters: nothing accumulates in their
        // `.grad` fields, and without `retain_graph` the pass frees the graph's buffers.
        let grads = contained(OP, || {
            Tensor::f_run_backward(&[&loss.value], &inputs, false, false)
        })?;
        Ok(TchGradients {
            grads: loss
                .leaves
                .iter()
                .zip(grads)
                .filter(|(_, g)| g.defined())
                .map(|(leaf, g)| (leaf.id, g))
                .collect(),
        })
    }

    fn grad(&self, grads: &TchGradients, param: &TchTensor) -> Option<TchTensor> {
        let id = param.parameter?;
        let at = grads.grads.binary_search_by_key(&id, |(k, _)| *k).ok()?;
        let g = &grads.grads.get(at)?.1;
        Some(TchTensor {
            value: g.shallow_clone(),
            shape: param.shape.clone(),
            leaves: no_leaves(),
            parameter: None,
        })
    }

    fn as_parameter(&self, t: TchTensor) -> TchTensor {
        // Parameters re-enter autodiff as fresh leaves with a fresh identity, cut from
        // whatever graph computed their values.
        let value = contained("as_parameter", || {
            let mut leaf = t.value.f_detach()?;
            leaf.f_requires_grad_(true)
        });
        let Ok(value) = value else {
            return broken(&t);
        };
        let id = NEXT_PARAMETER.fetch_add(1, Ordering::Relaxed);
        let leaf = Arc::new(Leaf {
            id,
            value: Mutex::new(value.shallow_clone()),
        });
        TchTensor {
            value,
            shape: t.shape,
            leaves: Arc::from(vec![leaf]),
            parameter: Some(id),
        }
    }
}
