//! The configs under `configs/` are what long runs restart from on another machine (docs/recipes.md
//! gives each run's command): every one must still load and validate with today's trainer, and
//! every run config must say in its header how it is run, so a renamed field or a dropped command
//! is found here and not by a resumed run hours later.

use std::path::{Path, PathBuf};

use dim_trainer::fit::{ModelKind, TrainConfig};

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

/// Every `.toml` under `dir`, sorted, subfolders included.
fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(toml_files(&path));
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The leading `#` lines of a config.
fn header(text: &str) -> String {
    text.lines().take_while(|l| l.starts_with('#')).collect::<Vec<_>>().join("\n")
}

#[test]
fn every_config_loads_and_validates() {
    let files = toml_files(&configs_dir());
    assert!(files.len() >= 9, "expected the run configs, presets/ and study/, found {files:?}");
    for path in &files {
        let c = TrainConfig::load_file(path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        c.validate().unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    }
}

/// A run config (the top level of `configs/`) names its own command in its header:
/// `trainer fit --config configs/NAME`, or the script that passes it (`scripts/gpu-fit`).
#[test]
fn every_run_config_names_its_command() {
    for path in toml_files(&configs_dir()).into_iter().filter(|p| p.parent() == Some(configs_dir().as_path())) {
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
