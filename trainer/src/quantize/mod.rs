//! `trainer quantize`: post-training static INT8 quantization of an exported encoder.
//!
//! - Weights: per-output-channel symmetric int8 (`scale = max|w| / 127`, zero point 0).
//! - Activations: per-tensor. The
//!   image is uint8 with scale 1/127 and zero point 128 (it lies in `[-1, 1]`). Every
//!   ReLU output is uint8 with zero point 0 and `scale = range / 255`, where `range` is the given
//!   percentile (default 99.99 %) of the activation over the calibration images: clipping the
//!   rare largest values buys resolution for all the others. Saturating at 0 is the ReLU, so
//!   the quantized graph needs no Relu nodes.
//! - Ops: QuantizeLinear, QLinearConv (tract: int8 im2col + integer matmul) for the three
//!   convolutions and for the fully connected layer (a kernel as large as the feature map),
//!   MatMulInteger for `y` (exact int32 accumulation; the bias is added in f32 after rescaling,
//!   since QLinearMatMul has no bias input), DequantizeLinear / GlobalAveragePool for `tiny`'s
//!   pooling. All standard ONNX, opset 13.

pub mod calibrate;
pub mod int8_onnx;
pub mod qmodel;

use crate::data;
use crate::export::Layers;
use anyhow::{Context, ensure};
use calibrate::{Ranges, calibrate};
use dim_runtime::INPUT_LEN;
use int8_onnx::to_int8_onnx;
use qmodel::QModel;
use std::path::PathBuf;

/// What `trainer quantize` measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QuantizeReport {
    pub calibration_images: usize,
    pub percentile: f64,
    pub ranges: Ranges,
    pub validation_images: usize,
    pub mean_cosine: f64,
    pub worst_cosine: f64,
    pub f32_bytes: usize,
    pub int8_bytes: usize,
}

/// The outputs of [`quantize`]: the int8 ONNX file, the engine blob (same integers) and the report.
pub struct Quantized {
    pub onnx: Vec<u8>,
    pub blob: Vec<u8>,
    pub report: QuantizeReport,
}

/// Quantizes an f32 export: calibrates on `calib`, reports cosine(Y_int8, Y_f32) on `val`.
pub fn quantize(f32_onnx: &[u8], calib: &[f32], val: &[f32], pct: f64) -> anyhow::Result<Quantized> {
    let layers = Layers::from_onnx(f32_onnx)?;
    let ranges = calibrate(&layers, calib, pct)?;
    let qm = QModel::new(&layers, &ranges);
    let int8 = to_int8_onnx(&qm);
    let f = dim_runtime::Encoder::from_bytes(f32_onnx)?;
    let q = dim_runtime::Encoder::from_bytes(&int8).map_err(|e| anyhow::anyhow!("the int8 model does not load in tract: {e}"))?;
    let (mut yf, mut yq) = (Vec::new(), Vec::new());
    for chunk in val.chunks(256 * INPUT_LEN) {
        yf.extend(f.embed_preprocessed(chunk)?);
        yq.extend(q.embed_preprocessed(chunk)?);
    }
    let cos = cosines(&yq, &yf, f.dim());
    let report = QuantizeReport {
        calibration_images: calib.len() / INPUT_LEN,
        percentile: pct,
        ranges,
        validation_images: cos.len(),
        mean_cosine: cos.iter().sum::<f64>() / cos.len().max(1) as f64,
        worst_cosine: cos.iter().copied().fold(f64::INFINITY, f64::min),
        f32_bytes: f32_onnx.len(),
        int8_bytes: int8.len(),
    };
    Ok(Quantized { onnx: int8, blob: qm.to_blob(), report })
}

/// Cosine similarity of each row pair of two `[n, d]` matrices.
pub fn cosines(a: &[f32], b: &[f32], d: usize) -> Vec<f64> {
    a.chunks(d)
        .zip(b.chunks(d))
        .map(|(x, y)| {
            let dot: f64 = x.iter().zip(y).map(|(p, q)| (*p as f64) * (*q as f64)).sum();
            let nx: f64 = x.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
            let ny: f64 = y.iter().map(|q| (*q as f64).powi(2)).sum::<f64>().sqrt();
            dot / (nx * ny).max(1e-30)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::calibrate::percentile;
    use super::*;
    use crate::quantize::qmodel::quantize_weights;

    #[test]
    fn weight_quantization_is_per_channel_and_symmetric() {
        // Two rows (channels) with different ranges.
        let (q, s) = quantize_weights(&[1.0, -0.5, 0.005, -0.02], 2, false);
        assert_eq!(s, [1.0 / 127.0, 0.02 / 127.0]);
        assert_eq!(q, [127, -64, 32, -127]);
        // Gemm layout [K=2, N=2]: channels are columns.
        let (q, s) = quantize_weights(&[1.0, 0.02, -0.25, -0.005], 2, true);
        assert_eq!(s, [1.0 / 127.0, 0.02 / 127.0]);
        assert_eq!(q, [127, 127, -32, -32]);
    }

    #[test]
    fn percentile_and_cosine_closed_forms() {
        let v: Vec<f32> = (0..=100).map(|i| i as f32).collect();
        assert_eq!(percentile(v.clone(), 100.0), 100.0);
        assert_eq!(percentile(v, 50.0), 50.0);
        let c = cosines(&[1.0, 0.0, 1.0, 1.0], &[2.0, 0.0, -1.0, -1.0], 2);
        assert!((c[0] - 1.0).abs() < 1e-12 && (c[1] + 1.0).abs() < 1e-12);
    }
}

/// What `trainer quantize` is asked to do (see `trainer quantize --help`).
#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    /// The f32 encoder from `trainer export`.
    pub model: PathBuf,
    /// Calibration data (any format `fit --data` reads).
    pub calib: PathBuf,
    pub out: PathBuf,
    pub calib_images: usize,
    /// Activation range = this percentile of the calibration activations, in (0, 100].
    pub percentile: f64,
    pub validation_size: usize,
    /// Seed of the train / validation split (the training run's).
    pub seed: u64,
    /// Also write the no_std engine's blob here.
    pub blob: Option<PathBuf>,
}

/// What [`run`] wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub report: QuantizeReport,
    pub report_path: PathBuf,
    /// The blob's size and the arena the engine needs for it.
    pub blob: Option<(usize, usize)>,
}

/// `trainer quantize`: calibrates on the first `calib_images` of the seeded training split of
/// `calib`, measures cosine(Y_int8, Y_f32) on its validation split, writes the int8 file, its
/// report (`OUT` with extension `.quantize.json`) and optionally the engine blob.
pub fn run(o: &QuantizeOptions) -> anyhow::Result<Written> {
    ensure!(o.percentile > 0.0 && o.percentile <= 100.0, "--percentile {} is not a percentile: use a value in (0, 100], e.g. 99.99", o.percentile);
    ensure!(o.calib_images > 0, "--calib-images 0 leaves nothing to calibrate on: use at least a few hundred images (default 512)");
    ensure!(o.validation_size > 0, "--validation-size 0 leaves nothing to measure the int8 encoder on (default 5000)");
    let f32_bytes = std::fs::read(&o.model).with_context(|| format!("cannot read {}", o.model.display()))?;
    let source = data::open(&o.calib)?;
    let (train_idx, val_idx) = data::split(source.len(), o.validation_size, o.seed);
    let cal = data::load_inputs(&*source, &train_idx[..o.calib_images.min(train_idx.len())])?;
    let val = data::load_inputs(&*source, &val_idx)?;
    eprintln!("calibrating on {} images, validating on {}", cal.len() / INPUT_LEN, val.len() / INPUT_LEN);
    let q = quantize(&f32_bytes, &cal, &val, o.percentile).with_context(|| format!("quantizing {}", o.model.display()))?;
    crate::fs::write_atomic(&o.out, &q.onnx)?;
    let blob = match &o.blob {
        Some(path) => {
            let m = dim_runtime::engine::Model::parse(&q.blob).map_err(|e| anyhow::anyhow!("the blob does not parse: {e}"))?;
            crate::fs::write_atomic(path, &q.blob)?;
            Some((q.blob.len(), m.arena_size()))
        }
        None => None,
    };
    let report_path = o.out.with_extension("quantize.json");
    crate::fs::write_atomic(&report_path, &serde_json::to_vec_pretty(&q.report)?)?;
    Ok(Written { report: q.report, report_path, blob })
}
