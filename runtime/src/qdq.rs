//! The int8 graph in the form tract runs fastest on x86-64.
//!
//! tract 0.23 runs `QLinearConv` on x86-64 as an int8 matrix product surrounded by separate
//! passes over the data — im2col, the activation sums for the zero-point correction, then the
//! corrections, the requantization scale, the clamp and the cast, none fused into the product —
//! and ends up slower than the same encoder in f32. On aarch64 its int8 kernels are what int8
//! is for on an ARM board, so there the file runs as written. On x86-64, [`float_form`] rewrites
//! each `QLinearConv` as `DequantizeLinear → Conv → QuantizeLinear`, the weights dequantized
//! once, here:
//!
//! ```text
//! QLinearConv  y_q = sat(round(xs·ws/ys · (Σ (x_q − xz)(w_q − wz) + b_q)) + yz)
//! float form   y_q = sat(round((Σ x·w + b) / ys) + yz)     x = (x_q − xz)·xs
//!                                                          w = (w_q − wz)·ws,  b = b_q·xs·ws
//! ```
//!
//! The same value, the sum taken in f32 rather than i32: a requantization that lands within
//! float rounding of a tie may move one step, which is the int8 tolerance the golden tests
//! state anyway (x86-64 vs aarch64). Everything else in the graph is left as it is.

use prost::Message;
use std::collections::HashMap;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{ModelProto, NodeProto, TensorProto};

/// `bytes` with every `QLinearConv` whose weights, scales, zero points and bias are inline
/// initializers rewritten in the float form; `None` when there is nothing to rewrite or the
/// bytes are not a model (then tract reads the original and says what is wrong).
pub fn float_form(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut model = ModelProto::decode(bytes).ok()?;
    let graph = model.graph.as_mut()?;
    let init: HashMap<String, TensorProto> = graph.initializer.iter().map(|t| (t.name.clone(), t.clone())).collect();
    let mut nodes = Vec::with_capacity(graph.node.len());
    let mut added = Vec::new();
    let mut rewritten = 0;
    for node in std::mem::take(&mut graph.node) {
        match (node.op_type == "QLinearConv").then(|| rewrite(&node, &init)).flatten() {
            Some((replacement, tensors)) => {
                nodes.extend(replacement);
                added.extend(tensors);
                rewritten += 1;
            }
            None => nodes.push(node),
        }
    }
    if rewritten == 0 {
        return None;
    }
    graph.node = nodes;
    graph.initializer.extend(added);
    Some(model.encode_to_vec())
}

/// The three nodes and two initializers that replace one `QLinearConv`, if its constants are
/// all inline and consistent.
fn rewrite(node: &NodeProto, init: &HashMap<String, TensorProto>) -> Option<(Vec<NodeProto>, Vec<TensorProto>)> {
    let i = &node.input;
    if !(8..=9).contains(&i.len()) || node.output.len() != 1 {
        return None;
    }
    let get = |k: usize| init.get(&i[k]).and_then(values);
    let (x_scale, w, w_scale, w_zero) = (get(1)?, init.get(&i[3])?, get(4)?, get(5)?);
    let (w_values, dims) = (values(w)?, &w.dims);
    let out = *dims.first()? as usize;
    if x_scale.len() != 1 || out == 0 || w_values.len() % out != 0 {
        return None;
    }
    let per = |v: &[f32], o: usize| if v.len() == 1 { Some(v[0]) } else { v.get(o).copied().filter(|_| v.len() == out) };
    let per_out = w_values.len() / out;
    let mut weight = Vec::with_capacity(w_values.len());
    for (o, row) in w_values.chunks(per_out).enumerate() {
        let (s, z) = (per(&w_scale, o)?, per(&w_zero, o)?);
        weight.extend(row.iter().map(|q| (q - z) * s));
    }
    let bias = match i.get(8).filter(|b| !b.is_empty()) {
        Some(name) => {
            let b = values(init.get(name)?)?;
            (b.len() == out).then_some(())?;
            Some(b.iter().enumerate().map(|(o, q)| per(&w_scale, o).map(|s| q * x_scale[0] * s)).collect::<Option<Vec<f32>>>()?)
        }
        None => None,
    };
    let base = if node.name.is_empty() { node.output[0].clone() } else { node.name.clone() };
    let (x_f, y_f, w_name, b_name) = (format!("{base}.x_f32"), format!("{base}.y_f32"), format!("{base}.weight_f32"), format!("{base}.bias_f32"));
    let mut tensors = vec![f32_tensor(&w_name, dims, weight)];
    let mut conv_inputs = vec![x_f.clone(), w_name];
    if let Some(b) = bias {
        tensors.push(f32_tensor(&b_name, &[out as i64], b));
        conv_inputs.push(b_name);
    }
    let op = |op_type: &str, name: String, input: Vec<String>, output: String, attribute| NodeProto {
        op_type: op_type.into(),
        name,
        input,
        output: vec![output],
        attribute,
        ..Default::default()
    };
    let nodes = vec![
        op("DequantizeLinear", format!("{base}.dequantize"), vec![i[0].clone(), i[1].clone(), i[2].clone()], x_f, vec![]),
        op("Conv", format!("{base}.conv"), conv_inputs, y_f.clone(), node.attribute.clone()),
        op("QuantizeLinear", format!("{base}.quantize"), vec![y_f, i[6].clone(), i[7].clone()], node.output[0].clone(), vec![]),
    ];
    Some((nodes, tensors))
}

/// The values of an inline f32, int8, uint8 or int32 tensor as f32 (exact for 8-bit values and
/// the int32 biases of an int8 model); `None` for other types and external data.
pub(crate) fn values(t: &TensorProto) -> Option<Vec<f32>> {
    if !t.external_data.is_empty() {
        return None;
    }
    let raw = &t.raw_data;
    let v: Vec<f32> = match DataType::try_from(t.data_type).ok()? {
        DataType::Float if raw.is_empty() => t.float_data.clone(),
        DataType::Float => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        DataType::Int8 if raw.is_empty() => t.int32_data.iter().map(|&v| v as i8 as f32).collect(),
        DataType::Int8 => raw.iter().map(|&b| b as i8 as f32).collect(),
        DataType::Uint8 if raw.is_empty() => t.int32_data.iter().map(|&v| v as u8 as f32).collect(),
        DataType::Uint8 => raw.iter().map(|&b| b as f32).collect(),
        DataType::Int32 if raw.is_empty() => t.int32_data.iter().map(|&v| v as f32).collect(),
        DataType::Int32 => raw.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32).collect(),
        _ => return None,
    };
    let count = t.dims.iter().try_fold(1usize, |a, &d| usize::try_from(d).ok().and_then(|d| a.checked_mul(d)))?;
    (v.len() == count).then_some(v)
}

fn f32_tensor(name: &str, dims: &[i64], data: Vec<f32>) -> TensorProto {
    TensorProto { name: name.into(), dims: dims.to_vec(), data_type: DataType::Float as i32, float_data: data, ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_models_and_float_models_are_left_alone() {
        assert!(float_form(b"not a model").is_none());
        let f32_model = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tiny.onnx")).unwrap();
        assert!(float_form(&f32_model).is_none());
    }

    #[test]
    fn every_qlinearconv_of_the_int8_model_is_rewritten() {
        let int8 = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tiny.int8.onnx")).unwrap();
        let before = ModelProto::decode(&int8[..]).unwrap().graph.unwrap();
        let after = ModelProto::decode(&float_form(&int8).unwrap()[..]).unwrap().graph.unwrap();
        let count = |g: &tract_onnx::pb::GraphProto, op: &str| g.node.iter().filter(|n| n.op_type == op).count();
        let convs = count(&before, "QLinearConv");
        assert!(convs >= 4, "tiny has 3 convolutions and fc as one");
        assert_eq!((count(&after, "QLinearConv"), count(&after, "Conv")), (0, convs));
        assert_eq!(count(&after, "QuantizeLinear"), count(&before, "QuantizeLinear") + convs);
        // The first layer's weights: the int8 values times their channel's scale.
        let t = |g: &tract_onnx::pb::GraphProto, name: &str| values(g.initializer.iter().find(|t| t.name == name).unwrap()).unwrap();
        let (q, s) = (t(&before, "conv1.weight_q"), t(&before, "conv1.weight_scale"));
        let w = t(&after, "relu1_q.weight_f32");
        let per = q.len() / s.len();
        assert!(w.iter().enumerate().all(|(i, &v)| v == q[i] * s[i / per]));
    }
}
