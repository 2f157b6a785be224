//! The one place the engine calls the `gemm` crate, whose entry point is `unsafe` because it
//! takes raw pointers and strides. Every call is bounds-checked here first, so the rest of the
//! engine multiplies matrices through a safe function.

#![allow(unsafe_code)]

use gemm::Parallelism;

use crate::{EngineError, Interrupt};

/// A read-only strided view of a row-major-or-not matrix inside a slice.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    /// Distance between consecutive rows.
    pub row_stride: usize,
    /// Distance between consecutive columns.
    pub col_stride: usize,
}

impl<'a> View<'a> {
    /// A dense row-major `rows × cols` matrix.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose of a dense row-major `rows × cols` matrix, as a `cols × rows` view.
    pub fn transposed(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows: cols,
            cols: rows,
            row_stride: 1,
            col_stride: cols,
        }
    }

    fn fits(&self) -> bool {
        fits(
            self.data.len(),
            self.rows,
            self.cols,
            self.row_stride,
            self.col_stride,
        )
    }
}

fn fits(len: usize, rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    let last = (rows - 1).checked_mul(row_stride).and_then(|r| {
        (cols - 1)
            .checked_mul(col_stride)
            .and_then(|c| r.checked_add(c))
    });
    matches!(last, Some(i) if i < len)
}

/// Whether a product is big enough that splitting it across threads pays for the hand-off.
fn parallelism(m: usize, n: usize, k: usize, threads: usize) -> Parallelism {
    if threads > 1 && m.saturating_mul(n).saturating_mul(k) >= 1 << 18 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

/// Most floating-point operations in one tile of a product: a few milliseconds of work, the
/// longest a product runs between two looks at its interrupt.
const TILE_FLOPS: usize = 1 << 27;
/// Longest inner dimension of one tile. Products with a longer one are added up tile by
/// tile, in a fixed order, so results still depend on the shapes alone.
const TILE_DEPTH: usize = 1 << 16;

impl<'a> View<'a> {
    /// Rows `r0..r0 + rows` and columns `c0..c0 + cols` of this view (inside it).
    fn part(&self, r0: usize, rows: usize, c0: usize, cols: usize) -> Option<Self> {
        let offset = r0
            .checked_mul(self.row_stride)?
            .checked_add(c0.checked_mul(self.col_stride)?)?;
        Some(Self {
            data: self.data.get(offset..)?,
            rows,
            cols,
            row_stride: self.row_stride,
            col_stride: self.col_stride,
        })
    }
}

/// `dst (m × n, row stride dst_stride) = [dst +] a · b`.
///
/// `threads` is the most threads the product may use; 1 inside work that is already split
/// across threads. The product runs in tiles of at most [`TILE_FLOPS`] operations and stops
/// between tiles once `interrupt` fires. Fails with `Internal`, touching nothing, if a view
/// does not fit its slice.
pub(crate) fn matmul(
    dst: &mut [f32],
    dst_stride: usize,
    a: View<'_>,
    b: View<'_>,
    accumulate: bool,
    threads: usize,
    interrupt: &Interrupt,
) -> Result<(), EngineError> {
    const OP: EngineError = EngineError::Internal { op: "matmul" };
    let (m, k, n) = (a.rows, a.cols, b.cols);
    // Destination rows must not overlap: each output is written once.
    let rows_apart = dst_stride >= n || m <= 1;
    if b.rows != k || !a.fits() || !b.fits() || !rows_apart || !fits(dst.len(), m, n, dst_stride, 1)
    {
        return Err(OP);
    }
    interrupt.check()?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            for row in 0..m {
                dst[row * dst_stride..row * dst_stride + n].fill(0.0);
            }
        }
        return Ok(());
    }
    let depth = k.min(TILE_DEPTH);
    let cells = (TILE_FLOPS / (2 * depth)).max(1);
    let tile_n = n.min(cells);
    let tile_m = (cells / tile_n).clamp(1, m);
    for k0 in (0..k).step_by(depth) {
        let kt = depth.min(k - k0);
        for i0 in (0..m).step_by(tile_m) {
            let mt = tile_m.min(m - i0);
            for j0 in (0..n).step_by(tile_n) {
                interrupt.check()?;
                let nt = tile_n.min(n - j0);
                let (Some(at), Some(bt)) = (a.part(i0, mt, k0, kt), b.part(k0, kt, j0, nt)) else {
                    return Err(OP);
                };
                let start = i0 * dst_stride + j0;
                let tile = dst.get_mut(start..).ok_or(OP)?;
                if !product(tile, dst_stride, at, bt, accumulate || k0 > 0, threads) {
                    return Err(OP);
                }
            }
        }
    }
    Ok(())
}

/// One tile: `dst (m × n) = [dst +] a · b`, checked, then handed to `gemm`.
fn product(
    dst: &mut [f32],
    dst_stride: usize,
    a: View<'_>,
    b: View<'_>,
    accumulate: bool,
    threads: usize,
) -> bool {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k || !a.fits() || !b.fits() || !fits(dst.len(), m, n, dst_stride, 1) {
        return false;
    }
    let (Ok(a_rs), Ok(a_cs), Ok(b_rs), Ok(b_cs), Ok(d_rs)) = (
        isize::try_from(a.row_stride),
        isize::try_from(a.col_stride),
        isize::try_from(b.row_stride),
        isize::try_from(b.col_stride),
        isize::try_from(dst_stride),
    ) else {
        return false;
    };
    // SAFETY: `fits` checked above that every element the strides address, for the given
    // row and column counts, lies inside the borrowed slices; `dst` is borrowed mutably and
    // cannot alias `a` or `b`, and its rows do not overlap (checked by `matmul`). With
    // `read_dst` false, gemm writes `1 · a · b` without reading `dst`; with it true,
    // `1 · dst + 1 · a · b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            d_rs,
            accumulate,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism(m, n, k, threads),
        );
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiplies_and_accumulates() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // 2 × 3
        let b = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]; // 3 × 2
        let mut d = [10.0; 4];
        assert!(
            matmul(
                &mut d,
                2,
                View::rows(&a, 2, 3),
                View::rows(&b, 3, 2),
                false,
                1,
                &Interrupt::new()
            )
            .is_ok()
        );
        assert_eq!(d, [4.0, 5.0, 10.0, 11.0]);
        assert!(
            matmul(
                &mut d,
                2,
                View::rows(&a, 2, 3),
                View::rows(&b, 3, 2),
                true,
                1,
                &Interrupt::new()
            )
            .is_ok()
        );
        assert_eq!(d, [8.0, 10.0, 20.0, 22.0]);
        // aᵀ · a: 3 × 3.
        let mut t = [0.0; 9];
        assert!(
            matmul(
                &mut t,
                3,
                View::transposed(&a, 2, 3),
                View::rows(&a, 2, 3),
                false,
                2,
                &Interrupt::new()
            )
            .is_ok()
        );
        assert_eq!(t, [17.0, 22.0, 27.0, 22.0, 29.0, 36.0, 27.0, 36.0, 45.0]);
    }

    #[test]
    fn a_deep_product_is_added_up_tile_by_tile() {
        let (m, k, n) = (3, TILE_DEPTH + 7, 5);
        let a: Vec<f32> = (0..m * k).map(|i| ((i % 13) as f32 - 6.0) / 8.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i % 7) as f32 - 3.0) / 4.0).collect();
        let mut d = vec![0.0f32; m * n];
        let (va, vb) = (View::rows(&a, m, k), View::rows(&b, k, n));
        assert!(matmul(&mut d, n, va, vb, false, 2, &Interrupt::new()).is_ok());
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k)
                    .map(|p| f64::from(a[i * k + p]) * f64::from(b[p * n + j]))
                    .sum();
                assert!((f64::from(d[i * n + j]) - want).abs() < 1e-2 * want.abs().max(1.0));
            }
        }
    }

    #[test]
    fn an_interrupted_product_stops() {
        let a = [1.0f32; 6];
        let mut d = [0.0f32; 4];
        let interrupt = Interrupt::new();
        interrupt.stop();
        let r = matmul(
            &mut d,
            2,
            View::rows(&a, 2, 3),
            View::rows(&a, 3, 2),
            false,
            1,
            &interrupt,
        );
        assert_eq!(r, Err(EngineError::Interrupted));
    }

    #[test]
    fn refuses_views_outside_their_slices() {
        let a = [1.0; 5];
        let mut d = [0.0; 4];
        assert!(
            matmul(
                &mut d,
                2,
                View::rows(&a, 2, 3),
                View::rows(&a, 3, 2),
                false,
                1,
                &Interrupt::new()
            )
            .is_err()
        );
        let a = [1.0; 6];
        assert!(
            matmul(
                &mut d,
                1,
                View::rows(&a, 2, 3),
                View::rows(&a, 3, 2),
                false,
                1,
                &Interrupt::new()
            )
            .is_err()
        );
    }
}
