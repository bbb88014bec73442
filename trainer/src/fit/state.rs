//! The trainable state of a run: the DIM model, the prior discriminator and their optimisers,
//! built fresh from a config (seeded) on the backend the config names.

use super::adam::FusedAdam;
use super::config::{BackendKind, TrainConfig};
use crate::model::{DimModel, PriorDiscriminator};
use anyhow::bail;
use burn::optim::ModuleOptimizer;
use burn::prelude::*;

/// The trainable state (model, discriminator and both optimisers).
pub struct TrainState {
    pub model: DimModel,
    pub optim: ModuleOptimizer,
    pub disc: Option<PriorDiscriminator>,
    pub disc_optim: ModuleOptimizer,
}

/// The device of `kind` (CPU unless a GPU backend was compiled in).
pub fn device(kind: BackendKind) -> anyhow::Result<Device> {
    let d = match kind {
        BackendKind::Cpu => Device::flex(),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => Device::cuda(0),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => Device::wgpu(Default::default()),
        #[allow(unreachable_patterns)]
        other => bail!(
            "backend {other:?} is not compiled in; rebuild with `cargo build --release -p dim-trainer --features {}`",
            format!("{other:?}").to_lowercase()
        ),
    };
    Ok(d)
}

/// Fresh model, discriminator and optimisers for `config` (seeded initialisation).
pub fn new_state(config: &TrainConfig, device: &Device) -> TrainState {
    device.seed(config.seed);
    // burn's Adam (β 0.9 / 0.999, ε 1e-8) in one pass per parameter: see `adam`.
    let adam = FusedAdam::new(1e-8);
    TrainState {
        model: config.model_config().init(device),
        optim: adam.init(),
        disc: (config.gamma > 0.0).then(|| PriorDiscriminator::new(config.encoder().y_dim, device)),
        disc_optim: adam.init(),
    }
}
