//! Layers in the shape ML engineers know from PyTorch's `torch.nn`: modules that hold their
//! parameters, switch between training and evaluation, and save and load as one list of
//! tensors.
//!
//! ```no_run
//! use chiron_sdk::nn::{BatchNorm, Conv2d, Linear, Module, Sequential};
//! use chiron_sdk::{Optimizer, Tensor};
//!
//! let mut net = Sequential::new()
//!     .push(Conv2d::new(1, 16, [3, 3]).padding([1, 1]).bias(false))
//!     .push(BatchNorm::new_2d(16))
//!     .push_fn(Tensor::relu)
//!     .push_fn(Tensor::global_avg_pool2d)
//!     .push_fn(Tensor::flatten)
//!     .push(Linear::new(16, 10));
//! let mut opt = Optimizer::adamw(&net.parameters(), 1e-3, 0.9, 0.999, 1e-8, 1e-2);
//! # let (x, y) = (Tensor::new(&[0.0; 784], &[1, 1, 28, 28]), Tensor::new(&[3.0], &[1]));
//! let loss = net.forward(&x).cross_entropy(&y);
//! opt.step(&loss);
//! net.set_training(false);
//! let logits = chiron_sdk::no_grad(|| net.forward(&x));
//! ```
//!
//! A module's [`Module::state`] lists every tensor it holds (parameters, then buffers such as
//! batch norm's running statistics) in a fixed order; [`save`] writes that list as the job's
//! model and [`load`] puts a saved model back into a module built with the same
//! architecture. [`Module::parameters`] lists only what an [`Optimizer`](crate::Optimizer)
//! should train.

use crate::{Dataset, Init, Split, Tensor, model};

/// A layer or a network of layers.
pub trait Module {
    /// The output for `x`. In training mode it may update the module's buffers (batch
    /// norm's running statistics) and draw from the runtime's seeded stream (dropout).
    fn forward(&mut self, x: &Tensor) -> Tensor;

    /// The trainable parameters, in a fixed order.
    fn parameters(&self) -> Vec<&Tensor>;

    /// Every tensor the module holds, in the order [`save`] writes and [`Module::load_state`]
    /// reads: the parameters, then any buffers.
    fn state(&self) -> Vec<&Tensor> {
        self.parameters()
    }

    /// Replaces the module's tensors, in [`Module::state`]'s order, with the next ones from
    /// `tensors`.
    ///
    /// # Panics
    /// If `tensors` runs out or a tensor's shape differs from the one it replaces.
    fn load_state(&mut self, tensors: &mut dyn Iterator<Item = Tensor>);

    /// Training mode (`true`, the default) or evaluation mode: dropout off, batch norm on
    /// its running statistics.
    fn set_training(&mut self, training: bool) {
        let _ = training;
    }
}

/// Takes the next tensor from `tensors` in place of `slot`, checking its shape.
fn replace(slot: &mut Tensor, tensors: &mut dyn Iterator<Item = Tensor>, what: &str) {
    let next = tensors
        .next()
        .unwrap_or_else(|| panic!("the saved model ends before {what}"));
    let (want, got) = (slot.shape(), next.shape());
    assert_eq!(
        want, got,
        "the saved model's {what} is {got:?}, the module expects {want:?}"
    );
    *slot = next;
}

/// Saves `module`'s [state](Module::state) and `meta` (the architecture, at most 64 KiB) as
/// the job's model. The last save wins.
pub fn save(module: &dyn Module, meta: &[u8]) {
    crate::save_model(&module.state(), meta);
}

/// Loads the job's saved model into `module`, which must have the architecture it was saved
/// from, and puts it in evaluation mode.
///
/// # Panics
/// If the saved tensors do not match the module's, in number or shapes.
pub fn load(module: &mut dyn Module) {
    let mut tensors = model::tensors().into_iter();
    module.load_state(&mut tensors);
    assert!(
        tensors.next().is_none(),
        "the saved model holds more tensors than the module"
    );
    module.set_training(false);
}

/// How many examples of `split` `module` classifies correctly, in evaluation mode and
/// without gradients, `batch` examples per forward pass; the module is back in training
/// mode afterwards.
pub fn count_correct(module: &mut dyn Module, split: Split, batch: usize) -> u32 {
    module.set_training(false);
    let correct = crate::no_grad(|| {
        Dataset::indices(split)
            .chunks(batch.max(1))
            .map(|chunk| {
                let (x, y) = Dataset::batch(split, chunk);
                module.forward(&x).count_correct(&y)
            })
            .sum()
    });
    module.set_training(true);
    correct
}

/// `y = x · W + b` over the last axis, any leading axes kept (PyTorch's `nn.Linear`, with
/// `W` stored `[in, out]`).
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// A layer from `inputs` to `outputs` features with PyTorch's default initialisation.
    pub fn new(inputs: u32, outputs: u32) -> Linear {
        Linear {
            weight: Tensor::parameter(&[inputs, outputs], Init::torch_default(inputs)),
            bias: Some(Tensor::parameter(&[outputs], Init::torch_default(inputs))),
        }
    }

    /// The same layer without a bias.
    pub fn without_bias(mut self) -> Linear {
        self.bias = None;
        self
    }

    /// The weight, `[in, out]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl Module for Linear {
    fn forward(&mut self, x: &Tensor) -> Tensor {
        let shape = x.shape();
        let inputs = self.weight.shape()[0];
        if shape.len() == 2 {
            return x.linear(&self.weight, self.bias.as_ref());
        }
        let rows = shape.iter().product::<u32>() / inputs;
        let y = x
            .reshape(&[rows, inputs])
            .linear(&self.weight, self.bias.as_ref());
        let mut out = shape;
        if let Some(last) = out.last_mut() {
            *last = self.weight.shape()[1];
        }
        y.reshape(&out)
    }

    fn parameters(&self) -> Vec<&Tensor> {
        let mut p = vec![&self.weight];
        p.extend(self.bias.as_ref());
        p
    }

    fn load_state(&mut self, tensors: &mut dyn Iterator<Item = Tensor>) {
        replace(&mut self.weight, tensors, "linear weight");
        if let Some(b) = &mut self.bias {
            replace(b, tensors, "linear bias");
        }
    }
}

/// A 2-D convolution over `[N, C, H, W]` with PyTorch's `nn.Conv2d` geometry.
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: [u32; 2],
    padding: [u32; 2],
    dilation: [u32; 2],
    groups: u32,
}

impl Conv2d {
    /// `inputs` to `outputs` channels with a `kernel` (`[height, width]`), stride 1, no
    /// padding, a bias, PyTorch's default initialisation.
    pub fn new(inputs: u32, outputs: u32, kernel: [u32; 2]) -> Conv2d {
        let fan_in = inputs * kernel[0] * kernel[1];
        Conv2d {
            weight: Tensor::parameter(
                &[outputs, inputs, kernel[0], kernel[1]],
                Init::torch_default(fan_in),
            ),
            bias: Some(Tensor::parameter(&[outputs], Init::torch_default(fan_in))),
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        }
    }

    /// Step between windows.
    pub fn stride(mut self, stride: [u32; 2]) -> Conv2d {
        self.stride = stride;
        self
    }

    /// Zeros on each side.
    pub fn padding(mut self, padding: [u32; 2]) -> Conv2d {
        self.padding = padding;
        self
    }

    /// Spacing between kernel taps.
    pub fn dilation(mut self, dilation: [u32; 2]) -> Conv2d {
        self.dilation = dilation;
        self
    }

    /// Channel groups: the weight becomes `[out, in / groups, kh, kw]` (re-initialised for
    /// its smaller fan-in). `groups = in` is a depthwise convolution.
    ///
    /// # Panics
    /// If `groups` does not divide both channel counts.
    pub fn groups(mut self, groups: u32) -> Conv2d {
        let [outputs, inputs, kh, kw] = self.weight.shape()[..] else {
            unreachable!("a convolution weight has rank 4")
        };
        assert!(
            groups > 0 && inputs.is_multiple_of(groups) && outputs.is_multiple_of(groups),
            "{groups} groups must divide {inputs} input and {outputs} output channels"
        );
        let fan_in = inputs / groups * kh * kw;
        self.weight = Tensor::parameter(
            &[outputs, inputs / groups, kh, kw],
            Init::torch_default(fan_in),
        );
        if self.bias.is_some() {
            self.bias = Some(Tensor::parameter(&[outputs], Init::torch_default(fan_in)));
        }
        self.groups = groups;
        self
    }

    /// With a bias (`true`, the default) or without one (before a batch norm).
    pub fn bias(mut self, bias: bool) -> Conv2d {
        if !bias {
            self.bias = None;
        }
        self
    }

    /// Re-initialises the weight with `init` (for example He initialisation for a ReLU
    /// network: [`Init::KaimingUniform`]).
    pub fn init(mut self, init: Init) -> Conv2d {
        self.weight = Tensor::parameter(&self.weight.shape(), init);
        self
    }
}

impl Module for Conv2d {
    fn forward(&mut self, x: &Tensor) -> Tensor {
        x.conv2d_ex(
            &self.weight,
            self.bias.as_ref(),
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
        )
    }

    fn parameters(&self) -> Vec<&Tensor> {
        let mut p = vec![&self.weight];
        p.extend(self.bias.as_ref());
        p
    }

    fn load_state(&mut self, tensors: &mut dyn Iterator<Item = Tensor>) {
        replace(&mut self.weight, tensors, "convolution weight");
        if let Some(b) = &mut self.bias {
            replace(b, tensors, "convolution bias");
        }
    }
}

/// Batch normalisation (PyTorch's `nn.BatchNorm1d` over `[N, C]` and `nn.BatchNorm2d` over
/// `[N, C, H, W]`): normalises each channel over the batch (and the image) in training and
/// keeps running statistics (momentum 0.1, unbiased variance) for evaluation.
pub struct BatchNorm {
    gamma: Tensor,
    beta: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    /// The shape a per-channel vector takes to broadcast over the input.
    broadcast: Vec<u32>,
    axes: Vec<u32>,
    eps: f32,
    momentum: f32,
    training: bool,
}

impl BatchNorm {
    fn new(channels: u32, broadcast: Vec<u32>, axes: Vec<u32>) -> BatchNorm {
        let c = channels as usize;
        BatchNorm {
            gamma: Tensor::parameter(&[channels], Init::Constant(1.0)),
            beta: Tensor::parameter(&[channels], Init::Zeros),
            running_mean: Tensor::new(&vec![0.0; c], &[channels]),
            running_var: Tensor::new(&vec![1.0; c], &[channels]),
            broadcast,
            axes,
            eps: 1e-5,
            momentum: 0.1,
            training: true,
        }
    }

    /// Over `[N, channels]`.
    pub fn new_1d(channels: u32) -> BatchNorm {
        BatchNorm::new(channels, vec![1, channels], vec![0])
    }

    /// Over `[N, channels, H, W]`.
    pub fn new_2d(channels: u32) -> BatchNorm {
        BatchNorm::new(channels, vec![1, channels, 1, 1], vec![0, 2, 3])
    }

    /// Starts the scale at zero instead of one: the "zero-init" of a residual branch's last
    /// batch norm, so that each residual block starts as the identity.
    pub fn zero_init(mut self) -> BatchNorm {
        let c = self.gamma.shape()[0];
        self.gamma = Tensor::parameter(&[c], Init::Zeros);
        self
    }
}

impl Module for BatchNorm {
    fn forward(&mut self, x: &Tensor) -> Tensor {
        let gamma = self.gamma.reshape(&self.broadcast);
        let beta = self.beta.reshape(&self.broadcast);
        if !self.training {
            // (x - mean) / sqrt(var + eps) · γ + β as one scale and one shift per channel.
            let inv_std = self.running_var.affine(1.0, self.eps).sqrt();
            let scale = gamma.div(&inv_std.reshape(&self.broadcast));
            let shift = beta.sub(&self.running_mean.reshape(&self.broadcast).mul(&scale));
            return x.mul(&scale).add(&shift);
        }
        let (normalized, mean, var) = x.normalize(&self.axes, self.eps);
        let shape = x.shape();
        let count: u32 = self.axes.iter().map(|&a| shape[a as usize]).product();
        let channels = self.gamma.shape();
        let m = self.momentum;
        // PyTorch keeps the unbiased variance for evaluation.
        let unbiased = if count > 1 {
            count as f32 / (count - 1) as f32
        } else {
            1.0
        };
        self.running_mean = self
            .running_mean
            .affine(1.0 - m, 0.0)
            .add(&mean.reshape(&channels).affine(m, 0.0));
        self.running_var = self
            .running_var
            .affine(1.0 - m, 0.0)
            .add(&var.reshape(&channels).affine(m * unbiased, 0.0));
        normalized.mul(&gamma).add(&beta)
    }

    fn parameters(&self) -> Vec<&Tensor> {
        vec![&self.gamma, &self.beta]
    }

    fn state(&self) -> Vec<&Tensor> {
        vec![
            &self.gamma,
            &self.beta,
            &self.running_mean,
            &self.running_var,
        ]
    }

    fn load_state(&mut self, tensors: &mut dyn Iterator<Item = Tensor>) {
        replace(&mut self.gamma, tensors, "batch norm scale");
        replace(&mut self.beta, tensors, "batch norm shift");
        replace(&mut self.running_mean, tensors, "batch norm running mean");
        replace(
            &mut self.running_var,
            tensors,
            "batch norm running variance",
        );
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
}

/// Layer normalisation over the last axis (PyTorch's `nn.LayerNorm(features)`), with a
/// learned scale and shift.
pub struct LayerNorm {
    gamma: Tensor,
    beta: Tensor,
    eps: f32,
}

impl LayerNorm {
    /// Over a last axis of `features`.
    pub fn new(features: u32) -> LayerNorm {
        LayerNorm {
            gamma: Tensor::parameter(&[features], Init::Constant(1.0)),
            beta: Tensor::parameter(&[features], Init::Zeros),
            eps: 1e-5,
        }
    }
}

impl Module for LayerNorm {
    fn forward(&mut self, x: &Tensor) -> Tensor {
        let last = x.shape().len() as u32 - 1;
        let (normalized, _mean, _var) = x.normalize(&[last], self.eps);
        normalized.mul(&self.gamma).add(&self.beta)
    }

    fn parameters(&self) -> Vec<&Tensor> {
        vec![&self.gamma, &self.beta]
    }

    fn load_state(&mut self, tensors: &mut dyn Iterator<Item = Tensor>) {
        replace(&mut self.gamma, tensors, "layer norm scale");
        replace(&mut self.beta, tensors, "layer norm shift");
    }
}

/// Inverted dropout (PyTorch's `nn.Dropout`): in training, zeroes each value with
/// probability `p` (from the job's seeded stream) and scales the rest by `1 / (1 - p)`; the
/// identity in evaluation.
pub struct Dropout {
    p: f32,
    training: bool,
}

impl Dropout {
    /// Drops with probability `p` in `[0, 1)`.
    ///
    /// # Panics
    /// If `p` is outside `[0, 1)`.
    pub fn new(p: f32) -> Dropout {
        assert!(
            (0.0..1.0).contains(&p),
            "dropout probability {p} outside [0, 1)"
        );
        Dropout { p, training: true }
    }
}

impl Module for Dropout {
    fn forward(&mut self, x: &Tensor) -> Tensor {
        if self.training && self.p > 0.0 {
            x.dropout(self.p)
        } else {
            x.affine(1.0, 0.0)
        }
    }

    fn parameters(&self) -> Vec<&Tensor> {
        Vec::new()
    }

    fn load_state(&mut self, _tensors: &mut dyn Iterator<Item = Tensor>) {}

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
}

/// A lookup table of `count` vectors of `dim` values (PyTorch's `nn.Embedding`): ids
/// `[...]` (integers as `f32`) become `[..., dim]`.
pub struct Embedding {
    table: Tensor,
}

impl Embedding {
    /// `count` vectors of `dim`, initialised from a standard normal distribution (PyTorch's
    /// default).
    pub fn new(count: u32, dim: u32) -> Embedding {
        Embedding {
            table: Tensor::parameter(&[count, dim], Init::Normal(1.0)),
        }
    }

    /// The same table initialised normal with standard deviation `std` (0.02 in BERT and
    /// ViT).
    pub fn with_std(count: u32, dim: u32, std: f32) -> Embedding {
        Embedding {
            table: Tensor::parameter(&[count, dim], Init::Normal(std)),
        }
    }
}

impl Module for Embedding {
    fn forward(&mut self, ids: &Tensor) -> Tensor {
        let mut shape = ids.shape();
        let count: u32 = shape.iter().product();
        let rows = self.table.index_select(0, &ids.reshape(&[count]));
        shape.push(self.table.shape()[1]);
        rows.reshape(&shape)
    }

    fn parameters(&self) -> Vec<&Tensor> {
        vec![&self.table]
    }

    fn load_state(&mut self, tensors: &mut dyn Iterator<Item = Tensor>) {
        replace(&mut self.table, tensors, "embedding table");
    }
}

/// Multi-head self-attention over `[batch, tokens, dim]` (PyTorch's
/// `nn.MultiheadAttention(dim, heads, batch_first=True)` with the same input as query, key
/// and value): `softmax(Q Kᵀ / √d) V` per head, then an output projection.
pub struct MultiHeadAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    heads: u32,
    dropout: Dropout,
}

impl MultiHeadAttention {
    /// `heads` heads over `dim` features, attention weights dropped with probability
    /// `dropout` in training.
    ///
    /// # Panics
    /// If `heads` does not divide `dim`.
    pub fn new(dim: u32, heads: u32, dropout: f32) -> MultiHeadAttention {
        assert!(
            heads > 0 && dim.is_multiple_of(heads),
            "{heads} heads must divide the model width {dim}"
        );
        MultiHeadAttention {
            query: Linear::new(dim, dim),
            key: Linear::new(dim, dim),
            value: Linear::new(dim, dim),
            output: Linear::new(dim, dim),
            heads,
            dropout: Dropout::new(dropout),
        }
    }
}

/// `[b, t, d]` as `[b, heads, t, d / heads]`.
fn split_heads(x: &Tensor, heads: u32, [b, t, d]: [u32; 3]) -> Tensor {
    x.reshape(&[b, t, heads, d / heads]).permute(&[0, 2, 1, 3])
}

impl Module for MultiHeadAttention {
    fn forward(&mut self, x: &Tensor) -> Tensor {
        let shape = x.shape();
        let [b, t, d] = shape[..] else {
            panic!("attention takes [batch, tokens, dim], not {shape:?}")
        };
        let q = split_heads(&self.query.forward(x), self.heads, [b, t, d]);
        let k = split_heads(&self.key.forward(x), self.heads, [b, t, d]);
        let v = split_heads(&self.value.forward(x), self.heads, [b, t, d]);
        let scale = 1.0 / ((d / self.heads) as f32).sqrt();
        let scores = q.matmul(&k.transpose(2, 3)).affine(scale, 0.0).softmax();
        let attended = self.dropout.forward(&scores).matmul(&v);
        let merged = attended.permute(&[0, 2, 1, 3]).reshape(&[b, t, d]);
        self.output.forward(&merged)
    }

    fn parameters(&self) -> Vec<&Tensor> {
        [&self.query, &self.key, &self.value, &self.output]
            .into_iter()
            .flat_map(|l| l.parameters())
            .collect()
    }

    fn load_state(&mut self, tensors: &mut dyn Iterator<Item = Tensor>) {
        for l in [
            &mut self.query,
            &mut self.key,
            &mut self.value,
            &mut self.output,
        ] {
            l.load_state(tensors);
        }
    }

    fn set_training(&mut self, training: bool) {
        self.dropout.set_training(training);
    }
}

/// A function of one tensor as a module without parameters (`Tensor::relu`,
/// `Tensor::flatten`, a closure).
pub struct Func<F: Fn(&Tensor) -> Tensor>(pub F);

impl<F: Fn(&Tensor) -> Tensor> Module for Func<F> {
    fn forward(&mut self, x: &Tensor) -> Tensor {
        (self.0)(x)
    }

    fn parameters(&self) -> Vec<&Tensor> {
        Vec::new()
    }

    fn load_state(&mut self, _tensors: &mut dyn Iterator<Item = Tensor>) {}
}

/// Modules applied one after the other (PyTorch's `nn.Sequential`).
#[derive(Default)]
pub struct Sequential {
    layers: Vec<Box<dyn Module>>,
}

impl Sequential {
    /// No layers yet.
    pub fn new() -> Sequential {
        Sequential::default()
    }

    /// Appends a module.
    pub fn push(mut self, layer: impl Module + 'static) -> Sequential {
        self.layers.push(Box::new(layer));
        self
    }

    /// Appends a parameter-free function (`Tensor::relu`).
    pub fn push_fn(self, f: impl Fn(&Tensor) -> Tensor + 'static) -> Sequential {
        self.push(Func(f))
    }
}

impl Module for Sequential {
    fn forward(&mut self, x: &Tensor) -> Tensor {
        let Some((first, rest)) = self.layers.split_first_mut() else {
            return x.affine(1.0, 0.0);
        };
        rest.iter_mut()
            .fold(first.forward(x), |h, layer| layer.forward(&h))
    }

    fn parameters(&self) -> Vec<&Tensor> {
        self.layers.iter().flat_map(|l| l.parameters()).collect()
    }

    fn state(&self) -> Vec<&Tensor> {
        self.layers.iter().flat_map(|l| l.state()).collect()
    }

    fn load_state(&mut self, tensors: &mut dyn Iterator<Item = Tensor>) {
        for l in &mut self.layers {
            l.load_state(tensors);
        }
    }

    fn set_training(&mut self, training: bool) {
        for l in &mut self.layers {
            l.set_training(training);
        }
    }
}
