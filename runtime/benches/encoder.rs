//! Encoder latency (batch 1) and throughput (batch 64), f32 and int8.
//!
//! Always benches the committed `tiny` test encoders; add more (e.g. an exported `dim32`) with
//! `DIM_BENCH_MODELS=name=path.onnx,name2=path2.onnx cargo bench -p dim-runtime`.
//! `benches/onnxruntime_reference.py` measures the same models with onnxruntime.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dim_runtime::{Encoder, INPUT_LEN};

fn models() -> Vec<(String, String)> {
    let data = format!("{}/tests/data", env!("CARGO_MANIFEST_DIR"));
    let mut m = vec![("tiny-f32".to_string(), format!("{data}/tiny.onnx")), ("tiny-int8".to_string(), format!("{data}/tiny.int8.onnx"))];
    if let Ok(extra) = std::env::var("DIM_BENCH_MODELS") {
        m.extend(extra.split(',').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())));
    }
    m
}

fn bench(c: &mut Criterion) {
    let input: Vec<f32> = (0..64 * INPUT_LEN).map(|i| ((i as f32) * 0.013).sin()).collect();
    for (name, path) in models() {
        let enc = Encoder::from_path(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut g = c.benchmark_group(name.as_str());
        for batch in [1usize, 64] {
            g.throughput(Throughput::Elements(batch as u64));
            g.bench_with_input(BenchmarkId::new("batch", batch), &batch, |b, &n| b.iter(|| enc.embed_preprocessed(&input[..n * INPUT_LEN]).unwrap()));
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
