//! `chiron-vit`: a small vision transformer (ViT) classifying images from their patches.
//!
//! ```text
//! x [N, C, H, W] ─ (x − mean) / std
//!   → patches: conv(C → d, P×P, stride P) → [N, d, H/P, W/P] → tokens [N, T, d]
//!   → + learned position embedding [1, T, d]
//!   → L × encoder layer (pre-norm):  x + attention(LN(x));  x + MLP(LN(x))
//!        attention: h heads;  MLP: linear(d → 2d) → GELU → linear(2d → d)
//!   → mean over tokens → LN → linear(d → classes)                  (logits)
//! ```
//!
//! Trained with AdamW (weight decay 0.05) under a warm-up + cosine schedule over the owner's
//! epoch budget, batches of 128, label smoothing 0.1, gradient clipping at norm 1. The model
//! saved is the best on the validation split.

use chiron_sdk::nn::{self, Conv2d, Dropout, LayerNorm, Linear, Module, MultiHeadAttention};
use chiron_sdk::schedule::{BestModel, Schedule, WarmupCosine};
use chiron_sdk::{Dataset, Init, Kind, Optimizer, Rng, Split, Tensor, meta};

/// First word of the metadata.
pub const META_TAG: u32 = meta::tag(b"cViT");
/// Second word of the metadata: the encoding's version.
pub const META_VERSION: u32 = 1;

/// Examples per training step.
pub const BATCH: usize = 128;
/// Examples per evaluation forward pass.
const EVAL_BATCH: usize = 500;
/// The schedule's peak learning rate.
pub const PEAK_LR: f32 = 2e-3;
/// Label smoothing of the loss.
pub const LABEL_SMOOTHING: f32 = 0.1;
/// Training examples read to measure the input mean and standard deviation.
const MOMENT_EXAMPLES: u32 = 4096;

/// The architecture, as saved in the model's metadata.
///
/// Encoding: 11 little-endian `u32` words: `[tag "cViT", version 1, channels, height, width,
/// classes, patch, dim, heads, layers, mean (f32 bits), std (f32 bits)]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Arch {
    /// Input channels.
    pub channels: u32,
    /// Input height.
    pub height: u32,
    /// Input width.
    pub width: u32,
    /// Output classes.
    pub classes: u32,
    /// Side of a square patch.
    pub patch: u32,
    /// Model width.
    pub dim: u32,
    /// Attention heads.
    pub heads: u32,
    /// Encoder layers.
    pub layers: u32,
    /// Input mean subtracted before the first layer.
    pub mean: f32,
    /// Input standard deviation divided out before the first layer.
    pub std: f32,
}

impl Arch {
    /// Tokens per image.
    pub fn tokens(&self) -> u32 {
        (self.height / self.patch) * (self.width / self.patch)
    }

    /// The metadata bytes.
    pub fn encode(&self) -> Vec<u8> {
        meta::encode(&[
            META_TAG,
            META_VERSION,
            self.channels,
            self.height,
            self.width,
            self.classes,
            self.patch,
            self.dim,
            self.heads,
            self.layers,
            self.mean.to_bits(),
            self.std.to_bits(),
        ])
    }

    /// Parses metadata written by [`Arch::encode`].
    pub fn decode(bytes: &[u8]) -> Option<Arch> {
        match meta::decode(bytes)?[..] {
            [
                META_TAG,
                META_VERSION,
                channels,
                height,
                width,
                classes,
                patch,
                dim,
                heads,
                layers,
                mean,
                std,
            ] => Some(Arch {
                channels,
                height,
                width,
                classes,
                patch,
                dim,
                heads,
                layers,
                mean: f32::from_bits(mean),
                std: f32::from_bits(std),
            }),
            _ => None,
        }
    }
}

/// One pre-norm encoder layer.
pub struct EncoderLayer {
    norm1: LayerNorm,
    attention: MultiHeadAttention,
    norm2: LayerNorm,
    up: Linear,
    down: Linear,
    dropout: Dropout,
}

impl EncoderLayer {
    fn new(dim: u32, heads: u32) -> EncoderLayer {
        EncoderLayer {
            norm1: LayerNorm::new(dim),
            attention: MultiHeadAttention::new(dim, heads, 0.0),
            norm2: LayerNorm::new(dim),
            up: Linear::new(dim, 2 * dim),
            down: Linear::new(2 * dim, dim),
            dropout: Dropout::new(0.1),
        }
    }

    fn parts(&self) -> [&dyn Module; 6] {
        [
            &self.norm1,
            &self.attention,
            &self.norm2,
            &self.up,
            &self.down,
            &self.dropout,
        ]
    }

    fn parts_mut(&mut self) -> [&mut dyn Module; 6] {
        [
            &mut self.norm1,
            &mut self.attention,
            &mut self.norm2,
            &mut self.up,
            &mut self.down,
            &mut self.dropout,
        ]
    }
}

impl Module for EncoderLayer {
    fn forward(&mut self, x: &Tensor) -> Tensor {
        let attended = self.attention.forward(&self.norm1.forward(x));
        let x = x.add(&self.dropout.forward(&attended));
        let hidden = self.up.forward(&self.norm2.forward(&x)).gelu();
        x.add(&self.dropout.forward(&self.down.forward(&hidden)))
    }

    fn parameters(&self) -> Vec<&Tensor> {
        self.parts()
            .into_iter()
            .flat_map(|m| m.parameters())
            .collect()
    }

    fn load_state(&mut self, tensors: &mut dyn Iterator<Item = Tensor>) {
        for m in self.parts_mut() {
            m.load_state(tensors);
        }
    }

    fn set_training(&mut self, training: bool) {
        for m in self.parts_mut() {
            m.set_training(training);
        }
    }
}

/// The network.
pub struct Net {
    arch: Arch,
    patches: Conv2d,
    position: Tensor,
    layers: Vec<EncoderLayer>,
    norm: LayerNorm,
    head: Linear,
}

impl Net {
    /// Fresh parameters for `arch`.
    pub fn new(arch: Arch) -> Net {
        let (p, d) = (arch.patch, arch.dim);
        Net {
            arch,
            patches: Conv2d::new(arch.channels, d, [p, p]).stride([p, p]),
            position: Tensor::parameter(&[1, arch.tokens(), d], Init::Normal(0.02)),
            layers: (0..arch.layers)
                .map(|_| EncoderLayer::new(d, arch.heads))
                .collect(),
            norm: LayerNorm::new(d),
            head: Linear::new(d, arch.classes),
        }
    }

    /// The saved model, in evaluation mode.
    ///
    /// # Panics
    /// If the model was not saved by this program.
    pub fn load() -> Net {
        let arch = Arch::decode(&chiron_sdk::model::meta())
            .expect("the model was not saved by chiron-vit");
        let mut net = Net::new(arch);
        nn::load(&mut net);
        net
    }

    /// Saves the model (every tensor and the architecture).
    pub fn save(&self) {
        nn::save(self, &self.arch.encode());
    }
}

impl Module for Net {
    fn forward(&mut self, x: &Tensor) -> Tensor {
        let a = self.arch;
        let n = x.shape()[0];
        let x = x.affine(1.0 / a.std, -a.mean / a.std);
        let tokens = self
            .patches
            .forward(&x)
            .reshape(&[n, a.dim, a.tokens()])
            .permute(&[0, 2, 1])
            .add(&self.position);
        let mut h = tokens;
        for layer in &mut self.layers {
            h = layer.forward(&h);
        }
        let pooled = self.norm.forward(&h.mean_dims(&[1], false));
        self.head.forward(&pooled)
    }

    fn parameters(&self) -> Vec<&Tensor> {
        let mut p = self.patches.parameters();
        p.push(&self.position);
        for l in &self.layers {
            p.extend(l.parameters());
        }
        p.extend(self.norm.parameters());
        p.extend(self.head.parameters());
        p
    }

    fn load_state(&mut self, tensors: &mut dyn Iterator<Item = Tensor>) {
        self.patches.load_state(tensors);
        let next = tensors
            .next()
            .expect("the saved model ends before the position embedding");
        assert_eq!(
            next.shape(),
            self.position.shape(),
            "position embedding shape"
        );
        self.position = next;
        for l in &mut self.layers {
            l.load_state(tensors);
        }
        self.norm.load_state(tensors);
        self.head.load_state(tensors);
    }

    fn set_training(&mut self, training: bool) {
        for l in &mut self.layers {
            l.set_training(training);
        }
    }
}

/// The architecture for the job's dataset, with input moments measured on the training
/// split: 7×7 patches where the image divides by 7 (4×4 otherwise), width 64, 4 heads, 2
/// layers.
///
/// # Panics
/// If the data are not images whose sides a patch size divides.
pub fn arch_for_dataset() -> Arch {
    let dims = Dataset::dims();
    let (Kind::Image, &[channels, height, width]) = (Dataset::kind(), &dims[..]) else {
        panic!(
            "chiron-vit needs images [C, H, W]; this dataset is {:?} {dims:?}",
            Dataset::kind()
        );
    };
    let patch = [7, 4, 2]
        .into_iter()
        .find(|p| height % p == 0 && width % p == 0 && height / p >= 2)
        .unwrap_or_else(|| {
            panic!("chiron-vit needs sides divisible by 7, 4 or 2, not {height}×{width}")
        });
    let (mean, std) = Dataset::moments(Split::Train, MOMENT_EXAMPLES);
    Arch {
        channels,
        height,
        width,
        classes: Dataset::classes(),
        patch,
        dim: 64,
        heads: 4,
        layers: 2,
        mean,
        std,
    }
}

/// Trains on the job's dataset for the owner's epoch budget and saves the best model.
pub fn train() {
    let mut net = Net::new(arch_for_dataset());
    let mut opt = Optimizer::adamw(&net.parameters(), PEAK_LR, 0.9, 0.999, 1e-8, 0.05);
    opt.clip_grad_norm(1.0);
    let mut rng = Rng::new();
    let mut order = Dataset::indices(Split::Train);
    let valid = Dataset::count(Split::Valid);
    let epochs = Dataset::budget_epochs();
    let steps_per_epoch = order.len().div_ceil(BATCH) as u32;
    let total = epochs.max(1) * steps_per_epoch;
    let schedule = WarmupCosine {
        base: PEAK_LR,
        min: PEAK_LR / 100.0,
        warmup: (total / 20).max(1),
        total,
    };
    let mut best = BestModel::new();
    let mut step = 0;

    for epoch in 0..epochs {
        rng.shuffle(&mut order);
        let mut loss_sum = 0f64;
        for chunk in order.chunks(BATCH) {
            let (x, y) = Dataset::batch(Split::Train, chunk);
            let loss = net.forward(&x).cross_entropy_smoothed(&y, LABEL_SMOOTHING);
            opt.set_lr(schedule.lr(step));
            opt.step(&loss);
            loss_sum += f64::from(loss.item()) * chunk.len() as f64;
            step += 1;
        }
        if !order.is_empty() {
            chiron_sdk::report_metric("train_loss", epoch, (loss_sum / order.len() as f64) as f32);
        }
        if valid > 0 {
            let accuracy = (f64::from(nn::count_correct(&mut net, Split::Valid, EVAL_BATCH))
                / f64::from(valid)) as f32;
            chiron_sdk::report_metric("valid_accuracy", epoch, accuracy);
            best.observe(accuracy, || net.save());
        } else {
            net.save();
        }
    }
    if epochs == 0 {
        net.save();
    }
}

/// Answers a query: logits `[N, classes]` for images `[N, C, H, W]`.
pub fn predict() {
    let mut net = Net::load();
    let x = chiron_sdk::query_input();
    let a = net.arch;
    let shape = x.shape();
    assert!(
        shape.len() == 4 && shape[1..] == [a.channels, a.height, a.width],
        "queries must be images [N, {}, {}, {}], not {shape:?}",
        a.channels,
        a.height,
        a.width
    );
    let logits = chiron_sdk::no_grad(|| net.forward(&x));
    chiron_sdk::set_output(&logits);
}

chiron_sdk::export_program!(train = train, predict = predict);

// A distributed job's messages: Fashion-MNIST's parameters take 282 KiB; larger images have
// more patches, whose position embeddings need more.
chiron_sdk::manifest!(
    chiron_sdk::manifest::Manifest::new(1_000_000, chiron_sdk::manifest::Answers::TopK(10))
        .memory_mib(1024)
        .model_mib(4)
        .ms_per_1000_examples_epoch(8000)
        .exchange_kib(304)
);
