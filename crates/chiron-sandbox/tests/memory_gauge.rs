//! The memory gauge counts what the runtime allocates and refuses, before allocating, a host
//! call whose output would not fit. This test binary installs the counting allocator, as the
//! enclave does.
#![allow(clippy::expect_used)] // test helpers: a failed step is a failed test

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chiron_engine::CpuBackend;
use chiron_proto::dataset::{DatasetHeader, DatasetKind, ElementEncoding};
use chiron_sandbox::runtime::{Mode, Runtime};
use chiron_sandbox::{CountingAllocator, Limit, Model, Quotas, SandboxError, memory};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn runtime() -> Runtime<CpuBackend> {
    let header = DatasetHeader {
        kind: DatasetKind::Tabular,
        dims: vec![4],
        classes: 3,
        train_count: 1,
        valid_count: 0,
        encoding: ElementEncoding::F32,
    };
    let model = Model {
        header: Some(header),
        tensors: vec![],
        meta: vec![],
    };
    let mode = Mode::Predict {
        model: Arc::new(model),
        input_shape: vec![1, 4],
        input: vec![0.0; 4],
    };
    Runtime::new(CpuBackend::new(), Quotas::default(), [0; 32], mode)
}

// One test function: the gauge and its limit are process-wide.
#[test]
fn the_gauge_counts_allocations_and_the_runtime_asks_it_first() {
    // Counting.
    let before = memory::in_use();
    let block = vec![1u8; 64 << 20];
    assert!(memory::installed());
    assert!(memory::in_use() >= before + (64 << 20));
    drop(block);
    assert!(memory::in_use() < before + (1 << 20));

    // An allocation past the limit is not refused (that would abort the process) but
    // trips the switch that interrupts the kernels.
    memory::set_limit(memory::in_use() + (16 << 20));
    assert!(!memory::OVER_LIMIT.load(Ordering::Acquire));
    let block = vec![1u8; 32 << 20];
    assert!(memory::OVER_LIMIT.load(Ordering::Acquire));
    drop(block);

    // The runtime refuses, before allocating, an output that would not fit.
    memory::set_limit(memory::in_use() + (16 << 20));
    let mut rt = runtime();
    let small = rt.tensor_from(vec![0.5; 1024], &[1024]);
    assert!(small.is_ok(), "{small:?}");
    let in_use = memory::in_use();
    let big = rt.parameter(&[4096, 4096], 1, 0.1);
    assert!(
        matches!(big, Err(SandboxError::Limit(Limit::RuntimeMemory))),
        "{big:?}"
    );
    assert!(
        memory::in_use() < in_use + (1 << 20),
        "nothing was allocated"
    );

    memory::set_limit(usize::MAX);
    assert!(rt.parameter(&[4096, 4096], 1, 0.1).is_ok());
}
