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
        let elements = dims.iter().map(|&d| d as u128).product::<u128>();
        if elements > MAX_ELEMENTS {
            return Err(EngineError::TooLarge {
                elements,
                limit: MAX_ELEMENTS,
            });
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
    pub fn elements(&self) -> usize {
        self.0.iter().product()
    }
}
