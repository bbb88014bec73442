//! Named starting points for `fit --preset` (the files in `configs/presets/`, compiled in): a
//! preset's fields go over the defaults, then `--config FILE` and flags go over them.

use super::config::TrainConfig;

/// A named recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// The official DIM(L) recipe item by item (the defaults but for its critic and β₁).
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
        // The official recipe (docs/DESIGN.md's table): the defaults but for the critic's form
        // and Adam's β₁, which the defaults keep as earlier runs had them.
        let paper = Preset::Paper.config().unwrap();
        assert_eq!((paper.local_critic, paper.adam_beta1), (crate::model::LocalCriticKind::EncodeDotLn, 0.5));
        let as_defaults = paper.clone().with_local_critic(crate::model::LocalCriticKind::EncodeDot).with_adam_beta1(0.9);
        assert_eq!(serde_json::to_value(as_defaults).unwrap(), serde_json::to_value(TrainConfig::new()).unwrap());
        assert_eq!(
            (paper.model, paper.estimator, paper.critic_width, paper.learning_rate, paper.batch_size, paper.epochs),
            (ModelKind::Dim32, Estimator::Jsd, 2048, 1e-4, 64, 1000)
        );
        assert_eq!((paper.alpha, paper.beta, paper.gamma, paper.augment.crop_padding, paper.augment.hflip, paper.cosine), (0.0, 1.0, 0.1, 0, false, false));
        let fast = Preset::Fast.config().unwrap();
        assert_eq!((fast.model, fast.estimator, fast.critic_width, fast.learning_rate), (ModelKind::Tiny, Estimator::InfoNce, 128, 1e-3));
        fast.validate().unwrap();
    }
}
