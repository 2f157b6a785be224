//! The one place the engine calls the `gemm` crate, whose entry point is `unsafe` because it
//! takes raw pointers and strides. Every call is bounds-checked here first, so the rest of the
//! engine multiplies matrices through a safe function.

#![allow(unsafe_code)]

use gemm::Parallelism;

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

/// `dst (m × n, row stride dst_stride) = [dst +] a · b`.
///
/// `threads` is the most threads the product may use; 1 inside work that is already split
/// across threads. Returns `false`, touching nothing, if a view does not fit its slice.
#[must_use]
pub(crate) fn matmul(
    dst: &mut [f32],
    dst_stride: usize,
    a: View<'_>,
    b: View<'_>,
    accumulate: bool,
    threads: usize,
) -> bool {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    // Destination rows must not overlap: each output is written once.
    let rows_apart = dst_stride >= n || m <= 1;
    if b.rows != k || !a.fits() || !b.fits() || !rows_apart || !fits(dst.len(), m, n, dst_stride, 1)
    {
        return false;
    }
    if m == 0 || n == 0 {
        return true;
    }
    if k == 0 {
        if !accumulate {
            for row in 0..m {
                dst[row * dst_stride..row * dst_stride + n].fill(0.0);
            }
        }
        return true;
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
    // cannot alias `a` or `b`. With `read_dst` false, gemm writes `1 · a · b` without reading
    // `dst`; with it true, `1 · dst + 1 · a · b`.
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
        assert!(matmul(
            &mut d,
            2,
            View::rows(&a, 2, 3),
            View::rows(&b, 3, 2),
            false,
            1
        ));
        assert_eq!(d, [4.0, 5.0, 10.0, 11.0]);
        assert!(matmul(
            &mut d,
            2,
            View::rows(&a, 2, 3),
            View::rows(&b, 3, 2),
            true,
            1
        ));
        assert_eq!(d, [8.0, 10.0, 20.0, 22.0]);
        // aᵀ · a: 3 × 3.
        let mut t = [0.0; 9];
        assert!(matmul(
            &mut t,
            3,
            View::transposed(&a, 2, 3),
            View::rows(&a, 2, 3),
            false,
            2
        ));
        assert_eq!(t, [17.0, 22.0, 27.0, 22.0, 29.0, 36.0, 27.0, 36.0, 45.0]);
    }

    #[test]
    fn refuses_views_outside_their_slices() {
        let a = [1.0; 5];
        let mut d = [0.0; 4];
        assert!(!matmul(
            &mut d,
            2,
            View::rows(&a, 2, 3),
            View::rows(&a, 3, 2),
            false,
            1
        ));
        let a = [1.0; 6];
        assert!(!matmul(
            &mut d,
            1,
            View::rows(&a, 2, 3),
            View::rows(&a, 3, 2),
            false,
            1
        ));
    }
}
