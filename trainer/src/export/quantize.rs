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

use super::qmodel::{IMAGE_SCALE, IMAGE_ZERO, QModel};
use super::{Graph, Layers};
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::prelude::*;

/// Calibrated ranges of the quantized activations.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Ranges {
    pub relu: [f32; 3],
    pub pool: Option<f32>,
    pub fc: f32,
    /// Largest |y| over the calibration images (the scale y is printed with as int8).
    pub y_abs: f32,
}

/// Bytes of int32 kernel that tract folds into constants (tract-core `CONST_FOLD_MEM_BUDGET`).
const FOLD_BUDGET: usize = 4 << 20;

fn percentile(mut v: Vec<f32>, p: f64) -> f32 {
    if v.is_empty() {
        return 1.0;
    }
    let k = (((v.len() - 1) as f64) * p / 100.0).round() as usize;
    let (_, x, _) = v.select_nth_unstable_by(k, f32::total_cmp);
    x.max(1e-6)
}

/// Runs the f32 encoder on `images` (`[n, 3, 32, 32]`) and returns the activation ranges.
pub fn calibrate(layers: &Layers, images: &[f32], pct: f64) -> anyhow::Result<Ranges> {
    let mut names = vec!["relu1", "relu2", "relu3", "fc_relu"];
    if layers.global_pool {
        names.push("pool");
    }
    let bytes = layers.to_onnx(&names);
    let plan = tract_onnx::onnx().model_for_read(&mut &bytes[..])?.into_optimized()?.into_runnable()?;
    let mut values: Vec<Vec<f32>> = vec![Vec::new(); names.len()];
    let mut y_abs = 0f32;
    for chunk in images.chunks(64 * 3072) {
        let t = Tensor::from_shape(&[chunk.len() / 3072, 3, 32, 32], chunk)?;
        let out = plan.run(tvec!(t.into_tvalue()))?;
        y_abs = out[0].to_plain_array_view::<f32>()?.iter().fold(y_abs, |m, v| m.max(v.abs()));
        for (i, v) in values.iter_mut().enumerate() {
            v.extend(out[i + 1].to_plain_array_view::<f32>()?.iter().copied());
        }
    }
    let mut r = values.into_iter().map(|v| percentile(v, pct));
    Ok(Ranges { relu: [r.next().unwrap(), r.next().unwrap(), r.next().unwrap()], fc: r.next().unwrap(), pool: r.next(), y_abs })
}

/// Writes the int8 graph of `q`. Input and output are f32, exactly like the f32 export.
pub fn to_int8_onnx(q: &QModel) -> Vec<u8> {
    let mut g = Graph::new("dim_encoder_int8");
    g.input("image", &[None, Some(3), Some(32), Some(32)]);
    let s_img = g.f32_tensor("image.scale", &[], &[IMAGE_SCALE]);
    // uint8 with zero point 128, not int8: onnxruntime implements QLinearConv only when input
    // and output share a type, and every later activation is uint8.
    let z_img = g.u8_tensor("image.zero", &[], &[IMAGE_ZERO]);
    let mut x = g.node("QuantizeLinear", &["image", &s_img, &z_img], "image_q", vec![]);
    let (mut xs, mut xz) = (s_img, z_img);
    let zero = g.u8_tensor("act.zero", &[], &[0]);
    for (i, c) in q.convs.iter().enumerate() {
        let n = i + 1;
        let o = c.dims[0];
        let w = g.i8_tensor(&format!("conv{n}.weight_q"), &c.dims, &c.weight);
        let w_s = g.f32_tensor(&format!("conv{n}.weight_scale"), &[o], &c.w_scale);
        let w_z = g.i8_tensor(&format!("conv{n}.weight_zero"), &[o], &vec![0; o]);
        let b = g.i32_tensor(&format!("conv{n}.bias_q"), &[o], &c.bias);
        let y_s = g.f32_tensor(&format!("relu{n}.scale"), &[], &[c.y_scale]);
        let k = c.dims[2] as i64;
        x = g.node("QLinearConv", &[&x, &xs, &xz, &w, &w_s, &w_z, &y_s, &zero, &b], &format!("relu{n}_q"), super::conv_attrs(k));
        (xs, xz) = (y_s, zero.clone());
    }
    // The probe layers, as in the f32 export (see `export::PROBE_LAYERS`), dequantized.
    let conv_tap = g.node("DequantizeLinear", &[&x, &xs, &xz], "relu3", vec![]);
    if let Some(pool) = q.pool_scale {
        let p = g.node("GlobalAveragePool", &[&conv_tap], "pool", vec![]);
        xs = g.f32_tensor("pool.scale", &[], &[pool]);
        x = g.node("QuantizeLinear", &[&p, &xs, &xz], "pool_q", vec![]);
    }
    // The fully connected layer as QLinearConv with a kernel covering the whole feature map
    // (`[N, C, h, w]` → `[N, 1024, 1, 1]`), in groups of output channels joined by Concat.
    // Why: tract corrects for the input zero point with the kernel's per-channel sums, and it
    // precomputes those only when the int32 copy of the kernel fits its 4 MiB constant-folding
    // budget (tract-core `CONST_FOLD_MEM_BUDGET`); otherwise it re-sums the 4096×1024 kernel
    // on every run (dim32 batch 1: 50 ms as one MatMulInteger, 4.6 ms as one QLinearConv).
    let fc = &q.fc;
    let [o, c, side, _] = fc.dims;
    let k = c * side * side;
    let y_s = g.f32_tensor("fc.scale", &[], &[fc.y_scale]);
    let group = (FOLD_BUDGET / (4 * k)).clamp(1, o);
    let mut parts = Vec::new();
    for (gi, start) in (0..o).step_by(group).enumerate() {
        let n = group.min(o - start);
        let w = g.i8_tensor(&format!("fc.{gi}.weight_q"), &[n, c, side, side], &fc.weight[start * k..(start + n) * k]);
        let w_s = g.f32_tensor(&format!("fc.{gi}.weight_scale"), &[n], &fc.w_scale[start..start + n]);
        let w_z = g.i8_tensor(&format!("fc.{gi}.weight_zero"), &[n], &vec![0; n]);
        let b = g.i32_tensor(&format!("fc.{gi}.bias_q"), &[n], &fc.bias[start..start + n]);
        let attrs = vec![super::ints_attr("kernel_shape", &[side as i64, side as i64])];
        parts.push(g.node("QLinearConv", &[&x, &xs, &xz, &w, &w_s, &w_z, &y_s, &zero, &b], &format!("fc_q.{gi}"), attrs));
    }
    x = match parts.as_slice() {
        [one] => one.clone(),
        _ => g.node("Concat", &parts.iter().map(String::as_str).collect::<Vec<_>>(), "fc_q", vec![super::int_attr("axis", 1)]),
    };
    g.node("DequantizeLinear", &[&x, &y_s, &zero], "fc_relu", vec![]);
    x = g.node("Flatten", &[&x], "fc_flat_q", vec![super::int_attr("axis", 1)]);
    // y: exact int32 accumulation; the bias is added in f32 after rescaling (QLinearMatMul has
    // no bias input, and y itself stays f32).
    let y = &q.y;
    let cols = y.dims[1];
    let w = g.i8_tensor("y.weight_q", &y.dims, &y.weight);
    let w_z = g.i8_tensor("y.weight_zero", &[], &[0]);
    let acc = g.node("MatMulInteger", &[&x, &w, &zero, &w_z], "y_acc", vec![]);
    let accf = g.node("Cast", &[&acc], "y_accf", vec![super::int_attr("to", DataType::Float as i64)]);
    let r = g.f32_tensor("y.rescale", &[cols], &y.rescale);
    let b = g.f32_tensor("y.bias", &[cols], &y.bias);
    let m = g.node("Mul", &[&accf, &r], "y_scaled", vec![]);
    g.node("Add", &[&m, &b], "y", vec![]);
    g.output("y", &[None, Some(cols as i64)]);
    super::PROBE_LAYERS.iter().for_each(|name| g.output_any(name));
    g.into_bytes(&format!("{} (int8: per-channel weights, calibrated activations)", super::DOC))
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
    use super::*;
    use crate::export::qmodel::quantize_weights;

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

/// What `trainer quantize` measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub calibration_images: usize,
    pub percentile: f64,
    pub ranges: Ranges,
    pub validation_images: usize,
    pub mean_cosine: f64,
    pub worst_cosine: f64,
    pub f32_bytes: usize,
    pub int8_bytes: usize,
}

/// Quantizes an f32 export: calibrates on `calib`, reports cosine(Y_int8, Y_f32) on `val`.
/// The outputs of [`quantize`]: the int8 ONNX file, the engine blob (same integers) and the report.
pub struct Quantized {
    pub onnx: Vec<u8>,
    pub blob: Vec<u8>,
    pub report: Report,
}

pub fn quantize(f32_onnx: &[u8], calib: &[f32], val: &[f32], pct: f64) -> anyhow::Result<Quantized> {
    let layers = Layers::from_onnx(f32_onnx)?;
    let ranges = calibrate(&layers, calib, pct)?;
    let qm = QModel::new(&layers, &ranges);
    let int8 = to_int8_onnx(&qm);
    let f = dim_runtime::Encoder::from_bytes(f32_onnx)?;
    let q = dim_runtime::Encoder::from_bytes(&int8).map_err(|e| anyhow::anyhow!("the int8 model does not load in tract: {e}"))?;
    let (mut yf, mut yq) = (Vec::new(), Vec::new());
    for chunk in val.chunks(256 * 3072) {
        yf.extend(f.embed_preprocessed(chunk)?);
        yq.extend(q.embed_preprocessed(chunk)?);
    }
    let cos = cosines(&yq, &yf, f.dim());
    let report = Report {
        calibration_images: calib.len() / 3072,
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
