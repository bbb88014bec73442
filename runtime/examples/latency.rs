//! Batch-1 latency and batch-64 throughput of encoder files, printed in the format of
//! `benches/onnxruntime_reference.py` so `scripts/bench-runtime` can put them side by side.
//!
//! ```text
//! cargo run --release -p dim-runtime --example latency -- tiny-int8=runtime/tests/data/tiny.int8.onnx
//! ```
//!
//! Each file is timed as `Encoder::from_bytes` runs it; an int8 file is also timed as written
//! (`Encoder::from_bytes_as_written`, tract's int8 kernels: what an aarch64 board runs), as
//! `NAME/as-written`. An engine blob (`NAME=PATH.blob`) is timed through the no_std engine
//! (`engine::Model::run`, one image after another on one thread: how the engine runs on a host)
//! and through the host fast path (`fast::FastModel::run_batch`: as `NAME/fast` on every core,
//! as `NAME/fast-1-thread` on one), on the same images as uint8 RGB.

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

/// The no_std engine on a host: batch 1 is one `Model::run`, batch 64 sixty-four of them.
fn report_engine(name: &str, blob: &[u8], x: &[f32]) {
    let model = dim_runtime::engine::Model::parse(blob).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    // The reference input in [-1, 1] back to the uint8 pixels it stands for, HWC.
    let images: Vec<dim_runtime::Rgb32> = x
        .chunks_exact(INPUT_LEN)
        .map(|img| {
            let mut rgb = [0u8; dim_runtime::RGB32_LEN];
            for (i, px) in rgb.iter_mut().enumerate() {
                let (pos, ch) = (i / 3, i % 3);
                *px = ((img[ch * 1024 + pos] + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8;
            }
            rgb
        })
        .collect();
    let (mut arena, mut y) = (vec![0u8; model.arena_size()], vec![0f32; model.dim()]);
    let mut run = |imgs: &[dim_runtime::Rgb32]| imgs.iter().for_each(|img| model.run(img, &mut arena, &mut y).unwrap());
    let one = median_seconds(|| run(&images[..1]), 200);
    let many = median_seconds(|| run(&images), 20);
    println!("{name}: batch 1 {:.0} us, batch 64 {:.0} img/s", one * 1e6, 64.0 / many);
    // The same blob through the host fast path (same results, bit for bit).
    let fast = dim_runtime::fast::FastModel::new(&model);
    // Every core, as onnxruntime runs: at batch 1 `run_batch` splits each layer between two
    // threads, at batch 64 it shares the images out.
    let threads = dim_runtime::cores();
    let mut y = vec![0f32; fast.dim()];
    let one = median_seconds(|| fast.run_batch(&images[..1], &mut y, threads).unwrap(), 200);
    let mut ys = vec![0f32; images.len() * fast.dim()];
    let many = median_seconds(|| fast.run_batch(&images, &mut ys, threads).unwrap(), 20);
    println!("{name}/fast: batch 1 {:.0} us, batch 64 {:.0} img/s", one * 1e6, 64.0 / many);
    // And on one thread (what `FastModel::run` does; what one core of a board gives).
    let one = median_seconds(|| fast.run_batch(&images[..1], &mut y, 1).unwrap(), 200);
    let many = median_seconds(|| fast.run_batch(&images, &mut ys, 1).unwrap(), 20);
    println!("{name}/fast-1-thread: batch 1 {:.0} us, batch 64 {:.0} img/s", one * 1e6, 64.0 / many);
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
        if path.ends_with(".blob") {
            report_engine(name, &bytes, &x);
            continue;
        }
        report(name, &Encoder::from_bytes(&bytes).unwrap_or_else(|e| panic!("{path}: {e}")), &x);
        if bytes.windows(11).any(|w| w == b"QLinearConv") {
            report(&format!("{name}/as-written"), &Encoder::from_bytes_as_written(&bytes).unwrap(), &x);
        }
    }
}
