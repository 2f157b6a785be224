//! 2-D pooling: max and average over strided, padded windows, and adaptive average pooling.
//!
//! Each `[h, w]` plane is pooled (and its gradient spread back) on one thread, in a fixed
//! order, so results do not depend on the thread split.

use rayon::prelude::*;

use crate::interrupt::Pace;
use crate::{EngineError, Interrupt, Pool2dOptions};

const INTERNAL: EngineError = EngineError::Internal { op: "pool2d" };

/// The input rows (or columns) a window covers: from `start` (in padded coordinates, so
/// possibly before the image) over `kernel` taps, clipped to `0..len`.
fn span(out: usize, stride: usize, padding: usize, kernel: usize, len: usize) -> (usize, usize) {
    let start = out * stride;
    let lo = start.saturating_sub(padding).min(len);
    let hi = (start + kernel).saturating_sub(padding).min(len);
    (lo, hi.max(lo))
}

/// Checks that `x` holds `dims` and returns the plane sizes `(h·w, oh·ow)`.
fn planes(x: &[f32], dims: [usize; 4], out: [usize; 4]) -> Result<(usize, usize), EngineError> {
    let [n, c, h, w] = dims;
    let [on, oc, oh, ow] = out;
    if (on, oc) != (n, c) || x.len() != n * c * h * w {
        return Err(INTERNAL);
    }
    Ok((h * w, oh * ow))
}

/// Max pooling of `x` `[n, c, h, w]` into `out` `[n, c, oh, ow]`, padding with `-inf`;
/// returns the values and, per output, the index in `x` it came from. The first of equal
/// maxima wins, and a NaN wins over any number, so results do not depend on the thread split.
/// Every window holds at least one value of the image (padding is at most half the window).
pub(crate) fn max_pool2d(
    x: &[f32],
    dims: [usize; 4],
    out: [usize; 4],
    options: &Pool2dOptions,
    interrupt: &Interrupt,
) -> Result<(Vec<f32>, Vec<u32>), EngineError> {
    let [_, _, h, w] = dims;
    let [_, _, oh, ow] = out;
    let (plane_in, plane_out) = planes(x, dims, out)?;
    let Pool2dOptions {
        kernel,
        stride,
        padding,
    } = *options;
    let mut values = vec![0.0f32; out[0] * out[1] * plane_out];
    let mut argmax = vec![0u32; values.len()];
    values
        .par_chunks_mut(plane_out)
        .zip(argmax.par_chunks_mut(plane_out))
        .enumerate()
        .try_for_each(|(plane, (vals, idxs))| {
            let mut pace = Pace::new(interrupt)?;
            let base = plane * plane_in;
            let src = x.get(base..base + plane_in).ok_or(INTERNAL)?;
            for oy in 0..oh {
                let (y0, y1) = span(oy, stride[0], padding[0], kernel[0], h);
                for ox in 0..ow {
                    let (x0, x1) = span(ox, stride[1], padding[1], kernel[1], w);
                    let mut best = y0 * w + x0;
                    let mut top = src.get(best).copied().ok_or(INTERNAL)?;
                    'window: for yy in y0..y1 {
                        pace.step(x1 - x0 + 1)?;
                        let row = src.get(yy * w + x0..yy * w + x1).ok_or(INTERNAL)?;
                        for (i, &v) in row.iter().enumerate() {
                            if top.is_nan() {
                                break 'window;
                            }
                            if v > top || v.is_nan() {
                                top = v;
                                best = yy * w + x0 + i;
                            }
                        }
                    }
                    vals[oy * ow + ox] = top;
                    // Tensors hold at most 2^28 elements, so an index fits in 32 bits.
                    idxs[oy * ow + ox] = u32::try_from(base + best).map_err(|_| INTERNAL)?;
                }
            }
            Ok(())
        })?;
    Ok((values, argmax))
}

/// The windows of an average pooling over a plane of `[h, w]`: the input rows and columns
/// output `(oy, ox)` reads (`start..end` each), and what its sum is divided by.
#[derive(Clone, Copy)]
enum Windows {
    /// Fixed windows with padding counted as zeros: each sum is divided by `kh·kw`.
    Fixed {
        options: Pool2dOptions,
        plane: [usize; 2],
    },
    /// PyTorch's adaptive windows to `[oh, ow]`, each divided by its own size.
    Adaptive { plane: [usize; 2], out: [usize; 2] },
}

impl Windows {
    /// The input range of output `i` along `axis` (0: rows, 1: columns).
    fn range(&self, axis: usize, i: usize) -> (usize, usize) {
        match self {
            Windows::Fixed { options, plane } => span(
                i,
                options.stride[axis],
                options.padding[axis],
                options.kernel[axis],
                plane[axis],
            ),
            Windows::Adaptive { plane, out } => adaptive_window(i, out[axis], plane[axis]),
        }
    }

    /// What the sum over a window of `rows × cols` inputs is divided by.
    fn divisor(&self, rows: usize, cols: usize) -> f32 {
        match self {
            Windows::Fixed { options, .. } => (options.kernel[0] * options.kernel[1]) as f32,
            Windows::Adaptive { .. } => (rows * cols).max(1) as f32,
        }
    }

    /// The mean over each window of `x` `[n, c, h, w]`, into `out` `[n, c, oh, ow]`.
    fn forward(
        &self,
        x: &[f32],
        dims: [usize; 4],
        out: [usize; 4],
        interrupt: &Interrupt,
    ) -> Result<Vec<f32>, EngineError> {
        let w = dims[3];
        let [_, _, oh, ow] = out;
        let (plane_in, plane_out) = planes(x, dims, out)?;
        let mut values = vec![0.0f32; out[0] * out[1] * plane_out];
        values
            .par_chunks_mut(plane_out)
            .enumerate()
            .try_for_each(|(plane, vals)| {
                let mut pace = Pace::new(interrupt)?;
                let src = x
                    .get(plane * plane_in..(plane + 1) * plane_in)
                    .ok_or(INTERNAL)?;
                for oy in 0..oh {
                    let (y0, y1) = self.range(0, oy);
                    for ox in 0..ow {
                        let (x0, x1) = self.range(1, ox);
                        let mut sum = 0.0f32;
                        for yy in y0..y1 {
                            pace.step(x1 - x0 + 1)?;
                            let row = src.get(yy * w + x0..yy * w + x1).ok_or(INTERNAL)?;
                            sum += row.iter().sum::<f32>();
                        }
                        vals[oy * ow + ox] = sum / self.divisor(y1 - y0, x1 - x0);
                    }
                }
                Ok(())
            })?;
        Ok(values)
    }

    /// The gradient of [`Windows::forward`]'s input from `g`, its output's gradient.
    fn backward(
        &self,
        g: &[f32],
        dims: [usize; 4],
        out: [usize; 4],
        interrupt: &Interrupt,
    ) -> Result<Vec<f32>, EngineError> {
        let [n, c, h, w] = dims;
        let [_, _, oh, ow] = out;
        let (plane_in, plane_out) = (h * w, oh * ow);
        if g.len() != n * c * plane_out {
            return Err(INTERNAL);
        }
        let mut dx = vec![0.0f32; n * c * plane_in];
        dx.par_chunks_mut(plane_in)
            .zip(g.par_chunks(plane_out))
            .try_for_each(|(d, gs)| {
                let mut pace = Pace::new(interrupt)?;
                for oy in 0..oh {
                    let (y0, y1) = self.range(0, oy);
                    for ox in 0..ow {
                        let (x0, x1) = self.range(1, ox);
                        let v = gs[oy * ow + ox] / self.divisor(y1 - y0, x1 - x0);
                        for yy in y0..y1 {
                            pace.step(x1 - x0 + 1)?;
                            let row = d.get_mut(yy * w + x0..yy * w + x1).ok_or(INTERNAL)?;
                            row.iter_mut().for_each(|d| *d += v);
                        }
                    }
                }
                Ok(())
            })?;
        Ok(dx)
    }
}

/// Average pooling with padding counted as zeros: each window's sum over `kh·kw`.
pub(crate) fn avg_pool2d(
    x: &[f32],
    dims: [usize; 4],
    out: [usize; 4],
    options: &Pool2dOptions,
    interrupt: &Interrupt,
) -> Result<Vec<f32>, EngineError> {
    Windows::Fixed {
        options: *options,
        plane: [dims[2], dims[3]],
    }
    .forward(x, dims, out, interrupt)
}

/// The gradient of [`avg_pool2d`]'s input from `g`, its output's gradient.
pub(crate) fn avg_pool2d_backward(
    g: &[f32],
    dims: [usize; 4],
    out: [usize; 4],
    options: &Pool2dOptions,
    interrupt: &Interrupt,
) -> Result<Vec<f32>, EngineError> {
    Windows::Fixed {
        options: *options,
        plane: [dims[2], dims[3]],
    }
    .backward(g, dims, out, interrupt)
}

/// PyTorch's adaptive window `i` of `out` over `len`: `floor(i·len/out)..ceil((i+1)·len/out)`.
pub(crate) fn adaptive_window(i: usize, out: usize, len: usize) -> (usize, usize) {
    let out = out.max(1);
    let lo = (i * len) / out;
    let hi = ((i + 1) * len).div_ceil(out);
    (lo.min(len), hi.min(len).max(lo.min(len)))
}

/// Adaptive average pooling of `x` `[n, c, h, w]` into `out` `[n, c, oh, ow]`.
pub(crate) fn adaptive_avg_pool2d(
    x: &[f32],
    dims: [usize; 4],
    out: [usize; 4],
    interrupt: &Interrupt,
) -> Result<Vec<f32>, EngineError> {
    Windows::Adaptive {
        plane: [dims[2], dims[3]],
        out: [out[2], out[3]],
    }
    .forward(x, dims, out, interrupt)
}

/// The gradient of [`adaptive_avg_pool2d`]'s input from `g`, its output's gradient.
pub(crate) fn adaptive_avg_pool2d_backward(
    g: &[f32],
    dims: [usize; 4],
    out: [usize; 4],
    interrupt: &Interrupt,
) -> Result<Vec<f32>, EngineError> {
    Windows::Adaptive {
        plane: [dims[2], dims[3]],
        out: [out[2], out[3]],
    }
    .backward(g, dims, out, interrupt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_windows_follow_pytorch() {
        // 5 → 3: [0, 2), [1, 4), [3, 5).
        let w: Vec<_> = (0..3).map(|i| adaptive_window(i, 3, 5)).collect();
        assert_eq!(w, [(0, 2), (1, 4), (3, 5)]);
        // 7 → 1 is global; 6 → 3 splits evenly; 4 → 4 is the identity.
        assert_eq!(adaptive_window(0, 1, 7), (0, 7));
        let w: Vec<_> = (0..3).map(|i| adaptive_window(i, 3, 6)).collect();
        assert_eq!(w, [(0, 2), (2, 4), (4, 6)]);
        let w: Vec<_> = (0..4).map(|i| adaptive_window(i, 4, 4)).collect();
        assert_eq!(w, [(0, 1), (1, 2), (2, 3), (3, 4)]);
        // 10 → 4: [0, 3), [2, 5), [5, 8), [7, 10).
        let w: Vec<_> = (0..4).map(|i| adaptive_window(i, 4, 10)).collect();
        assert_eq!(w, [(0, 3), (2, 5), (5, 8), (7, 10)]);
    }

    #[test]
    fn adaptive_pooling_averages_overlapping_windows() -> Result<(), EngineError> {
        let i = Interrupt::new();
        // One 1 × 5 plane pooled to 1 × 3.
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = adaptive_avg_pool2d(&x, [1, 1, 1, 5], [1, 1, 1, 3], &i)?;
        assert_eq!(y, [1.5, 3.0, 4.5]);
        let dx = adaptive_avg_pool2d_backward(&[2.0, 3.0, 4.0], [1, 1, 1, 5], [1, 1, 1, 3], &i)?;
        // Windows of 2, 3 and 2 values, the middle one overlapping both others.
        assert_eq!(dx, [1.0, 2.0, 1.0, 3.0, 2.0]);
        Ok(())
    }

    #[test]
    fn padded_pooling() -> Result<(), EngineError> {
        let i = Interrupt::new();
        // A 2 × 3 plane, window 2 × 2, stride 2, padding 1: windows of 1, 2 or 4 values.
        let x = [1.0, -2.0, 3.0, 4.0, -5.0, 6.0];
        let options = Pool2dOptions {
            kernel: [2, 2],
            stride: [2, 2],
            padding: [1, 1],
        };
        let out = crate::check::pool2d(&[1, 1, 2, 3], &options)?;
        assert_eq!(out, [1, 1, 2, 2]);
        let (v, at) = max_pool2d(&x, [1, 1, 2, 3], out, &options, &i)?;
        // Windows: rows {0} × cols {0}, {0} × {1, 2}, {1} × {0}, {1} × {1, 2}.
        assert_eq!(v, [1.0, 3.0, 4.0, 6.0]);
        assert_eq!(at, [0, 2, 3, 5]);
        let all_negative = [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0];
        let (v, _) = max_pool2d(&all_negative, [1, 1, 2, 3], out, &options, &i)?;
        assert_eq!(v, [-1.0, -2.0, -4.0, -5.0]);
        let a = avg_pool2d(&x, [1, 1, 2, 3], out, &options, &i)?;
        assert_eq!(a, [0.25, 0.25, 1.0, 0.25]);
        let d = avg_pool2d_backward(&[4.0, 8.0, 12.0, 16.0], [1, 1, 2, 3], out, &options, &i)?;
        assert_eq!(d, [1.0, 2.0, 2.0, 3.0, 4.0, 4.0]);
        Ok(())
    }
}
