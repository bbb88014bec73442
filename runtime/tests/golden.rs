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

/// One image runs through its own concrete-shape plan, a batch through the symbolic one: each
/// row of a batch is what that image gives alone (f32 to the same 1e-4 as the golden check;
/// int8 exactly, integer arithmetic in both plans).
#[test]
fn one_image_alone_matches_its_row_in_a_batch() {
    for (name, tol) in [("tiny.onnx", 1e-4f32), ("tiny.int8.onnx", 0.0)] {
        let enc = model(name);
        let x = inputs();
        let batch = enc.embed_preprocessed(&x).unwrap();
        for (i, row) in batch.chunks(enc.dim()).enumerate() {
            let alone = enc.embed_preprocessed(&x[i * INPUT_LEN..(i + 1) * INPUT_LEN]).unwrap();
            let err = alone.iter().zip(row).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(err <= tol, "{name} image {i}: max abs {err}");
        }
    }
}

/// The int8 file run as written (tract's int8 kernels, what aarch64 runs) and as
/// `Encoder::from_bytes` runs it on this architecture (on x86-64 the float form) agree to
/// the int8 tolerance above.
#[test]
fn int8_as_written_and_as_run_here_agree() {
    let bytes = std::fs::read(format!("{}/tests/data/tiny.int8.onnx", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let x = inputs();
    let a = Encoder::from_bytes(&bytes).unwrap().embed_preprocessed(&x).unwrap();
    let b = Encoder::from_bytes_as_written(&bytes).unwrap().embed_preprocessed(&x).unwrap();
    let scale = b.iter().map(|v| v.abs()).fold(0.0, f32::max);
    let err = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max);
    assert!(err <= 0.02 * scale, "max abs {err} (scale {scale})");
    println!("int8 as written vs as run here: max abs {err} (max |y| {scale})");
}

/// A batch split over threads gives what one thread gives, row for row and in order.
#[test]
fn batches_split_over_threads_keep_their_rows() {
    for name in ["tiny.onnx", "tiny.int8.onnx"] {
        let x: Vec<f32> = inputs().iter().cycle().take(13 * INPUT_LEN).enumerate().map(|(i, v)| v * (1.0 - (i / INPUT_LEN) as f32 * 0.05)).collect();
        let one = model(name).with_threads(1).embed_preprocessed(&x).unwrap();
        let three = model(name).with_threads(3).embed_preprocessed(&x).unwrap();
        assert_eq!(one.len(), 13 * 64);
        let err = one.iter().zip(&three).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(err <= 1e-5, "{name}: max abs {err}");
        let layered =
            Encoder::from_bytes_with_layers(&std::fs::read(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap(), &["relu3"]).unwrap();
        let (a, b) = (layered.clone().with_threads(1).embed_layers(&x).unwrap(), layered.with_threads(4).embed_layers(&x).unwrap());
        assert_eq!((a.len(), a[1].len()), (2, b[1].len()));
        assert!(a[1].iter().zip(&b[1]).all(|(p, q)| (p - q).abs() <= 1e-5), "{name}: relu3 rows differ");
    }
}
