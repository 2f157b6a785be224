//! Normalisation over chosen axes, `y = (x − mean) / sqrt(var + eps)`, and its gradient.
//!
//! Statistics are taken over rows laid out by [`Rows`] (in `f64`, in order); the output and
//! the gradients are computed in the input's own layout by broadcasting the per-row values
//! back over the normalised axes.

use super::blocks::{self, Blocks};
use super::layout;
use super::reduce::{self, Rows};
use crate::{EngineError, Interrupt};

/// What [`forward`] returns: the output and, per row, the statistics.
pub(crate) struct Forward {
    pub output: Vec<f32>,
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
    /// `1 / sqrt(var + eps)`, kept for the backward pass.
    pub inv_std: Vec<f32>,
}

/// Normalises `x` over the axes of `plan`.
pub(crate) fn forward(
    plan: &Rows,
    x: &[f32],
    eps: f32,
    interrupt: &Interrupt,
) -> Result<Forward, EngineError> {
    if let Some(b) = Blocks::of(&plan.dims, &plan.kept) {
        return forward_blocked(b, plan.len, x, eps, interrupt);
    }
    let rows = plan.gather(x, interrupt)?;
    let moments = reduce::per_row(&rows, plan.len, interrupt, reduce::row_moments)?;
    drop(rows);
    let mean: Vec<f32> = moments.iter().map(|&(m, _)| m as f32).collect();
    let var: Vec<f32> = moments.iter().map(|&(_, v)| v as f32).collect();
    let inv_std: Vec<f32> = moments
        .iter()
        .map(|&(_, v)| (1.0 / (v + f64::from(eps)).sqrt()) as f32)
        .collect();
    let dims = &plan.dims;
    let spread = layout::broadcast_strides(&plan.kept, dims);
    let output = layout::map(
        dims,
        [
            (x, layout::strides(dims)),
            (&mean, spread),
            (&inv_std, spread),
        ],
        interrupt,
        |[x, m, s]| (x - m) * s,
    )?;
    Ok(Forward {
        output,
        mean,
        var,
        inv_std,
    })
}

/// [`forward`] on the blocked layout `b`, `n` values per statistic: two passes in `f64`.
fn forward_blocked(
    b: Blocks,
    n: usize,
    x: &[f32],
    eps: f32,
    interrupt: &Interrupt,
) -> Result<Forward, EngineError> {
    let n = n.max(1) as f64;
    let mean: Vec<f32> = blocks::sums(b, [x], [], interrupt, |[x], []| f64::from(x))?
        .iter()
        .map(|&s| (s / n) as f32)
        .collect();
    let var: Vec<f32> = blocks::sums(b, [x], [&mean], interrupt, |[x], [m]| {
        let d = f64::from(x) - f64::from(m);
        d * d
    })?
    .iter()
    .map(|&s| (s / n) as f32)
    .collect();
    let inv_std: Vec<f32> = var
        .iter()
        .map(|&v| (1.0 / (f64::from(v) + f64::from(eps)).sqrt()) as f32)
        .collect();
    let output = blocks::map(b, [x], [&mean, &inv_std], interrupt, |[x], [m, s]| {
        (x - m) * s
    })?;
    Ok(Forward {
        output,
        mean,
        var,
        inv_std,
    })
}

/// The gradient of `x` from `g`, the gradient of the output `y`:
/// `dx = (g − mean(g) − y · mean(g · y)) / sqrt(var + eps)`, means over each row.
pub(crate) fn backward(
    plan: &Rows,
    y: &[f32],
    inv_std: &[f32],
    g: &[f32],
    interrupt: &Interrupt,
) -> Result<Vec<f32>, EngineError> {
    let n = plan.len as f64;
    if let Some(b) = Blocks::of(&plan.dims, &plan.kept) {
        let mean = |sums: Vec<f64>| -> Vec<f32> { sums.iter().map(|&s| (s / n) as f32).collect() };
        let mean_g = mean(blocks::sums(b, [g], [], interrupt, |[g], []| f64::from(g))?);
        let mean_gy = mean(blocks::sums(b, [g, y], [], interrupt, |[g, y], []| {
            f64::from(g) * f64::from(y)
        })?);
        return blocks::map(
            b,
            [g, y],
            [&mean_g, &mean_gy, inv_std],
            interrupt,
            |[g, y], [mg, mgy, s]| (g - mg - y * mgy) * s,
        );
    }
    let dims = &plan.dims;
    let own = layout::strides(dims);
    let gy = super::elementwise::zip(g, y, interrupt, |g, y| g * y)?;
    let row_means = |v: &[f32]| -> Result<Vec<f32>, EngineError> {
        let rows = plan.gather(v, interrupt)?;
        reduce::per_row(&rows, plan.len, interrupt, |r, p| {
            Ok((reduce::row_sum(r, p)? / n) as f32)
        })
    };
    let mean_g = row_means(g)?;
    let mean_gy = row_means(&gy)?;
    drop(gy);
    let spread = layout::broadcast_strides(&plan.kept, dims);
    layout::map(
        dims,
        [
            (g, own),
            (y, own),
            (&mean_g, spread),
            (&mean_gy, spread),
            (inv_std, spread),
        ],
        interrupt,
        |[g, y, mg, mgy, s]| (g - mg - y * mgy) * s,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Σ y · w` for fixed weights `w`, in `f64`, through the forward pass.
    fn loss(plan: &Rows, x: &[f32], w: &[f32], eps: f32) -> f64 {
        forward(plan, x, eps, &Interrupt::new())
            .map(|f| {
                f.output
                    .iter()
                    .zip(w)
                    .map(|(&y, &w)| f64::from(y) * f64::from(w))
                    .sum()
            })
            .unwrap_or(f64::NAN)
    }

    #[test]
    fn normalises_and_its_gradient_matches_finite_differences() -> Result<(), EngineError> {
        let i = Interrupt::new();
        // Batch norm on [N, C, H, W] and layer norm on the last axis.
        for (dims, axes) in [
            (&[3, 2, 2, 3][..], &[0, 2, 3][..]),
            (&[4, 5][..], &[1][..]),
            (&[2, 3, 4][..], &[0][..]),
        ] {
            let plan = Rows::new(dims, axes);
            let n = layout::elements(dims);
            let x: Vec<f32> = (0..n)
                .map(|v| ((v * 37 % 17) as f32 - 8.0) * 0.25 + (v % 3) as f32)
                .collect();
            let w: Vec<f32> = (0..n).map(|v| ((v * 11 % 13) as f32 - 6.0) * 0.1).collect();
            let eps = 1e-3;
            let f = forward(&plan, &x, eps, &i)?;
            // Each row of the output has mean 0 and variance var / (var + eps).
            let rows = plan.gather(&f.output, &i)?;
            for (r, row) in rows.chunks(plan.len).enumerate() {
                let mean: f32 = row.iter().sum::<f32>() / row.len() as f32;
                assert!(mean.abs() < 1e-4, "{dims:?} row {r} mean {mean}");
            }
            let dx = backward(&plan, &f.output, &f.inv_std, &w, &i)?;
            for k in 0..n {
                let h = 1e-2;
                let (mut up, mut down) = (x.clone(), x.clone());
                up[k] += h;
                down[k] -= h;
                let fd = (loss(&plan, &up, &w, eps) - loss(&plan, &down, &w, eps))
                    / (2.0 * f64::from(h));
                assert!(
                    (fd - f64::from(dx[k])).abs() < 2e-2 * fd.abs().max(1.0),
                    "{dims:?} {axes:?} {k}: {fd} vs {}",
                    dx[k]
                );
            }
        }
        Ok(())
    }
}
