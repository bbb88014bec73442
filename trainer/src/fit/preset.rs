//! Named starting points for `fit --preset` (the files in `configs/presets/`, compiled in): a
//! preset's fields go over the defaults, then `--config FILE` and flags go over them.

use super::config::TrainConfig;

/// A named recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// The paper's DIM(L) exactly (also the defaults).
    Paper,
    /// The recipe study's winner per CPU-hour (`docs/recipes.md`).
    Fast,
}

impl Preset {
    /// Every preset's name on the command line.
    pub const NAMES: [&'static str; 2] = ["paper", "fast"];

    /// The preset's TOML (what `configs/presets/<name>.toml` holds).
    pub fn toml(self) -> &'static str {
        match self {
            Self::Paper => include_str!("../../../configs/presets/paper.toml"),
            Self::Fast => include_str!("../../../configs/presets/fast.toml"),
        }
    }

    /// The defaults with the preset over them.
    pub fn config(self) -> anyhow::Result<TrainConfig> {
        TrainConfig::new().overlay(self.toml(), true, &format!("preset {self:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fit::config::ModelKind;
    use crate::objective::Estimator;

    #[test]
    fn paper_is_the_defaults_and_fast_is_the_study_winner() {
        for name in Preset::NAMES {
            serde_json::from_value::<Preset>(serde_json::Value::String(name.into())).unwrap();
        }
        let paper = serde_json::to_value(Preset::Paper.config().unwrap()).unwrap();
        assert_eq!(paper, serde_json::to_value(TrainConfig::new()).unwrap(), "the defaults are the paper's settings");
        let fast = Preset::Fast.config().unwrap();
        assert_eq!((fast.model, fast.estimator, fast.critic_width, fast.learning_rate), (ModelKind::Tiny, Estimator::InfoNce, 128, 1e-3));
        fast.validate().unwrap();
    }
}
