//! The Chiron sandbox: untrusted provider programs in wasmtime, behind the Chiron host ABI.
//!
//! A provider program is a WebAssembly module that imports only module `chiron` (see the
//! SDK's `sys.rs` for the list) and exports `memory`, `chiron_train` and `chiron_predict`.
//! It gets no WASI: no files, clock, network, threads or randomness of its own. Every way out
//! is an ABI call that [`runtime::Runtime`] validates, and every limit is explicit
//! configuration ([`SandboxConfig`]): a wall-clock deadline (epoch interruption), an
//! instruction budget (fuel) for queries, linear memory, stack depth, runtime tensor memory
//! and live handles. Floating-point NaNs are canonicalised so runs are deterministic.
//!
//! ```no_run
//! # fn demo(wasm: &[u8], data: std::sync::Arc<chiron_sandbox::TrainingData>) -> Result<(), chiron_sandbox::SandboxError> {
//! use chiron_sandbox::{Sandbox, SandboxConfig, TrainJob};
//! let sandbox = Sandbox::new(SandboxConfig::default())?;
//! let program = sandbox.load(wasm)?;
//! let trained = sandbox.train(&program, TrainJob::new(data, [7; 32], 3, std::time::Duration::from_secs(600)))?;
//! # Ok(()) }
//! ```

mod abi;
mod data;
mod error;
pub mod exchange;
pub mod lint;
pub mod memory;
mod model;
pub mod runtime;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use chiron_engine::DefaultBackend;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, Store, Trap,
};

pub use data::{DataError, Split, TrainingData, decode_into};
pub use error::{Limit, SandboxError};
pub use memory::CountingAllocator;
pub use model::{Model, ModelFormatError};
pub use runtime::{Metric, Progress, Quotas};

use abi::{MemoryLimiter, RunState};
use runtime::{Mode, Runtime};

/// How often the deadline clock ticks.
const TICK: Duration = Duration::from_millis(10);

/// Resource limits and engine settings for every program run.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// Largest linear memory a program may grow to, in bytes.
    pub max_memory: usize,
    /// Largest wasm call-stack, in bytes.
    pub max_stack: usize,
    /// Runtime-side quotas (tensor memory, handles, metrics).
    pub quotas: Quotas,
    /// Instruction budget of one `predict` call.
    pub predict_fuel: u64,
    /// Wall-clock budget of one `predict` call.
    pub predict_deadline: Duration,
    /// Compute budget of one `predict` call, in [`chiron_engine::cost::Cost::flops`].
    pub predict_compute: u64,
    /// Instances that may exist at once (pooling allocator slots).
    pub max_instances: u32,
    /// How much address space each linear memory reserves.
    pub address_space: AddressSpace,
}

/// How linear memories are laid out in the process's address space.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AddressSpace {
    /// wasmtime's default: each memory reserves several GiB of virtual address space with
    /// guard pages, so bounds checks are free. The pool reserves `max_instances` times that,
    /// which is nothing on an ordinary 64-bit process.
    #[default]
    Reserved,
    /// Each memory reserves only `max_memory`, with no guard region, and every access is
    /// bounds-checked explicitly: for an SGX enclave, whose whole address space is its fixed
    /// enclave size (the pool then needs `max_instances × max_memory`).
    Compact,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            max_memory: 256 << 20,
            max_stack: 1 << 20,
            quotas: Quotas::default(),
            predict_fuel: 2_000_000_000,
            predict_deadline: Duration::from_secs(5),
            predict_compute: 1 << 36,
            max_instances: 16,
            address_space: AddressSpace::Reserved,
        }
    }
}

/// One training run's inputs.
pub struct TrainJob {
    /// The decrypted dataset.
    pub data: Arc<TrainingData>,
    /// Seed of the runtime's random stream (chosen by the owner).
    pub seed: [u8; 32],
    /// The owner's epoch budget.
    pub epochs: u32,
    /// Wall-clock budget; the program is stopped when it runs out.
    pub time_budget: Duration,
    /// Receives the program's metrics as they are reported.
    pub metrics: Box<dyn FnMut(Metric) + Send>,
    /// Receives the program's step progress within each epoch.
    pub progress: Box<dyn FnMut(runtime::Progress) + Send>,
    /// Receives the program's log lines, if anyone may see them (never in an enclave).
    pub log: Option<runtime::LogSink>,
    /// On a worker of a distributed job, where optimizer steps go ([`exchange`]); `None`
    /// steps locally.
    pub exchange: Option<Box<dyn exchange::ParameterExchange>>,
    /// When the time budget runs out after the program saved a model, that model is the
    /// run's result ([`Trained::cut_short`]) instead of a [`Limit::TimeBudget`] failure.
    pub keep_last_save: bool,
}

/// What a training run produced.
#[derive(Debug)]
pub struct Trained {
    /// The model the program saved last.
    pub model: Model,
    /// The time budget ran out before the program returned: `model` is its last save (only
    /// with [`TrainJob::keep_last_save`]).
    pub cut_short: bool,
}

impl TrainJob {
    /// A job that discards metrics.
    pub fn new(
        data: Arc<TrainingData>,
        seed: [u8; 32],
        epochs: u32,
        time_budget: Duration,
    ) -> Self {
        Self {
            data,
            seed,
            epochs,
            time_budget,
            metrics: Box::new(|_| {}),
            progress: Box::new(|_| {}),
            log: None,
            exchange: None,
            keep_last_save: false,
        }
    }

    /// Keeps the program's last saved model when the time budget runs out (programs save
    /// at each epoch's end), instead of failing the run.
    pub fn keep_last_save(mut self, keep: bool) -> Self {
        self.keep_last_save = keep;
        self
    }

    /// Sends optimizer steps to `exchange` (a worker of a distributed job).
    pub fn with_exchange(mut self, exchange: Box<dyn exchange::ParameterExchange>) -> Self {
        self.exchange = Some(exchange);
        self
    }

    /// Sends the program's log lines to `sink`: for a provider running the program on their
    /// own data (`chiron run-local`), never in an enclave.
    pub fn with_log(mut self, sink: impl FnMut(&str) + Send + 'static) -> Self {
        self.log = Some(Box::new(sink));
        self
    }

    /// Sends the program's step progress to `sink`.
    pub fn with_progress(mut self, sink: impl FnMut(runtime::Progress) + Send + 'static) -> Self {
        self.progress = Box::new(sink);
        self
    }

    /// Sends metrics to `sink`.
    pub fn with_metrics(mut self, sink: impl FnMut(Metric) + Send + 'static) -> Self {
        self.metrics = Box::new(sink);
        self
    }
}

/// A provider program that passed load-time checks, ready to instantiate.
pub struct Program {
    pre: InstancePre<RunState>,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program").finish_non_exhaustive()
    }
}

/// The wasm engine, its ABI linker and the deadline clock, shared by all runs.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<RunState>,
    config: SandboxConfig,
    clock: Clock,
}

impl Sandbox {
    /// Builds the engine with `config`'s limits.
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let mut wasm = Config::new();
        wasm.consume_fuel(true)
            .epoch_interruption(true)
            .cranelift_nan_canonicalization(true)
            .max_wasm_stack(config.max_stack);
        if config.address_space == AddressSpace::Compact {
            let max_memory = u64::try_from(config.max_memory).unwrap_or(u64::MAX);
            wasm.memory_reservation(max_memory)
                .memory_guard_size(0)
                .memory_reservation_for_growth(0)
                .guard_before_linear_memory(false);
        }
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(config.max_instances)
            .total_memories(config.max_instances)
            .total_tables(config.max_instances)
            .max_memory_size(config.max_memory);
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm).map_err(internal)?;
        let mut linker = Linker::new(&engine);
        abi::define(&mut linker).map_err(internal)?;
        let clock = Clock::start(engine.clone());
        Ok(Self {
            engine,
            linker,
            config,
            clock,
        })
    }

    /// Compiles and checks a program: it must import nothing but the Chiron ABI and export
    /// `memory`, `chiron_train` and `chiron_predict`.
    pub fn load(&self, wasm: &[u8]) -> Result<Program, SandboxError> {
        let module =
            Module::new(&self.engine, wasm).map_err(|e| SandboxError::Refused(root(&e)))?;
        for import in module.imports() {
            if import.module() != "chiron" {
                return Err(SandboxError::Refused(format!(
                    "it imports `{}::{}`; only the `chiron` host ABI is available",
                    import.module(),
                    import.name()
                )));
            }
        }
        for export in ["chiron_train", "chiron_predict"] {
            let ok = module
                .get_export(export)
                .and_then(|e| e.func().cloned())
                .is_some_and(|f| f.params().len() == 0 && f.results().len() == 0);
            if !ok {
                return Err(SandboxError::Refused(format!(
                    "it does not export `{export}` as a function without arguments or results"
                )));
            }
        }
        if module
            .get_export("memory")
            .and_then(|e| e.memory().cloned())
            .is_none()
        {
            return Err(SandboxError::Refused("it does not export `memory`".into()));
        }
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| SandboxError::Refused(root(&e)))?;
        Ok(Program { pre })
    }

    /// Runs the program's `train` on `job` and returns the model it saved.
    pub fn train(&self, program: &Program, job: TrainJob) -> Result<Trained, SandboxError> {
        let mode = Mode::Train {
            data: job.data,
            epochs: job.epochs,
            metrics: job.metrics,
            progress: job.progress,
        };
        let mut runtime = Runtime::new(
            DefaultBackend::new(),
            self.config.quotas.clone(),
            job.seed,
            mode,
        );
        if let Some(sink) = job.log {
            runtime = runtime.with_log(sink);
        }
        if let Some(exchange) = job.exchange {
            runtime = runtime.with_exchange(exchange);
        }
        let (outcome, mut runtime) =
            self.run(program, runtime, "chiron_train", u64::MAX, job.time_budget);
        let cut_short = match outcome {
            Ok(()) => false,
            // A save is whole once the call returned; what ran after it is lost.
            Err(SandboxError::Limit(Limit::TimeBudget)) if job.keep_last_save => true,
            Err(e) => return Err(e),
        };
        match (runtime.take_model(), cut_short) {
            (Some(model), cut_short) => Ok(Trained { model, cut_short }),
            (None, true) => Err(SandboxError::Limit(Limit::TimeBudget)),
            (None, false) => Err(SandboxError::NoModel),
        }
    }

    /// Runs the program's `predict` in a fresh instance on one query's inputs (`[n, ...dims]`)
    /// and returns its scores `[n, classes]`, row-major.
    pub fn predict(
        &self,
        program: &Program,
        model: Arc<Model>,
        input_shape: Vec<usize>,
        input: Vec<f32>,
    ) -> Result<Vec<f32>, SandboxError> {
        let mode = Mode::Predict {
            model,
            input_shape,
            input,
        };
        // Queries get no randomness that could differ between runs: a fixed seed.
        let quotas = Quotas {
            compute: self.config.predict_compute,
            ..self.config.quotas.clone()
        };
        let runtime = Runtime::new(DefaultBackend::new(), quotas, [0; 32], mode);
        let (outcome, mut runtime) = self.run(
            program,
            runtime,
            "chiron_predict",
            self.config.predict_fuel,
            self.config.predict_deadline,
        );
        outcome?;
        runtime
            .take_output()
            .map(|(_, scores)| scores)
            .ok_or_else(|| SandboxError::BadOutput("set_output was never called".into()))
    }

    fn run(
        &self,
        program: &Program,
        runtime: Runtime<DefaultBackend>,
        entry: &str,
        fuel: u64,
        deadline: Duration,
    ) -> (Result<(), SandboxError>, Runtime<DefaultBackend>) {
        // Native work stops at the same deadline as wasm (within one kernel quantum).
        runtime
            .interrupt()
            .set_deadline(std::time::Instant::now() + deadline);
        let state = RunState {
            runtime,
            limiter: MemoryLimiter {
                max_memory: self.config.max_memory,
                max_table_elements: 1 << 16,
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        let outcome = Self::call(&mut store, program, entry, fuel, self.clock.ticks(deadline));
        // The runtime outlives a failed call: what the program saved before it is still there.
        (outcome, store.into_data().runtime)
    }

    fn call(
        store: &mut Store<RunState>,
        program: &Program,
        entry: &str,
        fuel: u64,
        ticks: u64,
    ) -> Result<(), SandboxError> {
        store.set_fuel(fuel).map_err(internal)?;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        let instance = program.pre.instantiate(&mut *store).map_err(classify)?;
        let func = instance
            .get_typed_func::<(), ()>(&mut *store, entry)
            .map_err(|e| SandboxError::Refused(root(&e)))?;
        func.call(&mut *store, ()).map_err(classify)
    }
}

/// Maps a wasmtime failure to what stopped the program.
fn classify(e: wasmtime::Error) -> SandboxError {
    let e = match e.downcast::<SandboxError>() {
        Ok(ours) => return ours,
        Err(e) => e,
    };
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => SandboxError::Limit(Limit::Fuel),
        Some(Trap::Interrupt) => SandboxError::Limit(Limit::TimeBudget),
        Some(Trap::StackOverflow) => SandboxError::Limit(Limit::Stack),
        Some(trap) => SandboxError::Trap(trap.to_string()),
        None => SandboxError::Trap(root(&e)),
    }
}

fn root(e: &wasmtime::Error) -> String {
    e.root_cause().to_string()
}

fn internal(e: wasmtime::Error) -> SandboxError {
    SandboxError::Internal(root(&e))
}

/// Advances the engine's epoch every [`TICK`], turning wall-clock budgets into deadlines.
struct Clock {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Clock {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(TICK);
                engine.increment_epoch();
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn ticks(&self, budget: Duration) -> u64 {
        u64::try_from(budget.as_millis() / TICK.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

impl Drop for Clock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
