//! The kNN figure `fit` prints when it ends: Y of the trained encoder against Y of a randomly
//! initialised one, on the validation split (burn, before any export).

use super::config::TrainConfig;
use crate::data::{Augment, ImageSource, Loader, LoaderConfig};
use crate::knn::knn_accuracy;
use crate::model::{DimModel, EncoderNet};
use burn::module::Module;
use burn::prelude::*;
use std::sync::Arc;

/// kNN accuracies (k = 20, cosine) of [`knn_report`], as `OUT/knn.json` and a metrics line hold them.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KnnReport {
    pub trained: f64,
    pub random_init: f64,
    pub bank_images: usize,
    pub validation_images: usize,
}

/// Y for each image of `indices` (row-major `[n, y_dim]`) and the labels.
pub fn embed(encoder: &EncoderNet, source: Arc<dyn ImageSource>, indices: Vec<usize>, device: &Device) -> anyhow::Result<(Vec<f32>, Vec<usize>)> {
    let loader = Loader::new(
        source,
        indices,
        LoaderConfig { batch_size: 256, shuffle: false, drop_last: false, augment: Augment::default(), skip_bad: true, prefetch: 2, seed: 0, views: 1 },
    );
    let (mut feats, mut labels) = (Vec::new(), Vec::new());
    for batch in loader.epoch(0, 0) {
        let batch = batch?;
        let x = Tensor::<4>::from_data(TensorData::new(batch.images, [batch.labels.len(), 3, 32, 32]), device);
        let y: Vec<f32> = encoder.forward(x).y.into_data().try_to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        feats.extend(y);
        labels.extend(batch.labels);
    }
    Ok((feats, labels))
}

/// kNN accuracy on Y (validation split) of the trained encoder and of a fresh one of the same shape.
pub fn knn_report(
    config: &TrainConfig,
    model: &DimModel,
    source: Arc<dyn ImageSource>,
    train_idx: &[usize],
    val_idx: &[usize],
    bank_size: usize,
    device: &Device,
) -> anyhow::Result<KnnReport> {
    let plain = device.clone().inner();
    let bank: Vec<usize> = train_idx.iter().copied().take(bank_size).collect();
    let accuracy = |enc: &EncoderNet| -> anyhow::Result<f64> {
        let (bf, bl) = embed(enc, source.clone(), bank.clone(), &plain)?;
        let (vf, vl) = embed(enc, source.clone(), val_idx.to_vec(), &plain)?;
        knn_accuracy(&bf, &bl, &vf, &vl, config.encoder().y_dim, 20)
    };
    Ok(KnnReport {
        trained: accuracy(&model.encoder.valid())?,
        random_init: accuracy(&super::state::random_encoder(config, &plain))?,
        bank_images: bank.len(),
        validation_images: val_idx.len(),
    })
}
