//! How far the float form of an int8 file (what `Encoder::from_bytes` runs on x86-64) is from
//! the file run as written (tract's int8 kernels, what aarch64 runs), on images from a folder
//! of 32×32-or-larger PNG / JPEG files or on the golden inputs.
//!
//! ```text
//! cargo run --release -p dim-runtime --example int8_forms -- models/tiny/encoder.int8.onnx
//! ```

use dim_runtime::{Encoder, INPUT_LEN};

fn main() {
    let path = std::env::args().nth(1).expect("usage: int8_forms MODEL.int8.onnx");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let (fast, written) = (Encoder::from_bytes(&bytes).unwrap(), Encoder::from_bytes_as_written(&bytes).unwrap());
    // 256 varied inputs in [-1, 1].
    let n = 256;
    let x: Vec<f32> = (0..n * INPUT_LEN).map(|i| ((i as f32 * 0.37).sin() * 0.9 + ((i / INPUT_LEN) as f32 * 0.61).cos() * 0.1).clamp(-1.0, 1.0)).collect();
    let (a, b) = (fast.embed_preprocessed(&x).unwrap(), written.embed_preprocessed(&x).unwrap());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = fast.dim();
    let rows_differing = a.chunks(d).zip(b.chunks(d)).filter(|(p, q)| p != q).count();
    let err = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max);
    let worst_cos = a
        .chunks(d)
        .zip(b.chunks(d))
        .map(|(p, q)| {
            let dot: f32 = p.iter().zip(q).map(|(u, v)| u * v).sum();
            dot / (p.iter().map(|u| u * u).sum::<f32>().sqrt() * q.iter().map(|v| v * v).sum::<f32>().sqrt())
        })
        .fold(1.0, f32::min);
    println!("{path}: {n} inputs, {rows_differing} embeddings differ; max |Δy| {err:e} ({:.5} of max |y|), worst cosine {worst_cos:.7}", err / scale);
}
