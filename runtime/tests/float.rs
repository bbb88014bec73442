//! The float path (`dim_runtime::float`) against tract's plan of the same file: the f32
//! encoders `Encoder::from_bytes` runs on it (the committed tiny and the shipped dim32), batch 1
//! and batches that do not fill a group, on one thread and on several. Both sum the same products
//! in different orders, so they agree to f32 rounding: max |Δy| ≤ 1e-4·(1 + |y|).
//!
//! Also: which files take the path (only `trainer export`'s chain; int8 files and edited graphs
//! stay on tract), and that bad bytes read as "not a float encoder", never a panic.

use dim_runtime::float::FloatModel;
use dim_runtime::{Encoder, INPUT_LEN};
use proptest::prelude::*;
use prost::Message;
use tract_onnx::pb::ModelProto;

fn file(path: &str) -> Vec<u8> {
    let path = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The f32 encoders: the committed tiny and the shipped dim32.
fn encoders() -> Vec<(&'static str, Vec<u8>)> {
    vec![("tiny", file("tests/data/tiny.onnx")), ("dim32", file("../models/dim32/encoder.onnx"))]
}

/// `n` preprocessed images in [-1, 1] from `seed`.
fn images(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    (0..n * INPUT_LEN)
        .map(|_| {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn assert_close(name: &str, ours: &[f32], tract: &[f32]) {
    assert_eq!(ours.len(), tract.len(), "{name}");
    for (i, (o, t)) in ours.iter().zip(tract).enumerate() {
        assert!((o - t).abs() <= 1e-4 * (1.0 + t.abs()), "{name}: y[{i}] = {o}, tract {t}");
    }
}

#[test]
fn the_float_path_gives_tracts_y() {
    for (name, bytes) in encoders() {
        let fast = Encoder::from_bytes(&bytes).unwrap();
        assert!(fast.runs_float_path(), "{name} is trainer export's chain");
        let tract = Encoder::from_bytes_as_written(&bytes).unwrap();
        assert!(!tract.runs_float_path());
        for (n, seed) in [(1, 1), (3, 2), (13, 3), (64, 4)] {
            let x = images(n, seed);
            let want = tract.embed_preprocessed(&x).unwrap();
            for threads in [1, 2, 3] {
                let got = fast.clone().with_threads(threads).embed_preprocessed(&x).unwrap();
                assert_close(&format!("{name}, {n} images, {threads} threads"), &got, &want);
            }
        }
    }
}

#[test]
fn the_float_path_reproduces_the_golden_image() {
    // The shipped golden image through the f32 file: the float path and tract agree on it too.
    let rgb: dim_runtime::Rgb32 = file("../models/dim32/golden.rgb").try_into().unwrap();
    let mut x = vec![0f32; INPUT_LEN];
    dim_runtime::preprocess::rgb32_to_input(&rgb, &mut x).unwrap();
    let bytes = file("../models/dim32/encoder.onnx");
    let model = FloatModel::from_onnx(&bytes).unwrap();
    let want = Encoder::from_bytes_as_written(&bytes).unwrap().embed_preprocessed(&x).unwrap();
    assert_eq!(model.dim(), 64);
    assert_close("dim32 golden", &model.run(&x, 2), &want);
}

#[test]
fn only_trainer_exports_chain_takes_the_path() {
    let tiny = file("tests/data/tiny.onnx");
    assert!(FloatModel::from_onnx(&tiny).is_some());
    // int8 files stay on tract (its int8 kernels or the float form of runtime/src/qdq.rs).
    assert!(FloatModel::from_onnx(&file("tests/data/tiny.int8.onnx")).is_none());
    assert!(!Encoder::from_bytes(&file("tests/data/tiny.int8.onnx")).unwrap().runs_float_path());
    let edited = |edit: &dyn Fn(&mut ModelProto)| {
        let mut m = ModelProto::decode(&tiny[..]).unwrap();
        edit(&mut m);
        FloatModel::from_onnx(&m.encode_to_vec())
    };
    // An op the path does not know, a grouped convolution, a dilated one, a transposed input,
    // a branch (y read from fc, not fc_relu), an output that is not the chain's end.
    assert!(edited(&|m| m.graph.as_mut().unwrap().node[1].op_type = "Sigmoid".into()).is_none());
    for (node, name) in [(0, "group"), (2, "dilations")] {
        let g = ModelProto::decode(&tiny[..]).unwrap().graph.unwrap();
        let mut attr = g.node[node].attribute[0].clone();
        attr.name = name.into();
        attr.i = 2;
        attr.ints = vec![2, 2];
        assert!(edited(&|m| m.graph.as_mut().unwrap().node[node].attribute.push(attr.clone())).is_none(), "{name}");
    }
    assert!(
        edited(&|m| {
            let g = m.graph.as_mut().unwrap();
            let last = g.node.len() - 1;
            g.node[last].input[0] = "fc".into();
        })
        .is_none()
    );
    assert!(edited(&|m| m.graph.as_mut().unwrap().output[0].name = "fc_relu".into()).is_none());
    // Unchanged, it still reads.
    assert!(edited(&|_| {}).is_some());
}

#[test]
fn layers_and_as_written_stay_on_tract() {
    let tiny = file("tests/data/tiny.onnx");
    // With layers asked for, y comes from tract both ways: `embed` and `embed_layers` agree
    // exactly (tests/tests/export.rs relies on it).
    let layered = Encoder::from_bytes_with_layers(&tiny, &["relu3", "fc_relu"]).unwrap();
    assert!(!layered.runs_float_path());
    let x = images(2, 9);
    let outs = layered.embed_layers(&x).unwrap();
    assert_eq!(outs.len(), 3);
    assert_eq!(layered.embed_preprocessed(&x).unwrap(), outs[0]);
    assert!(Encoder::from_bytes_with_layers(&tiny, &[]).unwrap().runs_float_path());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Truncated or flipped bytes of a real encoder: `None` or a model that runs, never a panic.
    #[test]
    fn damaged_files_never_panic(cut in 0usize..20_000, flips in proptest::collection::vec((0usize..20_000, any::<u8>()), 0..8)) {
        let mut bytes = file("tests/data/tiny.onnx");
        for (at, v) in flips {
            let at = at % bytes.len();
            bytes[at] ^= v;
        }
        bytes.truncate(cut.max(1).min(bytes.len()));
        if let Some(m) = FloatModel::from_onnx(&bytes) {
            let y = m.run(&images(2, 5), 2);
            prop_assert_eq!(y.len(), 2 * m.dim());
        }
    }
}
