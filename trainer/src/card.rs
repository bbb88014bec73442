//! `trainer card`: a shipped model's `README.md`, written from what was measured.
//!
//! It reads a model folder made by `scripts/ship-model` — `config.json` (the training config),
//! `encoder.onnx` / `encoder.int8.onnx` / `encoder.blob`, `encoder.int8.quantize.json`,
//! `eval/report.json` (f32 reference) and `check/check.json` (int8 vs reference) — and the run's
//! `metrics.jsonl`, and writes every number from those files; nothing is typed in by hand.

use crate::data::ImageSource;
use crate::eval::check::Row;
use crate::eval::report::{Curve, Series};
use crate::eval::{Report, Unit};
use crate::fit::config::TrainConfig;
use anyhow::Context;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: unexpected content", path.display()))
}

/// What a run's `metrics.jsonl` says: steps, complete epochs, mean img/s over the step lines, and
/// per epoch (the last line written for it: a resumed run may repeat one) loss, local and prior terms.
struct Training {
    steps: u64,
    epochs: u64,
    rate: f64,
    per_epoch: BTreeMap<u64, [f64; 3]>,
}

fn training(run: &Path) -> anyhow::Result<Training> {
    use crate::fit::metrics::{self, Record};
    let mut t = Training { steps: 0, epochs: 0, rate: 0.0, per_epoch: BTreeMap::new() };
    let mut n = 0f64;
    for record in metrics::read(&run.join("metrics.jsonl"))? {
        match record {
            Record::Step(s) => {
                t.steps = t.steps.max(s.step as u64);
                t.rate += s.img_per_s;
                n += 1.0;
            }
            Record::Epoch(e) => {
                t.epochs = t.epochs.max(e.epoch_end as u64);
                t.per_epoch.insert(e.epoch_end as u64, [e.losses.loss, e.losses.local_mi, e.losses.prior]);
            }
            Record::Knn(_) | Record::Monitor(_) => {}
        }
    }
    t.rate /= n.max(1.0);
    Ok(t)
}

/// Earlier evaluations of the same run, `eval/history/epoch-N.json`, in epoch order.
fn history(dir: &Path) -> anyhow::Result<Vec<(u64, Report)>> {
    let folder = dir.join("eval/history");
    let Ok(entries) = std::fs::read_dir(&folder) else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let epoch = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("epoch-")?.strip_suffix(".json")?.parse().ok());
        if let Some(epoch) = epoch {
            out.push((epoch, read_json(&path)?));
        }
    }
    out.sort_by_key(|(e, _)| *e);
    Ok(out)
}

/// The image flags that select `report`'s train and test images (`eval` and `check` alike).
fn image_flags(report: &Report) -> String {
    format!("--max-images {}", report.train_images.max(report.test_images))
}

/// The flags `trainer eval` needs to reproduce `report` (check reuses its settings from it).
fn eval_flags(report: &Report) -> String {
    let s = &report.settings;
    // The reconstruction probe is on by default: a report without it says `--recon-epochs 0`.
    let recon = match s.recon_epochs {
        0 => " --recon-epochs 0".to_string(),
        e => format!(" --recon-epochs {e} --recon-images {}", s.recon_images),
    };
    format!("{} --seeds {} --probe-epochs {} --mine-steps {} --ndm-steps {}{recon}", image_flags(report), s.seeds, s.probe_epochs, s.mine_steps, s.ndm_steps)
}

fn mean_of(report: &Report, name: &str) -> f64 {
    report.measures.iter().find(|m| m.name == name).map_or(f64::NAN, |m| m.mean)
}

/// The history table and `eval/history.png` (probe accuracies by epoch); empty without history.
fn history_section(dir: &Path, history: &[(u64, Report)]) -> anyhow::Result<String> {
    let Some((_, first)) = history.first() else { return Ok(String::new()) };
    const SHOWN: [&str; 6] = ["probe.nonlinear.conv", "probe.nonlinear.fc", "probe.nonlinear.y", "probe.linear.fc", "knn.y", "mine"];
    let mut s = format!(
        "## During training (`eval/history/epoch-N.json`)\n\nThe checkpoint of each epoch N measured with `trainer eval {}` (fewer images and probe epochs than above, so lower):\n\n| epoch | {} |\n|---|{}\n",
        eval_flags(first),
        SHOWN.join(" | "),
        "---|".repeat(SHOWN.len())
    );
    for (epoch, report) in history {
        let cells: Vec<String> = SHOWN.iter().map(|n| format!("{:.2}", mean_of(report, n))).collect();
        s += &format!("| {epoch} | {} |\n", cells.join(" | "));
    }
    let curves: Vec<(&str, Vec<Curve>)> =
        SHOWN[..5].iter().map(|&n| (n, vec![history.iter().map(|(e, r)| (*e as f64, mean_of(r, n))).filter(|p| p.1.is_finite()).collect()])).collect();
    let series: Vec<Series> = curves.iter().map(|(n, c)| (*n, c.as_slice())).collect();
    match crate::eval::report::plot(&dir.join("eval/history.png"), "validation accuracy (%) by training epoch", &series) {
        Ok(()) => s += "\nCurve: `eval/history.png`.\n\n",
        Err(e) => eprintln!("note: no plot eval/history.png: {e}"),
    }
    Ok(s)
}

/// `training.png`: the loss terms by epoch.
fn training_plot(dir: &Path, t: &Training) -> bool {
    let pick = |i: usize| vec![t.per_epoch.iter().map(|(e, v)| (*e as f64, v[i])).collect::<Vec<_>>()];
    let curves = [("loss", pick(0)), ("local MI term", pick(1)), ("prior term", pick(2))];
    let series: Vec<Series> = curves.iter().map(|(n, c)| (*n, c.as_slice())).collect();
    let path = dir.join("training.png");
    crate::eval::report::plot(&path, "training objective by epoch (metrics.jsonl)", &series)
        .map_err(|e| eprintln!("note: no plot {}: {e}", path.display()))
        .is_ok()
}

fn size(path: &Path) -> String {
    std::fs::metadata(path).map_or_else(|_| "not shipped".into(), |m| format!("{} bytes", m.len()))
}

/// The model's `config.json`, read as `fit --resume` reads it: fields added to the config since
/// the model was shipped take their defaults.
fn training_config(dir: &Path) -> anyhow::Result<TrainConfig> {
    TrainConfig::load_file(&dir.join("config.json"))
}

/// Writes `dir/README.md` and the golden pair; `hardware` says where training ran.
pub fn write(dir: &Path, run: &Path, data: &Path, name: &str, hardware: &str) -> anyhow::Result<PathBuf> {
    let config = training_config(dir)?;
    let source = crate::data::open(data)?;
    write_golden(dir, &*source, &config)?;
    let report: Report = read_json(&dir.join("eval/report.json"))?;
    let rows: Vec<Row> = read_json(&dir.join("check/check.json"))?;
    let mut s = String::new();
    let data_set = data_set_name(&*source, data);
    writeln!(s, "# `{name}`: a Deep InfoMax encoder ({:?}) trained on {data_set}\n", config.model)?;
    // A model that stopped short of its goal says so: `STATUS.md`, written by whoever ships it,
    // goes first, marked as theirs.
    match std::fs::read_to_string(dir.join("STATUS.md")) {
        Ok(status) => {
            writeln!(
                s,
                "Every number below was written by `trainer card` from the files in this folder, except in the status (`STATUS.md`, written by hand).\n"
            )?;
            writeln!(s, "## Status\n\n{}\n", status.trim())?;
        }
        Err(_) => writeln!(s, "Every number below was written by `trainer card` from the files in this folder.\n")?,
    }
    s += &model_section(dir, &config)?;
    s += &training_section(dir, run, &config, hardware)?;
    s += &measures_section(dir, &report, &rows)?;
    s += &reproduce_section(name, &report, &rows)?;
    // The reports name the folders they read on the training machine; the card names the data.
    let mut folders: Vec<String> = [config.data.clone(), Some(data.display().to_string())].into_iter().flatten().collect();
    folders.push(report.train.clone());
    folders.retain(|f| f.len() > 1);
    folders.sort_by_key(|f| std::cmp::Reverse(f.len()));
    for f in folders {
        s = s.replace(&f, &data_set);
    }
    let out = dir.join("README.md");
    crate::fs::write_atomic(&out, s.as_bytes())?;
    Ok(out)
}

/// The data set by name rather than by the training machine's folder: CIFAR-10 when the
/// classes are CIFAR-10's, the folder's own name otherwise.
fn data_set_name(source: &dyn ImageSource, data: &Path) -> String {
    let classes = source.classes();
    if classes.iter().map(String::as_str).eq(crate::data::CIFAR10_CLASSES) {
        "the CIFAR-10 training set".to_string()
    } else if let Some(folder) = data.is_dir().then(|| data.file_name()).flatten() {
        format!("the image folder `{}`", folder.to_string_lossy())
    } else {
        source.describe()
    }
}

/// The architecture, its size and files, and the int8 file's agreement with the f32 one.
fn model_section(dir: &Path, config: &TrainConfig) -> anyhow::Result<String> {
    let quant: crate::quantize::QuantizeReport = read_json(&dir.join("encoder.int8.quantize.json"))?;
    let enc = config.encoder();
    let mut s = String::new();
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
        quant.validation_images, quant.mean_cosine, quant.worst_cosine
    )?;
    Ok(s)
}

/// The objective, the length and speed of training, and the loss curve.
fn training_section(dir: &Path, run: &Path, config: &TrainConfig, hardware: &str) -> anyhow::Result<String> {
    let t = training(run)?;
    let Training { steps, epochs, rate, .. } = t;
    let mut s = String::new();
    writeln!(s, "## Training\n")?;
    writeln!(
        s,
        "- objective: α={} β={} γ={}, {:?} estimator, {:?} local critic (W={}), Adam {}, batch {}",
        config.alpha, config.beta, config.gamma, config.estimator, config.local_critic, config.critic_width, config.learning_rate, config.batch_size
    )?;
    if let Some(d) = &config.distill {
        // Its folder and file (`dim32/encoder.onnx`), not the training machine's path.
        let parts: Vec<String> = Path::new(&d.teacher).components().rev().take(2).map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        let teacher = parts.into_iter().rev().collect::<Vec<_>>().join("/");
        writeln!(
            s,
            "- distilled from `{teacher}` (the teacher's `{}` layer, width {}): cosine critic W={}, τ={}, {} extra negatives a step, weight δ={}",
            d.layer.name(),
            d.teacher_dim.map_or("?".into(), |w| w.to_string()),
            d.width,
            d.temperature,
            d.negatives,
            d.weight
        )?;
    }
    let hours = steps as f64 * config.batch_size as f64 / rate.max(1e-9) / 3600.0;
    writeln!(
        s,
        "- {steps} steps ({epochs} complete epochs) on {hardware}: mean {rate:.0} img/s, so ≈ {hours:.1} h of training (steps × batch ÷ mean rate); full config in `config.json`"
    )?;
    if let (Some((e0, v0)), Some((e1, v1))) = (t.per_epoch.first_key_value(), t.per_epoch.last_key_value()) {
        writeln!(
            s,
            "- loss {:.4} after epoch {e0}, {:.4} after epoch {e1}{}",
            v0[0],
            v1[0],
            if training_plot(dir, &t) { " (curves: `training.png`)" } else { "" }
        )?;
    }
    writeln!(s)?;
    Ok(s)
}

/// The f32 measures, their history by epoch, and the int8 check.
fn measures_section(dir: &Path, report: &Report, rows: &[Row]) -> anyhow::Result<String> {
    let history = history(dir)?;
    let mut s = String::new();
    writeln!(s, "## Measures (f32, `eval/report.json`)\n")?;
    writeln!(s, "{}", crate::eval::report::measures(report))?;
    writeln!(s, "Curves: `eval/report.probes.png`, `eval/report.estimators.png`.\n")?;
    writeln!(
        s,
        "**MINE and NDM are not on the paper's scale.** Both are Donsker–Varadhan estimates whose value depends on the critic that computes them — its network, its training steps and learning rate — and on how negatives are drawn (`trainer/src/eval/estimators.rs`): here a critic trained for {} (MINE) / {} (NDM) steps on the train rows, then evaluated on the held-out rows, each against 8 shuffles. The paper's Table 3 (DIM(L): MINE 45.09, NDM 0.18) comes from its own code and settings. Compare these figures between encoders measured here with the same settings (other checkpoints, other models' cards), not with the paper's.\n",
        report.settings.mine_steps, report.settings.ndm_steps
    )?;
    writeln!(s, "{}", history_section(dir, &history)?)?;
    writeln!(s, "## int8 through the runtime (`trainer check`, `check/check.json`)\n\n{}", crate::eval::check::table(rows))?;
    let quick: Option<Report> = dir.join("eval/quick.json").exists().then(|| read_json(&dir.join("eval/quick.json"))).transpose()?;
    if let Some(q) = &quick {
        writeln!(
            s,
            "`eval/quick.json` holds the f32 measures at quick settings (`{}`): `scripts/demo` checks the int8 encoder against it in about a minute.\n",
            eval_flags(q)
        )?;
    }
    Ok(s)
}

/// The commands that made this folder.
fn reproduce_section(name: &str, report: &Report, rows: &[Row]) -> anyhow::Result<String> {
    let mut s = String::new();
    let data = "<CIFAR-10 train folder>";
    let max_drop = rows.iter().find(|r| r.unit == Unit::Percent).map_or(1.0, |r| r.tolerance);
    writeln!(s, "## Reproduce\n\n```sh")?;
    writeln!(s, "trainer fit --config models/{name}/config.json --data {data} --out runs/{name}   # --resume continues after a stop")?;
    writeln!(s, "trainer export --checkpoint runs/{name} --out models/{name}/encoder.onnx")?;
    writeln!(s, "trainer quantize --model models/{name}/encoder.onnx --calib {data} --out models/{name}/encoder.int8.onnx --blob models/{name}/encoder.blob")?;
    writeln!(s, "trainer eval --model runs/{name} --train {data} {} --out models/{name}/eval/report.json", eval_flags(report))?;
    writeln!(
        s,
        "trainer check --model models/{name}/encoder.int8.onnx --train {data} {} --reference models/{name}/eval/report.json --max-drop {max_drop} --out models/{name}/check/check.json",
        image_flags(report)
    )?;
    writeln!(s, "```\n\n`scripts/ship-model {name} runs/{name} {data}` runs these after `fit` and writes this card.")?;
    Ok(s)
}

/// The golden pair tests replay: the first validation image of `source` (32×32 RGB, HWC) as
/// `golden.rgb`, and the int8 encoder's y for it through tract as `golden.y.txt`.
pub fn write_golden(dir: &Path, source: &dyn ImageSource, config: &TrainConfig) -> anyhow::Result<()> {
    let (_, val) = crate::data::split(source.len(), config.validation_size, config.seed);
    let i = *val.first().context("the data has no validation images")?;
    let rgb = source.load(i)?;
    let mut input = vec![0f32; dim_runtime::INPUT_LEN];
    dim_runtime::preprocess::rgb32_to_input(&rgb, &mut input)?;
    let y = dim_runtime::Encoder::from_path(dir.join("encoder.int8.onnx"))?.embed_preprocessed(&input)?;
    crate::fs::write_atomic(&dir.join("golden.rgb"), &rgb)?;
    let text: Vec<String> = y.iter().map(|v| format!("{v:e}")).collect();
    crate::fs::write_atomic(&dir.join("golden.y.txt"), (text.join("\n") + "\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_shipped_before_a_field_was_added_is_read() {
        // The shipped tiny's config.json predates `views` (session 19); the card must read it.
        let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny");
        let text = std::fs::read_to_string(tiny.join("config.json")).unwrap();
        assert!(!text.contains("\"views\""), "the fixture gained the field: pick another old config");
        let config = training_config(&tiny).unwrap();
        assert_eq!((config.views, config.epochs), (1, 80));
    }

    #[test]
    fn the_card_names_the_data_set_not_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let cifar = dir.path().join("var/tmp/some-machine/train");
        for class in ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"] {
            std::fs::create_dir_all(cifar.join(class)).unwrap();
            image::RgbImage::new(32, 32).save(cifar.join(class).join("0.png")).unwrap();
        }
        let name = |p: &Path| data_set_name(&*crate::data::open(p).unwrap(), p);
        assert_eq!(name(&cifar), "the CIFAR-10 training set");
        std::fs::remove_dir_all(cifar.join("truck")).unwrap();
        assert_eq!(name(&cifar), "the image folder `train`");
    }
}
