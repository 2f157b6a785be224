//! A program's step progress: passed on as reported, nonsense refused.
#![allow(clippy::expect_used)] // a failed step is a failed test

mod common;

use std::sync::{Arc, Mutex};

use chiron_engine::CpuBackend;
use chiron_proto::dataset::{DatasetHeader, DatasetKind, ElementEncoding};
use chiron_sandbox::runtime::{Mode, Runtime};
use chiron_sandbox::{Progress, Quotas, SandboxError, TrainingData};

#[test]
fn progress_reaches_the_owner_and_nonsense_traps_the_program() {
    let header = DatasetHeader {
        kind: DatasetKind::Tabular,
        dims: vec![2],
        classes: 2,
        train_count: 1,
        valid_count: 0,
        encoding: ElementEncoding::F32,
    };
    let mut body = 1u32.to_le_bytes().to_vec();
    for x in [0.5f32, -0.5] {
        body.extend_from_slice(&x.to_le_bytes());
    }
    let data = TrainingData::from_plaintext(header, body).expect("a dataset");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let mode = Mode::Train {
        data: Arc::new(data),
        epochs: 1,
        metrics: Box::new(|_| {}),
        progress: Box::new(move |p| sink.lock().expect("lock").push(p)),
    };
    let mut runtime = Runtime::new(CpuBackend::new(), Quotas::default(), [0; 32], mode);
    runtime.report_progress(0, 3, 10).expect("in range");
    runtime.report_progress(1, 10, 10).expect("the last step");
    for (step, steps) in [(11, 10), (0, 0)] {
        let err = runtime
            .report_progress(0, step, steps)
            .expect_err("out of range");
        assert!(matches!(err, SandboxError::Abi { .. }), "{err:?}");
    }
    assert_eq!(
        *seen.lock().expect("lock"),
        [
            Progress {
                epoch: 0,
                step: 3,
                steps: 10
            },
            Progress {
                epoch: 1,
                step: 10,
                steps: 10
            }
        ]
    );

    // Only training has progress to report.
    let mut predicting = common::predict_runtime([0.0; 4]);
    assert!(predicting.report_progress(0, 1, 2).is_err());
}
