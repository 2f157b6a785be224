//! A Chiron provider program to start from: copy this crate, rename it, change the network
//! and the training loop. The guide is the SDK's `guide` module (`cargo doc -p chiron-sdk
//! --open`, then `chiron_sdk::guide`).
//!
//! As it stands it trains a small convolutional network with batch norm and dropout on
//! image datasets (a two-layer perceptron on tables), with AdamW, a one-cycle schedule,
//! flip augmentation for images, and keeps the best model on the validation split.

use chiron_sdk::nn::{self, BatchNorm, Conv2d, Dropout, Linear, Module, Sequential};
use chiron_sdk::schedule::{BestModel, OneCycle, Schedule};
use chiron_sdk::{Dataset, Kind, Optimizer, Rng, Split, Tensor, augment, meta, println};

/// Examples per training step.
const BATCH: usize = 64;
/// The schedule's peak learning rate.
const PEAK_LR: f32 = 3e-3;

/// The network for the job's dataset: its shape is decided by the public header alone, and
/// saved as metadata so that `predict` can rebuild it.
fn network(kind: Kind, dims: &[u32], classes: u32) -> Sequential {
    match (kind, dims) {
        (Kind::Image, &[c, h, w]) if h >= 4 && w >= 4 => Sequential::new()
            .push(Conv2d::new(c, 32, [3, 3]).padding([1, 1]).bias(false))
            .push(BatchNorm::new_2d(32))
            .push_fn(Tensor::relu)
            .push_fn(|x| x.max_pool2d(2, 2))
            .push(Conv2d::new(32, 64, [3, 3]).padding([1, 1]).bias(false))
            .push(BatchNorm::new_2d(64))
            .push_fn(Tensor::relu)
            .push_fn(Tensor::global_avg_pool2d)
            .push_fn(Tensor::flatten)
            .push(Dropout::new(0.2))
            .push(Linear::new(64, classes)),
        (Kind::Tabular, &[columns]) => Sequential::new()
            .push(Linear::new(columns, 128))
            .push_fn(Tensor::relu)
            .push(Dropout::new(0.1))
            .push(Linear::new(128, classes)),
        _ => panic!("this program takes images [C, H, W] or tables [columns], not {dims:?}"),
    }
}

/// The metadata: the dataset's kind, dims and classes, enough to rebuild the network.
fn architecture() -> Vec<u32> {
    let kind = u32::from(Dataset::kind() == Kind::Image);
    let mut words = vec![meta::tag(b"tmpl"), kind, Dataset::classes()];
    words.extend(Dataset::dims());
    words
}

/// Rebuilds the network from the metadata [`architecture`] wrote.
fn network_from(words: &[u32]) -> Sequential {
    match words {
        [tag, kind, classes, dims @ ..] if *tag == meta::tag(b"tmpl") => {
            let kind = if *kind == 1 {
                Kind::Image
            } else {
                Kind::Tabular
            };
            network(kind, dims, *classes)
        }
        _ => panic!("the model was not saved by this program"),
    }
}

/// Trains for the owner's epoch budget and keeps the best model.
pub fn train() {
    let words = architecture();
    let mut net = network(Dataset::kind(), &Dataset::dims(), Dataset::classes());
    let mut opt = Optimizer::adamw(&net.parameters(), PEAK_LR, 0.9, 0.999, 1e-8, 1e-2);
    let mut rng = Rng::new();
    let mut order = Dataset::indices(Split::Train);
    let epochs = Dataset::budget_epochs();
    let schedule = OneCycle::new(PEAK_LR, epochs.max(1) * order.len().div_ceil(BATCH) as u32);
    let mut best = BestModel::new();
    let images = Dataset::kind() == Kind::Image;
    let mut step = 0;
    for epoch in 0..epochs {
        rng.shuffle(&mut order);
        let steps = order.len().div_ceil(BATCH);
        for (i, chunk) in order.chunks(BATCH).enumerate() {
            let (x, y) = Dataset::batch(Split::Train, chunk);
            let x = if images {
                augment::random_flip(&x, &mut rng)
            } else {
                x
            };
            let loss = net.forward(&x).cross_entropy(&y);
            opt.set_lr(schedule.lr(step));
            opt.step(&loss);
            // For the owner's progress bar (live jobs).
            chiron_sdk::report_progress(epoch, i + 1, steps);
            step += 1;
        }
        let accuracy = validation_accuracy(&mut net);
        // Shown by `chiron run-local`; discarded in an enclave.
        println!("epoch {epoch}: validation accuracy {accuracy:.4}");
        chiron_sdk::report_metric("valid_accuracy", epoch, accuracy);
        best.observe(accuracy, || nn::save(&net, &meta::encode(&words)));
        if let Some(left) = chiron_sdk::time_left() {
            println!("{} s left in the time budget", left.as_secs());
        }
    }
    if best.best().is_none() {
        nn::save(&net, &meta::encode(&words));
    }
}

/// Accuracy on the validation split (0 without one), in evaluation mode.
fn validation_accuracy(net: &mut Sequential) -> f32 {
    let valid = Dataset::indices(Split::Valid);
    if valid.is_empty() {
        return 0.0;
    }
    let correct = nn::count_correct(net, Split::Valid, 500);
    correct as f32 / valid.len() as f32
}

/// Answers a query with the saved model.
pub fn predict() {
    let words = meta::decode(&chiron_sdk::model::meta()).unwrap_or_default();
    let mut net = network_from(&words);
    nn::load(&mut net);
    let x = chiron_sdk::query_input();
    let scores = chiron_sdk::no_grad(|| net.forward(&x));
    chiron_sdk::set_output(&scores);
}

chiron_sdk::export_program!(train = train, predict = predict);

chiron_sdk::manifest!(chiron_sdk::manifest::Manifest::new(
    100_000,
    chiron_sdk::manifest::Answers::TopK(3)
));

// Images or tables, of any shape: what `network` builds for.
chiron_sdk::inputs!(chiron_sdk::inputs::Inputs::images_or_tables());
