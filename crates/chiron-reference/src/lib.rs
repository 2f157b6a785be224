//! Reference runs: a provider program trained with the engine directly, outside the
//! sandbox, to measure what confinement changes (nothing, numerically: the same seed gives
//! the same model) and what it costs.
//!
//! The example programs are linked natively as libraries; [`native`] defines the host ABI
//! symbols they import, backed by the same `Runtime` the sandbox uses.

pub mod native;

use std::sync::Arc;

use chiron_engine::DefaultBackend;
use chiron_sandbox::runtime::{Mode, Runtime};
use chiron_sandbox::{Metric, Model, Quotas, SandboxError, TrainingData};

/// An example program linked into this binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Example {
    /// `programs/cnn`.
    Cnn,
    /// `programs/mlp`.
    Mlp,
    /// `programs/resnet`.
    Resnet,
    /// `programs/vit`.
    Vit,
}

/// Trains `example` natively on `data`; returns the saved model.
pub fn train(
    example: Example,
    data: Arc<TrainingData>,
    seed: [u8; 32],
    epochs: u32,
    metrics: impl FnMut(Metric) + Send + 'static,
) -> Result<Model, SandboxError> {
    let entry = match example {
        Example::Cnn => chiron_cnn::train as fn(),
        Example::Mlp => chiron_mlp::train,
        Example::Resnet => chiron_resnet::train,
        Example::Vit => chiron_vit::train,
    };
    train_program(entry, data, seed, epochs, metrics)
}

/// Runs any natively linked program's `train` entry point on `data`; returns the saved
/// model.
pub fn train_program(
    entry: fn(),
    data: Arc<TrainingData>,
    seed: [u8; 32],
    epochs: u32,
    metrics: impl FnMut(Metric) + Send + 'static,
) -> Result<Model, SandboxError> {
    let mode = Mode::Train {
        data,
        epochs,
        metrics: Box::new(metrics),
        progress: Box::new(|_| {}),
    };
    native::install(Runtime::new(
        DefaultBackend::new(),
        Quotas::default(),
        seed,
        mode,
    ));
    entry();
    native::uninstall()
        .and_then(|mut rt| rt.take_model())
        .ok_or(SandboxError::NoModel)
}

/// Runs `example`'s `predict` natively on inputs `[n, ...dims]`; returns scores `[n, classes]`.
pub fn predict(
    example: Example,
    model: Arc<Model>,
    input_shape: Vec<usize>,
    input: Vec<f32>,
) -> Result<Vec<f32>, SandboxError> {
    let entry = match example {
        Example::Cnn => chiron_cnn::predict as fn(),
        Example::Mlp => chiron_mlp::predict,
        Example::Resnet => chiron_resnet::predict,
        Example::Vit => chiron_vit::predict,
    };
    predict_program(entry, model, input_shape, input)
}

/// Runs any natively linked program's `predict` entry point on inputs `[n, ...dims]`;
/// returns scores `[n, classes]`.
pub fn predict_program(
    entry: fn(),
    model: Arc<Model>,
    input_shape: Vec<usize>,
    input: Vec<f32>,
) -> Result<Vec<f32>, SandboxError> {
    let mode = Mode::Predict {
        model,
        input_shape,
        input,
    };
    native::install(Runtime::new(
        DefaultBackend::new(),
        Quotas::default(),
        [0; 32],
        mode,
    ));
    entry();
    native::uninstall()
        .and_then(|mut rt| rt.take_output())
        .map(|(_, scores)| scores)
        .ok_or_else(|| SandboxError::BadOutput("set_output was never called".into()))
}
