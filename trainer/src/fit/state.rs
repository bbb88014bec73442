//! The trainable state of a run: the DIM model, the prior discriminator and their optimisers,
//! built fresh from a config (seeded) on the backend the config names.

use super::adam::FusedAdam;
use super::config::{BackendKind, TrainConfig};
use crate::model::{DimModel, PriorDiscriminator};
use anyhow::bail;
use burn::module::{Module, ModuleVisitor, Param};
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

/// Touches every float parameter, which makes burn create the lazily initialised ones now.
struct Materialise;

impl ModuleVisitor for Materialise {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}

/// Held while a run seeds the backend's RNG and draws its initial parameters.
///
/// burn seeds the RNG per backend, not per run, and creates parameters lazily on first use: two
/// runs started together in one process (the tests, a notebook) would interleave their draws
/// and neither would be reproducible. Seeding, building and materialising under one lock keeps
/// every run's initialisation a function of its seed alone.
static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The encoder of `config` as a run seeded with it starts, untrained (on the plain backend):
/// the floor `eval` reads a trained encoder's measures against.
pub fn random_encoder(config: &TrainConfig, device: &Device) -> crate::model::EncoderNet {
    let _guard = INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    device.seed(config.seed);
    let encoder = config.encoder().init(device);
    encoder.visit(&mut Materialise);
    encoder
}

/// Fresh model, discriminator and optimisers for `config` (seeded initialisation).
pub fn new_state(config: &TrainConfig, device: &Device) -> TrainState {
    let _guard = INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    device.seed(config.seed);
    // burn's Adam (β₂ 0.999, ε 1e-8, β₁ from the config) in one pass per parameter: see `adam`.
    let adam = FusedAdam::new(1e-8).with_beta_1(config.adam_beta1 as f32);
    let model = config.model_config().init(device);
    model.visit(&mut Materialise);
    let disc = (config.gamma > 0.0).then(|| PriorDiscriminator::new(config.encoder().y_dim, device));
    if let Some(d) = &disc {
        d.visit(&mut Materialise);
    }
    TrainState { model, optim: adam.init(), disc, disc_optim: adam.init() }
}
