//! Fixture `hostile-newops`: every operation of the second ABI, used well and misused.
//!
//! With an epoch budget below [`MISUSE_BASE`], `train` fits a small network to the first
//! training examples (a tabular dataset of four features, seen as `[N, 1, 2, 2]` images)
//! that goes through every new call: `conv2d_ex` (padding, dilation, groups), `pool2d`
//! (max and average, padded), adaptive and global average pooling, `normalize` (batch and
//! layer norm), `dropout`, `matmul`, broadcasting `binary` (pow, maximum, minimum),
//! `clamp`, the reductions, `argmax`, `permute`, `concat`, `narrow`, `index_select`,
//! smoothed cross-entropy, `bce_with_logits`, the MSE composed from them, a
//! constant-initialised parameter, and evaluation under `no_grad`, while `time_left` says
//! there is time. It reports `train_loss` at each of [`STEPS`] steps, then `valid_loss`,
//! and saves the model.
//!
//! With a budget of `MISUSE_BASE + k` it instead makes misuse `k` of [`MISUSES`] (raw ABI
//! calls with hostile arguments), which the runtime must refuse by ending the program with
//! a clear error.

use chiron_sdk::{Dataset, Init, Optimizer, Pool, Split, Tensor, sys};

/// Training steps of the well-formed run.
pub const STEPS: u32 = 30;

/// Epoch budgets from this one select a misuse.
pub const MISUSE_BASE: u32 = 100;

/// The misuses, by index: what each passes to which call.
pub const MISUSES: &[&str] = &[
    "binary: unknown op 7",
    "reduce: unknown op 9",
    "reduce: 9 axes",
    "reduce: axes pointer outside memory",
    "reduce: keepdim 2",
    "reduce: repeated axis",
    "pool2d: unknown kind 2",
    "pool2d: padding above half the window",
    "conv2d_ex: 0 groups",
    "conv2d_ex: groups not dividing the channels",
    "conv2d_ex: stride 0",
    "conv2d_ex: huge padding and dilation",
    "adaptive_avg_pool2d: output 0",
    "clamp: min above max",
    "argmax: axis 9",
    "permute: 9 entries",
    "permute: not a permutation",
    "concat: no tensor",
    "concat: 1025 tensors",
    "concat: unknown handle",
    "concat: mismatched shapes",
    "narrow: beyond the end",
    "index_select: index out of range",
    "index_select: fractional index",
    "index_select: indices of rank 2",
    "matmul: mismatched inner dimension",
    "matmul: broadcast product above the compute budget",
    "binary: shapes that do not broadcast",
    "normalize: out pointer outside memory",
    "normalize: eps 0",
    "normalize: 9 axes",
    "dropout: p = 1",
    "dropout: p NaN",
    "cross_entropy_smoothed: smoothing 2",
    "bce_with_logits: mismatched shapes",
    "set_grad_enabled: 2",
    "optimizer_step: a loss computed under no_grad",
];

/// Images `[N, 1, 2, 2]` of the first `count` training (or validation) examples, with
/// their labels.
fn batch(split: Split, count: u32) -> (Tensor, Tensor) {
    let count = Dataset::count(split).min(count);
    let indices: Vec<u32> = (0..count).collect();
    let (x, y) = Dataset::batch(split, &indices);
    (x.reshape(&[count, 1, 2, 2]), y)
}

/// The network's parameters, in the order they are saved.
struct Net {
    conv: Tensor,
    conv_bias: Tensor,
    depthwise: Tensor,
    gamma: Tensor,
    head: Tensor,
    head_bias: Tensor,
    skip: Tensor,
}

impl Net {
    fn new(classes: u32) -> Net {
        Net {
            conv: Tensor::parameter(&[8, 1, 2, 2], Init::torch_default(4)),
            conv_bias: Tensor::parameter(&[8], Init::torch_default(4)),
            depthwise: Tensor::parameter(&[8, 1, 2, 2], Init::torch_default(4)),
            gamma: Tensor::parameter(&[16], Init::Constant(1.0)),
            head: Tensor::parameter(&[16, classes], Init::torch_default(16)),
            head_bias: Tensor::parameter(&[classes], Init::Zeros),
            skip: Tensor::parameter(&[4, classes], Init::torch_default(4)),
        }
    }

    fn from_model() -> Net {
        let t = chiron_sdk::model::tensor;
        Net {
            conv: t(0),
            conv_bias: t(1),
            depthwise: t(2),
            gamma: t(3),
            head: t(4),
            head_bias: t(5),
            skip: t(6),
        }
    }

    fn params(&self) -> [&Tensor; 7] {
        [
            &self.conv,
            &self.conv_bias,
            &self.depthwise,
            &self.gamma,
            &self.head,
            &self.head_bias,
            &self.skip,
        ]
    }

    /// Logits `[N, classes]` of images `x` `[N, 1, 2, 2]`; dropout only in training.
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let n = x.shape()[0];
        // [N, 8, 3, 3], then depthwise with dilation 2: reach 3, padding 1 → [N, 8, 3, 3].
        let h = x
            .conv2d_ex(&self.conv, Some(&self.conv_bias), [1, 1], [1, 1], [1, 1], 1)
            .relu();
        let h = h
            .conv2d_ex(&self.depthwise, None, [1, 1], [1, 1], [2, 2], 8)
            .relu();
        // Batch norm over [0, 2, 3], padded max pooling → [N, 8, 4, 4], average → [N, 8, 2, 2].
        let (h, mean, var) = h.normalize(&[0, 2, 3], 1e-5);
        assert_eq!(mean.shape(), [1, 8, 1, 1]);
        assert_eq!(var.shape(), [1, 8, 1, 1]);
        let h = h.pool2d(Pool::Max, [2, 2], [1, 1], [1, 1]);
        let h = h.avg_pool2d(2, 2);
        // Two poolings side by side: [N, 8] each, joined to [N, 16].
        let a = h.global_avg_pool2d().reshape(&[n, 8]);
        let b = h.adaptive_avg_pool2d(1, 1).reshape(&[n, 8]);
        let b = b
            .maximum(&Tensor::scalar(-3.0))
            .minimum(&Tensor::scalar(3.0));
        let f = Tensor::concat(&[&a, &b], 1);
        // Layer norm with a learned scale (broadcast [16]), dropout in training.
        let (f, _, _) = f.normalize(&[1], 1e-5);
        let f = f.mul(&self.gamma);
        let f = if train { f.dropout(0.1) } else { f };
        let logits = f
            .matmul(&self.head)
            .add(&self.head_bias)
            .add(&x.reshape(&[n, 4]).matmul(&self.skip));
        // A transpose there and back, and both halves of a concatenation.
        let logits = logits.transpose(0, 1).permute(&[1, 0]);
        let classes = logits.shape()[1];
        let twice = Tensor::concat(&[&logits, &logits], 1);
        let first = twice.narrow(1, 0, classes);
        let second = twice.narrow(1, classes, classes);
        first.add(&second).affine(0.5, 0.0).clamp(-30.0, 30.0)
    }

    fn loss(&self, logits: &Tensor, y: &Tensor) -> Tensor {
        let classes = logits.shape()[1];
        let eye: Vec<f32> = (0..classes * classes)
            .map(|i| if i % (classes + 1) == 0 { 1.0 } else { 0.0 })
            .collect();
        let one_hot = Tensor::new(&eye, &[classes, classes]).index_select(0, y);
        let ce = logits.cross_entropy_smoothed(y, 0.1);
        let bce = logits.bce_with_logits(&one_hot);
        let mse = logits.softmax().mse(&one_hot);
        // A small penalty on the head: sum of squares through powf, square and sum_dims.
        let penalty = self
            .head
            .powf(2.0)
            .sum()
            .add(&self.skip.square().sum_dims(&[0, 1], false));
        ce.add(&bce.affine(0.1, 0.0))
            .add(&mse.affine(0.1, 0.0))
            .add(&penalty.affine(1e-4, 0.0))
    }
}

/// Trains the network (or, with a budget from [`MISUSE_BASE`], misuses the ABI).
pub fn train() {
    let epochs = Dataset::budget_epochs();
    if epochs >= MISUSE_BASE {
        misuse(epochs - MISUSE_BASE);
        return;
    }
    let left = chiron_sdk::time_left().expect("the sandbox has a deadline");
    assert!(
        left.as_millis().is_multiple_of(100),
        "time left {left:?} not in whole 100 ms"
    );
    let classes = Dataset::classes();
    let net = Net::new(classes);
    let mut opt = Optimizer::adam(&net.params(), 0.02, 0.9, 0.999, 1e-8, 0.0);
    let (x, y) = batch(Split::Train, 64);
    for step in 0..STEPS {
        let time = chiron_sdk::time_left().expect("a deadline");
        if time.as_millis() < 500 {
            break;
        }
        let loss = net.loss(&net.forward(&x, true), &y);
        chiron_sdk::report_metric("train_loss", step, loss.item());
        opt.step(&loss);
    }
    // Validation without a graph; the setting comes back afterwards.
    let (vx, vy) = batch(Split::Valid, 64);
    let (valid_loss, stats) = chiron_sdk::no_grad(|| {
        let logits = net.forward(&vx, false);
        let loss = net.loss(&logits, &vy).item();
        let predicted = logits.argmax(1, false);
        assert_eq!(predicted.shape(), [vx.shape()[0]]);
        let stats = [
            logits.mean_dims(&[0], true),
            logits.max_dims(&[1], false),
            logits.min_dims(&[1], true),
            logits.var_dims(&[0, 1], false),
        ];
        (loss, stats)
    });
    assert!(
        chiron_sdk::set_grad_enabled(true),
        "no_grad restores the setting"
    );
    assert_eq!(stats[0].shape(), [1, classes]);
    assert_eq!(stats[3].shape(), [1]);
    chiron_sdk::report_metric("valid_loss", 0, valid_loss);
    chiron_sdk::save_model(&net.params(), b"newops");
}

/// Answers with the saved network's logits.
pub fn predict() {
    let net = Net::from_model();
    let x = chiron_sdk::query_input();
    let n = x.shape()[0];
    let logits = chiron_sdk::no_grad(|| net.forward(&x.reshape(&[n, 1, 2, 2]), false));
    chiron_sdk::set_output(&logits);
}

/// A raw handle of a fresh constant of `shape` filled with `value`, left to the runtime
/// (the program ends right after).
fn raw(shape: &[u32], value: f32) -> u32 {
    let n: u32 = shape.iter().product();
    Tensor::new(&vec![value; n as usize], shape).into_handle()
}

/// Ignores a handle the runtime should never have returned.
fn sink(_handle: u32) {}

/// Makes misuse `case` of [`MISUSES`]; the runtime must end the program during it.
fn misuse(case: u32) {
    let image = raw(&[2, 4, 4, 4], 0.5);
    let matrix = raw(&[4, 4], 1.0);
    let kernel = raw(&[4, 4, 2, 2], 0.1);
    let far = u32::MAX - 16;
    let axes9 = [0u32; 9];
    // SAFETY: this fixture misuses the ABI on purpose; every pointer passed to the runtime is
    // either a live buffer or one the runtime must refuse before reading (or writing).
    unsafe {
        match case {
            0 => sink(sys::chiron_binary(7, matrix, matrix)),
            1 => sink(sys::chiron_reduce(9, matrix, [0u32].as_ptr(), 1, 0)),
            2 => sink(sys::chiron_reduce(
                sys::REDUCE_SUM,
                matrix,
                axes9.as_ptr(),
                9,
                0,
            )),
            3 => sink(sys::chiron_reduce(
                sys::REDUCE_SUM,
                matrix,
                far as *const u32,
                4,
                0,
            )),
            4 => sink(sys::chiron_reduce(
                sys::REDUCE_SUM,
                matrix,
                [0u32].as_ptr(),
                1,
                2,
            )),
            5 => sink(sys::chiron_reduce(
                sys::REDUCE_MAX,
                matrix,
                [1u32, 1].as_ptr(),
                2,
                0,
            )),
            6 => sink(sys::chiron_pool2d(2, image, 2, 2, 2, 2, 0, 0)),
            7 => sink(sys::chiron_pool2d(sys::POOL_AVG, image, 2, 2, 1, 1, 2, 2)),
            8 => sink(sys::chiron_conv2d_ex(
                image,
                kernel,
                sys::NONE,
                1,
                1,
                0,
                0,
                1,
                1,
                0,
            )),
            9 => sink(sys::chiron_conv2d_ex(
                image,
                kernel,
                sys::NONE,
                1,
                1,
                0,
                0,
                1,
                1,
                3,
            )),
            10 => sink(sys::chiron_conv2d_ex(
                image,
                kernel,
                sys::NONE,
                0,
                1,
                0,
                0,
                1,
                1,
                1,
            )),
            11 => sink(sys::chiron_conv2d_ex(
                image,
                kernel,
                sys::NONE,
                1,
                1,
                u32::MAX,
                u32::MAX,
                u32::MAX,
                u32::MAX,
                1,
            )),
            12 => sink(sys::chiron_adaptive_avg_pool2d(image, 0, 1)),
            13 => sink(sys::chiron_clamp(matrix, 1.0, -1.0)),
            14 => sink(sys::chiron_argmax(matrix, 9, 0)),
            15 => sink(sys::chiron_permute(matrix, axes9.as_ptr(), 9)),
            16 => sink(sys::chiron_permute(matrix, [0u32, 0].as_ptr(), 2)),
            17 => sink(sys::chiron_concat([matrix].as_ptr(), 0, 0)),
            18 => {
                let many = vec![matrix; 1025];
                sink(sys::chiron_concat(many.as_ptr(), 1025, 0))
            }
            19 => sink(sys::chiron_concat([matrix, 999_999].as_ptr(), 2, 0)),
            20 => sink(sys::chiron_concat([matrix, image].as_ptr(), 2, 0)),
            21 => sink(sys::chiron_narrow(matrix, 0, 2, u32::MAX)),
            22 => {
                let indices = raw(&[2], 1e9);
                sink(sys::chiron_index_select(matrix, 0, indices))
            }
            23 => {
                let indices = raw(&[2], 0.5);
                sink(sys::chiron_index_select(matrix, 0, indices))
            }
            24 => sink(sys::chiron_index_select(matrix, 0, raw(&[2, 2], 0.0))),
            25 => sink(sys::chiron_matmul(matrix, raw(&[3, 4], 1.0))),
            26 => {
                // [4096, 1, 32, 32] · [1, 4096, 32, 32]: 2^24 products of 32×32 matrices,
                // 2^40 operations, from two inputs of 2^22 values (zeros, made in the
                // runtime so that they cost no linear memory).
                let a = Tensor::parameter(&[4096, 1, 32, 32], Init::Zeros).into_handle();
                let b = Tensor::parameter(&[1, 4096, 32, 32], Init::Zeros).into_handle();
                sink(sys::chiron_matmul(a, b))
            }
            27 => sink(sys::chiron_binary(sys::BINARY_POW, matrix, raw(&[3], 2.0))),
            28 => sys::chiron_normalize(matrix, [1u32].as_ptr(), 1, 1e-5, far as *mut u32),
            29 => {
                let mut out = [0u32; 3];
                sys::chiron_normalize(matrix, [1u32].as_ptr(), 1, 0.0, out.as_mut_ptr())
            }
            30 => {
                let mut out = [0u32; 3];
                sys::chiron_normalize(matrix, axes9.as_ptr(), 9, 1e-5, out.as_mut_ptr())
            }
            31 => sink(sys::chiron_dropout(matrix, 1.0)),
            32 => sink(sys::chiron_dropout(matrix, f32::NAN)),
            33 => {
                let labels = raw(&[4], 0.0);
                sink(sys::chiron_cross_entropy_smoothed(matrix, labels, 2.0))
            }
            34 => sink(sys::chiron_bce_with_logits(matrix, raw(&[4, 2], 0.0))),
            35 => sink(sys::chiron_set_grad_enabled(2)),
            36 => {
                let w = Tensor::parameter(&[4, 3], Init::Uniform(0.1));
                let mut opt = Optimizer::sgd(&[&w], 0.1, 0.0, 0.0);
                let x = Tensor::from_handle(matrix);
                let labels = Tensor::new(&[0.0, 1.0, 2.0, 0.0], &[4]);
                let loss = chiron_sdk::no_grad(|| x.linear(&w, None).cross_entropy(&labels));
                opt.step(&loss);
            }
            _ => panic!("no misuse {case}"),
        }
    }
    // Reached only if the runtime let the misuse through: save nothing, so the run fails
    // with `NoModel`, which the test tells apart from a refusal.
}

chiron_sdk::export_program!(train = train, predict = predict);
