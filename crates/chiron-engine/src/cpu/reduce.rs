//! Reductions over chosen axes, as reductions of rows.
//!
//! The reduced axes are moved last (a permuted copy, skipped when they already are), so each
//! output is one contiguous row, in the output's own order, and its values are in the
//! row-major order of the input: "the first maximum" is the first in memory. Each row is
//! reduced on one thread, in order and in `f64` for sums, so results do not depend on the
//! thread split.

use std::borrow::Cow;

use rayon::prelude::*;

use super::layout;
use crate::interrupt::Pace;
use crate::{EngineError, Interrupt, Reduce};

/// Values of a row handled between two looks at the interrupt.
const ROW_CHUNK: usize = 1 << 14;
/// Values reduced per parallel task (several short rows, or one long one).
const TASK: usize = 1 << 15;

const INTERNAL: EngineError = EngineError::Internal { op: "reduce" };

/// How a reduction of `dims` over some axes lays out as rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rows {
    /// The input's dimensions.
    pub dims: Vec<usize>,
    /// Kept axes, then reduced axes (ascending); `None` when that is the identity.
    pub perm: Option<Vec<usize>>,
    /// Outputs: the product of the kept dimensions.
    pub rows: usize,
    /// Values per output: the product of the reduced dimensions.
    pub len: usize,
    /// The output's dimensions with the reduced axes kept as 1s.
    pub kept: Vec<usize>,
}

impl Rows {
    /// The plan for reducing `axes` (checked: distinct, below the rank) of `dims`.
    pub(crate) fn new(dims: &[usize], axes: &[usize]) -> Self {
        let reduced = |i: usize| axes.contains(&i);
        let mut perm: Vec<usize> = (0..dims.len()).filter(|&i| !reduced(i)).collect();
        perm.extend((0..dims.len()).filter(|&i| reduced(i)));
        let identity = perm.iter().enumerate().all(|(i, &p)| i == p);
        let kept: Vec<usize> = dims
            .iter()
            .enumerate()
            .map(|(i, &d)| if reduced(i) { 1 } else { d })
            .collect();
        let rows = layout::elements(&kept);
        let len = layout::elements(dims) / rows.max(1);
        Self {
            dims: dims.to_vec(),
            perm: (!identity).then_some(perm),
            rows,
            len,
            kept,
        }
    }

    /// `x` as `rows × len`: permuted if needed, borrowed otherwise.
    pub(crate) fn gather<'a>(
        &self,
        x: &'a [f32],
        interrupt: &Interrupt,
    ) -> Result<Cow<'a, [f32]>, EngineError> {
        if x.len() != self.rows.saturating_mul(self.len) {
            return Err(INTERNAL);
        }
        Ok(match &self.perm {
            None => Cow::Borrowed(x),
            Some(perm) => Cow::Owned(layout::permute(x, &self.dims, perm, interrupt)?),
        })
    }

    /// The input offset of value `j` of row `r`, for each `(r, j)` in `picks`.
    pub(crate) fn offsets(
        &self,
        picks: impl Iterator<Item = (usize, usize)>,
        interrupt: &Interrupt,
    ) -> Result<Vec<u32>, EngineError> {
        let (permuted, strides) = match &self.perm {
            None => (self.dims.clone(), layout::strides(&self.dims)),
            Some(perm) => (
                perm.iter().map(|&p| self.dims[p]).collect(),
                layout::permuted_strides(&self.dims, perm),
            ),
        };
        let mut pace = Pace::new(interrupt)?;
        picks
            .map(|(r, j)| {
                pace.step(8)?;
                let flat = r.saturating_mul(self.len).saturating_add(j);
                // Tensors hold at most 2^28 elements, so an offset fits in 32 bits.
                u32::try_from(layout::offset_of(flat, &permuted, &strides)).map_err(|_| INTERNAL)
            })
            .collect()
    }
}

/// `f` of each row of `data` (`rows × len`), in row order; rows are spread over threads in
/// fixed groups.
pub(crate) fn per_row<T: Send>(
    data: &[f32],
    len: usize,
    interrupt: &Interrupt,
    f: impl Fn(&[f32], &mut Pace<'_>) -> Result<T, EngineError> + Sync,
) -> Result<Vec<T>, EngineError> {
    if len == 0 || !data.len().is_multiple_of(len) {
        return Err(INTERNAL);
    }
    let group = (TASK / len).max(1) * len;
    let parts: Vec<Vec<T>> = data
        .par_chunks(group)
        .map(|rows| {
            let mut pace = Pace::new(interrupt)?;
            rows.chunks(len).map(|row| f(row, &mut pace)).collect()
        })
        .collect::<Result<_, EngineError>>()?;
    Ok(parts.into_iter().flatten().collect())
}

/// The sum of a row in `f64`, in order.
pub(crate) fn row_sum(row: &[f32], pace: &mut Pace<'_>) -> Result<f64, EngineError> {
    let mut sum = 0.0f64;
    for chunk in row.chunks(ROW_CHUNK) {
        pace.step(chunk.len())?;
        sum += chunk.iter().map(|&v| f64::from(v)).sum::<f64>();
    }
    Ok(sum)
}

/// The mean and biased variance of a row, in `f64` (two passes).
pub(crate) fn row_moments(row: &[f32], pace: &mut Pace<'_>) -> Result<(f64, f64), EngineError> {
    let n = row.len().max(1) as f64;
    let mean = row_sum(row, pace)? / n;
    let mut sq = 0.0f64;
    for chunk in row.chunks(ROW_CHUNK) {
        pace.step(2 * chunk.len())?;
        sq += chunk
            .iter()
            .map(|&v| {
                let d = f64::from(v) - mean;
                d * d
            })
            .sum::<f64>();
    }
    Ok((mean, sq / n))
}

/// The largest (or smallest) value of a row and the position of its first occurrence. A NaN
/// wins, as in PyTorch: the first NaN is the result.
pub(crate) fn row_extreme(
    row: &[f32],
    largest: bool,
    pace: &mut Pace<'_>,
) -> Result<(f32, usize), EngineError> {
    let mut best = (row.first().copied().unwrap_or(f32::NAN), 0);
    if best.0.is_nan() {
        return Ok(best);
    }
    for (c, chunk) in row.chunks(ROW_CHUNK).enumerate() {
        pace.step(chunk.len())?;
        for (i, &v) in chunk.iter().enumerate() {
            let better = if largest { v > best.0 } else { v < best.0 };
            if v.is_nan() {
                return Ok((v, c * ROW_CHUNK + i));
            }
            if better {
                best = (v, c * ROW_CHUNK + i);
            }
        }
    }
    Ok(best)
}

/// What a reduction's backward needs besides the input.
#[derive(Debug)]
pub(crate) enum Saved {
    /// Nothing (sum, mean).
    None,
    /// For each output, the input offset of the extreme it took (max, min).
    Picks(Vec<u32>),
    /// For each output, the mean of its values (variance).
    Means(Vec<f32>),
}

/// Reduces `x` by `plan` with `op`; returns one value per output (in the output's order)
/// and what the backward needs.
pub(crate) fn forward(
    op: Reduce,
    plan: &Rows,
    x: &[f32],
    interrupt: &Interrupt,
) -> Result<(Vec<f32>, Saved), EngineError> {
    let rows = plan.gather(x, interrupt)?;
    let n = plan.len as f64;
    Ok(match op {
        Reduce::Sum => (
            per_row(&rows, plan.len, interrupt, |r, p| Ok(row_sum(r, p)? as f32))?,
            Saved::None,
        ),
        Reduce::Mean => (
            per_row(&rows, plan.len, interrupt, |r, p| {
                Ok((row_sum(r, p)? / n) as f32)
            })?,
            Saved::None,
        ),
        Reduce::Var => {
            let moments = per_row(&rows, plan.len, interrupt, row_moments)?;
            let var = moments.iter().map(|&(_, v)| v as f32).collect();
            let means = moments.iter().map(|&(m, _)| m as f32).collect();
            (var, Saved::Means(means))
        }
        Reduce::Max | Reduce::Min => {
            let largest = op == Reduce::Max;
            let picks = per_row(&rows, plan.len, interrupt, |r, p| {
                row_extreme(r, largest, p)
            })?;
            let values = picks.iter().map(|&(v, _)| v).collect();
            let offsets = plan.offsets(
                picks.iter().enumerate().map(|(r, &(_, j))| (r, j)),
                interrupt,
            )?;
            (values, Saved::Picks(offsets))
        }
    })
}

/// The gradient of `x` (shaped `plan.dims`) from `g`, the gradient of the reduction's output
/// (in the output's order).
pub(crate) fn backward(
    op: Reduce,
    plan: &Rows,
    x: &[f32],
    saved: &Saved,
    g: &[f32],
    interrupt: &Interrupt,
) -> Result<Vec<f32>, EngineError> {
    let dims = &plan.dims;
    let spread = layout::broadcast_strides(&plan.kept, dims);
    let n = plan.len as f32;
    match (op, saved) {
        (Reduce::Sum, _) => layout::map(dims, [(g, spread)], interrupt, |[g]| g),
        (Reduce::Mean, _) => layout::map(dims, [(g, spread)], interrupt, |[g]| g / n),
        (Reduce::Var, Saved::Means(means)) => layout::map(
            dims,
            [(g, spread), (means, spread), (x, layout::strides(dims))],
            interrupt,
            |[g, m, x]| g * 2.0 * (x - m) / n,
        ),
        (Reduce::Max | Reduce::Min, Saved::Picks(picks)) => {
            let mut dx = vec![0.0f32; x.len()];
            let mut pace = Pace::new(interrupt)?;
            for (&at, &v) in picks.iter().zip(g) {
                pace.step(4)?;
                *dx.get_mut(at as usize).ok_or(INTERNAL)? += v;
            }
            Ok(dx)
        }
        _ => Err(INTERNAL),
    }
}

/// `g`, shaped `from`, summed down to `to`, a shape that broadcasts to `from` (the gradient
/// of a broadcast operand).
pub(crate) fn sum_to(
    g: &[f32],
    from: &[usize],
    to: &[usize],
    interrupt: &Interrupt,
) -> Result<Vec<f32>, EngineError> {
    let shift = from.len().checked_sub(to.len()).ok_or(INTERNAL)?;
    let axes: Vec<usize> = (0..from.len())
        .filter(|&i| {
            let target = i.checked_sub(shift).map_or(1, |j| to[j]);
            target == 1 && from[i] != 1
        })
        .collect();
    if axes.is_empty() {
        return super::elementwise::copy(g, interrupt);
    }
    let plan = Rows::new(from, &axes);
    if let Some(b) = super::blocks::Blocks::of(&plan.dims, &plan.kept) {
        let sums = super::blocks::sums(b, [g], [], interrupt, |[g], []| f64::from(g))?;
        return Ok(sums.into_iter().map(|s| s as f32).collect());
    }
    let rows = plan.gather(g, interrupt)?;
    per_row(&rows, plan.len, interrupt, |r, p| Ok(row_sum(r, p)? as f32))
}

/// Position of the largest value along `axis` (the first, on ties; a NaN wins), as `f32`.
pub(crate) fn argmax(
    x: &[f32],
    dims: &[usize],
    axis: usize,
    interrupt: &Interrupt,
) -> Result<Vec<f32>, EngineError> {
    let plan = Rows::new(dims, &[axis]);
    let rows = plan.gather(x, interrupt)?;
    per_row(&rows, plan.len, interrupt, |r, p| {
        Ok(row_extreme(r, true, p)?.1 as f32)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_sum_to(g: &[f32], from: &[usize], to: &[usize]) -> Vec<f32> {
        let n = layout::elements(to);
        let mut out = vec![0.0f32; n];
        let s = layout::broadcast_strides(to, from);
        for p in 0..g.len() {
            out[layout::offset_of(p, from, &s)] += g[p];
        }
        out
    }

    #[test]
    fn broadcast_gradients_sum_back_to_their_shape() -> Result<(), EngineError> {
        let i = Interrupt::new();
        for (from, to) in [
            (&[2, 3, 4][..], &[3, 1][..]),
            (&[2, 3, 4], &[4]),
            (&[2, 3, 4], &[2, 1, 4]),
            (&[2, 3, 4], &[1]),
            (&[5, 2, 3, 4], &[5, 1, 3, 1]),
            (&[2, 3], &[2, 3]),
        ] {
            let n = layout::elements(from);
            let g: Vec<f32> = (0..n).map(|v| ((v * 7) % 11) as f32 - 5.0).collect();
            let got = sum_to(&g, from, to, &i)?;
            assert_eq!(got, naive_sum_to(&g, from, to), "{from:?} -> {to:?}");
        }
        Ok(())
    }

    #[test]
    fn reductions_pick_the_first_extreme() -> Result<(), EngineError> {
        let i = Interrupt::new();
        // [2, 3]: reduce axis 0 and axis 1.
        let x = [1.0, 5.0, 5.0, 7.0, 5.0, -1.0];
        let plan = Rows::new(&[2, 3], &[1]);
        let (v, saved) = forward(Reduce::Max, &plan, &x, &i)?;
        assert_eq!(v, [5.0, 7.0]);
        let dx = backward(Reduce::Max, &plan, &x, &saved, &[1.0, 2.0], &i)?;
        assert_eq!(dx, [0.0, 1.0, 0.0, 2.0, 0.0, 0.0]);
        let plan = Rows::new(&[2, 3], &[0]);
        let (v, saved) = forward(Reduce::Min, &plan, &x, &i)?;
        assert_eq!(v, [1.0, 5.0, -1.0]);
        let dx = backward(Reduce::Min, &plan, &x, &saved, &[1.0, 2.0, 3.0], &i)?;
        assert_eq!(dx, [1.0, 2.0, 0.0, 0.0, 0.0, 3.0]);
        assert_eq!(argmax(&x, &[2, 3], 0, &i)?, [1.0, 0.0, 0.0]);
        let (v, _) = forward(Reduce::Var, &Rows::new(&[2, 3], &[0, 1]), &x, &i)?;
        let mean = 22.0 / 6.0;
        let want: f32 = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / 6.0;
        assert!((v[0] - want).abs() < 1e-5);
        Ok(())
    }

    #[test]
    fn variance_gradient_matches_finite_differences() -> Result<(), EngineError> {
        let i = Interrupt::new();
        let dims = [2, 3, 2];
        let x: Vec<f32> = (0..12).map(|v| ((v * 5) % 7) as f32 * 0.3 - 1.0).collect();
        let plan = Rows::new(&dims, &[0, 2]);
        let (_, saved) = forward(Reduce::Var, &plan, &x, &i)?;
        let g = [1.0, -2.0, 0.5];
        let dx = backward(Reduce::Var, &plan, &x, &saved, &g, &i)?;
        let loss = |x: &[f32]| -> f64 {
            let v = forward(Reduce::Var, &plan, x, &i)
                .map(|(v, _)| v)
                .unwrap_or_default();
            v.iter().zip(&g).map(|(&v, &g)| f64::from(v * g)).sum()
        };
        for k in 0..x.len() {
            let (mut up, mut down) = (x.clone(), x.clone());
            up[k] += 1e-2;
            down[k] -= 1e-2;
            let fd = (loss(&up) - loss(&down)) / 2e-2;
            assert!(
                (fd - f64::from(dx[k])).abs() < 1e-2,
                "{k}: {fd} vs {}",
                dx[k]
            );
        }
        Ok(())
    }
}
