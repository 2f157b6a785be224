//! Hostile fixture `hostile-badhandle`: forges tensor handles.
//!
//! Attacks **handle validation** in the host ABI: handles are plain integers, so a program
//! can pass any number, hoping to read another job's tensor, confuse the runtime's tables,
//! or free what it does not own. Each call below must trap; if the runtime wrongly accepts
//! one, the next, different misuse follows, and the program never saves a model.

use chiron_sdk::{Tensor, sys};

/// Misuses handles, starting with a read of one that was never issued.
pub fn train() {
    let real = Tensor::new(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let never_issued = real.handle().wrapping_add(1000);
    let mut out = [0f32; 4];
    // SAFETY: `out` is writable for 4 values; the handle is deliberately forged, which the
    // runtime must reject (it is not memory-unsafe for the program).
    unsafe { sys::chiron_read(never_issued, out.as_mut_ptr(), 4) };
    // SAFETY: a forged handle again; no pointers involved.
    unsafe { sys::chiron_free(0x1234_5678) };
    // SAFETY: forged handles and a forged bias; no pointers involved.
    let mixed = unsafe { sys::chiron_linear(real.handle(), 0xdead_beef, 7) };
    // Use after free: the real handle, freed, then used (and freed) again.
    let stale = real.into_handle();
    // SAFETY: the handle is live here; freeing it is legitimate.
    unsafe { sys::chiron_free(stale) };
    // SAFETY: a stale handle, deliberately; no pointers involved.
    let _ = unsafe { sys::chiron_unary(sys::UNARY_RELU, stale) };
    // SAFETY: as above.
    unsafe { sys::chiron_free(stale) };
    std::hint::black_box((out, mixed));
}

/// The same attack on the prediction path.
pub fn predict() {
    train()
}

chiron_sdk::export_program!(train = train, predict = predict);
