//! Programs run directly in the sandbox, without a service: the compact address space (linear
//! memories reserve only their maximum size and every access is bounds-checked explicitly, as
//! inside an SGX enclave of fixed size) confines a program exactly as the default layout does
//! (guard pages) and trains the same model; every optimizer of the ABI trains; and every
//! operation of the second ABI (convolution geometry, pooling, broadcasting, reductions,
//! shape operations, normalisation, dropout, losses, no-grad and the time left) trains a
//! network, while each hostile use of one ends the program with a clear error.
#![allow(clippy::expect_used)] // test helpers: a failed step is a failed test

use std::sync::Arc;
use std::time::Duration;

use chiron_sandbox::{
    AddressSpace, Limit, Quotas, Sandbox, SandboxConfig, SandboxError, TrainJob, TrainingData,
};
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
                .model
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
        .expect("trains")
        .model;
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

/// Epoch budgets of `hostile-newops` from this one select a misuse (its `MISUSE_BASE`).
const MISUSE_BASE: u32 = 100;
/// Training steps of its well-formed run (its `STEPS`).
const NEWOPS_STEPS: usize = 30;

/// A sandbox whose compute budget (2^36 operations, far above what the fixture's honest run
/// needs) is below the fixture's broadcast product of 2^40.
fn newops_sandbox() -> Sandbox {
    Sandbox::new(SandboxConfig {
        quotas: Quotas {
            compute: 1 << 36,
            ..Quotas::default()
        },
        ..SandboxConfig::default()
    })
    .expect("sandbox")
}

/// Every new operation in one small network (padded, dilated and grouped convolutions,
/// max, average, adaptive and global pooling, batch and layer norm, dropout, batched
/// products, broadcasting, clamping, reductions, argmax, permutations, concatenation,
/// narrowing, index selection, smoothed cross-entropy, BCE, MSE) trains through the
/// sandbox: the loss falls, validation runs under no-grad, and the time left is told.
#[test]
fn every_new_operation_trains_under_the_sandbox() {
    let sandbox = newops_sandbox();
    let program = sandbox
        .load(&program_wasm("hostile_newops"))
        .expect("loads");
    let metrics = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Arc::clone(&metrics);
    let model = sandbox
        .train(
            &program,
            TrainJob::new(iris_data(), [3; 32], 1, Duration::from_secs(120))
                .with_metrics(move |m| sink.lock().expect("lock").push(m)),
        )
        .expect("trains")
        .model;
    assert_eq!(model.meta, b"newops");
    assert_eq!(model.tensors.len(), 7);
    let metrics = metrics.lock().expect("lock").clone();
    let train: Vec<f32> = metrics
        .iter()
        .filter(|m| m.name == "train_loss")
        .map(|m| m.value)
        .collect();
    assert_eq!(train.len(), NEWOPS_STEPS, "time was left for every step");
    assert!(train.iter().all(|l| l.is_finite()), "{train:?}");
    let early: f32 = train[..5].iter().sum();
    let late: f32 = train[NEWOPS_STEPS - 5..].iter().sum();
    assert!(late < early, "the loss did not fall: {train:?}");
    let valid: Vec<f32> = metrics
        .iter()
        .filter(|m| m.name == "valid_loss")
        .map(|m| m.value)
        .collect();
    assert!(matches!(valid[..], [v] if v.is_finite()), "{valid:?}");

    // The same seed trains the same model: dropout's masks come from the seeded stream.
    let again = sandbox
        .train(
            &program,
            TrainJob::new(iris_data(), [3; 32], 1, Duration::from_secs(120)),
        )
        .expect("trains")
        .model;
    assert_eq!(again.tensors, model.tensors);

    // The model answers queries through the same operations.
    let scores = sandbox
        .predict(&program, Arc::new(model), vec![2, 4], vec![0.1; 8])
        .expect("answers");
    assert_eq!(scores.len(), 2 * 3);
    assert!(scores.iter().all(|s| s.is_finite()), "{scores:?}");
}

/// What ends the program in each misuse of `hostile-newops`, in the order of its `MISUSES`.
enum Refusal {
    /// The ABI layer refuses the call (a code, a list, a pointer, a flag).
    Abi(&'static str),
    /// The engine refuses the operation's shapes or arguments.
    Engine,
    /// A budget refuses it before it runs.
    Limit(Limit),
}

#[test]
fn each_hostile_use_of_a_new_operation_ends_the_program_clearly() {
    use Refusal::{Abi, Engine};
    let expected: &[(&str, Refusal)] = &[
        ("binary: unknown op 7", Abi("binary")),
        ("reduce: unknown op 9", Abi("reduce")),
        ("reduce: 9 axes", Abi("reduce")),
        ("reduce: axes pointer outside memory", Abi("reduce")),
        ("reduce: keepdim 2", Abi("reduce")),
        ("reduce: repeated axis", Engine),
        ("pool2d: unknown kind 2", Abi("pool2d")),
        ("pool2d: padding above half the window", Engine),
        ("conv2d_ex: 0 groups", Engine),
        ("conv2d_ex: groups not dividing the channels", Engine),
        ("conv2d_ex: stride 0", Engine),
        // Its declared cost saturates: the budget refuses it before the engine looks.
        (
            "conv2d_ex: huge padding and dilation",
            Refusal::Limit(Limit::Compute),
        ),
        ("adaptive_avg_pool2d: output 0", Engine),
        ("clamp: min above max", Engine),
        ("argmax: axis 9", Engine),
        ("permute: 9 entries", Abi("permute")),
        ("permute: not a permutation", Engine),
        ("concat: no tensor", Abi("concat")),
        ("concat: 1025 tensors", Abi("concat")),
        ("concat: unknown handle", Abi("concat")),
        ("concat: mismatched shapes", Engine),
        ("narrow: beyond the end", Engine),
        ("index_select: index out of range", Engine),
        ("index_select: fractional index", Engine),
        ("index_select: indices of rank 2", Engine),
        ("matmul: mismatched inner dimension", Engine),
        (
            "matmul: broadcast product above the compute budget",
            Refusal::Limit(Limit::Compute),
        ),
        ("binary: shapes that do not broadcast", Engine),
        ("normalize: out pointer outside memory", Abi("normalize")),
        ("normalize: eps 0", Engine),
        ("normalize: 9 axes", Abi("normalize")),
        ("dropout: p = 1", Engine),
        ("dropout: p NaN", Engine),
        ("cross_entropy_smoothed: smoothing 2", Engine),
        ("bce_with_logits: mismatched shapes", Engine),
        ("set_grad_enabled: 2", Abi("set_grad_enabled")),
        (
            "optimizer_step: a loss computed under no_grad",
            Abi("optimizer_step"),
        ),
    ];
    let sandbox = newops_sandbox();
    let program = sandbox
        .load(&program_wasm("hostile_newops"))
        .expect("loads");
    for (case, (what, refusal)) in expected.iter().enumerate() {
        let epochs = MISUSE_BASE + u32::try_from(case).expect("few cases");
        let started = std::time::Instant::now();
        let err = sandbox
            .train(
                &program,
                TrainJob::new(iris_data(), [0; 32], epochs, Duration::from_secs(60)),
            )
            .expect_err(what);
        let ok = match (refusal, &err) {
            (Abi(call), SandboxError::Abi { call: c, .. }) => call == c,
            // A refusal of shapes or arguments, not a failure of the engine.
            (Engine, SandboxError::Engine(e)) => {
                let text = e.to_string();
                text.starts_with("shape mismatch") || text.starts_with("invalid argument")
            }
            (Refusal::Limit(limit), SandboxError::Limit(l)) => limit == l,
            _ => false,
        };
        assert!(ok, "case {case} ({what}): {err:?}");
        // Refused before any work: well within a second, the program's setup included.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "case {case} ({what}) took {:?}",
            started.elapsed()
        );
    }
}
