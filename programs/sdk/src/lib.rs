//! The Chiron SDK: a safe Rust API for provider programs.
//!
//! A provider program is compiled to WebAssembly and runs inside the enclave's sandbox. It
//! never sees the owner's data directly: tensors live in the runtime and the program holds
//! [`Tensor`] handles to them, builds a model out of the runtime's operations, trains it
//! with a runtime [`Optimizer`] and saves it with [`save_model`]. Later, the same program's
//! `predict` entry point rebuilds the forward pass from the [`model`] and answers queries.
//!
//! ```no_run
//! use chiron_sdk::{Dataset, Init, Optimizer, Split, Tensor};
//!
//! pub fn train() {
//!     let features: u32 = Dataset::dims().iter().product();
//!     let classes = Dataset::classes();
//!     let w = Tensor::parameter(&[features, classes], Init::torch_default(features));
//!     let b = Tensor::parameter(&[classes], Init::torch_default(features));
//!     let mut opt = Optimizer::adam(&[&w, &b], 1e-3, 0.9, 0.999, 1e-8, 0.0);
//!     let indices: Vec<u32> = (0..Dataset::count(Split::Train).min(64)).collect();
//!     let (x, y) = Dataset::batch(Split::Train, &indices);
//!     let x = x.reshape(&[indices.len() as u32, features]);
//!     let loss = x.linear(&w, Some(&b)).cross_entropy(&y);
//!     opt.step(&loss);
//!     chiron_sdk::save_model(&[&w, &b], b"linear");
//! }
//!
//! pub fn predict() {
//!     let (w, b) = (chiron_sdk::model::tensor(0), chiron_sdk::model::tensor(1));
//!     let x = chiron_sdk::query_input();
//!     let n = x.shape()[0];
//!     let x = x.reshape(&[n, w.shape()[0]]);
//!     chiron_sdk::set_output(&x.linear(&w, Some(&b)));
//! }
//!
//! chiron_sdk::export_program!(train = train, predict = predict);
//! // The extraction policy for every model it trains (see `manifest`).
//! chiron_sdk::manifest!(chiron_sdk::manifest::Manifest::new(
//!     10_000,
//!     chiron_sdk::manifest::Answers::Label,
//! ));
//! ```
//!
//! Misuse of the host ABI (a bad shape, an unknown handle, an exceeded quota) is never
//! reported as an error value: the runtime traps the program and the job fails. The SDK
//! therefore returns plain values, and checks the few things it can check locally with
//! panics that say what went wrong (a panic also ends the program). Panic messages and
//! [`println!`] lines go to [`log`]: the provider sees them when running the program on their
//! own data with `chiron run-local`; in an enclave they go nowhere.

pub mod augment;
pub mod guide;
pub mod inputs;
pub mod manifest;
pub mod meta;
pub mod model;
pub mod nn;
pub mod schedule;
#[rustfmt::skip] // The ABI contract is kept exactly as written.
pub mod sys;

mod data;
mod optim;
mod rng;
mod tensor;

pub use data::{Dataset, Kind, MAX_BATCH, Split};
pub use optim::Optimizer;
pub use rng::Rng;
pub use tensor::{Init, Pool, Tensor};

/// Longest metric name the runtime accepts, in bytes.
pub const MAX_METRIC_NAME: usize = 32;

/// Sends a metric to the data owner (encrypted; the provider and the platform never see
/// it). `epoch` counts from 0.
///
/// # Panics
/// If `name` is empty or longer than [`MAX_METRIC_NAME`] bytes.
pub fn report_metric(name: &str, epoch: u32, value: f32) {
    assert!(
        !name.is_empty() && name.len() <= MAX_METRIC_NAME,
        "metric name must be 1..={MAX_METRIC_NAME} bytes: {name:?}"
    );
    // SAFETY: `name` is a live UTF-8 buffer of exactly `name.len()` bytes; the runtime only
    // reads it during the call.
    unsafe { sys::chiron_report_metric(name.as_ptr(), len_u32(name.len()), epoch, value) }
}

/// Tells the data owner how far epoch `epoch` (from 0) is: `step` of `steps` steps done. It
/// feeds the owner's progress bar (live jobs; a private job shows nothing before its budget
/// has passed). Call it as often as you like: the runtime passes on at most one a second.
///
/// # Panics
/// If `steps` is 0 or `step` is above it.
pub fn report_progress(epoch: u32, step: usize, steps: usize) {
    assert!(
        steps > 0 && step <= steps,
        "progress must be 0..=steps of steps > 0, not {step} of {steps}"
    );
    // SAFETY: plain integers; the runtime validates them again.
    unsafe { sys::chiron_report_progress(epoch, len_u32(step), len_u32(steps)) }
}

/// Longest log line the runtime accepts, in bytes.
pub const MAX_LOG_LINE: usize = 4096;

/// Writes a log line where the provider can see it: on their own terminal when they run the
/// program on their own data with `chiron run-local`. In an enclave the line goes nowhere
/// (nothing a program says may reach anyone but the owner). Lines longer than
/// [`MAX_LOG_LINE`] bytes are cut at a character boundary.
pub fn log(line: &str) {
    let mut end = line.len().min(MAX_LOG_LINE);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    let line = &line[..end];
    // SAFETY: `line` is a live UTF-8 buffer of exactly `line.len()` bytes; the runtime only
    // reads it during the call.
    unsafe { sys::chiron_log(line.as_ptr(), len_u32(line.len())) }
}

/// `println!` for programs: formats its arguments and sends them to [`log`]. `std`'s own
/// `println!` writes nowhere on `wasm32-unknown-unknown`; import this one instead
/// (`use chiron_sdk::println;`).
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::log(&::std::format!($($arg)*))
    };
}

/// Makes panics say what went wrong: the message and its place go to [`log`] before the
/// program ends. [`export_program!`] installs it at both entry points.
pub fn install_panic_hook() {
    // "panicked at <file>:<line>:<column>:\n<message>"
    std::panic::set_hook(Box::new(|info| log(&info.to_string())));
}

/// Turns gradient recording on or off for the operations that follow; returns the previous
/// setting. Off, every result is outside any gradient graph: evaluation work (validation,
/// metrics) then keeps no graph and costs less, but a loss computed while it is off cannot
/// be passed to [`Optimizer::step`] (the runtime ends the program). Parameters created while
/// it is off are still trainable. Prefer [`no_grad`], which restores the setting.
pub fn set_grad_enabled(enabled: bool) -> bool {
    // SAFETY: no pointers; the runtime only flips its setting.
    unsafe { sys::chiron_set_grad_enabled(u32::from(enabled)) != 0 }
}

/// Runs `f` with gradient recording off (see [`set_grad_enabled`]) and restores the previous
/// setting afterwards, PyTorch's `with torch.no_grad():`.
///
/// ```no_run
/// # fn demo(x: &chiron_sdk::Tensor, w: &chiron_sdk::Tensor, y: &chiron_sdk::Tensor) {
/// let correct = chiron_sdk::no_grad(|| x.linear(w, None).count_correct(y));
/// # }
/// ```
pub fn no_grad<T>(f: impl FnOnce() -> T) -> T {
    /// Restores the setting even if `f` unwinds (natively; in wasm a panic aborts).
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            set_grad_enabled(self.0);
        }
    }
    let _restore = Restore(set_grad_enabled(false));
    f()
}

/// Time left before the runtime stops the program (the job's time budget), rounded down to a
/// whole 100 ms; `None` where the run has no time budget (a native reference run). Use it to
/// fit training into the budget, e.g. stop starting epochs when one more would not fit.
///
/// This is the only clock a program has: `std::time::Instant::now()` and
/// `SystemTime::now()` panic on `wasm32-unknown-unknown` (the sandbox gives the program no
/// clock), which ends the program, so do not call them.
pub fn time_left() -> Option<core::time::Duration> {
    // SAFETY: no arguments; the runtime only reads its deadline.
    let ms = unsafe { sys::chiron_time_left_ms() };
    (ms != u64::MAX).then(|| core::time::Duration::from_millis(ms))
}

/// Saves the model: the values of `params` (in this order; [`model::tensor`] returns them
/// by index) and free-form `meta` bytes describing the architecture (at most 64 KiB). The
/// last call wins; `train` must call it at least once.
pub fn save_model(params: &[&Tensor], meta: &[u8]) {
    let handles = tensor::handles(params);
    // SAFETY: both pointers name live buffers of the given lengths, only read during the
    // call; every handle comes from a live `Tensor`.
    unsafe {
        sys::chiron_save_model(
            handles.as_ptr(),
            len_u32(handles.len()),
            meta.as_ptr(),
            len_u32(meta.len()),
        )
    }
}

/// The query's inputs in `predict`: a constant `[N, ...dims]`, laid out like the training
/// features (images `[N, C, H, W]` in `[0, 1]`, tables `[N, columns]` standardised).
pub fn query_input() -> Tensor {
    // SAFETY: no arguments; the returned handle is fresh and owned by the new `Tensor`.
    unsafe { Tensor::from_handle(sys::chiron_query_input()) }
}

/// Answers the query in `predict` with `scores` `[N, classes]`, logits: the runtime ranks
/// them, and where the owner asked for scores answers with their softmax (give logits, not
/// probabilities, if the manifest allows scores).
pub fn set_output(scores: &Tensor) {
    // SAFETY: `scores` is a live handle; the runtime validates its shape.
    unsafe { sys::chiron_set_output(scores.handle()) }
}

/// A slice length as the ABI's `u32`.
///
/// # Panics
/// If it does not fit (only possible on 64-bit hosts, never on wasm32).
pub(crate) fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or_else(|_| panic!("length {len} exceeds the ABI's u32"))
}

/// Exports a program's entry points to the sandbox.
///
/// ```ignore
/// chiron_sdk::export_program!(train = crate::train, predict = crate::predict);
/// ```
///
/// expands to `#[unsafe(no_mangle)] pub extern "C" fn chiron_train()` and
/// `chiron_predict()` calling the two functions, on `wasm32` only: natively, the program is
/// a plain library whose `train`/`predict` functions a reference runner calls directly
/// (and two programs linked into one binary must not both define the exports).
#[macro_export]
macro_rules! export_program {
    (train = $train:path, predict = $predict:path $(,)?) => {
        /// Sandbox entry point: trains and saves a model.
        #[cfg(target_arch = "wasm32")]
        #[unsafe(no_mangle)]
        pub extern "C" fn chiron_train() {
            $crate::install_panic_hook();
            $train()
        }

        /// Sandbox entry point: answers one query with the loaded model.
        #[cfg(target_arch = "wasm32")]
        #[unsafe(no_mangle)]
        pub extern "C" fn chiron_predict() {
            $crate::install_panic_hook();
            $predict()
        }
    };
}
