//! The online monitor (`fit --monitor-every N`): after every N-th epoch, kNN (k = 20, cosine) and
//! a linear probe on Y over a fixed split — the first 5,000 images of the seeded training split
//! as the bank and the probe's train set, the validation split (its first 5,000) as the test
//! set. It takes seconds on a CPU, so runs of a recipe study can be compared epoch by epoch
//! (what solo-learn and lightly users expect); a model ships on `trainer eval`'s full protocol.

use super::config::TrainConfig;
use super::knn::embed;
use crate::data::ImageSource;
use crate::knn::knn_accuracy;
use crate::model::DimModel;
use crate::probe::{self, ProbeConfig, ProbeKind, Rows};
use burn::module::Module;
use burn::prelude::*;
use std::sync::Arc;

/// Images on each side of the monitor's split.
pub const MONITOR_IMAGES: usize = 5000;

/// What the monitor measured after an epoch (accuracies in %).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MonitorReport {
    /// Epochs finished.
    pub epoch: usize,
    pub knn: f64,
    pub linear_probe: f64,
    pub train_images: usize,
    pub test_images: usize,
    pub seconds: f64,
}

/// Measures the encoder of `model` after `epoch` epochs.
pub fn measure(
    config: &TrainConfig,
    model: &DimModel,
    source: Arc<dyn ImageSource>,
    train_idx: &[usize],
    val_idx: &[usize],
    epoch: usize,
    device: &Device,
) -> anyhow::Result<MonitorReport> {
    let started = std::time::Instant::now();
    let plain = device.clone().inner();
    let encoder = model.encoder.valid();
    let take = |idx: &[usize]| idx.iter().copied().take(MONITOR_IMAGES).collect::<Vec<_>>();
    let (train_y, train_l) = embed(&encoder, source.clone(), take(train_idx), &plain)?;
    let (test_y, test_l) = embed(&encoder, source.clone(), take(val_idx), &plain)?;
    let dim = config.encoder().y_dim;
    let knn = percent(knn_accuracy(&train_y, &train_l, &test_y, &test_l, dim, 20)?);
    let classes = source.classes().len().max(2);
    let (tr, te) = probe::standardise(&train_y, &test_y, dim);
    // The linear probe of `eval` (Adam 1e-3), fewer epochs: a trend, not the reported figure.
    let cfg = ProbeConfig::new().with_epochs(10).with_learning_rate(1e-3);
    let linear = probe::train_probe(ProbeKind::Linear, &cfg, Rows { x: &tr, labels: &train_l, dim }, Rows { x: &te, labels: &test_l, dim }, classes)?;
    Ok(MonitorReport {
        epoch,
        knn,
        linear_probe: percent(linear.accuracy),
        train_images: train_l.len(),
        test_images: test_l.len(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A fraction as a percentage with two decimals: 0.5124 → 51.24 (not 51.239999999999995,
/// which is what `100.0 * 0.5124` prints in `metrics.jsonl`).
fn percent(fraction: f64) -> f64 {
    (fraction * 10_000.0).round() / 100.0
}
