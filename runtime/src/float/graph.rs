//! Reading an f32 ONNX encoder into the float path's layers, when it is one.
//!
//! The float path runs the chain `trainer export` writes, and nothing else:
//!
//! ```text
//! image [N,3,32,32] → (Conv → Relu?)+ → GlobalAveragePool? → Flatten → (Gemm → Relu?)+ → y
//! ```
//!
//! each node reading the one before it, every weight an inline f32 initializer. Convolutions
//! are square, ungrouped and undilated, with the same padding on every side (`pads < kernel`);
//! `Gemm` has α = β = 1 and no transposed input (its weights may be transposed). Anything else —
//! another op, a branch, a shape that does not follow — reads as `None`, and tract runs the file
//! as before (and says what is wrong with it, if anything is).

use super::{Conv, Dense, Layer, Packed};
use crate::fields::Fields;
use crate::preprocess::{INPUT_CHANNELS, INPUT_SIDE};
use prost::Message;
use std::collections::HashMap;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{AttributeProto, ModelProto, NodeProto, TensorProto};

/// The layers of `bytes`, if it is an f32 encoder of the form above.
pub(super) fn read(bytes: &[u8]) -> Option<Vec<Layer>> {
    let model = ModelProto::decode(bytes).ok()?;
    let graph = model.graph?;
    let init: HashMap<&str, &TensorProto> = graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let inputs: Vec<_> = graph.input.iter().filter(|i| !init.contains_key(i.name.as_str())).collect();
    let [input] = inputs[..] else { return None };
    let mut value = input.name.as_str();
    // The map the next node reads: (channels, side) while spatial, then (width, 1) once flat.
    let (mut channels, mut side, mut flat) = (INPUT_CHANNELS, INPUT_SIDE, false);
    let mut layers: Vec<Layer> = Vec::new();
    for node in &graph.node {
        if node.input.first().map(String::as_str) != Some(value) || node.output.len() != 1 {
            return None;
        }
        match (node.op_type.as_str(), flat) {
            ("Conv", false) => {
                let conv = conv(node, &init, channels, side)?;
                (channels, side) = (conv.out, conv.fields.out_side);
                layers.push(Layer::Conv(conv));
            }
            ("Relu", _) => match layers.last_mut()? {
                Layer::Conv(Conv { relu, .. }) | Layer::Dense(Dense { relu, .. }) if !*relu => *relu = true,
                _ => return None,
            },
            ("GlobalAveragePool", false) if node.input.len() == 1 => {
                layers.push(Layer::Pool { channels, positions: side * side });
                side = 1;
            }
            ("Flatten", false) if node.input.len() == 1 && int(node, "axis").unwrap_or(1) == 1 => {
                (channels, side, flat) = (channels * side * side, side, true);
            }
            ("Gemm", true) => {
                // The first dense layer after a spatial map reads it flattened in CHW order.
                let chw_side = std::mem::replace(&mut side, 1);
                let dense = dense(node, &init, channels, chw_side)?;
                channels = dense.out;
                layers.push(Layer::Dense(dense));
            }
            _ => return None,
        }
        value = &node.output[0];
    }
    let ends_in_dense = matches!(layers.last(), Some(Layer::Dense(_)));
    (ends_in_dense && graph.output.first().map(|o| o.name.as_str()) == Some(value)).then_some(layers)
}

fn conv(node: &NodeProto, init: &HashMap<&str, &TensorProto>, inp: usize, in_side: usize) -> Option<Conv> {
    let (w, dims) = floats(init, node.input.get(1)?)?;
    let [out, ci, kh, kw] = dims[..] else { return None };
    let kernel = kh;
    let stride = ints(node, "strides").map_or(Some(1), |s| same(&s))?;
    let pad = ints(node, "pads").map_or(Some(0), |p| same(&p))?;
    let square = ints(node, "kernel_shape").is_none_or(|k| k == [kernel as i64; 2]);
    let plain = ints(node, "dilations").is_none_or(|d| d.iter().all(|&d| d == 1))
        && int(node, "group").unwrap_or(1) == 1
        && attr(node, "auto_pad").is_none_or(|a| a.s.is_empty() || a.s == b"NOTSET");
    if !(square && plain && ci == inp && kw == kernel && out > 0 && kernel > 0 && stride > 0 && pad < kernel && in_side + 2 * pad >= kernel) {
        return None;
    }
    let out_side = (in_side + 2 * pad - kernel) / stride + 1;
    // [out][ci][ky][kx] → [(ky, kx, ci)][out]: the rows an HWC field is read in, by output.
    let n = kernel * kernel * inp;
    let mut weight = vec![0f32; n * out];
    for (o, filter) in w.chunks_exact(n).enumerate() {
        for (i, &v) in filter.iter().enumerate() {
            let (c, ky, kx) = (i / (kernel * kernel), i / kernel % kernel, i % kernel);
            weight[((ky * kernel + kx) * inp + c) * out + o] = v;
        }
    }
    let bias = bias(init, node.input.get(2), out)?;
    let fields = Fields { kernel, stride, pad, inp, in_side, out_side };
    Some(Conv { out, fields, weight: Packed::new(&weight, n, out), bias, relu: false })
}

fn dense(node: &NodeProto, init: &HashMap<&str, &TensorProto>, inp: usize, chw_side: usize) -> Option<Dense> {
    let (w, dims) = floats(init, node.input.get(1)?)?;
    let trans = int(node, "transB").unwrap_or(0);
    let plain = int(node, "transA").unwrap_or(0) == 0 && float(node, "alpha").unwrap_or(1.0) == 1.0 && float(node, "beta").unwrap_or(1.0) == 1.0;
    let (rows, cols) = match dims[..] {
        [r, c] if plain && (trans == 0 || trans == 1) => (r, c),
        _ => return None,
    };
    let (k, out) = if trans == 1 { (cols, rows) } else { (rows, cols) };
    if k != inp || out == 0 {
        return None;
    }
    // `[k][out]`, and row i of a CHW-flattened map moved to the HWC position it is read from.
    let positions = chw_side * chw_side;
    let channels = inp / positions;
    let mut weight = vec![0f32; k * out];
    for i in 0..k {
        let hwc = (i % positions) * channels + i / positions;
        for o in 0..out {
            weight[hwc * out + o] = if trans == 1 { w[o * k + i] } else { w[i * out + o] };
        }
    }
    let bias = bias(init, node.input.get(2), out)?;
    Some(Dense { out, inp, weight: Packed::new(&weight, k, out), bias, relu: false })
}

/// A bias of `out` values, or zeros where the node has none.
fn bias(init: &HashMap<&str, &TensorProto>, name: Option<&String>, out: usize) -> Option<Vec<f32>> {
    match name.filter(|n| !n.is_empty()) {
        None => Some(vec![0.0; out]),
        Some(name) => floats(init, name).filter(|(b, dims)| dims[..] == [out] && b.len() == out).map(|(b, _)| b),
    }
}

/// An inline f32 initializer's values and dimensions (checked against each other).
fn floats(init: &HashMap<&str, &TensorProto>, name: &str) -> Option<(Vec<f32>, Vec<usize>)> {
    let t = init.get(name)?;
    (t.data_type == DataType::Float as i32).then_some(())?;
    let dims = t.dims.iter().map(|&d| usize::try_from(d).ok()).collect::<Option<Vec<_>>>()?;
    Some((crate::qdq::values(t)?, dims))
}

/// The one value of a list attribute that must be the same everywhere (strides, pads).
fn same(v: &[i64]) -> Option<usize> {
    let first = *v.first()?;
    v.iter().all(|&x| x == first).then(|| usize::try_from(first).ok()).flatten()
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn int(node: &NodeProto, name: &str) -> Option<i64> {
    attr(node, name).map(|a| a.i)
}

fn float(node: &NodeProto, name: &str) -> Option<f32> {
    attr(node, name).map(|a| a.f)
}

fn ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}
