//! Max pooling over square windows, with the index of each window's maximum kept for the
//! backward pass.

use rayon::prelude::*;

use crate::interrupt::Pace;
use crate::{EngineError, Interrupt};

/// Pools `x` `[n, c, h, w]` into `out` dimensions `[n, c, oh, ow]`; returns the values and,
/// per output, the index in `x` it came from. The first of equal maxima wins, and a window
/// whose first value is NaN keeps it, so results do not depend on the thread split.
pub(crate) fn max_pool2d(
    x: &[f32],
    dims: [usize; 4],
    out: [usize; 4],
    kernel: usize,
    stride: usize,
    interrupt: &Interrupt,
) -> Result<(Vec<f32>, Vec<u32>), EngineError> {
    let [_, _, h, w] = dims;
    let [_, _, oh, ow] = out;
    let planes = out[0] * out[1];
    let mut values = vec![0.0f32; planes * oh * ow];
    let mut argmax = vec![0u32; planes * oh * ow];
    values
        .par_chunks_mut(oh * ow)
        .zip(argmax.par_chunks_mut(oh * ow))
        .enumerate()
        .try_for_each(|(plane, (vals, idxs))| {
            let mut pace = Pace::new(interrupt)?;
            let base = plane * h * w;
            let src = &x[base..base + h * w];
            for oy in 0..oh {
                for ox in 0..ow {
                    let (y0, x0) = (oy * stride, ox * stride);
                    let mut best = y0 * w + x0;
                    for ky in 0..kernel {
                        pace.step(kernel)?;
                        let row = (y0 + ky) * w + x0;
                        for i in row..row + kernel {
                            if src[i] > src[best] {
                                best = i;
                            }
                        }
                    }
                    vals[oy * ow + ox] = src[best];
                    // Tensors hold at most 2^28 elements, so an index fits in 32 bits.
                    idxs[oy * ow + ox] = (base + best) as u32;
                }
            }
            Ok(())
        })?;
    Ok((values, argmax))
}
