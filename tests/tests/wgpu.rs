//! `fit --backend wgpu` against the CPU backend, on Vulkan's software rasteriser (lavapipe,
//! installed by `scripts/setup`) where the machine has no GPU: the same seed starts from the same
//! weights, the losses follow the CPU's, checkpoints cross between the backends both ways, and the
//! exported encoders embed alike.
//!
//! Tolerances: the backends sum in different orders (a GPU reduces in parallel trees, Flex in
//! SIMD lanes), so the losses agree to float rounding, not bit for bit, and drift as training
//! amplifies the differences. Measured on lavapipe (6 steps of `quick_config`): 1.0e-7 relative at
//! the first step, at most 6.6e-7 by the sixth; embeddings 2.8e-4 apart at a scale of 0.19. The
//! loss bounds below are about 100× those (lavapipe compiles its kernels for the CPU it runs on,
//! so another CPU may sum in another order), still far below what a wrong gradient does (1e-2
//! and more within a few steps); the embedding bound is about 10×.

use burn::module::Module;
use burn::prelude::*;
use dim_tests::{quick_config, real_images, step_losses, wgpu_device};
use dim_trainer::fit::config::BackendKind;
use dim_trainer::fit::{FitOptions, checkpoint, fit, new_state};
use std::path::Path;

/// Steps of every run here: a few, lavapipe runs the kernels on the CPU.
const STEPS: usize = 6;
/// Relative difference allowed between the CPU's and wgpu's loss at the first step.
const FIRST_STEP: f64 = 1e-5;
/// ... and at any later step of a short run.
const LATER_STEPS: f64 = 1e-4;

fn opts(resume: bool) -> FitOptions {
    FitOptions { resume, progress: false, knn_images: 0, monitor_every: 0 }
}

fn run(out: &Path, backend: BackendKind, steps: usize, resume: bool) -> Vec<f64> {
    fit(quick_config().with_backend(backend).with_max_steps(Some(steps)), out, &opts(resume)).unwrap();
    step_losses(out).into_iter().map(|(_, l)| l).collect()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-12)
}

/// `b` follows `a`: the first step to rounding, the rest within `LATER_STEPS`.
fn assert_follows(a: &[f64], b: &[f64], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: {a:?} vs {b:?}");
    assert!(rel(a[0], b[0]) <= FIRST_STEP, "{what}: first step {} vs {}", a[0], b[0]);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(rel(*x, *y) <= LATER_STEPS, "{what}: step {} loss {x} vs {y} ({a:?} vs {b:?})", i + 1);
    }
}

fn params(model: &impl Module) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl burn::module::ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            self.0.extend(p.val().into_data().try_to_vec::<f32>().unwrap());
        }
    }
    let mut c = Collect(Vec::new());
    model.visit(&mut c);
    c.0
}

fn wgpu() -> Device {
    wgpu_device().autodiff()
}

#[test]
fn a_seed_starts_from_the_same_weights_on_every_backend() {
    let config = quick_config();
    let cpu = new_state(&config, &Device::flex().autodiff());
    let gpu = new_state(&config, &wgpu());
    let (a, b) = (params(&cpu.model), params(&gpu.model));
    assert!(a.len() > 100_000, "{} parameters", a.len());
    assert_eq!(a, b, "the initial model differs between the CPU and wgpu");
    assert_eq!(params(cpu.disc.as_ref().unwrap()), params(gpu.disc.as_ref().unwrap()));
    let other = new_state(&config.clone().with_seed(8), &wgpu());
    assert_ne!(a, params(&other.model), "another seed, other weights");
}

#[test]
fn wgpu_losses_follow_the_cpus_from_the_same_seed() {
    let dir = tempfile::tempdir().unwrap();
    let cpu = run(&dir.path().join("cpu"), BackendKind::Cpu, STEPS, false);
    let gpu = run(&dir.path().join("wgpu"), BackendKind::Wgpu, STEPS, false);
    eprintln!("cpu  {cpu:?}\nwgpu {gpu:?}");
    assert_follows(&cpu, &gpu, "cpu vs wgpu");
    assert_ne!(cpu[0], cpu[STEPS - 1], "the losses move (the comparison is not of constants)");
}

#[test]
fn checkpoints_resume_across_backends_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let whole = run(&dir.path().join("whole"), BackendKind::Cpu, STEPS, false);
    for (first, then) in [(BackendKind::Cpu, BackendKind::Wgpu), (BackendKind::Wgpu, BackendKind::Cpu)] {
        let out = dir.path().join(format!("{first:?}-{then:?}"));
        run(&out, first, STEPS / 2, false);
        let resumed = run(&out, then, STEPS, true);
        eprintln!("{first:?} then {then:?}: {resumed:?}");
        assert_follows(&whole, &resumed, &format!("{first:?} for {} steps, then {then:?}", STEPS / 2));
    }
}

#[test]
fn the_wgpu_runs_export_embeds_like_the_cpu_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = real_images(16, 131);
    let embed = |backend: BackendKind| {
        let out = dir.path().join(format!("{backend:?}"));
        run(&out, backend, STEPS, false);
        let ck = checkpoint::latest(&out).unwrap().unwrap();
        let config = checkpoint::load_config(&ck).unwrap();
        let encoder = checkpoint::load_model(&ck, &config, &Device::flex()).unwrap().encoder.valid();
        let onnx = dim_trainer::export::to_onnx(&encoder, false);
        dim_runtime::Encoder::from_bytes(&onnx).unwrap().embed_preprocessed(&input).unwrap()
    };
    let (cpu, gpu) = (embed(BackendKind::Cpu), embed(BackendKind::Wgpu));
    let scale = cpu.iter().map(|v| v.abs()).fold(0.0, f32::max);
    let err = cpu.iter().zip(&gpu).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    eprintln!("embeddings: max |cpu − wgpu| {err} of max |y| {scale}");
    assert!(scale > 1e-2, "embeddings are not trivially zero");
    assert!(err <= 2e-2 * scale, "the wgpu run's encoder embeds {err} away from the CPU run's (scale {scale})");
}

#[test]
fn a_missing_backend_is_named_with_the_fix() {
    // cuda is not compiled into the test build: the error says how to get it.
    let err = format!("{:#}", dim_trainer::fit::device(BackendKind::Cuda).unwrap_err());
    assert!(err.contains("--features cuda"), "{err}");
}
