//! The paper's reconstruction probe (Table 3): how much of the image a frozen representation
//! keeps, as the [`msssim`](super::msssim) of a small decoder trained to rebuild the image from it.
//!
//! The decoder is the usual DCGAN-style generator, small enough to train in seconds a layer on
//! two cores: linear to 64×4×4, ReLU, then three 4×4 transposed convolutions of stride 2
//! (64→32→16→3 channels, 4→8→16→32 pixels; ReLU between, tanh at the end, as the images are in
//! [−1, 1]). It trains with Adam (1e-3, batch 64) on the mean squared error over the train
//! representations (standardised like the probes' inputs) and is scored by MS-SSIM between its
//! images and the originals over the test split. A decoder that ignores its input still scores
//! above 0 (the mean image is not nothing), which is why the report sets an untrained
//! encoder's Y beside the trained one's.

use super::msssim;
use burn::module::Module;
use burn::nn::conv::{ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::{relu, tanh};
use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::StdRng};

const BASE: usize = 64;
const BATCH: usize = 64;
const LEARNING_RATE: f64 = 1e-3;

/// Rebuilds `[n, 3, 32, 32]` images from `[n, dim]` representations.
#[derive(Module, Debug)]
pub struct Decoder {
    fc: Linear,
    up1: ConvTranspose2d,
    up2: ConvTranspose2d,
    up3: ConvTranspose2d,
}

impl Decoder {
    pub fn new(dim: usize, device: &Device) -> Self {
        let up = |i: usize, o: usize| ConvTranspose2dConfig::new([i, o], [4, 4]).with_stride([2, 2]).with_padding([1, 1]).init(device);
        Self { fc: LinearConfig::new(dim, BASE * 16).init(device), up1: up(BASE, BASE / 2), up2: up(BASE / 2, BASE / 4), up3: up(BASE / 4, 3) }
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<4> {
        let n = x.dims()[0];
        let h = relu(self.fc.forward(x)).reshape([n, BASE, 4, 4]);
        tanh(self.up3.forward(relu(self.up2.forward(relu(self.up1.forward(h))))))
    }
}

/// Training data of a probe: representations and their images, row by row.
pub struct Pairs<'a> {
    /// `[n, dim]`.
    pub x: &'a [f32],
    pub dim: usize,
    /// `[n, INPUT_LEN]`, in [−1, 1].
    pub images: &'a [f32],
}

/// Trains a decoder on `train` for `epochs` and returns the mean MS-SSIM of its images of
/// `test` against the originals.
pub fn reconstruction_msssim(train: Pairs, test: Pairs, epochs: usize, seed: u64) -> anyhow::Result<f64> {
    let (dim, px) = (train.dim, dim_runtime::INPUT_LEN);
    let n = train.images.len() / px;
    anyhow::ensure!(n > 0 && train.x.len() == n * dim && test.dim == dim && test.x.len() / dim == test.images.len() / px, "reconstruction: mismatched rows");
    let (xtr, xte) = crate::probe::standardise(train.x, test.x, dim);
    let device = Device::flex().autodiff();
    device.seed(seed);
    let mut decoder = Decoder::new(dim, &device);
    let mut optim = AdamConfig::new().init();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..n).collect();
    for _ in 0..epochs {
        order.shuffle(&mut rng);
        for idx in order.chunks(BATCH) {
            let xb: Vec<f32> = idx.iter().flat_map(|&i| xtr[i * dim..(i + 1) * dim].iter().copied()).collect();
            let tb: Vec<f32> = idx.iter().flat_map(|&i| train.images[i * px..(i + 1) * px].iter().copied()).collect();
            let x = Tensor::from_data(TensorData::new(xb, [idx.len(), dim]), &device);
            let t = Tensor::<4>::from_data(TensorData::new(tb, [idx.len(), 3, 32, 32]), &device);
            let loss = (decoder.forward(x) - t).powi_scalar(2).mean();
            let grads = GradientsParams::from_grads(loss.backward(), &decoder);
            decoder = optim.step(LEARNING_RATE, decoder, grads);
        }
    }
    let decoder = decoder.valid();
    let host = Device::flex();
    let (mut total, mut count) = (0.0, 0usize);
    for (xs, originals) in xte.chunks(1024 * dim).zip(test.images.chunks(1024 * px)) {
        let rows = xs.len() / dim;
        let out = decoder.forward(Tensor::from_data(TensorData::new(xs.to_vec(), [rows, dim]), &host));
        let out: Vec<f32> = out.into_data().try_to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let unit = |v: &[f32]| v.iter().map(|p| ((p + 1.0) / 2.0).clamp(0.0, 1.0)).collect::<Vec<f32>>();
        for (o, t) in out.chunks(px).zip(originals.chunks(px)) {
            total += msssim::ms_ssim(&unit(o), &unit(t));
            count += 1;
        }
    }
    Ok(total / count.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Images that are a function of the representation are rebuilt far better than from a
    /// representation that is noise: the probe sees what the representation keeps.
    #[test]
    fn informative_codes_rebuild_better_than_noise() {
        let (n, dim, px) = (600, 4, dim_runtime::INPUT_LEN);
        let mut rng = StdRng::seed_from_u64(1);
        use rand::Rng;
        // Each image: a horizontal and a vertical gradient of random strengths, and two random
        // colour offsets — four numbers, which the informative code is.
        let codes: Vec<f32> = (0..n * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
        let images: Vec<f32> = (0..n)
            .flat_map(|i| {
                let c = &codes[i * dim..(i + 1) * dim];
                (0..px).map(move |p| {
                    let (ch, y, x) = (p / 1024, (p / 32) % 32, p % 32);
                    let v = c[0] * (x as f32 / 31.0 - 0.5) + c[1] * (y as f32 / 31.0 - 0.5) + if ch == 0 { c[2] } else { c[3] } * 0.5;
                    v.clamp(-1.0, 1.0)
                })
            })
            .collect();
        let noise: Vec<f32> = (0..n * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
        fn rows<'a>(x: &'a [f32], images: &'a [f32], dim: usize, lo: usize, hi: usize) -> Pairs<'a> {
            let px = dim_runtime::INPUT_LEN;
            Pairs { x: &x[lo * dim..hi * dim], dim, images: &images[lo * px..hi * px] }
        }
        let split = 500;
        let score = |x: &[f32]| reconstruction_msssim(rows(x, &images, dim, 0, split), rows(x, &images, dim, split, n), 8, 0).unwrap();
        let (good, blind) = (score(&codes), score(&noise));
        assert!(good > blind + 0.1, "informative {good:.3} vs noise {blind:.3}");
        assert!((0.0..=1.0).contains(&blind) && good <= 1.0);
    }
}
