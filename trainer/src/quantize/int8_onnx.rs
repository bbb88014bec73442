//! The int8 ONNX graph of a [`QModel`]: standard opset-13 ops that tract runs with integer
//! kernels and onnxruntime also loads.

use super::qmodel::{IMAGE_SCALE, IMAGE_ZERO, QModel};
use crate::export::{Graph, conv_attrs, int_attr, ints_attr};
use tract_onnx::pb::tensor_proto::DataType;

/// Bytes of int32 kernel that tract folds into constants (tract-core `CONST_FOLD_MEM_BUDGET`).
const FOLD_BUDGET: usize = 4 << 20;

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
        x = g.node("QLinearConv", &[&x, &xs, &xz, &w, &w_s, &w_z, &y_s, &zero, &b], &format!("relu{n}_q"), conv_attrs(k));
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
        let attrs = vec![ints_attr("kernel_shape", &[side as i64, side as i64])];
        parts.push(g.node("QLinearConv", &[&x, &xs, &xz, &w, &w_s, &w_z, &y_s, &zero, &b], &format!("fc_q.{gi}"), attrs));
    }
    x = match parts.as_slice() {
        [one] => one.clone(),
        _ => g.node("Concat", &parts.iter().map(String::as_str).collect::<Vec<_>>(), "fc_q", vec![int_attr("axis", 1)]),
    };
    g.node("DequantizeLinear", &[&x, &y_s, &zero], "fc_relu", vec![]);
    x = g.node("Flatten", &[&x], "fc_flat_q", vec![int_attr("axis", 1)]);
    // y: exact int32 accumulation; the bias is added in f32 after rescaling (QLinearMatMul has
    // no bias input, and y itself stays f32).
    let y = &q.y;
    let cols = y.dims[1];
    let w = g.i8_tensor("y.weight_q", &y.dims, &y.weight);
    let w_z = g.i8_tensor("y.weight_zero", &[], &[0]);
    let acc = g.node("MatMulInteger", &[&x, &w, &zero, &w_z], "y_acc", vec![]);
    let accf = g.node("Cast", &[&acc], "y_accf", vec![int_attr("to", DataType::Float as i64)]);
    let r = g.f32_tensor("y.rescale", &[cols], &y.rescale);
    let b = g.f32_tensor("y.bias", &[cols], &y.bias);
    let m = g.node("Mul", &[&accf, &r], "y_scaled", vec![]);
    g.node("Add", &[&m, &b], "y", vec![]);
    g.output("y", &[None, Some(cols as i64)]);
    crate::export::PROBE_LAYERS.iter().for_each(|name| g.output_any(name));
    g.into_bytes(&format!("{} (int8: per-channel weights, calibrated activations)", crate::export::DOC))
}
