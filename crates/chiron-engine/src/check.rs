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
}

impl Conv2d {
    /// Output height.
    pub fn out_h(&self) -> usize {
        (self.height + 2 * self.padding - self.kernel_h) / self.stride + 1
    }

    /// Output width.
    pub fn out_w(&self) -> usize {
        (self.width + 2 * self.padding - self.kernel_w) / self.stride + 1
    }
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
    if kernel_h > height + 2 * padding || kernel_w > width + 2 * padding {
        return Err(shape_err(
            OP,
            format!("kernel {kernel_h}x{kernel_w} larger than padded input {height}x{width}"),
        ));
    }
    bias(OP, b, outputs)?;
    let conv = Conv2d {
        batch,
        channels,
        height,
        width,
        outputs,
        kernel_h,
        kernel_w,
        stride,
        padding,
    };
    Shape::new(&[batch, outputs, conv.out_h(), conv.out_w()])?;
    Ok(conv)
}

/// Checks `max_pool2d(x, kernel, stride)`; returns the output dimensions.
pub(crate) fn max_pool2d(
    x: &[usize],
    kernel: usize,
    stride: usize,
) -> Result<[usize; 4], EngineError> {
    const OP: &str = "max_pool2d";
    let [n, c, h, w] = rank::<4>(OP, x)?;
    if kernel == 0 || stride == 0 || kernel > h || kernel > w {
        return Err(argument(
            OP,
            format!("window {kernel} stride {stride} on {h}x{w}"),
        ));
    }
    Ok([n, c, (h - kernel) / stride + 1, (w - kernel) / stride + 1])
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
    if from.iter().product::<usize>() != target.elements() {
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
