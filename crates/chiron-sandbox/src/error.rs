use chiron_engine::EngineError;
use thiserror::Error;

/// Why a provider program was refused or stopped.
///
/// The [`Display`](std::fmt::Display) text may name shapes and limits the program chose; it is
/// meant for the data owner's encrypted event stream. What the untrusted host may see is only
/// [`SandboxError::public_class`].
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The module is not a valid Chiron program (bad wasm, a forbidden import, a missing
    /// export). Refused before any of it runs.
    #[error("program refused at load: {0}")]
    Refused(String),
    /// The program used the host ABI wrongly (unknown handle, bad pointer, bad shape...).
    #[error("program misused the host ABI in {call}: {detail}")]
    Abi {
        /// The ABI function.
        call: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The engine refused an operation the program asked for.
    #[error("tensor operation failed: {0}")]
    Engine(EngineError),
    /// A resource limit was reached.
    #[error("program exceeded its {0}")]
    Limit(Limit),
    /// The program trapped on its own (a panic, `unreachable`, a division by zero...).
    #[error("program trapped: {0}")]
    Trap(String),
    /// `train` returned without calling `save_model`.
    #[error("program finished training without saving a model")]
    NoModel,
    /// `predict` returned without calling `set_output`, or with scores of the wrong shape.
    #[error("program produced no valid output: {0}")]
    BadOutput(String),
    /// The wasm engine itself failed (a runtime bug, not the program's doing).
    #[error("sandbox failure: {0}")]
    Internal(String),
    /// A distributed job's parameter exchange failed (the channel to the parameter server,
    /// or its refusal of this worker's update).
    #[error("parameter exchange failed: {0}")]
    Exchange(String),
}

/// The resource limits a program can exhaust.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// The job's wall-clock budget.
    TimeBudget,
    /// The instruction (fuel) budget.
    Fuel,
    /// Linear-memory size.
    Memory,
    /// Runtime-side tensor memory.
    TensorMemory,
    /// Number of live handles.
    Handles,
    /// Wasm call-stack depth.
    Stack,
    /// The work the runtime may do for the program (operations charged from shapes).
    Compute,
    /// The memory the runtime may allocate for the program (tensors, gradients, optimizer
    /// state, saved models: everything the process's memory gauge counts).
    RuntimeMemory,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::TimeBudget => "time budget",
            Self::Fuel => "instruction budget",
            Self::Memory => "linear-memory limit",
            Self::TensorMemory => "tensor-memory quota",
            Self::Handles => "handle limit",
            Self::Stack => "stack limit",
            Self::Compute => "compute budget",
            Self::RuntimeMemory => "runtime memory budget",
        })
    }
}

impl From<EngineError> for SandboxError {
    /// An interrupted operation was stopped by a limit, not refused: by the memory gauge if
    /// it tripped, by the deadline otherwise.
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Interrupted => {
                if crate::memory::OVER_LIMIT.load(std::sync::atomic::Ordering::Acquire) {
                    Self::Limit(Limit::RuntimeMemory)
                } else {
                    Self::Limit(Limit::TimeBudget)
                }
            }
            other => Self::Engine(other),
        }
    }
}

impl SandboxError {
    /// What the data owner is told: which limit or check stopped the program, never the
    /// shapes, sizes or values the program used (those would describe the provider's
    /// model to the owner). The trap kind is kept; a panic's own message is not.
    pub fn owner_detail(&self) -> String {
        match self {
            Self::Refused(_) => "the program was refused at load".into(),
            Self::Abi { call, .. } => format!("the program misused the host ABI in `{call}`"),
            Self::Engine(e) => match e {
                EngineError::Shape { op, .. } => {
                    format!("a tensor operation (`{op}`) was given mismatched shapes")
                }
                EngineError::Argument { op, .. } => {
                    format!("a tensor operation (`{op}`) was given an invalid argument")
                }
                EngineError::TooLarge { .. } => {
                    "a tensor operation asked for a tensor above the engine's size limit".into()
                }
                EngineError::NotDifferentiable => {
                    "backward was asked of a tensor that no parameter contributed to".into()
                }
                EngineError::Interrupted => "a tensor operation was interrupted".into(),
                EngineError::Internal { op } => format!("the engine failed in `{op}`"),
                _ => "a tensor operation failed".into(),
            },
            Self::Limit(limit) => format!("the program exceeded its {limit}"),
            Self::Trap(kind) => match kind.split_once(':') {
                // wasmtime's trap texts are fixed; anything after a colon is not ours.
                Some((kind, _)) => format!("the program trapped: {kind}"),
                None => format!("the program trapped: {kind}"),
            },
            Self::NoModel => "the program finished training without saving a model".into(),
            Self::BadOutput(_) => "the program produced no valid output".into(),
            Self::Internal(_) => "the sandbox failed".into(),
            Self::Exchange(detail) => format!("the parameter exchange failed: {detail}"),
        }
    }

    /// A fixed label, independent of any detail, for what the untrusted host may log.
    pub fn public_class(&self) -> &'static str {
        match self {
            Self::Refused(_) => "program refused",
            Self::Internal(_) => "sandbox failure",
            _ => "program failed",
        }
    }

    pub(crate) fn abi(call: &'static str, detail: impl Into<String>) -> Self {
        Self::Abi {
            call,
            detail: detail.into(),
        }
    }
}
