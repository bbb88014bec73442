//! fit → export → tract: the exported ONNX computes what burn computes, on real images.

use burn::prelude::*;
use dim_tests::{real_images, trained};
use dim_trainer::export;
use dim_trainer::fit::config::ModelKind;

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn tract_matches_burn_on_real_images() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = real_images(32, 97);
    for model in [ModelKind::Tiny, ModelKind::Dim32] {
        let encoder = trained(model, dir.path());
        let x = Tensor::<4>::from_data(TensorData::new(input.clone(), [32, 3, 32, 32]), &Device::flex());
        let out = encoder.forward(x);
        let want: Vec<f32> = out.y.into_data().try_to_vec::<f32>().unwrap();
        let bytes = export::to_onnx(&encoder, false);
        let got = dim_runtime::Encoder::from_bytes(&bytes).unwrap().embed_preprocessed(&input).unwrap();
        let err = max_abs(&got, &want);
        assert!(err <= 1e-4, "{model:?}: tract vs burn max abs {err}");
        assert!(want.iter().map(|v| v.abs()).fold(0.0, f32::max) > 1e-2, "outputs are not trivially zero");
        // The probe layers and the local map, read through the runtime as `trainer eval` does.
        let with_local = export::to_onnx(&encoder, true);
        let layered = dim_runtime::Encoder::from_bytes_with_layers(&with_local, &["relu3", "fc_relu", "relu2"]).unwrap();
        let got = layered.embed_layers(&input).unwrap();
        for (i, want) in [out.conv, out.local].into_iter().enumerate() {
            let want: Vec<f32> = want.into_data().try_to_vec::<f32>().unwrap();
            assert!(max_abs(&got[[1, 3][i]], &want) <= 1e-4, "{model:?}: layer {} differs", [1, 3][i]);
        }
        let want_fc: Vec<f32> = out.fc.into_data().try_to_vec::<f32>().unwrap();
        assert!(max_abs(&got[2], &want_fc) <= 1e-4, "{model:?}: fc differs");
        assert_eq!(got[0], layered.embed_preprocessed(&input).unwrap(), "y first, identical either way");
        let missing = dim_runtime::Encoder::from_bytes_with_layers(&bytes, &["nope"]).err().unwrap().to_string();
        assert!(missing.contains("`nope`"), "{missing}");
    }
}

/// A second, independent runtime: Python's onnxruntime, when installed (skips cleanly otherwise).
#[test]
fn onnxruntime_agrees_when_installed() {
    let probe = std::process::Command::new("python3").args(["-c", "import onnxruntime, numpy"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: python3 with onnxruntime and numpy not found");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let encoder = trained(ModelKind::Tiny, dir.path());
    let (input, _) = real_images(8, 211);
    let f32_bytes = export::to_onnx(&encoder, false);
    let (calib, _) = real_images(32, 57);
    let int8 = dim_trainer::quantize::quantize(&f32_bytes, &calib, &input, 99.99).unwrap().onnx;
    let raw: Vec<u8> = input.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.path().join("x.f32"), raw).unwrap();
    let script = "import sys, numpy as np, onnxruntime as ort\n\
        s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n\
        x = np.fromfile(sys.argv[2], dtype='<f4').reshape(-1, 3, 32, 32)\n\
        s.run(['y'], {'image': x})[0].astype('<f4').tofile(sys.argv[3])\n";
    for (name, bytes, tolerance) in [("f32", f32_bytes, 1e-4), ("int8", int8, 0.02)] {
        let model = dir.path().join(format!("{name}.onnx"));
        std::fs::write(&model, &bytes).unwrap();
        let status = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(&model)
            .arg(dir.path().join("x.f32"))
            .arg(dir.path().join("y.f32"))
            .status()
            .unwrap();
        assert!(status.success(), "onnxruntime refused the {name} model");
        let got: Vec<f32> = std::fs::read(dir.path().join("y.f32")).unwrap().chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        let want = dim_runtime::Encoder::from_path(&model).unwrap().embed_preprocessed(&input).unwrap();
        // f32: same math, different kernels. int8: a requantization that lands on a rounding
        // tie may differ by one step between the runtimes; bound it relative to |y|.
        let scale = want.iter().map(|v| v.abs()).fold(0.0, f32::max).max(1.0);
        let err = max_abs(&got, &want);
        assert!(err <= tolerance * scale, "{name}: onnxruntime vs tract max abs {err} (scale {scale})");
    }
}

#[test]
fn int8_export_tracks_f32_on_real_images() {
    use prost::Message;
    let dir = tempfile::tempdir().unwrap();
    let (calib, _) = real_images(64, 31);
    let (val, _) = real_images(64, 113);
    for model in [ModelKind::Tiny, ModelKind::Dim32] {
        let f32_bytes = export::to_onnx(&trained(model, dir.path()), false);
        let dim_trainer::quantize::Quantized { onnx: int8, report, .. } = dim_trainer::quantize::quantize(&f32_bytes, &calib, &val, 99.99).unwrap();
        assert!(report.mean_cosine >= 0.98, "{model:?}: mean cosine {}", report.mean_cosine);
        assert!(report.worst_cosine > 0.9, "{model:?}: worst cosine {}", report.worst_cosine);
        assert!(report.int8_bytes * 3 < report.f32_bytes, "{model:?}: {} vs {} bytes", report.int8_bytes, report.f32_bytes);
        // Integer kernels, standard ops only: no float Conv / Gemm left.
        let graph = tract_onnx::pb::ModelProto::decode(&int8[..]).unwrap().graph.unwrap();
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
        // Three convolutions, then fc as QLinearConv in groups of output channels (dim32: 4 of
        // 256, so that tract precomputes each group's kernel sums; tiny: 1), then y.
        let fc_groups = if model == ModelKind::Dim32 { 4 } else { 1 };
        assert_eq!(ops.iter().filter(|o| **o == "QLinearConv").count(), 3 + fc_groups, "{ops:?}");
        assert_eq!(ops.iter().filter(|o| **o == "MatMulInteger").count(), 1, "{ops:?}");
        assert!(!ops.iter().any(|o| ["Conv", "Gemm", "MatMul"].contains(o)), "{ops:?}");
        assert!(graph.node.iter().all(|n| n.domain.is_empty()), "no vendor domains");
        // The runtime embeds with it through the same interface.
        let y = dim_runtime::Encoder::from_bytes(&int8).unwrap().embed_preprocessed(&val[..dim_runtime::INPUT_LEN]).unwrap();
        assert_eq!(y.len(), 64);
        // Its probe layers (dequantized) track the f32 ones: `trainer check` probes them.
        let layers = |b: &[u8]| {
            dim_runtime::Encoder::from_bytes_with_layers(b, &export::PROBE_LAYERS).unwrap().embed_layers(&val[..8 * dim_runtime::INPUT_LEN]).unwrap()
        };
        let (q, f) = (layers(&int8), layers(&f32_bytes));
        for i in 1..3 {
            let c = dim_trainer::quantize::cosines(&q[i], &f[i], q[i].len() / 8);
            assert!(c.iter().all(|c| *c > 0.98), "{model:?}: layer {i} cosines {c:?}");
        }
    }
}

#[test]
fn quantize_refuses_foreign_graphs() {
    let err = export::Layers::from_onnx(b"garbage").unwrap_err().to_string();
    assert!(err.contains("not an ONNX file"), "{err}");
}

/// Probe layers are found by value name too, not only by node name: an encoder from another
/// exporter (PyTorch names nodes by module path, e.g. `/c3/c3.2/Relu`, and only the values
/// `relu3` / `fc_relu`) is probed like ours — the same file with every node renamed gives the
/// same layers, bit for bit.
#[test]
fn probe_layers_are_found_by_value_name() {
    use prost::Message;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny/encoder.onnx");
    let bytes = std::fs::read(&path).unwrap();
    let mut model = tract_onnx::pb::ModelProto::decode(&bytes[..]).unwrap();
    for (i, node) in model.graph.as_mut().unwrap().node.iter_mut().enumerate() {
        node.name = format!("/torch/module{i}/{}", node.op_type);
    }
    let renamed = model.encode_to_vec();
    let layers = &dim_trainer::export::PROBE_LAYERS;
    let ours = dim_runtime::Encoder::from_bytes_with_layers(&bytes, layers).unwrap();
    let foreign = dim_runtime::Encoder::from_bytes_with_layers(&renamed, layers).unwrap();
    let input: Vec<f32> = (0..2 * dim_runtime::INPUT_LEN).map(|i| ((i * 37 % 255) as f32 / 127.5) - 1.0).collect();
    let (a, b) = (ours.embed_layers(&input).unwrap(), foreign.embed_layers(&input).unwrap());
    assert_eq!(a.len(), 3, "y, relu3, fc_relu");
    assert_eq!(a, b);
    // A name that is neither a node nor a value is still refused by name.
    match dim_runtime::Encoder::from_bytes_with_layers(&renamed, &["no_such_layer"]) {
        Err(dim_runtime::Error::MissingOutput(name)) => assert_eq!(name, "no_such_layer"),
        other => panic!("{:?}", other.map(|_| ())),
    }
}
