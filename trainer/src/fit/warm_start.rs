//! `fit --init-encoder FILE`: a new run that starts from an exported encoder's weights instead of
//! random ones (fine-tuning a shipped encoder on other images, or a long run carried on from the
//! `models/` file when its checkpoints are gone). The critics, the prior's discriminator and
//! Adam's moments start fresh; only the encoder is taken — unless `--init-critics CKPT` also
//! takes the critics and the discriminator from a checkpoint ([`critics`]): a fresh critic
//! costs the encoder what it learnt (docs/recipes.md, "Session 24: short warm cycles": one
//! epoch from an export lost 1.8 points of fc where the same epoch resumed kept them).
//!
//! An export has each BatchNorm folded into the layer before it (`export`): the layer computes
//! `z = W′x + b′` where training computed `BN(Wx + b)`. Training needs a BatchNorm back, and in
//! training mode BatchNorm normalises by the *batch's* statistics, so an identity BatchNorm
//! (γ = 1, β = 0) after `W′, b′` would hand the next layer `(z − μ_B) / σ_B`, not `z`. Instead each
//! BatchNorm is set to undo its own normalisation on the data: with `μ`, `σ²` the per-channel mean
//! and (biased) variance of `z` over the first [`CALIBRATION_IMAGES`] training images,
//!
//! ```text
//!   γ = √(σ² + ε)    β = μ    running mean = μ    running variance = σ²
//! ```
//!
//! so that
//! - in inference (running statistics) `BN(z) = z` exactly: the encoder computes the file's
//!   function, and exporting it folds back to `W′, b′` (scale `γ / √(σ² + ε) = 1`, shift
//!   `β − μ = 0`);
//! - in training `BN(z) = z` up to the difference between a batch's statistics and the
//!   calibration images' — what any trained BatchNorm sees too.

use super::checkpoint;
use super::config::TrainConfig;
use super::state::TrainState;
use crate::data::{self, ImageSource};
use crate::export::{Folded, Layers};
use crate::model::EncoderNet;
use crate::model::conv_rows::{conv_rows, nchw_to_rows, rows_to_nchw};
use crate::model::encoder::ConvBlock;
use anyhow::{Context, bail};
use burn::module::{Param, RunningState};
use burn::nn::{BatchNorm, Linear};
use burn::prelude::*;
use burn::tensor::activation::relu;
use std::path::Path;

/// Training images whose statistics set the unfolded BatchNorms (the first of the training split).
pub const CALIBRATION_IMAGES: usize = 2048;

/// `encoder` (a run's fresh one, on its device) with the weights of the encoder in `path` (an
/// f32 ONNX file from `trainer export`), its BatchNorms unfolded on the first
/// [`CALIBRATION_IMAGES`] of `train_idx`.
pub fn open(path: &Path, config: &TrainConfig, source: &dyn ImageSource, train_idx: &[usize], encoder: EncoderNet) -> anyhow::Result<EncoderNet> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read --init-encoder {}", path.display()))?;
    let layers = Layers::from_onnx(&bytes).with_context(|| format!("--init-encoder {}: not an f32 encoder from `trainer export`", path.display()))?;
    let calibration = &train_idx[..train_idx.len().min(CALIBRATION_IMAGES)];
    let inputs = data::load_inputs(source, calibration)?;
    let cpu = Device::flex();
    let images = Tensor::<4>::from_data(TensorData::new(inputs, [calibration.len(), 3, 32, 32]), &cpu);
    let warm = unfold(&layers, config.encoder().init(&cpu), images).with_context(|| format!("--init-encoder {}", path.display()))?;
    eprintln!("init: encoder weights from {} (BatchNorm unfolded on {} training images)", path.display(), calibration.len());
    // Loaded as a checkpoint's record is: the parameters become the run's trainable leaves on
    // its device, as after `--resume`.
    Ok(encoder.load_record(warm.into_record()))
}

/// `fresh` (an encoder of the run's shape, for its shapes and settings) with the weights of
/// `layers`, each BatchNorm set from the statistics its layer's outputs have on `images`.
pub fn unfold(layers: &Layers, mut fresh: EncoderNet, images: Tensor<4>) -> anyhow::Result<EncoderNet> {
    if layers.global_pool != fresh.global_pool {
        bail!("the file's encoder {} before fc and this run's does not: pass the --model it was trained as", pooling(layers.global_pool));
    }
    let (mut x, mut grid) = nchw_to_rows(images);
    for (i, (block, folded)) in [&mut fresh.conv1, &mut fresh.conv2, &mut fresh.conv3].into_iter().zip(&layers.convs).enumerate() {
        unfold_conv(block, folded).with_context(|| format!("conv{}", i + 1))?;
        let (z, next) = conv_rows(&block.conv, x, grid, false);
        set_to_undo(&mut block.bn, &z);
        (x, grid) = (relu(z), next);
    }
    let flat = fresh.fc_input(rows_to_nchw(x, grid));
    set_linear(&mut fresh.fc, &layers.fc).context("fc")?;
    let z = fresh.fc.forward(flat);
    set_to_undo(&mut fresh.fc_bn, &z);
    set_linear(&mut fresh.y, &layers.y).context("y")?;
    Ok(fresh)
}

/// `state` (a new run's) with the critics and the prior's discriminator of the checkpoint `ckpt`
/// (a `step-*` folder or a run folder); the encoder and both optimisers stay as they are. The
/// checkpoint's run must have critics of this run's shapes: the same model, local critic, width,
/// α, β and distillation (bf16 aside, which changes no weight).
pub fn critics(ckpt: &Path, config: &TrainConfig, device: &Device, mut state: TrainState) -> anyhow::Result<TrainState> {
    let ckpt = checkpoint::resolve(ckpt).context("--init-critics")?;
    let theirs = checkpoint::load_config(&ckpt).with_context(|| format!("--init-critics {}", ckpt.display()))?;
    let shapes = |c: &TrainConfig| serde_json::to_value(c.model_config().with_bf16_products(false)).expect("a config serialises");
    if shapes(&theirs) != shapes(config) {
        bail!(
            "--init-critics {}: its run's critics have other shapes than this run's (model {:?}, local critic {:?}, width {}, alpha {}, beta {} there); pass a checkpoint of a run with this run's settings",
            ckpt.display(),
            theirs.model,
            theirs.local_critic,
            theirs.critic_width,
            theirs.alpha,
            theirs.beta
        );
    }
    let model = checkpoint::load_model(&ckpt, &theirs, device)?;
    (state.model.local, state.model.global, state.model.distill) = (model.local, model.global, model.distill);
    if let Some(disc) = state.disc.take() {
        if theirs.gamma <= 0.0 {
            bail!("--init-critics {}: its run had no prior discriminator (gamma 0) and this one has", ckpt.display());
        }
        state.disc = Some(checkpoint::load_disc(&ckpt, disc)?);
    }
    eprintln!("init: critics{} from {}", if state.disc.is_some() { " and the prior's discriminator" } else { "" }, ckpt.display());
    Ok(state)
}

fn pooling(global_pool: bool) -> &'static str {
    if global_pool { "pools globally" } else { "flattens the 4×4 map" }
}

fn unfold_conv(block: &mut ConvBlock, folded: &Folded) -> anyhow::Result<()> {
    block.conv.weight = param_like(&block.conv.weight, folded)?;
    block.conv.bias = Some(bias_like(block.conv.weight.dims()[0], folded)?);
    Ok(())
}

fn set_linear(linear: &mut Linear, folded: &Folded) -> anyhow::Result<()> {
    linear.weight = param_like(&linear.weight, folded)?;
    linear.bias = Some(bias_like(linear.weight.dims()[1], folded)?);
    Ok(())
}

/// `folded`'s weight as a parameter shaped like `like` (burn's conv layout is ONNX's; its linear
/// `[in, out]` is Gemm's `B`), or an error naming both shapes.
fn param_like<const D: usize>(like: &Param<Tensor<D>>, folded: &Folded) -> anyhow::Result<Param<Tensor<D>>> {
    let want = like.dims();
    if folded.dims != want {
        bail!("the file's weights are {:?}, this run's encoder needs {want:?}: pass the --model it was trained as", folded.dims);
    }
    let device = like.device();
    Ok(Param::from_tensor(Tensor::from_data(TensorData::new(folded.weight.clone(), want), &device)))
}

fn bias_like(width: usize, folded: &Folded) -> anyhow::Result<Param<Tensor<1>>> {
    if folded.bias.len() != width {
        bail!("the file's bias has {} values for {width} channels", folded.bias.len());
    }
    Ok(Param::from_tensor(Tensor::from_data(TensorData::new(folded.bias.clone(), [width]), &Device::flex())))
}

/// Sets `bn` to give back its input `rows` (`[N, C]`) unchanged: γ = √(σ² + ε), β = μ, running
/// statistics μ and σ² (see the module doc).
fn set_to_undo(bn: &mut BatchNorm, rows: &Tensor<2>) {
    let c = rows.dims()[1];
    let mean = rows.clone().mean_dim(0);
    let centred = rows.clone() - mean.clone();
    let var = (centred.clone() * centred).mean_dim(0).reshape([c]);
    let mean = mean.reshape([c]);
    bn.gamma = Param::from_tensor((var.clone() + bn.epsilon).sqrt());
    bn.beta = Param::from_tensor(mean.clone());
    bn.running_mean = RunningState::new(mean);
    bn.running_var = RunningState::new(var);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EncoderConfig;
    use rand::{Rng, SeedableRng, rngs::StdRng};
    use std::path::PathBuf;

    fn random<const D: usize>(dims: [usize; D], low: f32, high: f32, rng: &mut StdRng) -> Tensor<D> {
        let n = dims.iter().product::<usize>();
        Tensor::from_data(TensorData::new((0..n).map(|_| rng.random_range(low..high)).collect::<Vec<f32>>(), dims), &Device::flex())
    }

    /// A BatchNorm as training leaves it: scale and shift away from 1 and 0, running statistics
    /// away from the initial 0 and 1, so that folding it changes the layer.
    fn trained_like(bn: &mut BatchNorm, rng: &mut StdRng) {
        let c = bn.gamma.dims()[0];
        bn.gamma = Param::from_tensor(random([c], 0.5, 2.0, rng));
        bn.beta = Param::from_tensor(random([c], -0.5, 0.5, rng));
        bn.running_mean = RunningState::new(random([c], -0.3, 0.3, rng));
        bn.running_var = RunningState::new(random([c], 0.2, 3.0, rng));
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
    }

    fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
        assert!(worst <= tol * scale.max(1.0), "{what}: largest difference {worst} (largest value {scale})");
    }

    /// The encoder a file holds, with its BatchNorms trained-like, and the images to calibrate on.
    fn exported(config: &EncoderConfig, seed: u64) -> (EncoderNet, Layers, Tensor<4>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let cpu = Device::flex();
        let mut enc = config.init(&cpu);
        for bn in [&mut enc.conv1.bn, &mut enc.conv2.bn, &mut enc.conv3.bn, &mut enc.fc_bn] {
            trained_like(bn, &mut rng);
        }
        let layers = Layers::from_encoder(&enc);
        (enc, layers, random([24, 3, 32, 32], -1.0, 1.0, &mut rng))
    }

    /// The unfolded encoder computes the file's function in inference, exports back to the
    /// file's weights, and — on the calibration images as a training batch — computes the same
    /// function in training mode too, batch statistics and all.
    #[test]
    fn an_export_unfolds_to_its_own_function_in_both_modes_and_folds_back() {
        for config in [EncoderConfig::tiny(), EncoderConfig::dim32()] {
            let (original, layers, images) = exported(&config, 5);
            let want = original.forward(images.clone());
            // Another draw of the same shape: nothing of it may survive but its settings.
            let warm = unfold(&layers, config.init(&Device::flex()), images.clone()).unwrap();
            let again = Layers::from_encoder(&warm);
            for (i, (a, b)) in again.convs.iter().chain([&again.fc, &again.y]).zip(layers.convs.iter().chain([&layers.fc, &layers.y])).enumerate() {
                assert_eq!(a.dims, b.dims, "layer {i}");
                assert_close(&a.weight, &b.weight, 1e-6, &format!("layer {i} weight"));
                assert_close(&a.bias, &b.bias, 1e-6, &format!("layer {i} bias"));
            }
            let inference = warm.forward(images.clone());
            assert_close(&values(inference.y), &values(want.y.clone()), 1e-4, "y, inference");
            assert_close(&values(inference.fc), &values(want.fc.clone()), 1e-4, "fc, inference");
            let trained = warm.fork(&Device::flex().autodiff()).forward(images.clone().to_device(&Device::flex().autodiff()));
            assert_close(&values(trained.y), &values(want.y), 1e-3, "y, training mode");
            assert_close(&values(trained.local), &values(want.local), 1e-3, "local map, training mode");
        }
    }

    /// What an identity BatchNorm would have given instead (the test above is not vacuous): the
    /// training-mode output of the folded weights behind γ = 1, β = 0 is another function.
    #[test]
    fn an_identity_batchnorm_would_not_give_the_files_function() {
        let config = EncoderConfig::tiny();
        let (original, layers, images) = exported(&config, 6);
        let mut naive = unfold(&layers, config.init(&Device::flex()), images.clone()).unwrap();
        let c = |bn: &BatchNorm| bn.gamma.dims()[0];
        for bn in [&mut naive.conv1.bn, &mut naive.conv2.bn, &mut naive.conv3.bn, &mut naive.fc_bn] {
            let n = c(bn);
            bn.gamma = Param::from_tensor(Tensor::ones([n], &Device::flex()));
            bn.beta = Param::from_tensor(Tensor::zeros([n], &Device::flex()));
        }
        let ad = Device::flex().autodiff();
        let got = values(naive.fork(&ad).forward(images.clone().to_device(&ad)).y);
        let want = values(original.forward(images).y);
        let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
        assert!(worst > 0.1, "an identity BatchNorm gave the same y (difference {worst})");
    }

    /// Loaded into a run's encoder on the autodiff device (what `open` does), every unfolded
    /// parameter is a trainable leaf: each gets a gradient.
    #[test]
    fn the_unfolded_encoder_loaded_into_a_run_gets_gradients() {
        let config = EncoderConfig::tiny();
        let (_, layers, images) = exported(&config, 8);
        let warm = unfold(&layers, config.init(&Device::flex()), images.clone()).unwrap();
        let ad = Device::flex().autodiff();
        let run = config.init(&ad).load_record(warm.into_record());
        let grads = run.forward(images.to_device(&ad)).y.sum().backward();
        let has = |p: &Param<Tensor<1>>| p.val().grad(&grads).is_some_and(|g| values(g).iter().any(|v| *v != 0.0));
        for (i, block) in [&run.conv1, &run.conv2, &run.conv3].into_iter().enumerate() {
            assert!(block.conv.weight.val().grad(&grads).is_some(), "conv{} weight", i + 1);
            assert!(has(&block.bn.gamma) && has(&block.bn.beta), "conv{} BatchNorm", i + 1);
        }
        assert!(run.fc.weight.val().grad(&grads).is_some() && has(&run.fc_bn.gamma) && run.y.weight.val().grad(&grads).is_some());
    }

    #[test]
    fn a_file_of_another_shape_is_refused_with_the_fix() {
        let (_, layers, images) = exported(&EncoderConfig::tiny(), 7);
        let err = format!("{:#}", unfold(&layers, EncoderConfig::dim32().init(&Device::flex()), images).unwrap_err());
        assert!(err.contains("--model"), "{err}");
    }

    /// Every float parameter of `m`, in visiting order.
    fn flat(m: &impl Module) -> Vec<f32> {
        struct Flat(Vec<f32>);
        impl burn::module::ModuleVisitor for Flat {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0.extend(values(param.val()));
            }
        }
        let mut f = Flat(Vec::new());
        m.visit(&mut f);
        f.0
    }

    fn saved_run(config: &TrainConfig, dir: &Path) -> (TrainState, PathBuf) {
        let state = crate::fit::new_state(config, &Device::flex().autodiff());
        let at = checkpoint::Progress { step: 1, epoch: 0, batch: 1, images: Some(100) };
        let ckpt = checkpoint::save(dir, config, at, &state).unwrap();
        (state, ckpt)
    }

    /// `--init-critics`: the critics and the discriminator are the checkpoint's, bit for bit; the
    /// encoder is the new run's own (another seed here, so every part tells which run it is from).
    #[test]
    fn the_critics_and_the_discriminator_come_from_the_checkpoint_the_encoder_stays() {
        use crate::fit::config::ModelKind;
        let dir = tempfile::tempdir().unwrap();
        let config = TrainConfig::new().with_model(ModelKind::Tiny).with_critic_width(16);
        let (old, _) = saved_run(&config, dir.path());
        let new_config = config.clone().with_seed(1).with_bf16(true);
        let fresh = crate::fit::new_state(&new_config, &Device::flex().autodiff());
        let own_encoder = flat(&fresh.model.encoder);
        assert_ne!(flat(&fresh.model.local), flat(&old.model.local), "the seeds draw the same critic: the test would be vacuous");
        let got = critics(dir.path(), &new_config, &Device::flex().autodiff(), fresh).unwrap();
        assert_eq!(flat(&got.model.local), flat(&old.model.local));
        assert_eq!(flat(&got.disc), flat(&old.disc));
        assert!(!flat(&got.disc).is_empty());
        assert_eq!(flat(&got.model.encoder), own_encoder);
    }

    /// Critics of another width (or a run without the discriminator this one has) are refused
    /// with what differs, not loaded into the wrong shapes.
    #[test]
    fn critics_of_another_run_shape_are_refused() {
        use crate::fit::config::ModelKind;
        let dir = tempfile::tempdir().unwrap();
        let config = TrainConfig::new().with_model(ModelKind::Tiny).with_critic_width(16);
        saved_run(&config, dir.path());
        let device = Device::flex().autodiff();
        let wider = config.clone().with_critic_width(32);
        let err = format!("{:#}", critics(dir.path(), &wider, &device, crate::fit::new_state(&wider, &device)).err().expect("refused"));
        assert!(err.contains("other shapes") && err.contains("width 16"), "{err}");
        let no_prior = tempfile::tempdir().unwrap();
        saved_run(&config.clone().with_gamma(0.0), no_prior.path());
        let err = format!("{:#}", critics(no_prior.path(), &config, &device, crate::fit::new_state(&config, &device)).err().expect("refused"));
        assert!(err.contains("no prior discriminator"), "{err}");
    }
}
