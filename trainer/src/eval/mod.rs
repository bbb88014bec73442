//! `trainer eval` and `trainer check`: how good a representation is, and whether the deployed
//! encoder still carries it.
//!
//! Representations always come from a runtime a device runs ([`deployed`]): `dim-runtime`'s
//! tract `Encoder` for a checkpoint (exported in memory first; tract matches burn to 1e-4, see
//! `tests/export.rs`) or an ONNX file, f32 or int8; the no_std engine itself for a `.blob`. The measures (paper protocol, DESIGN.md): nonlinear and linear probes
//! on conv, fc and Y; kNN on Y; MINE of I(X; Y); NDM of Y. Each learned measure runs once per
//! seed, and the report gives every value with the mean and standard deviation, so the tolerances
//! of `check` rest on the measured run-to-run spread.

pub mod check;
pub mod deployed;
pub mod estimators;
pub mod fewshot;
pub mod msssim;
pub mod reconstruction;
pub mod report;
pub mod run;

use crate::data::{self, ImageSource};
use crate::knn;
use crate::probe::{self, ProbeConfig, ProbeKind, Rows};
use estimators::{EstimatorConfig, Kind};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// What `eval` ran; `check` reruns exactly this.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    pub seeds: usize,
    pub probe_epochs: usize,
    pub mine_steps: usize,
    pub ndm_steps: usize,
    pub knn_k: usize,
    /// Train images used as the kNN bank (the first ones of the train split's seeded shuffle).
    pub knn_bank: usize,
    /// Epochs of the reconstruction probes' decoders (0: no reconstruction probe; reports
    /// written before the probe existed read as 0, so `check` against them skips it).
    #[serde(default)]
    pub recon_epochs: usize,
    /// Train images the decoders learn from (the first ones of the train split's shuffle).
    #[serde(default = "default_recon_images")]
    pub recon_images: usize,
    /// Also the official classifier protocol on every layer (`probe.paper.*`, see
    /// [`probe::train_paper_probe`]): epoch chosen on a part of the train rows, never the test's.
    #[serde(default)]
    pub paper_probe: bool,
}

impl Settings {
    /// Refuses settings that would write a meaningless report (a probe of 0 epochs reads 0 %).
    pub fn validate(&self) -> anyhow::Result<()> {
        let named = [("--probe-epochs", self.probe_epochs), ("--mine-steps", self.mine_steps), ("--ndm-steps", self.ndm_steps), ("--seeds", self.seeds)];
        if let Some((flag, _)) = named.iter().find(|(_, v)| *v == 0) {
            anyhow::bail!("{flag} 0 would report a measure that was never trained; give at least 1");
        }
        if self.recon_epochs > 0 && self.recon_images < 2 {
            anyhow::bail!("--recon-images must be at least 2 when --recon-epochs is on (or pass --recon-epochs 0)");
        }
        Ok(())
    }
}

fn default_recon_images() -> usize {
    10_000
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            seeds: 3,
            probe_epochs: 20,
            mine_steps: 2000,
            ndm_steps: 2000,
            knn_k: 20,
            knn_bank: 10_000,
            recon_epochs: 10,
            recon_images: default_recon_images(),
            paper_probe: false,
        }
    }
}

/// What a measure is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Unit {
    /// An accuracy, in percent: `check` bounds its drop in points.
    #[serde(rename = "%")]
    Percent,
    /// An estimate of information: `check` bounds it by the reference's spread.
    #[serde(rename = "nats")]
    Nats,
    /// A similarity in [0, 1] (MS-SSIM): `check` bounds it by the reference's spread too.
    #[serde(rename = "score")]
    Score,
}

impl Unit {
    /// Decimals a value is shown with: MS-SSIM lives in [0, 1], where two would hide differences.
    pub fn decimals(self) -> usize {
        if self == Self::Score { 4 } else { 2 }
    }
}

impl std::fmt::Display for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Percent => "%",
            Self::Nats => "nats",
            Self::Score => "score",
        })
    }
}

/// One measure over seeds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Measure {
    /// e.g. `probe.nonlinear.fc`, `knn.y`, `mine`, `ndm`.
    pub name: String,
    pub unit: Unit,
    pub values: Vec<f64>,
    pub mean: f64,
    pub std: f64,
    /// Per seed: (x, y) points, x = epoch or step.
    pub curves: Vec<Vec<(f64, f64)>>,
}

impl Measure {
    fn new(name: String, unit: Unit, runs: Vec<(f64, Vec<(f64, f64)>)>) -> Self {
        let values: Vec<f64> = runs.iter().map(|r| r.0).collect();
        let n = values.len().max(1) as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = if values.len() > 1 { (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { 0.0 };
        Self { name, unit, values, mean, std, curves: runs.into_iter().map(|r| r.1).collect() }
    }
    pub fn is_accuracy(&self) -> bool {
        self.unit == Unit::Percent
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub model: String,
    pub train: String,
    pub test: String,
    pub train_images: usize,
    pub test_images: usize,
    pub settings: Settings,
    pub seconds: f64,
    pub measures: Vec<Measure>,
}

/// Images, labels and the representations of one split.
pub struct Split {
    pub images: Vec<f32>,
    pub labels: Vec<usize>,
    /// `(name, width, rows)` for `y`, then `conv` and `fc` when the model outputs them.
    pub layers: Vec<(&'static str, usize, Vec<f32>)>,
}

/// Runs every measure; with `floor` (the untrained twin's Y of the train and test images, rows
/// as in `train` / `test`), also the few-shot and novelty measures of that floor, suffixed
/// `.random`. `log` receives one line per finished measure.
pub fn evaluate(
    settings: &Settings,
    train: &Split,
    test: &Split,
    floor: Option<(&[f32], &[f32])>,
    classes: usize,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<Vec<Measure>> {
    let started = Instant::now();
    let mut say = |name: &str, v: f64, unit: Unit| log(&format!("[{:>6.0} s] {name}: {v:.3} {unit}", started.elapsed().as_secs_f64()));
    let (_, yd, y_tr) = &train.layers[0];
    let y_te = &test.layers[0].2;
    let mut measures = Vec::new();
    let bank = settings.knn_bank.min(train.labels.len());
    let knn = 100.0 * knn::knn_accuracy(&y_tr[..bank * yd], &train.labels[..bank], y_te, &test.labels, *yd, settings.knn_k)?;
    say("knn.y", knn, Unit::Percent);
    measures.push(Measure::new("knn.y".into(), Unit::Percent, vec![(knn, vec![])]));

    // Per measure, per seed: (value, curve).
    type Runs = std::collections::BTreeMap<String, Vec<(f64, Vec<(f64, f64)>)>>;
    let mut runs = Runs::new();
    // Per dimension an invertible map: it changes neither MI nor total correlation, and steadies the critics.
    let (ys_tr, ys_te) = probe::standardise(y_tr, y_te, *yd);
    for seed in 0..settings.seeds as u64 {
        for kind in [ProbeKind::Nonlinear, ProbeKind::Linear] {
            for ((name, d, tr), (_, _, te)) in train.layers.iter().zip(&test.layers).rev() {
                // The paper's probes use Adam 1e-4; the linear probe stands in for its logistic
                // regression / SVM fitted to convergence, which 1e-4 does not reach in tens of epochs.
                let lr = if kind == ProbeKind::Linear { 1e-3 } else { 1e-4 };
                let cfg = ProbeConfig::new().with_epochs(settings.probe_epochs).with_seed(seed).with_learning_rate(lr);
                let r = probe::train_probe(kind, &cfg, Rows { x: tr, labels: &train.labels, dim: *d }, Rows { x: te, labels: &test.labels, dim: *d }, classes)?;
                let key = format!("probe.{}.{name}", if kind == ProbeKind::Linear { "linear" } else { "nonlinear" });
                say(&format!("{key} (seed {seed})"), 100.0 * r.accuracy, Unit::Percent);
                let curve = r.curve.iter().enumerate().map(|(e, a)| ((e + 1) as f64, 100.0 * a)).collect();
                runs.entry(key).or_default().push((100.0 * r.accuracy, curve));
            }
        }
        if settings.paper_probe {
            for ((name, d, tr), (_, _, te)) in train.layers.iter().zip(&test.layers).rev() {
                let protocol = probe::PaperProtocol { seed, ..Default::default() };
                let r = probe::train_paper_probe(
                    &protocol,
                    Rows { x: tr, labels: &train.labels, dim: *d },
                    Rows { x: te, labels: &test.labels, dim: *d },
                    classes,
                )?;
                let key = format!("probe.paper.{name}");
                say(&format!("{key} (seed {seed}, epoch {} of {})", r.epoch, r.curve.len()), 100.0 * r.accuracy, Unit::Percent);
                let curve = r.curve.iter().enumerate().map(|(e, (_, t))| ((e + 1) as f64, 100.0 * t)).collect();
                runs.entry(key).or_default().push((100.0 * r.accuracy, curve));
            }
        }
        let dx = dim_runtime::INPUT_LEN;
        let mine_cfg = EstimatorConfig::mine().with_steps(settings.mine_steps).with_seed(seed);
        let rows = |x: &[f32], y: &[f32]| estimators::concat_rows(x, dx, y, *yd);
        let m = estimators::estimate(Kind::Mine { y_dim: *yd }, &mine_cfg, &rows(&train.images, &ys_tr), &rows(&test.images, &ys_te), dx + yd)?;
        say(&format!("mine (seed {seed})"), m.value, Unit::Nats);
        runs.entry("mine".into()).or_default().push((m.value, m.curve.iter().map(|&(s, v)| (s as f64, v)).collect()));
        let mut record = |name: &str, v: f64| {
            say(&format!("{name} (seed {seed})"), v, Unit::Percent);
            runs.entry(name.to_string()).or_default().push((v, vec![]));
        };
        let labels = (&train.labels[..], &test.labels[..]);
        few_shot_and_novelty((&y_tr[..], &y_te[..]), labels, *yd, classes, seed, "", &mut record);
        pixel_floor(train, test, classes, seed, &mut record);
        if let Some(twin) = floor {
            few_shot_and_novelty(twin, labels, *yd, classes, seed, ".random", &mut record);
        }
        if settings.recon_epochs > 0 {
            reconstruction_probes(settings, train, test, floor, seed, &mut |name, v| {
                say(&format!("{name} (seed {seed})"), v, Unit::Score);
                runs.entry(name.to_string()).or_default().push((v, vec![]));
            })?;
        }
        let ndm_cfg = EstimatorConfig::ndm().with_steps(settings.ndm_steps).with_seed(seed);
        let n = estimators::estimate(Kind::Ndm, &ndm_cfg, &ys_tr, &ys_te, *yd)?;
        say(&format!("ndm (seed {seed})"), n.value, Unit::Nats);
        runs.entry("ndm".into()).or_default().push((n.value, n.curve.iter().map(|&(s, v)| (s as f64, v)).collect()));
    }
    for (name, r) in runs {
        let unit = if ["probe", "fewshot", "novelty"].iter().any(|p| name.starts_with(p)) {
            Unit::Percent
        } else if name.starts_with("msssim") {
            Unit::Score
        } else {
            Unit::Nats
        };
        measures.push(Measure::new(name, unit, r));
    }
    Ok(measures)
}

/// Episodes per seed of the few-shot and novelty measures (see [`fewshot`]).
const FEW_SHOT_EPISODES: usize = 200;
const NOVELTY_EPISODES: usize = 50;
/// Query images per class in a few-shot episode; support images per class in a novelty one.
const QUERIES: usize = 15;
const NOVELTY_SHOTS: usize = 10;

/// The few-shot and novelty measures on `(train, test)` rows of Y (`dim` wide; support from
/// train, queries from test), each as `(name + suffix, percent)`. Measures whose episodes do not
/// fit the data (too few classes or images) are left out.
fn few_shot_and_novelty(
    (y_train, y_test): (&[f32], &[f32]),
    (train_labels, test_labels): (&[usize], &[usize]),
    dim: usize,
    classes: usize,
    seed: u64,
    suffix: &str,
    out: &mut dyn FnMut(&str, f64),
) {
    use fewshot::{Episode, Labelled, few_shot_accuracy, novelty};
    let (tr, te) = (Labelled { y: y_train, labels: train_labels, dim }, Labelled { y: y_test, labels: test_labels, dim });
    let ways = classes.min(5);
    for shots in [1, 5, 10] {
        if let Some(a) = few_shot_accuracy(tr, te, classes, Episode { ways, shots, queries: QUERIES }, FEW_SHOT_EPISODES, seed) {
            out(&format!("fewshot.{ways}way.{shots}shot{suffix}"), 100.0 * a);
        }
    }
    if let Some((auroc, tnr)) = novelty(tr, te, classes, NOVELTY_SHOTS, NOVELTY_EPISODES, seed) {
        out(&format!("novelty.auroc{suffix}"), 100.0 * auroc);
        out(&format!("novelty.tnr95{suffix}"), 100.0 * tnr);
    }
}

/// The reconstruction probe ([`reconstruction`]) on every layer (`msssim.y`, `msssim.fc`,
/// `msssim.conv`) and, with `floor`, on the untrained twin's Y (`msssim.y.random`).
fn reconstruction_probes(
    settings: &Settings,
    train: &Split,
    test: &Split,
    floor: Option<(&[f32], &[f32])>,
    seed: u64,
    out: &mut dyn FnMut(&str, f64),
) -> anyhow::Result<()> {
    use reconstruction::{Pairs, reconstruction_msssim};
    let (n, px) = (settings.recon_images.min(train.labels.len()), dim_runtime::INPUT_LEN);
    let images = (&train.images[..n * px], &test.images[..]);
    let (yd, twin) = (train.layers[0].1, floor.map(|(tr, te)| ("y.random", tr, te)));
    let layers = train.layers.iter().zip(&test.layers).map(|((name, d, tr), (_, _, te))| (*name, *d, &tr[..], &te[..]));
    for (name, d, tr, te) in layers.chain(twin.map(|(name, tr, te)| (name, yd, tr, te))) {
        let v =
            reconstruction_msssim(Pairs { x: &tr[..n * d], dim: d, images: images.0 }, Pairs { x: te, dim: d, images: images.1 }, settings.recon_epochs, seed)?;
        out(&format!("msssim.{name}"), v);
    }
    Ok(())
}

/// The 5-shot measure on raw pixels: the floor any representation should beat.
fn pixel_floor(train: &Split, test: &Split, classes: usize, seed: u64, out: &mut dyn FnMut(&str, f64)) {
    use fewshot::{Episode, Labelled, few_shot_accuracy};
    let dx = dim_runtime::INPUT_LEN;
    let (tr, te) = (Labelled { y: &train.images, labels: &train.labels, dim: dx }, Labelled { y: &test.images, labels: &test.labels, dim: dx });
    let ways = classes.min(5);
    if let Some(a) = few_shot_accuracy(tr, te, classes, Episode { ways, shots: 5, queries: QUERIES }, FEW_SHOT_EPISODES, seed) {
        out(&format!("fewshot.{ways}way.5shot.pixels"), 100.0 * a);
    }
}

/// (train source, train indices, test source, test indices, description of the test split).
pub type Splits = (Arc<dyn ImageSource>, Vec<usize>, Arc<dyn ImageSource>, Vec<usize>, String);

/// Where `eval` / `check` read their images: `test` when given, else the validation split of
/// `train` (the seeded split `fit` uses).
///
/// Every subset is a prefix of a seeded shuffle, in both branches: `--max-images` keeps the
/// first N of each split's shuffle and the kNN bank is the first `knn_bank` train images, so a
/// folder ordered by class (`<class>/*.jpg` is read class by class) gives random subsets, never
/// whole classes. A test folder must have the train folder's classes, in the same order: labels
/// are class positions.
pub fn open_splits(train: &Path, test: Option<&Path>, validation_size: usize, seed: u64, max_images: Option<usize>) -> anyhow::Result<Splits> {
    let cap = |mut v: Vec<usize>| {
        v.truncate(max_images.unwrap_or(usize::MAX));
        v
    };
    let source: Arc<dyn ImageSource> = Arc::from(data::open(train)?);
    match test {
        Some(t) if t != train => {
            let test_src: Arc<dyn ImageSource> = Arc::from(data::open(t)?);
            anyhow::ensure!(
                test_src.classes() == source.classes(),
                "the test data {} has classes [{}] but the train data {} has [{}]; labels would not match: use folders with the same class names",
                t.display(),
                test_src.classes().join(", "),
                train.display(),
                source.classes().join(", ")
            );
            let (a, b) = (cap(shuffled(source.len(), seed)), cap(shuffled(test_src.len(), seed)));
            Ok((source, a, test_src, b, format!("{} (test data: seed-{seed} shuffle)", t.display())))
        }
        _ => {
            let (a, b) = data::split(source.len(), validation_size, seed);
            let desc = format!("{} (validation split: last {validation_size} of the seed-{seed} shuffle)", train.display());
            Ok((source.clone(), cap(a), source, cap(b), desc))
        }
    }
}

/// `0..n` in the order of a seeded shuffle (the same shuffle [`data::split`] draws).
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    use rand::{SeedableRng, seq::SliceRandom};
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use dim_data::testing::write_folder;

    fn classes_in(source: &dyn ImageSource, idx: &[usize]) -> std::collections::BTreeSet<usize> {
        idx.iter().map(|&i| source.label(i)).collect()
    }

    /// Issue 13: with a test folder, `--max-images` and the kNN bank took the first images in
    /// folder order — whole classes. Every prefix must now be a seeded random sample.
    #[test]
    fn subsets_of_folders_ordered_by_class_hold_every_class() {
        let (train, test) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write_folder(train.path(), 10);
        write_folder(test.path(), 10);
        let (tr_src, tr, te_src, te, desc) = open_splits(train.path(), Some(test.path()), 5000, 0, Some(6)).unwrap();
        assert_eq!((tr.len(), te.len()), (6, 6));
        assert_eq!(classes_in(&*tr_src, &tr).len(), 2, "train subset {tr:?}");
        assert_eq!(classes_in(&*te_src, &te).len(), 2, "test subset {te:?}");
        assert!(desc.contains("seed-0 shuffle"), "{desc}");
        // The kNN bank (a prefix of the train indices) too, and the draw is seeded.
        let (_, all, ..) = open_splits(train.path(), Some(test.path()), 5000, 0, None).unwrap();
        assert_eq!(classes_in(&*tr_src, &all[..4]).len(), 2, "bank {:?}", &all[..4]);
        assert_eq!(all[..6], tr[..], "the cap keeps a prefix of the same shuffle");
        let (_, other, ..) = open_splits(train.path(), Some(test.path()), 5000, 1, None).unwrap();
        assert_ne!(other, all, "another seed draws another order");
    }

    #[test]
    fn a_test_folder_with_other_classes_is_refused() {
        let (train, test) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write_folder(train.path(), 2);
        write_folder(test.path(), 2);
        std::fs::rename(test.path().join("dogs"), test.path().join("wolves")).unwrap();
        let err = open_splits(train.path(), Some(test.path()), 5000, 0, None).err().unwrap().to_string();
        assert!(err.contains("wolves") && err.contains("dogs"), "{err}");
    }
}
