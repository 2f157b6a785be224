//! Programs run directly in the sandbox, without a service: the compact address space (linear
//! memories reserve only their maximum size and every access is bounds-checked explicitly, as
//! inside an SGX enclave of fixed size) confines a program exactly as the default layout does
//! (guard pages) and trains the same model; and every optimizer of the ABI trains.
#![allow(clippy::expect_used)] // test helpers: a failed step is a failed test

use std::sync::Arc;
use std::time::Duration;

use chiron_sandbox::{AddressSpace, Sandbox, SandboxConfig, SandboxError, TrainJob, TrainingData};
use chiron_tests::*;
use wasm_encoder::{
    CodeSection, ExportKind, ExportSection, Function, FunctionSection, Instruction, MemArg,
    MemorySection, MemoryType, Module, TypeSection,
};

/// A program whose `chiron_train` loads 4 bytes at `address` from its one-page memory.
fn program_reading(address: i32) -> Vec<u8> {
    let mut module = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([], []);
    module.section(&types);
    let mut functions = FunctionSection::new();
    functions.function(0);
    functions.function(0);
    module.section(&functions);
    let mut memories = MemorySection::new();
    memories.memory(MemoryType {
        minimum: 1,
        maximum: Some(1),
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    module.section(&memories);
    let mut exports = ExportSection::new();
    exports.export("memory", ExportKind::Memory, 0);
    exports.export("chiron_train", ExportKind::Func, 0);
    exports.export("chiron_predict", ExportKind::Func, 1);
    module.section(&exports);
    let mut code = CodeSection::new();
    let mut train = Function::new([]);
    train
        .instruction(&Instruction::I32Const(address))
        .instruction(&Instruction::I32Load(MemArg {
            offset: 0,
            align: 2,
            memory_index: 0,
        }))
        .instruction(&Instruction::Drop)
        .instruction(&Instruction::End);
    code.function(&train);
    let mut predict = Function::new([]);
    predict.instruction(&Instruction::End);
    code.function(&predict);
    module.section(&code);
    module.finish()
}

fn sandbox(address_space: AddressSpace) -> Sandbox {
    Sandbox::new(SandboxConfig {
        address_space,
        ..SandboxConfig::default()
    })
    .expect("sandbox")
}

fn iris_data() -> Arc<TrainingData> {
    let plain = iris();
    Arc::new(TrainingData::from_plaintext(plain.header, plain.body).expect("data"))
}

#[test]
fn reads_outside_the_memory_trap_in_both_layouts() {
    for layout in [AddressSpace::Reserved, AddressSpace::Compact] {
        let sandbox = sandbox(layout);
        for address in [65_536 - 3, 65_536, 1 << 30, -4] {
            let program = sandbox.load(&program_reading(address)).expect("loads");
            let err = sandbox
                .train(
                    &program,
                    TrainJob::new(iris_data(), [0; 32], 1, Duration::from_secs(10)),
                )
                .expect_err("out of bounds");
            assert!(
                matches!(&err, SandboxError::Trap(kind) if kind.contains("out of bounds")),
                "{layout:?} {address}: {err:?}"
            );
        }
        // The last word of the page is in bounds: the program runs and saves no model.
        let program = sandbox.load(&program_reading(65_536 - 4)).expect("loads");
        let err = sandbox
            .train(
                &program,
                TrainJob::new(iris_data(), [0; 32], 1, Duration::from_secs(10)),
            )
            .expect_err("no model");
        assert!(matches!(err, SandboxError::NoModel), "{layout:?}: {err:?}");
    }
}

#[test]
fn both_layouts_train_the_same_model() {
    let wasm = program_wasm("chiron_mlp");
    let models: Vec<_> = [AddressSpace::Reserved, AddressSpace::Compact]
        .into_iter()
        .map(|layout| {
            let sandbox = sandbox(layout);
            let program = sandbox.load(&wasm).expect("loads");
            sandbox
                .train(
                    &program,
                    TrainJob::new(iris_data(), [5; 32], 5, Duration::from_secs(120)),
                )
                .expect("trains")
        })
        .collect();
    assert_eq!(models[0].meta, models[1].meta);
    assert_eq!(models[0].tensors, models[1].tensors);
}

/// Every optimizer of the ABI (Nesterov SGD, AdamW, RMSprop, each clipping its gradients)
/// trains through the sandbox and lowers the loss; a negative clipping norm ends the program.
#[test]
fn the_optimizers_of_the_abi_train_and_their_misuse_ends_the_program() {
    let sandbox = sandbox(AddressSpace::Reserved);
    let program = sandbox
        .load(&program_wasm("hostile_optimizers"))
        .expect("loads");
    let losses = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&losses);
    let model = sandbox
        .train(
            &program,
            TrainJob::new(iris_data(), [1; 32], 2, Duration::from_secs(60))
                .with_metrics(move |m| sink.lock().expect("lock").push(m.value)),
        )
        .expect("trains");
    assert_eq!(model.tensors.len(), 2);
    let losses = losses.lock().expect("lock").clone();
    assert_eq!(losses.len(), 60);
    for run in losses.chunks(20) {
        assert!(run[19] < run[0], "the loss did not fall: {run:?}");
    }
    let err = sandbox
        .train(
            &program,
            TrainJob::new(iris_data(), [1; 32], 7, Duration::from_secs(60)),
        )
        .expect_err("misuse");
    assert!(err.to_string().contains("clip_grad_norm"), "{err}");
}
