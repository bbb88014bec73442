//! The configs under `configs/` are what long runs restart from on another machine (docs/recipes.md
//! gives each run's command). That each loads and validates is the unit test
//! `the_repositorys_configs_parse_and_validate`; here, that every run config says in its header
//! how it is run and that the long runs' configs hold the recipes their headers describe, so a
//! dropped command or a changed setting is found here and not by a resumed run hours later.

use std::path::{Path, PathBuf};

use dim_trainer::fit::{ModelKind, TrainConfig};

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

/// The run configs: the `.toml` files at the top of `configs/` (not `presets/` or `study/`).
fn run_configs() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> =
        std::fs::read_dir(configs_dir()).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "toml")).collect();
    out.sort();
    out
}

/// The leading `#` lines of a config.
fn header(text: &str) -> String {
    text.lines().take_while(|l| l.starts_with('#')).collect::<Vec<_>>().join("\n")
}

/// A run config (the top level of `configs/`) names its own command in its header:
/// `trainer fit --config configs/NAME`, or the script that passes it (`scripts/gpu-fit`).
#[test]
fn every_run_config_names_its_command() {
    let files = run_configs();
    assert!(files.len() >= 7, "expected the run configs, found {files:?}");
    for path in files {
        let name = path.file_name().unwrap().to_str().unwrap();
        let head = header(&std::fs::read_to_string(&path).unwrap());
        assert!(
            head.contains(&format!("trainer fit --config configs/{name}")) || head.contains("scripts/gpu-fit"),
            "configs/{name}: its header does not say how it is run:\n{head}"
        );
    }
}

#[test]
fn the_long_runs_config_is_the_recipe_its_header_describes() {
    let c = TrainConfig::load_file(&configs_dir().join("dim32-b256.toml")).unwrap();
    assert_eq!((c.model, c.batch_size, c.critic_width), (ModelKind::Dim32, 256, 512));
    assert_eq!((c.learning_rate, c.adam_beta1, c.warmup_epochs, c.cosine), (1e-3, 0.5, 1.0, true));
    assert!(c.augment.hflip && c.augment.crop_padding == 2);
}

#[test]
fn the_second_long_run_differs_from_the_first_by_its_rate_and_bf16() {
    let first = TrainConfig::load_file(&configs_dir().join("dim32-b256.toml")).unwrap();
    let second = TrainConfig::load_file(&configs_dir().join("dim32-b256-lr4e-3.toml")).unwrap();
    assert_eq!((second.learning_rate, second.bf16, second.epochs), (4e-3, true, 120));
    let same = TrainConfig { learning_rate: first.learning_rate, bf16: first.bf16, ..second };
    assert_eq!(serde_json::to_value(&same).unwrap(), serde_json::to_value(&first).unwrap());
}

/// The warm-started long run is the first run's recipe from the shipped encoder, over its own
/// cosine at half the first run's peak rate, in bf16.
#[test]
fn the_warm_run_carries_the_shipped_encoder_on_with_the_first_runs_recipe() {
    let first = TrainConfig::load_file(&configs_dir().join("dim32-b256.toml")).unwrap();
    let warm = TrainConfig::load_file(&configs_dir().join("dim32-b256-warm.toml")).unwrap();
    assert_eq!(warm.init_encoder.as_deref(), Some("models/dim32/encoder.onnx"));
    assert!(configs_dir().join("..").join(warm.init_encoder.as_deref().unwrap()).is_file());
    assert_eq!((warm.learning_rate, warm.epochs, warm.bf16), (5e-4, 60, true));
    let same = TrainConfig { init_encoder: None, learning_rate: first.learning_rate, epochs: first.epochs, bf16: first.bf16, ..warm };
    assert_eq!(serde_json::to_value(&same).unwrap(), serde_json::to_value(&first).unwrap());
}

/// The regression recipe is the shipped tiny's (`tiny-distill-soft.toml`) with only its
/// distillation objective changed: regression on the student's fc at δ = 64 (so no soft targets),
/// and 20 epochs, the length its recipes.md row was measured at.
#[test]
fn the_regression_recipe_is_the_shipped_tinys_with_a_regressed_teacher() {
    use dim_trainer::fit::config::{Distill, DistillObjective, StudentLayer};
    let soft = TrainConfig::load_file(&configs_dir().join("tiny-distill-soft.toml")).unwrap();
    let regress = TrainConfig::load_file(&configs_dir().join("tiny-distill-regress.toml")).unwrap();
    let d = regress.distill.clone().unwrap();
    assert_eq!((d.objective, d.student_layer, d.weight, d.teacher_temperature, regress.epochs), (DistillObjective::Regress, StudentLayer::Fc, 64.0, None, 20));
    let distill = Distill {
        objective: DistillObjective::Regress,
        student_layer: StudentLayer::Fc,
        weight: 64.0,
        teacher_temperature: None,
        ..soft.distill.clone().unwrap()
    };
    let same = TrainConfig { epochs: 20, distill: Some(distill), ..soft };
    assert_eq!(serde_json::to_value(&same).unwrap(), serde_json::to_value(&regress).unwrap());
}
