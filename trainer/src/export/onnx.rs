//! A small ONNX graph builder over tract-onnx's protobuf types.
//!
//! Why tract's prost types: tract is the runtime that must load what we write, so writing with
//! its own message definitions (and the same prost) keeps one protobuf implementation in the
//! workspace. `onnx-protobuf` would need `protobuf = "=3.4.0"`, which cannot share a lockfile with
//! burn-onnx's exporter (DESIGN.md).

use prost::Message;
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto::Dimension, tensor_shape_proto::dimension::Value as Dim, type_proto,
};

/// Opset of everything we write (QLinearConv, QLinearMatMul, GlobalAveragePool are all in it).
pub const OPSET: i64 = 13;

pub struct Graph {
    g: GraphProto,
}

/// Attributes of the encoders' convolutions: square kernel `k`, stride 2, padding 1.
pub fn conv_attrs(k: i64) -> Vec<AttributeProto> {
    vec![ints_attr("kernel_shape", &[k, k]), ints_attr("strides", &[2, 2]), ints_attr("pads", &[1, 1, 1, 1])]
}

pub fn int_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i: v, ..Default::default() }
}

pub fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Ints as i32, ints: v.to_vec(), ..Default::default() }
}

fn value_info(name: &str, elem: DataType, dims: &[Option<i64>]) -> ValueInfoProto {
    let dim = dims.iter().map(|d| Dimension { value: Some(d.map_or(Dim::DimParam("N".into()), Dim::DimValue)), ..Default::default() }).collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor { elem_type: elem as i32, shape: Some(TensorShapeProto { dim }) })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl Graph {
    pub fn new(name: &str) -> Self {
        Self { g: GraphProto { name: name.into(), ..Default::default() } }
    }

    /// A float input with a symbolic batch (`None` dims are the batch `N`).
    pub fn input(&mut self, name: &str, dims: &[Option<i64>]) {
        self.g.input.push(value_info(name, DataType::Float, dims));
    }

    pub fn output(&mut self, name: &str, dims: &[Option<i64>]) {
        self.g.output.push(value_info(name, DataType::Float, dims));
    }

    /// An extra float output whose shape tract infers.
    pub fn output_any(&mut self, name: &str) {
        self.g.output.push(ValueInfoProto { name: name.into(), ..Default::default() });
    }

    pub fn f32_tensor(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        assert_eq!(dims.iter().product::<usize>(), data.len(), "{name}: shape and data disagree");
        self.g.initializer.push(TensorProto {
            name: name.into(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float as i32,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name.into()
    }

    /// A constant of any element type from its little-endian bytes.
    pub fn raw_tensor(&mut self, name: &str, dims: &[usize], elem: DataType, raw: Vec<u8>) -> String {
        self.g.initializer.push(TensorProto {
            name: name.into(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: elem as i32,
            raw_data: raw,
            ..Default::default()
        });
        name.into()
    }

    pub fn i8_tensor(&mut self, name: &str, dims: &[usize], data: &[i8]) -> String {
        self.raw_tensor(name, dims, DataType::Int8, data.iter().map(|&v| v as u8).collect())
    }

    pub fn u8_tensor(&mut self, name: &str, dims: &[usize], data: &[u8]) -> String {
        self.raw_tensor(name, dims, DataType::Uint8, data.to_vec())
    }

    pub fn i32_tensor(&mut self, name: &str, dims: &[usize], data: &[i32]) -> String {
        self.raw_tensor(name, dims, DataType::Int32, data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    /// Adds a node; returns the name of its (single) output.
    pub fn node(&mut self, op: &str, inputs: &[&str], output: &str, attrs: Vec<AttributeProto>) -> String {
        self.g.node.push(NodeProto {
            name: output.into(),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            attribute: attrs,
            ..Default::default()
        });
        output.into()
    }

    pub fn into_bytes(self, doc: &str) -> Vec<u8> {
        ModelProto {
            ir_version: 8,
            producer_name: "dim-edge trainer".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: doc.into(),
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
            graph: Some(self.g),
            ..Default::default()
        }
        .encode_to_vec()
    }
}
