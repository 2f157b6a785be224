use crate::EngineError;

/// Highest tensor rank the engine supports.
pub const MAX_RANK: usize = 4;

/// Largest element count of a single tensor (1 GiB of `f32`).
pub const MAX_ELEMENTS: u128 = 1 << 28;

/// A validated tensor shape: rank 1 to [`MAX_RANK`], no zero dimension, bounded size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape(pub(crate) Vec<usize>);

impl Shape {
    /// Validates `dims`.
    ///
    /// The dimensions come from untrusted bytes (a sealed model, a provider program), so
    /// their product is taken with checked arithmetic and the check stops at the first
    /// dimension that takes it past [`MAX_ELEMENTS`]: the `elements` of the
    /// [`EngineError::TooLarge`] it returns is then the product up to that dimension, a lower
    /// bound of the whole.
    pub fn new(dims: &[usize]) -> Result<Self, EngineError> {
        if dims.is_empty() || dims.len() > MAX_RANK {
            return Err(EngineError::Argument {
                op: "shape",
                detail: format!("rank {} outside 1..={MAX_RANK}", dims.len()),
            });
        }
        if dims.contains(&0) {
            return Err(EngineError::Argument {
                op: "shape",
                detail: format!("zero dimension in {dims:?}"),
            });
        }
        let mut elements: u128 = 1;
        for &d in dims {
            // `elements` is at most MAX_ELEMENTS here and `d` (a lossless cast) below 2^64,
            // so the product fits in a u128; checked all the same.
            match elements.checked_mul(d as u128) {
                Some(e) if e <= MAX_ELEMENTS => elements = e,
                other => {
                    return Err(EngineError::TooLarge {
                        elements: other.unwrap_or(u128::MAX),
                        limit: MAX_ELEMENTS,
                    });
                }
            }
        }
        Ok(Self(dims.to_vec()))
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.0
    }

    /// The rank.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// The number of elements.
    ///
    /// At most [`MAX_ELEMENTS`] for a shape from [`Shape::new`]; a product that would not fit
    /// in a `usize` (only possible for dimensions that did not pass [`Shape::new`]) saturates
    /// at `usize::MAX`, which matches no real buffer length, instead of wrapping or panicking.
    pub fn elements(&self) -> usize {
        self.0
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape from issue 10: its product (2^136) overflows a u128.
    const HUGE: [usize; 4] = [1 << 43, 1 << 50, 1 << 43, 1];

    #[test]
    fn huge_shape_is_too_large_not_an_overflow() {
        match Shape::new(&HUGE) {
            Err(EngineError::TooLarge { elements, limit }) => {
                assert_eq!(limit, MAX_ELEMENTS);
                // The check stops at the first dimension: 2^43 is already past the limit.
                assert_eq!(elements, 1 << 43);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        // Every order of the same dimensions, and the overflow placed last.
        for dims in [
            [1, 1 << 43, 1 << 50, 1 << 43],
            [1 << 50, 1 << 43, 1, 1 << 43],
            [1 << 14, 1 << 14, 1 << 50, usize::MAX],
            [usize::MAX; 4],
        ] {
            assert!(
                matches!(Shape::new(&dims), Err(EngineError::TooLarge { .. })),
                "{dims:?}"
            );
        }
    }

    #[test]
    fn elements_of_a_huge_shape_saturate() {
        // Only engine code can build a Shape without validating it.
        assert_eq!(Shape(HUGE.to_vec()).elements(), usize::MAX);
        assert_eq!(Shape(vec![usize::MAX, 2]).elements(), usize::MAX);
    }

    #[test]
    fn limit_is_inclusive() -> Result<(), EngineError> {
        let at_limit = Shape::new(&[1 << 14, 1 << 14])?;
        assert_eq!(at_limit.elements(), 1 << 28);
        assert_eq!(at_limit.rank(), 2);
        assert!(matches!(
            Shape::new(&[(1 << 14) + 1, 1 << 14]),
            Err(EngineError::TooLarge { .. })
        ));
        assert_eq!(Shape::new(&[2, 3, 4, 5])?.elements(), 120);
        assert!(matches!(Shape::new(&[]), Err(EngineError::Argument { .. })));
        assert!(matches!(
            Shape::new(&[1, 2, 3, 4, 5]),
            Err(EngineError::Argument { .. })
        ));
        assert!(matches!(
            Shape::new(&[1 << 50, 0]),
            Err(EngineError::Argument { .. })
        ));
        Ok(())
    }
}
