//! `trainer card`: a shipped model's `README.md`, written from what was measured.
//!
//! It reads a model folder made by `scripts/ship-model` — `config.json` (the training config),
//! `encoder.onnx` / `encoder.int8.onnx` / `encoder.blob`, `encoder.int8.quantize.json`,
//! `eval/report.json` (f32 reference) and `check/check.json` (int8 vs reference) — and the run's
//! `metrics.jsonl`, and writes every number from those files; nothing is typed in by hand.

use crate::config::TrainConfig;
use crate::eval::Report;
use crate::eval::check::Row;
use anyhow::Context;
use std::fmt::Write;
use std::path::{Path, PathBuf};

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: unexpected content", path.display()))
}

/// Training time and throughput from a run's `metrics.jsonl`: (steps, epochs, mean img/s).
fn training(run: &Path) -> anyhow::Result<(u64, u64, f64)> {
    let path = run.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let (mut steps, mut epochs, mut rate, mut n) = (0u64, 0u64, 0f64, 0f64);
    for v in text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) {
        if let Some(s) = v.get("step").and_then(|s| s.as_u64()) {
            steps = steps.max(s);
            rate += v["img_per_s"].as_f64().unwrap_or(0.0);
            n += 1.0;
        }
        if let Some(e) = v.get("epoch_end").and_then(|e| e.as_u64()) {
            epochs = epochs.max(e);
        }
    }
    Ok((steps, epochs, rate / n.max(1.0)))
}

fn size(path: &Path) -> String {
    std::fs::metadata(path).map_or_else(|_| "not shipped".into(), |m| format!("{} bytes", m.len()))
}

/// Writes `dir/README.md` and the golden pair; `hardware` says where training ran.
pub fn write(dir: &Path, run: &Path, data: &Path, name: &str, hardware: &str) -> anyhow::Result<PathBuf> {
    let config: TrainConfig = read_json(&dir.join("config.json"))?;
    write_golden(dir, data, &config)?;
    let report: Report = read_json(&dir.join("eval/report.json"))?;
    let rows: Vec<Row> = read_json(&dir.join("check/check.json"))?;
    let quant: serde_json::Value = read_json(&dir.join("encoder.int8.quantize.json"))?;
    let (steps, epochs, rate) = training(run)?;
    let enc = config.encoder();
    let mut s = String::new();
    writeln!(s, "# `{name}`: a Deep InfoMax encoder ({:?}) trained on {}\n", config.model, config.data.as_deref().unwrap_or("built-in shapes"))?;
    writeln!(s, "Every number below was written by `trainer card` from the files in this folder.\n")?;
    writeln!(s, "## Model\n")?;
    writeln!(
        s,
        "- convs {:?} ({}×{}, stride 2, BN folded), {}fc {}, Y {}",
        enc.channels,
        enc.kernel,
        enc.kernel,
        if enc.global_pool { "global average pool, " } else { "" },
        enc.fc,
        enc.y_dim
    )?;
    writeln!(s, "- {} deployed parameters, {} MAC per 32×32 image", enc.deployed_params(), enc.macs())?;
    writeln!(
        s,
        "- files: `encoder.onnx` {}, `encoder.int8.onnx` {}, `encoder.blob` {}",
        size(&dir.join("encoder.onnx")),
        size(&dir.join("encoder.int8.onnx")),
        size(&dir.join("encoder.blob"))
    )?;
    writeln!(s, "- golden pair for tests: `golden.rgb` (the first validation image, 32×32 RGB) and `golden.y.txt` (y of `encoder.int8.onnx` for it, tract)")?;
    writeln!(
        s,
        "- int8: cosine(Y_int8, Y_f32) over {} validation images: mean {:.5}, worst {:.5}\n",
        quant["validation_images"],
        quant["mean_cosine"].as_f64().unwrap_or(f64::NAN),
        quant["worst_cosine"].as_f64().unwrap_or(f64::NAN)
    )?;
    writeln!(s, "## Training\n")?;
    writeln!(
        s,
        "- objective: α={} β={} γ={}, {:?} estimator, {:?} local critic (W={}), Adam {}, batch {}",
        config.alpha, config.beta, config.gamma, config.estimator, config.local_critic, config.critic_width, config.learning_rate, config.batch_size
    )?;
    let hours = steps as f64 * config.batch_size as f64 / rate.max(1e-9) / 3600.0;
    writeln!(
        s,
        "- {steps} steps ({epochs} complete epochs) on {hardware}: mean {rate:.0} img/s, so ≈ {hours:.1} h of training (steps × batch ÷ mean rate); full config in `config.json`\n"
    )?;
    writeln!(s, "## Measures (f32, `eval/report.json`)\n")?;
    writeln!(s, "{}", crate::eval::report::measures(&report))?;
    writeln!(s, "Curves: `eval/report.probes.png`, `eval/report.estimators.png`.\n")?;
    writeln!(s, "## int8 through the runtime (`trainer check`, `check/check.json`)\n\n{}", crate::eval::check::table(&rows))?;
    writeln!(s, "## Reproduce\n\n```sh")?;
    writeln!(s, "trainer fit --config models/{name}/config.json --data <CIFAR-10 train folder> --out runs/{name}")?;
    writeln!(s, "scripts/ship-model {name} runs/{name} <CIFAR-10 train folder>\n```")?;
    let out = dir.join("README.md");
    crate::checkpoint::write_atomic(&out, s.as_bytes())?;
    Ok(out)
}

/// The golden pair tests replay: the first validation image of `data` (32×32 RGB, HWC) as
/// `golden.rgb`, and the int8 encoder's y for it through tract as `golden.y.txt`.
pub fn write_golden(dir: &Path, data: &Path, config: &TrainConfig) -> anyhow::Result<()> {
    let source = crate::data::open(data)?;
    let (_, val) = crate::data::split(source.len(), config.validation_size, config.seed);
    let i = *val.first().context("the data has no validation images")?;
    let rgb = source.load(i)?;
    let mut input = vec![0f32; dim_runtime::INPUT_LEN];
    dim_runtime::preprocess::rgb32_to_input(&rgb, &mut input)?;
    let y = dim_runtime::Encoder::from_path(dir.join("encoder.int8.onnx"))?.embed_preprocessed(&input)?;
    crate::checkpoint::write_atomic(&dir.join("golden.rgb"), &rgb)?;
    let text: Vec<String> = y.iter().map(|v| format!("{v:e}")).collect();
    crate::checkpoint::write_atomic(&dir.join("golden.y.txt"), (text.join("\n") + "\n").as_bytes())
}
