//! End-to-end tests across the dim-edge crates live in `tests/tests/`; this library holds the
//! small helpers they share.

use dim_trainer::config::{ModelKind, TrainConfig};

/// A configuration that trains in well under a second per step on a CPU: `tiny`, critic width
/// 32, batch 8, 160 synthetic images of which 32 are held out.
pub fn quick_config() -> TrainConfig {
    TrainConfig::new()
        .with_model(ModelKind::Tiny)
        .with_critic_width(32)
        .with_batch_size(8)
        .with_synthetic_images(160)
        .with_validation_size(32)
        .with_epochs(2)
        .with_seed(7)
}

/// The `loss` of every step line in a run's `metrics.jsonl`.
pub fn step_losses(out: &std::path::Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("step").is_some())
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}
