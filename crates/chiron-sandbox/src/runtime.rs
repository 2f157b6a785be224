//! The runtime side of the host ABI: handle tables, quotas and the meaning of each call,
//! independent of how the program is executed (wasm here; natively for reference runs).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chiron_engine::cost::{self, Cost};
use chiron_engine::{
    Backend, Binary, Conv2dOptions, Interrupt, Optimizer, OptimizerKind, Pool, Pool2dOptions,
    Reduce, Unary,
};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::data::{Split, TrainingData};
use crate::error::{Limit, SandboxError};
use crate::exchange::{ParameterExchange, Update};
use crate::memory;
use crate::model::Model;

/// ABI constant for an absent optional tensor.
pub const NONE: u32 = u32::MAX;
/// Longest metric name accepted.
pub const MAX_METRIC_NAME: usize = 32;
/// Largest model metadata accepted.
pub const MAX_MODEL_META: usize = 64 * 1024;
/// Longest batch a single call may request.
pub const MAX_BATCH: u32 = 1 << 16;
/// Most axes a reduction, normalisation or permutation may name (the engine's largest rank
/// is smaller).
pub const MAX_AXES: usize = 8;
/// Most tensors one `concat` may join.
pub const MAX_CONCAT: usize = 1024;

/// Resource limits for one run of a program.
#[derive(Clone, Debug)]
pub struct Quotas {
    /// Live tensor elements across all handles.
    pub tensor_elements: u64,
    /// Live handles (tensors and optimisers).
    pub handles: usize,
    /// Metric events per run.
    pub metrics: usize,
    /// Work the runtime may do for the program in one run, in [`Cost::flops`] (each
    /// operation is charged, from its shapes, before it runs).
    pub compute: u64,
}

impl Default for Quotas {
    /// 2^26 live tensor elements (256 MiB), 2^14 handles, 4096 metrics, 2^50 operations of
    /// compute (hours of work: the time budget binds first on today's machines).
    fn default() -> Self {
        Self {
            tensor_elements: 1 << 26,
            handles: 1 << 14,
            metrics: 4096,
            compute: 1 << 50,
        }
    }
}

/// A metric the program reported, for the owner's eyes only.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    /// The program's name for it.
    pub name: String,
    /// The epoch it belongs to.
    pub epoch: u32,
    /// Its value.
    pub value: f32,
}

/// How far the program says it is within an epoch: `step` of `steps` (owner-only, like a
/// metric; the runtime passes it on as reported).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The epoch (from 0).
    pub epoch: u32,
    /// Steps done in it.
    pub step: u32,
    /// Steps in it.
    pub steps: u32,
}

/// Where a run gets its inputs and sends its outputs.
pub enum Mode {
    /// `train`: a dataset to learn from.
    Train {
        /// The decrypted dataset.
        data: Arc<TrainingData>,
        /// The owner's epoch budget, passed to the program.
        epochs: u32,
        /// Receives metrics as they are reported.
        metrics: Box<dyn FnMut(Metric) + Send>,
        /// Receives the program's step progress as it is reported.
        progress: Box<dyn FnMut(Progress) + Send>,
    },
    /// `predict`: a model and one query's inputs.
    Predict {
        /// The model being served.
        model: Arc<Model>,
        /// Input shape `[n, ...dims]`.
        input_shape: Vec<usize>,
        /// Input values, row-major.
        input: Vec<f32>,
    },
}

enum Entry<B: Backend> {
    Tensor(B::Tensor, u64),
    Optimizer(Box<Optimizer<B>>, Vec<u32>),
}

/// The state behind one program run: every handle it holds and everything it produced.
pub struct Runtime<B: Backend> {
    engine: B,
    quotas: Quotas,
    /// Stops the engine's kernels part-way: at the run's deadline, or when the process's
    /// memory limit is passed.
    interrupt: Interrupt,
    /// Compute left, in [`Cost::flops`].
    compute_left: u64,
    /// What the operations since the last optimizer step cost: the estimate a backward
    /// pass is charged from.
    since_step: Cost,
    entries: HashMap<u32, Entry<B>>,
    next_handle: u32,
    live_elements: u64,
    rng: ChaCha20Rng,
    mode: Mode,
    metrics_sent: usize,
    /// Where the program's log lines go: the provider's terminal under `chiron run-local`;
    /// nowhere in an enclave.
    log: Option<LogSink>,
    saved: Option<Model>,
    output: Option<(Vec<usize>, Vec<f32>)>,
    /// Whether operations record gradients (`set_grad_enabled`); off, every result is
    /// stored cut from the graph.
    grad_enabled: bool,
    /// Handles of results computed while gradients were off, to say so when one is used as
    /// a loss.
    untracked: HashSet<u32>,
    /// On a worker of a distributed job, where optimizer steps go.
    exchange: Option<Box<dyn ParameterExchange>>,
    /// Optimizers whose parameters the exchange already holds.
    registered: HashSet<u32>,
}

type Result<T> = std::result::Result<T, SandboxError>;

/// Receives a program's log lines.
pub type LogSink = Box<dyn FnMut(&str) + Send>;

/// Longest log line a program may send, in bytes.
pub const MAX_LOG_LINE: usize = 4096;

impl<B: Backend> Runtime<B> {
    /// A fresh runtime with no handles, seeded random stream and the given mode.
    ///
    /// Its [`Interrupt`] (see [`Runtime::interrupt`]) has no deadline yet and follows the
    /// process's memory gauge ([`memory::OVER_LIMIT`]).
    pub fn new(engine: B, quotas: Quotas, seed: [u8; 32], mode: Mode) -> Self {
        let interrupt = Interrupt::new();
        interrupt.follow(&memory::OVER_LIMIT);
        Self {
            engine: engine.with_interrupt(interrupt.clone()),
            compute_left: quotas.compute,
            quotas,
            interrupt,
            since_step: Cost::default(),
            entries: HashMap::new(),
            next_handle: 1,
            live_elements: 0,
            rng: ChaCha20Rng::from_seed(seed),
            mode,
            metrics_sent: 0,
            log: None,
            saved: None,
            output: None,
            grad_enabled: true,
            untracked: HashSet::new(),
            exchange: None,
            registered: HashSet::new(),
        }
    }

    /// Sends optimizer steps to `exchange` instead of applying them here: a worker of a
    /// distributed job (`crate::exchange`).
    pub fn with_exchange(mut self, exchange: Box<dyn ParameterExchange>) -> Self {
        self.exchange = Some(exchange);
        self
    }

    /// Sends the program's log lines (`chiron_sdk::println!`, panic messages) to `sink`.
    /// Without one they are discarded: an enclave never sets one, since nothing the program
    /// says may reach anyone but the owner.
    pub fn with_log(mut self, sink: LogSink) -> Self {
        self.log = Some(sink);
        self
    }

    /// What stops this run's native work: set its deadline, or stop it.
    pub fn interrupt(&self) -> &Interrupt {
        &self.interrupt
    }

    /// Compute left to this run, in [`Cost::flops`].
    pub fn compute_left(&self) -> u64 {
        self.compute_left
    }

    /// Charges `cost` before the work is done: refuses it if the run was interrupted, if it
    /// needs more compute than is left, or if its new memory would take the process past
    /// its limit. Nothing is spent on a refusal.
    fn charge(&mut self, cost: Cost) -> Result<()> {
        self.interrupt.check()?;
        if cost.flops > self.compute_left {
            return Err(SandboxError::Limit(Limit::Compute));
        }
        if !memory::fits(cost.bytes) {
            return Err(SandboxError::Limit(Limit::RuntimeMemory));
        }
        self.compute_left -= cost.flops;
        // Work done with gradients off leaves nothing for a backward pass to go through.
        if self.grad_enabled {
            self.since_step = self.since_step.plus(cost);
        }
        Ok(())
    }

    fn dims(&self, call: &'static str, handle: u32) -> Result<Vec<usize>> {
        Ok(self
            .engine
            .shape(self.tensor(call, handle)?)
            .dims()
            .to_vec())
    }

    /// The model saved by `train`, if any.
    pub fn take_model(&mut self) -> Option<Model> {
        self.saved.take()
    }

    /// The scores set by `predict`, if any, with their shape.
    pub fn take_output(&mut self) -> Option<(Vec<usize>, Vec<f32>)> {
        self.output.take()
    }

    // --- handle table ---

    /// Stores a computed result: as it is, or cut from the graph while gradients are off
    /// (so that no graph is kept for evaluation work).
    fn insert(&mut self, t: B::Tensor) -> Result<u32> {
        if self.grad_enabled {
            return self.store(t);
        }
        let handle = self.store(self.engine.detach(&t))?;
        self.untracked.insert(handle);
        Ok(handle)
    }

    /// Stores a tensor under a fresh handle, as it is (parameters stay trainable whatever
    /// the gradient setting).
    fn store(&mut self, t: B::Tensor) -> Result<u32> {
        let elements = self.engine.shape(&t).elements() as u64;
        if self.entries.len() >= self.quotas.handles {
            return Err(SandboxError::Limit(Limit::Handles));
        }
        let live = self.live_elements.saturating_add(elements);
        if live > self.quotas.tensor_elements {
            return Err(SandboxError::Limit(Limit::TensorMemory));
        }
        let handle = self.next_handle;
        // Handles are never reused, so a stale handle cannot alias a newer tensor.
        self.next_handle = self
            .next_handle
            .checked_add(1)
            .filter(|&h| h != NONE)
            .ok_or(SandboxError::Limit(Limit::Handles))?;
        self.live_elements = live;
        self.entries.insert(handle, Entry::Tensor(t, elements));
        Ok(handle)
    }

    fn tensor(&self, call: &'static str, handle: u32) -> Result<&B::Tensor> {
        match self.entries.get(&handle) {
            Some(Entry::Tensor(t, _)) => Ok(t),
            Some(Entry::Optimizer(..)) => Err(SandboxError::abi(
                call,
                format!("handle {handle} is an optimizer, not a tensor"),
            )),
            None => Err(SandboxError::abi(call, format!("unknown handle {handle}"))),
        }
    }

    fn optional(&self, call: &'static str, handle: u32) -> Result<Option<&B::Tensor>> {
        if handle == NONE {
            Ok(None)
        } else {
            self.tensor(call, handle).map(Some)
        }
    }

    /// Releases a handle.
    pub fn free(&mut self, handle: u32) -> Result<()> {
        self.untracked.remove(&handle);
        match self.entries.remove(&handle) {
            Some(Entry::Tensor(_, elements)) => {
                self.live_elements = self
                    .live_elements
                    .checked_sub(elements)
                    .ok_or_else(|| SandboxError::Internal("tensor accounting".into()))?;
                Ok(())
            }
            Some(Entry::Optimizer(..)) => Ok(()),
            None => Err(SandboxError::abi(
                "free",
                format!("unknown handle {handle}"),
            )),
        }
    }

    // --- dataset ---

    fn training(&self, call: &'static str) -> Result<&Arc<TrainingData>> {
        match &self.mode {
            Mode::Train { data, .. } => Ok(data),
            Mode::Predict { .. } => Err(SandboxError::abi(call, "only available in train")),
        }
    }

    /// Dataset kind: 0 image, 1 tabular.
    pub fn dataset_kind(&self) -> Result<u32> {
        use chiron_proto::dataset::DatasetKind;
        Ok(match self.header("dataset_kind")?.kind {
            DatasetKind::Image => 0,
            DatasetKind::Tabular => 1,
        })
    }

    fn header(&self, call: &'static str) -> Result<&chiron_proto::dataset::DatasetHeader> {
        match &self.mode {
            Mode::Train { data, .. } => Ok(data.header()),
            Mode::Predict { model, .. } => model
                .header
                .as_ref()
                .ok_or_else(|| SandboxError::abi(call, "no dataset header")),
        }
    }

    /// Examples in a split.
    pub fn dataset_count(&self, split: u32) -> Result<u32> {
        let split = parse_split("dataset_count", split)?;
        Ok(self.training("dataset_count")?.count(split))
    }

    /// Rank of one example.
    pub fn dataset_rank(&self) -> Result<u32> {
        Ok(self.header("dataset_rank")?.dims.len() as u32)
    }

    /// One dimension of an example.
    pub fn dataset_dim(&self, axis: u32) -> Result<u32> {
        self.header("dataset_dim")?
            .dims
            .get(axis as usize)
            .copied()
            .ok_or_else(|| SandboxError::abi("dataset_dim", format!("no axis {axis}")))
    }

    /// Class count.
    pub fn dataset_classes(&self) -> Result<u32> {
        Ok(self.header("dataset_classes")?.classes)
    }

    /// The owner's epoch budget.
    pub fn budget_epochs(&self) -> Result<u32> {
        match &self.mode {
            Mode::Train { epochs, .. } => Ok(*epochs),
            Mode::Predict { .. } => Err(SandboxError::abi("budget_epochs", "only in train")),
        }
    }

    /// Features of a batch.
    pub fn batch_features(&mut self, split: u32, indices: &[u32]) -> Result<u32> {
        const CALL: &str = "batch_features";
        let (data, split) = self.batch_request(CALL, split, indices)?;
        let mut shape = vec![indices.len()];
        shape.extend(data.header().dims.iter().map(|&d| d as usize));
        chiron_engine::Shape::new(&shape)?;
        // The values decoded from the dataset, then the tensor made of them.
        self.charge(cost::tensor(&shape).plus(cost::tensor(&shape)))?;
        let values = data
            .features(split, indices)
            .ok_or_else(|| SandboxError::abi(CALL, "example index out of range"))?;
        let t = self.engine.constant(&shape, values)?;
        self.insert(t)
    }

    /// Labels of a batch.
    pub fn batch_labels(&mut self, split: u32, indices: &[u32]) -> Result<u32> {
        const CALL: &str = "batch_labels";
        let (data, split) = self.batch_request(CALL, split, indices)?;
        self.charge(cost::tensor(&[indices.len()]).plus(cost::tensor(&[indices.len()])))?;
        let values = data
            .labels(split, indices)
            .ok_or_else(|| SandboxError::abi(CALL, "example index out of range"))?;
        let t = self.engine.constant(&[indices.len()], values)?;
        self.insert(t)
    }

    fn batch_request(
        &self,
        call: &'static str,
        split: u32,
        indices: &[u32],
    ) -> Result<(Arc<TrainingData>, Split)> {
        let split = parse_split(call, split)?;
        if indices.is_empty() || indices.len() > MAX_BATCH as usize {
            return Err(SandboxError::abi(
                call,
                format!("batch of {} outside 1..={MAX_BATCH}", indices.len()),
            ));
        }
        Ok((Arc::clone(self.training(call)?), split))
    }

    /// The next 64 bits of the seeded stream.
    pub fn random_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    // --- tensors ---

    /// A constant tensor from program memory.
    pub fn tensor_from(&mut self, data: Vec<f32>, shape: &[usize]) -> Result<u32> {
        self.charge(cost::tensor(shape))?;
        let t = self.engine.constant(shape, data)?;
        self.insert(t)
    }

    /// A fresh parameter.
    pub fn parameter(&mut self, shape: &[usize], init: u32, a: f32) -> Result<u32> {
        const CALL: &str = "parameter";
        let shape_checked = chiron_engine::Shape::new(shape)?;
        let n = shape_checked.elements();
        // A scale (uniform, normal) is non-negative; a constant is any finite value.
        if !a.is_finite() || (a < 0.0 && init != 3) {
            return Err(SandboxError::abi(
                CALL,
                "scale must be finite and non-negative",
            ));
        }
        // Check the quota before generating values, so a huge request costs nothing.
        if self.live_elements.saturating_add(n as u64) > self.quotas.tensor_elements {
            return Err(SandboxError::Limit(Limit::TensorMemory));
        }
        self.charge(cost::tensor(shape).plus(cost::tensor(shape)))?;
        let values: Vec<f32> = match init {
            0 => vec![0.0; n],
            1 => (0..n)
                .map(|_| self.rng.gen_range(-1.0f32..=1.0) * a)
                .collect(),
            2 => (0..n).map(|_| normal(&mut self.rng) * a).collect(),
            3 => vec![a; n],
            other => return Err(SandboxError::abi(CALL, format!("unknown init {other}"))),
        };
        let t = self.engine.parameter(shape, values)?;
        self.store(t)
    }

    /// The shape of a tensor.
    pub fn shape(&self, handle: u32) -> Result<Vec<usize>> {
        let t = self.tensor("shape", handle)?;
        Ok(self.engine.shape(t).dims().to_vec())
    }

    /// The values of a tensor.
    pub fn read(&mut self, handle: u32) -> Result<Vec<f32>> {
        let dims = self.dims("read", handle)?;
        self.charge(cost::tensor(&dims))?;
        let t = self.tensor("read", handle)?;
        Ok(self.engine.read(t)?)
    }

    /// Convolution with square stride and padding (the first ABI's `conv2d`).
    pub fn conv2d(&mut self, x: u32, w: u32, b: u32, stride: u32, padding: u32) -> Result<u32> {
        self.conv2d_ex(
            x,
            w,
            b,
            &Conv2dOptions::square(stride as usize, padding as usize),
        )
    }

    /// Convolution with PyTorch's full geometry.
    pub fn conv2d_ex(&mut self, x: u32, w: u32, b: u32, options: &Conv2dOptions) -> Result<u32> {
        const CALL: &str = "conv2d";
        let cost = cost::conv2d(&self.dims(CALL, x)?, &self.dims(CALL, w)?, options);
        self.charge(cost)?;
        let out = self.engine.conv2d(
            self.tensor(CALL, x)?,
            self.tensor(CALL, w)?,
            self.optional(CALL, b)?,
            options,
        )?;
        self.insert(out)
    }

    /// Max pooling with a square window and no padding.
    pub fn max_pool2d(&mut self, x: u32, kernel: u32, stride: u32) -> Result<u32> {
        let options = Pool2dOptions::square(kernel as usize, stride as usize);
        self.pool(Pool::Max, "max_pool2d", x, &options)
    }

    /// Pooling by ABI code (`POOL_*`).
    pub fn pool2d(&mut self, kind: u32, x: u32, options: &Pool2dOptions) -> Result<u32> {
        const CALL: &str = "pool2d";
        let kind = match kind {
            0 => Pool::Max,
            1 => Pool::Avg,
            other => return Err(SandboxError::abi(CALL, format!("unknown pooling {other}"))),
        };
        self.pool(kind, CALL, x, options)
    }

    fn pool(
        &mut self,
        kind: Pool,
        call: &'static str,
        x: u32,
        options: &Pool2dOptions,
    ) -> Result<u32> {
        self.charge(cost::pool2d(kind, &self.dims(call, x)?, options))?;
        let out = self.engine.pool2d(kind, self.tensor(call, x)?, options)?;
        self.insert(out)
    }

    /// Adaptive average pooling to `[out_h, out_w]`.
    pub fn adaptive_avg_pool2d(&mut self, x: u32, out_h: u32, out_w: u32) -> Result<u32> {
        const CALL: &str = "adaptive_avg_pool2d";
        let out = [out_h as usize, out_w as usize];
        self.charge(cost::adaptive_avg_pool2d(&self.dims(CALL, x)?, out))?;
        let out = self
            .engine
            .adaptive_avg_pool2d(self.tensor(CALL, x)?, out)?;
        self.insert(out)
    }

    /// Affine layer.
    pub fn linear(&mut self, x: u32, w: u32, b: u32) -> Result<u32> {
        const CALL: &str = "linear";
        self.charge(cost::linear(&self.dims(CALL, x)?, &self.dims(CALL, w)?))?;
        let out = self.engine.linear(
            self.tensor(CALL, x)?,
            self.tensor(CALL, w)?,
            self.optional(CALL, b)?,
        )?;
        self.insert(out)
    }

    /// Element-wise unary op by ABI code.
    pub fn unary(&mut self, op: u32, x: u32) -> Result<u32> {
        let op = match op {
            0 => Unary::Relu,
            1 => Unary::Tanh,
            2 => Unary::Sigmoid,
            3 => Unary::Sqrt,
            4 => Unary::Softmax,
            5 => Unary::Exp,
            6 => Unary::Log,
            7 => Unary::Abs,
            8 => Unary::LeakyRelu,
            9 => Unary::Gelu,
            10 => Unary::Silu,
            other => return Err(SandboxError::abi("unary", format!("unknown op {other}"))),
        };
        self.charge(cost::elementwise(&self.dims("unary", x)?))?;
        let out = self.engine.unary(op, self.tensor("unary", x)?)?;
        self.insert(out)
    }

    /// Element-wise binary op by ABI code.
    pub fn binary(&mut self, op: u32, a: u32, b: u32) -> Result<u32> {
        const CALL: &str = "binary";
        let op = match op {
            0 => Binary::Add,
            1 => Binary::Sub,
            2 => Binary::Mul,
            3 => Binary::Div,
            4 => Binary::Pow,
            5 => Binary::Maximum,
            6 => Binary::Minimum,
            other => return Err(SandboxError::abi(CALL, format!("unknown op {other}"))),
        };
        self.charge(cost::binary(&self.dims(CALL, a)?, &self.dims(CALL, b)?))?;
        let out = self
            .engine
            .binary(op, self.tensor(CALL, a)?, self.tensor(CALL, b)?)?;
        self.insert(out)
    }

    /// `min(max(x, min), max)`, element-wise.
    pub fn clamp(&mut self, x: u32, min: f32, max: f32) -> Result<u32> {
        self.charge(cost::elementwise(&self.dims("clamp", x)?))?;
        let out = self.engine.clamp(self.tensor("clamp", x)?, min, max)?;
        self.insert(out)
    }

    /// `scale * x + shift`.
    pub fn affine(&mut self, x: u32, scale: f32, shift: f32) -> Result<u32> {
        self.charge(cost::elementwise(&self.dims("affine", x)?))?;
        let out = self
            .engine
            .affine(self.tensor("affine", x)?, scale, shift)?;
        self.insert(out)
    }

    /// Reshape.
    pub fn reshape(&mut self, x: u32, shape: &[usize]) -> Result<u32> {
        self.charge(Cost::default())?;
        let out = self.engine.reshape(self.tensor("reshape", x)?, shape)?;
        self.insert(out)
    }

    /// Cross-entropy loss (no label smoothing).
    pub fn cross_entropy(&mut self, logits: u32, labels: u32) -> Result<u32> {
        const CALL: &str = "cross_entropy";
        self.charge(cost::cross_entropy(&self.dims(CALL, logits)?))?;
        let out = self.engine.cross_entropy(
            self.tensor(CALL, logits)?,
            self.tensor(CALL, labels)?,
            0.0,
        )?;
        self.insert(out)
    }

    /// Cross-entropy loss with label smoothing.
    pub fn cross_entropy_smoothed(
        &mut self,
        logits: u32,
        labels: u32,
        smoothing: f32,
    ) -> Result<u32> {
        const CALL: &str = "cross_entropy_smoothed";
        self.charge(cost::cross_entropy_smoothed(&self.dims(CALL, logits)?))?;
        let out = self.engine.cross_entropy(
            self.tensor(CALL, logits)?,
            self.tensor(CALL, labels)?,
            smoothing,
        )?;
        self.insert(out)
    }

    /// Binary cross-entropy from logits.
    pub fn bce_with_logits(&mut self, logits: u32, targets: u32) -> Result<u32> {
        const CALL: &str = "bce_with_logits";
        self.charge(cost::bce_with_logits(&self.dims(CALL, logits)?))?;
        let out = self
            .engine
            .bce_with_logits(self.tensor(CALL, logits)?, self.tensor(CALL, targets)?)?;
        self.insert(out)
    }

    /// Mean of all elements.
    pub fn mean(&mut self, x: u32) -> Result<u32> {
        self.charge(cost::reduction(&self.dims("mean", x)?))?;
        let out = self.engine.mean(self.tensor("mean", x)?)?;
        self.insert(out)
    }

    /// A reduction by ABI code (`REDUCE_*`) over `axes`.
    pub fn reduce(&mut self, op: u32, x: u32, axes: &[u32], keepdim: u32) -> Result<u32> {
        const CALL: &str = "reduce";
        let op = match op {
            0 => Reduce::Sum,
            1 => Reduce::Mean,
            2 => Reduce::Max,
            3 => Reduce::Min,
            4 => Reduce::Var,
            other => return Err(SandboxError::abi(CALL, format!("unknown op {other}"))),
        };
        let axes = axis_list(CALL, axes)?;
        let keepdim = flag(CALL, "keepdim", keepdim)?;
        self.charge(cost::reduce(op, &self.dims(CALL, x)?, &axes))?;
        let out = self
            .engine
            .reduce(op, self.tensor(CALL, x)?, &axes, keepdim)?;
        self.insert(out)
    }

    /// Index of the largest value along `axis`.
    pub fn argmax(&mut self, x: u32, axis: u32, keepdim: u32) -> Result<u32> {
        const CALL: &str = "argmax";
        let keepdim = flag(CALL, "keepdim", keepdim)?;
        self.charge(cost::argmax(&self.dims(CALL, x)?, axis as usize))?;
        let out = self
            .engine
            .argmax(self.tensor(CALL, x)?, axis as usize, keepdim)?;
        self.insert(out)
    }

    /// The axes of `x` reordered by `perm`.
    pub fn permute(&mut self, x: u32, perm: &[u32]) -> Result<u32> {
        const CALL: &str = "permute";
        let perm = axis_list(CALL, perm)?;
        self.charge(cost::permute(&self.dims(CALL, x)?))?;
        let out = self.engine.permute(self.tensor(CALL, x)?, &perm)?;
        self.insert(out)
    }

    /// The tensors `xs` joined along `axis`.
    pub fn concat(&mut self, xs: &[u32], axis: u32) -> Result<u32> {
        const CALL: &str = "concat";
        if xs.is_empty() || xs.len() > MAX_CONCAT {
            return Err(SandboxError::abi(
                CALL,
                format!("{} tensors outside 1..={MAX_CONCAT}", xs.len()),
            ));
        }
        let dims = xs
            .iter()
            .map(|&x| self.dims(CALL, x))
            .collect::<Result<Vec<_>>>()?;
        self.charge(cost::concat(dims.iter().map(Vec::as_slice)))?;
        let tensors = xs
            .iter()
            .map(|&x| self.tensor(CALL, x))
            .collect::<Result<Vec<_>>>()?;
        let out = self.engine.concat(&tensors, axis as usize)?;
        self.insert(out)
    }

    /// `len` entries of `axis` from `start`.
    pub fn narrow(&mut self, x: u32, axis: u32, start: u32, len: u32) -> Result<u32> {
        const CALL: &str = "narrow";
        self.charge(cost::narrow(
            &self.dims(CALL, x)?,
            axis as usize,
            len as usize,
        ))?;
        let out = self.engine.narrow(
            self.tensor(CALL, x)?,
            axis as usize,
            start as usize,
            len as usize,
        )?;
        self.insert(out)
    }

    /// The entries of `axis` at `indices`.
    pub fn index_select(&mut self, x: u32, axis: u32, indices: u32) -> Result<u32> {
        const CALL: &str = "index_select";
        self.charge(cost::index_select(
            &self.dims(CALL, x)?,
            axis as usize,
            &self.dims(CALL, indices)?,
        ))?;
        let out = self.engine.index_select(
            self.tensor(CALL, x)?,
            axis as usize,
            self.tensor(CALL, indices)?,
        )?;
        self.insert(out)
    }

    /// Batched matrix product.
    pub fn matmul(&mut self, a: u32, b: u32) -> Result<u32> {
        const CALL: &str = "matmul";
        self.charge(cost::matmul(&self.dims(CALL, a)?, &self.dims(CALL, b)?))?;
        let out = self
            .engine
            .matmul(self.tensor(CALL, a)?, self.tensor(CALL, b)?)?;
        self.insert(out)
    }

    /// Normalises `x` over `axes`; returns the handles of the output, the mean and the
    /// variance.
    pub fn normalize(&mut self, x: u32, axes: &[u32], eps: f32) -> Result<[u32; 3]> {
        const CALL: &str = "normalize";
        let axes = axis_list(CALL, axes)?;
        if self.entries.len().saturating_add(3) > self.quotas.handles {
            return Err(SandboxError::Limit(Limit::Handles));
        }
        self.charge(cost::normalize(&self.dims(CALL, x)?, &axes))?;
        let out = self.engine.normalize(self.tensor(CALL, x)?, &axes, eps)?;
        let output = self.insert(out.output)?;
        let mean = self.insert(out.mean)?;
        let var = self.insert(out.var)?;
        Ok([output, mean, var])
    }

    /// Inverted dropout with probability `p`, its mask seeded from the run's stream.
    pub fn dropout(&mut self, x: u32, p: f32) -> Result<u32> {
        const CALL: &str = "dropout";
        self.charge(cost::dropout(&self.dims(CALL, x)?))?;
        let seed = self.rng.next_u64();
        let out = self.engine.dropout(self.tensor(CALL, x)?, p, seed)?;
        self.insert(out)
    }

    /// Turns gradient recording on (1) or off (0); returns the previous setting.
    pub fn set_grad_enabled(&mut self, enabled: u32) -> Result<u32> {
        let enabled = flag("set_grad_enabled", "enabled", enabled)?;
        Ok(u32::from(std::mem::replace(
            &mut self.grad_enabled,
            enabled,
        )))
    }

    /// Milliseconds before the run's deadline, rounded down to a multiple of 100 (a coarse
    /// clock, enough to plan epochs by); `u64::MAX` without a deadline.
    pub fn time_left_ms(&self) -> u64 {
        self.interrupt.time_left().map_or(u64::MAX, |left| {
            u64::try_from(left.as_millis()).unwrap_or(u64::MAX) / 100 * 100
        })
    }

    /// Rows whose arg-max equals the label.
    pub fn count_correct(&mut self, logits: u32, labels: u32) -> Result<u32> {
        const CALL: &str = "count_correct";
        let (ld, yd) = (self.dims(CALL, logits)?, self.dims(CALL, labels)?);
        self.charge(cost::tensor(&ld).plus(cost::tensor(&yd)))?;
        let (l, y) = (self.tensor(CALL, logits)?, self.tensor(CALL, labels)?);
        let dims = self.engine.shape(l).dims().to_vec();
        let [n, classes] = dims[..] else {
            return Err(SandboxError::abi(
                CALL,
                format!("logits {dims:?} are not [N, C]"),
            ));
        };
        if self.engine.shape(y).dims() != [n] {
            return Err(SandboxError::abi(CALL, "labels are not [N]"));
        }
        let (scores, labels) = (self.engine.read(l)?, self.engine.read(y)?);
        let correct = scores
            .chunks_exact(classes)
            .zip(labels)
            .filter(|(row, label)| argmax(row) as f32 == *label)
            .count();
        Ok(correct as u32)
    }

    // --- optimisers ---

    /// A new optimiser over parameter handles.
    pub fn optimizer(&mut self, params: Vec<u32>, kind: OptimizerKind) -> Result<u32> {
        const CALL: &str = "optimizer";
        for &p in &params {
            self.tensor(CALL, p)?;
        }
        let mut sorted = params.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != params.len() {
            return Err(SandboxError::abi(CALL, "a parameter is listed twice"));
        }
        let opt = Optimizer::new(kind, params.len())?;
        if self.entries.len() >= self.quotas.handles {
            return Err(SandboxError::Limit(Limit::Handles));
        }
        let handle = self.next_handle;
        self.next_handle = self
            .next_handle
            .checked_add(1)
            .filter(|&h| h != NONE)
            .ok_or(SandboxError::Limit(Limit::Handles))?;
        self.entries
            .insert(handle, Entry::Optimizer(Box::new(opt), params));
        Ok(handle)
    }

    /// The optimiser behind handle `opt`, for the ABI call `call`.
    fn optimizer_mut(&mut self, call: &'static str, opt: u32) -> Result<&mut Optimizer<B>> {
        match self.entries.get_mut(&opt) {
            Some(Entry::Optimizer(o, _)) => Ok(o),
            _ => Err(SandboxError::abi(
                call,
                format!("{opt} is not an optimizer"),
            )),
        }
    }

    /// Changes an optimiser's learning rate.
    pub fn optimizer_set_lr(&mut self, opt: u32, lr: f32) -> Result<()> {
        Ok(self.optimizer_mut("optimizer_set_lr", opt)?.set_lr(lr)?)
    }

    /// Clips the optimiser's later steps to a global gradient norm.
    pub fn optimizer_clip_grad_norm(&mut self, opt: u32, max_norm: f32) -> Result<()> {
        Ok(self
            .optimizer_mut("optimizer_clip_grad_norm", opt)?
            .clip_grad_norm(max_norm)?)
    }

    /// Back-propagates from `loss` and updates the optimiser's parameters in place.
    pub fn optimizer_step(&mut self, opt: u32, loss: u32) -> Result<()> {
        const CALL: &str = "optimizer_step";
        if self.untracked.contains(&loss) {
            return Err(SandboxError::abi(
                CALL,
                "the loss was computed with gradients off (set_grad_enabled(0), no_grad): \
                 there is nothing to back-propagate",
            ));
        }
        let elements = match self.entries.get(&opt) {
            Some(Entry::Optimizer(_, params)) => params
                .iter()
                .filter_map(|&p| match self.entries.get(&p) {
                    Some(Entry::Tensor(_, n)) => Some(*n),
                    _ => None,
                })
                .sum(),
            _ => 0,
        };
        self.charge(cost::backward(self.since_step).plus(cost::optimizer_step(elements)))?;
        self.since_step = Cost::default();
        let grads = self.engine.backward(self.tensor(CALL, loss)?)?;
        let Some(Entry::Optimizer(mut optimizer, params)) = self.entries.remove(&opt) else {
            return Err(SandboxError::abi(
                CALL,
                format!("{opt} is not an optimizer"),
            ));
        };
        let result = match self.exchange.take() {
            Some(mut exchange) => {
                let result =
                    self.exchange_step(exchange.as_mut(), opt, &optimizer, &params, &grads);
                self.exchange = Some(exchange);
                result
            }
            None => self.apply_step(&mut optimizer, &params, &grads),
        };
        self.entries
            .insert(opt, Entry::Optimizer(optimizer, params));
        result
    }

    fn apply_step(
        &mut self,
        optimizer: &mut Optimizer<B>,
        params: &[u32],
        grads: &B::Gradients,
    ) -> Result<()> {
        const CALL: &str = "optimizer_step";
        let mut values = params
            .iter()
            .map(|&p| self.tensor(CALL, p).cloned())
            .collect::<Result<Vec<_>>>()?;
        optimizer.step(&self.engine, &mut values, grads)?;
        for (&p, v) in params.iter().zip(values) {
            if let Some(Entry::Tensor(t, _)) = self.entries.get_mut(&p) {
                *t = v;
            }
        }
        Ok(())
    }

    /// A worker's step: the gradients go to the exchange, and the parameters it returns
    /// replace the program's (registered first, at the optimizer's first step).
    fn exchange_step(
        &mut self,
        exchange: &mut dyn ParameterExchange,
        handle: u32,
        optimizer: &Optimizer<B>,
        params: &[u32],
        grads: &B::Gradients,
    ) -> Result<()> {
        const CALL: &str = "optimizer_step";
        let tensors = params
            .iter()
            .map(|&p| self.tensor(CALL, p).cloned())
            .collect::<Result<Vec<_>>>()?;
        if !self.registered.contains(&handle) {
            let values = tensors
                .iter()
                .map(|t| self.engine.read(t))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let start = exchange
                .register(handle, values)
                .map_err(|e| SandboxError::Exchange(e.0))?;
            self.replace_parameters(params, &tensors, start)?;
            self.registered.insert(handle);
        }
        let gradients = tensors
            .iter()
            .map(|t| {
                self.engine
                    .grad(grads, t)
                    .map(|g| self.engine.read(&g))
                    .transpose()
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let update = Update {
            kind: optimizer.kind(),
            max_grad_norm: optimizer.max_grad_norm(),
            gradients,
        };
        let updated = exchange
            .step(handle, update)
            .map_err(|e| SandboxError::Exchange(e.0))?;
        self.replace_parameters(params, &tensors, updated)
    }

    /// Stores `values` as the parameters at `params` (whose current tensors are `old`),
    /// each with its old shape.
    fn replace_parameters(
        &mut self,
        params: &[u32],
        old: &[B::Tensor],
        values: Vec<Vec<f32>>,
    ) -> Result<()> {
        if values.len() != params.len() {
            return Err(SandboxError::Exchange(format!(
                "{} parameters came back for an optimizer of {}",
                values.len(),
                params.len()
            )));
        }
        for ((&p, old), values) in params.iter().zip(old).zip(values) {
            let shape = self.engine.shape(old);
            if values.len() != shape.elements() {
                return Err(SandboxError::Exchange(format!(
                    "a parameter of {} elements came back with {}",
                    shape.elements(),
                    values.len()
                )));
            }
            let updated = self.engine.parameter(shape.dims(), values)?;
            if let Some(Entry::Tensor(t, _)) = self.entries.get_mut(&p) {
                *t = updated;
            }
        }
        Ok(())
    }

    // --- results ---

    /// Records a metric for the owner.
    pub fn report_metric(&mut self, name: &[u8], epoch: u32, value: f32) -> Result<()> {
        const CALL: &str = "report_metric";
        let Mode::Train { metrics, .. } = &mut self.mode else {
            return Err(SandboxError::abi(CALL, "only available in train"));
        };
        if name.is_empty() || name.len() > MAX_METRIC_NAME {
            return Err(SandboxError::abi(CALL, "name must be 1..=32 bytes"));
        }
        let name =
            std::str::from_utf8(name).map_err(|_| SandboxError::abi(CALL, "name is not UTF-8"))?;
        if self.metrics_sent >= self.quotas.metrics {
            return Err(SandboxError::abi(CALL, "too many metrics"));
        }
        self.metrics_sent += 1;
        metrics(Metric {
            name: name.to_owned(),
            epoch,
            value,
        });
        Ok(())
    }

    /// Records the program's progress within an epoch for the owner. Charged like a log line;
    /// never counted against the metric quota, since the enclave passes on at most one a
    /// second.
    pub fn report_progress(&mut self, epoch: u32, step: u32, steps: u32) -> Result<()> {
        const CALL: &str = "report_progress";
        self.charge(Cost {
            flops: 16,
            bytes: 0,
        })?;
        let Mode::Train { progress, .. } = &mut self.mode else {
            return Err(SandboxError::abi(CALL, "only available in train"));
        };
        if steps == 0 || step > steps {
            return Err(SandboxError::abi(
                CALL,
                "step must be within 0..=steps, steps above 0",
            ));
        }
        progress(Progress { epoch, step, steps });
        Ok(())
    }

    /// A log line from the program, for the log sink if there is one.
    pub fn log(&mut self, message: &[u8]) -> Result<()> {
        if message.len() > MAX_LOG_LINE {
            return Err(SandboxError::abi("log", "a line above 4 KiB"));
        }
        self.charge(Cost {
            flops: message.len() as u64,
            bytes: 0,
        })?;
        if let Some(sink) = self.log.as_mut() {
            sink(&String::from_utf8_lossy(message));
        }
        Ok(())
    }

    /// Saves the model (the last call wins).
    pub fn save_model(&mut self, params: &[u32], meta: Vec<u8>) -> Result<()> {
        const CALL: &str = "save_model";
        let header = self.training(CALL)?.header().clone();
        if meta.len() > MAX_MODEL_META {
            return Err(SandboxError::abi(CALL, "metadata above 64 KiB"));
        }
        if params.len() > crate::model::MAX_MODEL_TENSORS {
            return Err(SandboxError::abi(CALL, "too many tensors"));
        }
        let mut saved = Cost::default();
        for &p in params {
            saved = saved.plus(cost::tensor(&self.dims(CALL, p)?));
        }
        self.charge(saved)?;
        let mut tensors = Vec::with_capacity(params.len());
        for &p in params {
            let t = self.tensor(CALL, p)?;
            let dims = self.engine.shape(t).dims().to_vec();
            tensors.push((dims, Arc::new(self.engine.read(t)?)));
        }
        let model = Model {
            header: Some(header),
            tensors,
            meta,
        };
        // The loader's own check: what a program saves is what a query enclave can load.
        model
            .validate()
            .map_err(|e| SandboxError::abi(CALL, e.to_string()))?;
        self.saved = Some(model);
        Ok(())
    }

    fn model(&self, call: &'static str) -> Result<&Arc<Model>> {
        match &self.mode {
            Mode::Predict { model, .. } => Ok(model),
            Mode::Train { .. } => Err(SandboxError::abi(call, "only available in predict")),
        }
    }

    /// Tensors in the loaded model.
    pub fn model_len(&self) -> Result<u32> {
        Ok(self.model("model_len")?.tensors.len() as u32)
    }

    /// A model tensor as a constant.
    pub fn model_tensor(&mut self, index: u32) -> Result<u32> {
        const CALL: &str = "model_tensor";
        let model = Arc::clone(self.model(CALL)?);
        let (dims, values) = model
            .tensors
            .get(index as usize)
            .ok_or_else(|| SandboxError::abi(CALL, format!("no model tensor {index}")))?;
        self.charge(cost::tensor(dims))?;
        let t = self.engine.shared_constant(dims, values)?;
        self.insert(t)
    }

    /// The model's metadata.
    pub fn model_meta(&self) -> Result<Vec<u8>> {
        Ok(self.model("model_meta")?.meta.clone())
    }

    /// The query's input tensor.
    pub fn query_input(&mut self) -> Result<u32> {
        const CALL: &str = "query_input";
        let Mode::Predict {
            input_shape, input, ..
        } = &self.mode
        else {
            return Err(SandboxError::abi(CALL, "only available in predict"));
        };
        let (shape, input) = (input_shape.clone(), input.clone());
        self.charge(cost::tensor(&shape))?;
        let t = self.engine.constant(&shape, input)?;
        self.insert(t)
    }

    /// Sets the query's scores.
    pub fn set_output(&mut self, scores: u32) -> Result<()> {
        const CALL: &str = "set_output";
        let model = Arc::clone(self.model(CALL)?);
        let dims = self.dims(CALL, scores)?;
        self.charge(cost::tensor(&dims))?;
        let t = self.tensor(CALL, scores)?;
        let expected_rows = match &self.mode {
            Mode::Predict { input_shape, .. } => input_shape.first().copied().unwrap_or(0),
            Mode::Train { .. } => 0,
        };
        let classes = model.header.as_ref().map_or(0, |h| h.classes as usize);
        if dims != [expected_rows, classes] {
            return Err(SandboxError::BadOutput(format!(
                "scores {dims:?}, expected [{expected_rows}, {classes}]"
            )));
        }
        self.output = Some((dims, self.engine.read(t)?));
        Ok(())
    }
}

/// A list of axes from the program, as the engine takes them.
fn axis_list(call: &'static str, axes: &[u32]) -> Result<Vec<usize>> {
    if axes.len() > MAX_AXES {
        return Err(SandboxError::abi(
            call,
            format!("{} axes, at most {MAX_AXES}", axes.len()),
        ));
    }
    Ok(axes.iter().map(|&a| a as usize).collect())
}

/// A 0/1 flag from the program.
fn flag(call: &'static str, name: &str, value: u32) -> Result<bool> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(SandboxError::abi(
            call,
            format!("{name} {other} is not 0 or 1"),
        )),
    }
}

fn parse_split(call: &'static str, split: u32) -> Result<Split> {
    match split {
        0 => Ok(Split::Train),
        1 => Ok(Split::Valid),
        other => Err(SandboxError::abi(call, format!("unknown split {other}"))),
    }
}

/// Index of the largest value; the first on ties. NaN never wins.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] || row[best].is_nan() {
            best = i;
        }
    }
    best
}

/// A standard normal sample (Box–Muller), so the stream is the same on every platform.
fn normal(rng: &mut ChaCha20Rng) -> f32 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.r#gen();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}
