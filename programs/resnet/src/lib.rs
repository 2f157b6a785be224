//! `chiron-resnet`: a small residual network with batch norm, trained with augmentation.
//!
//! ```text
//! x [N, C, H, W] in [0, 1] ─ (x − mean) / std
//!   → conv3×3(C → w) → BN → ReLU → max-pool 2                     H/2 × W/2
//!   → block(w → w, stride 1)                                      H/2 × W/2
//!   → block(w → 2w, stride 2)                                     H/4 × W/4
//!   → flatten → dropout(0.3) → linear(→ classes)                  (logits)
//!
//! block(a → b, s):  conv3×3(a → b, stride s) → BN → ReLU → conv3×3(b → b) → BN(γ = 0)
//!                   + conv1×1(a → b, stride s) → BN               → ReLU
//! ```
//!
//! Trained with SGD (Nesterov momentum 0.9, weight decay 5e-4) under a one-cycle learning
//! rate over the owner's epoch budget, on batches of 128 with horizontal flips (and random
//! crops where [`CROP_PADDING`] is set). Each epoch reports `train_loss` and, with a
//! validation split, `valid_accuracy`; the model saved is the best on the validation split
//! (the last one without a validation split), so a job stopped by its time budget keeps its
//! best epoch.

use chiron_sdk::nn::{self, BatchNorm, Conv2d, Dropout, Linear, Module};
use chiron_sdk::schedule::{BestModel, OneCycle, Schedule};
use chiron_sdk::{Dataset, Init, Kind, Optimizer, Rng, Split, Tensor, augment, meta};

/// First word of the metadata.
pub const META_TAG: u32 = meta::tag(b"cRES");
/// Second word of the metadata: the encoding's version.
pub const META_VERSION: u32 = 1;

/// Examples per training step.
pub const BATCH: usize = 128;
/// Examples per evaluation forward pass.
const EVAL_BATCH: usize = 500;
/// The one-cycle schedule's peak learning rate.
pub const PEAK_LR: f32 = 0.1;
/// Weight decay (PyTorch's `SGD(weight_decay=...)`, on every parameter).
pub const WEIGHT_DECAY: f32 = 5e-4;
/// Zeros added around each image before the random crop (0: no crop).
pub const CROP_PADDING: u32 = 0;
/// Training examples read to measure the input mean and standard deviation.
const MOMENT_EXAMPLES: u32 = 4096;

/// The architecture, as saved in the model's metadata.
///
/// Encoding: 9 little-endian `u32` words: `[tag "cRES", version 1, channels, height, width,
/// classes, width, mean (f32 bits), std (f32 bits)]`.
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
    /// Channels after the stem and the first block; the second block doubles it.
    pub base: u32,
    /// Input mean subtracted before the first layer.
    pub mean: f32,
    /// Input standard deviation divided out before the first layer.
    pub std: f32,
}

/// The length of a side after a 3×3 convolution of stride 2 and padding 1.
fn halved(len: u32) -> u32 {
    (len + 2 - 3) / 2 + 1
}

impl Arch {
    /// Height of the feature map entering the linear layer.
    pub fn flat_h(&self) -> u32 {
        halved(self.height / 2)
    }

    /// Width of the feature map entering the linear layer.
    pub fn flat_w(&self) -> u32 {
        halved(self.width / 2)
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
            self.base,
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
                base,
                mean,
                std,
            ] => Some(Arch {
                channels,
                height,
                width,
                classes,
                base,
                mean: f32::from_bits(mean),
                std: f32::from_bits(std),
            }),
            _ => None,
        }
    }
}

/// `conv3×3 → BN`, the unit every block is made of.
fn conv_bn(inputs: u32, outputs: u32, kernel: u32, stride: u32) -> (Conv2d, BatchNorm) {
    let pad = kernel / 2;
    let conv = Conv2d::new(inputs, outputs, [kernel, kernel])
        .stride([stride, stride])
        .padding([pad, pad])
        .bias(false)
        .init(Init::KaimingUniform {
            fan_in: inputs * kernel * kernel,
        });
    (conv, BatchNorm::new_2d(outputs))
}

/// A basic residual block with a projection shortcut.
pub struct Block {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    shortcut: Conv2d,
    bn_shortcut: BatchNorm,
}

impl Block {
    fn new(inputs: u32, outputs: u32, stride: u32) -> Block {
        let (conv1, bn1) = conv_bn(inputs, outputs, 3, stride);
        let (conv2, bn2) = conv_bn(outputs, outputs, 3, 1);
        let (shortcut, bn_shortcut) = conv_bn(inputs, outputs, 1, stride);
        Block {
            conv1,
            bn1,
            conv2,
            bn2: bn2.zero_init(),
            shortcut,
            bn_shortcut,
        }
    }

    fn parts(&self) -> [&dyn Module; 6] {
        [
            &self.conv1,
            &self.bn1,
            &self.conv2,
            &self.bn2,
            &self.shortcut,
            &self.bn_shortcut,
        ]
    }

    fn parts_mut(&mut self) -> [&mut dyn Module; 6] {
        [
            &mut self.conv1,
            &mut self.bn1,
            &mut self.conv2,
            &mut self.bn2,
            &mut self.shortcut,
            &mut self.bn_shortcut,
        ]
    }
}

impl Module for Block {
    fn forward(&mut self, x: &Tensor) -> Tensor {
        let h = self.bn1.forward(&self.conv1.forward(x)).relu();
        let h = self.bn2.forward(&self.conv2.forward(&h));
        let skip = self.bn_shortcut.forward(&self.shortcut.forward(x));
        h.add(&skip).relu()
    }

    fn parameters(&self) -> Vec<&Tensor> {
        self.parts()
            .into_iter()
            .flat_map(|m| m.parameters())
            .collect()
    }

    fn state(&self) -> Vec<&Tensor> {
        self.parts().into_iter().flat_map(|m| m.state()).collect()
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
    stem: Conv2d,
    stem_bn: BatchNorm,
    blocks: [Block; 2],
    dropout: Dropout,
    head: Linear,
}

impl Net {
    /// Fresh parameters for `arch`.
    pub fn new(arch: Arch) -> Net {
        let w = arch.base;
        let (stem, stem_bn) = conv_bn(arch.channels, w, 3, 1);
        Net {
            arch,
            stem,
            stem_bn,
            blocks: [Block::new(w, w, 1), Block::new(w, 2 * w, 2)],
            dropout: Dropout::new(0.3),
            head: Linear::new(2 * w * arch.flat_h() * arch.flat_w(), arch.classes),
        }
    }

    /// The saved model, in evaluation mode.
    ///
    /// # Panics
    /// If the model was not saved by this program.
    pub fn load() -> Net {
        let arch = Arch::decode(&chiron_sdk::model::meta())
            .expect("the model was not saved by chiron-resnet");
        let mut net = Net::new(arch);
        nn::load(&mut net);
        net
    }

    /// Logits `[N, classes]` of images `[N, C, H, W]`.
    pub fn logits(&mut self, x: &Tensor) -> Tensor {
        self.forward(x)
    }

    /// Saves the model (every tensor and the architecture).
    pub fn save(&self) {
        nn::save(self, &self.arch.encode());
    }
}

impl Module for Net {
    fn forward(&mut self, x: &Tensor) -> Tensor {
        let a = self.arch;
        let x = x.affine(1.0 / a.std, -a.mean / a.std);
        let mut h = self
            .stem_bn
            .forward(&self.stem.forward(&x))
            .relu()
            .max_pool2d(2, 2);
        for block in &mut self.blocks {
            h = block.forward(&h);
        }
        self.head.forward(&self.dropout.forward(&h.flatten()))
    }

    fn parameters(&self) -> Vec<&Tensor> {
        let mut p = self.stem.parameters();
        p.extend(self.stem_bn.parameters());
        for b in &self.blocks {
            p.extend(b.parameters());
        }
        p.extend(self.head.parameters());
        p
    }

    fn state(&self) -> Vec<&Tensor> {
        let mut s = self.stem.state();
        s.extend(self.stem_bn.state());
        for b in &self.blocks {
            s.extend(b.state());
        }
        s.extend(self.head.state());
        s
    }

    fn load_state(&mut self, tensors: &mut dyn Iterator<Item = Tensor>) {
        self.stem.load_state(tensors);
        self.stem_bn.load_state(tensors);
        for b in &mut self.blocks {
            b.load_state(tensors);
        }
        self.head.load_state(tensors);
    }

    fn set_training(&mut self, training: bool) {
        self.stem_bn.set_training(training);
        for b in &mut self.blocks {
            b.set_training(training);
        }
        self.dropout.set_training(training);
    }
}

/// The architecture for the job's dataset, with input moments measured on the training
/// split.
///
/// # Panics
/// If the data are not images of at least 4×4.
pub fn arch_for_dataset() -> Arch {
    let dims = Dataset::dims();
    let (Kind::Image, &[channels, height, width]) = (Dataset::kind(), &dims[..]) else {
        panic!(
            "chiron-resnet needs images [C, H, W]; this dataset is {:?} {dims:?}",
            Dataset::kind()
        );
    };
    assert!(
        height >= 4 && width >= 4,
        "chiron-resnet needs images of at least 4×4, not {height}×{width}"
    );
    let (mean, std) = Dataset::moments(Split::Train, MOMENT_EXAMPLES);
    Arch {
        channels,
        height,
        width,
        classes: Dataset::classes(),
        base: 32,
        mean,
        std,
    }
}

/// Trains on the job's dataset for the owner's epoch budget and saves the best model.
pub fn train() {
    let mut net = Net::new(arch_for_dataset());
    let mut opt = Optimizer::nesterov(&net.parameters(), PEAK_LR, 0.9, WEIGHT_DECAY);
    let mut rng = Rng::new();
    let mut order = Dataset::indices(Split::Train);
    let valid = Dataset::count(Split::Valid);
    let epochs = Dataset::budget_epochs();
    let steps_per_epoch = order.len().div_ceil(BATCH) as u32;
    let schedule = OneCycle::new(PEAK_LR, epochs.max(1) * steps_per_epoch);
    let mut best = BestModel::new();
    let mut step = 0;

    for epoch in 0..epochs {
        rng.shuffle(&mut order);
        let mut loss_sum = 0f64;
        for chunk in order.chunks(BATCH) {
            let (x, y) = Dataset::batch(Split::Train, chunk);
            let x =
                augment::random_flip(&augment::random_crop(&x, CROP_PADDING, &mut rng), &mut rng);
            let loss = net.forward(&x).cross_entropy(&y);
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
    let logits = chiron_sdk::no_grad(|| net.logits(&x));
    chiron_sdk::set_output(&logits);
}

chiron_sdk::export_program!(train = train, predict = predict);

// A distributed job's messages: Fashion-MNIST's parameters take 427 KiB; the network pools
// globally, so larger images need hardly more (more channels or classes add a little).
chiron_sdk::manifest!(
    chiron_sdk::manifest::Manifest::new(1_000_000, chiron_sdk::manifest::Answers::TopK(10))
        .memory_mib(1024)
        .model_mib(4)
        .ms_per_1000_examples_epoch(2000)
        .exchange_kib(448)
);
