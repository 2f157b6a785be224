//! Confinement changes nothing numerically: each example program trained in the sandbox and
//! the same program linked natively against the engine, from the same seed, give the same
//! model, bit for bit, and the same answers. (The engine's kernels do not depend on the
//! thread split, and the SDK computes its schedules' cosines with the same code on both
//! sides.)
#![allow(clippy::expect_used)] // test helpers: a failed step is a failed test

use std::sync::Arc;
use std::time::Duration;

use chiron_client::convert;
use chiron_reference::Example;
use chiron_sandbox::{Sandbox, SandboxConfig, TrainJob, TrainingData, runtime::argmax};
use chiron_tests::*;

#[test]
fn sandboxed_and_native_cnn_agree() {
    agree(Example::Cnn, "chiron_cnn");
}

/// Batch norm (running statistics), dropout, augmentation, strided convolutions and global
/// pooling, through the SDK's layers.
#[test]
fn sandboxed_and_native_resnet_agree() {
    agree(Example::Resnet, "chiron_resnet");
}

/// Attention (batched products, permutes), layer norm, GELU, label smoothing, AdamW with
/// clipping and a warm-up schedule.
#[test]
fn sandboxed_and_native_vit_agree() {
    agree(Example::Vit, "chiron_vit");
}

fn agree(example: Example, wasm: &str) {
    let plain = fashion_subset(1200);
    let data = Arc::new(TrainingData::from_plaintext(plain.header, plain.body).expect("data"));
    let seed = [9; 32];

    let sandbox = Sandbox::new(SandboxConfig::default()).expect("sandbox");
    let program = sandbox.load(&program_wasm(wasm)).expect("loads");
    let confined = sandbox
        .train(
            &program,
            TrainJob::new(Arc::clone(&data), seed, 1, Duration::from_secs(600)),
        )
        .expect("sandboxed training")
        .model;
    let native = chiron_reference::train(example, data, seed, 1, |_| {}).expect("native");

    assert_eq!(confined.tensors.len(), native.tensors.len());
    assert_eq!(confined.meta, native.meta);
    let mut max_diff = 0f32;
    for ((da, va), (db, vb)) in confined.tensors.iter().zip(&native.tensors) {
        assert_eq!(da, db);
        for (a, b) in va.iter().zip(vb.iter()) {
            max_diff = max_diff.max((a - b).abs());
        }
    }
    assert!(
        max_diff < 1e-4,
        "{wasm}: weights differ by up to {max_diff}"
    );

    let (images, labels) = fashion_test();
    let test = convert::load_idx_inputs(&images, &labels, Some(200)).expect("test set");
    let (confined, native) = (Arc::new(confined), Arc::new(native));
    let shape = vec![200, 1, 28, 28];
    let a = sandbox
        .predict(&program, confined, shape.clone(), test.features.clone())
        .expect("sandboxed predict");
    let b = chiron_reference::predict(example, native, shape, test.features).expect("native");
    let agree = a
        .chunks_exact(10)
        .zip(b.chunks_exact(10))
        .filter(|(x, y)| argmax(x) == argmax(y))
        .count();
    assert!(agree >= 199, "{wasm}: predictions agree on {agree}/200");
}
