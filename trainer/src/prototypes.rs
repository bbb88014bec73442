//! `trainer prototypes`: enrol labelled images on the host into a prototypes file the firmware
//! embeds (format: `dim_runtime::prototypes::file`), with a novelty threshold calibrated on
//! validation images.
//!
//! - **What is enrolled.** For each chosen class, the first `shots` images of the seeded
//!   training shuffle (the split `fit` uses) are embedded by the no_std engine — the firmware's
//!   code — and their class prototype is the normalised mean of their normalised embeddings
//!   (the prototype `eval`'s few-shot measure uses), as int8 scaled to ±127. One prototype per
//!   class: `shots` times less memory on the device than storing each shot, and more accurate.
//! - **The threshold.** Every validation image of an enrolled class is scored as the device
//!   scores it (`PrototypeStore::nearest` on its int8 embedding); the threshold is the smallest
//!   novelty that flags at most `false_positive_rate` of them. Validation images of the classes
//!   not enrolled show what that threshold catches (the novelty recall).

use crate::data::{self, ImageSource};
use crate::eval::deployed::Deployed;
use crate::eval::fewshot::normalised_mean;
use anyhow::{Context, bail, ensure};
use dim_runtime::PrototypeStore;
use dim_runtime::engine::Model;
use dim_runtime::prototypes::file::{self, FileSpec, PrototypeFile};
use std::path::PathBuf;

/// Widest embedding and most labels the host-side store (the device's code) is built for.
const STORE_DIM: usize = 256;
const STORE_LABELS: usize = 256;

/// What `trainer prototypes` is asked to do.
#[derive(Debug, Clone)]
pub struct PrototypesOptions {
    /// The engine blob (`quantize --blob`) the device runs.
    pub model: PathBuf,
    /// Labelled images (any format `fit --data` reads).
    pub images: PathBuf,
    /// Images enrolled per class.
    pub shots: usize,
    /// Names of the classes to enrol (default: all).
    pub classes: Option<Vec<String>>,
    /// Share of known validation images the threshold may flag as novel.
    pub false_positive_rate: f64,
    /// Size of the validation split (the last images of the seeded shuffle).
    pub validation_size: usize,
    /// Seed of the split (the training run's).
    pub seed: u64,
    /// The prototypes file to write.
    pub out: PathBuf,
    /// Also write [`GOLDEN_PER_CLASS`] validation images of every class here (`.rgb`, raw
    /// 32×32 RGB one after another, and `.labels`, a class name per line): what the firmware's
    /// QEMU test replays.
    pub golden_set: Option<PathBuf>,
}

/// Validation images of each class in a golden set.
pub const GOLDEN_PER_CLASS: usize = 2;

/// What was written and how it scores on the validation images.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Names of the enrolled classes.
    pub enrolled: Vec<String>,
    /// The chosen novelty threshold.
    pub threshold: f32,
    /// Known validation images scored.
    pub known: usize,
    /// Of those, the share whose nearest prototype is their class.
    pub accuracy: f64,
    /// Of those, the share flagged novel (at most the requested rate).
    pub flagged_known: f64,
    /// Validation images of classes not enrolled, and the share flagged novel.
    pub novel: usize,
    /// `None` when every class is enrolled.
    pub flagged_novel: Option<f64>,
    /// Bytes written.
    pub bytes: usize,
}

/// Class positions to enrol: the named ones (in the order given), or all.
fn enrolled_classes(source: &dyn ImageSource, names: Option<&[String]>) -> anyhow::Result<Vec<usize>> {
    let all = source.classes();
    let Some(names) = names else { return Ok((0..all.len()).collect()) };
    let mut picked = Vec::new();
    for name in names {
        let Some(c) = all.iter().position(|n| n == name) else { bail!("no class {name:?} in {}; its classes are: {}", source.describe(), all.join(", ")) };
        ensure!(!picked.contains(&c), "class {name:?} is named twice");
        picked.push(c);
    }
    Ok(picked)
}

/// `v` scaled so its largest magnitude is 127, as int8 (the direction is what cosine sees).
fn to_int8(v: &[f32]) -> Vec<i8> {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let s = if max > 0.0 { 127.0 / max } else { 0.0 };
    v.iter().map(|x| (x * s).round().clamp(-127.0, 127.0) as i8).collect()
}

/// The smallest threshold that flags (novelty strictly above it) at most `rate` of `known`.
pub fn calibrate(known: &[f32], rate: f64) -> f32 {
    let mut sorted = known.to_vec();
    sorted.sort_by(f32::total_cmp);
    let allowed = (rate * sorted.len() as f64).floor() as usize;
    sorted.get(sorted.len().saturating_sub(allowed + 1)).copied().unwrap_or(1.0)
}

/// Enrols, calibrates and writes the file (atomically).
pub fn run(o: &PrototypesOptions) -> anyhow::Result<Summary> {
    ensure!(o.shots > 0, "--shots must be at least 1");
    ensure!((0.0..1.0).contains(&o.false_positive_rate), "--false-positive-rate must be in [0, 1), got {}", o.false_positive_rate);
    let bytes = std::fs::read(&o.model).with_context(|| format!("cannot read {}", o.model.display()))?;
    let model = Model::parse(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}; prototypes are made with the engine blob the device runs (`trainer quantize --blob`)", o.model.display()))?;
    ensure!(model.dim() <= STORE_DIM, "{}: Y has {} values; prototypes handle at most {STORE_DIM}", o.model.display(), model.dim());
    let source = data::open(&o.images)?;
    let enrolled = enrolled_classes(&*source, o.classes.as_deref())?;
    ensure!(enrolled.len() <= STORE_LABELS, "at most {STORE_LABELS} classes can be enrolled");
    let (train, valid) = data::split(source.len(), o.validation_size, o.seed);
    // The support: the first `shots` training images of each enrolled class, in shuffle order.
    let mut support = Vec::new();
    for &c in &enrolled {
        let picked: Vec<usize> = train.iter().copied().filter(|&i| source.label(i) == c).take(o.shots).collect();
        ensure!(picked.len() == o.shots, "class {:?} has {} training images; --shots is {}", source.classes()[c], picked.len(), o.shots);
        support.extend(picked);
    }
    // The engine's arithmetic on the host fast path (bit for bit the engine's, faster).
    let deployed = Deployed::Engine(bytes.clone(), true);
    let dim = model.dim();
    eprintln!("embedding {} support and {} validation images with the engine's arithmetic (host fast path)…", support.len(), valid.len());
    let s = deployed.represent(&*source, &support)?;
    let protos: Vec<Vec<i8>> = s.layers[0].2.chunks(dim * o.shots).map(|class| to_int8(&normalised_mean(class.chunks(dim), dim))).collect();
    // Score the validation images as the device does: int8 embedding, nearest prototype.
    let mut store = Box::new(PrototypeStore::<STORE_LABELS, STORE_DIM>::new());
    for (label, p) in protos.iter().enumerate() {
        let mut e = [0i8; STORE_DIM];
        e[..dim].copy_from_slice(p);
        store.insert(label as u16, e).map_err(|_| anyhow::anyhow!("store full"))?;
    }
    let v = deployed.represent(&*source, &valid)?;
    let (mut known, mut novel, mut correct) = (Vec::new(), Vec::new(), 0usize);
    for (y, &label) in v.layers[0].2.chunks(dim).zip(&v.labels) {
        let mut q = [0i8; STORE_DIM];
        model.quantize_output(y, &mut q[..dim]);
        let m = store.nearest(&q).expect("the store holds every enrolled class");
        match enrolled.iter().position(|&c| c == label) {
            Some(k) => {
                correct += (m.label as usize == k) as usize;
                known.push(m.novelty);
            }
            None => novel.push(m.novelty),
        }
    }
    ensure!(!known.is_empty(), "no validation image of an enrolled class: raise --validation-size");
    let threshold = calibrate(&known, o.false_positive_rate);
    let share = |v: &[f32]| v.iter().filter(|&&n| n > threshold).count() as f64 / v.len() as f64;
    let names: Vec<&str> = enrolled.iter().map(|&c| source.classes()[c].as_str()).collect();
    let items: Vec<(u16, &[i8])> = protos.iter().enumerate().map(|(l, p)| (l as u16, p.as_slice())).collect();
    let spec = FileSpec { model: model.id, threshold, false_positive_rate: o.false_positive_rate as f32, labels: &names, prototypes: &items };
    let out = file::write(&spec).map_err(|e| anyhow::anyhow!("cannot write prototypes: {e} (class names are 1 to 31 bytes)"))?;
    PrototypeFile::parse(&out).expect("the writer's output parses");
    crate::fs::write_atomic(&o.out, &out)?;
    if let Some(path) = &o.golden_set {
        write_golden_set(&*source, &valid, path)?;
    }
    Ok(Summary {
        enrolled: names.iter().map(|n| n.to_string()).collect(),
        threshold,
        known: known.len(),
        accuracy: correct as f64 / known.len() as f64,
        flagged_known: share(&known),
        novel: novel.len(),
        flagged_novel: (!novel.is_empty()).then(|| share(&novel)),
        bytes: out.len(),
    })
}

/// The first [`GOLDEN_PER_CLASS`] images of each class in `valid`, as `path.rgb` and
/// `path.labels`.
fn write_golden_set(source: &dyn ImageSource, valid: &[usize], path: &std::path::Path) -> anyhow::Result<()> {
    let (mut rgb, mut labels) = (Vec::new(), String::new());
    for c in 0..source.classes().len() {
        for &i in valid.iter().filter(|&&i| source.label(i) == c).take(GOLDEN_PER_CLASS) {
            rgb.extend(source.load(i)?);
            labels.push_str(&source.classes()[c]);
            labels.push('\n');
        }
    }
    crate::fs::write_atomic(&path.with_extension("rgb"), &rgb)?;
    crate::fs::write_atomic(&path.with_extension("labels"), labels.as_bytes())
}

/// Whether `path` holds a prototypes file (by its magic), for `trainer inspect`.
pub fn is_prototypes_file(path: &std::path::Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && magic == file::MAGIC
}

/// A prototypes file in words: its encoder, threshold, labels and prototypes (`trainer inspect`).
pub fn show(path: &std::path::Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let f = PrototypeFile::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}; make it again with `trainer prototypes`", path.display()))?;
    let mut counts = vec![0usize; f.labels()];
    f.prototypes().for_each(|(l, _)| counts[l as usize] += 1);
    let labels: Vec<String> = f.label_names().zip(&counts).map(|(n, c)| format!("{n} ({c})")).collect();
    Ok(format!(
        "prototypes file, version {}: {} bytes\nencoder: blob {:08x}\nY: {} values (int8)\nnovelty threshold: {:.4} (flags {:.1} % of known validation images)\nlabels ({}), prototypes each: {}\n",
        file::VERSION,
        bytes.len(),
        f.model,
        f.dim,
        f.threshold,
        100.0 * f.false_positive_rate,
        f.labels(),
        labels.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_flags_at_most_the_rate() {
        let known: Vec<f32> = (0..100).map(|i| i as f32 / 100.0).collect();
        let t = calibrate(&known, 0.05);
        assert_eq!(t, 0.94, "0.95 … 0.99 lie above it: 5 of 100");
        assert_eq!(known.iter().filter(|&&n| n > t).count(), 5);
        assert_eq!(calibrate(&known, 0.0), 0.99, "nothing known is flagged");
        assert_eq!(calibrate(&[0.3, 0.3, 0.3], 0.5), 0.3, "ties: flag fewer, never more");
    }

    #[test]
    fn int8_prototypes_keep_the_direction() {
        let p = normalised_mean([&[3.0, 0.0][..], &[0.0, 1.0][..]], 2);
        assert!((p[0] - p[1]).abs() < 1e-6, "each row counts once, whatever its length: {p:?}");
        assert_eq!(to_int8(&[0.5, -0.25, 0.0]), [127, -64, 0]);
        assert_eq!(to_int8(&[0.0, 0.0]), [0, 0]);
    }
}
