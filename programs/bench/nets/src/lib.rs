//! The benchmark networks, as a provider program the benchmark trains both natively and in
//! the sandbox, so the two runs execute exactly the same sequence of engine operations.
//!
//! ```text
//! net A (images [3, 32, 32]):
//!   conv3×3(3 → 32, pad 1) → ReLU → max-pool 2
//!   conv3×3(32 → 64, pad 1) → ReLU → max-pool 2
//!   conv3×3(64 → 128, pad 1) → ReLU → max-pool 2
//!   flatten [N, 2048] → linear(→ 256) → ReLU → linear(→ classes)
//! net B (any input of 784 features):
//!   linear(784 → 512) → ReLU → linear(→ 512) → ReLU → linear(→ classes)
//! ```
//!
//! Both train with SGD (lr 0.01, momentum 0.9) and softmax cross-entropy, on the training
//! split in order, one pass, in batches of the size the entry point passes. Every
//! [`INTERVAL`] steps the program reports the metric `step` (value: the last loss); the
//! benchmark timestamps those reports, which is how throughput is measured without the
//! program needing a clock.

use chiron_sdk::{Dataset, Init, Kind, Optimizer, Split, Tensor};

/// Training steps between two `step` metrics.
pub const INTERVAL: u32 = 5;

/// Which network the dataset's header selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Net {
    /// The three-convolution CNN, for `[3, 32, 32]` images.
    A,
    /// The MLP, for 784 features.
    B,
}

impl Net {
    /// Net A for `[3, 32, 32]` images, net B for anything of 784 features.
    ///
    /// # Panics
    /// If the dataset fits neither.
    pub fn for_dataset() -> Net {
        let dims = Dataset::dims();
        if Dataset::kind() == Kind::Image && dims == [3, 32, 32] {
            Net::A
        } else if dims.iter().product::<u32>() == 784 {
            Net::B
        } else {
            panic!("the benchmark networks need [3, 32, 32] images or 784 features, not {dims:?}");
        }
    }

    /// Parameter shapes and fan-ins, in order (weight, bias per layer).
    fn layers(self, classes: u32) -> Vec<(Vec<u32>, u32)> {
        match self {
            Net::A => vec![
                (vec![32, 3, 3, 3], 27),
                (vec![32], 27),
                (vec![64, 32, 3, 3], 288),
                (vec![64], 288),
                (vec![128, 64, 3, 3], 576),
                (vec![128], 576),
                (vec![2048, 256], 2048),
                (vec![256], 2048),
                (vec![256, classes], 256),
                (vec![classes], 256),
            ],
            Net::B => vec![
                (vec![784, 512], 784),
                (vec![512], 784),
                (vec![512, 512], 512),
                (vec![512], 512),
                (vec![512, classes], 512),
                (vec![classes], 512),
            ],
        }
    }
}

/// A network with its parameters.
pub struct Model {
    net: Net,
    params: Vec<Tensor>,
}

impl Model {
    /// Fresh parameters (PyTorch's default initialisation) for the job's dataset.
    pub fn init() -> Model {
        let net = Net::for_dataset();
        let params = net
            .layers(Dataset::classes())
            .into_iter()
            .map(|(shape, fan_in)| Tensor::parameter(&shape, Init::torch_default(fan_in)))
            .collect();
        Model { net, params }
    }

    /// Logits for a batch.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let p = &self.params;
        let n = x.shape()[0];
        match self.net {
            Net::A => {
                let block = |h: &Tensor, layer: usize| {
                    h.conv2d(&p[2 * layer], Some(&p[2 * layer + 1]), 1, 1)
                        .relu()
                        .max_pool2d(2, 2)
                };
                block(&block(&block(x, 0), 1), 2)
                    .reshape(&[n, 2048])
                    .linear(&p[6], Some(&p[7]))
                    .relu()
                    .linear(&p[8], Some(&p[9]))
            }
            Net::B => x
                .reshape(&[n, 784])
                .linear(&p[0], Some(&p[1]))
                .relu()
                .linear(&p[2], Some(&p[3]))
                .relu()
                .linear(&p[4], Some(&p[5])),
        }
    }

    fn refs(&self) -> Vec<&Tensor> {
        self.params.iter().collect()
    }
}

/// One pass over the training split in batches of `batch`, then saves the model.
pub fn train(batch: u32) {
    let model = Model::init();
    let mut opt = Optimizer::sgd(&model.refs(), 0.01, 0.9, 0.0);
    let steps = Dataset::count(Split::Train) / batch;
    for step in 0..steps {
        let indices: Vec<u32> = (step * batch..(step + 1) * batch).collect();
        let (x, y) = Dataset::batch(Split::Train, &indices);
        let loss = model.forward(&x).cross_entropy(&y);
        opt.step(&loss);
        if (step + 1) % INTERVAL == 0 {
            chiron_sdk::report_metric("step", step + 1, loss.item());
        }
    }
    let tag: &[u8] = match model.net {
        Net::A => b"bench net A",
        Net::B => b"bench net B",
    };
    chiron_sdk::save_model(&model.refs(), tag);
}

/// Answers a query with the saved network.
pub fn predict() {
    let net = match chiron_sdk::model::meta().as_slice() {
        b"bench net A" => Net::A,
        b"bench net B" => Net::B,
        other => panic!("not a benchmark model: {} bytes of metadata", other.len()),
    };
    let model = Model {
        net,
        params: chiron_sdk::model::tensors(),
    };
    chiron_sdk::set_output(&model.forward(&chiron_sdk::query_input()));
}
