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
//!
//! [`train_paper_probe`] is the official code's classifier instead (rdevon/DIM
//! `cortex_DIM/models/classifier.py` on `MLPClassifier`): linear 200, **dropout 0.1 before**
//! BatchNorm, ReLU, linear to the classes, Adam 1e-4 with β₁ 0.5, batch 64, raw features; trained
//! until its accuracy on a validation part carved from the *training* rows stops improving, and
//! reported on the test rows at that epoch — the epoch is never chosen by the test rows.

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
    /// Dropout between the hidden layer and its BatchNorm (the official order), not after it.
    #[module(skip)]
    dropout_first: bool,
}

impl Probe {
    pub fn new(kind: ProbeKind, input: usize, classes: usize, device: &Device) -> Self {
        let (hidden, width) = match kind {
            ProbeKind::Linear => (None, input),
            ProbeKind::Nonlinear => (Some((LinearConfig::new(input, 200).init(device), BatchNormConfig::new(200).init(device))), 200),
        };
        Self { hidden, dropout: DropoutConfig::new(0.1).init(), out: LinearConfig::new(width, classes).init(device), dropout_first: false }
    }

    /// The official classifier: linear 200, dropout 0.1, BatchNorm, ReLU, linear.
    pub fn paper(input: usize, classes: usize, device: &Device) -> Self {
        Self { dropout_first: true, ..Self::new(ProbeKind::Nonlinear, input, classes, device) }
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        match &self.hidden {
            Some((linear, bn)) if self.dropout_first => self.out.forward(relu(bn.forward(self.dropout.forward(linear.forward(x))))),
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

/// When the paper protocol stops and how much of the training rows it holds out.
#[derive(Debug, Clone, Copy)]
pub struct PaperProtocol {
    /// Epochs without a better validation accuracy before it stops.
    pub patience: usize,
    /// Upper bound on the epochs.
    pub max_epochs: usize,
    /// Share of the training rows held out to choose the epoch.
    pub validation_share: f64,
    pub seed: u64,
}

impl Default for PaperProtocol {
    fn default() -> Self {
        Self { patience: 10, max_epochs: 200, validation_share: 0.1, seed: 0 }
    }
}

/// A paper-protocol probe's outcome: the test accuracy at the epoch the validation part chose.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PaperProbeResult {
    /// Test accuracy at [`Self::epoch`].
    pub accuracy: f64,
    /// The epoch (1-based) with the best validation accuracy.
    pub epoch: usize,
    /// `(validation, test)` accuracy after every epoch.
    pub curve: Vec<(f64, f64)>,
}

/// Trains the official classifier (see the module doc) on `train` minus a held-out validation
/// part, stops `patience` epochs after its best validation accuracy, and reports the test
/// accuracy of that best epoch.
pub fn train_paper_probe(protocol: &PaperProtocol, train: Rows<'_>, test: Rows<'_>, classes: usize) -> anyhow::Result<PaperProbeResult> {
    let dim = train.dim;
    let n = train.labels.len();
    let held = ((n as f64 * protocol.validation_share).round() as usize).clamp(1, n.saturating_sub(2));
    anyhow::ensure!(test.dim == dim && n >= 4, "paper probe: too few or mismatched representations ({n} rows)");
    let mut rows: Vec<usize> = (0..n).collect();
    rows.shuffle(&mut StdRng::seed_from_u64(protocol.seed ^ 0x9A9E_7B0B));
    let (fit_rows, val_rows) = rows.split_at(n - held);
    let gather = |idx: &[usize]| -> (Vec<f32>, Vec<usize>) {
        (idx.iter().flat_map(|&i| train.x[i * dim..(i + 1) * dim].iter().copied()).collect(), idx.iter().map(|&i| train.labels[i]).collect())
    };
    let (xv, lv) = gather(val_rows);
    let device = Device::flex().autodiff();
    device.seed(protocol.seed);
    let mut probe = Probe::paper(dim, classes, &device);
    let mut optim = AdamConfig::new().with_beta_1(0.5).init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut rng = StdRng::seed_from_u64(protocol.seed);
    let mut order = fit_rows.to_vec();
    let (mut curve, mut best) = (Vec::new(), (f64::NEG_INFINITY, 0usize));
    for epoch in 1..=protocol.max_epochs {
        order.shuffle(&mut rng);
        for idx in order.chunks(64).filter(|c| c.len() > 1) {
            let xb: Vec<f32> = idx.iter().flat_map(|&i| train.x[i * dim..(i + 1) * dim].iter().copied()).collect();
            let yb: Vec<i64> = idx.iter().map(|&i| train.labels[i] as i64).collect();
            let x = Tensor::from_data(TensorData::new(xb, [idx.len(), dim]), &device);
            let y = Tensor::<1, Int>::from_data(TensorData::new(yb, [idx.len()]), &device);
            let loss = loss_fn.forward(probe.forward(x), y);
            let grads = GradientsParams::from_grads(loss.backward(), &probe);
            probe = optim.step(1e-4, probe, grads);
        }
        let eval = probe.valid();
        let (val, tst) = (accuracy(&eval, &xv, &lv, dim, &Device::flex()), accuracy(&eval, test.x, test.labels, dim, &Device::flex()));
        curve.push((val, tst));
        if val > best.0 {
            best = (val, epoch);
        } else if epoch - best.1 >= protocol.patience {
            break;
        }
    }
    Ok(PaperProbeResult { accuracy: curve[best.1 - 1].1, epoch: best.1, curve })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two separable classes: the paper probe learns them, picks its epoch on the validation part
    /// and reports the test accuracy of that epoch.
    #[test]
    fn paper_probe_reports_the_test_accuracy_of_the_best_validation_epoch() {
        // Class = sign of the first feature; the second is noise.
        let rows = |n: usize, seed: u64| {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut x = Vec::new();
            let mut l = Vec::new();
            for i in 0..n {
                let c = i % 2;
                x.push(if c == 1 { 1.0 } else { -1.0 } * (0.5 + rand::Rng::random::<f32>(&mut rng)));
                x.push(rand::Rng::random::<f32>(&mut rng) - 0.5);
                l.push(c);
            }
            (x, l)
        };
        // Enough rows for Adam 1e-4 to learn it in a few epochs (about 42 batches an epoch).
        let ((xtr, ltr), (xte, lte)) = (rows(3000, 1), rows(400, 2));
        let protocol = PaperProtocol { patience: 4, max_epochs: 30, ..Default::default() };
        let r = train_paper_probe(&protocol, Rows { x: &xtr, labels: &ltr, dim: 2 }, Rows { x: &xte, labels: &lte, dim: 2 }, 2).unwrap();
        assert!(r.accuracy > 0.95, "{r:?}");
        let best = r.curve.iter().map(|c| c.0).fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(r.curve[r.epoch - 1].0, best, "the reported epoch has the best validation accuracy");
        assert!(r.curve[..r.epoch - 1].iter().all(|c| c.0 < best), "and is the first to reach it");
        assert_eq!(r.accuracy, r.curve[r.epoch - 1].1);
        assert!(r.curve.len() == protocol.max_epochs || r.curve.len() == r.epoch + protocol.patience, "stops {} epochs after its best", protocol.patience);
    }

    /// Hand-computed: column 0 is 1, 2, 3 (mean 2, std √(2/3)), column 1 the constant 5, which
    /// becomes 0; the test rows use the train statistics.
    #[test]
    fn standardise_uses_the_train_statistics_and_zeroes_constant_columns() {
        let (train, test) = standardise(&[1.0, 5.0, 2.0, 5.0, 3.0, 5.0], &[4.0, 5.0], 2);
        let inv = 1.0 / ((2.0f64 / 3.0).sqrt() + 1e-6);
        let want = [-inv, 0.0, 0.0, 0.0, inv, 0.0].map(|v| v as f32);
        assert!(train.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{train:?}");
        assert!((test[0] - 2.0 * inv as f32).abs() < 1e-6 && test[1] == 0.0, "{test:?}");
    }
}
