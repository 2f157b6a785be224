use thiserror::Error;

/// Why the engine refused or failed an operation.
///
/// Messages name shapes and limits only (which the provider program chose), never tensor
/// values, so they can be reported to the owner without leaking data to the provider.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineError {
    /// An argument's shape does not fit the operation.
    #[error("shape mismatch in {op}: {detail}")]
    Shape {
        /// The operation that refused.
        op: &'static str,
        /// Which shapes were given.
        detail: String,
    },
    /// A tensor would exceed the engine's size limits.
    #[error("tensor too large: {elements} elements (limit {limit})")]
    TooLarge {
        /// Requested element count.
        elements: u128,
        /// The limit in force.
        limit: u128,
    },
    /// A numeric argument is out of its valid range.
    #[error("invalid argument to {op}: {detail}")]
    Argument {
        /// The operation that refused.
        op: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// Backward was asked of a tensor outside any gradient graph.
    #[error("backward needs a one-element loss computed from parameters")]
    NotDifferentiable,
    /// The operation was stopped part-way by its [`Interrupt`](crate::Interrupt) (a deadline
    /// passed, or the runtime stopped the program); its result is discarded.
    #[error("operation interrupted")]
    Interrupted,
    /// The engine itself failed (a bug in the engine, caught and contained).
    #[error("engine failure in {op}")]
    Internal {
        /// The operation during which the failure occurred.
        op: &'static str,
    },
}
