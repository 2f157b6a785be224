//! The optimizers' rules over plain `f32` values, updated in place: for a parameter server,
//! which holds a model's parameters as values and applies one averaged step a round.
//!
//! [`FlatOptimizer`] applies exactly the rules of [`crate::Optimizer`], term by term in the
//! same order, but in one pass over each parameter's values instead of one tensor per
//! intermediate: a step allocates nothing, so a round's megabytes are not written out and
//! read back a dozen times. Its state is the same [`OptimizerState`], so either can take
//! over from the other.

use crate::optim::{checked_max_norm, checked_same_rule};
use crate::{EngineError, OptimizerKind, OptimizerState};

/// An optimizer over a fixed list of flat parameters, holding its per-parameter state.
#[derive(Clone, Debug)]
pub struct FlatOptimizer {
    kind: OptimizerKind,
    step: u32,
    max_grad_norm: Option<f32>,
    /// Per parameter, the first buffer (momentum, or Adam's first moment), once it exists.
    first: Vec<Option<Vec<f32>>>,
    /// Per parameter, the second buffer (Adam's second moment, RMSprop's mean square).
    second: Vec<Option<Vec<f32>>>,
}

impl FlatOptimizer {
    /// An optimizer for `params` parameters.
    pub fn new(kind: OptimizerKind, params: usize) -> Result<Self, EngineError> {
        kind.validate()?;
        Ok(Self {
            kind,
            step: 0,
            max_grad_norm: None,
            first: vec![None; params],
            second: vec![None; params],
        })
    }

    /// An optimizer continuing from `state`, over parameters of `lens` values each.
    pub fn from_state(state: OptimizerState, lens: &[usize]) -> Result<Self, EngineError> {
        state.kind.validate()?;
        let fits = |buffers: &[Option<Vec<f32>>]| {
            buffers.len() == lens.len()
                && buffers
                    .iter()
                    .zip(lens)
                    .all(|(b, &len)| b.as_ref().is_none_or(|b| b.len() == len))
        };
        if !fits(&state.first) || !fits(&state.second) {
            return Err(EngineError::Argument {
                op: "optimizer",
                detail: "a saved state that does not fit its parameters".into(),
            });
        }
        let mut optimizer = Self {
            kind: state.kind,
            step: state.step,
            max_grad_norm: None,
            first: state.first,
            second: state.second,
        };
        if let Some(norm) = state.max_grad_norm {
            optimizer.clip_grad_norm(norm)?;
        }
        Ok(optimizer)
    }

    /// Its whole state, as values.
    pub fn state(&self) -> OptimizerState {
        OptimizerState {
            kind: self.kind,
            step: self.step,
            max_grad_norm: self.max_grad_norm,
            first: self.first.clone(),
            second: self.second.clone(),
        }
    }

    /// The update rule and its current hyper-parameters.
    pub fn kind(&self) -> OptimizerKind {
        self.kind
    }

    /// Replaces the hyper-parameters (the rule must stay the same), as
    /// [`crate::Optimizer::set_kind`].
    pub fn set_kind(&mut self, kind: OptimizerKind) -> Result<(), EngineError> {
        self.kind = checked_same_rule(self.kind, kind)?;
        Ok(())
    }

    /// Clips every later step's gradients to a global L2 norm of at most `max_norm`, as
    /// [`crate::Optimizer::clip_grad_norm`].
    pub fn clip_grad_norm(&mut self, max_norm: f32) -> Result<(), EngineError> {
        self.max_grad_norm = Some(checked_max_norm(max_norm)?);
        Ok(())
    }

    /// The global gradient norm steps are clipped to, if any.
    pub fn max_grad_norm(&self) -> Option<f32> {
        self.max_grad_norm
    }

    /// How many parameters it updates.
    pub fn len(&self) -> usize {
        self.first.len()
    }

    /// Whether it updates no parameter.
    pub fn is_empty(&self) -> bool {
        self.first.is_empty()
    }

    /// Applies one update to `params` from `gradients`, one per parameter (`None` for one
    /// that took no part in the pass, which is left unchanged). The gradients are clipped
    /// in place when a norm is set.
    pub fn step(
        &mut self,
        params: &mut [Vec<f32>],
        gradients: &mut [Option<Vec<f32>>],
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
        if let Some((i, (p, g))) = params
            .iter()
            .zip(gradients.iter())
            .enumerate()
            .find(|(_, (p, g))| g.as_ref().is_some_and(|g| g.len() != p.len()))
        {
            return Err(EngineError::Argument {
                op: "optimizer_step",
                detail: format!(
                    "parameter {i} has {} values and its gradient {}",
                    p.len(),
                    g.as_ref().map_or(0, Vec::len)
                ),
            });
        }
        self.step = self.step.saturating_add(1);
        if let Some(max_norm) = self.max_grad_norm {
            let scale = clip_scale(gradients, max_norm);
            if scale < 1.0 {
                for g in gradients.iter_mut().flatten() {
                    g.iter_mut().for_each(|g| *g *= scale);
                }
            }
        }
        let t = i32::try_from(self.step).unwrap_or(i32::MAX);
        for (i, (param, grad)) in params.iter_mut().zip(gradients.iter()).enumerate() {
            let Some(grad) = grad else {
                continue;
            };
            match self.kind {
                OptimizerKind::Sgd {
                    lr,
                    momentum,
                    weight_decay,
                } => {
                    if momentum > 0.0 {
                        // The heavy-ball buffer starts at the first gradient (PyTorch's).
                        let fresh = self.first[i].is_none();
                        let v = self.first[i].get_or_insert_with(|| vec![0.0; grad.len()]);
                        for ((p, &g), v) in param.iter_mut().zip(grad).zip(v.iter_mut()) {
                            let g = decayed(g, *p, weight_decay);
                            *v = if fresh { g } else { *v * momentum + g };
                            *p -= *v * lr;
                        }
                    } else {
                        for (p, &g) in param.iter_mut().zip(grad) {
                            *p -= decayed(g, *p, weight_decay) * lr;
                        }
                    }
                }
                OptimizerKind::Nesterov {
                    lr,
                    momentum,
                    weight_decay,
                } => {
                    let fresh = self.first[i].is_none();
                    let v = self.first[i].get_or_insert_with(|| vec![0.0; grad.len()]);
                    for ((p, &g), v) in param.iter_mut().zip(grad).zip(v.iter_mut()) {
                        let g = decayed(g, *p, weight_decay);
                        *v = if fresh { g } else { *v * momentum + g };
                        *p -= (g + *v * momentum) * lr;
                    }
                }
                OptimizerKind::RmsProp {
                    lr,
                    alpha,
                    eps,
                    weight_decay,
                } => {
                    let fresh = self.second[i].is_none();
                    let v = self.second[i].get_or_insert_with(|| vec![0.0; grad.len()]);
                    for ((p, &g), v) in param.iter_mut().zip(grad).zip(v.iter_mut()) {
                        let g = decayed(g, *p, weight_decay);
                        *v = blend(fresh, *v, g * g, alpha);
                        *p -= g / (v.sqrt() + eps) * lr;
                    }
                }
                OptimizerKind::Adam {
                    lr,
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                } => {
                    let moments = Moments::new(beta1, beta2, eps, t);
                    let fresh = self.first[i].is_none() || self.second[i].is_none();
                    let m = self.first[i].get_or_insert_with(|| vec![0.0; grad.len()]);
                    let v = self.second[i].get_or_insert_with(|| vec![0.0; grad.len()]);
                    for (((p, &g), m), v) in param
                        .iter_mut()
                        .zip(grad)
                        .zip(m.iter_mut())
                        .zip(v.iter_mut())
                    {
                        let g = decayed(g, *p, weight_decay);
                        *p -= moments.delta(fresh, g, m, v) * lr;
                    }
                }
                OptimizerKind::AdamW {
                    lr,
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                } => {
                    let moments = Moments::new(beta1, beta2, eps, t);
                    let shrink = 1.0 - lr * weight_decay;
                    let fresh = self.first[i].is_none() || self.second[i].is_none();
                    let m = self.first[i].get_or_insert_with(|| vec![0.0; grad.len()]);
                    let v = self.second[i].get_or_insert_with(|| vec![0.0; grad.len()]);
                    for (((p, &g), m), v) in param
                        .iter_mut()
                        .zip(grad)
                        .zip(m.iter_mut())
                        .zip(v.iter_mut())
                    {
                        let delta = moments.delta(fresh, g, m, v);
                        *p = *p * shrink - delta * lr;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Adam's decays and bias corrections at step `t`.
struct Moments {
    beta1: f32,
    beta2: f32,
    eps: f32,
    correct1: f32,
    correct2: f32,
}

impl Moments {
    fn new(beta1: f32, beta2: f32, eps: f32, t: i32) -> Self {
        Self {
            beta1,
            beta2,
            eps,
            correct1: 1.0 / (1.0 - beta1.powi(t)),
            correct2: 1.0 / (1.0 - beta2.powi(t)),
        }
    }

    /// The bias-corrected step direction for gradient `g`, updating the moments `m`, `v`.
    fn delta(&self, fresh: bool, g: f32, m: &mut f32, v: &mut f32) -> f32 {
        *m = blend(fresh, *m, g, self.beta1);
        *v = blend(fresh, *v, g * g, self.beta2);
        (*m * self.correct1) / ((*v * self.correct2).sqrt() + self.eps)
    }
}

/// `beta · previous + (1 − beta) · fresh`, starting from zero.
fn blend(first: bool, previous: f32, fresh: f32, beta: f32) -> f32 {
    let scaled = fresh * (1.0 - beta);
    if first {
        scaled
    } else {
        previous * beta + scaled
    }
}

/// The gradient with the L2 penalty on `value` added.
fn decayed(g: f32, value: f32, weight_decay: f32) -> f32 {
    if weight_decay > 0.0 {
        g + value * weight_decay
    } else {
        g
    }
}

/// The factor that brings the gradients' joint L2 norm to at most `max_norm` (1 if it is
/// already below).
fn clip_scale(gradients: &[Option<Vec<f32>>], max_norm: f32) -> f32 {
    let squares: f64 = gradients
        .iter()
        .flatten()
        .flat_map(|g| g.iter())
        .map(|&g| f64::from(g) * f64::from(g))
        .sum();
    let norm = squares.sqrt() as f32;
    if norm > max_norm {
        max_norm / (norm + 1e-6)
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Backend, DefaultBackend, Optimizer};

    /// Deterministic values in about [-1, 1].
    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 2001;
                x as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn kinds() -> [OptimizerKind; 7] {
        [
            OptimizerKind::Sgd {
                lr: 0.1,
                momentum: 0.0,
                weight_decay: 0.0,
            },
            OptimizerKind::Sgd {
                lr: 0.05,
                momentum: 0.9,
                weight_decay: 1e-3,
            },
            OptimizerKind::Nesterov {
                lr: 0.05,
                momentum: 0.9,
                weight_decay: 5e-4,
            },
            OptimizerKind::RmsProp {
                lr: 0.01,
                alpha: 0.99,
                eps: 1e-8,
                weight_decay: 1e-4,
            },
            OptimizerKind::Adam {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
            },
            OptimizerKind::Adam {
                lr: 2e-3,
                beta1: 0.8,
                beta2: 0.99,
                eps: 1e-6,
                weight_decay: 1e-2,
            },
            OptimizerKind::AdamW {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.98,
                eps: 1e-8,
                weight_decay: 0.01,
            },
        ]
    }

    /// Five steps of every rule, clipped and not, a parameter without a gradient in one of
    /// them: the flat optimizer ends where the engine's tensor optimizer does.
    #[test]
    fn every_rule_agrees_with_the_tensor_optimizer() -> Result<(), EngineError> {
        let engine = DefaultBackend::new();
        let lens = [37usize, 5, 1];
        for kind in kinds() {
            for clip in [None, Some(0.5)] {
                let mut flat_params: Vec<Vec<f32>> =
                    lens.iter().zip(1..).map(|(&l, s)| values(l, s)).collect();
                let mut tensors = flat_params
                    .iter()
                    .map(|v| engine.parameter(&[v.len()], v.clone()))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut flat = FlatOptimizer::new(kind, lens.len())?;
                let mut reference = Optimizer::<DefaultBackend>::new(kind, lens.len())?;
                if let Some(norm) = clip {
                    flat.clip_grad_norm(norm)?;
                    reference.clip_grad_norm(norm)?;
                }
                for step in 0..5u32 {
                    let mut grads: Vec<Option<Vec<f32>>> = lens
                        .iter()
                        .zip(10..)
                        .map(|(&l, s)| (step != 2 || l != 5).then(|| values(l, s * 7 + step)))
                        .collect();
                    let tensor_grads = grads
                        .iter()
                        .map(|g| {
                            g.clone()
                                .map(|g| engine.constant(&[g.len()], g))
                                .transpose()
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    reference.step_with(&engine, &mut tensors, tensor_grads)?;
                    flat.step(&mut flat_params, &mut grads)?;
                }
                for (flat, tensor) in flat_params.iter().zip(&tensors) {
                    let tensor = engine.read(tensor)?;
                    for (a, b) in flat.iter().zip(&tensor) {
                        assert!(
                            (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                            "{kind:?} clip {clip:?}: {a} against {b}"
                        );
                    }
                }
                let (a, b) = (flat.state(), reference.state(&engine)?);
                assert_eq!(
                    (a.kind, a.step, a.max_grad_norm),
                    (b.kind, b.step, b.max_grad_norm)
                );
                assert_eq!(
                    a.first.iter().map(Option::is_some).collect::<Vec<_>>(),
                    b.first.iter().map(Option::is_some).collect::<Vec<_>>()
                );
            }
        }
        Ok(())
    }

    #[test]
    fn a_state_continues_where_it_was_saved_and_a_misfit_is_refused() -> Result<(), EngineError> {
        let kind = kinds()[4];
        let mut params = vec![values(8, 1)];
        let mut optimizer = FlatOptimizer::new(kind, 1)?;
        optimizer.step(&mut params, &mut [Some(values(8, 2))])?;
        let mut resumed = FlatOptimizer::from_state(optimizer.state(), &[8])?;
        let mut again = params.clone();
        optimizer.step(&mut params, &mut [Some(values(8, 3))])?;
        resumed.step(&mut again, &mut [Some(values(8, 3))])?;
        assert_eq!(params, again);
        assert!(FlatOptimizer::from_state(optimizer.state(), &[9]).is_err());
        assert!(FlatOptimizer::from_state(optimizer.state(), &[8, 8]).is_err());
        assert!(
            optimizer
                .step(&mut params, &mut [Some(values(7, 3))])
                .is_err()
        );
        assert!(optimizer.set_kind(kinds()[0]).is_err());
        Ok(())
    }
}
