//! The host ABI as native symbols, so a provider program compiled for the host (as an rlib)
//! calls the same [`Runtime`] the sandbox uses, without wasm in between.
//!
//! The SDK declares the ABI as `extern "C"` functions; linking this module defines them.
//! Misuse aborts the process, as a trap ends a sandboxed run.

#![allow(unsafe_code)]

use std::cell::RefCell;

use chiron_engine::{Conv2dOptions, DefaultBackend, OptimizerKind, Pool2dOptions};
use chiron_sandbox::runtime::{MAX_AXES, MAX_CONCAT, Runtime};

thread_local! {
    static RUNTIME: RefCell<Option<Runtime<DefaultBackend>>> = const { RefCell::new(None) };
}

/// Installs the runtime the next program call on this thread will use.
pub fn install(runtime: Runtime<DefaultBackend>) {
    RUNTIME.with(|r| *r.borrow_mut() = Some(runtime));
}

/// Removes and returns the installed runtime.
pub fn uninstall() -> Option<Runtime<DefaultBackend>> {
    RUNTIME.with(|r| r.borrow_mut().take())
}

fn with<T>(
    f: impl FnOnce(&mut Runtime<DefaultBackend>) -> Result<T, chiron_sandbox::SandboxError>,
) -> T {
    RUNTIME.with(|r| {
        let mut slot = r.borrow_mut();
        let Some(rt) = slot.as_mut() else {
            eprintln!("reference run: no runtime installed");
            std::process::abort();
        };
        match f(rt) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("reference run: program failed: {e}");
                std::process::abort();
            }
        }
    })
}

/// Reads `len` values the program passed by pointer.
///
/// # Safety
/// `ptr` must point to `len` readable, initialised values (the program's own memory).
unsafe fn slice<'a, T>(ptr: *const T, len: u32) -> &'a [T] {
    if len == 0 {
        return &[];
    }
    // SAFETY: the caller (the program, through the ABI contract) passes a valid pointer to
    // `len` elements, exactly as it would into wasm linear memory.
    unsafe { std::slice::from_raw_parts(ptr, len as usize) }
}

/// Reads a list the program passed by pointer, refusing (as the sandbox does) more than
/// `max` entries before reading any.
///
/// # Safety
/// As [`slice`].
unsafe fn bounded<'a>(call: &str, ptr: *const u32, len: u32, max: usize) -> &'a [u32] {
    if len as usize > max {
        eprintln!("reference run: program failed: {call}: {len} entries, at most {max}");
        std::process::abort();
    }
    // SAFETY: the caller's contract.
    unsafe { slice(ptr, len) }
}

fn pair(h: u32, w: u32) -> [usize; 2] {
    [h as usize, w as usize]
}

fn dims(shape: &[u32]) -> Vec<usize> {
    shape.iter().map(|&d| d as usize).collect()
}

#[unsafe(no_mangle)]
extern "C" fn chiron_dataset_kind() -> u32 {
    with(|r| r.dataset_kind())
}
#[unsafe(no_mangle)]
extern "C" fn chiron_dataset_count(split: u32) -> u32 {
    with(|r| r.dataset_count(split))
}
#[unsafe(no_mangle)]
extern "C" fn chiron_dataset_rank() -> u32 {
    with(|r| r.dataset_rank())
}
#[unsafe(no_mangle)]
extern "C" fn chiron_dataset_dim(axis: u32) -> u32 {
    with(|r| r.dataset_dim(axis))
}
#[unsafe(no_mangle)]
extern "C" fn chiron_dataset_classes() -> u32 {
    with(|r| r.dataset_classes())
}
#[unsafe(no_mangle)]
extern "C" fn chiron_budget_epochs() -> u32 {
    with(|r| r.budget_epochs())
}
#[unsafe(no_mangle)]
unsafe extern "C" fn chiron_batch_features(split: u32, indices: *const u32, count: u32) -> u32 {
    // SAFETY: ABI contract, see `slice`.
    let indices = unsafe { slice(indices, count) };
    with(|r| r.batch_features(split, indices))
}
#[unsafe(no_mangle)]
unsafe extern "C" fn chiron_batch_labels(split: u32, indices: *const u32, count: u32) -> u32 {
    // SAFETY: ABI contract, see `slice`.
    let indices = unsafe { slice(indices, count) };
    with(|r| r.batch_labels(split, indices))
}
#[unsafe(no_mangle)]
extern "C" fn chiron_random_u64() -> u64 {
    with(|r| Ok(r.random_u64()))
}
#[unsafe(no_mangle)]
unsafe extern "C" fn chiron_tensor(
    data: *const f32,
    len: u32,
    shape: *const u32,
    rank: u32,
) -> u32 {
    // SAFETY: ABI contract, see `slice`.
    let (data, shape) = unsafe { (slice(data, len), slice(shape, rank)) };
    with(|r| r.tensor_from(data.to_vec(), &dims(shape)))
}
#[unsafe(no_mangle)]
unsafe extern "C" fn chiron_parameter(shape: *const u32, rank: u32, init: u32, a: f32) -> u32 {
    // SAFETY: ABI contract, see `slice`.
    let shape = unsafe { slice(shape, rank) };
    with(|r| r.parameter(&dims(shape), init, a))
}
#[unsafe(no_mangle)]
unsafe extern "C" fn chiron_shape(t: u32, out: *mut u32, cap: u32) -> u32 {
    let shape = with(|r| r.shape(t));
    for (i, &d) in shape.iter().take(cap as usize).enumerate() {
        // SAFETY: the program passed room for `cap` dimensions.
        unsafe { out.add(i).write(d as u32) };
    }
    shape.len() as u32
}
#[unsafe(no_mangle)]
unsafe extern "C" fn chiron_read(t: u32, out: *mut f32, len: u32) {
    let values = with(|r| r.read(t));
    if values.len() != len as usize {
        eprintln!("reference run: read length mismatch");
        std::process::abort();
    }
    // SAFETY: the program passed room for `len` values, which equals `values.len()`.
    unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), out, values.len()) };
}
#[unsafe(no_mangle)]
extern "C" fn chiron_free(t: u32) {
    with(|r| r.free(t))
}
#[unsafe(no_mangle)]
extern "C" fn chiron_conv2d(x: u32, w: u32, b: u32, stride: u32, padding: u32) -> u32 {
    with(|r| r.conv2d(x, w, b, stride, padding))
}
#[unsafe(no_mangle)]
extern "C" fn chiron_max_pool2d(x: u32, kernel: u32, stride: u32) -> u32 {
    with(|r| r.max_pool2d(x, kernel, stride))
}
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)] // the ABI's own signature
extern "C" fn chiron_conv2d_ex(
    x: u32,
    w: u32,
    b: u32,
    stride_h: u32,
    stride_w: u32,
    padding_h: u32,
    padding_w: u32,
    dilation_h: u32,
    dilation_w: u32,
    groups: u32,
) -> u32 {
    let options = Conv2dOptions {
        stride: pair(stride_h, stride_w),
        padding: pair(padding_h, padding_w),
        dilation: pair(dilation_h, dilation_w),
        groups: groups as usize,
    };
    with(|r| r.conv2d_ex(x, w, b, &options))
}
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)] // the ABI's own signature
extern "C" fn chiron_pool2d(
    kind: u32,
    x: u32,
    kernel_h: u32,
    kernel_w: u32,
    stride_h: u32,
    stride_w: u32,
    padding_h: u32,
    padding_w: u32,
) -> u32 {
    let options = Pool2dOptions {
        kernel: pair(kernel_h, kernel_w),
        stride: pair(stride_h, stride_w),
        padding: pair(padding_h, padding_w),
    };
    with(|r| r.pool2d(kind, x, &options))
}
#[unsafe(no_mangle)]
extern "C" fn chiron_adaptive_avg_pool2d(x: u32, out_h: u32, out_w: u32) -> u32 {
    with(|r| r.adaptive_avg_pool2d(x, out_h, out_w))
}
#[unsafe(no_mangle)]
extern "C" fn chiron_linear(x: u32, w: u32, b: u32) -> u32 {
    with(|r| r.linear(x, w, b))
}
#[unsafe(no_mangle)]
extern "C" fn chiron_unary(op: u32, x: u32) -> u32 {
    with(|r| r.unary(op, x))
}
#[unsafe(no_mangle)]
extern "C" fn chiron_binary(op: u32, a: u32, b: u32) -> u32 {
    with(|r| r.binary(op, a, b))
}
#[unsafe(no_mangle)]
extern "C" fn chiron_clamp(x: u32, min: f32, max: f32) -> u32 {
    with(|r| r.clamp(x, min, max))
}
#[unsafe(no_mangle)]
extern "C" fn chiron_affine(x: u32, scale: f32, shift: f32) -> u32 {
    with(|r| r.affine(x, scale, shift))
}
#[unsafe(no_mangle)]
unsafe extern "C" fn chiron_reshape(x: u32, shape: *const u32, rank: u32) -> u32 {
    // SAFETY: ABI contract, see `slice`.
    let shape = unsafe { slice(shape, rank) };
    with(|r| r.reshape(x, &dims(shape)))
}
#[unsafe(no_mangle)]
extern "C" fn chiron_cross_entropy(logits: u32, labels: u32) -> u32 {
    with(|r| r.cross_entropy(logits, labels))
}
#[unsafe(no_mangle)]
extern "C" fn chiron_mean(x: u32) -> u32 {
    with(|r| r.mean(x))
}
#[unsafe(no_mangle)]
unsafe extern "C" fn chiron_reduce(
    op: u32,
    x: u32,
    axes: *const u32,
    count: u32,
    keepdim: u32,
) -> u32 {
    // SAFETY: ABI contract, see `slice`.
    let axes = unsafe { bounded("reduce", axes, count, MAX_AXES) };
    with(|r| r.reduce(op, x, axes, keepdim))
}
#[unsafe(no_mangle)]
extern "C" fn chiron_argmax(x: u32, axis: u32, keepdim: u32) -> u32 {
    with(|r| r.argmax(x, axis, keepdim))
}
#[unsafe(no_mangle)]
unsafe extern "C" fn chiron_permute(x: u32, perm: *const u32, rank: u32) -> u32 {
    // SAFETY: ABI contract, see `slice`.
    let perm = unsafe { bounded("permute", perm, rank, MAX_AXES) };
    with(|r| r.permute(x, perm))
}
#[unsafe(no_mangle)]
unsafe extern "C" fn chiron_concat(xs: *const u32, count: u32, axis: u32) -> u32 {
    // SAFETY: ABI contract, see `slice`.
    let xs = unsafe { bounded("concat", xs, count, MAX_CONCAT) };
    with(|r| r.concat(xs, axis))
}
#[unsafe(no_mangle)]
extern "C" fn chiron_narrow(x: u32, axis: u32, start: u32, len: u32) -> u32 {
    with(|r| r.narrow(x, axis, start, len))
}
#[unsafe(no_mangle)]
extern "C" fn chiron_index_select(x: u32, axis: u32, indices: u32) -> u32 {
    with(|r| r.index_select(x, axis, indices))
}
#[unsafe(no_mangle)]
extern "C" fn chiron_matmul(a: u32, b: u32) -> u32 {
    with(|r| r.matmul(a, b))
}
#[unsafe(no_mangle)]
unsafe extern "C" fn chiron_normalize(
    x: u32,
    axes: *const u32,
    count: u32,
    eps: f32,
    out: *mut u32,
) {
    // SAFETY: ABI contract, see `slice`.
    let axes = unsafe { bounded("normalize", axes, count, MAX_AXES) };
    let handles = with(|r| r.normalize(x, axes, eps));
    // SAFETY: the program passed room for three handles at `out`.
    unsafe { std::ptr::copy_nonoverlapping(handles.as_ptr(), out, handles.len()) };
}
#[unsafe(no_mangle)]
extern "C" fn chiron_dropout(x: u32, p: f32) -> u32 {
    with(|r| r.dropout(x, p))
}
#[unsafe(no_mangle)]
extern "C" fn chiron_cross_entropy_smoothed(logits: u32, labels: u32, smoothing: f32) -> u32 {
    with(|r| r.cross_entropy_smoothed(logits, labels, smoothing))
}
#[unsafe(no_mangle)]
extern "C" fn chiron_bce_with_logits(logits: u32, targets: u32) -> u32 {
    with(|r| r.bce_with_logits(logits, targets))
}
#[unsafe(no_mangle)]
extern "C" fn chiron_set_grad_enabled(enabled: u32) -> u32 {
    with(|r| r.set_grad_enabled(enabled))
}
#[unsafe(no_mangle)]
extern "C" fn chiron_time_left_ms() -> u64 {
    with(|r| Ok(r.time_left_ms()))
}
#[unsafe(no_mangle)]
extern "C" fn chiron_count_correct(logits: u32, labels: u32) -> u32 {
    with(|r| r.count_correct(logits, labels))
}
/// An optimizer of `kind` over the `count` parameter handles at `params`.
///
/// # Safety
/// ABI contract, see `slice`.
unsafe fn optimizer(params: *const u32, count: u32, kind: OptimizerKind) -> u32 {
    // SAFETY: ABI contract, see `slice`.
    let params = unsafe { slice(params, count) }.to_vec();
    with(|r| r.optimizer(params, kind))
}
#[unsafe(no_mangle)]
unsafe extern "C" fn chiron_optimizer_sgd(
    params: *const u32,
    count: u32,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
) -> u32 {
    // SAFETY: ABI contract, see `slice`.
    unsafe {
        optimizer(
            params,
            count,
            OptimizerKind::Sgd {
                lr,
                momentum,
                weight_decay,
            },
        )
    }
}
#[unsafe(no_mangle)]
unsafe extern "C" fn chiron_optimizer_adam(
    params: *const u32,
    count: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
) -> u32 {
    // SAFETY: ABI contract, see `slice`.
    unsafe {
        optimizer(
            params,
            count,
            OptimizerKind::Adam {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
            },
        )
    }
}
#[unsafe(no_mangle)]
unsafe extern "C" fn chiron_optimizer_nesterov(
    params: *const u32,
    count: u32,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
) -> u32 {
    // SAFETY: ABI contract, see `slice`.
    unsafe {
        optimizer(
            params,
            count,
            OptimizerKind::Nesterov {
                lr,
                momentum,
                weight_decay,
            },
        )
    }
}
#[unsafe(no_mangle)]
unsafe extern "C" fn chiron_optimizer_adamw(
    params: *const u32,
    count: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
) -> u32 {
    // SAFETY: ABI contract, see `slice`.
    unsafe {
        optimizer(
            params,
            count,
            OptimizerKind::AdamW {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
            },
        )
    }
}
#[unsafe(no_mangle)]
unsafe extern "C" fn chiron_optimizer_rmsprop(
    params: *const u32,
    count: u32,
    lr: f32,
    alpha: f32,
    eps: f32,
    weight_decay: f32,
) -> u32 {
    // SAFETY: ABI contract, see `slice`.
    unsafe {
        optimizer(
            params,
            count,
            OptimizerKind::RmsProp {
                lr,
                alpha,
                eps,
                weight_decay,
            },
        )
    }
}
#[unsafe(no_mangle)]
extern "C" fn chiron_optimizer_clip_grad_norm(opt: u32, max_norm: f32) {
    with(|r| r.optimizer_clip_grad_norm(opt, max_norm))
}
#[unsafe(no_mangle)]
extern "C" fn chiron_optimizer_set_lr(opt: u32, lr: f32) {
    with(|r| r.optimizer_set_lr(opt, lr))
}
#[unsafe(no_mangle)]
extern "C" fn chiron_optimizer_step(opt: u32, loss: u32) {
    with(|r| r.optimizer_step(opt, loss))
}
#[unsafe(no_mangle)]
unsafe extern "C" fn chiron_report_metric(name: *const u8, name_len: u32, epoch: u32, value: f32) {
    // SAFETY: ABI contract, see `slice`.
    let name = unsafe { slice(name, name_len) };
    with(|r| r.report_metric(name, epoch, value))
}
#[unsafe(no_mangle)]
extern "C" fn chiron_report_progress(epoch: u32, step: u32, steps: u32) {
    with(|r| r.report_progress(epoch, step, steps))
}
#[unsafe(no_mangle)]
unsafe extern "C" fn chiron_log(message: *const u8, len: u32) {
    // SAFETY: ABI contract, see `slice`.
    let message = unsafe { slice(message, len) };
    with(|r| r.log(message))
}
#[unsafe(no_mangle)]
unsafe extern "C" fn chiron_save_model(
    params: *const u32,
    count: u32,
    meta: *const u8,
    meta_len: u32,
) {
    // SAFETY: ABI contract, see `slice`.
    let (params, meta) = unsafe { (slice(params, count), slice(meta, meta_len)) };
    with(|r| r.save_model(params, meta.to_vec()))
}
#[unsafe(no_mangle)]
extern "C" fn chiron_model_len() -> u32 {
    with(|r| r.model_len())
}
#[unsafe(no_mangle)]
extern "C" fn chiron_model_tensor(index: u32) -> u32 {
    with(|r| r.model_tensor(index))
}
#[unsafe(no_mangle)]
unsafe extern "C" fn chiron_model_meta(out: *mut u8, cap: u32) -> u32 {
    let meta = with(|r| r.model_meta());
    let n = meta.len().min(cap as usize);
    // SAFETY: the program passed room for `cap` bytes; we write at most that many.
    unsafe { std::ptr::copy_nonoverlapping(meta.as_ptr(), out, n) };
    meta.len() as u32
}
#[unsafe(no_mangle)]
extern "C" fn chiron_query_input() -> u32 {
    with(|r| r.query_input())
}
#[unsafe(no_mangle)]
extern "C" fn chiron_set_output(scores: u32) {
    with(|r| r.set_output(scores))
}
