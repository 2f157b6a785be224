//! Argument checks shared by every backend, on shapes alone. They run before an engine
//! touches any data, because the arguments come from untrusted code; each failure names
//! shapes and limits only, never values.

use crate::{Conv2dOptions, EngineError, MAX_RANK, Pool2dOptions, Shape};

fn shape_err(op: &'static str, detail: String) -> EngineError {
    EngineError::Shape { op, detail }
}

fn argument(op: &'static str, detail: String) -> EngineError {
    EngineError::Argument { op, detail }
}

/// A checked 2-D convolution: input `[n, c, h, w]`, kernel `[o, c / groups, kh, kw]`.
///
/// Only [`conv2d`] builds one (the output size is private), so every value is a geometry
/// whose output size was computed with checked arithmetic and fits a [`Shape`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Conv2d {
    pub batch: usize,
    /// Input channels, all groups together.
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Output channels, all groups together.
    pub outputs: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
    out_height: usize,
    out_width: usize,
}

impl Conv2d {
    /// Output height.
    pub fn out_h(&self) -> usize {
        self.out_height
    }

    /// Output width.
    pub fn out_w(&self) -> usize {
        self.out_width
    }
}

/// Largest stride, padding or dilation accepted: far beyond any real network, small enough
/// that no geometry arithmetic comes near overflow.
pub(crate) const MAX_WINDOW_STEP: usize = 64;

/// Output length of a window of `kernel` taps spaced `dilation` apart, sliding by `stride`
/// over `len` with `padding` on each side: `(len + 2 padding - dilation (kernel - 1) - 1) /
/// stride + 1`, or `None` if the window does not fit, `stride` is 0 or a step overflows.
fn window_out(
    len: usize,
    padding: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
) -> Option<usize> {
    let padded = padding.checked_mul(2).and_then(|p| len.checked_add(p))?;
    let span = kernel
        .checked_sub(1)?
        .checked_mul(dilation)?
        .checked_add(1)?;
    padded
        .checked_sub(span)?
        .checked_div(stride)?
        .checked_add(1)
}

fn rank<const R: usize>(op: &'static str, dims: &[usize]) -> Result<[usize; R], EngineError> {
    <[usize; R]>::try_from(dims)
        .map_err(|_| shape_err(op, format!("expected rank {R}, got {dims:?}")))
}

fn bias(op: &'static str, bias: Option<&[usize]>, len: usize) -> Result<(), EngineError> {
    match bias {
        None => Ok(()),
        Some([n]) if *n == len => Ok(()),
        Some(other) => Err(shape_err(
            op,
            format!("bias {other:?} does not match {len} outputs"),
        )),
    }
}

/// Checks that `values` numbers fill `shape`; returns the validated shape.
pub(crate) fn values(shape: &[usize], values: usize) -> Result<Shape, EngineError> {
    let shape = Shape::new(shape)?;
    if values != shape.elements() {
        return Err(shape_err(
            "tensor",
            format!("{values} values for shape {:?}", shape.dims()),
        ));
    }
    Ok(shape)
}

fn window_steps(
    op: &'static str,
    name: &str,
    pair: [usize; 2],
    min: usize,
) -> Result<(), EngineError> {
    if pair.iter().any(|&v| v < min || v > MAX_WINDOW_STEP) {
        return Err(argument(
            op,
            format!("{name} {pair:?} outside {min}..={MAX_WINDOW_STEP}"),
        ));
    }
    Ok(())
}

/// Checks `conv2d(x, w, b, options)`.
pub(crate) fn conv2d(
    x: &[usize],
    w: &[usize],
    b: Option<&[usize]>,
    options: &Conv2dOptions,
) -> Result<Conv2d, EngineError> {
    const OP: &str = "conv2d";
    let [batch, channels, height, width] = rank::<4>(OP, x)?;
    let [outputs, wc, kernel_h, kernel_w] = rank::<4>(OP, w)?;
    let Conv2dOptions {
        stride,
        padding,
        dilation,
        groups,
    } = *options;
    window_steps(OP, "stride", stride, 1)?;
    window_steps(OP, "padding", padding, 0)?;
    window_steps(OP, "dilation", dilation, 1)?;
    if groups == 0 || channels % groups != 0 || outputs % groups != 0 {
        return Err(argument(
            OP,
            format!("{groups} groups do not divide {channels} input and {outputs} output channels"),
        ));
    }
    if channels / groups != wc {
        return Err(shape_err(
            OP,
            format!("input has {channels} channels in {groups} groups, kernel {wc} per group"),
        ));
    }
    let (Some(out_height), Some(out_width)) = (
        window_out(height, padding[0], kernel_h, stride[0], dilation[0]),
        window_out(width, padding[1], kernel_w, stride[1], dilation[1]),
    ) else {
        return Err(shape_err(
            OP,
            format!(
                "kernel {kernel_h}x{kernel_w} (dilation {dilation:?}) larger than input {height}x{width} with padding {padding:?}"
            ),
        ));
    };
    bias(OP, b, outputs)?;
    Shape::new(&[batch, outputs, out_height, out_width])?;
    Ok(Conv2d {
        batch,
        channels,
        height,
        width,
        outputs,
        kernel_h,
        kernel_w,
        stride,
        padding,
        dilation,
        groups,
        out_height,
        out_width,
    })
}

/// Checks `pool2d(x, options)`; returns the output dimensions.
pub(crate) fn pool2d(x: &[usize], options: &Pool2dOptions) -> Result<[usize; 4], EngineError> {
    const OP: &str = "pool2d";
    let [n, c, h, w] = rank::<4>(OP, x)?;
    let Pool2dOptions {
        kernel,
        stride,
        padding,
    } = *options;
    window_steps(OP, "stride", stride, 1)?;
    if kernel.contains(&0) || padding[0] > kernel[0] / 2 || padding[1] > kernel[1] / 2 {
        return Err(argument(
            OP,
            format!("window {kernel:?} with padding {padding:?} (at most half the window)"),
        ));
    }
    let (Some(out_h), Some(out_w)) = (
        window_out(h, padding[0], kernel[0], stride[0], 1),
        window_out(w, padding[1], kernel[1], stride[1], 1),
    ) else {
        return Err(argument(
            OP,
            format!("window {kernel:?} stride {stride:?} padding {padding:?} on {h}x{w}"),
        ));
    };
    Ok([n, c, out_h, out_w])
}

/// Checks `max_pool2d(x, kernel, stride)` (square, unpadded); returns the output dimensions.
pub(crate) fn max_pool2d(
    x: &[usize],
    kernel: usize,
    stride: usize,
) -> Result<[usize; 4], EngineError> {
    if stride > MAX_WINDOW_STEP {
        return Err(argument(
            "max_pool2d",
            format!("stride {stride} out of range"),
        ));
    }
    pool2d(x, &Pool2dOptions::square(kernel, stride))
}

/// Checks `adaptive_avg_pool2d(x, out)`; returns the output dimensions.
pub(crate) fn adaptive_avg_pool2d(x: &[usize], out: [usize; 2]) -> Result<[usize; 4], EngineError> {
    const OP: &str = "adaptive_avg_pool2d";
    let [n, c, h, w] = rank::<4>(OP, x)?;
    if out[0] == 0 || out[1] == 0 || out[0] > h || out[1] > w {
        return Err(argument(OP, format!("output {out:?} from {h}x{w}")));
    }
    Ok([n, c, out[0], out[1]])
}

/// Checks `linear(x, w, b)`; returns `[rows, inputs, outputs]`.
pub(crate) fn linear(
    x: &[usize],
    w: &[usize],
    b: Option<&[usize]>,
) -> Result<[usize; 3], EngineError> {
    const OP: &str = "linear";
    let [n, i] = rank::<2>(OP, x)?;
    let [wi, o] = rank::<2>(OP, w)?;
    if i != wi {
        return Err(shape_err(OP, format!("input width {i}, weight rows {wi}")));
    }
    bias(OP, b, o)?;
    // Two inputs within the limit can make an output far beyond it ([2^24, 1] · [1, 2^24]).
    Shape::new(&[n, o])?;
    Ok([n, i, o])
}

/// The shape of an element-wise function of tensors shaped `a` and `b` under NumPy
/// broadcasting: dimensions aligned at the end, each pair equal or one of them 1.
pub fn broadcast_dims(a: &[usize], b: &[usize]) -> Result<Vec<usize>, EngineError> {
    let rank = a.len().max(b.len());
    let at = |d: &[usize], i: usize| (i + d.len()).checked_sub(rank).map_or(1, |j| d[j]);
    let dims = (0..rank)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(shape_err(
                "binary",
                format!("{a:?} and {b:?} do not broadcast"),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Shape::new(&dims)?;
    Ok(dims)
}

/// Checks the bounds of `clamp`.
pub(crate) fn clamp(min: f32, max: f32) -> Result<(), EngineError> {
    if min.is_nan() || max.is_nan() || min > max {
        return Err(argument("clamp", format!("bounds {min}..{max}")));
    }
    Ok(())
}

/// Checks a list of distinct axes below `rank`; returns them as a mask.
fn axes_mask(
    op: &'static str,
    rank: usize,
    axes: &[usize],
) -> Result<[bool; MAX_RANK], EngineError> {
    let mut mask = [false; MAX_RANK];
    if axes.is_empty() {
        return Err(argument(op, "no axis given".into()));
    }
    for &a in axes {
        if a >= rank || mask[a] {
            return Err(argument(op, format!("axes {axes:?} for rank {rank}")));
        }
        mask[a] = true;
    }
    Ok(mask)
}

/// Checks `reduce(x, axes, keepdim)`; returns the output dimensions.
pub(crate) fn reduce(
    op: &'static str,
    x: &[usize],
    axes: &[usize],
    keepdim: bool,
) -> Result<Vec<usize>, EngineError> {
    let mask = axes_mask(op, x.len(), axes)?;
    let mut out: Vec<usize> = x
        .iter()
        .enumerate()
        .filter_map(|(i, &d)| match (mask[i], keepdim) {
            (false, _) => Some(d),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect();
    if out.is_empty() {
        out.push(1);
    }
    Ok(out)
}

/// Checks `permute(x, perm)`; returns the output dimensions.
pub(crate) fn permute(x: &[usize], perm: &[usize]) -> Result<Vec<usize>, EngineError> {
    const OP: &str = "permute";
    if perm.len() != x.len() {
        return Err(argument(OP, format!("{perm:?} for rank {}", x.len())));
    }
    axes_mask(OP, x.len(), perm)?;
    Ok(perm.iter().map(|&a| x[a]).collect())
}

/// Checks `concat(xs, axis)`; returns the output dimensions.
pub(crate) fn concat(xs: &[&[usize]], axis: usize) -> Result<Vec<usize>, EngineError> {
    const OP: &str = "concat";
    let Some(first) = xs.first() else {
        return Err(argument(OP, "no tensor given".into()));
    };
    if axis >= first.len() {
        return Err(argument(
            OP,
            format!("axis {axis} for rank {}", first.len()),
        ));
    }
    let mut out = first.to_vec();
    out[axis] = 0;
    for dims in xs {
        let agree = dims.len() == first.len()
            && dims
                .iter()
                .zip(first.iter())
                .enumerate()
                .all(|(i, (a, b))| i == axis || a == b);
        if !agree {
            return Err(shape_err(
                OP,
                format!("{dims:?} does not match {first:?} off axis {axis}"),
            ));
        }
        out[axis] = out[axis]
            .checked_add(dims[axis])
            .ok_or_else(|| argument(OP, "length overflows".into()))?;
    }
    Shape::new(&out)?;
    Ok(out)
}

/// Checks `narrow(x, axis, start, len)`; returns the output dimensions.
pub(crate) fn narrow(
    x: &[usize],
    axis: usize,
    start: usize,
    len: usize,
) -> Result<Vec<usize>, EngineError> {
    const OP: &str = "narrow";
    let Some(&dim) = x.get(axis) else {
        return Err(argument(OP, format!("axis {axis} for rank {}", x.len())));
    };
    if len == 0 || start.checked_add(len).is_none_or(|end| end > dim) {
        return Err(argument(OP, format!("{len} from {start} of {dim}")));
    }
    let mut out = x.to_vec();
    out[axis] = len;
    Ok(out)
}

/// Checks `index_select(x, axis, indices)` on shapes; returns the output dimensions.
pub(crate) fn index_select(
    x: &[usize],
    axis: usize,
    indices: &[usize],
) -> Result<Vec<usize>, EngineError> {
    const OP: &str = "index_select";
    let [count] = rank::<1>(OP, indices)?;
    if axis >= x.len() {
        return Err(argument(OP, format!("axis {axis} for rank {}", x.len())));
    }
    let mut out = x.to_vec();
    out[axis] = count;
    Shape::new(&out)?;
    Ok(out)
}

/// Turns index values into indices: each must be an exact integer below `bound`.
pub(crate) fn indices(
    op: &'static str,
    values: &[f32],
    bound: usize,
) -> Result<Vec<usize>, EngineError> {
    values
        .iter()
        .map(|&v| {
            if v >= 0.0 && v.fract() == 0.0 && (v as usize) < bound {
                Ok(v as usize)
            } else {
                Err(argument(op, format!("index outside 0..{bound}")))
            }
        })
        .collect()
}

/// A checked batched product `[.., n, k] · [.., k, m]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Matmul {
    /// The output's dimensions: the broadcast batch axes, then `n, m`.
    pub out: Vec<usize>,
    pub n: usize,
    pub k: usize,
    pub m: usize,
}

/// Checks `matmul(a, b)`.
pub(crate) fn matmul(a: &[usize], b: &[usize]) -> Result<Matmul, EngineError> {
    const OP: &str = "matmul";
    if a.len() < 2 || b.len() < 2 {
        return Err(shape_err(
            OP,
            format!("{a:?} · {b:?}: both need rank 2 or more"),
        ));
    }
    let (ab, am) = a.split_at(a.len() - 2);
    let (bb, bm) = b.split_at(b.len() - 2);
    let (n, k, kb, m) = (am[0], am[1], bm[0], bm[1]);
    if k != kb {
        return Err(shape_err(OP, format!("{a:?} · {b:?}: inner {k} vs {kb}")));
    }
    let mut out = if ab.is_empty() && bb.is_empty() {
        Vec::new()
    } else {
        broadcast_dims(
            if ab.is_empty() { &[1] } else { ab },
            if bb.is_empty() { &[1] } else { bb },
        )
        .map_err(|_| {
            shape_err(
                OP,
                format!("batch axes of {a:?} and {b:?} do not broadcast"),
            )
        })?
    };
    out.extend([n, m]);
    Shape::new(&out)?;
    Ok(Matmul { out, n, k, m })
}

/// Checks `normalize(x, axes, eps)`; returns the statistics' dimensions (kept as 1s).
pub(crate) fn normalize(x: &[usize], axes: &[usize], eps: f32) -> Result<Vec<usize>, EngineError> {
    if !(eps.is_finite() && eps > 0.0) {
        return Err(argument("normalize", format!("eps {eps}")));
    }
    reduce("normalize", x, axes, true)
}

/// Checks the drop probability of `dropout`.
pub(crate) fn dropout(p: f32) -> Result<(), EngineError> {
    if !(0.0..1.0).contains(&p) {
        return Err(argument(
            "dropout",
            format!("probability {p} outside [0, 1)"),
        ));
    }
    Ok(())
}

/// Checks `bce_with_logits(logits, targets)` on shapes.
pub(crate) fn bce_with_logits(logits: &[usize], targets: &[usize]) -> Result<(), EngineError> {
    if logits != targets {
        return Err(shape_err(
            "bce_with_logits",
            format!("logits {logits:?}, targets {targets:?}"),
        ));
    }
    Ok(())
}

/// Checks label smoothing.
pub(crate) fn smoothing(smoothing: f32) -> Result<(), EngineError> {
    if !(0.0..=1.0).contains(&smoothing) {
        return Err(argument(
            "cross_entropy",
            format!("label smoothing {smoothing} outside [0, 1]"),
        ));
    }
    Ok(())
}

/// Checks the coefficients of `affine`.
pub(crate) fn affine(scale: f32, shift: f32) -> Result<(), EngineError> {
    if !scale.is_finite() || !shift.is_finite() {
        return Err(argument("affine", "non-finite coefficient".into()));
    }
    Ok(())
}

/// Checks `reshape(x, shape)`; returns the validated target.
pub(crate) fn reshape(from: &[usize], shape: &[usize]) -> Result<Shape, EngineError> {
    let target = Shape::new(shape)?;
    let from_elements = from.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if from_elements != Some(target.elements()) {
        return Err(shape_err("reshape", format!("{from:?} into {shape:?}")));
    }
    Ok(target)
}

/// Checks `cross_entropy(logits, labels)` on shapes; returns `[rows, classes]`.
pub(crate) fn cross_entropy(logits: &[usize], labels: &[usize]) -> Result<[usize; 2], EngineError> {
    const OP: &str = "cross_entropy";
    let [n, classes] = rank::<2>(OP, logits)?;
    if labels != [n] {
        return Err(shape_err(OP, format!("labels {labels:?} for {n} rows")));
    }
    Ok([n, classes])
}

/// Turns label values into class indices; labels must be exact indices below `classes`.
pub(crate) fn class_indices(labels: &[f32], classes: usize) -> Result<Vec<usize>, EngineError> {
    indices("cross_entropy", labels, classes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_output_size_is_checked() -> Result<(), EngineError> {
        let g = conv2d(
            &[2, 3, 28, 28],
            &[8, 3, 5, 5],
            Some(&[8]),
            &Conv2dOptions::square(1, 2),
        )?;
        assert_eq!((g.out_h(), g.out_w()), (28, 28));
        let g = conv2d(
            &[1, 1, 7, 9],
            &[1, 1, 3, 2],
            None,
            &Conv2dOptions::square(2, 0),
        )?;
        assert_eq!((g.out_h(), g.out_w()), (3, 4));
        // A kernel larger than the padded input, in either direction.
        assert!(matches!(
            conv2d(
                &[1, 1, 4, 4],
                &[1, 1, 9, 1],
                None,
                &Conv2dOptions::square(1, 2)
            ),
            Err(EngineError::Shape { .. })
        ));
        assert!(matches!(
            conv2d(
                &[1, 1, 4, 4],
                &[1, 1, 1, 9],
                None,
                &Conv2dOptions::square(1, 2)
            ),
            Err(EngineError::Shape { .. })
        ));
        // Dimensions no tensor can have still give an error, not an overflow.
        for (x, w) in [
            ([1, 1, usize::MAX, 1], [1, 1, 1, 1]),
            ([1, 1, usize::MAX - 1, 1], [1, 1, usize::MAX, 1]),
            ([1, 1, 1, usize::MAX], [1, 1, 1, usize::MAX]),
        ] {
            assert!(
                conv2d(&x, &w, None, &Conv2dOptions::square(1, 16)).is_err(),
                "{x:?} {w:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn pool_window_is_checked() -> Result<(), EngineError> {
        assert_eq!(max_pool2d(&[1, 2, 5, 4], 2, 2)?, [1, 2, 2, 2]);
        for (kernel, stride) in [(0, 1), (1, 0), (6, 1), (5, 1)] {
            assert!(max_pool2d(&[1, 1, 5, 4], kernel, stride).is_err());
        }
        assert!(max_pool2d(&[1, 1, usize::MAX, usize::MAX], usize::MAX, 1).is_ok());
        // Padding of at most half the window, as PyTorch allows.
        let padded = Pool2dOptions {
            kernel: [3, 2],
            stride: [2, 1],
            padding: [1, 1],
        };
        assert_eq!(pool2d(&[1, 1, 5, 4], &padded)?, [1, 1, 3, 5]);
        let too_much = Pool2dOptions {
            padding: [2, 0],
            ..padded
        };
        assert!(pool2d(&[1, 1, 5, 4], &too_much).is_err());
        assert_eq!(adaptive_avg_pool2d(&[2, 3, 7, 5], [1, 1])?, [2, 3, 1, 1]);
        assert!(adaptive_avg_pool2d(&[2, 3, 7, 5], [8, 1]).is_err());
        Ok(())
    }

    #[test]
    fn conv_options_are_checked() -> Result<(), EngineError> {
        let depthwise = Conv2dOptions {
            stride: [2, 1],
            padding: [1, 2],
            dilation: [2, 1],
            groups: 4,
        };
        let g = conv2d(&[1, 4, 9, 6], &[8, 1, 3, 5], None, &depthwise)?;
        // (9 + 2 - 2·2 - 1) / 2 + 1 and (6 + 4 - 4 - 1) / 1 + 1.
        assert_eq!((g.out_h(), g.out_w()), (4, 6));
        for groups in [0, 3] {
            let options = Conv2dOptions {
                groups,
                ..depthwise
            };
            assert!(conv2d(&[1, 4, 9, 6], &[8, 1, 3, 5], None, &options).is_err());
        }
        // The kernel's channels are per group.
        assert!(conv2d(&[1, 4, 9, 6], &[8, 4, 3, 5], None, &depthwise).is_err());
        for bad in [
            Conv2dOptions {
                stride: [0, 1],
                ..depthwise
            },
            Conv2dOptions {
                dilation: [1, 0],
                ..depthwise
            },
            Conv2dOptions {
                padding: [65, 0],
                ..depthwise
            },
        ] {
            assert!(conv2d(&[1, 4, 9, 6], &[8, 1, 3, 5], None, &bad).is_err());
        }
        Ok(())
    }

    #[test]
    fn broadcasting_follows_numpy() -> Result<(), EngineError> {
        assert_eq!(broadcast_dims(&[2, 1, 4], &[3, 1])?, [2, 3, 4]);
        assert_eq!(broadcast_dims(&[1], &[5, 6])?, [5, 6]);
        assert_eq!(broadcast_dims(&[4, 1, 1, 3], &[4, 1, 3])?, [4, 4, 1, 3]);
        assert!(broadcast_dims(&[2, 3], &[3, 2]).is_err());
        // Two operands within the limit whose broadcast is beyond it.
        assert!(matches!(
            broadcast_dims(&[1 << 16, 1], &[1, 1 << 16]),
            Err(EngineError::TooLarge { .. })
        ));
        Ok(())
    }

    #[test]
    fn axes_are_checked() -> Result<(), EngineError> {
        assert_eq!(reduce("sum", &[2, 3, 4], &[1], false)?, [2, 4]);
        assert_eq!(reduce("sum", &[2, 3, 4], &[0, 2], true)?, [1, 3, 1]);
        assert_eq!(reduce("sum", &[2, 3], &[1, 0], false)?, [1]);
        for axes in [&[][..], &[3], &[1, 1]] {
            assert!(reduce("sum", &[2, 3, 4], axes, false).is_err(), "{axes:?}");
        }
        assert_eq!(permute(&[2, 3, 4], &[2, 0, 1])?, [4, 2, 3]);
        assert!(permute(&[2, 3, 4], &[0, 0, 1]).is_err());
        assert!(permute(&[2, 3, 4], &[0, 1]).is_err());
        assert_eq!(concat(&[&[2, 3], &[2, 5]], 1)?, [2, 8]);
        assert!(concat(&[&[2, 3], &[3, 3]], 1).is_err());
        assert!(concat(&[], 0).is_err());
        assert_eq!(narrow(&[4, 5], 1, 2, 3)?, [4, 3]);
        for (start, len) in [(3, 3), (0, 0), (usize::MAX, 2)] {
            assert!(narrow(&[4, 5], 1, start, len).is_err());
        }
        assert_eq!(index_select(&[10, 4], 0, &[7])?, [7, 4]);
        assert!(index_select(&[10, 4], 2, &[7]).is_err());
        assert_eq!(indices("gather", &[0.0, 9.0, 3.0], 10)?, [0, 9, 3]);
        for bad in [10.0, -1.0, 0.5, f32::NAN] {
            assert!(indices("gather", &[bad], 10).is_err());
        }
        Ok(())
    }

    #[test]
    fn batched_products_broadcast_their_batch() -> Result<(), EngineError> {
        let m = matmul(&[2, 1, 3, 4], &[5, 4, 6])?;
        assert_eq!(
            (m.out.as_slice(), m.n, m.k, m.m),
            (&[2, 5, 3, 6][..], 3, 4, 6)
        );
        assert_eq!(matmul(&[3, 4], &[4, 2])?.out, [3, 2]);
        assert_eq!(matmul(&[3, 4], &[7, 4, 2])?.out, [7, 3, 2]);
        assert!(matmul(&[3, 4], &[3, 2]).is_err());
        assert!(matmul(&[4], &[4, 2]).is_err());
        assert!(matmul(&[2, 3, 4], &[3, 4, 2]).is_err());
        Ok(())
    }

    #[test]
    fn linear_output_must_fit_a_tensor() -> Result<(), EngineError> {
        assert_eq!(linear(&[4, 3], &[3, 2], Some(&[2]))?, [4, 3, 2]);
        // Each operand holds 2^24 elements; the product would hold 2^48.
        assert!(matches!(
            linear(&[1 << 24, 1], &[1, 1 << 24], None),
            Err(EngineError::TooLarge { .. })
        ));
        Ok(())
    }

    #[test]
    fn reshape_compares_checked_counts() -> Result<(), EngineError> {
        assert_eq!(reshape(&[2, 3, 4], &[6, 4])?.dims(), [6, 4]);
        assert!(reshape(&[2, 3, 4], &[5, 5]).is_err());
        // A source whose count overflows matches nothing.
        assert!(reshape(&[1 << 43, 1 << 50, 1 << 43, 1], &[1]).is_err());
        assert!(reshape(&[usize::MAX, usize::MAX], &[1]).is_err());
        Ok(())
    }

    #[test]
    fn values_must_fill_the_shape() {
        assert!(values(&[2, 3], 6).is_ok());
        assert!(values(&[2, 3], 5).is_err());
        assert!(matches!(
            values(&[1 << 43, 1 << 50, 1 << 43, 1], 0),
            Err(EngineError::TooLarge { .. })
        ));
    }
}
