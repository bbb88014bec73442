//! The training configuration: every field has a default, the resolved config is saved beside
//! every checkpoint (`config.json`), and `--config FILE` (TOML or JSON) overrides the defaults.

use crate::data::Augment;
use crate::model::{DimModelConfig, EncoderConfig, EncoderOutput, LocalCriticKind};
use crate::objective::{Estimator, Prior};
use anyhow::{Context, bail};
use burn::config::Config;
use burn::prelude::Tensor;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// The paper's encoder (rdevon/DIM basic32x32), 4.92 M parameters.
    Dim32,
    /// MCU encoder, 118 K parameters, 2.6 M MAC.
    Tiny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// burn's Flex backend (pure Rust, SIMD, multi-threaded).
    Cpu,
    /// NVIDIA GPU (build with `--features cuda`).
    Cuda,
    /// Any GPU through wgpu (Vulkan, Metal, DX12; in the default build).
    Wgpu,
}

/// Which representation of the teacher the student learns to carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TeacherLayer {
    /// The teacher's representation Y.
    Y,
    /// The teacher's fc layer (after BN and ReLU): wider than Y, and the layer the paper's probes
    /// rate highest.
    Fc,
    /// The teacher's last convolutional block, flattened.
    Conv,
}

impl TeacherLayer {
    /// The output name `embed_layers` gives it (`y`, `fc`, `conv`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Y => "y",
            Self::Fc => "fc",
            Self::Conv => "conv",
        }
    }
}

/// Which layer of the student carries the teacher's representation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StudentLayer {
    /// The student's representation Y (the runs up to session 22).
    #[default]
    Y,
    /// The student's fc layer (after BN and ReLU): the layer the fc probe reads, one linear
    /// layer before Y, so the teacher shapes it directly instead of through Y's projection.
    Fc,
}

impl StudentLayer {
    fn is_y(&self) -> bool {
        *self == Self::Y
    }

    /// Its width in `encoder` (the critic's student embedding is built for it).
    pub fn width(self, encoder: &EncoderConfig) -> usize {
        match self {
            Self::Y => encoder.y_dim,
            Self::Fc => encoder.fc,
        }
    }

    /// Its rows in a forward pass `[B, width]`.
    pub fn rows(self, out: &EncoderOutput) -> Tensor<2> {
        match self {
            Self::Y => out.y.clone(),
            Self::Fc => out.fc.clone(),
        }
    }
}

/// How the student learns its teacher's rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DistillObjective {
    /// Contrastive (CRD; with `teacher_temperature`, SEED's soft targets): the student's row
    /// must pick its own image's teacher row among the batch's and the extra negatives, both
    /// sides embedded to `width`. The term is the run's MI bound (0 its ceiling).
    #[default]
    Contrast,
    /// Regression (DisCo, Gao et al. 2022): a linear head predicts the teacher's standardised
    /// row from the student's, scored by their cosine; the term is the mean cosine − 1 (0 its
    /// ceiling). Unlike a contrastive bound it cannot saturate once the student can tell the
    /// images apart: it asks for the teacher's whole row, every dimension of it.
    /// `width`, `temperature`, `negatives` and `teacher_temperature` play no part.
    Regress,
}

impl DistillObjective {
    fn is_contrast(&self) -> bool {
        *self == Self::Contrast
    }
}

/// Distillation from a trained teacher encoder: a [`crate::model::DistillCritic`] scores the
/// student's Y (or fc: `student_layer`) against the teacher's representation of the same image,
/// and the run's estimator turns the scores into a mutual-information bound, added to the loss with weight `weight`.
/// The teacher's representations are computed once per run and cached (`fit::teacher`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Distill {
    /// The teacher: an f32 ONNX file with its probe outputs, as `trainer export` and
    /// `scripts/ship-model` write it (e.g. `models/dim32/encoder.onnx`).
    pub teacher: String,
    #[serde(default = "Distill::default_layer")]
    pub layer: TeacherLayer,
    /// The student's layer the critic reads (Y unless asked; left out of the file when Y, so
    /// older runs' configs read back unchanged).
    #[serde(default, skip_serializing_if = "StudentLayer::is_y")]
    pub student_layer: StudentLayer,
    /// Contrastive (default) or regression (left out of the file when contrastive, so older
    /// runs' configs read back unchanged).
    #[serde(default, skip_serializing_if = "DistillObjective::is_contrast")]
    pub objective: DistillObjective,
    /// Weight δ of the distillation term.
    #[serde(default = "Distill::default_weight")]
    pub weight: f64,
    /// Width of the critic's embeddings.
    #[serde(default = "Distill::default_width")]
    pub width: usize,
    /// Temperature τ of the critic's cosine scores.
    #[serde(default = "Distill::default_temperature")]
    pub temperature: f64,
    /// Teacher rows of other training images drawn each step as extra negatives (the batch's
    /// own alone saturate the bound: see `DistillCritic`).
    #[serde(default = "Distill::default_negatives")]
    pub negatives: usize,
    /// Soft targets at this temperature τ_T (relational distillation, as SEED): each
    /// candidate of a row weighs by the softmax of the teacher's own cosines `cos(T_j, T_c) /
    /// τ_T` ([`crate::objective::soft_target_bound`]) — the student learns which images the
    /// teacher finds alike, not only which row is its own image's. None: one-hot (CRD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_temperature: Option<f64>,
    /// The teacher also embeds every image mirrored, and a view that `[augment] hflip` mirrored
    /// is matched with the mirrored image's row (consistent teaching: the student learns the
    /// teacher's function on the view it sees, not one fixed target per image). Needs `hflip`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow_flips: bool,
    /// Width of the teacher's layer: `fit` fills it in when it first opens the teacher (the
    /// critic's shape depends on it, and a checkpoint must load without the teacher at hand).
    #[serde(default)]
    pub teacher_dim: Option<usize>,
}

impl Distill {
    fn default_layer() -> TeacherLayer {
        TeacherLayer::Fc
    }
    fn default_weight() -> f64 {
        1.0
    }
    fn default_width() -> usize {
        128
    }
    fn default_temperature() -> f64 {
        0.1
    }
    fn default_negatives() -> usize {
        1024
    }

    /// Distillation from `teacher` with the defaults: its fc layer, δ = 1, W = 128, τ = 0.1,
    /// 1,024 extra negatives.
    pub fn from_teacher(teacher: String) -> Self {
        Self {
            teacher,
            layer: Self::default_layer(),
            student_layer: StudentLayer::Y,
            objective: DistillObjective::Contrast,
            weight: Self::default_weight(),
            width: Self::default_width(),
            temperature: Self::default_temperature(),
            negatives: Self::default_negatives(),
            teacher_temperature: None,
            follow_flips: false,
            teacher_dim: None,
        }
    }
}

#[derive(Config, Debug)]
pub struct TrainConfig {
    #[config(default = "ModelKind::Dim32")]
    pub model: ModelKind,
    #[config(default = "LocalCriticKind::EncodeDot")]
    pub local_critic: LocalCriticKind,
    /// Width W of the encode-and-dot critic (paper: 2048; smaller trains faster on a CPU).
    #[config(default = 2048)]
    pub critic_width: usize,
    #[config(default = "Estimator::Jsd")]
    pub estimator: Estimator,
    /// Weight of the global MI term (DIM(L): 0, DIM(G): 1).
    #[config(default = 0.0)]
    pub alpha: f64,
    /// Weight of the local MI term (DIM(L): 1, DIM(G): 0).
    #[config(default = 1.0)]
    pub beta: f64,
    /// Weight of the prior-matching term (DIM(L): 0.1, DIM(G): 1).
    #[config(default = 0.1)]
    pub gamma: f64,
    #[config(default = "Prior::Uniform")]
    pub prior: Prior,
    /// Weight of the discriminator's gradient penalty.
    #[config(default = 1.0)]
    pub gradient_penalty: f64,
    #[config(default = 1e-4)]
    pub learning_rate: f64,
    /// Adam's β₁ for every network (the official code: 0.5; burn's and this project's earlier
    /// runs: 0.9, kept as the default so their configs resume unchanged).
    #[config(default = 0.9)]
    pub adam_beta1: f64,
    /// Epochs of linear warm-up from 0 to `learning_rate` (0 = none).
    #[config(default = 0.0)]
    pub warmup_epochs: f64,
    /// Cosine decay of the learning rate to 0 at the end of `epochs` (after the warm-up).
    /// Resuming with more `epochs` stretches the curve from where the run stands.
    #[config(default = false)]
    pub cosine: bool,
    #[config(default = 64)]
    pub batch_size: usize,
    /// Passes over the training split (the paper trains up to 1000).
    #[config(default = 1000)]
    pub epochs: usize,
    /// Stop after this many optimiser steps in total (a checkpoint is written at the end).
    #[config(default = "None")]
    pub max_steps: Option<usize>,
    #[config(default = 0)]
    pub seed: u64,
    /// Images held out (the last ones of a seeded shuffle) for validation.
    #[config(default = 5000)]
    pub validation_size: usize,
    /// Image data: a directory or file (see `trainer fit --help`); `None` = built-in shapes.
    #[config(default = "None")]
    pub data: Option<String>,
    /// Number of built-in synthetic images when `data` is `None`.
    #[config(default = 12000)]
    pub synthetic_images: usize,
    #[config(default = "Augment::default()")]
    pub augment: Augment,
    /// Views of each image a step draws: 1 (the paper), or 2 for cross-view DIM (each view's Y
    /// scored against the other view's local features; `fit::step`). `batch_size` counts images.
    #[config(default = 1)]
    pub views: usize,
    /// Skip unreadable images with a warning instead of stopping.
    #[config(default = false)]
    pub skip_bad: bool,
    #[config(default = "BackendKind::Cpu")]
    pub backend: BackendKind,
    /// Also write a checkpoint every this many steps (0 = only at epoch ends).
    #[config(default = 0)]
    pub checkpoint_every: usize,
    /// A new run starts from this encoder's weights (an f32 ONNX file from `trainer export`)
    /// instead of random ones; the critics start fresh (`fit::warm_start`). A resumed run
    /// continues from its checkpoint and ignores it.
    #[config(default = "None")]
    pub init_encoder: Option<String>,
    /// A new run takes its critics and the prior's discriminator from this checkpoint (a
    /// `step-*` folder or a run folder, of a run with the same critics) instead of fresh ones
    /// (`fit::warm_start::critics`); Adam still starts fresh. A resumed run ignores it.
    #[config(default = "None")]
    pub init_critics: Option<String>,
    /// Distil a teacher encoder into this one (`[distill]`; none by default).
    #[config(default = "None")]
    pub distill: Option<Distill>,
    /// The largest matrix products in bf16 with f32 accumulation, as PyTorch's autocast does
    /// (CPU backend only; AVX512-BF16 where the CPU has it).
    #[config(default = false)]
    pub bf16: bool,
}

impl TrainConfig {
    pub fn encoder(&self) -> EncoderConfig {
        match self.model {
            ModelKind::Dim32 => EncoderConfig::dim32(),
            ModelKind::Tiny => EncoderConfig::tiny(),
        }
    }

    pub fn model_config(&self) -> DimModelConfig {
        DimModelConfig::new(self.encoder(), self.local_critic, self.critic_width, self.beta > 0.0, self.alpha > 0.0)
            .with_distill(self.distill.as_ref().and_then(|d| Some((d.student_layer.width(&self.encoder()), d.teacher_dim?, d.width, d.temperature))))
            .with_distill_regress(self.distill.as_ref().is_some_and(|d| d.objective == DistillObjective::Regress))
            .with_bf16_products(self.bf16)
    }

    /// The learning rate of step `step` (0-based), `steps_per_epoch` steps to an epoch: the
    /// warm-up and cosine decay the config asks for, over the constant `learning_rate`.
    pub fn learning_rate_at(&self, step: usize, steps_per_epoch: usize) -> f64 {
        let epoch = step as f64 / steps_per_epoch.max(1) as f64; // fractional
        let warm = if self.warmup_epochs > 0.0 { ((epoch + 1.0 / steps_per_epoch.max(1) as f64) / self.warmup_epochs).min(1.0) } else { 1.0 };
        let decay = if self.cosine {
            let span = (self.epochs as f64 - self.warmup_epochs).max(f64::MIN_POSITIVE);
            let t = ((epoch - self.warmup_epochs) / span).clamp(0.0, 1.0);
            0.5 * (1.0 + (std::f64::consts::PI * t).cos())
        } else {
            1.0
        };
        self.learning_rate * warm * decay
    }

    /// The distillation weight δ (0 without a teacher).
    pub fn distill_weight(&self) -> f64 {
        self.distill.as_ref().map_or(0.0, |d| d.weight)
    }

    /// Writes the config as JSON (what [`Self::load_file`] reads back), atomically.
    pub fn save_json(&self, path: &Path) -> anyhow::Result<()> {
        crate::fs::write_atomic(path, &serde_json::to_vec_pretty(self)?)
    }

    /// Reads a TOML or JSON config; fields it leaves out keep their defaults.
    pub fn load_file(path: &Path) -> anyhow::Result<Self> {
        Self::new().overlay_file(path)
    }

    /// `self` with the fields of a TOML (`.toml`) or JSON file over it.
    pub fn overlay_file(self, path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        self.overlay(&text, path.extension().is_some_and(|e| e == "toml"), &path.display().to_string())
    }

    /// `self` with the fields of `text` (TOML or JSON) over it, so a partial file is enough;
    /// `origin` names the text in errors.
    pub fn overlay(self, text: &str, is_toml: bool, origin: &str) -> anyhow::Result<Self> {
        let mut value = serde_json::to_value(self)?;
        let over: serde_json::Value = if is_toml {
            toml::from_str(text).with_context(|| format!("{origin}: invalid TOML"))?
        } else {
            serde_json::from_str(text).with_context(|| format!("{origin}: invalid JSON"))?
        };
        let (Some(base), serde_json::Value::Object(over)) = (value.as_object_mut(), over) else {
            bail!("{origin}: expected a table of config fields");
        };
        for (k, v) in over {
            if !base.contains_key(&k) {
                bail!("{origin}: unknown config field `{k}`; known fields: {}", base.keys().cloned().collect::<Vec<_>>().join(", "));
            }
            base.insert(k, v);
        }
        serde_json::from_value(value).with_context(|| format!("{origin}: a field has the wrong type"))
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.bf16 && self.backend != BackendKind::Cpu {
            bail!("bf16 products run on the cpu backend only (this run uses {:?}); drop --bf16", self.backend);
        }
        if self.batch_size < 2 {
            bail!("batch size {} is too small: DIM draws negatives from the other images of a batch (use ≥ 2, the paper uses 64)", self.batch_size);
        }
        if self.alpha <= 0.0 && self.beta <= 0.0 && self.distill_weight() <= 0.0 {
            bail!("alpha (global), beta (local) and the distillation weight are all 0: nothing would train the encoder");
        }
        if let Some(d) = &self.distill
            && (!d.weight.is_finite() || d.weight < 0.0 || !(d.temperature.is_finite() && d.temperature > 0.0) || d.width == 0)
        {
            bail!("[distill]: weight must be finite and ≥ 0, temperature finite and > 0, width ≥ 1 (got {}, {}, {})", d.weight, d.temperature, d.width);
        }
        if let Some(t) = self.distill.as_ref().and_then(|d| d.teacher_temperature)
            && !(t.is_finite() && t > 0.0)
        {
            bail!("[distill]: teacher_temperature must be finite and > 0 (got {t}); leave it out for one-hot targets");
        }
        if self.distill.as_ref().is_some_and(|d| d.objective == DistillObjective::Regress && d.teacher_temperature.is_some()) {
            bail!("[distill]: teacher_temperature sets a contrastive objective's soft targets, and objective = \"regress\" has none: drop one of the two");
        }
        if !(1..=2).contains(&self.views) {
            bail!("views must be 1 or 2 (got {})", self.views);
        }
        if self.views == 2 && self.distill.is_some() {
            bail!("two views and distillation do not train together (the teacher's rows follow one view): drop --views 2 or the [distill] table");
        }
        if self.views == 2 && self.augment.is_identity() {
            bail!(
                "two views of an image without augmentation are the same view: add augmentation ([augment], e.g. --crop-padding 2 --hflip --color-jitter 0.4) or drop --views 2"
            );
        }
        let a = &self.augment;
        if ![a.min_scale, a.color_jitter, a.grayscale].iter().all(|v| (0.0..=1.0).contains(v)) {
            bail!("[augment] min_scale, color_jitter and grayscale must be in [0, 1] (got {}, {}, {})", a.min_scale, a.color_jitter, a.grayscale);
        }
        if self.distill.as_ref().is_some_and(|d| d.follow_flips) && !self.augment.hflip {
            bail!(
                "[distill] follow_flips matches mirrored views with mirrored teacher rows, but [augment] hflip is off: turn hflip on (--hflip) or drop follow_flips"
            );
        }
        if [self.alpha, self.beta, self.gamma, self.learning_rate, self.gradient_penalty, self.warmup_epochs].iter().any(|v| !v.is_finite() || *v < 0.0) {
            bail!("loss weights, learning rate, warm-up and gradient penalty must be finite and ≥ 0");
        }
        if !(0.0..1.0).contains(&self.adam_beta1) {
            bail!("adam_beta1 must be in [0, 1) (got {}; the official code uses 0.5)", self.adam_beta1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_files_override_defaults_and_typos_are_caught() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "model = \"tiny\"\ncritic_width = 256\nestimator = \"infonce\"\n[augment]\ncrop_padding = 4\nhflip = true\n").unwrap();
        let c = TrainConfig::load_file(&p).unwrap();
        assert_eq!((c.model, c.critic_width, c.estimator), (ModelKind::Tiny, 256, Estimator::InfoNce));
        assert_eq!((c.batch_size, c.gamma, c.augment.crop_padding), (64, 0.1, 4));
        std::fs::write(&p, "critic_widht = 3\n").unwrap();
        let err = format!("{:#}", TrainConfig::load_file(&p).unwrap_err());
        assert!(err.contains("critic_widht") && err.contains("c.toml"), "{err}");
        // JSON round trip of the resolved config (what is saved beside checkpoints).
        let j = dir.path().join("c.json");
        c.save(&j).unwrap();
        assert_eq!(TrainConfig::load_file(&j).unwrap().critic_width, 256);
    }

    #[test]
    fn a_distill_table_takes_defaults_and_shapes_the_model() {
        let c = TrainConfig::new().overlay("model = \"tiny\"\n[distill]\nteacher = \"t.onnx\"\nweight = 0.5\n", true, "c.toml").unwrap();
        let d = c.distill.clone().unwrap();
        assert_eq!((d.layer, d.weight, d.width, d.temperature, d.negatives, d.teacher_dim), (TeacherLayer::Fc, 0.5, 128, 0.1, 1024, None));
        // No critic until `fit` knows the teacher's width; then one of that shape.
        assert_eq!(c.model_config().distill, None);
        let c = c.with_distill(Some(Distill { teacher_dim: Some(1024), ..d.clone() }));
        assert_eq!(c.model_config().distill, Some((64, 1024, 128, 0.1)), "the student's Y (64 wide) by default");
        assert_eq!(d.student_layer, StudentLayer::Y);
        assert!(!serde_json::to_string(&d).unwrap().contains("student_layer"), "left out when Y: old configs read back unchanged");
        let fc = TrainConfig::new()
            .overlay("model = \"tiny\"\n[distill]\nteacher = \"t.onnx\"\nstudent_layer = \"fc\"\nteacher_dim = 1024\n", true, "c.toml")
            .unwrap();
        assert_eq!(fc.model_config().distill, Some((128, 1024, 128, 0.1)), "tiny's fc is 128 wide");
        let back: Distill = serde_json::from_str(&serde_json::to_string(fc.distill.as_ref().unwrap()).unwrap()).unwrap();
        assert_eq!(back.student_layer, StudentLayer::Fc);
        assert!(c.clone().with_alpha(0.0).with_beta(0.0).validate().is_ok(), "distillation alone trains the encoder");
        let bad = c.with_distill(Some(Distill { temperature: 0.0, ..Distill::from_teacher("t.onnx".into()) }));
        assert!(format!("{:#}", bad.validate().unwrap_err()).contains("temperature"));
        let err = format!("{:#}", TrainConfig::new().overlay("[distill]\nweight = 1\n", true, "c.toml").unwrap_err());
        assert!(err.contains("c.toml"), "a table without its teacher is named: {err}");
        // Soft targets: off by default, a positive temperature when asked, refused at 0.
        assert_eq!(d.teacher_temperature, None);
        let soft = TrainConfig::new().overlay("model = \"tiny\"\n[distill]\nteacher = \"t.onnx\"\nteacher_temperature = 0.05\n", true, "c.toml").unwrap();
        assert_eq!(soft.distill.as_ref().unwrap().teacher_temperature, Some(0.05));
        assert!(soft.validate().is_ok());
        let cold = soft.clone().with_distill(Some(Distill { teacher_temperature: Some(0.0), ..soft.distill.clone().unwrap() }));
        assert!(format!("{:#}", cold.validate().unwrap_err()).contains("teacher_temperature"));
        // Mirrored teacher rows: off by default, and only with mirrored views to match.
        assert!(!d.follow_flips);
        let follow = TrainConfig::new().overlay("model = \"tiny\"\n[distill]\nteacher = \"t.onnx\"\nfollow_flips = true\n", true, "c.toml").unwrap();
        assert!(format!("{:#}", follow.clone().validate().unwrap_err()).contains("hflip"), "follow_flips without hflip is refused");
        let mut flipping = follow;
        flipping.augment.hflip = true;
        assert!(flipping.validate().is_ok());
    }

    #[test]
    fn a_regression_objective_builds_a_head_and_refuses_soft_targets() {
        let d = TrainConfig::new().overlay("model = \"tiny\"\n[distill]\nteacher = \"t.onnx\"\n", true, "c.toml").unwrap().distill.unwrap();
        assert_eq!(d.objective, DistillObjective::Contrast, "contrastive by default");
        assert!(!serde_json::to_string(&d).unwrap().contains("objective"), "left out when contrastive: old configs read back unchanged");
        let r = TrainConfig::new()
            .overlay("model = \"tiny\"\n[distill]\nteacher = \"t.onnx\"\nobjective = \"regress\"\nteacher_dim = 1024\n", true, "c.toml")
            .unwrap();
        assert!(r.validate().is_ok());
        assert!(r.model_config().distill_regress);
        assert!(!TrainConfig::new().with_distill(Some(Distill { teacher_dim: Some(1024), ..d })).model_config().distill_regress);
        let back: Distill = serde_json::from_str(&serde_json::to_string(r.distill.as_ref().unwrap()).unwrap()).unwrap();
        assert_eq!(back.objective, DistillObjective::Regress);
        let soft = r.clone().with_distill(Some(Distill { teacher_temperature: Some(0.1), ..r.distill.clone().unwrap() }));
        assert!(format!("{:#}", soft.validate().unwrap_err()).contains("regress"), "soft targets have no meaning for a regression");
    }

    /// Every config the repository ships parses and validates: a typo in a long run's config
    /// would otherwise surface hours into a session.
    #[test]
    fn the_repositorys_configs_parse_and_validate() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut seen = 0;
        for dir in [root.clone(), root.join("presets"), root.join("study")] {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "toml") {
                    let c = TrainConfig::new().overlay_file(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                    c.validate().unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                    seen += 1;
                }
            }
        }
        assert!(seen >= 8, "found {seen} configs under {}", root.display());
    }

    /// Hand-computed: 10 steps an epoch, 4 epochs, 1 of warm-up, then half a cosine to 0.
    #[test]
    fn warm_up_then_cosine_decay() {
        let c = TrainConfig::new().with_learning_rate(1.0).with_epochs(4).with_warmup_epochs(1.0).with_cosine(true);
        let lr = |s| c.learning_rate_at(s, 10);
        assert!((lr(0) - 0.1).abs() < 1e-12 && (lr(4) - 0.5).abs() < 1e-12, "linear warm-up: {} {}", lr(0), lr(4));
        assert!((lr(10) - 1.0).abs() < 1e-12, "peak after the warm-up: {}", lr(10));
        assert!((lr(25) - 0.5).abs() < 1e-12, "half-way down the cosine (epoch 2.5 of 1..4): {}", lr(25));
        assert!(lr(40).abs() < 1e-12 && lr(39) > 0.0, "0 at the end: {} {}", lr(39), lr(40));
        let flat = TrainConfig::new().with_learning_rate(0.5);
        assert!((0..100).all(|s| flat.learning_rate_at(s, 7) == 0.5), "constant by default");
        assert!(format!("{:#}", TrainConfig::new().with_adam_beta1(1.0).validate().unwrap_err()).contains("adam_beta1"));
    }

    #[test]
    fn two_views_need_augmentation_and_no_teacher() {
        let c = TrainConfig::new().overlay("views = 2\n[augment]\nhflip = true\ncolor_jitter = 0.4\n", true, "c.toml").unwrap();
        assert!(c.validate().is_ok());
        assert_eq!((c.views, c.augment.color_jitter), (2, 0.4));
        let plain = TrainConfig::new().with_views(2);
        assert!(format!("{:#}", plain.validate().unwrap_err()).contains("same view"));
        let taught = c.clone().with_distill(Some(Distill::from_teacher("t.onnx".into())));
        assert!(format!("{:#}", taught.validate().unwrap_err()).contains("distillation"));
        assert!(format!("{:#}", c.clone().with_views(3).validate().unwrap_err()).contains("1 or 2"));
        let mut strong = c;
        strong.augment.grayscale = 1.5;
        assert!(format!("{:#}", strong.validate().unwrap_err()).contains("grayscale"));
    }

    #[test]
    fn bf16_is_read_from_a_config_reaches_the_model_and_needs_the_cpu_backend() {
        let c = TrainConfig::new().overlay("bf16 = true\n", true, "c.toml").unwrap();
        assert!(c.bf16 && c.model_config().bf16_products && c.validate().is_ok());
        assert!(!TrainConfig::new().model_config().bf16_products, "off by default");
        let err = format!("{:#}", c.with_backend(BackendKind::Wgpu).validate().unwrap_err());
        assert!(err.contains("cpu backend") && err.contains("--bf16"), "{err}");
    }
}
