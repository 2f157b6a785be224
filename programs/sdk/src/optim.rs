//! [`Optimizer`]: runtime-side SGD (plain and Nesterov), Adam, AdamW and RMSprop.

use crate::tensor::handles;
use crate::{Tensor, len_u32, sys};

/// An optimiser held by the runtime, updating a fixed list of parameters in place.
///
/// After [`step`](Optimizer::step) the parameters' [`Tensor`]s name their new values; the
/// optimiser's state (momenta) stays in the runtime. Dropping it frees that state.
pub struct Optimizer {
    handle: u32,
}

impl Optimizer {
    /// An optimiser over `params`, made by the ABI call `make(handles, count)`. The pointer
    /// and count name a live buffer of handles that outlives the call (the runtime only reads
    /// it during the call, and validates each handle and hyper-parameter), which is what
    /// every `make` relies on.
    fn over(params: &[&Tensor], make: impl FnOnce(*const u32, u32) -> u32) -> Optimizer {
        let handles = handles(params);
        Optimizer {
            handle: make(handles.as_ptr(), len_u32(handles.len())),
        }
    }

    /// SGD with heavy-ball momentum (PyTorch's formulation; 0 disables it) and L2 weight
    /// decay `weight_decay`.
    pub fn sgd(params: &[&Tensor], lr: f32, momentum: f32, weight_decay: f32) -> Optimizer {
        // SAFETY: as `over` states.
        Self::over(params, |ptr, len| unsafe {
            sys::chiron_optimizer_sgd(ptr, len, lr, momentum, weight_decay)
        })
    }

    /// Adam with bias correction and L2 weight decay (PyTorch's `Adam`, not `AdamW`).
    /// The usual values are `lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8`.
    pub fn adam(
        params: &[&Tensor],
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
    ) -> Optimizer {
        // SAFETY: as `over` states.
        Self::over(params, |ptr, len| unsafe {
            sys::chiron_optimizer_adam(ptr, len, lr, beta1, beta2, eps, weight_decay)
        })
    }

    /// SGD with Nesterov momentum (PyTorch's `SGD(nesterov=True)`); `momentum` must be in
    /// (0, 1).
    pub fn nesterov(params: &[&Tensor], lr: f32, momentum: f32, weight_decay: f32) -> Optimizer {
        // SAFETY: as `over` states.
        Self::over(params, |ptr, len| unsafe {
            sys::chiron_optimizer_nesterov(ptr, len, lr, momentum, weight_decay)
        })
    }

    /// AdamW: Adam with decoupled weight decay (PyTorch's `AdamW`; its default decay is
    /// 0.01).
    pub fn adamw(
        params: &[&Tensor],
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
    ) -> Optimizer {
        // SAFETY: as `over` states.
        Self::over(params, |ptr, len| unsafe {
            sys::chiron_optimizer_adamw(ptr, len, lr, beta1, beta2, eps, weight_decay)
        })
    }

    /// RMSprop (PyTorch's, without momentum or centering; its defaults are `alpha = 0.99,
    /// eps = 1e-8`).
    pub fn rmsprop(
        params: &[&Tensor],
        lr: f32,
        alpha: f32,
        eps: f32,
        weight_decay: f32,
    ) -> Optimizer {
        // SAFETY: as `over` states.
        Self::over(params, |ptr, len| unsafe {
            sys::chiron_optimizer_rmsprop(ptr, len, lr, alpha, eps, weight_decay)
        })
    }

    /// Clips every later step's gradients to a joint L2 norm of at most `max_norm` (PyTorch's
    /// `clip_grad_norm_`, applied inside `step`).
    pub fn clip_grad_norm(&mut self, max_norm: f32) {
        // SAFETY: handle-only call; the runtime validates the handle and the norm.
        unsafe { sys::chiron_optimizer_clip_grad_norm(self.handle, max_norm) }
    }

    /// Changes the learning rate (for schedules).
    pub fn set_lr(&mut self, lr: f32) {
        // SAFETY: handle-only call; the runtime validates the handle and the rate.
        unsafe { sys::chiron_optimizer_set_lr(self.handle, lr) }
    }

    /// Back-propagates from the one-element `loss` and updates every parameter.
    pub fn step(&mut self, loss: &Tensor) {
        // SAFETY: handle-only call; the runtime validates both handles.
        unsafe { sys::chiron_optimizer_step(self.handle, loss.handle()) }
    }
}

impl Drop for Optimizer {
    fn drop(&mut self) {
        // SAFETY: `self` owns this live handle and nothing uses it after the drop.
        unsafe { sys::chiron_free(self.handle) }
    }
}

impl std::fmt::Debug for Optimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Optimizer")
            .field("handle", &self.handle)
            .finish()
    }
}
