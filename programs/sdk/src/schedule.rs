//! Learning-rate schedules, early stopping and keeping the best model: the loop helpers an
//! ML engineer reaches for, driven by the program's own counts (no clock).
//!
//! ```no_run
//! use chiron_sdk::schedule::{BestModel, EarlyStopping, OneCycle, Schedule};
//! # let (epochs, steps_per_epoch) = (10, 100);
//! let schedule = OneCycle::new(3e-3, epochs * steps_per_epoch);
//! let mut stopping = EarlyStopping::new(3);
//! let mut best = BestModel::new();
//! for epoch in 0..epochs {
//!     for step in 0..steps_per_epoch {
//!         let lr = schedule.lr(epoch * steps_per_epoch + step);
//!         // opt.set_lr(lr); ... opt.step(&loss);
//!         # let _ = lr;
//!     }
//!     let accuracy = 0.9; // measured on the validation split
//!     best.observe(accuracy, || { /* nn::save(&net, &meta) */ });
//!     if stopping.should_stop(accuracy) {
//!         break;
//!     }
//! }
//! ```

use std::f32::consts::PI;

/// `cos`, computed by the same code in the sandbox and natively (see `Cargo.toml`).
fn cos(x: f32) -> f32 {
    libm::cosf(x)
}

/// A learning rate for each optimizer step, counted from 0.
pub trait Schedule {
    /// The learning rate at `step`.
    fn lr(&self, step: u32) -> f32;
}

/// The same rate throughout.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Constant(pub f32);

impl Schedule for Constant {
    fn lr(&self, _step: u32) -> f32 {
        self.0
    }
}

/// The rate multiplied by `gamma` every `every` steps (PyTorch's `StepLR`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepDecay {
    /// The first rate.
    pub base: f32,
    /// Steps between two decays.
    pub every: u32,
    /// The factor of each decay.
    pub gamma: f32,
}

impl Schedule for StepDecay {
    fn lr(&self, step: u32) -> f32 {
        let decays = step.checked_div(self.every).unwrap_or(0);
        self.base * self.gamma.powi(decays.min(i32::MAX as u32) as i32)
    }
}

/// A linear warm-up from 0 over `warmup` steps, then a cosine decay from `base` to `min` at
/// step `total` (and `min` after it): the schedule of most transformer recipes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WarmupCosine {
    /// The peak rate, reached at the end of the warm-up.
    pub base: f32,
    /// The final rate.
    pub min: f32,
    /// Steps of linear warm-up.
    pub warmup: u32,
    /// The step the decay ends at.
    pub total: u32,
}

impl Schedule for WarmupCosine {
    fn lr(&self, step: u32) -> f32 {
        if step < self.warmup {
            return self.base * (step + 1) as f32 / self.warmup as f32;
        }
        let span = self.total.saturating_sub(self.warmup).max(1);
        let t = ((step - self.warmup) as f32 / span as f32).min(1.0);
        self.min + 0.5 * (self.base - self.min) * (1.0 + cos(PI * t))
    }
}

/// The one-cycle policy (PyTorch's `OneCycleLR` with its defaults): from `max / 25` up to
/// `max` over the first 30% of `total` steps along a cosine, then down to `max / 25e4`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OneCycle {
    /// The peak rate.
    pub max: f32,
    /// Steps in the whole run.
    pub total: u32,
}

impl OneCycle {
    /// A cycle peaking at `max` over `total` steps.
    pub fn new(max: f32, total: u32) -> OneCycle {
        OneCycle { max, total }
    }
}

impl Schedule for OneCycle {
    fn lr(&self, step: u32) -> f32 {
        let (start, end) = (self.max / 25.0, self.max / 25.0 / 1e4);
        let total = self.total.max(2) as f32;
        let peak = (0.3 * total).max(1.0);
        let s = step as f32;
        let anneal = |from: f32, to: f32, t: f32| to + 0.5 * (from - to) * (1.0 + cos(PI * t));
        if s <= peak {
            anneal(start, self.max, s / peak)
        } else {
            anneal(
                self.max,
                end,
                ((s - peak) / (total - 1.0 - peak).max(1.0)).min(1.0),
            )
        }
    }
}

/// Stops training once a metric to maximise (an accuracy) has not improved for `patience`
/// evaluations in a row.
#[derive(Clone, Debug, PartialEq)]
pub struct EarlyStopping {
    patience: u32,
    best: Option<f32>,
    since_best: u32,
}

impl EarlyStopping {
    /// Stops after `patience` evaluations without improvement.
    pub fn new(patience: u32) -> EarlyStopping {
        EarlyStopping {
            patience,
            best: None,
            since_best: 0,
        }
    }

    /// Records one evaluation; `true` when training should stop. A `NaN` never improves.
    pub fn should_stop(&mut self, metric: f32) -> bool {
        if self.best.is_none_or(|best| metric > best) {
            self.best = Some(metric);
            self.since_best = 0;
        } else {
            self.since_best += 1;
        }
        self.since_best >= self.patience
    }

    /// The best value seen.
    pub fn best(&self) -> Option<f32> {
        self.best
    }
}

/// Keeps the best model: runs `save` whenever a metric to maximise improves, so the job's
/// model is the best one seen rather than the last.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BestModel {
    best: Option<f32>,
}

impl BestModel {
    /// Nothing seen yet.
    pub fn new() -> BestModel {
        BestModel::default()
    }

    /// Records `metric`; calls `save` and returns `true` if it is the best so far.
    pub fn observe(&mut self, metric: f32, save: impl FnOnce()) -> bool {
        if self.best.is_some_and(|best| metric <= best) || metric.is_nan() {
            return false;
        }
        self.best = Some(metric);
        save();
        true
    }

    /// The best value seen.
    pub fn best(&self) -> Option<f32> {
        self.best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cycle_rises_then_falls() {
        let s = OneCycle::new(1.0, 100);
        assert!((s.lr(0) - 0.04).abs() < 1e-6);
        assert!((s.lr(30) - 1.0).abs() < 1e-6);
        assert!(s.lr(60) < s.lr(40));
        assert!(s.lr(99) < 1e-4);
    }

    #[test]
    fn warmup_then_cosine() {
        let s = WarmupCosine {
            base: 1.0,
            min: 0.1,
            warmup: 10,
            total: 110,
        };
        assert!((s.lr(0) - 0.1).abs() < 1e-6);
        assert!((s.lr(9) - 1.0).abs() < 1e-6);
        assert!((s.lr(60) - 0.55).abs() < 1e-5);
        assert!((s.lr(500) - 0.1).abs() < 1e-6);
        let step = StepDecay {
            base: 1.0,
            every: 10,
            gamma: 0.5,
        };
        assert_eq!((step.lr(9), step.lr(10), step.lr(25)), (1.0, 0.5, 0.25));
    }

    #[test]
    fn stopping_counts_evaluations_without_improvement() {
        let mut s = EarlyStopping::new(2);
        assert!(!s.should_stop(0.5));
        assert!(!s.should_stop(0.6));
        assert!(!s.should_stop(0.6));
        assert!(s.should_stop(f32::NAN));
        assert_eq!(s.best(), Some(0.6));
        let mut best = BestModel::new();
        let mut saves = 0;
        for m in [0.5, 0.4, 0.7, f32::NAN, 0.7] {
            best.observe(m, || saves += 1);
        }
        assert_eq!((saves, best.best()), (2, Some(0.7)));
    }
}
