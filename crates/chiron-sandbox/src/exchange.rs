//! The optimizer step of a distributed job.
//!
//! With several training enclaves ("workers") the runtime still owns the optimizer step, so
//! the provider's program is the same for one worker and for many. On a worker the step does
//! not update the parameters itself: it hands the gradients to a [`ParameterExchange`] (the
//! enclave's channel to its parameter server), which returns the parameters to continue with.
//! The parameter server applies the program's optimizer (rule, learning rate, clipping, as the
//! program last set them) to the gradients averaged over the workers.

use chiron_engine::OptimizerKind;
use thiserror::Error;

/// Where a worker's optimizer steps go.
pub trait ParameterExchange: Send {
    /// Called before the first step of optimizer `optimizer` (its handle), with the current
    /// values of its parameters in order. Returns the values every worker starts from (the
    /// parameter server's, which are the first worker's).
    fn register(
        &mut self,
        optimizer: u32,
        values: Vec<Vec<f32>>,
    ) -> Result<Vec<Vec<f32>>, ExchangeError>;

    /// One step of optimizer `optimizer`: its gradients out, the updated parameters back
    /// (each as long as the parameter it replaces).
    fn step(&mut self, optimizer: u32, update: Update) -> Result<Vec<Vec<f32>>, ExchangeError>;
}

/// One worker's contribution to a step.
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    /// The rule and hyper-parameters the program's optimizer has now.
    pub kind: OptimizerKind,
    /// The global gradient norm the program clips to, if any.
    pub max_grad_norm: Option<f32>,
    /// One gradient per parameter, `None` where a parameter took no part in the pass.
    pub gradients: Vec<Option<Vec<f32>>>,
}

/// Why the exchange failed. The text is for the owner: it names what failed (the channel,
/// the parameter server's refusal), never a value.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct ExchangeError(pub String);
