//! The saved model, in `predict`: the tensors and metadata `train` passed to
//! [`save_model`](crate::save_model).

use crate::{Tensor, sys};

/// Number of tensors in the model.
pub fn len() -> u32 {
    // SAFETY: argument-free query.
    unsafe { sys::chiron_model_len() }
}

/// Whether the model holds no tensor.
pub fn is_empty() -> bool {
    len() == 0
}

/// Tensor `index` of the model (in the order saved), as a constant.
pub fn tensor(index: u32) -> Tensor {
    // SAFETY: plain value argument; the runtime checks the index.
    Tensor::from_handle(unsafe { sys::chiron_model_tensor(index) })
}

/// All the model's tensors, in the order saved.
pub fn tensors() -> Vec<Tensor> {
    (0..len()).map(tensor).collect()
}

/// The model's metadata bytes.
pub fn meta() -> Vec<u8> {
    let mut out = vec![0u8; 256];
    loop {
        let cap = u32::try_from(out.len()).unwrap_or(u32::MAX);
        // SAFETY: `out` is writable for `cap` bytes and the runtime writes at most `cap`.
        let full = unsafe { sys::chiron_model_meta(out.as_mut_ptr(), cap) } as usize;
        if full <= out.len() {
            out.truncate(full);
            return out;
        }
        out.resize(full, 0);
    }
}
