//! What an operation costs, known from the shapes of its arguments before it runs.
//!
//! The runtime charges each operation a provider program asks for against the program's
//! budgets before the engine does any of it ("ask before you spend"): a call that would not
//! fit is refused instead of started. The figures are upper estimates of the work (one
//! floating-point operation, comparison or value copied counts one) and of the new memory
//! the result holds; they depend on shapes alone, never on values, so a refusal says nothing
//! about the data. Every function is total: arithmetic saturates, and shapes the engine
//! would refuse still get a (large) cost.

/// Work and new memory of one operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// Floating-point operations, comparisons and value copies.
    pub flops: u64,
    /// Bytes of new memory the result (and what the gradient graph keeps for it) holds.
    pub bytes: u64,
}

impl Cost {
    /// The cost of both.
    pub fn plus(self, other: Cost) -> Cost {
        Cost {
            flops: self.flops.saturating_add(other.flops),
            bytes: self.bytes.saturating_add(other.bytes),
        }
    }
}

use crate::{Conv2dOptions, Pool, Pool2dOptions, Reduce};

const F32: u64 = 4;

fn product(dims: &[usize]) -> u64 {
    dims.iter()
        .fold(1u64, |acc, &d| acc.saturating_mul(d as u64))
}

fn mul(a: u64, b: u64) -> u64 {
    a.saturating_mul(b)
}

/// A fresh tensor of `dims` filled from elsewhere (a constant, a batch, a copy).
pub fn tensor(dims: &[usize]) -> Cost {
    let n = product(dims);
    Cost {
        flops: n,
        bytes: mul(n, F32),
    }
}

/// One output axis of a sliding window: `(size + 2·padding - dilation·(kernel - 1) - 1) /
/// stride + 1`, saturating; a zero stride (refused by the engine) counts one position.
fn windows(size: usize, kernel: usize, stride: usize, padding: usize, dilation: usize) -> u64 {
    let reach = dilation
        .saturating_mul(kernel.saturating_sub(1))
        .saturating_add(1);
    size.saturating_add(padding.saturating_mul(2))
        .saturating_sub(reach)
        .checked_div(stride)
        .unwrap_or(0)
        .saturating_add(1) as u64
}

/// `conv2d(x, w, b, options)` with `x` `[n, c, h, w]` and `w` `[o, c / groups, kh, kw]`.
///
/// Each output value is a product over one group's `c / groups · kh · kw` inputs; the patch
/// matrix built for the products holds every input channel of every window.
pub fn conv2d(x: &[usize], w: &[usize], options: &Conv2dOptions) -> Cost {
    let (&[n, c, h, wd], &[o, cg, kh, kw]) = (x, w) else {
        return Cost::default();
    };
    let positions = mul(
        windows(
            h,
            kh,
            options.stride[0],
            options.padding[0],
            options.dilation[0],
        ),
        windows(
            wd,
            kw,
            options.stride[1],
            options.padding[1],
            options.dilation[1],
        ),
    );
    let outputs = mul(mul(n as u64, o as u64), positions);
    // A group's input channels: `c / groups`, or what the kernel says if that is more (a
    // shape the engine refuses still costs the larger).
    let per_group = (c / options.groups.max(1)).max(cg) as u64;
    let taps = mul(kh as u64, kw as u64);
    Cost {
        flops: mul(mul(outputs, per_group), taps)
            .saturating_mul(2)
            .saturating_add(mul(mul(mul(n as u64, positions), c as u64), taps)),
        bytes: mul(outputs, F32),
    }
}

/// `pool2d(kind, x, options)` with `x` `[n, c, h, w]`: every window's values are read once;
/// max pooling also keeps where each maximum came from, for the gradient.
pub fn pool2d(kind: Pool, x: &[usize], options: &Pool2dOptions) -> Cost {
    let &[n, c, h, w] = x else {
        return Cost::default();
    };
    let [kh, kw] = options.kernel;
    let positions = mul(
        windows(h, kh, options.stride[0], options.padding[0], 1),
        windows(w, kw, options.stride[1], options.padding[1], 1),
    );
    let outputs = mul(mul(n as u64, c as u64), positions);
    let per_output = match kind {
        Pool::Max => 2 * F32,
        Pool::Avg => F32,
    };
    Cost {
        flops: mul(outputs, mul(kh as u64, kw as u64)),
        bytes: mul(outputs, per_output),
    }
}

/// `max_pool2d(x, kernel, stride)` with `x` `[n, c, h, w]`.
pub fn max_pool2d(x: &[usize], kernel: usize, stride: usize) -> Cost {
    pool2d(Pool::Max, x, &Pool2dOptions::square(kernel, stride))
}

/// `adaptive_avg_pool2d(x, [oh, ow])` with `x` `[n, c, h, w]`. PyTorch's windows along an
/// axis of `size` cut into `out` overlap by at most one value each, so together they read at
/// most `size + 2·out` values.
pub fn adaptive_avg_pool2d(x: &[usize], out: [usize; 2]) -> Cost {
    let &[n, c, h, w] = x else {
        return Cost::default();
    };
    let planes = mul(n as u64, c as u64);
    let read = |size: usize, out: usize| (size as u64).saturating_add(mul(out as u64, 2));
    Cost {
        flops: mul(planes, mul(read(h, out[0]), read(w, out[1]))),
        bytes: mul(mul(planes, mul(out[0] as u64, out[1] as u64)), F32),
    }
}

/// `linear(x, w, b)` with `x` `[n, i]` and `w` `[i, o]`.
pub fn linear(x: &[usize], w: &[usize]) -> Cost {
    let (&[n, i], &[_, o]) = (x, w) else {
        return Cost::default();
    };
    let outputs = mul(n as u64, o as u64);
    Cost {
        flops: mul(outputs, i as u64).saturating_mul(2),
        bytes: mul(outputs, F32),
    }
}

/// An element-wise function (unary, binary, affine) of a tensor of `dims`.
pub fn elementwise(dims: &[usize]) -> Cost {
    let n = product(dims);
    Cost {
        // A transcendental function costs several operations.
        flops: mul(n, 8),
        bytes: mul(n, F32),
    }
}

/// The dimensions `a` and `b` broadcast to, NumPy style (aligned at the last axis, each
/// pair taking its larger member). Total: pairs the engine refuses (neither a 1) still give
/// their larger member.
fn broadcast(a: &[usize], b: &[usize]) -> Vec<usize> {
    let rank = a.len().max(b.len());
    let at = |dims: &[usize], i: usize| (i + dims.len()).checked_sub(rank).map_or(1, |j| dims[j]);
    (0..rank).map(|i| at(a, i).max(at(b, i))).collect()
}

/// A broadcasting binary op (`binary`) of `a` and `b`: element-wise on the output shape.
pub fn binary(a: &[usize], b: &[usize]) -> Cost {
    elementwise(&broadcast(a, b))
}

/// The dimensions left by reducing `axes` of `x` (kept as 1s); axes out of range are
/// ignored (the engine refuses them).
fn reduced(x: &[usize], axes: &[usize]) -> Vec<usize> {
    x.iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect()
}

/// `reduce(op, x, axes, keepdim)`: one pass over `x` (three for the variance: the mean, the
/// deviations, their mean); the result, and for the maximum and minimum where each came
/// from, for the variance the mean, kept for the gradient.
pub fn reduce(op: Reduce, x: &[usize], axes: &[usize]) -> Cost {
    let n = product(x);
    let out = product(&reduced(x, axes));
    let (passes, kept) = match op {
        Reduce::Sum | Reduce::Mean => (1, 1),
        Reduce::Max | Reduce::Min => (1, 2),
        Reduce::Var => (3, 2),
    };
    Cost {
        flops: mul(n, passes),
        bytes: mul(out, kept * F32),
    }
}

/// `argmax(x, axis, keepdim)`: one comparison per value, one index per row.
pub fn argmax(x: &[usize], axis: usize) -> Cost {
    let axes = [axis];
    Cost {
        flops: product(x),
        bytes: mul(product(&reduced(x, &axes)), F32),
    }
}

/// `permute(x, perm)`: a copy of `x` in the new order.
pub fn permute(x: &[usize]) -> Cost {
    tensor(x)
}

/// `concat(xs, axis)`: a copy of every input.
pub fn concat<'a>(xs: impl IntoIterator<Item = &'a [usize]>) -> Cost {
    xs.into_iter()
        .fold(Cost::default(), |acc, x| acc.plus(tensor(x)))
}

/// `x` with dimension `axis` replaced by `len` (unchanged if there is no such axis).
fn resized(x: &[usize], axis: usize, len: usize) -> Vec<usize> {
    let mut out = x.to_vec();
    if let Some(d) = out.get_mut(axis) {
        *d = len;
    }
    out
}

/// `narrow(x, axis, start, len)`: a copy of the `len` entries kept.
pub fn narrow(x: &[usize], axis: usize, len: usize) -> Cost {
    tensor(&resized(x, axis, len))
}

/// `index_select(x, axis, indices)`: the indices read and checked, and a copy of the
/// entries selected.
pub fn index_select(x: &[usize], axis: usize, indices: &[usize]) -> Cost {
    let count = usize::try_from(product(indices)).unwrap_or(usize::MAX);
    reduction(indices).plus(tensor(&resized(x, axis, count)))
}

/// `matmul(a, b)` with `a` `[.., n, k]` and `b` `[.., k, m]`: `2·batch·n·k·m` over the
/// broadcast batch axes. A missing matrix axis (a rank the engine refuses) counts as 1.
pub fn matmul(a: &[usize], b: &[usize]) -> Cost {
    let split = |dims: &[usize]| {
        let cut = dims.len().saturating_sub(2);
        let (batch, matrix) = dims.split_at(cut);
        let mut m = [1usize; 2];
        m[2 - matrix.len()..].copy_from_slice(matrix);
        (batch.to_vec(), m)
    };
    let ((ab, [n, k]), (bb, [kb, m])) = (split(a), split(b));
    let batch = product(&broadcast(&ab, &bb));
    let outputs = mul(batch, mul(n as u64, m as u64));
    Cost {
        flops: mul(outputs, k.max(kb) as u64).saturating_mul(2),
        bytes: mul(outputs, F32),
    }
}

/// `normalize(x, axes, eps)`: passes for the mean, the variance and the output (and their
/// square root and division); the output, the normalised values and inverse deviations kept
/// for the gradient, and the saved mean and variance.
pub fn normalize(x: &[usize], axes: &[usize]) -> Cost {
    let n = product(x);
    let stats = product(&reduced(x, axes));
    Cost {
        flops: mul(n, 8).saturating_add(mul(stats, 8)),
        bytes: mul(n, 2 * F32).saturating_add(mul(stats, 3 * F32)),
    }
}

/// `dropout(x, p, seed)`: a mask drawn and applied; the mask (kept for the gradient) and the
/// output.
pub fn dropout(x: &[usize]) -> Cost {
    let n = product(x);
    Cost {
        flops: mul(n, 4),
        bytes: mul(n, 2 * F32),
    }
}

/// `bce_with_logits(logits, targets)`: a few operations per value, the sigmoids kept for
/// the gradient.
pub fn bce_with_logits(logits: &[usize]) -> Cost {
    let n = product(logits);
    Cost {
        flops: mul(n, 8),
        bytes: mul(n, F32).saturating_add(F32),
    }
}

/// `cross_entropy(logits, labels, smoothing)` with label smoothing: the plain loss and one
/// more pass for the smoothed target.
pub fn cross_entropy_smoothed(logits: &[usize]) -> Cost {
    let extra = product(logits);
    cross_entropy(logits).plus(Cost {
        flops: extra,
        bytes: 0,
    })
}

/// `cross_entropy(logits, labels)` with `logits` `[n, classes]`.
pub fn cross_entropy(logits: &[usize]) -> Cost {
    let n = product(logits);
    Cost {
        flops: mul(n, 8),
        // The probabilities and the class indices the gradient needs.
        bytes: mul(n, F32).saturating_add(mul(logits.first().copied().unwrap_or(0) as u64, 8)),
    }
}

/// A reduction to one value (`mean`) or a read of every value (`count_correct`).
pub fn reduction(dims: &[usize]) -> Cost {
    Cost {
        flops: product(dims),
        bytes: F32,
    }
}

/// Back-propagation through a graph whose forward operations cost `forward`: about twice
/// the work. Its memory (a gradient for each tracked value) is not declared: the forward
/// figures count untracked work too, so they would refuse honest programs; the process's
/// memory gauge stops a backward pass that runs out instead.
pub fn backward(forward: Cost) -> Cost {
    Cost {
        flops: forward.flops.saturating_mul(2),
        bytes: 0,
    }
}

/// One optimizer step over parameters of `elements` values in all: a handful of
/// element-wise operations (AdamW with gradient clipping, the most, takes 14), and up to two
/// state tensors (Adam, AdamW, RMSprop) plus temporaries.
pub fn optimizer_step(elements: u64) -> Cost {
    Cost {
        flops: mul(elements, 16),
        bytes: mul(elements, 4 * F32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_product_costs_its_multiply_adds() {
        let c = linear(&[64, 2048], &[2048, 256]);
        assert_eq!(c.flops, 2 * 64 * 2048 * 256);
        assert_eq!(c.bytes, 64 * 256 * 4);
    }

    #[test]
    fn a_convolution_costs_its_products_and_patches() {
        // 3×3 same convolution, 3 → 32 channels on 32×32.
        let c = conv2d(
            &[8, 3, 32, 32],
            &[32, 3, 3, 3],
            &Conv2dOptions::square(1, 1),
        );
        let outputs = 8 * 32 * 32 * 32;
        assert_eq!(c.flops, 2 * outputs * 27 + 8 * 32 * 32 * 27);
        assert_eq!(c.bytes, outputs * 4);
    }

    #[test]
    fn a_grouped_convolution_divides_its_products_by_the_groups() {
        // Depthwise 3×3, stride 2, padding 1, dilation 2, on 16 channels of 9×9.
        let options = Conv2dOptions {
            stride: [2, 2],
            padding: [1, 1],
            dilation: [2, 2],
            groups: 16,
        };
        let c = conv2d(&[2, 16, 9, 9], &[16, 1, 3, 3], &options);
        // (9 + 2 - 5) / 2 + 1 = 4 positions per axis.
        let outputs = 2 * 16 * 4 * 4;
        assert_eq!(c.flops, 2 * outputs * 9 + 2 * 16 * 16 * 9);
        assert_eq!(c.bytes, outputs * 4);
        let dense = conv2d(
            &[2, 16, 9, 9],
            &[16, 16, 3, 3],
            &Conv2dOptions {
                groups: 1,
                ..options
            },
        );
        assert!(dense.flops > 10 * c.flops);
    }

    #[test]
    fn pooling_reads_every_window() {
        let options = Pool2dOptions {
            kernel: [3, 2],
            stride: [2, 2],
            padding: [1, 0],
        };
        // Heights (8 + 2 - 3) / 2 + 1 = 4, widths (8 - 2) / 2 + 1 = 4.
        let max = pool2d(Pool::Max, &[1, 2, 8, 8], &options);
        assert_eq!(max.flops, 2 * 16 * 6);
        assert_eq!(max.bytes, 2 * 16 * 8);
        assert_eq!(pool2d(Pool::Avg, &[1, 2, 8, 8], &options).bytes, 2 * 16 * 4);
        assert_eq!(max_pool2d(&[1, 1, 4, 4], 2, 2).flops, 16);
        let global = adaptive_avg_pool2d(&[2, 3, 7, 7], [1, 1]);
        assert!(global.flops >= 2 * 3 * 49);
        assert_eq!(global.bytes, 2 * 3 * 4);
    }

    #[test]
    fn broadcasting_ops_cost_their_output_shape() {
        assert_eq!(binary(&[4, 1, 3], &[5, 1]), elementwise(&[4, 5, 3]));
        assert_eq!(binary(&[1], &[6, 7]), elementwise(&[6, 7]));
        assert_eq!(binary(&[6, 7], &[6, 7]), elementwise(&[6, 7]));
    }

    #[test]
    fn products_reductions_and_copies_cost_their_shapes() {
        // Batch [3] broadcast against [2, 1]: 6 products of [4, 5] · [5, 7].
        let c = matmul(&[3, 4, 5], &[2, 1, 5, 7]);
        assert_eq!(c.flops, 2 * 6 * 4 * 5 * 7);
        assert_eq!(c.bytes, 6 * 4 * 7 * 4);
        assert_eq!(
            matmul(&[4, 5], &[5, 7]).flops,
            linear(&[4, 5], &[5, 7]).flops
        );

        let r = reduce(Reduce::Mean, &[8, 4, 6], &[0, 2]);
        assert_eq!(
            r,
            Cost {
                flops: 8 * 4 * 6,
                bytes: 4 * 4
            }
        );
        assert_eq!(
            reduce(Reduce::Var, &[8, 4, 6], &[0, 2]).flops,
            3 * 8 * 4 * 6
        );
        assert_eq!(argmax(&[8, 10], 1).bytes, 8 * 4);

        assert_eq!(permute(&[2, 3, 4]), tensor(&[2, 3, 4]));
        assert_eq!(concat([&[2, 3][..], &[5, 3][..]]), tensor(&[7, 3]));
        assert_eq!(narrow(&[10, 3], 0, 4), tensor(&[4, 3]));
        assert_eq!(index_select(&[10, 3], 0, &[6]).bytes, 6 * 3 * 4 + 4);

        let n = normalize(&[8, 4, 5, 5], &[0, 2, 3]);
        assert_eq!(n.bytes, 8 * 4 * 5 * 5 * 8 + 4 * 12);
        assert_eq!(dropout(&[10, 10]).bytes, 800);
        assert!(cross_entropy_smoothed(&[4, 10]).flops > cross_entropy(&[4, 10]).flops);
        assert_eq!(bce_with_logits(&[4, 10]).bytes, 4 * 10 * 4 + 4);
    }

    #[test]
    fn absurd_shapes_saturate_instead_of_overflowing() {
        let huge = usize::MAX / 2;
        assert_eq!(linear(&[huge, huge], &[huge, huge]).flops, u64::MAX);
        assert_eq!(tensor(&[huge, huge, huge, huge]).bytes, u64::MAX);
        assert_eq!(
            conv2d(&[1, 1, 4, 4], &[1, 1, 3, 3], &Conv2dOptions::square(0, 0)).flops,
            2 * 9 + 9
        );
        let options = Conv2dOptions {
            stride: [huge; 2],
            padding: [huge; 2],
            dilation: [huge; 2],
            groups: 0,
        };
        let c = conv2d(
            &[huge, huge, huge, huge],
            &[huge, huge, huge, huge],
            &options,
        );
        assert_eq!(c.flops, u64::MAX);
        assert_eq!(matmul(&[huge, huge, huge], &[huge, huge]).flops, u64::MAX);
        assert_eq!(
            concat([&[huge, huge][..], &[huge, huge][..]]).bytes,
            u64::MAX
        );
        assert_eq!(narrow(&[2, 3], 0, huge).bytes, mul(mul(huge as u64, 3), 4));
        assert_eq!(index_select(&[2, 3], 9, &[huge, huge]).flops, u64::MAX);
        let pool = Pool2dOptions {
            kernel: [huge; 2],
            stride: [0; 2],
            padding: [huge; 2],
        };
        assert_eq!(
            pool2d(Pool::Avg, &[huge, huge, 1, 1], &pool).flops,
            u64::MAX
        );
        assert_eq!(
            adaptive_avg_pool2d(&[huge, huge, huge, huge], [huge; 2]).bytes,
            u64::MAX
        );
        // Shapes of the wrong rank cost nothing here: the engine refuses them before work.
        assert_eq!(matmul(&[], &[]).flops, 2);
        assert_eq!(reduce(Reduce::Var, &[4], &[7]).flops, 12);
    }
}
