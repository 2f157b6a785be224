//! Batched matrix products `[.., n, k] · [.., k, m]` with broadcast batch axes, one
//! [`matmul`] per batch entry, and their gradients.
//!
//! Each output entry is written by one product. A gradient whose operand was broadcast over
//! some batch axes adds the products of every batch entry that read it, in batch order, so
//! results do not depend on the thread split.

use rayon::prelude::*;

use super::gemm::{View, matmul};
use crate::check::Matmul;
use crate::{EngineError, Interrupt};

const INTERNAL: EngineError = EngineError::Internal { op: "matmul" };

/// The batch entry of an operand with batch axes `own` read by output batch entry `o` of
/// batch axes `out` (both without the two matrix axes; `own` aligned at the end).
fn entry(o: usize, out: &[usize], own: &[usize]) -> usize {
    let shift = out.len().saturating_sub(own.len());
    let (mut rest, mut index, mut step) = (o, 0usize, 1usize);
    for (i, &d) in out.iter().enumerate().rev() {
        let d = d.max(1);
        let coordinate = rest % d;
        rest /= d;
        if let Some(&size) = i.checked_sub(shift).and_then(|j| own.get(j)) {
            if size != 1 {
                index = index.saturating_add(coordinate.saturating_mul(step));
            }
            step = step.saturating_mul(size);
        }
    }
    index
}

fn batch_axes(dims: &[usize]) -> &[usize] {
    &dims[..dims.len().saturating_sub(2)]
}

fn count(dims: &[usize]) -> usize {
    dims.iter().product()
}

/// Which product of a batch entry to form.
#[derive(Clone, Copy)]
enum Form {
    /// `a · b`: `[n, k] · [k, m]`.
    Forward,
    /// `g · bᵀ`: the gradient of `a`, `[n, m] · [m, k]`.
    GradA,
    /// `aᵀ · g`: the gradient of `b`, `[k, n] · [n, m]`.
    GradB,
}

/// For every output batch entry `o`, `dst[target(o)] (+)= lhs(o) · rhs(o)` in the chosen
/// form, `dst` holding `targets` entries of `rows × cols`. Entries written by one output
/// entry each run side by side; otherwise they are added in batch order.
#[allow(clippy::too_many_arguments)]
fn products(
    form: Form,
    geometry: &Matmul,
    a: (&[f32], &[usize]),
    b: (&[f32], &[usize]),
    g: &[f32],
    target: &[usize],
    interrupt: &Interrupt,
) -> Result<Vec<f32>, EngineError> {
    let Matmul { out, n, k, m } = geometry;
    let (n, k, m) = (*n, *k, *m);
    let out_batch = batch_axes(out);
    let (a_batch, b_batch) = (batch_axes(a.1), batch_axes(b.1));
    let entries = count(out_batch);
    let (rows, cols) = match form {
        Form::Forward => (n, m),
        Form::GradA => (n, k),
        Form::GradB => (k, m),
    };
    let target_batch = batch_axes(target);
    let targets = count(target_batch);
    let size = rows * cols;
    let one = |o: usize, dst: &mut [f32], accumulate: bool, threads: usize| {
        let (ai, bi) = (entry(o, out_batch, a_batch), entry(o, out_batch, b_batch));
        let a_part = a.0.get(ai * n * k..(ai + 1) * n * k).ok_or(INTERNAL)?;
        let b_part = b.0.get(bi * k * m..(bi + 1) * k * m).ok_or(INTERNAL)?;
        let g_part = || g.get(o * n * m..(o + 1) * n * m).ok_or(INTERNAL);
        let (lhs, rhs) = match form {
            Form::Forward => (View::rows(a_part, n, k), View::rows(b_part, k, m)),
            Form::GradA => (View::rows(g_part()?, n, m), View::transposed(b_part, k, m)),
            Form::GradB => (View::transposed(a_part, n, k), View::rows(g_part()?, n, m)),
        };
        matmul(dst, cols, lhs, rhs, accumulate, threads, interrupt)
    };
    let mut dst = vec![0.0f32; targets * size];
    let threads = rayon::current_num_threads();
    if size == 0 {
        return Ok(dst);
    }
    if targets == entries {
        // One output entry per destination entry (the same batch axes).
        if entries >= threads {
            dst.par_chunks_mut(size)
                .enumerate()
                .try_for_each(|(o, d)| one(o, d, false, 1))?;
        } else {
            dst.chunks_mut(size)
                .enumerate()
                .try_for_each(|(o, d)| one(o, d, false, threads))?;
        }
    } else {
        // Broadcast: every output entry adds into the destination entry it read, in order.
        for o in 0..entries {
            let t = entry(o, out_batch, target_batch);
            let d = dst.get_mut(t * size..(t + 1) * size).ok_or(INTERNAL)?;
            one(o, d, true, threads)?;
        }
    }
    Ok(dst)
}

/// `a · b` over the batch.
pub(crate) fn forward(
    geometry: &Matmul,
    a: (&[f32], &[usize]),
    b: (&[f32], &[usize]),
    interrupt: &Interrupt,
) -> Result<Vec<f32>, EngineError> {
    products(Form::Forward, geometry, a, b, &[], &geometry.out, interrupt)
}

/// The gradient of `a` from `g`, the gradient of `a · b`.
pub(crate) fn grad_a(
    geometry: &Matmul,
    a: (&[f32], &[usize]),
    b: (&[f32], &[usize]),
    g: &[f32],
    interrupt: &Interrupt,
) -> Result<Vec<f32>, EngineError> {
    products(Form::GradA, geometry, a, b, g, a.1, interrupt)
}

/// The gradient of `b` from `g`, the gradient of `a · b`.
pub(crate) fn grad_b(
    geometry: &Matmul,
    a: (&[f32], &[usize]),
    b: (&[f32], &[usize]),
    g: &[f32],
    interrupt: &Interrupt,
) -> Result<Vec<f32>, EngineError> {
    products(Form::GradB, geometry, a, b, g, b.1, interrupt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], ad: &[usize], b: &[f32], bd: &[usize]) -> (Vec<usize>, Vec<f32>) {
        let geometry = crate::check::matmul(ad, bd).expect("valid shapes");
        let (n, k, m) = (geometry.n, geometry.k, geometry.m);
        let out_batch = batch_axes(&geometry.out);
        let entries = count(out_batch);
        let mut y = vec![0.0f32; entries * n * m];
        for o in 0..entries {
            let (ai, bi) = (
                entry(o, out_batch, batch_axes(ad)),
                entry(o, out_batch, batch_axes(bd)),
            );
            for i in 0..n {
                for j in 0..m {
                    y[o * n * m + i * m + j] = (0..k)
                        .map(|p| a[ai * n * k + i * k + p] * b[bi * k * m + p * m + j])
                        .sum();
                }
            }
        }
        (geometry.out, y)
    }

    #[test]
    fn broadcast_batches_and_their_gradients() -> Result<(), EngineError> {
        let i = Interrupt::new();
        for (ad, bd) in [
            (&[2, 1, 3, 4][..], &[5, 4, 2][..]),
            (&[3, 4], &[2, 4, 2]),
            (&[2, 3, 4], &[4, 5]),
            (&[2, 3, 4], &[2, 4, 5]),
        ] {
            let a: Vec<f32> = (0..count(ad)).map(|v| ((v * 3) % 7) as f32 - 3.0).collect();
            let b: Vec<f32> = (0..count(bd)).map(|v| ((v * 5) % 9) as f32 - 4.0).collect();
            let geometry = crate::check::matmul(ad, bd)?;
            let y = forward(&geometry, (&a, ad), (&b, bd), &i)?;
            let (_, want) = naive(&a, ad, &b, bd);
            assert_eq!(y, want, "{ad:?} · {bd:?}");
            // The loss Σ y·g, whose gradient in a (and b) is what grad_a (grad_b) computes:
            // check by finite differences, exact for a bilinear form.
            let g: Vec<f32> = (0..y.len()).map(|v| ((v * 7) % 5) as f32 - 2.0).collect();
            let loss = |a: &[f32], b: &[f32]| -> f32 {
                naive(a, ad, b, bd)
                    .1
                    .iter()
                    .zip(&g)
                    .map(|(y, g)| y * g)
                    .sum()
            };
            let da = grad_a(&geometry, (&a, ad), (&b, bd), &g, &i)?;
            let db = grad_b(&geometry, (&a, ad), (&b, bd), &g, &i)?;
            for p in 0..a.len() {
                let mut up = a.clone();
                up[p] += 1.0;
                assert_eq!(loss(&up, &b) - loss(&a, &b), da[p], "a {ad:?} {p}");
            }
            for p in 0..b.len() {
                let mut up = b.clone();
                up[p] += 1.0;
                assert_eq!(loss(&a, &up) - loss(&a, &b), db[p], "b {bd:?} {p}");
            }
        }
        Ok(())
    }
}
