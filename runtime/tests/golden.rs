//! The committed `tiny` test encoders (f32 and int8) give the committed embeddings.
//!
//! The same test runs on x86-64 and, under QEMU, on aarch64 (`.ci/run`), so it is the check that
//! an ARM board computes what the workstation computed. Tolerances: f32 ≤ 1e-4 max abs (different
//! SIMD kernels sum in different orders); int8 ≤ 0.02 · max|y| max abs and cosine ≥ 0.9999
//! (integer accumulation is exact, but a requantization that lands on a rounding tie may move
//! one activation by one step).
//!
//! Regenerate the fixtures with `cargo test --release -p dim-tests --test fixtures -- --ignored`.

use dim_runtime::{Encoder, INPUT_LEN};

/// Four fixed inputs in `[-1, 1]`, computed rather than stored.
pub fn inputs() -> Vec<f32> {
    (0..4 * INPUT_LEN).map(|i| ((i as f32 * 0.37).sin() * 0.9 + (i / INPUT_LEN) as f32 * 0.02).clamp(-1.0, 1.0)).collect()
}

fn golden(name: &str) -> Vec<f32> {
    let text = std::fs::read_to_string(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    text.split_whitespace().map(|v| v.parse().unwrap()).collect()
}

fn model(name: &str) -> Encoder {
    Encoder::from_path(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn f32_encoder_matches_golden() {
    let y = model("tiny.onnx").embed_preprocessed(&inputs()).unwrap();
    let want = golden("tiny.y.txt");
    let err = y.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert_eq!(y.len(), want.len());
    assert!(err <= 1e-4, "max abs {err}");
}

#[test]
fn int8_encoder_matches_golden() {
    let y = model("tiny.int8.onnx").embed_preprocessed(&inputs()).unwrap();
    let want = golden("tiny.int8.y.txt");
    assert_eq!(y.len(), want.len());
    let scale = want.iter().map(|v| v.abs()).fold(0.0, f32::max);
    let err = y.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(err <= 0.02 * scale, "max abs {err} (scale {scale})");
    for (a, b) in y.chunks(64).zip(want.chunks(64)) {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let cos = dot / (a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt());
        assert!(cos >= 0.9999, "cosine {cos}");
    }
}

#[test]
fn images_of_any_size_go_through_the_same_preprocessing() {
    let enc = model("tiny.onnx");
    let grey = vec![128u8; 48 * 40];
    let rgb = vec![128u8; 32 * 32 * 3];
    let a = enc.embed(dim_runtime::Image { pixels: &grey, width: 48, height: 40, channels: 1 }).unwrap();
    let b = enc.embed(dim_runtime::Image::rgb(&rgb, 32, 32)).unwrap();
    assert_eq!(a, b, "a flat grey image is the same input at any size");
    assert!(enc.embed(dim_runtime::Image::rgb(&rgb[..10], 32, 32)).is_err());
}
