//! Code shared by the hostile fixtures in `programs/hostile/*`: not a program itself (it
//! exports neither `chiron_train` nor `chiron_predict`).
//!
//! Many fixtures hide their attack around an honest job: they read a [`secret_bit`], train
//! a linear layer `features → classes` with one SGD step ([`Linear`]) and answer queries
//! with its scores ([`predict_linear`]).
//!
//! Everything here makes exactly the host calls, in exactly the order, that the same code
//! written out in a fixture would: the runtime's seeded random stream depends on the order
//! in which parameters are created, and freeing a tensor (dropping it) is a host call too.
//! That is why [`Linear`] keeps the optimiser and the training batch alive, not just the
//! weights, and why a fixture binds it to a name until the end of `train`.

use chiron_sdk::{Dataset, Init, Optimizer, Split, Tensor, model};

/// Training examples in the batch of the one SGD step.
pub const BATCH: u32 = 32;

/// The secret bit: the parity of training example 0's label.
pub fn secret_bit() -> bool {
    let (_, labels) = Dataset::batch(Split::Train, &[0]);
    (labels.to_vec()[0] as u32) & 1 == 1
}

/// Fresh parameters `(w, b)` of a linear layer `features → classes` (`w`: `[features,
/// classes]`, `b`: `[classes]`, both with PyTorch's default initialisation), in that order
/// from the runtime's random stream.
pub fn linear_parameters() -> (Tensor, Tensor) {
    let features: u32 = Dataset::dims().iter().product();
    let classes = Dataset::classes();
    let w = Tensor::parameter(&[features, classes], Init::torch_default(features));
    let b = Tensor::parameter(&[classes], Init::torch_default(features));
    (w, b)
}

/// A linear layer `features → classes` trained with plain SGD (learning rate 0.1) on the
/// first [`BATCH`] (or fewer) training examples, together with its optimiser and that
/// batch.
///
/// Dropping it frees, in this order, the labels, the features, the optimiser, `b` and `w`:
/// the order in which the runtime would free them as locals of `train`.
#[derive(Debug)]
#[must_use = "dropping it frees the model; keep it until the end of `train`"]
pub struct Linear {
    // Fields drop in declaration order: the reverse of their creation.
    /// Labels of the batch.
    y: Tensor,
    /// Features of the batch.
    x: Tensor,
    /// SGD over `[w, b]`.
    opt: Optimizer,
    /// Bias `[classes]`.
    b: Tensor,
    /// Weights `[features, classes]`.
    w: Tensor,
}

impl Linear {
    /// Sets up training of the parameters `w` and `b` (from [`linear_parameters`]): creates
    /// the optimiser, then reads the batch. Takes no step.
    pub fn with_parameters(w: Tensor, b: Tensor) -> Linear {
        let opt = Optimizer::sgd(&[&w, &b], 0.1, 0.0, 0.0);
        let indices: Vec<u32> = (0..Dataset::count(Split::Train).min(BATCH)).collect();
        let (x, y) = Dataset::batch(Split::Train, &indices);
        Linear { y, x, opt, b, w }
    }

    /// Fresh parameters, trained with one SGD step; not saved.
    pub fn train() -> Linear {
        let (w, b) = linear_parameters();
        let mut linear = Linear::with_parameters(w, b);
        linear.step();
        linear
    }

    /// Fresh parameters, trained with one SGD step and saved as the model `[w, b]`.
    pub fn train_and_save() -> Linear {
        let linear = Linear::train();
        linear.save();
        linear
    }

    /// One SGD step on the cross-entropy loss of the batch; the loss and the intermediate
    /// tensors are temporaries, freed after the step (one statement, on purpose).
    pub fn step(&mut self) {
        self.opt.step(
            &self
                .x
                .flatten()
                .linear(&self.w, Some(&self.b))
                .cross_entropy(&self.y),
        );
    }

    /// One SGD step on the cross-entropy loss of the batch, returning the loss `[1]`; the
    /// intermediate tensors are freed before the step.
    pub fn step_keeping_loss(&mut self) -> Tensor {
        let loss = self
            .x
            .flatten()
            .linear(&self.w, Some(&self.b))
            .cross_entropy(&self.y);
        self.opt.step(&loss);
        loss
    }

    /// Saves the model `[w, b]` (metadata `linear`), which [`predict_linear`] answers with.
    pub fn save(&self) {
        chiron_sdk::save_model(&[&self.w, &self.b], b"linear");
    }

    /// The weights `[features, classes]`.
    pub fn weight(&self) -> &Tensor {
        &self.w
    }

    /// The bias `[classes]`.
    pub fn bias(&self) -> &Tensor {
        &self.b
    }
}

/// Answers the query with the saved linear layer's scores `[N, classes]`: the flattened
/// input times model tensor 0 (`w`), plus model tensor 1 (`b`).
pub fn predict_linear() {
    let (w, b) = (model::tensor(0), model::tensor(1));
    let x = chiron_sdk::query_input().flatten();
    chiron_sdk::set_output(&x.linear(&w, Some(&b)));
}

/// Spins for `steps` steps of an LCG from `seed`, each through `black_box` so the loop can
/// neither be skipped nor folded; about 2.5 ns a step in the sandbox.
pub fn spin(steps: u64, seed: u64) -> u64 {
    let mut x = seed;
    for _ in 0..steps {
        x = std::hint::black_box(
            x.wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407),
        );
    }
    x
}
