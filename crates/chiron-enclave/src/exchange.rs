//! The engine's optimizer rules in the exchange's wire form (`chiron_proto::exchange`).

use chiron_engine::OptimizerKind;
pub use chiron_proto::exchange::{
    ParametersAnswer, Rule, ToServer, ToWorker, fits, frame, pad, pad_into, unpad,
};

/// The engine's optimizer rules on the wire.
pub trait RuleExt: Sized {
    /// The wire form of `kind`; `None` for a rule this runtime version cannot send.
    fn from_kind(kind: OptimizerKind) -> Option<Self>;
    /// The engine's form, or `None` for an unknown tag.
    fn kind(self) -> Option<OptimizerKind>;
}

impl RuleExt for Rule {
    fn from_kind(kind: OptimizerKind) -> Option<Self> {
        let (tag, values) = match kind {
            OptimizerKind::Sgd {
                lr,
                momentum,
                weight_decay,
            } => (0, [lr, momentum, weight_decay, 0.0, 0.0]),
            OptimizerKind::Adam {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
            } => (1, [lr, beta1, beta2, eps, weight_decay]),
            OptimizerKind::Nesterov {
                lr,
                momentum,
                weight_decay,
            } => (2, [lr, momentum, weight_decay, 0.0, 0.0]),
            OptimizerKind::AdamW {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
            } => (3, [lr, beta1, beta2, eps, weight_decay]),
            OptimizerKind::RmsProp {
                lr,
                alpha,
                eps,
                weight_decay,
            } => (4, [lr, alpha, eps, weight_decay, 0.0]),
            _ => return None,
        };
        Some(Self { tag, values })
    }

    fn kind(self) -> Option<OptimizerKind> {
        let [a, b, c, d, e] = self.values;
        Some(match self.tag {
            0 => OptimizerKind::Sgd {
                lr: a,
                momentum: b,
                weight_decay: c,
            },
            1 => OptimizerKind::Adam {
                lr: a,
                beta1: b,
                beta2: c,
                eps: d,
                weight_decay: e,
            },
            2 => OptimizerKind::Nesterov {
                lr: a,
                momentum: b,
                weight_decay: c,
            },
            3 => OptimizerKind::AdamW {
                lr: a,
                beta1: b,
                beta2: c,
                eps: d,
                weight_decay: e,
            },
            4 => OptimizerKind::RmsProp {
                lr: a,
                alpha: b,
                eps: c,
                weight_decay: d,
            },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_survives_the_wire() {
        let kinds = [
            OptimizerKind::Sgd {
                lr: 0.1,
                momentum: 0.9,
                weight_decay: 1e-4,
            },
            OptimizerKind::Adam {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
            },
            OptimizerKind::Nesterov {
                lr: 0.05,
                momentum: 0.9,
                weight_decay: 5e-4,
            },
            OptimizerKind::AdamW {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.98,
                eps: 1e-8,
                weight_decay: 0.01,
            },
            OptimizerKind::RmsProp {
                lr: 0.01,
                alpha: 0.99,
                eps: 1e-8,
                weight_decay: 0.0,
            },
        ];
        for kind in kinds {
            let rule = Rule::from_kind(kind).expect("known");
            assert_eq!(rule.kind(), Some(kind));
        }
        assert_eq!(
            Rule {
                tag: 9,
                values: [0.0; 5]
            }
            .kind(),
            None
        );
    }
}
