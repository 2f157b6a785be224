//! The common layout of a per-channel reduction or broadcast, walked without strides.
//!
//! When the axes a reduction keeps are one contiguous run (batch norm's channel axis of
//! `[N, C, H, W]`, layer norm's leading axes, a bias broadcast over `[N, C, H, W]`), the
//! tensor is `outer × kept × inner` in memory: value `(o, k, i)` sits at
//! `(o · kept + k) · inner + i`. Walking those blocks directly replaces a permuted copy and a
//! strided walk with contiguous loops. Sums run per kept index over `o` then `i`, in `f64`,
//! the same order as a reduction of the permuted rows, so results do not depend on the path
//! or on the thread split.

use rayon::prelude::*;

use crate::interrupt::Pace;
use crate::{EngineError, Interrupt};

const INTERNAL: EngineError = EngineError::Internal { op: "blocked walk" };

/// Values handled per parallel task at least.
const TASK: usize = 1 << 15;

/// `outer × kept × inner`: the layout of a tensor whose kept axes are contiguous.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Blocks {
    /// The product of the reduced axes before the kept ones.
    pub outer: usize,
    /// The product of the kept axes.
    pub kept: usize,
    /// The product of the reduced axes after the kept ones.
    pub inner: usize,
}

impl Blocks {
    /// The layout of `dims` reduced to `kept` (the same rank, 1 on each reduced axis), if
    /// the axes kept with more than one entry form one contiguous run.
    pub(crate) fn of(dims: &[usize], kept: &[usize]) -> Option<Blocks> {
        if dims.len() != kept.len() {
            return None;
        }
        let keeps = |i: usize| kept[i] == dims[i] && dims[i] > 1;
        let reduces = |i: usize| kept[i] == 1 && dims[i] > 1;
        let first = (0..dims.len()).find(|&i| keeps(i));
        let last = (0..dims.len()).rev().find(|&i| keeps(i));
        let (outer, kept_len, inner) = match (first, last) {
            (Some(first), Some(last)) => {
                if (first..=last).any(reduces) {
                    return None;
                }
                (
                    dims[..first].iter().product(),
                    dims[first..=last].iter().product(),
                    dims[last + 1..].iter().product(),
                )
            }
            _ => (dims.iter().product(), 1, 1),
        };
        Some(Blocks {
            outer,
            kept: kept_len,
            inner,
        })
    }

    fn len(&self) -> usize {
        self.outer * self.kept * self.inner
    }
}

/// For each kept index `k`, the sum in `f64` of `f` of the full sources' values there and
/// of `per_kept[·][k]`, in order.
pub(crate) fn sums<const F: usize, const P: usize>(
    b: Blocks,
    full: [&[f32]; F],
    per_kept: [&[f32]; P],
    interrupt: &Interrupt,
    f: impl Fn([f32; F], [f32; P]) -> f64 + Sync,
) -> Result<Vec<f64>, EngineError> {
    if full.iter().any(|s| s.len() != b.len()) || per_kept.iter().any(|s| s.len() != b.kept) {
        return Err(INTERNAL);
    }
    let inner = b.inner;
    let per_task = (TASK / (b.outer * inner).max(1)).max(1);
    let ks: Vec<usize> = (0..b.kept).collect();
    let groups: Vec<Vec<f64>> = ks
        .par_chunks(per_task)
        .map(|ks| {
            let mut pace = Pace::new(interrupt)?;
            ks.iter()
                .map(|&k| {
                    let kept: [f32; P] = per_kept.map(|p| p.get(k).copied().unwrap_or(0.0));
                    let mut sum = 0.0f64;
                    for o in 0..b.outer {
                        pace.step((F + 1) * inner)?;
                        let base = (o * b.kept + k) * inner;
                        let runs: [&[f32]; F] =
                            full.map(|s| s.get(base..base + inner).unwrap_or(&[]));
                        if runs.iter().any(|r| r.len() != inner) {
                            return Err(INTERNAL);
                        }
                        for j in 0..inner {
                            sum += f(runs.map(|r| r[j]), kept);
                        }
                    }
                    Ok(sum)
                })
                .collect::<Result<Vec<f64>, EngineError>>()
        })
        .collect::<Result<_, EngineError>>()?;
    Ok(groups.into_iter().flatten().collect())
}

/// A tensor laid out as `b` whose value at `(o, k, i)` is `f` of the full sources there and
/// of the per-kept-index values `per_kept[·][k]`.
pub(crate) fn map<const F: usize, const P: usize>(
    b: Blocks,
    full: [&[f32]; F],
    per_kept: [&[f32]; P],
    interrupt: &Interrupt,
    f: impl Fn([f32; F], [f32; P]) -> f32 + Sync,
) -> Result<Vec<f32>, EngineError> {
    if full.iter().any(|s| s.len() != b.len()) || per_kept.iter().any(|s| s.len() != b.kept) {
        return Err(INTERNAL);
    }
    let inner = b.inner.max(1);
    let per_task = (TASK / inner).max(1);
    let mut y = vec![0.0f32; b.len()];
    y.par_chunks_mut(per_task * inner)
        .enumerate()
        .try_for_each(|(task, ys)| {
            interrupt.check()?;
            for (n, block) in ys.chunks_mut(inner).enumerate() {
                let at = task * per_task + n;
                let k = at % b.kept.max(1);
                let base = at * inner;
                let kept: [f32; P] = per_kept.map(|p| p.get(k).copied().unwrap_or(0.0));
                let sources: [&[f32]; F] =
                    full.map(|s| s.get(base..base + block.len()).unwrap_or(&[]));
                if sources.iter().any(|s| s.len() != block.len()) {
                    return Err(INTERNAL);
                }
                for (j, y) in block.iter_mut().enumerate() {
                    *y = f(sources.map(|s| s[j]), kept);
                }
            }
            Ok(())
        })?;
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_recognised() {
        let b = |dims: &[usize], kept: &[usize]| Blocks::of(dims, kept);
        let bn = Some(Blocks {
            outer: 2,
            kept: 3,
            inner: 20,
        });
        assert_eq!(b(&[2, 3, 4, 5], &[1, 3, 1, 1]), bn);
        assert_eq!(
            b(&[2, 3, 4], &[2, 3, 1]),
            Some(Blocks {
                outer: 1,
                kept: 6,
                inner: 4
            })
        );
        // Kept axes split by a reduced one.
        assert_eq!(b(&[2, 3, 4], &[2, 1, 4]), None);
        // Everything reduced.
        assert_eq!(
            b(&[2, 3], &[1, 1]),
            Some(Blocks {
                outer: 6,
                kept: 1,
                inner: 1
            })
        );
        // Size-1 axes never split a run.
        assert_eq!(
            b(&[2, 1, 3, 4], &[2, 1, 3, 1]),
            Some(Blocks {
                outer: 1,
                kept: 6,
                inner: 4
            })
        );
    }

    #[test]
    fn sums_and_maps_follow_the_layout() -> Result<(), EngineError> {
        let i = Interrupt::new();
        let b = Blocks {
            outer: 2,
            kept: 3,
            inner: 2,
        };
        let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
        // Channel k holds (o·3 + k)·2 + {0, 1} for o in {0, 1}.
        let s = sums(b, [&x], [], &i, |[v], []| f64::from(v))?;
        assert_eq!(
            s,
            [
                0.0 + 1.0 + 6.0 + 7.0,
                2.0 + 3.0 + 8.0 + 9.0,
                4.0 + 5.0 + 10.0 + 11.0
            ]
        );
        let y = map(b, [&x], [&[10.0, 20.0, 30.0]], &i, |[v], [c]| v + c)?;
        assert_eq!(&y[..6], &[10.0, 11.0, 22.0, 23.0, 34.0, 35.0]);
        assert_eq!(&y[6..], &[16.0, 17.0, 28.0, 29.0, 40.0, 41.0]);
        Ok(())
    }
}
