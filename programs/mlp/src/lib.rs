//! `chiron-mlp`: a multi-layer perceptron for tables, which also takes images (flattened).
//!
//! ```text
//! x [N, ...dims] → flatten [N, F] ─ (x − mean) / std
//!   → linear(F → h) → ReLU → linear(h → h) → ReLU → linear(h → classes)   (logits)
//! ```
//!
//! `h` is 64, or 128 when there are at least 2 000 training examples or more than 64
//! features. Tabular features arrive standardised (mean 0 and std 1 are used); for images,
//! the mean and standard deviation of the first training examples are measured and saved.
//! Trained with Adam (lr 1e-3, batches of up to 64, smaller for small tables so each epoch
//! still takes several steps), shuffled every epoch, for the owner's epoch budget. Each
//! epoch reports `train_loss` and, when there is a validation split, `valid_accuracy`.
//!
//! The library's [`train`] and [`predict`] are the whole program; the wasm build exports
//! them as `chiron_train` / `chiron_predict`, and a native build can call them directly.

use chiron_sdk::{Dataset, Init, Kind, Optimizer, Rng, Split, Tensor, meta, model};

/// First word of the metadata.
pub const META_TAG: u32 = meta::tag(b"cMLP");
/// Second word of the metadata: the encoding's version.
pub const META_VERSION: u32 = 1;

/// Largest number of examples per training step.
pub const MAX_BATCH: usize = 64;
/// Examples per validation forward pass.
const EVAL_BATCH: usize = 1000;
/// Adam's learning rate.
pub const LEARNING_RATE: f32 = 1e-3;
/// Training examples read to measure image moments.
const MOMENT_EXAMPLES: u32 = 2048;

/// The architecture, as saved in the model's metadata.
///
/// Encoding: little-endian `u32` words,
/// `[tag "cMLP", version 1, features, classes, mean (f32 bits), std (f32 bits), depth,
/// hidden[0], .., hidden[depth-1]]` (8 + depth words; 36 bytes for two hidden layers).
#[derive(Clone, Debug, PartialEq)]
pub struct Arch {
    /// Input width (product of the example dims).
    pub features: u32,
    /// Output classes.
    pub classes: u32,
    /// Input mean subtracted before the first layer.
    pub mean: f32,
    /// Input standard deviation divided out before the first layer.
    pub std: f32,
    /// Widths of the hidden layers.
    pub hidden: Vec<u32>,
}

impl Arch {
    /// Two hidden layers sized from the input width and the training set size.
    pub fn new(features: u32, classes: u32, train_count: u32) -> Arch {
        let width = if train_count >= 2000 || features > 64 {
            128
        } else {
            64
        };
        Arch {
            features,
            classes,
            mean: 0.0,
            std: 1.0,
            hidden: vec![width, width],
        }
    }

    /// Each layer's `(inputs, outputs)`.
    pub fn layers(&self) -> Vec<(u32, u32)> {
        let widths: Vec<u32> = std::iter::once(self.features)
            .chain(self.hidden.iter().copied())
            .chain(std::iter::once(self.classes))
            .collect();
        widths.windows(2).map(|w| (w[0], w[1])).collect()
    }

    /// The metadata bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut words = vec![
            META_TAG,
            META_VERSION,
            self.features,
            self.classes,
            self.mean.to_bits(),
            self.std.to_bits(),
            self.hidden.len() as u32,
        ];
        words.extend(&self.hidden);
        meta::encode(&words)
    }

    /// Parses metadata written by [`Arch::encode`].
    pub fn decode(bytes: &[u8]) -> Option<Arch> {
        let words = meta::decode(bytes)?;
        let [
            META_TAG,
            META_VERSION,
            features,
            classes,
            mean,
            std,
            depth,
            ref hidden @ ..,
        ] = words[..]
        else {
            return None;
        };
        (hidden.len() == depth as usize).then(|| Arch {
            features,
            classes,
            mean: f32::from_bits(mean),
            std: f32::from_bits(std),
            hidden: hidden.to_vec(),
        })
    }
}

/// The network: an architecture and a weight `[in, out]` and bias `[out]` per layer.
pub struct Net {
    arch: Arch,
    params: Vec<Tensor>,
}

impl Net {
    /// Fresh trainable parameters (PyTorch's default initialisation).
    pub fn init(arch: Arch) -> Net {
        let params = arch
            .layers()
            .into_iter()
            .flat_map(|(i, o)| {
                let init = Init::torch_default(i);
                [
                    Tensor::parameter(&[i, o], init),
                    Tensor::parameter(&[o], init),
                ]
            })
            .collect();
        Net { arch, params }
    }

    /// The saved model.
    ///
    /// # Panics
    /// If the model was not saved by this program.
    pub fn load() -> Net {
        let arch = Arch::decode(&model::meta()).expect("the model was not saved by chiron-mlp");
        assert_eq!(
            model::len() as usize,
            2 * arch.layers().len(),
            "tensor count does not match the architecture"
        );
        Net {
            arch,
            params: model::tensors(),
        }
    }

    /// The parameters, in the saved order (weight, bias per layer).
    pub fn params(&self) -> Vec<&Tensor> {
        self.params.iter().collect()
    }

    /// Logits `[N, classes]` of inputs `[N, ...dims]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let a = &self.arch;
        let mut h = x.flatten().affine(1.0 / a.std, -a.mean / a.std);
        let layers = self.params.chunks_exact(2);
        let last = layers.len().saturating_sub(1);
        for (i, layer) in layers.enumerate() {
            h = h.linear(&layer[0], Some(&layer[1]));
            if i < last {
                h = h.relu();
            }
        }
        h
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

/// The architecture for the job's dataset.
pub fn arch_for_dataset() -> Arch {
    let features = Dataset::dims().iter().product();
    let mut arch = Arch::new(features, Dataset::classes(), Dataset::count(Split::Train));
    if Dataset::kind() != Kind::Tabular {
        (arch.mean, arch.std) = Dataset::moments(Split::Train, MOMENT_EXAMPLES);
    }
    arch
}

/// Examples per step: up to [`MAX_BATCH`], but at least 8 steps an epoch on small tables.
pub fn batch_size(train_count: u32) -> usize {
    (train_count as usize / 8).clamp(8, MAX_BATCH)
}

/// Trains on the job's dataset for the owner's epoch budget and saves the model.
pub fn train() {
    let net = Net::init(arch_for_dataset());
    let mut opt = Optimizer::adam(&net.params(), LEARNING_RATE, 0.9, 0.999, 1e-8, 0.0);
    let mut rng = Rng::new();
    let mut order = Dataset::indices(Split::Train);
    let batch = batch_size(Dataset::count(Split::Train));
    let valid = Dataset::count(Split::Valid);
    let epochs = Dataset::budget_epochs();

    for epoch in 0..epochs {
        rng.shuffle(&mut order);
        let mut loss_sum = 0f64;
        let steps = order.len().div_ceil(batch);
        for (step, chunk) in order.chunks(batch).enumerate() {
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

/// Answers a query: logits `[N, classes]` for inputs `[N, ...dims]`.
pub fn predict() {
    let net = Net::load();
    let x = chiron_sdk::query_input();
    let shape = x.shape();
    let width: u32 = shape.iter().skip(1).product();
    assert_eq!(
        width, net.arch.features,
        "queries must have {} features per row, not {shape:?}",
        net.arch.features
    );
    chiron_sdk::set_output(&net.forward(&x));
}

chiron_sdk::export_program!(train = train, predict = predict);

// The extraction policy for every model this program trains: up to a million inputs
// answered per model, up to the ten best classes, each with its probability if the owner
// asks. The needs are measured on the 2-core reference machine (Fashion-MNIST: about 60 ms
// per 1000 examples per epoch). A distributed job's messages fit Fashion-MNIST's 118 282
// parameters (462 KiB) and tables of up to some 850 features.
chiron_sdk::manifest!(
    chiron_sdk::manifest::Manifest::new(1_000_000, chiron_sdk::manifest::Answers::TopK(10))
        .scores(true)
        .memory_mib(512)
        .model_mib(2)
        .ms_per_1000_examples_epoch(100)
        .exchange_kib(512)
);
