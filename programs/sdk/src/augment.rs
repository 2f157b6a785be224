//! Data augmentation on batches of images `[N, C, H, W]`, inside the runtime: the program
//! never sees the pixels, so each transform is built from tensor operations, with its random
//! choices drawn from the job's seeded stream (the same seed gives the same run).

use crate::{Rng, Tensor};

fn image_dims(x: &Tensor, what: &str) -> [u32; 4] {
    let shape = x.shape();
    let [n, c, h, w] = shape[..] else {
        panic!("{what} takes images [N, C, H, W], not {shape:?}")
    };
    [n, c, h, w]
}

/// Mirrors each image left to right with probability one half (torchvision's
/// `RandomHorizontalFlip`).
pub fn random_flip(x: &Tensor, rng: &mut Rng) -> Tensor {
    let [n, _, _, w] = image_dims(x, "random_flip");
    let reversed: Vec<f32> = (0..w).rev().map(|i| i as f32).collect();
    let flipped = x.index_select(3, &Tensor::new(&reversed, &[w]));
    let choice: Vec<f32> = (0..n).map(|_| (rng.next_u32() >> 31) as f32).collect();
    let flip = Tensor::new(&choice, &[n, 1, 1, 1]);
    // x + flip · (flipped − x): one of the two per image.
    x.add(&flip.mul(&flipped.sub(x)))
}

/// Pads each side with `pad` zeros and cuts a random window of the original size from each
/// image (torchvision's `RandomCrop(size, padding=pad)`).
pub fn random_crop(x: &Tensor, pad: u32, rng: &mut Rng) -> Tensor {
    let [n, c, h, w] = image_dims(x, "random_crop");
    if pad == 0 {
        return x.affine(1.0, 0.0);
    }
    let rows = Tensor::new(&vec![0.0; (n * c * pad * w) as usize], &[n, c, pad, w]);
    let tall = Tensor::concat(&[&rows, x, &rows], 2);
    let cols = Tensor::new(
        &vec![0.0; (n * c * (h + 2 * pad) * pad) as usize],
        &[n, c, h + 2 * pad, pad],
    );
    let padded = Tensor::concat(&[&cols, &tall, &cols], 3);
    let crops: Vec<Tensor> = (0..n)
        .map(|i| {
            let (dy, dx) = (rng.below(2 * pad + 1), rng.below(2 * pad + 1));
            padded.narrow(0, i, 1).narrow(2, dy, h).narrow(3, dx, w)
        })
        .collect();
    let refs: Vec<&Tensor> = crops.iter().collect();
    Tensor::concat(&refs, 0)
}
