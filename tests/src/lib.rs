//! End-to-end tests across the dim-edge crates live in `tests/tests/`; this library holds the
//! small helpers they share.

use dim_trainer::fit::config::{ModelKind, TrainConfig};

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

/// `(step, loss)` of every step line in a run's `metrics.jsonl`.
pub fn step_losses(out: &std::path::Path) -> Vec<(u64, f64)> {
    dim_trainer::fit::metrics::steps(&out.join("metrics.jsonl")).unwrap().iter().map(|s| (s.step as u64, s.losses.loss)).collect()
}

/// The shared CIFAR-10 JPEG archive (DESIGN.md): `../shared/data/` beside the workspace, or
/// `$DIM_CIFAR_JPG_TAR`.
pub fn cifar_archive() -> std::path::PathBuf {
    std::env::var_os("DIM_CIFAR_JPG_TAR")
        .map(Into::into)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/cifar10-train-jpg.tar.gz"))
}

/// `n` real CIFAR-10 images (every `stride`-th JPEG of the archive), preprocessed as the model
/// input: `[n, 3, 32, 32]` f32, plus their 32×32 RGB bytes.
pub fn real_images(n: usize, stride: usize) -> (Vec<f32>, Vec<dim_trainer::data::Rgb32>) {
    use std::io::Read;
    let path = cifar_archive();
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}; set DIM_CIFAR_JPG_TAR to the CIFAR-10 JPEG archive", path.display()));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut rgb = Vec::new();
    for (i, entry) in
        archive.entries().unwrap().filter_map(Result::ok).filter(|e| e.path().is_ok_and(|p| p.extension().is_some_and(|x| x == "jpg"))).enumerate()
    {
        if i % stride != 0 {
            continue;
        }
        let mut entry = entry;
        let name = entry.path().unwrap().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        rgb.push(dim_trainer::data::decode_bytes(&bytes, &name).unwrap());
        if rgb.len() == n {
            break;
        }
    }
    assert_eq!(rgb.len(), n, "archive holds fewer images than asked for");
    let mut input = vec![0f32; n * dim_runtime::INPUT_LEN];
    for (img, out) in rgb.iter().zip(input.chunks_mut(dim_runtime::INPUT_LEN)) {
        dim_runtime::preprocess::rgb32_to_input(img, out).unwrap();
    }
    (input, rgb)
}

/// An encoder of `model` after 4 quick training steps in `dir` (enough to move BatchNorm's
/// running statistics off their initial values, so that folding is exercised).
pub fn trained(model: ModelKind, dir: &std::path::Path) -> dim_trainer::model::EncoderNet {
    use burn::module::Module;
    use dim_trainer::fit::{self, checkpoint};
    let out = dir.join(format!("{model:?}"));
    fit::fit(quick_config().with_model(model).with_max_steps(Some(4)), &out, &fit::FitOptions::default()).unwrap();
    let ck = checkpoint::latest(&out).unwrap().unwrap();
    let config = checkpoint::load_config(&ck).unwrap();
    checkpoint::load_model(&ck, &config, &burn::tensor::Device::flex()).unwrap().encoder.valid()
}

/// The wgpu device `fit --backend wgpu` takes (plain, without autodiff); panics with the fix
/// where the machine has no Vulkan driver.
pub fn wgpu_device() -> burn::tensor::Device {
    dim_trainer::fit::device(dim_trainer::fit::BackendKind::Wgpu)
        .unwrap_or_else(|e| panic!("{e:#}\n(the wgpu tests need a Vulkan driver: `bash scripts/setup` installs lavapipe)"))
}
