//! Helpers shared by the sandbox's test files.

use std::sync::Arc;

use chiron_engine::CpuBackend;
use chiron_proto::dataset::{DatasetHeader, DatasetKind, ElementEncoding};
use chiron_sandbox::runtime::{Mode, Runtime};
use chiron_sandbox::{Model, Quotas};

/// A runtime serving one query of four features, `input`, on an empty model of a three-class
/// table.
#[allow(dead_code)] // not every test file uses the default quotas
pub fn predict_runtime(input: [f32; 4]) -> Runtime<CpuBackend> {
    predict_runtime_with(input, Quotas::default())
}

/// [`predict_runtime`] under `quotas`.
#[allow(dead_code)] // not every test file sets its own quotas
pub fn predict_runtime_with(input: [f32; 4], quotas: Quotas) -> Runtime<CpuBackend> {
    let header = DatasetHeader {
        kind: DatasetKind::Tabular,
        dims: vec![4],
        classes: 3,
        train_count: 1,
        valid_count: 0,
        encoding: ElementEncoding::F32,
    };
    let mode = Mode::Predict {
        model: Arc::new(Model {
            header: Some(header),
            tensors: vec![],
            meta: vec![],
        }),
        input_shape: vec![1, 4],
        input: input.to_vec(),
    };
    Runtime::new(CpuBackend::new(), quotas, [0; 32], mode)
}
