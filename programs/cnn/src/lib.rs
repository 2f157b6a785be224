//! `chiron-cnn`: a small convolutional image classifier, shaped by the dataset's public
//! header.
//!
//! ```text
//! x [N, C, H, W] in [0, 1] ─ (x − mean) / std
//!   → conv3×3(C → 32, pad 1) → ReLU → max-pool 2
//!   → conv3×3(32 → 64, pad 1) → ReLU → max-pool 2
//!   → flatten [N, 64·⌊H/4⌋·⌊W/4⌋]
//!   → linear(→ 128) → ReLU → linear(→ classes)   (logits)
//! ```
//!
//! Trained with Adam (lr 1e-3) on shuffled batches of 64 for the owner's epoch budget, with
//! PyTorch's default initialisation. `mean` and `std` are measured on the first training
//! examples and saved with the model. Each epoch reports `train_loss` (mean over the epoch)
//! and, when there is a validation split, `valid_accuracy`.
//!
//! The library's [`train`] and [`predict`] are the whole program; the wasm build exports
//! them as `chiron_train` / `chiron_predict`, and a native build can call them directly.

use chiron_sdk::{Dataset, Init, Kind, Optimizer, Rng, Split, Tensor, meta, model};

/// First word of the metadata.
pub const META_TAG: u32 = meta::tag(b"cCNN");
/// Second word of the metadata: the encoding's version.
pub const META_VERSION: u32 = 1;

/// Examples per training step.
pub const BATCH: usize = 64;
/// Examples per validation forward pass.
const EVAL_BATCH: usize = 500;
/// Adam's learning rate.
pub const LEARNING_RATE: f32 = 1e-3;
/// Training examples read to measure the input mean and standard deviation.
const MOMENT_EXAMPLES: u32 = 2048;

/// The architecture, as saved in the model's metadata.
///
/// Encoding: 11 little-endian `u32` words (44 bytes):
/// `[tag "cCNN", version 1, channels, height, width, classes, conv1, conv2, hidden,
/// mean (f32 bits), std (f32 bits)]`.
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
    /// Filters of the first convolution.
    pub conv1: u32,
    /// Filters of the second convolution.
    pub conv2: u32,
    /// Width of the hidden linear layer.
    pub hidden: u32,
    /// Input mean subtracted before the first layer.
    pub mean: f32,
    /// Input standard deviation divided out before the first layer.
    pub std: f32,
}

impl Arch {
    /// The default widths for inputs `[channels, height, width]` and `classes` outputs.
    pub fn new(channels: u32, height: u32, width: u32, classes: u32) -> Arch {
        Arch {
            channels,
            height,
            width,
            classes,
            conv1: 32,
            conv2: 64,
            hidden: 128,
            mean: 0.0,
            std: 1.0,
        }
    }

    /// Width of the flattened feature map entering the first linear layer.
    pub fn flat(&self) -> u32 {
        self.conv2 * (self.height / 2 / 2) * (self.width / 2 / 2)
    }

    /// Each parameter's shape and fan-in, in the saved order: conv1 weight and bias,
    /// conv2 weight and bias, linear1 weight `[flat, hidden]` and bias, linear2 weight
    /// `[hidden, classes]` and bias.
    pub fn parameters(&self) -> Vec<(Vec<u32>, u32)> {
        let (c, c1, c2, h, k) = (
            self.channels,
            self.conv1,
            self.conv2,
            self.hidden,
            self.classes,
        );
        let f = self.flat();
        vec![
            (vec![c1, c, 3, 3], c * 9),
            (vec![c1], c * 9),
            (vec![c2, c1, 3, 3], c1 * 9),
            (vec![c2], c1 * 9),
            (vec![f, h], f),
            (vec![h], f),
            (vec![h, k], h),
            (vec![k], h),
        ]
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
            self.conv1,
            self.conv2,
            self.hidden,
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
                conv1,
                conv2,
                hidden,
                mean,
                std,
            ] => Some(Arch {
                channels,
                height,
                width,
                classes,
                conv1,
                conv2,
                hidden,
                mean: f32::from_bits(mean),
                std: f32::from_bits(std),
            }),
            _ => None,
        }
    }
}

/// The network: an architecture and its eight parameter tensors.
pub struct Net {
    arch: Arch,
    params: Vec<Tensor>,
}

impl Net {
    /// Fresh trainable parameters (PyTorch's default initialisation).
    pub fn init(arch: Arch) -> Net {
        let params = arch
            .parameters()
            .into_iter()
            .map(|(shape, fan_in)| Tensor::parameter(&shape, Init::torch_default(fan_in)))
            .collect();
        Net { arch, params }
    }

    /// The saved model.
    ///
    /// # Panics
    /// If the model was not saved by this program.
    pub fn load() -> Net {
        let arch = Arch::decode(&model::meta()).expect("the model was not saved by chiron-cnn");
        assert_eq!(model::len(), 8, "a chiron-cnn model has 8 tensors");
        Net {
            arch,
            params: model::tensors(),
        }
    }

    /// The parameters, in the saved order.
    pub fn params(&self) -> Vec<&Tensor> {
        self.params.iter().collect()
    }

    /// Logits `[N, classes]` of images `x` `[N, C, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let [w1, b1, w2, b2, w3, b3, w4, b4] = &self.params[..] else {
            unreachable!("a network has eight parameters")
        };
        let a = &self.arch;
        let x = x.affine(1.0 / a.std, -a.mean / a.std);
        let x = x.conv2d(w1, Some(b1), 1, 1).relu().max_pool2d(2, 2);
        let x = x.conv2d(w2, Some(b2), 1, 1).relu().max_pool2d(2, 2);
        let x = x.flatten();
        x.linear(w3, Some(b3)).relu().linear(w4, Some(b4))
    }

    /// Correct predictions over `split` (counted in batches).
    pub fn count_correct(&self, split: Split) -> u32 {
        Dataset::indices(split)
            .chunks(EVAL_BATCH)
            .map(|chunk| {
                let (x, y) = Dataset::batch(split, chunk);
                self.forward(&x).count_correct(&y)
            })
            .sum()
    }

    /// Saves the parameters and architecture as the job's model.
    pub fn save(&self) {
        chiron_sdk::save_model(&self.params(), &self.arch.encode());
    }
}

/// The architecture for the job's dataset, with input moments measured on the training
/// split.
///
/// # Panics
/// If the data are not images large enough for two 2× poolings.
pub fn arch_for_dataset() -> Arch {
    let dims = Dataset::dims();
    let (Kind::Image, &[channels, height, width]) = (Dataset::kind(), &dims[..]) else {
        panic!(
            "chiron-cnn needs images [C, H, W]; this dataset is {:?} {dims:?}",
            Dataset::kind()
        );
    };
    assert!(
        height >= 4 && width >= 4,
        "chiron-cnn needs images of at least 4×4, not {height}×{width}"
    );
    let (mean, std) = Dataset::moments(Split::Train, MOMENT_EXAMPLES);
    Arch {
        mean,
        std,
        ..Arch::new(channels, height, width, Dataset::classes())
    }
}

/// Trains on the job's dataset for the owner's epoch budget and saves the model.
pub fn train() {
    let net = Net::init(arch_for_dataset());
    let mut opt = Optimizer::adam(&net.params(), LEARNING_RATE, 0.9, 0.999, 1e-8, 0.0);
    let mut rng = Rng::new();
    let mut order = Dataset::indices(Split::Train);
    let valid = Dataset::count(Split::Valid);
    let epochs = Dataset::budget_epochs();

    for epoch in 0..epochs {
        rng.shuffle(&mut order);
        let mut loss_sum = 0f64;
        let steps = order.len().div_ceil(BATCH);
        for (step, chunk) in order.chunks(BATCH).enumerate() {
            let (x, y) = Dataset::batch(Split::Train, chunk);
            let loss = net.forward(&x).cross_entropy(&y);
            opt.step(&loss);
            // For the owner's progress bar (live jobs).
            chiron_sdk::report_progress(epoch, step + 1, steps);
            loss_sum += f64::from(loss.item()) * chunk.len() as f64;
        }
        if !order.is_empty() {
            chiron_sdk::report_metric("train_loss", epoch, (loss_sum / order.len() as f64) as f32);
        }
        if valid > 0 {
            let accuracy = f64::from(net.count_correct(Split::Valid)) / f64::from(valid);
            chiron_sdk::report_metric("valid_accuracy", epoch, accuracy as f32);
        }
        // Saved every epoch, so a model exists however far training gets.
        net.save();
    }
    if epochs == 0 {
        net.save();
    }
}

/// Answers a query: logits `[N, classes]` for images `[N, C, H, W]`.
pub fn predict() {
    let net = Net::load();
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
    chiron_sdk::set_output(&net.forward(&x));
}

chiron_sdk::export_program!(train = train, predict = predict);

// The extraction policy for every model this program trains: up to a million inputs
// answered per model, up to the ten best classes (no scores). The needs are measured on the
// 2-core reference machine (Fashion-MNIST: peak 363 MiB, a 1.7 MiB model, about 1050 ms per
// 1000 examples per epoch), with some headroom. A distributed job's messages carry the
// 421 642 parameters of 28×28 images and 10 classes (1 647 KiB); 16 KiB more leave room for
// some 30 more classes. Larger images need more (32×32 colour: 2 130 KiB): an owner gives
// `--exchange-kib`, and a job without it fails at its first step naming the size needed.
chiron_sdk::manifest!(
    chiron_sdk::manifest::Manifest::new(1_000_000, chiron_sdk::manifest::Answers::TopK(10))
        .memory_mib(512)
        .model_mib(4)
        .ms_per_1000_examples_epoch(1200)
        .exchange_kib(1664)
);

// Images only (of any size and channel count): a table is refused before it is uploaded.
chiron_sdk::inputs!(chiron_sdk::inputs::Inputs::images());
