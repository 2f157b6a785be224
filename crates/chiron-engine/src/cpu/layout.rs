//! Strided walks over row-major tensors: broadcasting, permutations, and the rows of a
//! reduction.
//!
//! [`map`] computes each output value from values read at strided offsets of its sources,
//! so one loop serves broadcasting (a stride of 0 on a broadcast axis), permutations (the
//! source's strides reordered) and gradients shaped like either. Each output depends on its
//! own position alone, so the thread split cannot change values.

use rayon::prelude::*;

use crate::interrupt::Pace;
use crate::{EngineError, Interrupt, MAX_RANK};

/// Strides (in elements) of the axes of an output shape, padded with zeros.
pub(crate) type Strides = [usize; MAX_RANK];

/// Outputs computed between two looks at the interrupt.
const CHUNK: usize = 1 << 14;
/// Below this many outputs a walk stays on the calling thread.
const PARALLEL_FROM: usize = 1 << 16;

const INTERNAL: EngineError = EngineError::Internal { op: "strided walk" };

/// The element count of `dims` (saturating: validated shapes never get there).
pub(crate) fn elements(dims: &[usize]) -> usize {
    dims.iter().fold(1usize, |n, &d| n.saturating_mul(d))
}

/// Row-major strides of `dims`.
pub(crate) fn strides(dims: &[usize]) -> Strides {
    let rank = dims.len().min(MAX_RANK);
    let mut out = [0; MAX_RANK];
    let mut step = 1usize;
    for i in (0..rank).rev() {
        out[i] = step;
        step = step.saturating_mul(dims[i]);
    }
    out
}

/// The strides with which a tensor shaped `operand` is read at the positions of a tensor
/// shaped `out` under NumPy broadcasting (shapes aligned at their last axis): 0 on every
/// axis the operand lacks or holds once.
pub(crate) fn broadcast_strides(operand: &[usize], out: &[usize]) -> Strides {
    let own = strides(operand);
    let mut s = [0; MAX_RANK];
    let shift = out.len().saturating_sub(operand.len());
    for (i, &d) in operand.iter().enumerate() {
        if d != 1
            && let (Some(slot), Some(&stride)) = (s.get_mut(i + shift), own.get(i))
        {
            *slot = stride;
        }
    }
    s
}

/// The strides with which a tensor shaped `dims` is read in the order of its axes permuted
/// by `perm` (output axis `i` is input axis `perm[i]`).
pub(crate) fn permuted_strides(dims: &[usize], perm: &[usize]) -> Strides {
    let own = strides(dims);
    let mut s = [0; MAX_RANK];
    for (slot, &p) in s.iter_mut().zip(perm) {
        *slot = own.get(p).copied().unwrap_or(0);
    }
    s
}

/// A position in a row-major walk over `dims`, with the matching offset in each source.
struct Walk<'a, const K: usize> {
    dims: &'a [usize],
    strides: &'a [Strides; K],
    index: [usize; MAX_RANK],
    offsets: [usize; K],
}

impl<'a, const K: usize> Walk<'a, K> {
    /// The walk at output position `flat`.
    fn at(dims: &'a [usize], strides: &'a [Strides; K], mut flat: usize) -> Self {
        let mut index = [0; MAX_RANK];
        for (i, &d) in dims.iter().enumerate().rev() {
            index[i] = flat % d.max(1);
            flat /= d.max(1);
        }
        let mut offsets = [0usize; K];
        for (o, s) in offsets.iter_mut().zip(strides) {
            *o = index
                .iter()
                .zip(s)
                .fold(0usize, |acc, (&i, &s)| acc.wrapping_add(i.wrapping_mul(s)));
        }
        Self {
            dims,
            strides,
            index,
            offsets,
        }
    }

    /// Moves `run` positions along the innermost axis, which must not take it past the end
    /// of the current innermost row, then carries into the outer axes as [`Walk::advance`]
    /// does if the row is done.
    fn advance_run(&mut self, run: usize) {
        let Some(last) = self.dims.len().checked_sub(1) else {
            return;
        };
        if run == 0 {
            return;
        }
        // One step less than the run, then one ordinary step that carries if needed.
        self.index[last] += run - 1;
        for (o, s) in self.offsets.iter_mut().zip(self.strides) {
            *o = o.wrapping_add((run - 1).wrapping_mul(s[last]));
        }
        self.advance();
    }

    /// Positions left in the current innermost row, this one included.
    fn left_in_row(&self) -> usize {
        self.dims
            .len()
            .checked_sub(1)
            .map_or(1, |last| self.dims[last] - self.index[last])
    }

    /// Moves to the next output position (back to the first after the last).
    fn advance(&mut self) {
        let mut axis = self.dims.len();
        while axis > 0 {
            axis -= 1;
            self.index[axis] += 1;
            for (o, s) in self.offsets.iter_mut().zip(self.strides) {
                *o = o.wrapping_add(s[axis]);
            }
            if self.index[axis] < self.dims[axis] {
                return;
            }
            let d = self.dims[axis];
            for (o, s) in self.offsets.iter_mut().zip(self.strides) {
                *o = o.wrapping_sub(d.wrapping_mul(s[axis]));
            }
            self.index[axis] = 0;
        }
    }
}

/// Whether every offset a walk over `dims` with `strides` reaches lies below `len`.
fn reaches_within(dims: &[usize], strides: &Strides, len: usize) -> bool {
    let last = dims.iter().zip(strides).try_fold(0usize, |acc, (&d, &s)| {
        d.checked_sub(1)
            .and_then(|d| d.checked_mul(s))
            .and_then(|v| acc.checked_add(v))
    });
    matches!(last, Some(last) if last < len)
}

/// A tensor shaped `out` whose value at each position is `f` of the values its sources hold
/// at that position's strided offsets. Fails with `Internal`, computing nothing, if a source
/// is too short for its strides.
pub(crate) fn map<const K: usize>(
    out: &[usize],
    sources: [(&[f32], Strides); K],
    interrupt: &Interrupt,
    f: impl Fn([f32; K]) -> f32 + Sync,
) -> Result<Vec<f32>, EngineError> {
    if out.is_empty() || out.len() > MAX_RANK {
        return Err(INTERNAL);
    }
    if !sources
        .iter()
        .all(|(data, s)| reaches_within(out, s, data.len()))
    {
        return Err(INTERNAL);
    }
    let strides: [Strides; K] = sources.map(|(_, s)| s);
    let data: [&[f32]; K] = sources.map(|(d, _)| d);
    let mut y = vec![0.0f32; elements(out)];
    let inner: [usize; K] = strides.map(|s| s[out.len() - 1]);
    let work = |(chunk, ys): (usize, &mut [f32])| -> Result<(), EngineError> {
        interrupt.check()?;
        let mut walk = Walk::at(out, &strides, chunk * CHUNK);
        let mut rest = ys;
        // A run along the innermost axis at a time: each source is read at a fixed step
        // there, so only the run's start needs the strided walk.
        while !rest.is_empty() {
            let run = walk.left_in_row().min(rest.len());
            let (now, later) = rest.split_at_mut(run);
            // In bounds: `reaches_within` bounded every offset of the walk.
            for (j, y) in now.iter_mut().enumerate() {
                let mut values = [0.0f32; K];
                for (((v, d), &o), &s) in
                    values.iter_mut().zip(&data).zip(&walk.offsets).zip(&inner)
                {
                    *v = d[o + j * s];
                }
                *y = f(values);
            }
            walk.advance_run(run);
            rest = later;
        }
        Ok(())
    };
    if y.len() < PARALLEL_FROM {
        y.chunks_mut(CHUNK).enumerate().try_for_each(work)?;
    } else {
        y.par_chunks_mut(CHUNK).enumerate().try_for_each(work)?;
    }
    Ok(y)
}

/// `x` (shaped `dims`) with its axes reordered: output axis `i` is input axis `perm[i]`.
pub(crate) fn permute(
    x: &[f32],
    dims: &[usize],
    perm: &[usize],
    interrupt: &Interrupt,
) -> Result<Vec<f32>, EngineError> {
    let out: Vec<usize> = perm
        .iter()
        .map(|&p| dims.get(p).copied().ok_or(INTERNAL))
        .collect::<Result<_, _>>()?;
    map(
        &out,
        [(x, permuted_strides(dims, perm))],
        interrupt,
        |[v]| v,
    )
}

/// The permutation that undoes `perm`.
pub(crate) fn inverse(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        if let Some(slot) = inv.get_mut(p) {
            *slot = i;
        }
    }
    inv
}

/// The offset in a tensor of `strides` of position `flat` of a row-major walk over `dims`.
pub(crate) fn offset_of(flat: usize, dims: &[usize], strides: &Strides) -> usize {
    let mut rest = flat;
    let mut offset = 0usize;
    for (i, &d) in dims.iter().enumerate().rev() {
        let d = d.max(1);
        offset =
            offset.saturating_add((rest % d).saturating_mul(strides.get(i).copied().unwrap_or(0)));
        rest /= d;
    }
    offset
}

/// `(outer, dim, rest)`: the products of the dimensions before `axis`, at it, and after.
pub(crate) fn around(dims: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = elements(dims.get(..axis).unwrap_or(&[]));
    let dim = dims.get(axis).copied().unwrap_or(1);
    let rest = elements(dims.get(axis + 1..).unwrap_or(&[]));
    (outer, dim, rest)
}

/// Values copied between two looks at the interrupt.
const COPY_CHUNK: usize = 1 << 16;

/// Appends `src` to `dst`, looking at the interrupt between chunks.
fn append(dst: &mut Vec<f32>, src: &[f32], pace: &mut Pace<'_>) -> Result<(), EngineError> {
    for chunk in src.chunks(COPY_CHUNK) {
        pace.step(chunk.len())?;
        dst.extend_from_slice(chunk);
    }
    Ok(())
}

/// Adds `src` into `dst`, looking at the interrupt between chunks.
fn add(dst: &mut [f32], src: &[f32], pace: &mut Pace<'_>) -> Result<(), EngineError> {
    for (d, s) in dst.chunks_mut(COPY_CHUNK).zip(src.chunks(COPY_CHUNK)) {
        pace.step(2 * s.len())?;
        d.iter_mut().zip(s).for_each(|(d, s)| *d += s);
    }
    Ok(())
}

/// Tensors (values and dimensions, equal off `axis`) joined along `axis`.
pub(crate) fn concat(
    parts: &[(&[f32], &[usize])],
    axis: usize,
    interrupt: &Interrupt,
) -> Result<Vec<f32>, EngineError> {
    let total: usize = parts.iter().map(|(d, _)| d.len()).sum();
    let outer = parts.first().map_or(1, |(_, dims)| around(dims, axis).0);
    let mut y = Vec::with_capacity(total);
    let mut pace = Pace::new(interrupt)?;
    for o in 0..outer {
        for (data, dims) in parts {
            let (_, dim, rest) = around(dims, axis);
            let block = dim * rest;
            append(
                &mut y,
                data.get(o * block..(o + 1) * block).ok_or(INTERNAL)?,
                &mut pace,
            )?;
        }
    }
    Ok(y)
}

/// The gradient of each part of [`concat`] from `g`, the gradient of the joined tensor.
pub(crate) fn split(
    g: &[f32],
    parts: &[&[usize]],
    axis: usize,
    interrupt: &Interrupt,
) -> Result<Vec<Vec<f32>>, EngineError> {
    let blocks: Vec<usize> = parts
        .iter()
        .map(|dims| {
            let (_, dim, rest) = around(dims, axis);
            dim * rest
        })
        .collect();
    let row: usize = blocks.iter().sum();
    let outer = parts.first().map_or(1, |dims| around(dims, axis).0);
    let mut out: Vec<Vec<f32>> = blocks
        .iter()
        .map(|&b| Vec::with_capacity(b * outer))
        .collect();
    let mut pace = Pace::new(interrupt)?;
    for o in 0..outer {
        let mut at = o * row;
        for (dst, &block) in out.iter_mut().zip(&blocks) {
            append(dst, g.get(at..at + block).ok_or(INTERNAL)?, &mut pace)?;
            at += block;
        }
    }
    Ok(out)
}

/// Entries `start..start + len` of `axis` of `x` (shaped `dims`).
pub(crate) fn narrow(
    x: &[f32],
    dims: &[usize],
    axis: usize,
    start: usize,
    len: usize,
    interrupt: &Interrupt,
) -> Result<Vec<f32>, EngineError> {
    let (outer, dim, rest) = around(dims, axis);
    let mut y = Vec::with_capacity(outer * len * rest);
    let mut pace = Pace::new(interrupt)?;
    for o in 0..outer {
        let from = (o * dim + start) * rest;
        append(
            &mut y,
            x.get(from..from + len * rest).ok_or(INTERNAL)?,
            &mut pace,
        )?;
    }
    Ok(y)
}

/// The gradient of [`narrow`]'s input (shaped `dims`) from `g`: `g` in its entries, zero
/// elsewhere.
pub(crate) fn unnarrow(
    g: &[f32],
    dims: &[usize],
    axis: usize,
    start: usize,
    len: usize,
    interrupt: &Interrupt,
) -> Result<Vec<f32>, EngineError> {
    let (outer, dim, rest) = around(dims, axis);
    let mut dx = vec![0.0f32; outer * dim * rest];
    let mut pace = Pace::new(interrupt)?;
    for o in 0..outer {
        let from = (o * dim + start) * rest;
        let dst = dx.get_mut(from..from + len * rest).ok_or(INTERNAL)?;
        let src = g
            .get(o * len * rest..(o + 1) * len * rest)
            .ok_or(INTERNAL)?;
        for (d, s) in dst.chunks_mut(COPY_CHUNK).zip(src.chunks(COPY_CHUNK)) {
            pace.step(s.len())?;
            d.copy_from_slice(s);
        }
    }
    Ok(dx)
}

/// The entries `indices` (each below the dimension) of `axis` of `x` (shaped `dims`).
pub(crate) fn index_select(
    x: &[f32],
    dims: &[usize],
    axis: usize,
    indices: &[usize],
    interrupt: &Interrupt,
) -> Result<Vec<f32>, EngineError> {
    let (outer, dim, rest) = around(dims, axis);
    let mut y = Vec::with_capacity(outer * indices.len() * rest);
    let mut pace = Pace::new(interrupt)?;
    for o in 0..outer {
        for &i in indices {
            pace.step(1)?;
            let from = (o * dim + i) * rest;
            append(&mut y, x.get(from..from + rest).ok_or(INTERNAL)?, &mut pace)?;
        }
    }
    Ok(y)
}

/// The gradient of [`index_select`]'s input (shaped `dims`) from `g`: each selected entry's
/// gradient added back where it came from, in order.
pub(crate) fn index_add(
    g: &[f32],
    dims: &[usize],
    axis: usize,
    indices: &[usize],
    interrupt: &Interrupt,
) -> Result<Vec<f32>, EngineError> {
    let (outer, dim, rest) = around(dims, axis);
    let mut dx = vec![0.0f32; outer * dim * rest];
    let mut pace = Pace::new(interrupt)?;
    for o in 0..outer {
        for (j, &i) in indices.iter().enumerate() {
            pace.step(1)?;
            let from = (o * dim + i) * rest;
            let at = (o * indices.len() + j) * rest;
            add(
                dx.get_mut(from..from + rest).ok_or(INTERNAL)?,
                g.get(at..at + rest).ok_or(INTERNAL)?,
                &mut pace,
            )?;
        }
    }
    Ok(dx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_are_row_major() {
        assert_eq!(strides(&[2, 3, 4]), [12, 4, 1, 0]);
        assert_eq!(strides(&[5]), [1, 0, 0, 0]);
        assert_eq!(broadcast_strides(&[3, 1], &[2, 3, 4]), [0, 1, 0, 0]);
        assert_eq!(broadcast_strides(&[4], &[2, 3, 4]), [0, 0, 1, 0]);
        assert_eq!(permuted_strides(&[2, 3, 4], &[2, 0, 1]), [1, 12, 4, 0]);
    }

    #[test]
    fn permutes_and_undoes() -> Result<(), EngineError> {
        let i = Interrupt::new();
        let x: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let perm = [2, 0, 1];
        let y = permute(&x, &[2, 3, 4], &perm, &i)?;
        // y[k][a][b] = x[a][b][k].
        for k in 0..4 {
            for a in 0..2 {
                for b in 0..3 {
                    assert_eq!(y[k * 6 + a * 3 + b], x[a * 12 + b * 4 + k]);
                }
            }
        }
        let back = permute(&y, &[4, 2, 3], &inverse(&perm), &i)?;
        assert_eq!(back, x);
        Ok(())
    }

    #[test]
    fn walks_across_chunks() -> Result<(), EngineError> {
        // Long enough to run in parallel chunks that start mid-row.
        let dims = [3, 5, 77, 61];
        let n = elements(&dims);
        let x: Vec<f32> = (0..n).map(|v| (v % 1009) as f32).collect();
        let b: Vec<f32> = (0..61).map(|v| v as f32).collect();
        let y = map(
            &dims,
            [(&x, strides(&dims)), (&b, broadcast_strides(&[61], &dims))],
            &Interrupt::new(),
            |[x, b]| x + b,
        )?;
        for (p, &v) in y.iter().enumerate() {
            assert_eq!(v, x[p] + (p % 61) as f32);
        }
        Ok(())
    }

    #[test]
    fn joins_cuts_and_selects() -> Result<(), EngineError> {
        let i = Interrupt::new();
        let a: Vec<f32> = (0..6).map(|v| v as f32).collect(); // [2, 3]
        let b: Vec<f32> = (10..14).map(|v| v as f32).collect(); // [2, 2]
        let y = concat(&[(&a, &[2, 3]), (&b, &[2, 2])], 1, &i)?;
        assert_eq!(y, [0.0, 1.0, 2.0, 10.0, 11.0, 3.0, 4.0, 5.0, 12.0, 13.0]);
        let parts = split(&y, &[&[2, 3], &[2, 2]], 1, &i)?;
        assert_eq!(parts, [a.clone(), b.clone()]);
        assert_eq!(narrow(&a, &[2, 3], 1, 1, 2, &i)?, [1.0, 2.0, 4.0, 5.0]);
        assert_eq!(
            unnarrow(&[1.0, 2.0, 4.0, 5.0], &[2, 3], 1, 1, 2, &i)?,
            [0.0, 1.0, 2.0, 0.0, 4.0, 5.0]
        );
        assert_eq!(
            index_select(&a, &[2, 3], 1, &[2, 0, 2], &i)?,
            [2.0, 0.0, 2.0, 5.0, 3.0, 5.0]
        );
        assert_eq!(
            index_add(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], 1, &[2, 0, 2], &i)?,
            [2.0, 0.0, 4.0, 5.0, 0.0, 10.0]
        );
        Ok(())
    }

    #[test]
    fn refuses_short_sources() {
        let x = [1.0f32; 5];
        assert!(
            map(
                &[2, 3],
                [(&x[..], strides(&[2, 3]))],
                &Interrupt::new(),
                |[v]| v
            )
            .is_err()
        );
    }
}
