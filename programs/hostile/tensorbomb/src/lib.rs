//! Hostile fixture `hostile-tensorbomb`: leaks runtime tensors without end.
//!
//! Attacks the **tensor-memory and handle quotas**. Tensors live outside the program's
//! linear memory, so the memory limit does not see them: it creates 1024×1024 parameters
//! (4 MiB each, on the host) and forgets their handles so that they are never freed,
//! until the runtime's live-element (or handle) quota stops it.

use chiron_sdk::{Init, Tensor};

/// Leaks 1024×1024 parameters until stopped.
pub fn train() {
    loop {
        std::mem::forget(Tensor::parameter(&[1024, 1024], Init::Zeros));
    }
}

/// The same attack on the prediction path.
pub fn predict() {
    train()
}

chiron_sdk::export_program!(train = train, predict = predict);
