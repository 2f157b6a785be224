//! 2-D convolution as im2col + one matrix product per block of images.
//!
//! With `K = C·KH·KW` patch values and `P = OH·OW` output positions per image, a block of
//! `B` images forms a `K × B·P` patch matrix (`col`). The output is `W (O × K) · col`, copied
//! into each image's `O × P` slice of the NCHW output; the weight gradient is `dY · colᵀ`
//! and the input gradient `col2im(Wᵀ · dY)`. A batch is cut into [`PARTS`] blocks that run
//! on separate threads, each with one product large enough for the micro-kernels and the
//! weights packed once per block rather than once per image. Blocks hold at most
//! [`COL_LIMIT`] patch values whatever shapes a program asks for: an image too large for
//! that is cut into runs of positions, run one after another on all threads.
//!
//! The weight and bias gradients add the blocks' partial sums in block order, and the
//! blocks depend on the batch alone, so results do not depend on the number of threads.
//!
//! Every option of [`Conv2d`] runs on the same path: a dilation only moves where a kernel
//! tap reads, and with `G` groups the patch matrix's rows fall into `G` runs of `K / G`
//! (one per group's channels), each multiplied by its group's `O / G` rows of weights, so a
//! convolution is `G` products on slices of the same buffers. With one group and no
//! dilation it is exactly the single product above.

use rayon::prelude::*;

use super::elementwise;
use super::gemm::{View, matmul};
use crate::check::Conv2d;
use crate::interrupt::Pace;
use crate::{EngineError, Interrupt};

const INTERNAL: EngineError = EngineError::Internal { op: "conv2d" };

/// Most values one patch matrix may hold (16 MiB of `f32`).
const COL_LIMIT: usize = 1 << 22;

/// Blocks a batch is cut into.
const PARTS: usize = 8;

impl Conv2d {
    fn positions(&self) -> usize {
        self.out_h() * self.out_w()
    }
    /// Rows of the patch matrix: every channel's taps.
    fn patch(&self) -> usize {
        self.channels * self.kernel_h * self.kernel_w
    }
    /// Patch rows per group: the length of a weight row.
    fn group_patch(&self) -> usize {
        self.patch() / self.groups.max(1)
    }
    /// Output channels per group.
    fn group_outputs(&self) -> usize {
        self.outputs / self.groups.max(1)
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

/// The blocks of a convolution, and whether they are whole images (which can run in
/// parallel) rather than runs of positions of one image.
fn blocks(g: &Conv2d) -> (Vec<Block>, bool) {
    let (k, p) = (g.patch(), g.positions());
    let per_image = k * p;
    if per_image <= COL_LIMIT {
        let group = g.batch.div_ceil(PARTS).min(COL_LIMIT / per_image).max(1);
        let blocks = (0..g.batch)
            .step_by(group)
            .map(|first| Block {
                first,
                images: group.min(g.batch - first),
                start: 0,
                len: p,
            })
            .collect();
        (blocks, true)
    } else {
        let len = (COL_LIMIT / k.max(1)).clamp(1, p);
        let blocks = (0..g.batch)
            .flat_map(|first| {
                (0..p).step_by(len).map(move |start| Block {
                    first,
                    images: 1,
                    start,
                    len: len.min(p - start),
                })
            })
            .collect();
        (blocks, false)
    }
}

/// Threads each block's products may use: one when blocks run side by side, all when they
/// run one after another.
fn product_threads(blocks: usize, parallel: bool) -> usize {
    let threads = rayon::current_num_threads();
    if parallel && blocks >= threads {
        1
    } else {
        threads
    }
}

/// Fills `col` (`K × columns`) with the block's patches: row `(c, ki, kj)`, then image, then
/// position.
fn im2col(g: &Conv2d, x: &[f32], block: Block, col: &mut [f32]) {
    let cols = block.columns();
    let taps = g.kernel_h * g.kernel_w;
    col.chunks_mut(cols).enumerate().for_each(|(row, out)| {
        let (c, tap) = (row / taps, row % taps);
        let (ki, kj) = (tap / g.kernel_w, tap % g.kernel_w);
        for (b, out) in out.chunks_mut(block.len).enumerate() {
            let image = &x[(block.first + b) * g.image()..(block.first + b + 1) * g.image()];
            let plane = &image[c * g.height * g.width..(c + 1) * g.height * g.width];
            patch_row(g, plane, ki, kj, block.start, out);
        }
    });
}

/// Adds the block's patch gradients `dcol` (`K × columns`) into `images`, the input
/// gradient of the block's images.
fn col2im(g: &Conv2d, dcol: &[f32], block: Block, images: &mut [f32]) {
    let cols = block.columns();
    let taps = g.kernel_h * g.kernel_w;
    images
        .chunks_mut(g.image())
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

/// A working buffer from this thread's pool, returned to it on drop. Its contents are
/// whatever the last user left: every user overwrites all of it. Reusing the buffers spares
/// a zero fill and fresh pages on every block of every call.
struct Scratch(Vec<f32>);

thread_local! {
    static POOL: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Buffers kept per thread, each at most [`COL_LIMIT`] values.
const POOLED: usize = 3;

impl Scratch {
    fn take(len: usize) -> Self {
        let mut v = POOL.with(|p| p.borrow_mut().pop()).unwrap_or_default();
        v.resize(len, 0.0);
        Self(v)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        if v.capacity() <= COL_LIMIT {
            POOL.with(|p| {
                let mut pool = p.borrow_mut();
                if pool.len() < POOLED {
                    pool.push(v);
                }
            });
        }
    }
}

impl std::ops::Deref for Scratch {
    type Target = Vec<f32>;
    fn deref(&self) -> &Vec<f32> {
        &self.0
    }
}

impl std::ops::DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut Vec<f32> {
        &mut self.0
    }
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
/// `0..count` whose input column `(ox0 + i)·stride + kj·dilation − padding` is inside the
/// image.
fn valid(g: &Conv2d, ox0: usize, count: usize, kj: usize) -> (usize, usize) {
    let s = g.stride[1];
    // The first i with (ox0 + i)·s + kj·d ≥ bound.
    let first_at = |bound: usize| -> usize {
        let base = ox0 * s + kj * g.dilation[1];
        if base >= bound {
            0
        } else {
            (bound - base).div_ceil(s)
        }
    };
    let lo = first_at(g.padding[1]).min(count);
    let hi = first_at(g.padding[1] + g.width).min(count);
    (lo, hi.max(lo))
}

/// The values under kernel tap `(ki, kj)` of one channel plane for output positions
/// `start..start + out.len()`.
fn patch_row(g: &Conv2d, plane: &[f32], ki: usize, kj: usize, start: usize, out: &mut [f32]) {
    let (ow, s, p) = (g.out_w(), g.stride[1], g.padding[1]);
    runs(ow, start, out.len(), |at, oy, ox0, count| {
        let out = &mut out[at..at + count];
        let y = oy * g.stride[0] + ki * g.dilation[0];
        let p0 = g.padding[0];
        if y < p0 || y - p0 >= g.height {
            out.fill(0.0);
            return;
        }
        let line = &plane[(y - p0) * g.width..(y - p0 + 1) * g.width];
        let (lo, hi) = valid(g, ox0, count, kj);
        out[..lo].fill(0.0);
        out[hi..].fill(0.0);
        if lo == hi {
            return;
        }
        let x0 = (ox0 + lo) * s + kj * g.dilation[1] - p;
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
    let (ow, s, p) = (g.out_w(), g.stride[1], g.padding[1]);
    runs(ow, start, grads.len(), |at, oy, ox0, count| {
        let y = oy * g.stride[0] + ki * g.dilation[0];
        let p0 = g.padding[0];
        if y < p0 || y - p0 >= g.height {
            return;
        }
        let line = &mut plane[(y - p0) * g.width..(y - p0 + 1) * g.width];
        let (lo, hi) = valid(g, ox0, count, kj);
        if lo == hi {
            return;
        }
        let x0 = (ox0 + lo) * s + kj * g.dilation[1] - p;
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

/// Computes a block's output into `out`, the outputs of the block's images.
#[allow(clippy::too_many_arguments)]
fn forward_block(
    g: &Conv2d,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    block: Block,
    out: &mut [f32],
    threads: usize,
    interrupt: &Interrupt,
) -> Result<(), EngineError> {
    let (k, pcount, o) = (g.patch(), g.positions(), g.outputs);
    let cols = block.columns();
    interrupt.check()?;
    let mut col = Scratch::take(k * cols);
    im2col(g, x, block, &mut col);
    let mut product = Scratch::take(o * cols);
    if let Some(b) = b {
        for (row, &bias) in product.chunks_mut(cols).zip(b) {
            row.fill(bias);
        }
    }
    // Group `gi`: its weight rows times its channels' patch rows, into its output rows.
    let (gk, go) = (g.group_patch(), g.group_outputs());
    for gi in 0..g.groups {
        let weights = w.get(gi * go * gk..).ok_or(INTERNAL)?;
        let patches = col.get(gi * gk * cols..).ok_or(INTERNAL)?;
        let dst = product.get_mut(gi * go * cols..).ok_or(INTERNAL)?;
        matmul(
            dst,
            cols,
            View::rows(weights, go, gk),
            View::rows(patches, gk, cols),
            b.is_some(),
            threads,
            interrupt,
        )?;
    }
    // Product row `o`, image `b` → output channel `o` of the block's image `b`.
    let mut pace = Pace::new(interrupt)?;
    for (b, image) in out.chunks_mut(o * pcount).enumerate() {
        for (channel, row) in image.chunks_mut(pcount).zip(product.chunks(cols)) {
            pace.step(block.len)?;
            channel[block.start..block.start + block.len]
                .copy_from_slice(&row[b * block.len..(b + 1) * block.len]);
        }
    }
    Ok(())
}

/// `y = conv(x, w) + b`.
pub(crate) fn forward(
    g: &Conv2d,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    interrupt: &Interrupt,
) -> Result<Vec<f32>, EngineError> {
    let out_image = g.outputs * g.positions();
    let mut y = vec![0.0f32; g.batch * out_image];
    let (blocks, parallel) = blocks(g);
    let threads = product_threads(blocks.len(), parallel);
    if parallel {
        let group = blocks.first().map_or(1, |b| b.images);
        y.par_chunks_mut(group * out_image)
            .zip(blocks.par_iter())
            .try_for_each(|(out, &block)| {
                forward_block(g, x, w, b, block, out, threads, interrupt)
            })?;
    } else {
        blocks.iter().try_for_each(|&block| {
            let out = &mut y[block.first * out_image..(block.first + 1) * out_image];
            forward_block(g, x, w, b, block, out, threads, interrupt)
        })?;
    }
    Ok(y)
}

/// Gradients of the input and the weights (and bias) from the output gradient `dy`.
pub(crate) struct Backward {
    pub dx: Option<Vec<f32>>,
    pub dw: Option<Vec<f32>>,
    pub db: Option<Vec<f32>>,
}

/// One block's share of the weight and bias gradients.
type Partial = (Option<Vec<f32>>, Option<Vec<f32>>);

/// Back-propagates one block: writes its images' input gradient into `dx` (if asked) and
/// returns its partial weight and bias gradients (if asked).
#[allow(clippy::too_many_arguments)]
fn backward_block(
    g: &Conv2d,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    want: (bool, bool, bool),
    block: Block,
    dx: Option<&mut [f32]>,
    threads: usize,
    interrupt: &Interrupt,
) -> Result<Partial, EngineError> {
    let (k, pcount, o) = (g.patch(), g.positions(), g.outputs);
    let (_, want_dw, want_db) = want;
    let cols = block.columns();
    // The block's output gradient as an `O × columns` matrix, like the forward product.
    let mut pace = Pace::new(interrupt)?;
    let mut dprod = Scratch::take(o * cols);
    for (channel, row) in dprod.chunks_mut(cols).enumerate() {
        pace.step(2 * cols)?;
        for (b, out) in row.chunks_mut(block.len).enumerate() {
            let at = ((block.first + b) * o + channel) * pcount + block.start;
            out.copy_from_slice(&dy[at..at + block.len]);
        }
    }
    let db = want_db.then(|| {
        dprod
            .chunks(cols)
            .map(|row| row.iter().sum::<f32>())
            .collect()
    });
    let (gk, go) = (g.group_patch(), g.group_outputs());
    let dw = if want_dw {
        interrupt.check()?;
        let mut col = Scratch::take(k * cols);
        im2col(g, x, block, &mut col);
        // Group `gi`'s weight gradient: its output rows times its patch rows, transposed.
        let mut dw = vec![0.0f32; o * gk];
        for gi in 0..g.groups {
            let grads = dprod.get(gi * go * cols..).ok_or(INTERNAL)?;
            let patches = col.get(gi * gk * cols..).ok_or(INTERNAL)?;
            let dst = dw.get_mut(gi * go * gk..).ok_or(INTERNAL)?;
            let (lhs, rhs) = (
                View::rows(grads, go, cols),
                View::transposed(patches, gk, cols),
            );
            matmul(dst, gk, lhs, rhs, false, threads, interrupt)?;
        }
        Some(dw)
    } else {
        None
    };
    if let Some(dx) = dx {
        let mut dcol = Scratch::take(k * cols);
        for gi in 0..g.groups {
            let weights = w.get(gi * go * gk..).ok_or(INTERNAL)?;
            let grads = dprod.get(gi * go * cols..).ok_or(INTERNAL)?;
            let dst = dcol.get_mut(gi * gk * cols..).ok_or(INTERNAL)?;
            let (lhs, rhs) = (
                View::transposed(weights, go, gk),
                View::rows(grads, go, cols),
            );
            matmul(dst, cols, lhs, rhs, false, threads, interrupt)?;
        }
        interrupt.check()?;
        col2im(g, &dcol, block, dx);
    }
    Ok((dw, db))
}

/// Back-propagates `dy` through `y = conv(x, w) + b`, computing only the gradients asked for.
pub(crate) fn backward(
    g: &Conv2d,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    want: (bool, bool, bool),
    interrupt: &Interrupt,
) -> Result<Backward, EngineError> {
    let image = g.image();
    let mut dx = want.0.then(|| vec![0.0f32; g.batch * image]);
    let (blocks, parallel) = blocks(g);
    let threads = product_threads(blocks.len(), parallel);
    let partials: Vec<Result<Partial, EngineError>> = if parallel {
        let group = blocks.first().map_or(1, |b| b.images);
        match dx.as_mut() {
            Some(dx) => dx
                .par_chunks_mut(group * image)
                .zip(blocks.par_iter())
                .map(|(dx, &block)| {
                    backward_block(g, x, w, dy, want, block, Some(dx), threads, interrupt)
                })
                .collect(),
            None => blocks
                .par_iter()
                .map(|&block| backward_block(g, x, w, dy, want, block, None, threads, interrupt))
                .collect(),
        }
    } else {
        blocks
            .iter()
            .map(|&block| {
                let dx = dx
                    .as_mut()
                    .map(|dx| &mut dx[block.first * image..(block.first + 1) * image]);
                backward_block(g, x, w, dy, want, block, dx, threads, interrupt)
            })
            .collect()
    };
    let (mut dw, mut db) = (None::<Vec<f32>>, None::<Vec<f32>>);
    for partial in partials {
        let (pw, pb) = partial?;
        for (total, part) in [(&mut dw, pw), (&mut db, pb)] {
            match (total.as_mut(), part) {
                (Some(t), Some(p)) => elementwise::add_into(t, &p, interrupt)?,
                (None, Some(p)) => *total = Some(p),
                _ => {}
            }
        }
    }
    Ok(Backward { dx, dw, db })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Conv2dOptions;
    use crate::check;

    /// The convolution by its definition, in `f64`; with `dy`, also the input, weight and
    /// bias gradients of `Σ y · dy`.
    fn naive(
        g: &Conv2d,
        x: &[f32],
        w: &[f32],
        b: &[f32],
        dy: &[f32],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
        let (oh, ow) = (g.out_h(), g.out_w());
        let (cg, og) = (g.channels / g.groups, g.outputs / g.groups);
        let mut y = vec![0.0f64; g.batch * g.outputs * oh * ow];
        let mut dx = vec![0.0f64; x.len()];
        let mut dw = vec![0.0f64; w.len()];
        let mut db = vec![0.0f64; b.len()];
        for n in 0..g.batch {
            for o in 0..g.outputs {
                let group = o / og;
                for oy in 0..oh {
                    for ox in 0..ow {
                        let at = ((n * g.outputs + o) * oh + oy) * ow + ox;
                        let mut sum = f64::from(b[o]);
                        let gy = f64::from(dy[at]);
                        db[o] += gy;
                        for ci in 0..cg {
                            let c = group * cg + ci;
                            for ki in 0..g.kernel_h {
                                for kj in 0..g.kernel_w {
                                    let yy = (oy * g.stride[0] + ki * g.dilation[0]) as isize
                                        - g.padding[0] as isize;
                                    let xx = (ox * g.stride[1] + kj * g.dilation[1]) as isize
                                        - g.padding[1] as isize;
                                    if yy < 0
                                        || xx < 0
                                        || yy >= g.height as isize
                                        || xx >= g.width as isize
                                    {
                                        continue;
                                    }
                                    let xi = ((n * g.channels + c) * g.height + yy as usize)
                                        * g.width
                                        + xx as usize;
                                    let wi = ((o * cg + ci) * g.kernel_h + ki) * g.kernel_w + kj;
                                    sum += f64::from(x[xi]) * f64::from(w[wi]);
                                    dx[xi] += gy * f64::from(w[wi]);
                                    dw[wi] += gy * f64::from(x[xi]);
                                }
                            }
                        }
                        y[at] = sum;
                    }
                }
            }
        }
        let f = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect();
        (f(y), f(dx), f(dw), f(db))
    }

    fn close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                "{what}[{i}]: {g} vs {w}"
            );
        }
    }

    #[test]
    fn every_option_matches_the_definition() -> Result<(), EngineError> {
        let i = Interrupt::new();
        let cases: [(&[usize; 4], &[usize; 4], Conv2dOptions); 6] = [
            // Plain, then rectangular stride and padding.
            (&[2, 3, 7, 6], &[4, 3, 3, 3], Conv2dOptions::square(1, 1)),
            (
                &[2, 3, 9, 7],
                &[4, 3, 3, 2],
                Conv2dOptions {
                    stride: [2, 1],
                    padding: [1, 2],
                    dilation: [1, 1],
                    groups: 1,
                },
            ),
            // Dilated.
            (
                &[1, 2, 9, 8],
                &[3, 2, 3, 3],
                Conv2dOptions {
                    stride: [1, 2],
                    padding: [2, 1],
                    dilation: [2, 3],
                    groups: 1,
                },
            ),
            // Grouped: 6 channels in 3 groups, 2 outputs per group.
            (
                &[2, 6, 6, 5],
                &[6, 2, 3, 3],
                Conv2dOptions {
                    stride: [1, 1],
                    padding: [1, 1],
                    dilation: [1, 1],
                    groups: 3,
                },
            ),
            // Depthwise, strided, dilated, and with two outputs per channel.
            (
                &[3, 4, 10, 9],
                &[8, 1, 3, 3],
                Conv2dOptions {
                    stride: [2, 2],
                    padding: [2, 1],
                    dilation: [2, 1],
                    groups: 4,
                },
            ),
            // Groups with a kernel wider than tall, more outputs than inputs per group.
            (
                &[1, 4, 5, 8],
                &[6, 2, 1, 4],
                Conv2dOptions {
                    stride: [1, 3],
                    padding: [0, 2],
                    dilation: [1, 2],
                    groups: 2,
                },
            ),
        ];
        for (xd, wd, options) in cases {
            let g = check::conv2d(xd, wd, Some(&[wd[0]]), &options)?;
            let count = |d: &[usize; 4]| d.iter().product::<usize>();
            let x: Vec<f32> = (0..count(xd))
                .map(|v| ((v * 37 % 23) as f32 - 11.0) / 8.0)
                .collect();
            let w: Vec<f32> = (0..count(wd))
                .map(|v| ((v * 13 % 17) as f32 - 8.0) / 8.0)
                .collect();
            let b: Vec<f32> = (0..wd[0]).map(|v| v as f32 * 0.5 - 1.0).collect();
            let y = forward(&g, &x, &w, Some(&b), &i)?;
            let dy: Vec<f32> = (0..y.len())
                .map(|v| ((v * 7 % 11) as f32 - 5.0) / 4.0)
                .collect();
            let (ny, ndx, ndw, ndb) = naive(&g, &x, &w, &b, &dy);
            let what = format!("{xd:?} {wd:?} {options:?}");
            close(&y, &ny, &format!("y {what}"));
            let back = backward(&g, &x, &w, &dy, (true, true, true), &i)?;
            close(&back.dx.unwrap_or_default(), &ndx, &format!("dx {what}"));
            close(&back.dw.unwrap_or_default(), &ndw, &format!("dw {what}"));
            close(&back.db.unwrap_or_default(), &ndb, &format!("db {what}"));
        }
        Ok(())
    }

    #[test]
    fn an_image_too_large_for_one_block_runs_in_position_runs() -> Result<(), EngineError> {
        // K · P beyond COL_LIMIT: one image is cut into runs of positions.
        let options = Conv2dOptions {
            stride: [1, 1],
            padding: [1, 1],
            dilation: [2, 1],
            groups: 2,
        };
        let (xd, wd) = ([1, 64, 130, 130], [4, 32, 3, 3]);
        let g = check::conv2d(&xd, &wd, None, &options)?;
        assert!(g.patch() * g.positions() > COL_LIMIT);
        let x: Vec<f32> = (0..xd.iter().product::<usize>())
            .map(|v| ((v * 37 % 23) as f32 - 11.0) / 8.0)
            .collect();
        let w: Vec<f32> = (0..wd.iter().product::<usize>())
            .map(|v| ((v * 13 % 17) as f32 - 8.0) / 8.0)
            .collect();
        let b = vec![0.0f32; wd[0]];
        let i = Interrupt::new();
        let y = forward(&g, &x, &w, None, &i)?;
        let dy = vec![0.5f32; y.len()];
        let (ny, ndx, ndw, _) = naive(&g, &x, &w, &b, &dy);
        close(&y, &ny, "y");
        let back = backward(&g, &x, &w, &dy, (true, true, false), &i)?;
        close(&back.dx.unwrap_or_default(), &ndx, "dx");
        close(&back.dw.unwrap_or_default(), &ndw, "dw");
        Ok(())
    }
}
