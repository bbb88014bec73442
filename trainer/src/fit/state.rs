//! The trainable state of a run: the DIM model, the prior discriminator and their optimisers,
//! built fresh from a config (seeded) on the backend the config names.

use super::adam::FusedAdam;
use super::config::{BackendKind, TrainConfig};
use crate::model::{DimModel, PriorDiscriminator};
use anyhow::bail;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{AdamConfig, ModuleOptimizer};
use burn::prelude::*;

/// The trainable state (model, discriminator and both optimisers).
pub struct TrainState {
    pub model: DimModel,
    pub optim: ModuleOptimizer,
    pub disc: Option<PriorDiscriminator>,
    pub disc_optim: ModuleOptimizer,
}

/// The device of `kind` (CPU unless a GPU backend was compiled in). A GPU backend names the
/// adapter it took on standard error, and fails with the fix when the machine has none.
pub fn device(kind: BackendKind) -> anyhow::Result<Device> {
    let d = match kind {
        BackendKind::Cpu => Device::flex(),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => gpu(Device::cuda(0), burn::tensor::DeviceType::Cuda, "cuda", "an NVIDIA driver (nvidia-smi lists the GPU)")?,
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => gpu(
            Device::wgpu(Default::default()),
            burn::tensor::DeviceType::Wgpu,
            "wgpu",
            "a Vulkan, Metal or DX12 driver; without a GPU, Vulkan's software rasteriser (Debian: `apt install mesa-vulkan-drivers libvulkan1`, what scripts/setup installs)",
        )?,
        #[allow(unreachable_patterns)]
        other => bail!(
            "backend {other:?} is not compiled in; rebuild with `cargo build --release -p dim-trainer --features {}`",
            format!("{other:?}").to_lowercase()
        ),
    };
    Ok(d)
}

/// `device` when its runtime lists at least one adapter, named on standard error (`wgpu:
/// llvmpipe (LLVM 15.0.6, 256 bits), software, wgsl`): which adapter a run took decides its
/// speed, and a software rasteriser taken silently would pass for a GPU.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn gpu(device: Device, kind: burn::tensor::DeviceType, name: &str, needs: &str) -> anyhow::Result<Device> {
    // Listing opens no device; asking for one where none exists panics inside the runtime.
    if Device::enumerate(kind).is_empty() {
        bail!("--backend {name}: this machine has no {name} adapter; it needs {needs}. Or train with --backend cpu");
    }
    match device.identity() {
        Some(id) => {
            let what = if id.physical.is_some() { "GPU" } else { "software (no GPU: a CPU rasteriser, slow)" };
            eprintln!("backend: {name} on {}, {what}, kernels {}", id.name, id.fingerprint);
        }
        None => eprintln!("backend: {name} (the runtime does not name its adapter)"),
    }
    Ok(device)
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

/// Where a run's initial parameters are drawn: burn's CPU backend, whichever device trains.
///
/// Each backend has its own random generator (a GPU's draws differ from the CPU's for one seed),
/// so drawing on the CPU and moving the parameters makes a seed mean the same starting weights on
/// every backend: a run can be repeated on another machine, and compared step by step.
fn init_device(target: &Device) -> Device {
    if target.is_autodiff() { Device::flex().autodiff() } else { Device::flex() }
}

/// Whether `device` is burn's CPU backend (with or without autodiff).
fn is_cpu(device: &Device) -> bool {
    device.clone().without_autodiff() == Device::flex()
}

/// The encoder of `config` as a run seeded with it starts, untrained (on the plain backend):
/// the floor `eval` reads a trained encoder's measures against.
pub fn random_encoder(config: &TrainConfig, device: &Device) -> crate::model::EncoderNet {
    let _guard = INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let cpu = init_device(device);
    cpu.seed(config.seed);
    let encoder = config.encoder().init(&cpu);
    encoder.visit(&mut Materialise);
    encoder.fork(device)
}

/// Adam with the config's β₁ and ε 1e-8: fused on the CPU (see `adam`), burn's elsewhere (the
/// fused one computes on the host, a round trip per parameter on a GPU). Same arithmetic, same
/// state: a checkpoint of either resumes with the other.
fn adam(config: &TrainConfig, device: &Device) -> ModuleOptimizer {
    if is_cpu(device) {
        FusedAdam::new(1e-8).with_beta_1(config.adam_beta1 as f32).init()
    } else {
        AdamConfig::new().with_epsilon(1e-8).with_beta_1(config.adam_beta1 as f32).init()
    }
}

/// Fresh model, discriminator and optimisers for `config` (seeded initialisation, drawn on the
/// CPU and moved to `device` as leaves of its graph).
pub fn new_state(config: &TrainConfig, device: &Device) -> TrainState {
    let _guard = INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let cpu = init_device(device);
    cpu.seed(config.seed);
    let model = config.model_config().init(&cpu);
    model.visit(&mut Materialise);
    let disc = (config.gamma > 0.0).then(|| PriorDiscriminator::new(config.encoder().y_dim, &cpu));
    if let Some(d) = &disc {
        d.visit(&mut Materialise);
    }
    // `fork`, not `to_device`: a move is a differentiable operation, and parameters that are its
    // outputs, not leaves, would tie every step's graph to the first one's (burn: "graph tape
    // has already been consumed" on the second backward).
    TrainState { model: model.fork(device), optim: adam(config, device), disc: disc.map(|d| d.fork(device)), disc_optim: adam(config, device) }
}
