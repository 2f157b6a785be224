//! The memory gauge counts what the runtime allocates and refuses, before allocating, a host
//! call whose output would not fit. This test binary installs the counting allocator, as the
//! enclave does.
#![allow(clippy::expect_used)] // test helpers: a failed step is a failed test

mod common;

use std::sync::atomic::Ordering;

use chiron_engine::CpuBackend;
use chiron_sandbox::runtime::Runtime;
use chiron_sandbox::{CountingAllocator, Limit, SandboxError, memory};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn runtime() -> Runtime<CpuBackend> {
    common::predict_runtime([0.0; 4])
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
