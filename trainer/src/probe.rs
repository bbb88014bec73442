//! Classifier probes on frozen representations (the paper's protocol), used by `eval` and by
//! `fit`'s online monitor.
//!
//! - nonlinear: linear 200, BatchNorm, dropout 0.1, ReLU, linear to the classes;
//! - linear: one linear layer (multinomial logistic regression).
//!
//! Both train with Adam (1e-4, batch 64, as in the paper) on the train representations and are
//! scored on the test representations after every epoch; the reported accuracy is the last
//! epoch's, the curve holds all of them. Features are standardised with the train statistics
//! first, so one learning rate serves conv, fc and Y alike.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::relu;
use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::StdRng};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    Linear,
    Nonlinear,
}

#[derive(Config, Debug)]
pub struct ProbeConfig {
    #[config(default = 20)]
    pub epochs: usize,
    #[config(default = 64)]
    pub batch_size: usize,
    #[config(default = 1e-4)]
    pub learning_rate: f64,
    #[config(default = 0)]
    pub seed: u64,
}

#[derive(Module, Debug)]
pub struct Probe {
    hidden: Option<(Linear, BatchNorm)>,
    dropout: Dropout,
    out: Linear,
}

impl Probe {
    pub fn new(kind: ProbeKind, input: usize, classes: usize, device: &Device) -> Self {
        let (hidden, width) = match kind {
            ProbeKind::Linear => (None, input),
            ProbeKind::Nonlinear => (Some((LinearConfig::new(input, 200).init(device), BatchNormConfig::new(200).init(device))), 200),
        };
        Self { hidden, dropout: DropoutConfig::new(0.1).init(), out: LinearConfig::new(width, classes).init(device) }
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        match &self.hidden {
            Some((linear, bn)) => self.out.forward(relu(self.dropout.forward(bn.forward(linear.forward(x))))),
            None => self.out.forward(x),
        }
    }
}

/// Labelled rows `[n, dim]`.
pub struct Rows<'a> {
    pub x: &'a [f32],
    pub labels: &'a [usize],
    pub dim: usize,
}

/// Final test accuracy and the per-epoch test accuracies.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ProbeResult {
    pub accuracy: f64,
    pub curve: Vec<f64>,
}

/// Standardises the columns of `train` and `test` (`[n, dim]` row-major) with `train`'s mean
/// and standard deviation.
pub fn standardise(train: &[f32], test: &[f32], dim: usize) -> (Vec<f32>, Vec<f32>) {
    let n = (train.len() / dim).max(1) as f64;
    let mut mean = vec![0f64; dim];
    let mut sq = vec![0f64; dim];
    for row in train.chunks(dim) {
        for (j, &v) in row.iter().enumerate() {
            mean[j] += v as f64;
            sq[j] += (v as f64) * (v as f64);
        }
    }
    let m: Vec<f32> = mean.iter().map(|s| (s / n) as f32).collect();
    let inv: Vec<f32> = sq.iter().zip(&mean).map(|(q, s)| (1.0 / ((q / n - (s / n).powi(2)).max(0.0).sqrt() + 1e-6)) as f32).collect();
    let apply = |x: &[f32]| x.iter().enumerate().map(|(i, v)| (v - m[i % dim]) * inv[i % dim]).collect();
    (apply(train), apply(test))
}

fn accuracy(probe: &Probe, x: &[f32], labels: &[usize], dim: usize, device: &Device) -> f64 {
    let mut correct = 0;
    for (xs, ls) in x.chunks(1024 * dim).zip(labels.chunks(1024)) {
        let logits = probe.forward(Tensor::from_data(TensorData::new(xs.to_vec(), [ls.len(), dim]), device));
        let pred: Vec<i64> = logits.argmax(1).into_data().convert::<i64>().try_to_vec::<i64>().unwrap_or_default();
        correct += pred.iter().zip(ls).filter(|(p, l)| **p as usize == **l).count();
    }
    correct as f64 / labels.len().max(1) as f64
}

/// Trains a probe of `kind` on `train` and scores it on `test` after every epoch.
pub fn train_probe(kind: ProbeKind, config: &ProbeConfig, train: Rows<'_>, test: Rows<'_>, classes: usize) -> anyhow::Result<ProbeResult> {
    let dim = train.dim;
    anyhow::ensure!(test.dim == dim && !train.labels.is_empty(), "probe: empty or mismatched representations");
    let (xtr, xte) = standardise(train.x, test.x, dim);
    let device = Device::flex().autodiff();
    device.seed(config.seed);
    let mut probe = Probe::new(kind, dim, classes, &device);
    let mut optim = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut order: Vec<usize> = (0..train.labels.len()).collect();
    let mut curve = Vec::new();
    for _ in 0..config.epochs {
        order.shuffle(&mut rng);
        // A last batch of one would give BatchNorm no variance to normalise by.
        for idx in order.chunks(config.batch_size).filter(|c| c.len() > 1) {
            let xb: Vec<f32> = idx.iter().flat_map(|&i| xtr[i * dim..(i + 1) * dim].iter().copied()).collect();
            let yb: Vec<i64> = idx.iter().map(|&i| train.labels[i] as i64).collect();
            let x = Tensor::from_data(TensorData::new(xb, [idx.len(), dim]), &device);
            let y = Tensor::<1, Int>::from_data(TensorData::new(yb, [idx.len()]), &device);
            let loss = loss_fn.forward(probe.forward(x), y);
            let grads = GradientsParams::from_grads(loss.backward(), &probe);
            probe = optim.step(config.learning_rate, probe, grads);
        }
        curve.push(accuracy(&probe.valid(), &xte, test.labels, dim, &Device::flex()));
    }
    Ok(ProbeResult { accuracy: curve.last().copied().unwrap_or(0.0), curve })
}

#[cfg(test)]
mod tests {
    /// Hand-computed: column 0 is 1, 2, 3 (mean 2, std √(2/3)), column 1 the constant 5, which
    /// becomes 0; the test rows use the train statistics.
    #[test]
    fn standardise_uses_the_train_statistics_and_zeroes_constant_columns() {
        let (train, test) = super::standardise(&[1.0, 5.0, 2.0, 5.0, 3.0, 5.0], &[4.0, 5.0], 2);
        let inv = 1.0 / ((2.0f64 / 3.0).sqrt() + 1e-6);
        let want = [-inv, 0.0, 0.0, 0.0, inv, 0.0].map(|v| v as f32);
        assert!(train.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{train:?}");
        assert!((test[0] - 2.0 * inv as f32).abs() < 1e-6 && test[1] == 0.0, "{test:?}");
    }
}
