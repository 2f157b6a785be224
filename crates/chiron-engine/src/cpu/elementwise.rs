//! Element-wise loops, split across threads when a tensor is large enough to pay for it.
//! Each element's result depends on that element alone, so the split cannot change values.

use rayon::prelude::*;

/// Below this many elements a loop stays on the calling thread.
const PARALLEL_FROM: usize = 1 << 16;
const CHUNK: usize = 1 << 14;

/// `f` applied to every element.
pub(crate) fn map(a: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    if a.len() < PARALLEL_FROM {
        return a.iter().map(|&v| f(v)).collect();
    }
    let mut out = vec![0.0f32; a.len()];
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK))
        .for_each(|(o, a)| o.iter_mut().zip(a).for_each(|(o, &v)| *o = f(v)));
    out
}

/// `f` applied to every pair of elements of two equally long slices.
pub(crate) fn zip(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    if a.len() < PARALLEL_FROM {
        return a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect();
    }
    let mut out = vec![0.0f32; a.len()];
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(o, (a, b))| {
            o.iter_mut()
                .zip(a.iter().zip(b))
                .for_each(|(o, (&x, &y))| *o = f(x, y))
        });
    out
}
