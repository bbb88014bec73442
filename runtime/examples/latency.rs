//! Batch-1 latency and batch-64 throughput of encoder files, printed in the format of
//! `benches/onnxruntime_reference.py` so `scripts/bench-runtime` can put them side by side.
//!
//! ```text
//! cargo run --release -p dim-runtime --example latency -- tiny-int8=runtime/tests/data/tiny.int8.onnx
//! ```
//!
//! Each file is timed as `Encoder::from_bytes` runs it; an int8 file is also timed as written
//! (`Encoder::from_bytes_as_written`, tract's int8 kernels: what an aarch64 board runs), as
//! `NAME/as-written`.

use dim_runtime::{Encoder, INPUT_LEN};
use std::time::Instant;

fn median_seconds(mut f: impl FnMut(), reps: usize) -> f64 {
    f();
    let mut ts: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    ts.sort_by(f64::total_cmp);
    ts[reps / 2]
}

fn report(name: &str, encoder: &Encoder, x: &[f32]) {
    let one = median_seconds(|| drop(encoder.embed_preprocessed(&x[..INPUT_LEN]).unwrap()), 200);
    let many = median_seconds(|| drop(encoder.embed_preprocessed(x).unwrap()), 20);
    println!("{name}: batch 1 {:.0} us, batch 64 {:.0} img/s", one * 1e6, 64.0 / many);
}

fn main() {
    // The reference script's input: sin(0.013·i) over [64, 3, 32, 32].
    let x: Vec<f32> = (0..64 * INPUT_LEN).map(|i| (i as f32 * 0.013).sin()).collect();
    for arg in std::env::args().skip(1) {
        let Some((name, path)) = arg.split_once('=') else {
            eprintln!("expected NAME=PATH.onnx, got {arg}");
            std::process::exit(2);
        };
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        report(name, &Encoder::from_bytes(&bytes).unwrap_or_else(|e| panic!("{path}: {e}")), &x);
        if bytes.windows(11).any(|w| w == b"QLinearConv") {
            report(&format!("{name}/as-written"), &Encoder::from_bytes_as_written(&bytes).unwrap(), &x);
        }
    }
}
