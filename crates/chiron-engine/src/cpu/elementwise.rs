//! Element-wise loops, split across threads when a tensor is large enough to pay for it.
//! Each element's result depends on that element alone, so the split cannot change values.
//! Large loops run in chunks and stop between chunks once their interrupt fires.

use rayon::prelude::*;

use crate::{EngineError, Interrupt};

/// Below this many elements a loop stays on the calling thread, without looking at its
/// interrupt (such a loop takes microseconds).
const PARALLEL_FROM: usize = 1 << 16;
const CHUNK: usize = 1 << 14;

type Result<T> = std::result::Result<T, EngineError>;

/// `f` applied to every element.
pub(crate) fn map(a: &[f32], i: &Interrupt, f: impl Fn(f32) -> f32 + Sync) -> Result<Vec<f32>> {
    if a.len() < PARALLEL_FROM {
        return Ok(a.iter().map(|&v| f(v)).collect());
    }
    let mut out = vec![0.0f32; a.len()];
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK))
        .try_for_each(|(o, a)| {
            i.check()?;
            o.iter_mut().zip(a).for_each(|(o, &v)| *o = f(v));
            Ok(())
        })?;
    Ok(out)
}

/// `f` applied to every pair of elements of two equally long slices.
pub(crate) fn zip(
    a: &[f32],
    b: &[f32],
    i: &Interrupt,
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Result<Vec<f32>> {
    if a.len() < PARALLEL_FROM {
        return Ok(a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect());
    }
    let mut out = vec![0.0f32; a.len()];
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .try_for_each(|(o, (a, b))| {
            i.check()?;
            o.iter_mut()
                .zip(a.iter().zip(b))
                .for_each(|(o, (&x, &y))| *o = f(x, y));
            Ok(())
        })?;
    Ok(out)
}

/// A copy of `a`.
pub(crate) fn copy(a: &[f32], i: &Interrupt) -> Result<Vec<f32>> {
    map(a, i, |v| v)
}

/// `len` copies of `v`.
pub(crate) fn filled(len: usize, v: f32, i: &Interrupt) -> Result<Vec<f32>> {
    let mut out = vec![0.0f32; len];
    if len < PARALLEL_FROM {
        out.fill(v);
        return Ok(out);
    }
    out.par_chunks_mut(CHUNK).try_for_each(|o| {
        i.check()?;
        o.fill(v);
        Ok(())
    })?;
    Ok(out)
}

/// `sum += g`, element-wise.
pub(crate) fn add_into(sum: &mut [f32], g: &[f32], i: &Interrupt) -> Result<()> {
    if sum.len() < PARALLEL_FROM {
        sum.iter_mut().zip(g).for_each(|(s, v)| *s += v);
        return Ok(());
    }
    sum.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .try_for_each(|(s, g)| {
            i.check()?;
            s.iter_mut().zip(g).for_each(|(s, v)| *s += v);
            Ok(())
        })
}

/// The sum of all elements in `f64`, added in a fixed order of chunks.
pub(crate) fn sum(a: &[f32], i: &Interrupt) -> Result<f64> {
    let mut total = 0.0f64;
    for chunk in a.chunks(PARALLEL_FROM) {
        i.check()?;
        total += chunk.iter().map(|&v| f64::from(v)).sum::<f64>();
    }
    Ok(total)
}
