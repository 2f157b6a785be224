//! Hostile fixture `hostile-badpointer`: hands the runtime pointers outside its memory.
//!
//! Attacks **pointer validation** in the host ABI: every ABI call that reads or writes the
//! program's linear memory takes a raw pointer and a length. These point past the end of
//! memory, or make `pointer + length` wrap around, hoping the runtime reads or writes
//! outside the sandbox. Each call must trap; if one is wrongly accepted, the next follows,
//! and the program never saves a model.

use chiron_sdk::{Tensor, sys};

/// Near the top of the 32-bit address space, far beyond any memory the program has.
const PAST_THE_END: usize = 0xFFFF_FF00;

/// Passes out-of-bounds and wrapping pointers to every kind of memory-reading ABI call.
pub fn train() {
    let real = Tensor::new(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let shape = [2u32, 2];
    // SAFETY: deliberately invalid pointers; the runtime must reject them before use.
    unsafe {
        // Reads a [2, 2] tensor's data from past the end of memory.
        sys::chiron_tensor(PAST_THE_END as *const f32, 4, shape.as_ptr(), 2);
        // Writes a tensor's values past the end of memory.
        sys::chiron_read(real.handle(), PAST_THE_END as *mut f32, 4);
        // A length that makes `pointer + 4 × length` wrap around.
        sys::chiron_read(real.handle(), 16 as *mut f32, u32::MAX);
        // A metric name past the end.
        sys::chiron_report_metric(PAST_THE_END as *const u8, 200, 0, 0.0);
        // Batch indices past the end.
        sys::chiron_batch_features(0, PAST_THE_END as *const u32, 64);
    }
    std::hint::black_box(real);
}

/// The same attack on the prediction path.
pub fn predict() {
    train()
}

chiron_sdk::export_program!(train = train, predict = predict);
