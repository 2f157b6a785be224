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

use crate::{Backend, Binary, EngineError, Shape, Unary, check};

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
        stride: usize,
        padding: usize,
    ) -> Result<TchTensor, EngineError> {
        const OP: &str = "conv2d";
        check::conv2d(
            x.shape.dims(),
            w.shape.dims(),
            b.map(|b| b.shape.dims()),
            stride,
            padding,
        )?;
        let (s, p) = (int(OP, stride)?, int(OP, padding)?);
        let value = contained(OP, || {
            x.value
                .f_conv2d(&w.value, b.map(|b| &b.value), [s; 2], [p; 2], [1; 2], 1)
        })?;
        let mut leaves = union(&x.leaves, &w.leaves);
        if let Some(b) = b {
            leaves = union(&leaves, &b.leaves);
        }
        wrap(OP, value, leaves)
    }

    fn max_pool2d(
        &self,
        x: &TchTensor,
        kernel: usize,
        stride: usize,
    ) -> Result<TchTensor, EngineError> {
        const OP: &str = "max_pool2d";
        check::max_pool2d(x.shape.dims(), kernel, stride)?;
        let (h, w) = match *x.shape.dims() {
            [_, _, h, w] => (h, w),
            _ => return Err(EngineError::Internal { op: OP }),
        };
        // A stride at least the input's size places one window per row or column, as any
        // larger stride does; clamping keeps huge strides representable for libtorch.
        let k = int(OP, kernel)?;
        let stride = [int(OP, stride.min(h))?, int(OP, stride.min(w))?];
        let value = contained(OP, || {
            x.value.f_max_pool2d([k; 2], stride, [0; 2], [1; 2], false)
        })?;
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
        check::same_shape(a.shape.dims(), b.shape.dims())?;
        let (x, y) = (&a.value, &b.value);
        let value = contained("binary", || match op {
            Binary::Add => x.f_add(y),
            Binary::Sub => x.f_sub(y),
            Binary::Mul => x.f_mul(y),
            Binary::Div => x.f_div(y),
        })?;
        wrap("binary", value, union(&a.leaves, &b.leaves))
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
    ) -> Result<TchTensor, EngineError> {
        const OP: &str = "cross_entropy";
        let [_, classes] = check::cross_entropy(logits.shape.dims(), labels.shape.dims())?;
        let target = check::class_indices(&self.read(labels)?, classes)?
            .into_iter()
            .map(|class| int(OP, class))
            .collect::<Result<Vec<_>, _>>()?;
        // Labels are values, not part of the graph: only the logits' parameters get gradients.
        let value = contained(OP, || {
            let target = Tensor::f_from_slice(&target)?;
            logits
                .value
                .f_log_softmax(1, Kind::Float)?
                .f_nll_loss(&target, None::<&Tensor>, Reduction::Mean, -100)?
                .f_reshape([1])
        })?;
        wrap(OP, value, Arc::clone(&logits.leaves))
    }

    fn mean(&self, x: &TchTensor) -> Result<TchTensor, EngineError> {
        let value = contained("mean", || x.value.f_mean(Kind::Float)?.f_reshape([1]))?;
        wrap("mean", value, Arc::clone(&x.leaves))
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
