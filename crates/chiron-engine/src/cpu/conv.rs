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

use rayon::prelude::*;

use super::elementwise;
use super::gemm::{View, matmul};
use crate::check::Conv2d;
use crate::interrupt::Pace;
use crate::{EngineError, Interrupt};

/// Most values one patch matrix may hold (16 MiB of `f32`).
const COL_LIMIT: usize = 1 << 22;

/// Blocks a batch is cut into.
const PARTS: usize = 8;

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
    let rows = View::rows(&col, k, cols);
    matmul(
        &mut product,
        cols,
        View::rows(w, o, k),
        rows,
        b.is_some(),
        threads,
        interrupt,
    )?;
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
    let dw = if want_dw {
        interrupt.check()?;
        let mut col = Scratch::take(k * cols);
        im2col(g, x, block, &mut col);
        let mut dw = vec![0.0f32; o * k];
        let (lhs, rhs) = (View::rows(&dprod, o, cols), View::transposed(&col, k, cols));
        matmul(&mut dw, k, lhs, rhs, false, threads, interrupt)?;
        Some(dw)
    } else {
        None
    };
    if let Some(dx) = dx {
        let mut dcol = Scratch::take(k * cols);
        let (lhs, rhs) = (View::transposed(w, o, k), View::rows(&dprod, o, cols));
        matmul(&mut dcol, cols, lhs, rhs, false, threads, interrupt)?;
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
