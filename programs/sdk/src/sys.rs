//! The raw Chiron host ABI: the only functions a provider program can import.
//!
//! This list is the contract between sandboxed programs and the enclave runtime; the runtime
//! links exactly these names (module `chiron`) and nothing else, so a module importing
//! anything more (WASI included) is refused at load time.
//!
//! Conventions:
//! - Tensors live in the runtime and are named by handles (`u32`). Handles are never reused
//!   within one run, so a stale handle is an error, not an alias.
//! - Shapes are passed as a pointer to `rank` `u32` dimensions in the program's memory.
//! - Every call validates its arguments. Any misuse (unknown handle, bad shape, pointer
//!   outside linear memory, exceeded quota) traps the program and ends the job with an error
//!   reported to the data owner only. There are no error return codes to check.
//! - Optional tensor arguments (a bias) take [`NONE`].
//! - Names carry a `chiron_` prefix so that the same program can also be linked natively
//!   against the engine, outside the sandbox, for reference runs.

/// Passed for an absent optional tensor argument.
pub const NONE: u32 = u32::MAX;

/// Dataset split served to `train`: the examples to learn from.
pub const SPLIT_TRAIN: u32 = 0;
/// Dataset split served to `train`: held-out examples for validation metrics.
pub const SPLIT_VALID: u32 = 1;

/// Dataset kind: images, features `[channels, height, width]` scaled to `[0, 1]`.
pub const KIND_IMAGE: u32 = 0;
/// Dataset kind: tabular rows, features `[columns]` standardised per column by the owner's
/// client (mean 0, variance 1 over the training split).
pub const KIND_TABULAR: u32 = 1;

/// Parameter initialisation: all zeros.
pub const INIT_ZEROS: u32 = 0;
/// Parameter initialisation: uniform on `[-a, a]` from the runtime's seeded stream.
pub const INIT_UNIFORM: u32 = 1;
/// Parameter initialisation: normal with mean 0 and standard deviation `a`.
pub const INIT_NORMAL: u32 = 2;
/// Parameter initialisation: every value `a` (batch norm's scale starts at 1).
pub const INIT_CONSTANT: u32 = 3;

/// Unary op: `max(x, 0)`.
pub const UNARY_RELU: u32 = 0;
/// Unary op: hyperbolic tangent.
pub const UNARY_TANH: u32 = 1;
/// Unary op: logistic sigmoid.
pub const UNARY_SIGMOID: u32 = 2;
/// Unary op: square root.
pub const UNARY_SQRT: u32 = 3;
/// Unary op: softmax over the last dimension.
pub const UNARY_SOFTMAX: u32 = 4;
/// `e^x`.
pub const UNARY_EXP: u32 = 5;
/// Natural logarithm.
pub const UNARY_LOG: u32 = 6;
/// `|x|`.
pub const UNARY_ABS: u32 = 7;
/// Leaky ReLU, slope 0.01 below zero.
pub const UNARY_LEAKY_RELU: u32 = 8;
/// GELU (exact, with the normal CDF).
pub const UNARY_GELU: u32 = 9;
/// SiLU (swish), `x σ(x)`.
pub const UNARY_SILU: u32 = 10;

/// Binary op: `a + b` (shapes broadcast as in NumPy).
pub const BINARY_ADD: u32 = 0;
/// Binary op: `a - b`.
pub const BINARY_SUB: u32 = 1;
/// Binary op: `a * b`.
pub const BINARY_MUL: u32 = 2;
/// Binary op: `a / b`.
pub const BINARY_DIV: u32 = 3;
/// Binary op: `a^b`.
pub const BINARY_POW: u32 = 4;
/// Binary op: `max(a, b)`.
pub const BINARY_MAXIMUM: u32 = 5;
/// Binary op: `min(a, b)`.
pub const BINARY_MINIMUM: u32 = 6;

/// Reduction: sum.
pub const REDUCE_SUM: u32 = 0;
/// Reduction: mean.
pub const REDUCE_MEAN: u32 = 1;
/// Reduction: maximum.
pub const REDUCE_MAX: u32 = 2;
/// Reduction: minimum.
pub const REDUCE_MIN: u32 = 3;
/// Reduction: biased variance.
pub const REDUCE_VAR: u32 = 4;

/// Pooling: the window's maximum.
pub const POOL_MAX: u32 = 0;
/// Pooling: the window's mean, padding counted as zeros.
pub const POOL_AVG: u32 = 1;

#[cfg_attr(target_arch = "wasm32", link(wasm_import_module = "chiron"))]
unsafe extern "C" {
    // --- job and dataset (public header only) ---

    /// The dataset kind: [`KIND_IMAGE`] or [`KIND_TABULAR`].
    pub fn chiron_dataset_kind() -> u32;
    /// Number of examples in a split ([`SPLIT_TRAIN`] or [`SPLIT_VALID`]).
    pub fn chiron_dataset_count(split: u32) -> u32;
    /// Rank of one example's features (1 for tabular, 3 for images).
    pub fn chiron_dataset_rank() -> u32;
    /// Dimension `axis` of one example's features.
    pub fn chiron_dataset_dim(axis: u32) -> u32;
    /// Number of classes; labels are `0..classes`.
    pub fn chiron_dataset_classes() -> u32;
    /// The owner's declared epoch budget (the runtime also enforces a time budget).
    pub fn chiron_budget_epochs() -> u32;

    /// Features of the examples at `indices` (`count` `u32`s) of `split`, as a constant
    /// tensor `[count, ...dims]`.
    pub fn chiron_batch_features(split: u32, indices: *const u32, count: u32) -> u32;
    /// Labels of the examples at `indices` of `split`, as a constant tensor `[count]` of
    /// class indices stored as `f32`.
    pub fn chiron_batch_labels(split: u32, indices: *const u32, count: u32) -> u32;

    /// The next 64 bits of the runtime's seeded random stream (seed chosen by the owner).
    pub fn chiron_random_u64() -> u64;

    // --- tensors ---

    /// A constant tensor from `len` `f32`s at `data` with the given shape.
    pub fn chiron_tensor(data: *const f32, len: u32, shape: *const u32, rank: u32) -> u32;
    /// A new trainable parameter of the given shape, initialised by `init` (`INIT_*`) with
    /// scale `a`, from the runtime's seeded stream.
    pub fn chiron_parameter(shape: *const u32, rank: u32, init: u32, a: f32) -> u32;
    /// The rank of `t`; writes up to `cap` dimensions to `dims`.
    pub fn chiron_shape(t: u32, dims: *mut u32, cap: u32) -> u32;
    /// Copies `t`'s values into `out` (`len` must equal its element count).
    pub fn chiron_read(t: u32, out: *mut f32, len: u32);
    /// Releases a handle. Freeing an unknown handle traps.
    pub fn chiron_free(t: u32);

    /// `conv2d(x [N,C,H,W], w [O,C,KH,KW], b [O] or NONE)` with square stride and padding.
    pub fn chiron_conv2d(x: u32, w: u32, b: u32, stride: u32, padding: u32) -> u32;
    /// Max pooling over `[N,C,H,W]` with a square window.
    pub fn chiron_max_pool2d(x: u32, kernel: u32, stride: u32) -> u32;
    /// `conv2d` with PyTorch's full geometry: `w` is `[O, C/groups, KH, KW]`; stride, padding
    /// and dilation as `(height, width)` pairs.
    pub fn chiron_conv2d_ex(
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
    ) -> u32;
    /// `POOL_*` pooling over `[N,C,H,W]` with a `(kernel_h, kernel_w)` window, stride and
    /// padding (at most half the window).
    pub fn chiron_pool2d(
        kind: u32,
        x: u32,
        kernel_h: u32,
        kernel_w: u32,
        stride_h: u32,
        stride_w: u32,
        padding_h: u32,
        padding_w: u32,
    ) -> u32;
    /// Adaptive average pooling of `[N,C,H,W]` to `[N,C,out_h,out_w]`.
    pub fn chiron_adaptive_avg_pool2d(x: u32, out_h: u32, out_w: u32) -> u32;
    /// `x [N,I] · w [I,O] + b [O]` (`b` may be NONE).
    pub fn chiron_linear(x: u32, w: u32, b: u32) -> u32;
    /// Element-wise `UNARY_*` op.
    pub fn chiron_unary(op: u32, x: u32) -> u32;
    /// Element-wise `BINARY_*` op; shapes broadcast as in NumPy.
    pub fn chiron_binary(op: u32, a: u32, b: u32) -> u32;
    /// `min(max(x, min), max)`, element-wise.
    pub fn chiron_clamp(x: u32, min: f32, max: f32) -> u32;
    /// `scale * x + shift`.
    pub fn chiron_affine(x: u32, scale: f32, shift: f32) -> u32;
    /// The same values with another shape of equal element count.
    pub fn chiron_reshape(x: u32, shape: *const u32, rank: u32) -> u32;
    /// Mean softmax cross-entropy of `logits [N,C]` against `labels [N]`; a `[1]` tensor.
    pub fn chiron_cross_entropy(logits: u32, labels: u32) -> u32;
    /// Mean of all elements; a `[1]` tensor.
    pub fn chiron_mean(x: u32) -> u32;
    /// `REDUCE_*` over the `count` distinct axes at `axes`; `keepdim` 1 keeps them as 1s.
    pub fn chiron_reduce(op: u32, x: u32, axes: *const u32, count: u32, keepdim: u32) -> u32;
    /// Index of the largest value along `axis` (as `f32`; not differentiable).
    pub fn chiron_argmax(x: u32, axis: u32, keepdim: u32) -> u32;
    /// The axes reordered: output axis `i` is input axis `perm[i]` (`rank` entries).
    pub fn chiron_permute(x: u32, perm: *const u32, rank: u32) -> u32;
    /// The `count` tensors at `xs` joined along `axis`.
    pub fn chiron_concat(xs: *const u32, count: u32, axis: u32) -> u32;
    /// `len` entries of `axis` from `start`.
    pub fn chiron_narrow(x: u32, axis: u32, start: u32, len: u32) -> u32;
    /// Entries of `axis` at `indices` (a rank-1 tensor of integer indices as `f32`).
    pub fn chiron_index_select(x: u32, axis: u32, indices: u32) -> u32;
    /// Batched matrix product `[.., n, k] · [.., k, m]`, batch axes broadcast.
    pub fn chiron_matmul(a: u32, b: u32) -> u32;
    /// Normalises `x` over the `count` axes at `axes`: `(x - mean) / sqrt(var + eps)`.
    /// Writes three handles to `out`: the output, the mean and the biased variance (both
    /// with the axes kept as 1s and outside the gradient graph).
    pub fn chiron_normalize(x: u32, axes: *const u32, count: u32, eps: f32, out: *mut u32);
    /// Inverted dropout with drop probability `p`, its mask drawn from the runtime's seeded
    /// stream.
    pub fn chiron_dropout(x: u32, p: f32) -> u32;
    /// Cross-entropy with label smoothing in `[0, 1]`; a `[1]` tensor.
    pub fn chiron_cross_entropy_smoothed(logits: u32, labels: u32, smoothing: f32) -> u32;
    /// Mean binary cross-entropy of `logits` against same-shaped `targets` in `[0, 1]`.
    pub fn chiron_bce_with_logits(logits: u32, targets: u32) -> u32;
    /// Turns gradient recording on (1) or off (0) for the operations that follow; returns
    /// the previous setting. Off, results are outside any gradient graph (evaluation).
    pub fn chiron_set_grad_enabled(enabled: u32) -> u32;
    /// Milliseconds left before the runtime stops the program (its time budget), rounded
    /// down to a whole 100 ms; `u64::MAX` where the run has no time budget.
    pub fn chiron_time_left_ms() -> u64;
    /// How many rows of `logits [N,C]` have their maximum at the class in `labels [N]`.
    pub fn chiron_count_correct(logits: u32, labels: u32) -> u32;

    // --- optimisers ---

    /// SGD with momentum and weight decay over the `count` parameter handles at `params`.
    pub fn chiron_optimizer_sgd(params: *const u32, count: u32, lr: f32, momentum: f32, weight_decay: f32) -> u32;
    /// Adam over the `count` parameter handles at `params`.
    pub fn chiron_optimizer_adam(
        params: *const u32,
        count: u32,
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
    ) -> u32;
    /// SGD with Nesterov momentum over the `count` parameter handles at `params`.
    pub fn chiron_optimizer_nesterov(params: *const u32, count: u32, lr: f32, momentum: f32, weight_decay: f32) -> u32;
    /// AdamW (decoupled weight decay) over the `count` parameter handles at `params`.
    pub fn chiron_optimizer_adamw(
        params: *const u32,
        count: u32,
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
    ) -> u32;
    /// RMSprop over the `count` parameter handles at `params`.
    pub fn chiron_optimizer_rmsprop(params: *const u32, count: u32, lr: f32, alpha: f32, eps: f32, weight_decay: f32) -> u32;
    /// Clips an optimiser's later steps to a global gradient norm of `max_norm`.
    pub fn chiron_optimizer_clip_grad_norm(opt: u32, max_norm: f32);
    /// Changes an optimiser's learning rate (schedules).
    pub fn chiron_optimizer_set_lr(opt: u32, lr: f32);
    /// Back-propagates from the `[1]` tensor `loss` and updates the optimiser's parameters in
    /// place: their handles stay valid and now name the new values.
    pub fn chiron_optimizer_step(opt: u32, loss: u32);

    // --- results ---

    /// Sends a metric (`name` is UTF-8, at most 32 bytes) to the data owner, encrypted; the
    /// provider and the platform never see it.
    pub fn chiron_report_metric(name: *const u8, name_len: u32, epoch: u32, value: f32);
    /// Reports progress within epoch `epoch`: `step` of `steps` steps done (`steps` above 0,
    /// `step` at most `steps`), for the owner's progress bar.
    pub fn chiron_report_progress(epoch: u32, step: u32, steps: u32);
    /// Sends one log line (UTF-8, at most 4096 bytes) to whoever may see it: the provider's
    /// terminal under `chiron run-local`; nobody in an enclave.
    pub fn chiron_log(message: *const u8, len: u32);
    /// Saves the model: the `count` tensors at `params` and `meta_len` bytes of free-form
    /// metadata (architecture). The last call wins. `train` must call it at least once.
    pub fn chiron_save_model(params: *const u32, count: u32, meta: *const u8, meta_len: u32);

    // --- prediction (only inside `predict`) ---

    /// Number of tensors in the loaded model.
    pub fn chiron_model_len() -> u32;
    /// Tensor `index` of the loaded model, as a constant.
    pub fn chiron_model_tensor(index: u32) -> u32;
    /// Copies up to `cap` bytes of the model's metadata to `out`; returns its full length.
    pub fn chiron_model_meta(out: *mut u8, cap: u32) -> u32;
    /// The query's inputs as a constant tensor `[N, ...dims]` (same layout as training
    /// features).
    pub fn chiron_query_input() -> u32;
    /// Sets the answer: scores `[N, classes]`. The runtime turns them into the label or
    /// top-k answer the job declared; the program cannot shape the answer.
    pub fn chiron_set_output(scores: u32);
}
