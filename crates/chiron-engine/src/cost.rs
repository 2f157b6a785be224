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

/// `conv2d(x, w, b, stride, padding)` with `x` `[n, c, h, w]` and `w` `[o, c, kh, kw]`.
pub fn conv2d(x: &[usize], w: &[usize], stride: usize, padding: usize) -> Cost {
    let (&[n, c, h, wd], &[o, _, kh, kw]) = (x, w) else {
        return Cost::default();
    };
    let out = |size: usize, k: usize| {
        (size.saturating_add(padding.saturating_mul(2)))
            .saturating_sub(k)
            .checked_div(stride)
            .unwrap_or(0)
            .saturating_add(1) as u64
    };
    let positions = mul(out(h, kh), out(wd, kw));
    let outputs = mul(mul(n as u64, o as u64), positions);
    let patch = mul(mul(c as u64, kh as u64), kw as u64);
    Cost {
        // The product, plus the patch matrix built for it.
        flops: mul(outputs, patch)
            .saturating_mul(2)
            .saturating_add(mul(mul(n as u64, positions), patch)),
        bytes: mul(outputs, F32),
    }
}

/// `max_pool2d(x, kernel, stride)` with `x` `[n, c, h, w]`.
pub fn max_pool2d(x: &[usize], kernel: usize, stride: usize) -> Cost {
    let &[n, c, h, w] = x else {
        return Cost::default();
    };
    let out = |size: usize| {
        size.saturating_sub(kernel)
            .checked_div(stride)
            .unwrap_or(0)
            .saturating_add(1) as u64
    };
    let outputs = mul(mul(n as u64, c as u64), mul(out(h), out(w)));
    Cost {
        flops: mul(outputs, mul(kernel as u64, kernel as u64)),
        // The values and, for the gradient, where each came from.
        bytes: mul(outputs, 2 * F32),
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
        let c = conv2d(&[8, 3, 32, 32], &[32, 3, 3, 3], 1, 1);
        let outputs = 8 * 32 * 32 * 32;
        assert_eq!(c.flops, 2 * outputs * 27 + 8 * 32 * 32 * 27);
        assert_eq!(c.bytes, outputs * 4);
    }

    #[test]
    fn absurd_shapes_saturate_instead_of_overflowing() {
        let huge = usize::MAX / 2;
        assert_eq!(linear(&[huge, huge], &[huge, huge]).flops, u64::MAX);
        assert_eq!(tensor(&[huge, huge, huge, huge]).bytes, u64::MAX);
        assert_eq!(conv2d(&[1, 1, 4, 4], &[1, 1, 3, 3], 0, 0).flops, 2 * 9 + 9);
    }
}
