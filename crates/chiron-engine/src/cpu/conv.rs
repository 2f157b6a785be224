//! 2-D convolution as im2col + one matrix product per block of images.
//!
//! With `K = C·KH·KW` patch values and `P = OH·OW` output positions per image, a block of
//! `B` images forms a `K × B·P` patch matrix (`col`). The output is `W (O × K) · col`, copied
//! into each image's `O × P` slice of the NCHW output; the weight gradient is `dY · colᵀ`
//! and the input gradient `col2im(Wᵀ · dY)`. One product per block keeps the matrices large
//! enough for the micro-kernels, with the weights packed once per block rather than once per
//! image. Blocks hold at most [`COL_LIMIT`] patch values, whatever shapes a program asks for:
//! an image too large for that is cut into runs of positions.
//!
//! Every product accumulates over blocks in a fixed order, so results do not depend on how
//! threads share the work.

use rayon::prelude::*;

use super::gemm::{View, matmul};
use crate::check::Conv2d;

/// Most values one patch matrix may hold (16 MiB of `f32`).
const COL_LIMIT: usize = 1 << 22;

impl Conv2d {
    fn positions(&self) -> usize {
        self.out_h() * self.out_w()
    }
    fn patch(&self) -> usize {
        self.channels * self.kernel_h * self.kernel_w
    }
    fn image(&self) -> usize {
        self.channels * self.height * self.width
    }
}

/// Positions `start..start + len` of images `first..first + images`.
#[derive(Clone, Copy, Debug)]
struct Block {
    first: usize,
    images: usize,
    start: usize,
    len: usize,
}

impl Block {
    fn columns(&self) -> usize {
        self.images * self.len
    }
}

fn blocks(g: &Conv2d) -> Vec<Block> {
    let (k, p) = (g.patch(), g.positions());
    let per_image = k * p;
    if per_image <= COL_LIMIT {
        let group = (COL_LIMIT / per_image).max(1);
        (0..g.batch)
            .step_by(group)
            .map(|first| Block {
                first,
                images: group.min(g.batch - first),
                start: 0,
                len: p,
            })
            .collect()
    } else {
        let len = (COL_LIMIT / k.max(1)).clamp(1, p);
        (0..g.batch)
            .flat_map(|first| {
                (0..p).step_by(len).map(move |start| Block {
                    first,
                    images: 1,
                    start,
                    len: len.min(p - start),
                })
            })
            .collect()
    }
}

/// Fills `col` (`K × columns`) with the block's patches: row `(c, ki, kj)`, then image, then
/// position. Rows are filled in parallel.
fn im2col(g: &Conv2d, x: &[f32], block: Block, col: &mut [f32]) {
    let cols = block.columns();
    let taps = g.kernel_h * g.kernel_w;
    col.par_chunks_mut(cols).enumerate().for_each(|(row, out)| {
        let (c, tap) = (row / taps, row % taps);
        let (ki, kj) = (tap / g.kernel_w, tap % g.kernel_w);
        for (b, out) in out.chunks_mut(block.len).enumerate() {
            let image = &x[(block.first + b) * g.image()..(block.first + b + 1) * g.image()];
            let plane = &image[c * g.height * g.width..(c + 1) * g.height * g.width];
            patch_row(g, plane, ki, kj, block.start, out);
        }
    });
}

/// Adds the block's patch gradients `dcol` (`K × columns`) into the input gradient; images
/// in parallel.
fn col2im(g: &Conv2d, dcol: &[f32], block: Block, dx: &mut [f32]) {
    let cols = block.columns();
    let taps = g.kernel_h * g.kernel_w;
    let images = &mut dx[block.first * g.image()..(block.first + block.images) * g.image()];
    images
        .par_chunks_mut(g.image())
        .enumerate()
        .for_each(|(b, image)| {
            for (row, grads) in dcol.chunks(cols).enumerate() {
                let (c, tap) = (row / taps, row % taps);
                let (ki, kj) = (tap / g.kernel_w, tap % g.kernel_w);
                let plane = &mut image[c * g.height * g.width..(c + 1) * g.height * g.width];
                add_patch_row(
                    g,
                    &grads[b * block.len..(b + 1) * block.len],
                    ki,
                    kj,
                    block.start,
                    plane,
                );
            }
        });
}

/// Calls `f(offset, oy, ox_start, count)` for each run of consecutive output positions of
/// one output row within positions `start..start + len`.
fn runs(ow: usize, start: usize, len: usize, mut f: impl FnMut(usize, usize, usize, usize)) {
    let mut done = 0;
    while done < len {
        let pos = start + done;
        let (oy, ox) = (pos / ow, pos % ow);
        let count = (ow - ox).min(len - done);
        f(done, oy, ox, count);
        done += count;
    }
}

/// For output columns `ox0..ox0 + count` and kernel column `kj`, the range of `i` in
/// `0..count` whose input column `(ox0 + i)·stride + kj − padding` is inside the image.
fn valid(g: &Conv2d, ox0: usize, count: usize, kj: usize) -> (usize, usize) {
    let s = g.stride;
    // The first i with (ox0 + i)·s + kj ≥ bound.
    let first_at = |bound: usize| -> usize {
        let base = ox0 * s + kj;
        if base >= bound {
            0
        } else {
            (bound - base).div_ceil(s)
        }
    };
    let lo = first_at(g.padding).min(count);
    let hi = first_at(g.padding + g.width).min(count);
    (lo, hi.max(lo))
}

/// The values under kernel tap `(ki, kj)` of one channel plane for output positions
/// `start..start + out.len()`.
fn patch_row(g: &Conv2d, plane: &[f32], ki: usize, kj: usize, start: usize, out: &mut [f32]) {
    let (ow, s, p) = (g.out_w(), g.stride, g.padding);
    runs(ow, start, out.len(), |at, oy, ox0, count| {
        let out = &mut out[at..at + count];
        let y = oy * s + ki;
        if y < p || y - p >= g.height {
            out.fill(0.0);
            return;
        }
        let line = &plane[(y - p) * g.width..(y - p + 1) * g.width];
        let (lo, hi) = valid(g, ox0, count, kj);
        out[..lo].fill(0.0);
        out[hi..].fill(0.0);
        if lo == hi {
            return;
        }
        let x0 = (ox0 + lo) * s + kj - p;
        if s == 1 {
            out[lo..hi].copy_from_slice(&line[x0..x0 + (hi - lo)]);
        } else {
            for (i, d) in out[lo..hi].iter_mut().enumerate() {
                *d = line[x0 + i * s];
            }
        }
    });
}

/// Adds the gradients of kernel tap `(ki, kj)` for output positions
/// `start..start + grads.len()` into one channel plane.
fn add_patch_row(g: &Conv2d, grads: &[f32], ki: usize, kj: usize, start: usize, plane: &mut [f32]) {
    let (ow, s, p) = (g.out_w(), g.stride, g.padding);
    runs(ow, start, grads.len(), |at, oy, ox0, count| {
        let y = oy * s + ki;
        if y < p || y - p >= g.height {
            return;
        }
        let line = &mut plane[(y - p) * g.width..(y - p + 1) * g.width];
        let (lo, hi) = valid(g, ox0, count, kj);
        if lo == hi {
            return;
        }
        let x0 = (ox0 + lo) * s + kj - p;
        let grads = &grads[at + lo..at + hi];
        if s == 1 {
            for (d, v) in line[x0..x0 + grads.len()].iter_mut().zip(grads) {
                *d += v;
            }
        } else {
            for (i, v) in grads.iter().enumerate() {
                line[x0 + i * s] += v;
            }
        }
    });
}

/// `y = conv(x, w) + b`. Returns `None` on an internal size inconsistency.
pub(crate) fn forward(g: &Conv2d, x: &[f32], w: &[f32], b: Option<&[f32]>) -> Option<Vec<f32>> {
    let (k, pcount, o) = (g.patch(), g.positions(), g.outputs);
    let threads = rayon::current_num_threads();
    let mut y = vec![0.0f32; g.batch * o * pcount];
    let mut col = Vec::new();
    let mut product = Vec::new();
    for block in blocks(g) {
        let cols = block.columns();
        col.resize(k * cols, 0.0);
        product.resize(o * cols, 0.0);
        im2col(g, x, block, &mut col);
        if let Some(b) = b {
            for (row, &bias) in product.chunks_mut(cols).zip(b) {
                row.fill(bias);
            }
        }
        let ok = matmul(
            &mut product,
            cols,
            View::rows(w, o, k),
            View::rows(&col, k, cols),
            b.is_some(),
            threads,
        );
        if !ok {
            return None;
        }
        // Product row `o`, image `b` → output channel `o` of image `first + b`.
        let images = &mut y[block.first * o * pcount..(block.first + block.images) * o * pcount];
        images
            .par_chunks_mut(o * pcount)
            .enumerate()
            .for_each(|(b, image)| {
                for (channel, row) in image.chunks_mut(pcount).zip(product.chunks(cols)) {
                    channel[block.start..block.start + block.len]
                        .copy_from_slice(&row[b * block.len..(b + 1) * block.len]);
                }
            });
    }
    Some(y)
}

/// Gradients of the input and the weights (and bias) from the output gradient `dy`.
pub(crate) struct Backward {
    pub dx: Option<Vec<f32>>,
    pub dw: Option<Vec<f32>>,
    pub db: Option<Vec<f32>>,
}

/// Back-propagates `dy` through `y = conv(x, w) + b`, computing only the gradients asked for.
pub(crate) fn backward(
    g: &Conv2d,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    want: (bool, bool, bool),
) -> Option<Backward> {
    let (k, pcount, o) = (g.patch(), g.positions(), g.outputs);
    let (want_dx, want_dw, want_db) = want;
    let threads = rayon::current_num_threads();
    let mut dx = want_dx.then(|| vec![0.0f32; g.batch * g.image()]);
    let mut dw = want_dw.then(|| vec![0.0f32; o * k]);
    let mut db = want_db.then(|| vec![0.0f32; o]);
    let (mut col, mut dcol, mut dprod) = (Vec::new(), Vec::new(), Vec::new());
    for block in blocks(g) {
        let cols = block.columns();
        // The block's output gradient as an `O × columns` matrix, like the forward product.
        dprod.resize(o * cols, 0.0);
        dprod
            .par_chunks_mut(cols)
            .enumerate()
            .for_each(|(channel, row)| {
                for (b, out) in row.chunks_mut(block.len).enumerate() {
                    let at = ((block.first + b) * o + channel) * pcount + block.start;
                    out.copy_from_slice(&dy[at..at + block.len]);
                }
            });
        if let Some(db) = db.as_mut() {
            for (d, row) in db.iter_mut().zip(dprod.chunks(cols)) {
                *d += row.iter().sum::<f32>();
            }
        }
        if let Some(dw) = dw.as_mut() {
            col.resize(k * cols, 0.0);
            im2col(g, x, block, &mut col);
            let ok = matmul(
                dw,
                k,
                View::rows(&dprod, o, cols),
                View::transposed(&col, k, cols),
                true,
                threads,
            );
            if !ok {
                return None;
            }
        }
        if let Some(dx) = dx.as_mut() {
            dcol.resize(k * cols, 0.0);
            let ok = matmul(
                &mut dcol,
                cols,
                View::transposed(w, o, k),
                View::rows(&dprod, o, cols),
                false,
                threads,
            );
            if !ok {
                return None;
            }
            col2im(g, &dcol, block, dx);
        }
    }
    Some(Backward { dx, dw, db })
}
