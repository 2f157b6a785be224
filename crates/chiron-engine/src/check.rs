//! Argument checks shared by every backend, on shapes alone. They run before an engine
//! touches any data, because the arguments come from untrusted code; each failure names
//! shapes and limits only, never values.

use crate::{EngineError, Shape};

fn shape_err(op: &'static str, detail: String) -> EngineError {
    EngineError::Shape { op, detail }
}

fn argument(op: &'static str, detail: String) -> EngineError {
    EngineError::Argument { op, detail }
}

/// A checked 2-D convolution: input `[n, c, h, w]`, kernel `[o, c, kh, kw]`.
///
/// Only [`conv2d`] builds one (the output size is private), so every value is a geometry
/// whose output size was computed with checked arithmetic and fits a [`Shape`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Conv2d {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub outputs: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride: usize,
    pub padding: usize,
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

/// Output length of a window of `kernel` sliding by `stride` over `len` with `padding` on
/// each side: `(len + 2 padding - kernel) / stride + 1`, or `None` if the window does not
/// fit, `stride` is 0 or a step overflows.
fn window_out(len: usize, padding: usize, kernel: usize, stride: usize) -> Option<usize> {
    let padded = padding.checked_mul(2).and_then(|p| len.checked_add(p))?;
    padded
        .checked_sub(kernel)?
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

/// Checks `conv2d(x, w, b, stride, padding)`.
pub(crate) fn conv2d(
    x: &[usize],
    w: &[usize],
    b: Option<&[usize]>,
    stride: usize,
    padding: usize,
) -> Result<Conv2d, EngineError> {
    const OP: &str = "conv2d";
    let [batch, channels, height, width] = rank::<4>(OP, x)?;
    let [outputs, wc, kernel_h, kernel_w] = rank::<4>(OP, w)?;
    if channels != wc {
        return Err(shape_err(
            OP,
            format!("input has {channels} channels, kernel {wc}"),
        ));
    }
    if stride == 0 || stride > 16 || padding > 16 {
        return Err(argument(
            OP,
            format!("stride {stride} / padding {padding} out of range"),
        ));
    }
    let (Some(out_height), Some(out_width)) = (
        window_out(height, padding, kernel_h, stride),
        window_out(width, padding, kernel_w, stride),
    ) else {
        return Err(shape_err(
            OP,
            format!(
                "kernel {kernel_h}x{kernel_w} larger than input {height}x{width} with padding {padding}"
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
        out_height,
        out_width,
    })
}

/// Checks `max_pool2d(x, kernel, stride)`; returns the output dimensions.
pub(crate) fn max_pool2d(
    x: &[usize],
    kernel: usize,
    stride: usize,
) -> Result<[usize; 4], EngineError> {
    const OP: &str = "max_pool2d";
    let [n, c, h, w] = rank::<4>(OP, x)?;
    let out = (kernel != 0)
        .then(|| window_out(h, 0, kernel, stride).zip(window_out(w, 0, kernel, stride)))
        .flatten();
    let Some((out_h, out_w)) = out else {
        return Err(argument(
            OP,
            format!("window {kernel} stride {stride} on {h}x{w}"),
        ));
    };
    Ok([n, c, out_h, out_w])
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

/// Checks that two operands of an element-wise function have the same shape.
pub(crate) fn same_shape(a: &[usize], b: &[usize]) -> Result<(), EngineError> {
    if a != b {
        return Err(shape_err("binary", format!("{a:?} vs {b:?}")));
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
    labels
        .iter()
        .map(|&label| {
            if label >= 0.0 && label.fract() == 0.0 && (label as usize) < classes {
                Ok(label as usize)
            } else {
                Err(argument(
                    "cross_entropy",
                    format!("label outside 0..{classes}"),
                ))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_output_size_is_checked() -> Result<(), EngineError> {
        let g = conv2d(&[2, 3, 28, 28], &[8, 3, 5, 5], Some(&[8]), 1, 2)?;
        assert_eq!((g.out_h(), g.out_w()), (28, 28));
        let g = conv2d(&[1, 1, 7, 9], &[1, 1, 3, 2], None, 2, 0)?;
        assert_eq!((g.out_h(), g.out_w()), (3, 4));
        // A kernel larger than the padded input, in either direction.
        assert!(matches!(
            conv2d(&[1, 1, 4, 4], &[1, 1, 9, 1], None, 1, 2),
            Err(EngineError::Shape { .. })
        ));
        assert!(matches!(
            conv2d(&[1, 1, 4, 4], &[1, 1, 1, 9], None, 1, 2),
            Err(EngineError::Shape { .. })
        ));
        // Dimensions no tensor can have still give an error, not an overflow.
        for (x, w) in [
            ([1, 1, usize::MAX, 1], [1, 1, 1, 1]),
            ([1, 1, usize::MAX - 1, 1], [1, 1, usize::MAX, 1]),
            ([1, 1, 1, usize::MAX], [1, 1, 1, usize::MAX]),
        ] {
            assert!(conv2d(&x, &w, None, 1, 16).is_err(), "{x:?} {w:?}");
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
