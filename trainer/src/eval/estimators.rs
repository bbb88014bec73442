//! MINE and NDM: Donsker-Varadhan estimates with a learned critic.
//!
//! Both train a critic `T` to separate samples of a joint distribution from samples of a product
//! of marginals, and report the DV bound `E_P[T] − log E_Q[e^T]` on held-out rows:
//! - MINE (Belghazi et al. 2018): `I(X; Y)`, P = pairs `(x, y)` of the same image, Q = `x` with
//!   the `y` of another image (a shuffle of the batch). `T(x, y) = MLP([x; y])`.
//! - NDM (Hjelm et al. 2019, §5): `KL(p(y) ‖ Π p(y_i))`, the total correlation of Y's factors:
//!   P = rows of Y, Q = every dimension of Y shuffled independently. `T` = linear 1000–ReLU–200–ReLU–1.
//!
//! The critic maximises the DV bound itself, with Adam and a learning rate that decays linearly
//! to a tenth (as in the paper's MINE), on minibatches of the train rows; the estimate is then
//! computed on the test rows, with every test row paired against 8 shuffles.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::relu;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng, rngs::StdRng};

/// Which estimate; fixes how negatives are made and the critic's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    /// Rows are `[x; y]` with `y` the last `y_dim` columns; negatives shuffle `y` across rows.
    Mine { y_dim: usize },
    /// Rows are Y; negatives shuffle every column independently.
    Ndm,
}

#[derive(Config, Debug)]
pub struct EstimatorConfig {
    #[config(default = 2000)]
    pub steps: usize,
    #[config(default = 256)]
    pub batch_size: usize,
    #[config(default = 1e-4)]
    pub learning_rate: f64,
    /// Hidden widths of the critic MLP.
    pub hidden: Vec<usize>,
    #[config(default = 0)]
    pub seed: u64,
}

impl EstimatorConfig {
    /// The paper's NDM critic (linear 1000–ReLU–200–ReLU–1).
    pub fn ndm() -> Self {
        Self::new(vec![1000, 200])
    }
    /// MINE's critic on `[x; y]`.
    pub fn mine() -> Self {
        Self::new(vec![512, 512])
    }
}

#[derive(Module, Debug)]
pub struct Critic {
    layers: Vec<Linear>,
}

impl Critic {
    fn new(input: usize, hidden: &[usize], device: &Device) -> Self {
        let widths: Vec<usize> = std::iter::once(input).chain(hidden.iter().copied()).chain([1]).collect();
        Self { layers: widths.windows(2).map(|w| LinearConfig::new(w[0], w[1]).init(device)).collect() }
    }
    fn forward(&self, mut x: Tensor<2>) -> Tensor<2> {
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            x = l.forward(x);
            if i < last {
                x = relu(x);
            }
        }
        x
    }
}

/// Negatives for the rows of `batch` (`[n, d]`, row-major), drawn with `rng`.
fn negatives(kind: Kind, batch: &[f32], d: usize, rng: &mut StdRng) -> Vec<f32> {
    let n = batch.len() / d;
    let mut out = batch.to_vec();
    match kind {
        Kind::Mine { y_dim } => {
            let mut perm: Vec<usize> = (0..n).collect();
            perm.shuffle(rng);
            for (i, &j) in perm.iter().enumerate() {
                out[i * d + d - y_dim..(i + 1) * d].copy_from_slice(&batch[j * d + d - y_dim..(j + 1) * d]);
            }
        }
        Kind::Ndm => {
            let mut perm: Vec<usize> = (0..n).collect();
            for c in 0..d {
                perm.shuffle(rng);
                for (i, &j) in perm.iter().enumerate() {
                    out[i * d + c] = batch[j * d + c];
                }
            }
        }
    }
    out
}

/// DV bound `mean(tp) − log mean(exp(tn))`, computed stably.
fn dv(tp: Tensor<2>, tn: Tensor<2>) -> Tensor<1> {
    let n = tn.dims()[0] as f64;
    let m = tn.clone().max().detach();
    let lse = (tn - m.clone().unsqueeze::<2>()).exp().sum().log() + m;
    tp.mean() - (lse - n.ln())
}

/// A trained estimate: the test-set bound and the curve (step, train-batch bound).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Estimate {
    pub value: f64,
    pub curve: Vec<(usize, f64)>,
}

/// Trains a critic on `train` rows (`[n, d]`) and returns the DV bound on `test` rows.
pub fn estimate(kind: Kind, config: &EstimatorConfig, train: &[f32], test: &[f32], d: usize) -> anyhow::Result<Estimate> {
    let n = train.len() / d;
    anyhow::ensure!(n >= 2 && test.len() >= 2 * d, "need at least 2 train and 2 test rows");
    let device = Device::flex().autodiff();
    device.seed(config.seed);
    let mut rng = StdRng::seed_from_u64(config.seed ^ 0x5EED_0FD1);
    let mut critic = Critic::new(d, &config.hidden, &device);
    let mut optim = AdamConfig::new().init();
    let bs = config.batch_size.min(n);
    let mut curve = Vec::new();
    let mut smooth = None::<f64>;
    for step in 0..config.steps {
        let rows: Vec<usize> = (0..bs).map(|_| rng.random_range(0..n)).collect();
        let batch: Vec<f32> = rows.iter().flat_map(|&r| train[r * d..(r + 1) * d].iter().copied()).collect();
        let neg = negatives(kind, &batch, d, &mut rng);
        let tp = critic.forward(Tensor::from_data(TensorData::new(batch, [bs, d]), &device));
        let tn = critic.forward(Tensor::from_data(TensorData::new(neg, [bs, d]), &device));
        let bound = dv(tp, tn);
        let v = bound.clone().into_scalar::<f32>() as f64;
        anyhow::ensure!(v.is_finite(), "the estimator's critic diverged at step {step}; lower its learning rate");
        smooth = Some(smooth.map_or(v, |s| 0.98 * s + 0.02 * v));
        if step % 50 == 0 || step + 1 == config.steps {
            curve.push((step, smooth.unwrap()));
        }
        let lr = config.learning_rate * (1.0 - 0.9 * step as f64 / config.steps as f64);
        let grads = GradientsParams::from_grads((-bound).backward(), &critic);
        critic = optim.step(lr, critic, grads);
    }
    let critic = critic.valid();
    let cpu = Device::flex();
    let m = test.len() / d;
    let (mut pos, mut neg) = (Vec::with_capacity(m), Vec::with_capacity(8 * m));
    let score = |rows: Vec<f32>| -> anyhow::Result<Vec<f32>> {
        let k = rows.len() / d;
        critic.forward(Tensor::from_data(TensorData::new(rows, [k, d]), &cpu)).into_data().try_to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))
    };
    for chunk in test.chunks(1024 * d) {
        pos.extend(score(chunk.to_vec())?);
    }
    for _ in 0..8 {
        // Shuffle across the whole test set, not one chunk, so negatives are as independent as they can be.
        let shuffled = negatives(kind, test, d, &mut rng);
        for chunk in shuffled.chunks(1024 * d) {
            neg.extend(score(chunk.to_vec())?);
        }
    }
    let mean_pos = pos.iter().map(|&v| v as f64).sum::<f64>() / m as f64;
    let max = neg.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64));
    let lme = max + (neg.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>() / neg.len() as f64).ln();
    Ok(Estimate { value: mean_pos - lme, curve })
}

/// Rows `[x; y]` for MINE from `x` (`[n, dx]`) and `y` (`[n, dy]`).
pub fn concat_rows(x: &[f32], dx: usize, y: &[f32], dy: usize) -> Vec<f32> {
    x.chunks(dx).zip(y.chunks(dy)).flat_map(|(a, b)| a.iter().chain(b).copied()).collect()
}

/// `n` samples of `d` correlated Gaussian pairs: `y_i = ρ x_i + √(1−ρ²) ε_i`; I(X;Y) = −d/2·ln(1−ρ²).
pub fn correlated_gaussians(n: usize, d: usize, rho: f32, seed: u64) -> (Vec<f32>, Vec<f32>) {
    use rand_distr::{Distribution, StandardNormal};
    let mut rng = StdRng::seed_from_u64(seed);
    let x: Vec<f32> = (0..n * d).map(|_| StandardNormal.sample(&mut rng)).collect();
    let s = (1.0 - rho * rho).sqrt();
    let y = x.iter().map(|&v| rho * v + s * <StandardNormal as Distribution<f32>>::sample(&StandardNormal, &mut rng)).collect();
    (x, y)
}
