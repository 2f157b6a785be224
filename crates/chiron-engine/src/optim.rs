//! Optimizers, written once over [`Backend`] operations so every backend gets them.

use crate::{Backend, Binary, EngineError, Unary};

/// Which update rule an [`Optimizer`] applies, with its hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum OptimizerKind {
    /// Stochastic gradient descent with heavy-ball momentum (PyTorch's formulation) and
    /// L2 weight decay.
    Sgd {
        /// Learning rate.
        lr: f32,
        /// Momentum factor; 0 disables momentum.
        momentum: f32,
        /// L2 penalty added to the gradient.
        weight_decay: f32,
    },
    /// Adam with bias correction and L2 weight decay.
    Adam {
        /// Learning rate.
        lr: f32,
        /// First-moment decay.
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
        /// Denominator stabiliser.
        eps: f32,
        /// L2 penalty added to the gradient.
        weight_decay: f32,
    },
    /// SGD with Nesterov momentum (PyTorch's `SGD(nesterov=True)`): the step looks ahead
    /// along the momentum, `g + momentum · v` with `v ← momentum · v + g`.
    Nesterov {
        /// Learning rate.
        lr: f32,
        /// Momentum factor, above 0.
        momentum: f32,
        /// L2 penalty added to the gradient.
        weight_decay: f32,
    },
    /// Adam with decoupled weight decay (PyTorch's `AdamW`): parameters shrink by
    /// `lr · weight_decay` of themselves each step, apart from the gradient's moments.
    AdamW {
        /// Learning rate.
        lr: f32,
        /// First-moment decay.
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
        /// Denominator stabiliser.
        eps: f32,
        /// Decoupled decay rate (PyTorch's default is 0.01).
        weight_decay: f32,
    },
    /// RMSprop (PyTorch's formulation, without momentum or centering): the gradient divided
    /// by the root of a running mean of its square.
    RmsProp {
        /// Learning rate.
        lr: f32,
        /// Decay of the running mean of squares (PyTorch's default is 0.99).
        alpha: f32,
        /// Denominator stabiliser.
        eps: f32,
        /// L2 penalty added to the gradient.
        weight_decay: f32,
    },
}

impl OptimizerKind {
    /// Checks that every hyper-parameter is finite and in range.
    pub fn validate(&self) -> Result<(), EngineError> {
        let ok = match *self {
            Self::Sgd {
                lr,
                momentum,
                weight_decay,
            } => {
                lr.is_finite()
                    && lr > 0.0
                    && (0.0..1.0).contains(&momentum)
                    && weight_decay.is_finite()
                    && weight_decay >= 0.0
            }
            Self::Nesterov {
                lr,
                momentum,
                weight_decay,
            } => {
                lr.is_finite()
                    && lr > 0.0
                    && momentum > 0.0
                    && momentum < 1.0
                    && weight_decay.is_finite()
                    && weight_decay >= 0.0
            }
            Self::RmsProp {
                lr,
                alpha,
                eps,
                weight_decay,
            } => {
                lr.is_finite()
                    && lr > 0.0
                    && (0.0..1.0).contains(&alpha)
                    && eps.is_finite()
                    && eps > 0.0
                    && weight_decay.is_finite()
                    && weight_decay >= 0.0
            }
            Self::Adam {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
            }
            | Self::AdamW {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                lr.is_finite()
                    && lr > 0.0
                    && (0.0..1.0).contains(&beta1)
                    && (0.0..1.0).contains(&beta2)
                    && eps.is_finite()
                    && eps > 0.0
                    && weight_decay.is_finite()
                    && weight_decay >= 0.0
            }
        };
        if ok {
            Ok(())
        } else {
            Err(EngineError::Argument {
                op: "optimizer",
                detail: format!("hyper-parameters out of range: {self:?}"),
            })
        }
    }
}

/// An optimizer's whole state as plain values, for a checkpoint: restored with
/// [`Optimizer::from_state`], it continues exactly where [`Optimizer::state`] left it.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerState {
    /// The rule and its hyper-parameters.
    pub kind: OptimizerKind,
    /// Steps taken (Adam's bias correction counts them).
    pub step: u32,
    /// The global norm steps are clipped to, if any.
    pub max_grad_norm: Option<f32>,
    /// Per parameter, the first buffer (momentum, or Adam's first moment), if it exists yet.
    pub first: Vec<Option<Vec<f32>>>,
    /// Per parameter, the second buffer (Adam's second moment, RMSprop's mean square).
    pub second: Vec<Option<Vec<f32>>>,
}

/// An optimizer over a fixed list of parameters, holding its per-parameter state.
pub struct Optimizer<B: Backend> {
    kind: OptimizerKind,
    step: u32,
    first: Vec<Option<B::Tensor>>,
    second: Vec<Option<B::Tensor>>,
    /// Largest global gradient norm a step applies; gradients above it are scaled down.
    max_grad_norm: Option<f32>,
}

impl<B: Backend> Optimizer<B> {
    /// An optimizer for `params` parameters.
    pub fn new(kind: OptimizerKind, params: usize) -> Result<Self, EngineError> {
        kind.validate()?;
        Ok(Self {
            kind,
            step: 0,
            first: vec![None; params],
            second: vec![None; params],
            max_grad_norm: None,
        })
    }

    /// Clips every later step's gradients to a global L2 norm of at most `max_norm`
    /// (PyTorch's `clip_grad_norm_`, applied inside the step): all gradients are scaled by
    /// `max_norm / (norm + 1e-6)` when their joint norm is above `max_norm`.
    pub fn clip_grad_norm(&mut self, max_norm: f32) -> Result<(), EngineError> {
        self.max_grad_norm = Some(checked_max_norm(max_norm)?);
        Ok(())
    }

    /// Changes the learning rate (for schedules).
    pub fn set_lr(&mut self, new_lr: f32) -> Result<(), EngineError> {
        let mut kind = self.kind;
        match &mut kind {
            OptimizerKind::Sgd { lr, .. }
            | OptimizerKind::Nesterov { lr, .. }
            | OptimizerKind::Adam { lr, .. }
            | OptimizerKind::AdamW { lr, .. }
            | OptimizerKind::RmsProp { lr, .. } => *lr = new_lr,
        }
        kind.validate()?;
        self.kind = kind;
        Ok(())
    }

    /// Its whole state, read out as values.
    pub fn state(&self, engine: &B) -> Result<OptimizerState, EngineError> {
        let read = |buffers: &[Option<B::Tensor>]| {
            buffers
                .iter()
                .map(|b| b.as_ref().map(|t| engine.read(t)).transpose())
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(OptimizerState {
            kind: self.kind,
            step: self.step,
            max_grad_norm: self.max_grad_norm,
            first: read(&self.first)?,
            second: read(&self.second)?,
        })
    }

    /// An optimizer continuing from `state`, over parameters of the given shapes.
    pub fn from_state(
        engine: &B,
        state: OptimizerState,
        shapes: &[&[usize]],
    ) -> Result<Self, EngineError> {
        state.kind.validate()?;
        let mismatch = || EngineError::Argument {
            op: "optimizer",
            detail: "a saved state that does not fit its parameters".into(),
        };
        if state.first.len() != shapes.len() || state.second.len() != shapes.len() {
            return Err(mismatch());
        }
        let load = |buffers: Vec<Option<Vec<f32>>>| {
            buffers
                .into_iter()
                .zip(shapes)
                .map(|(b, &shape)| b.map(|v| engine.constant(shape, v)).transpose())
                .collect::<Result<Vec<_>, _>>()
        };
        let mut optimizer = Self {
            kind: state.kind,
            step: state.step,
            first: load(state.first).map_err(|_| mismatch())?,
            second: load(state.second).map_err(|_| mismatch())?,
            max_grad_norm: None,
        };
        if let Some(norm) = state.max_grad_norm {
            optimizer.clip_grad_norm(norm)?;
        }
        Ok(optimizer)
    }

    /// The update rule and its current hyper-parameters.
    pub fn kind(&self) -> OptimizerKind {
        self.kind
    }

    /// Replaces the hyper-parameters (the rule must stay the same): how a parameter server
    /// follows a worker's learning-rate schedule.
    pub fn set_kind(&mut self, kind: OptimizerKind) -> Result<(), EngineError> {
        self.kind = checked_same_rule(self.kind, kind)?;
        Ok(())
    }

    /// The global gradient norm steps are clipped to, if any.
    pub fn max_grad_norm(&self) -> Option<f32> {
        self.max_grad_norm
    }

    /// How many parameters this optimizer updates.
    pub fn len(&self) -> usize {
        self.first.len()
    }

    /// Whether it updates no parameter.
    pub fn is_empty(&self) -> bool {
        self.first.is_empty()
    }

    /// Applies one update to `params` from `grads`. Parameters without a gradient are left
    /// unchanged.
    pub fn step(
        &mut self,
        engine: &B,
        params: &mut [B::Tensor],
        grads: &B::Gradients,
    ) -> Result<(), EngineError> {
        if params.len() != self.first.len() {
            return Err(EngineError::Argument {
                op: "optimizer_step",
                detail: format!(
                    "{} parameters for an optimizer of {}",
                    params.len(),
                    self.first.len()
                ),
            });
        }
        let gradients = params.iter().map(|p| engine.grad(grads, p)).collect();
        self.step_with(engine, params, gradients)
    }

    /// [`Optimizer::step`] with the gradients given, one per parameter (`None` for one that
    /// took no part in the pass): for a parameter server, which applies gradients averaged
    /// over its workers to parameters it holds. Parameters may be any shape, flat included,
    /// since every rule is element-wise.
    pub fn step_with(
        &mut self,
        engine: &B,
        params: &mut [B::Tensor],
        mut gradients: Vec<Option<B::Tensor>>,
    ) -> Result<(), EngineError> {
        if params.len() != self.first.len() || gradients.len() != params.len() {
            return Err(EngineError::Argument {
                op: "optimizer_step",
                detail: format!(
                    "{} parameters and {} gradients for an optimizer of {}",
                    params.len(),
                    gradients.len(),
                    self.first.len()
                ),
            });
        }
        self.step = self.step.saturating_add(1);
        if let Some(max_norm) = self.max_grad_norm {
            let scale = clip_scale(engine, &gradients, max_norm)?;
            if scale < 1.0 {
                for g in gradients.iter_mut().flatten() {
                    *g = engine.affine(g, scale, 0.0)?;
                }
            }
        }
        for ((i, param), grad) in params.iter_mut().enumerate().zip(gradients) {
            let Some(grad) = grad else {
                continue;
            };
            let value = engine.detach(param);
            let updated = match self.kind {
                OptimizerKind::Sgd {
                    lr,
                    momentum,
                    weight_decay,
                } => {
                    let g = decayed(engine, grad, &value, weight_decay)?;
                    let direction = if momentum > 0.0 {
                        let v = momentum_buffer(engine, self.first[i].take(), g, momentum)?;
                        self.first[i] = Some(v.clone());
                        v
                    } else {
                        g
                    };
                    engine.binary(Binary::Sub, &value, &engine.affine(&direction, lr, 0.0)?)?
                }
                OptimizerKind::Nesterov {
                    lr,
                    momentum,
                    weight_decay,
                } => {
                    let g = decayed(engine, grad, &value, weight_decay)?;
                    let v = momentum_buffer(engine, self.first[i].take(), g.clone(), momentum)?;
                    let direction =
                        engine.binary(Binary::Add, &g, &engine.affine(&v, momentum, 0.0)?)?;
                    self.first[i] = Some(v);
                    engine.binary(Binary::Sub, &value, &engine.affine(&direction, lr, 0.0)?)?
                }
                OptimizerKind::RmsProp {
                    lr,
                    alpha,
                    eps,
                    weight_decay,
                } => {
                    let g = decayed(engine, grad, &value, weight_decay)?;
                    let g2 = engine.binary(Binary::Mul, &g, &g)?;
                    let v = blend(engine, self.second[i].take(), &g2, alpha)?;
                    let denom = engine.affine(&engine.unary(Unary::Sqrt, &v)?, 1.0, eps)?;
                    let delta = engine.binary(Binary::Div, &g, &denom)?;
                    self.second[i] = Some(v);
                    engine.binary(Binary::Sub, &value, &engine.affine(&delta, lr, 0.0)?)?
                }
                OptimizerKind::AdamW {
                    lr,
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                } => {
                    let shrunk = engine.affine(&value, 1.0 - lr * weight_decay, 0.0)?;
                    let delta = self.adam_delta(engine, i, grad, beta1, beta2, eps)?;
                    engine.binary(Binary::Sub, &shrunk, &engine.affine(&delta, lr, 0.0)?)?
                }
                OptimizerKind::Adam {
                    lr,
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                } => {
                    let g = decayed(engine, grad, &value, weight_decay)?;
                    let delta = self.adam_delta(engine, i, g, beta1, beta2, eps)?;
                    engine.binary(Binary::Sub, &value, &engine.affine(&delta, lr, 0.0)?)?
                }
            };
            *param = engine.as_parameter(updated);
        }
        Ok(())
    }
}

impl<B: Backend> Optimizer<B> {
    /// Adam's bias-corrected step direction for parameter `i` from gradient `g`, updating
    /// its moments.
    fn adam_delta(
        &mut self,
        engine: &B,
        i: usize,
        g: B::Tensor,
        beta1: f32,
        beta2: f32,
        eps: f32,
    ) -> Result<B::Tensor, EngineError> {
        let g2 = engine.binary(Binary::Mul, &g, &g)?;
        let m = blend(engine, self.first[i].take(), &g, beta1)?;
        let v = blend(engine, self.second[i].take(), &g2, beta2)?;
        let t = self.step as i32;
        let m_hat = engine.affine(&m, 1.0 / (1.0 - beta1.powi(t)), 0.0)?;
        let v_hat = engine.affine(&v, 1.0 / (1.0 - beta2.powi(t)), 0.0)?;
        let denom = engine.affine(&engine.unary(Unary::Sqrt, &v_hat)?, 1.0, eps)?;
        let delta = engine.binary(Binary::Div, &m_hat, &denom)?;
        self.first[i] = Some(m);
        self.second[i] = Some(v);
        Ok(delta)
    }
}

/// The factor that brings the gradients' joint L2 norm to at most `max_norm` (1 if it is
/// already below).
fn clip_scale<B: Backend>(
    engine: &B,
    gradients: &[Option<B::Tensor>],
    max_norm: f32,
) -> Result<f32, EngineError> {
    let mut squares = 0f64;
    for g in gradients.iter().flatten() {
        let count = engine.shape(g).elements();
        let mean = engine.mean(&engine.binary(Binary::Mul, g, g)?)?;
        let mean = engine.read(&mean)?.first().copied().unwrap_or(0.0);
        squares += f64::from(mean) * count as f64;
    }
    let norm = squares.sqrt() as f32;
    Ok(if norm > max_norm {
        max_norm / (norm + 1e-6)
    } else {
        1.0
    })
}

fn decayed<B: Backend>(
    engine: &B,
    grad: B::Tensor,
    value: &B::Tensor,
    weight_decay: f32,
) -> Result<B::Tensor, EngineError> {
    if weight_decay > 0.0 {
        engine.binary(
            Binary::Add,
            &grad,
            &engine.affine(value, weight_decay, 0.0)?,
        )
    } else {
        Ok(grad)
    }
}

/// The heavy-ball buffer `momentum · previous + g`, which starts at `g` (PyTorch's).
fn momentum_buffer<B: Backend>(
    engine: &B,
    previous: Option<B::Tensor>,
    g: B::Tensor,
    momentum: f32,
) -> Result<B::Tensor, EngineError> {
    match previous {
        Some(v) => engine.binary(Binary::Add, &engine.affine(&v, momentum, 0.0)?, &g),
        None => Ok(g),
    }
}

/// `beta · previous + (1 − beta) · fresh`, starting from zero.
fn blend<B: Backend>(
    engine: &B,
    previous: Option<B::Tensor>,
    fresh: &B::Tensor,
    beta: f32,
) -> Result<B::Tensor, EngineError> {
    let scaled = engine.affine(fresh, 1.0 - beta, 0.0)?;
    match previous {
        Some(p) => engine.binary(Binary::Add, &engine.affine(&p, beta, 0.0)?, &scaled),
        None => Ok(scaled),
    }
}

/// `max_norm`, if it can bound a gradient norm: finite and positive.
pub(crate) fn checked_max_norm(max_norm: f32) -> Result<f32, EngineError> {
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(EngineError::Argument {
            op: "clip_grad_norm",
            detail: format!("the norm must be finite and positive, not {max_norm}"),
        });
    }
    Ok(max_norm)
}

/// `kind`, if it may replace `current`: valid, and the same rule.
pub(crate) fn checked_same_rule(
    current: OptimizerKind,
    kind: OptimizerKind,
) -> Result<OptimizerKind, EngineError> {
    kind.validate()?;
    if std::mem::discriminant(&kind) != std::mem::discriminant(&current) {
        return Err(EngineError::Argument {
            op: "optimizer",
            detail: format!("{kind:?} is another rule than {current:?}"),
        });
    }
    Ok(kind)
}
