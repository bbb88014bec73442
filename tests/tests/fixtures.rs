//! Writes the runtime's golden fixtures (`runtime/tests/data/`): the `tiny` encoder initialised
//! with seed 0, exported f32 and int8 (calibrated on the built-in shapes), and their embeddings
//! of the runtime test's fixed inputs, computed here on x86-64.
//! Run with `cargo test --release -p dim-tests --test fixtures -- --ignored`.

use burn::prelude::*;

/// The runtime test's fixed inputs (`runtime/tests/golden.rs`, `inputs()`).
fn inputs() -> Vec<f32> {
    const N: usize = dim_runtime::INPUT_LEN;
    (0..4 * N).map(|i| ((i as f32 * 0.37).sin() * 0.9 + (i / N) as f32 * 0.02).clamp(-1.0, 1.0)).collect()
}

#[test]
#[ignore = "regenerates committed fixtures"]
fn write_runtime_fixtures() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/tests/data");
    let device = Device::flex();
    device.seed(0);
    let encoder = dim_trainer::model::EncoderConfig::tiny().init(&device);
    let f32_bytes = dim_trainer::export::to_onnx(&encoder, false);
    let shapes = dim_trainer::data::open(std::path::Path::new("builtin:shapes:256")).unwrap();
    let calib = dim_trainer::data::load_inputs(&*shapes, &(0..256).collect::<Vec<_>>()).unwrap();
    let dim_trainer::quantize::Quantized { onnx: int8, blob, report } = dim_trainer::quantize::quantize(&f32_bytes, &calib, &calib, 99.99).unwrap();
    assert!(report.mean_cosine > 0.99);
    for (name, bytes) in [("tiny.onnx", &f32_bytes), ("tiny.int8.onnx", &int8)] {
        std::fs::write(dir.join(name), bytes).unwrap();
        // Golden outputs of tract's int8 kernels (the aarch64 path), on every architecture.
        let y = dim_runtime::Encoder::from_bytes_as_written(bytes).unwrap().embed_preprocessed(&inputs()).unwrap();
        let text: Vec<String> = y.iter().map(|v| format!("{v:e}")).collect();
        std::fs::write(dir.join(name.replace(".onnx", ".y.txt")), text.join("\n") + "\n").unwrap();
    }
    // The no_std engine's fixtures: the blob (same integers as tiny.int8.onnx), one 32×32 RGB
    // image (a `shapes` image that was not in the calibration set) and tract's y for it.
    std::fs::write(dir.join("tiny.blob"), &blob).unwrap();
    let rgb = dim_trainer::data::open(std::path::Path::new("builtin:shapes:300")).unwrap().load(299).unwrap();
    std::fs::write(dir.join("golden.rgb"), rgb).unwrap();
    let mut input = vec![0f32; dim_runtime::INPUT_LEN];
    dim_runtime::preprocess::rgb32_to_input(&rgb, &mut input).unwrap();
    let y = dim_runtime::Encoder::from_bytes_as_written(&int8).unwrap().embed_preprocessed(&input).unwrap();
    let text: Vec<String> = y.iter().map(|v| format!("{v:e}")).collect();
    std::fs::write(dir.join("golden.tiny.int8.y.txt"), text.join("\n") + "\n").unwrap();
}
