//! `trainer export`: a trained encoder as a standard ONNX file.
//!
//! BatchNorm is folded into the preceding conv / linear layer (running statistics, as in
//! inference), so the graph is Conv, Relu, Flatten / GlobalAveragePool and Gemm only — opset 13,
//! input `image` f32 `[N, 3, 32, 32]` in `[-1, 1]`, output `y` `[N, 64]`, then the probe layers
//! `relu3` and `fc_relu` (see [`PROBE_LAYERS`]) and optionally `relu2`, the `[N, C, 8, 8]` local map.

mod onnx;

use crate::model::EncoderNet;
use crate::model::encoder::ConvBlock;
use burn::nn::{BatchNorm, Linear};
use burn::prelude::*;
pub use onnx::{Graph, OPSET, conv_attrs, int_attr, ints_attr};

/// A layer with BatchNorm folded in: `weight` in ONNX layout (conv `[O, I, k, k]`, Gemm `[K, N]`).
#[derive(Debug, Clone)]
pub struct Folded {
    pub weight: Vec<f32>,
    pub dims: Vec<usize>,
    pub bias: Vec<f32>,
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 tensor")
}

/// Per-channel `(scale, shift)` such that `bn(x) = scale · x + shift`.
fn bn_affine(bn: &BatchNorm) -> (Vec<f32>, Vec<f32>) {
    let (g, b) = (values(bn.gamma.val()), values(bn.beta.val()));
    let (m, v) = (values(bn.running_mean.value()), values(bn.running_var.value()));
    let scale: Vec<f32> = g.iter().zip(&v).map(|(g, v)| g / (v + bn.epsilon as f32).sqrt()).collect();
    let shift = b.iter().zip(&m).zip(&scale).map(|((b, m), s)| b - m * s).collect();
    (scale, shift)
}

pub fn fold_conv(block: &ConvBlock) -> Folded {
    let w = block.conv.weight.val();
    let dims = w.dims().to_vec();
    let mut weight = values(w);
    let bias = block.conv.bias.as_ref().map(|b| values(b.val())).unwrap_or_else(|| vec![0.0; dims[0]]);
    let (scale, shift) = bn_affine(&block.bn);
    let per_out = weight.len() / dims[0];
    for (o, chunk) in weight.chunks_mut(per_out).enumerate() {
        chunk.iter_mut().for_each(|w| *w *= scale[o]);
    }
    let bias = bias.iter().zip(&scale).zip(&shift).map(|((b, s), t)| b * s + t).collect();
    Folded { weight, dims, bias }
}

/// A linear layer (burn stores `[in, out]`, which is Gemm's `B` without transposition),
/// optionally followed by a BatchNorm to fold.
pub fn fold_linear(linear: &Linear, bn: Option<&BatchNorm>) -> Folded {
    let w = linear.weight.val();
    let dims = w.dims().to_vec();
    let mut weight = values(w);
    let mut bias = linear.bias.as_ref().map(|b| values(b.val())).unwrap_or_else(|| vec![0.0; dims[1]]);
    if let Some(bn) = bn {
        let (scale, shift) = bn_affine(bn);
        for row in weight.chunks_mut(dims[1]) {
            row.iter_mut().zip(&scale).for_each(|(w, s)| *w *= s);
        }
        bias = bias.iter().zip(&scale).zip(&shift).map(|((b, s), t)| b * s + t).collect();
    }
    Folded { weight, dims, bias }
}

/// An encoder as deployed: BatchNorm folded, ready to be written as ONNX (f32 or int8).
#[derive(Debug, Clone)]
pub struct Layers {
    pub convs: [Folded; 3],
    pub fc: Folded,
    pub y: Folded,
    pub global_pool: bool,
}

impl Layers {
    pub fn from_encoder(encoder: &EncoderNet) -> Self {
        Self {
            convs: [fold_conv(&encoder.conv1), fold_conv(&encoder.conv2), fold_conv(&encoder.conv3)],
            fc: fold_linear(&encoder.fc, Some(&encoder.fc_bn)),
            y: fold_linear(&encoder.y, None),
            global_pool: encoder.global_pool,
        }
    }

    /// Reads back an f32 encoder written by [`to_onnx`] (the input of `trainer quantize`).
    pub fn from_onnx(bytes: &[u8]) -> anyhow::Result<Self> {
        use prost::Message;
        let model = tract_onnx::pb::ModelProto::decode(bytes).map_err(|e| anyhow::anyhow!("not an ONNX file: {e}"))?;
        let graph = model.graph.ok_or_else(|| anyhow::anyhow!("ONNX file has no graph"))?;
        let init: std::collections::HashMap<&str, &tract_onnx::pb::TensorProto> = graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
        let tensor = |name: &str| -> anyhow::Result<(Vec<usize>, Vec<f32>)> {
            let t = init.get(name).ok_or_else(|| anyhow::anyhow!("initializer `{name}` missing"))?;
            let data = if t.float_data.is_empty() {
                t.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
            } else {
                t.float_data.clone()
            };
            let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
            anyhow::ensure!(dims.iter().product::<usize>() == data.len(), "initializer `{name}`: shape and data disagree");
            Ok((dims, data))
        };
        let layer = |op: &str, k: usize| -> anyhow::Result<Folded> {
            let node = graph.node.iter().filter(|n| n.op_type == op).nth(k).ok_or_else(|| anyhow::anyhow!("expected {} {op} nodes", k + 1))?;
            anyhow::ensure!(node.input.len() == 3, "{op} node `{}` has no bias", node.name);
            let (dims, weight) = tensor(&node.input[1])?;
            let (_, bias) = tensor(&node.input[2])?;
            Ok(Folded { weight, dims, bias })
        };
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
        let global_pool = ops.contains(&"GlobalAveragePool");
        let expect: &[&str] = if global_pool {
            &["Conv", "Relu", "Conv", "Relu", "Conv", "Relu", "GlobalAveragePool", "Flatten", "Gemm", "Relu", "Gemm"]
        } else {
            &["Conv", "Relu", "Conv", "Relu", "Conv", "Relu", "Flatten", "Gemm", "Relu", "Gemm"]
        };
        anyhow::ensure!(ops == expect, "not a dim-edge f32 encoder export (ops {ops:?}); export it with `trainer export`");
        Ok(Self { convs: [layer("Conv", 0)?, layer("Conv", 1)?, layer("Conv", 2)?], fc: layer("Gemm", 0)?, y: layer("Gemm", 1)?, global_pool })
    }

    /// The f32 graph. `outputs` names extra intermediate outputs after `y`
    /// (`relu1`, `relu2`, `relu3`, `pool`, `fc_relu`), e.g. for calibration.
    pub fn to_onnx(&self, outputs: &[&str]) -> Vec<u8> {
        let mut g = Graph::new("dim_encoder");
        g.input("image", &[None, Some(3), Some(32), Some(32)]);
        let mut x = "image".to_string();
        for (i, l) in self.convs.iter().enumerate() {
            let w = g.f32_tensor(&format!("conv{}.weight", i + 1), &l.dims, &l.weight);
            let b = g.f32_tensor(&format!("conv{}.bias", i + 1), &[l.dims[0]], &l.bias);
            let k = l.dims[2] as i64;
            let conv = g.node("Conv", &[&x, &w, &b], &format!("conv{}", i + 1), conv_attrs(k));
            x = g.node("Relu", &[&conv], &format!("relu{}", i + 1), vec![]);
        }
        if self.global_pool {
            x = g.node("GlobalAveragePool", &[&x], "pool", vec![]);
        }
        let flat = g.node("Flatten", &[&x], "flat", vec![int_attr("axis", 1)]);
        let (fc, y) = (&self.fc, &self.y);
        let (w, b) = (g.f32_tensor("fc.weight", &fc.dims, &fc.weight), g.f32_tensor("fc.bias", &[fc.dims[1]], &fc.bias));
        let h = g.node("Gemm", &[&flat, &w, &b], "fc", vec![]);
        let h = g.node("Relu", &[&h], "fc_relu", vec![]);
        let (w, b) = (g.f32_tensor("y.weight", &y.dims, &y.weight), g.f32_tensor("y.bias", &[y.dims[1]], &y.bias));
        g.node("Gemm", &[&h, &w, &b], "y", vec![]);
        g.output("y", &[None, Some(y.dims[1] as i64)]);
        for name in outputs {
            g.output_any(name);
        }
        g.into_bytes(DOC)
    }
}

pub const DOC: &str = "Deep InfoMax encoder: image f32 [N,3,32,32] in [-1,1] (CHW, RGB) -> y f32 [N,D]";

/// The probe layers every export also outputs after `y`: `relu3` (the "conv" layer,
/// `[N, C, 4, 4]`) and `fc_relu` (the "fc" layer, `[N, 1024]`). `trainer eval` and `check`
/// read them through the runtime; embedding (`y` only) does not compute them.
pub const PROBE_LAYERS: [&str; 2] = ["relu3", "fc_relu"];

/// Writes the encoder as ONNX bytes: outputs `y`, then [`PROBE_LAYERS`], then, with
/// `with_local`, the local feature map `relu2` (`[N, C, 8, 8]`).
pub fn to_onnx(encoder: &EncoderNet, with_local: bool) -> Vec<u8> {
    Layers::from_encoder(encoder).to_onnx(if with_local { &["relu3", "fc_relu", "relu2"] } else { &PROBE_LAYERS })
}

/// `trainer export`: the checkpoint (a run folder or a `step-*` folder) as ONNX in `out`, with the
/// training config beside it as `config.json`; proves the file loads in tract. Returns the
/// checkpoint folder and the file size.
pub fn run(checkpoint: &std::path::Path, out: &std::path::Path, with_local: bool) -> anyhow::Result<(std::path::PathBuf, usize)> {
    use crate::fit::checkpoint;
    use anyhow::Context;
    let ck = checkpoint::resolve(checkpoint)?;
    let config = checkpoint::load_config(&ck)?;
    let model = checkpoint::load_model(&ck, &config, &Device::flex())?;
    checkpoint::ensure_finite(&model.encoder, &format!("the encoder in {}", ck.display()))?;
    let bytes = to_onnx(&model.encoder, with_local);
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    crate::fs::write_atomic(out, &bytes)?; // creates `dir`
    config.save_json(&dir.join("config.json"))?;
    dim_runtime::Encoder::from_bytes(&bytes).context("the exported model does not load in tract")?;
    Ok((ck, bytes.len()))
}
