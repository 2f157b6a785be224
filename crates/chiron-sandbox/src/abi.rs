//! The host ABI as wasmtime imports: module `chiron`, one function per call in the SDK's
//! `sys.rs`, nothing else. Each function copies its arguments out of the program's memory
//! with bounds checks and hands them to [`Runtime`], whose errors trap the program.

use chiron_engine::{Conv2dOptions, DefaultBackend, OptimizerKind, Pool2dOptions};
use wasmtime::{Caller, Extern, Linker, Memory, ResourceLimiter};

use crate::error::{Limit, SandboxError};
use crate::runtime::{MAX_AXES, MAX_CONCAT, Runtime};

/// Everything a store holds for one run.
pub(crate) struct RunState {
    pub(crate) runtime: Runtime<DefaultBackend>,
    pub(crate) limiter: MemoryLimiter,
}

/// Caps linear memory and tables, recording which limit stopped the program.
pub(crate) struct MemoryLimiter {
    pub(crate) max_memory: usize,
    pub(crate) max_table_elements: usize,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            // Trap instead of returning -1: a program that cannot allocate would abort
            // anyway, and the owner should learn which limit it hit.
            return Err(SandboxError::Limit(Limit::Memory).into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_table_elements {
            return Err(SandboxError::Limit(Limit::Memory).into());
        }
        Ok(true)
    }
}

type Ctx<'a> = Caller<'a, RunState>;
type AbiResult<T> = wasmtime::Result<T>;

/// Largest rank a shape argument may have.
const MAX_SHAPE_RANK: u32 = 8;

fn memory(caller: &mut Ctx<'_>, call: &'static str) -> Result<Memory, SandboxError> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => Err(SandboxError::abi(call, "the program exports no memory")),
    }
}

fn read_bytes(
    caller: &mut Ctx<'_>,
    call: &'static str,
    ptr: u32,
    len: u64,
) -> Result<Vec<u8>, SandboxError> {
    let mem = memory(caller, call)?;
    let start = ptr as usize;
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| start.checked_add(l))
        .ok_or_else(|| SandboxError::abi(call, "pointer range overflows"))?;
    mem.data(&*caller)
        .get(start..end)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| SandboxError::abi(call, "pointer outside the program's memory"))
}

fn write_bytes(
    caller: &mut Ctx<'_>,
    call: &'static str,
    ptr: u32,
    bytes: &[u8],
) -> Result<(), SandboxError> {
    let mem = memory(caller, call)?;
    let start = ptr as usize;
    let end = start
        .checked_add(bytes.len())
        .ok_or_else(|| SandboxError::abi(call, "pointer range overflows"))?;
    mem.data_mut(&mut *caller)
        .get_mut(start..end)
        .ok_or_else(|| SandboxError::abi(call, "pointer outside the program's memory"))?
        .copy_from_slice(bytes);
    Ok(())
}

fn read_u32s(
    caller: &mut Ctx<'_>,
    call: &'static str,
    ptr: u32,
    count: u32,
) -> Result<Vec<u32>, SandboxError> {
    let raw = read_bytes(caller, call, ptr, u64::from(count) * 4)?;
    Ok(raw
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn read_shape(
    caller: &mut Ctx<'_>,
    call: &'static str,
    ptr: u32,
    rank: u32,
) -> Result<Vec<usize>, SandboxError> {
    if rank > MAX_SHAPE_RANK {
        return Err(SandboxError::abi(call, format!("rank {rank} is too large")));
    }
    Ok(read_u32s(caller, call, ptr, rank)?
        .into_iter()
        .map(|d| d as usize)
        .collect())
}

/// A list of at most [`MAX_AXES`] axes at `ptr`: the count is checked before anything is
/// read.
fn read_axes(
    caller: &mut Ctx<'_>,
    call: &'static str,
    ptr: u32,
    count: u32,
) -> Result<Vec<u32>, SandboxError> {
    if count as usize > MAX_AXES {
        return Err(SandboxError::abi(
            call,
            format!("{count} axes, at most {MAX_AXES}"),
        ));
    }
    read_u32s(caller, call, ptr, count)
}

/// Fails unless `len` bytes from `ptr` lie inside the program's memory, so that a call whose
/// result cannot be written back is refused before it runs.
fn check_writable(
    caller: &mut Ctx<'_>,
    call: &'static str,
    ptr: u32,
    len: usize,
) -> Result<(), SandboxError> {
    let mem = memory(caller, call)?;
    let end = (ptr as usize)
        .checked_add(len)
        .ok_or_else(|| SandboxError::abi(call, "pointer range overflows"))?;
    if end > mem.data_size(&*caller) {
        return Err(SandboxError::abi(
            call,
            "pointer outside the program's memory",
        ));
    }
    Ok(())
}

/// A `[height, width]` pair from the ABI's two `u32`s.
fn pair(h: u32, w: u32) -> [usize; 2] {
    [h as usize, w as usize]
}

/// An optimizer of `kind` over the `count` parameter handles at `params`.
fn new_optimizer(
    c: &mut Ctx<'_>,
    call: &'static str,
    params: u32,
    count: u32,
    kind: OptimizerKind,
) -> AbiResult<u32> {
    let params = read_u32s(c, call, params, count)?;
    Ok(rt(c).optimizer(params, kind)?)
}

fn rt<'a>(caller: &'a mut Ctx<'_>) -> &'a mut Runtime<DefaultBackend> {
    &mut caller.data_mut().runtime
}

/// Adds every ABI function to `linker`.
pub(crate) fn define(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    const M: &str = "chiron";
    // Dataset and job.
    linker.func_wrap(
        M,
        "chiron_dataset_kind",
        |mut c: Ctx<'_>| -> AbiResult<u32> { Ok(rt(&mut c).dataset_kind()?) },
    )?;
    linker.func_wrap(
        M,
        "chiron_dataset_count",
        |mut c: Ctx<'_>, split: u32| -> AbiResult<u32> { Ok(rt(&mut c).dataset_count(split)?) },
    )?;
    linker.func_wrap(
        M,
        "chiron_dataset_rank",
        |mut c: Ctx<'_>| -> AbiResult<u32> { Ok(rt(&mut c).dataset_rank()?) },
    )?;
    linker.func_wrap(
        M,
        "chiron_dataset_dim",
        |mut c: Ctx<'_>, axis: u32| -> AbiResult<u32> { Ok(rt(&mut c).dataset_dim(axis)?) },
    )?;
    linker.func_wrap(
        M,
        "chiron_dataset_classes",
        |mut c: Ctx<'_>| -> AbiResult<u32> { Ok(rt(&mut c).dataset_classes()?) },
    )?;
    linker.func_wrap(
        M,
        "chiron_budget_epochs",
        |mut c: Ctx<'_>| -> AbiResult<u32> { Ok(rt(&mut c).budget_epochs()?) },
    )?;
    linker.func_wrap(
        M,
        "chiron_batch_features",
        |mut c: Ctx<'_>, split: u32, ptr: u32, count: u32| -> AbiResult<u32> {
            let indices = read_u32s(&mut c, "batch_features", ptr, count)?;
            Ok(rt(&mut c).batch_features(split, &indices)?)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_batch_labels",
        |mut c: Ctx<'_>, split: u32, ptr: u32, count: u32| -> AbiResult<u32> {
            let indices = read_u32s(&mut c, "batch_labels", ptr, count)?;
            Ok(rt(&mut c).batch_labels(split, &indices)?)
        },
    )?;
    linker.func_wrap(M, "chiron_random_u64", |mut c: Ctx<'_>| -> u64 {
        rt(&mut c).random_u64()
    })?;

    // Tensors.
    linker.func_wrap(
        M,
        "chiron_tensor",
        |mut c: Ctx<'_>, data: u32, len: u32, shape: u32, rank: u32| -> AbiResult<u32> {
            const CALL: &str = "tensor";
            let shape = read_shape(&mut c, CALL, shape, rank)?;
            // The dimensions are the program's: their product may overflow.
            let elements = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
            if elements != Some(len as usize) {
                return Err(SandboxError::abi(CALL, "length does not match shape").into());
            }
            let raw = read_bytes(&mut c, CALL, data, u64::from(len) * 4)?;
            let values = raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            Ok(rt(&mut c).tensor_from(values, &shape)?)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_parameter",
        |mut c: Ctx<'_>, shape: u32, rank: u32, init: u32, a: f32| -> AbiResult<u32> {
            let shape = read_shape(&mut c, "parameter", shape, rank)?;
            Ok(rt(&mut c).parameter(&shape, init, a)?)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_shape",
        |mut c: Ctx<'_>, t: u32, out: u32, cap: u32| -> AbiResult<u32> {
            let dims = rt(&mut c).shape(t)?;
            let raw: Vec<u8> = dims
                .iter()
                .take(cap as usize)
                .flat_map(|&d| (d as u32).to_le_bytes())
                .collect();
            write_bytes(&mut c, "shape", out, &raw)?;
            Ok(dims.len() as u32)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_read",
        |mut c: Ctx<'_>, t: u32, out: u32, len: u32| -> AbiResult<()> {
            let values = rt(&mut c).read(t)?;
            if values.len() != len as usize {
                return Err(SandboxError::abi("read", "length does not match the tensor").into());
            }
            let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            Ok(write_bytes(&mut c, "read", out, &raw)?)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_free",
        |mut c: Ctx<'_>, t: u32| -> AbiResult<()> { Ok(rt(&mut c).free(t)?) },
    )?;
    linker.func_wrap(
        M,
        "chiron_conv2d",
        |mut c: Ctx<'_>, x: u32, w: u32, b: u32, stride: u32, padding: u32| -> AbiResult<u32> {
            Ok(rt(&mut c).conv2d(x, w, b, stride, padding)?)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_max_pool2d",
        |mut c: Ctx<'_>, x: u32, k: u32, s: u32| -> AbiResult<u32> {
            Ok(rt(&mut c).max_pool2d(x, k, s)?)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_conv2d_ex",
        |mut c: Ctx<'_>,
         x: u32,
         w: u32,
         b: u32,
         stride_h: u32,
         stride_w: u32,
         padding_h: u32,
         padding_w: u32,
         dilation_h: u32,
         dilation_w: u32,
         groups: u32|
         -> AbiResult<u32> {
            let options = Conv2dOptions {
                stride: pair(stride_h, stride_w),
                padding: pair(padding_h, padding_w),
                dilation: pair(dilation_h, dilation_w),
                groups: groups as usize,
            };
            Ok(rt(&mut c).conv2d_ex(x, w, b, &options)?)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_pool2d",
        |mut c: Ctx<'_>,
         kind: u32,
         x: u32,
         kernel_h: u32,
         kernel_w: u32,
         stride_h: u32,
         stride_w: u32,
         padding_h: u32,
         padding_w: u32|
         -> AbiResult<u32> {
            let options = Pool2dOptions {
                kernel: pair(kernel_h, kernel_w),
                stride: pair(stride_h, stride_w),
                padding: pair(padding_h, padding_w),
            };
            Ok(rt(&mut c).pool2d(kind, x, &options)?)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_adaptive_avg_pool2d",
        |mut c: Ctx<'_>, x: u32, out_h: u32, out_w: u32| -> AbiResult<u32> {
            Ok(rt(&mut c).adaptive_avg_pool2d(x, out_h, out_w)?)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_linear",
        |mut c: Ctx<'_>, x: u32, w: u32, b: u32| -> AbiResult<u32> {
            Ok(rt(&mut c).linear(x, w, b)?)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_unary",
        |mut c: Ctx<'_>, op: u32, x: u32| -> AbiResult<u32> { Ok(rt(&mut c).unary(op, x)?) },
    )?;
    linker.func_wrap(
        M,
        "chiron_binary",
        |mut c: Ctx<'_>, op: u32, a: u32, b: u32| -> AbiResult<u32> {
            Ok(rt(&mut c).binary(op, a, b)?)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_clamp",
        |mut c: Ctx<'_>, x: u32, min: f32, max: f32| -> AbiResult<u32> {
            Ok(rt(&mut c).clamp(x, min, max)?)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_affine",
        |mut c: Ctx<'_>, x: u32, scale: f32, shift: f32| -> AbiResult<u32> {
            Ok(rt(&mut c).affine(x, scale, shift)?)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_reshape",
        |mut c: Ctx<'_>, x: u32, shape: u32, rank: u32| -> AbiResult<u32> {
            let shape = read_shape(&mut c, "reshape", shape, rank)?;
            Ok(rt(&mut c).reshape(x, &shape)?)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_cross_entropy",
        |mut c: Ctx<'_>, logits: u32, labels: u32| -> AbiResult<u32> {
            Ok(rt(&mut c).cross_entropy(logits, labels)?)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_mean",
        |mut c: Ctx<'_>, x: u32| -> AbiResult<u32> { Ok(rt(&mut c).mean(x)?) },
    )?;
    linker.func_wrap(
        M,
        "chiron_reduce",
        |mut c: Ctx<'_>, op: u32, x: u32, axes: u32, count: u32, keepdim: u32| -> AbiResult<u32> {
            let axes = read_axes(&mut c, "reduce", axes, count)?;
            Ok(rt(&mut c).reduce(op, x, &axes, keepdim)?)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_argmax",
        |mut c: Ctx<'_>, x: u32, axis: u32, keepdim: u32| -> AbiResult<u32> {
            Ok(rt(&mut c).argmax(x, axis, keepdim)?)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_permute",
        |mut c: Ctx<'_>, x: u32, perm: u32, rank: u32| -> AbiResult<u32> {
            let perm = read_axes(&mut c, "permute", perm, rank)?;
            Ok(rt(&mut c).permute(x, &perm)?)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_concat",
        |mut c: Ctx<'_>, xs: u32, count: u32, axis: u32| -> AbiResult<u32> {
            const CALL: &str = "concat";
            if count == 0 || count as usize > MAX_CONCAT {
                return Err(SandboxError::abi(
                    CALL,
                    format!("{count} tensors outside 1..={MAX_CONCAT}"),
                )
                .into());
            }
            let xs = read_u32s(&mut c, CALL, xs, count)?;
            Ok(rt(&mut c).concat(&xs, axis)?)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_narrow",
        |mut c: Ctx<'_>, x: u32, axis: u32, start: u32, len: u32| -> AbiResult<u32> {
            Ok(rt(&mut c).narrow(x, axis, start, len)?)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_index_select",
        |mut c: Ctx<'_>, x: u32, axis: u32, indices: u32| -> AbiResult<u32> {
            Ok(rt(&mut c).index_select(x, axis, indices)?)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_matmul",
        |mut c: Ctx<'_>, a: u32, b: u32| -> AbiResult<u32> { Ok(rt(&mut c).matmul(a, b)?) },
    )?;
    linker.func_wrap(
        M,
        "chiron_normalize",
        |mut c: Ctx<'_>, x: u32, axes: u32, count: u32, eps: f32, out: u32| -> AbiResult<()> {
            const CALL: &str = "normalize";
            let axes = read_axes(&mut c, CALL, axes, count)?;
            check_writable(&mut c, CALL, out, 12)?;
            let handles = rt(&mut c).normalize(x, &axes, eps)?;
            let raw: Vec<u8> = handles.iter().flat_map(|h| h.to_le_bytes()).collect();
            Ok(write_bytes(&mut c, CALL, out, &raw)?)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_dropout",
        |mut c: Ctx<'_>, x: u32, p: f32| -> AbiResult<u32> { Ok(rt(&mut c).dropout(x, p)?) },
    )?;
    linker.func_wrap(
        M,
        "chiron_cross_entropy_smoothed",
        |mut c: Ctx<'_>, logits: u32, labels: u32, smoothing: f32| -> AbiResult<u32> {
            Ok(rt(&mut c).cross_entropy_smoothed(logits, labels, smoothing)?)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_bce_with_logits",
        |mut c: Ctx<'_>, logits: u32, targets: u32| -> AbiResult<u32> {
            Ok(rt(&mut c).bce_with_logits(logits, targets)?)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_set_grad_enabled",
        |mut c: Ctx<'_>, enabled: u32| -> AbiResult<u32> {
            Ok(rt(&mut c).set_grad_enabled(enabled)?)
        },
    )?;
    linker.func_wrap(M, "chiron_time_left_ms", |mut c: Ctx<'_>| -> u64 {
        rt(&mut c).time_left_ms()
    })?;
    linker.func_wrap(
        M,
        "chiron_count_correct",
        |mut c: Ctx<'_>, logits: u32, labels: u32| -> AbiResult<u32> {
            Ok(rt(&mut c).count_correct(logits, labels)?)
        },
    )?;

    // Optimisers.
    linker.func_wrap(
        M,
        "chiron_optimizer_sgd",
        |mut c: Ctx<'_>,
         params: u32,
         count: u32,
         lr: f32,
         momentum: f32,
         wd: f32|
         -> AbiResult<u32> {
            let kind = OptimizerKind::Sgd {
                lr,
                momentum,
                weight_decay: wd,
            };
            new_optimizer(&mut c, "optimizer_sgd", params, count, kind)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_optimizer_adam",
        |mut c: Ctx<'_>,
         params: u32,
         count: u32,
         lr: f32,
         beta1: f32,
         beta2: f32,
         eps: f32,
         wd: f32|
         -> AbiResult<u32> {
            let kind = OptimizerKind::Adam {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay: wd,
            };
            new_optimizer(&mut c, "optimizer_adam", params, count, kind)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_optimizer_nesterov",
        |mut c: Ctx<'_>,
         params: u32,
         count: u32,
         lr: f32,
         momentum: f32,
         wd: f32|
         -> AbiResult<u32> {
            let kind = OptimizerKind::Nesterov {
                lr,
                momentum,
                weight_decay: wd,
            };
            new_optimizer(&mut c, "optimizer_nesterov", params, count, kind)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_optimizer_adamw",
        |mut c: Ctx<'_>,
         params: u32,
         count: u32,
         lr: f32,
         beta1: f32,
         beta2: f32,
         eps: f32,
         wd: f32|
         -> AbiResult<u32> {
            let kind = OptimizerKind::AdamW {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay: wd,
            };
            new_optimizer(&mut c, "optimizer_adamw", params, count, kind)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_optimizer_rmsprop",
        |mut c: Ctx<'_>,
         params: u32,
         count: u32,
         lr: f32,
         alpha: f32,
         eps: f32,
         wd: f32|
         -> AbiResult<u32> {
            let kind = OptimizerKind::RmsProp {
                lr,
                alpha,
                eps,
                weight_decay: wd,
            };
            new_optimizer(&mut c, "optimizer_rmsprop", params, count, kind)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_optimizer_clip_grad_norm",
        |mut c: Ctx<'_>, opt: u32, max_norm: f32| -> AbiResult<()> {
            Ok(rt(&mut c).optimizer_clip_grad_norm(opt, max_norm)?)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_optimizer_set_lr",
        |mut c: Ctx<'_>, opt: u32, lr: f32| -> AbiResult<()> {
            Ok(rt(&mut c).optimizer_set_lr(opt, lr)?)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_optimizer_step",
        |mut c: Ctx<'_>, opt: u32, loss: u32| -> AbiResult<()> {
            Ok(rt(&mut c).optimizer_step(opt, loss)?)
        },
    )?;

    // Results.
    linker.func_wrap(
        M,
        "chiron_report_metric",
        |mut c: Ctx<'_>, name: u32, len: u32, epoch: u32, value: f32| -> AbiResult<()> {
            const CALL: &str = "report_metric";
            if len as usize > crate::runtime::MAX_METRIC_NAME {
                return Err(SandboxError::abi(CALL, "name must be 1..=32 bytes").into());
            }
            let name = read_bytes(&mut c, CALL, name, u64::from(len))?;
            Ok(rt(&mut c).report_metric(&name, epoch, value)?)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_report_progress",
        |mut c: Ctx<'_>, epoch: u32, step: u32, steps: u32| -> AbiResult<()> {
            Ok(rt(&mut c).report_progress(epoch, step, steps)?)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_log",
        |mut c: Ctx<'_>, message: u32, len: u32| -> AbiResult<()> {
            const CALL: &str = "log";
            if len as usize > crate::runtime::MAX_LOG_LINE {
                return Err(SandboxError::abi(CALL, "a line above 4 KiB").into());
            }
            let message = read_bytes(&mut c, CALL, message, u64::from(len))?;
            Ok(rt(&mut c).log(&message)?)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_save_model",
        |mut c: Ctx<'_>, params: u32, count: u32, meta: u32, meta_len: u32| -> AbiResult<()> {
            const CALL: &str = "save_model";
            if meta_len as usize > crate::runtime::MAX_MODEL_META {
                return Err(SandboxError::abi(CALL, "metadata above 64 KiB").into());
            }
            let params = read_u32s(&mut c, CALL, params, count)?;
            let meta = read_bytes(&mut c, CALL, meta, u64::from(meta_len))?;
            Ok(rt(&mut c).save_model(&params, meta)?)
        },
    )?;

    // Prediction.
    linker.func_wrap(M, "chiron_model_len", |mut c: Ctx<'_>| -> AbiResult<u32> {
        Ok(rt(&mut c).model_len()?)
    })?;
    linker.func_wrap(
        M,
        "chiron_model_tensor",
        |mut c: Ctx<'_>, i: u32| -> AbiResult<u32> { Ok(rt(&mut c).model_tensor(i)?) },
    )?;
    linker.func_wrap(
        M,
        "chiron_model_meta",
        |mut c: Ctx<'_>, out: u32, cap: u32| -> AbiResult<u32> {
            let meta = rt(&mut c).model_meta()?;
            let n = meta.len().min(cap as usize);
            write_bytes(&mut c, "model_meta", out, &meta[..n])?;
            Ok(meta.len() as u32)
        },
    )?;
    linker.func_wrap(
        M,
        "chiron_query_input",
        |mut c: Ctx<'_>| -> AbiResult<u32> { Ok(rt(&mut c).query_input()?) },
    )?;
    linker.func_wrap(
        M,
        "chiron_set_output",
        |mut c: Ctx<'_>, t: u32| -> AbiResult<()> { Ok(rt(&mut c).set_output(t)?) },
    )?;
    Ok(())
}
