//! `trainer fit`: the DIM training loop.
//!
//! Two optimisers: Adam on the encoder and its critics (the DIM loss), Adam on the prior
//! discriminator (its own loss, on detached Y). Everything random after initialisation is seeded
//! by `(seed, step)`, so `--resume` continues exactly where an uninterrupted run would be.

use crate::adam::FusedAdam;
use crate::checkpoint::{self, Progress, TrainState};
use crate::config::{BackendKind, TrainConfig};
use crate::data::{self, Batch, Cached, ImageSource, Loader, LoaderConfig, Shapes};
use crate::eval::knn;
use crate::model::{DimModel, PriorDiscriminator};
use crate::objective::{self, estimate};
use anyhow::{Context, bail};
use burn::config::Config;
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;
use rand::{SeedableRng, rngs::StdRng};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set by Ctrl-C; the loop checkpoints and stops at the next step.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Loss terms of one step.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, PartialEq)]
pub struct StepLosses {
    pub loss: f64,
    pub local_mi: f64,
    pub global_mi: f64,
    pub prior: f64,
    pub disc: f64,
}

/// How a run ended.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FitSummary {
    pub steps: usize,
    pub checkpoint: PathBuf,
    pub interrupted: bool,
    pub losses: Vec<f64>,
    pub img_per_s: f64,
}

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

/// A data source with its train and validation indices.
pub type SplitData = (Arc<dyn ImageSource>, Vec<usize>, Vec<usize>);

/// Opens the configured data (or the built-in shapes) and splits it (train, validation).
pub fn open_data(config: &TrainConfig) -> anyhow::Result<SplitData> {
    let source: Arc<dyn ImageSource> = match &config.data {
        Some(path) => Arc::from(data::open(Path::new(path))?),
        None => Arc::new(Shapes::new(config.synthetic_images, config.seed)),
    };
    let (train, val) = data::split(source.len(), config.validation_size, config.seed);
    // Every epoch reads every training image again: decode each once (issue 11: the loader must
    // keep up with the step; CIFAR-10 is 150 MB decoded).
    Ok((Arc::new(Cached::new(source)), train, val))
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

/// Wall time per named phase of a step, summed over steps (`trainer bench --breakdown`).
///
/// The CPU backend runs each operation when it is called, so the time between two marks is the
/// time of the operations in between. On a GPU backend operations are queued, and only the
/// totals are meaningful.
#[derive(Debug, Default)]
pub struct Phases {
    last: Option<Instant>,
    /// `(phase, total time)` in the order phases first ran.
    pub totals: Vec<(&'static str, Duration)>,
}

impl Phases {
    /// Starts the clock of the next phase.
    pub fn start(&mut self) {
        self.last = Some(Instant::now());
    }
    /// Ends phase `name` (begun at the previous mark) and starts the next one.
    fn mark(&mut self, name: &'static str) {
        let Some(last) = self.last else { return };
        let now = Instant::now();
        match self.totals.iter_mut().find(|(n, _)| *n == name) {
            Some((_, t)) => *t += now - last,
            None => self.totals.push((name, now - last)),
        }
        self.last = Some(now);
    }
}

/// Reads the step's loss terms to the host in one transfer (one sync per step).
fn losses_to_host(terms: Vec<Tensor<1>>) -> Vec<f64> {
    Tensor::cat(terms, 0).into_data().iter::<f32>().map(f64::from).collect()
}

/// One optimiser step on `batch`.
pub fn step(config: &TrainConfig, state: TrainState, batch: &Batch, step: usize, device: &Device) -> anyhow::Result<(TrainState, StepLosses)> {
    step_timed(config, state, batch, step, device, &mut Phases::default())
}

/// [`step`], recording the time of each phase in `phases` (nothing when it was not started).
pub fn step_timed(
    config: &TrainConfig,
    state: TrainState,
    batch: &Batch,
    step: usize,
    device: &Device,
    phases: &mut Phases,
) -> anyhow::Result<(TrainState, StepLosses)> {
    let TrainState { model, mut optim, disc, mut disc_optim } = state;
    let x = Tensor::<4>::from_data(TensorData::new(batch.images.clone(), [batch.len(), 3, 32, 32]), device);
    phases.mark("host → tensor copy");
    let out = model.encoder.forward(x);
    phases.mark("encoder forward");
    let zero = || Tensor::<1>::zeros([1], device);
    let (mut local_mi, mut global_mi, mut prior_term) = (zero(), zero(), zero());
    let mut loss = zero();
    if let Some(critic) = &model.local {
        let scores = critic.scores(out.local.clone(), out.y.clone());
        phases.mark("local critic forward");
        local_mi = estimate(&scores, config.estimator);
        loss = loss - local_mi.clone() * config.beta;
        phases.mark("estimator");
    }
    if let Some(critic) = &model.global {
        global_mi = estimate(&critic.scores(out.local.clone(), out.y.clone()), config.estimator);
        loss = loss - global_mi.clone() * config.alpha;
        phases.mark("global critic + estimator");
    }
    let mut rng = StdRng::seed_from_u64(config.seed ^ (step as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let disc_loss = disc.as_ref().map(|d| {
        prior_term = objective::prior_encoder_loss(d, out.y.clone());
        loss = loss.clone() + prior_term.clone() * config.gamma;
        let real = objective::prior_samples(config.prior, batch.len(), out.y.dims()[1], &mut rng, device);
        objective::prior_discriminator_loss(d, real, out.y.clone(), config.gradient_penalty, &mut rng)
    });
    phases.mark("prior term + discriminator forward");
    let disc_value = disc_loss.clone().unwrap_or_else(zero);
    let v = losses_to_host(vec![loss.clone().detach(), local_mi.detach(), global_mi.detach(), prior_term.detach(), disc_value.detach()]);
    let l = StepLosses { loss: v[0], local_mi: v[1], global_mi: v[2], prior: v[3], disc: v[4] };
    phases.mark("losses → host (one sync)");
    if !l.loss.is_finite() || !l.disc.is_finite() {
        bail!(
            "the loss became {} at step {step} (terms: {l:?}); the model was not updated. Lower --learning-rate or the critic width, or check the data",
            l.loss
        );
    }
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    phases.mark("backward (DIM loss)");
    let model = optim.step(config.learning_rate, model, grads);
    phases.mark("Adam (encoder + critics)");
    let disc = match (disc, disc_loss) {
        (Some(d), Some(dl)) => {
            let grads = GradientsParams::from_grads(dl.backward(), &d);
            phases.mark("backward (discriminator)");
            let d = disc_optim.step(config.learning_rate, d, grads);
            phases.mark("Adam (discriminator)");
            Some(d)
        }
        (d, _) => d,
    };
    Ok((TrainState { model, optim, disc, disc_optim }, l))
}

/// The loader `fit` trains from: shuffled, seeded, whole batches, the configured augmentation.
pub fn train_loader(config: &TrainConfig, source: Arc<dyn ImageSource>, train_idx: Vec<usize>) -> Loader {
    let cfg = LoaderConfig {
        batch_size: config.batch_size,
        shuffle: true,
        drop_last: true,
        augment: config.augment,
        skip_bad: config.skip_bad,
        prefetch: 4,
        seed: config.seed,
    };
    Loader::new(source, train_idx, cfg)
}

struct Metrics(std::fs::File);

impl Metrics {
    fn open(path: &Path) -> anyhow::Result<Self> {
        let f = std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self(f))
    }
    fn write(&mut self, v: serde_json::Value) -> anyhow::Result<()> {
        writeln!(self.0, "{v}")?;
        Ok(())
    }
}

/// Options of one `fit` call that are not part of the saved config.
#[derive(Debug, Clone, Default)]
pub struct FitOptions {
    pub resume: bool,
    pub progress: bool,
    /// Train images embedded for the final kNN probe (0 = skip it).
    pub knn_images: usize,
}

pub fn fit(mut config: TrainConfig, out: &Path, opts: &FitOptions) -> anyhow::Result<FitSummary> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create output folder {}", out.display()))?;
    let resume_from = if opts.resume { checkpoint::latest(out)? } else { None };
    if opts.resume && resume_from.is_none() {
        eprintln!("no checkpoint in {}; starting a new run", checkpoint::dir(out).display());
    }
    if let Some(ck) = &resume_from {
        // The saved config defines the run; only its length may change on resume.
        let saved = checkpoint::load_config(ck)?;
        config = TrainConfig { epochs: config.epochs, max_steps: config.max_steps, checkpoint_every: config.checkpoint_every, ..saved };
    } else if checkpoint::latest(out)?.is_some() {
        bail!("{} already holds a run; pass --resume to continue it, or choose another --out", out.display());
    }
    config.validate()?;
    config.save(out.join("config.json")).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.join("config.json").display()))?;
    let device = device(config.backend)?.autodiff();
    let (source, train_idx, val_idx) = open_data(&config)?;
    eprintln!("data: {} ({} train / {} validation)", source.describe(), train_idx.len(), val_idx.len());
    let mut state = new_state(&config, &device);
    let mut progress = Progress::default();
    if let Some(ck) = &resume_from {
        state = checkpoint::load_into(ck, &config, &device, state)?;
        progress = checkpoint::load_progress(ck)?;
        eprintln!("resuming from {} (step {}, epoch {})", ck.display(), progress.step, progress.epoch + 1);
    }
    let loader = train_loader(&config, source.clone(), train_idx.clone());
    let per_epoch = loader.batches_per_epoch();
    if per_epoch == 0 {
        bail!("{} training images make no batch of {}; lower --batch-size", train_idx.len(), config.batch_size);
    }
    let total = (config.epochs * per_epoch).min(config.max_steps.unwrap_or(usize::MAX));
    let bar = if opts.progress { indicatif::ProgressBar::new(total as u64) } else { indicatif::ProgressBar::hidden() };
    bar.set_style(indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} eta {eta} {msg}").unwrap().progress_chars("=> "));
    bar.set_position(progress.step as u64);
    let mut metrics = Metrics::open(&out.join("metrics.jsonl"))?;
    let mut losses = Vec::new();
    let started = std::time::Instant::now();
    let mut images = 0usize;
    let mut last_ckpt = resume_from.clone();
    let mut interrupted = false;
    'run: while progress.epoch < config.epochs && progress.step < total {
        let mut epoch_sum = StepLosses::default();
        let mut epoch_n = 0usize;
        for batch in loader.epoch(progress.epoch as u64, progress.batch) {
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    let saved = checkpoint::save(out, &config, progress, &state)?;
                    return Err(
                        anyhow::Error::from(e).context(format!("reading data failed; progress saved in {} (fix the file, then --resume)", saved.display()))
                    );
                }
            };
            if batch.len() < 2 {
                progress.batch += 1;
                continue;
            }
            let t = std::time::Instant::now();
            let (next, l) = step(&config, state, &batch, progress.step, &device).with_context(|| match &last_ckpt {
                Some(c) => format!("training stopped; the last good checkpoint is {}", c.display()),
                None => "training stopped before the first checkpoint".to_string(),
            })?;
            state = next;
            images += batch.len();
            progress.step += 1;
            progress.batch += 1;
            losses.push(l.loss);
            epoch_n += 1;
            epoch_sum = StepLosses {
                loss: epoch_sum.loss + l.loss,
                local_mi: epoch_sum.local_mi + l.local_mi,
                global_mi: epoch_sum.global_mi + l.global_mi,
                prior: epoch_sum.prior + l.prior,
                disc: epoch_sum.disc + l.disc,
            };
            let ips = batch.len() as f64 / t.elapsed().as_secs_f64();
            metrics.write(serde_json::json!({"step": progress.step, "epoch": progress.epoch + 1, "loss": l.loss, "local_mi": l.local_mi, "global_mi": l.global_mi, "prior": l.prior, "disc": l.disc, "img_per_s": ips}))?;
            bar.set_message(format!(
                "loss {:.4} local {:.4} prior {:.3} disc {:.3} | {:.0} img/s",
                l.loss,
                l.local_mi,
                l.prior,
                l.disc,
                images as f64 / started.elapsed().as_secs_f64()
            ));
            bar.set_position(progress.step as u64);
            let at_end = progress.step >= total;
            let periodic = config.checkpoint_every > 0 && progress.step % config.checkpoint_every == 0;
            if INTERRUPTED.load(Ordering::SeqCst) {
                interrupted = true;
            }
            if progress.batch >= per_epoch {
                progress.epoch += 1;
                progress.batch = 0;
                last_ckpt = Some(checkpoint::save(out, &config, progress, &state)?);
                let n = epoch_n.max(1) as f64;
                let msg = format!(
                    "epoch {}/{}: loss {:.4} local MI {:.4} prior {:.4} disc {:.4} ({:.0} img/s)",
                    progress.epoch,
                    config.epochs,
                    epoch_sum.loss / n,
                    epoch_sum.local_mi / n,
                    epoch_sum.prior / n,
                    epoch_sum.disc / n,
                    images as f64 / started.elapsed().as_secs_f64()
                );
                bar.suspend(|| eprintln!("{msg}"));
                metrics.write(serde_json::json!({"epoch_end": progress.epoch, "loss": epoch_sum.loss / n, "local_mi": epoch_sum.local_mi / n, "global_mi": epoch_sum.global_mi / n, "prior": epoch_sum.prior / n, "disc": epoch_sum.disc / n}))?;
            } else if at_end || periodic || interrupted {
                last_ckpt = Some(checkpoint::save(out, &config, progress, &state)?);
            }
            if interrupted || at_end {
                break 'run;
            }
        }
    }
    bar.finish_and_clear();
    let checkpoint = match last_ckpt {
        Some(c) => c,
        None => checkpoint::save(out, &config, progress, &state)?,
    };
    let img_per_s = images as f64 / started.elapsed().as_secs_f64().max(1e-9);
    if interrupted {
        eprintln!("interrupted: checkpoint saved in {}; continue with `trainer fit --out {} --resume`", checkpoint.display(), out.display());
    }
    if opts.knn_images > 0 && !interrupted {
        let report = knn_report(&config, &state.model, source, &train_idx, &val_idx, opts.knn_images, &device)?;
        eprintln!(
            "kNN (k=20, cosine) on Y, validation split: trained {:.2}% vs randomly initialised {:.2}%",
            report["trained"].as_f64().unwrap_or(0.0) * 100.0,
            report["random_init"].as_f64().unwrap_or(0.0) * 100.0
        );
        metrics.write(serde_json::json!({"knn": report}))?;
        std::fs::write(out.join("knn.json"), serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(FitSummary { steps: progress.step, checkpoint, interrupted, losses, img_per_s })
}

/// kNN accuracy on Y (validation split) of the trained encoder and of a fresh one of the same shape.
pub fn knn_report(
    config: &TrainConfig,
    model: &DimModel,
    source: Arc<dyn ImageSource>,
    train_idx: &[usize],
    val_idx: &[usize],
    bank_size: usize,
    device: &Device,
) -> anyhow::Result<serde_json::Value> {
    let plain = device.clone().inner();
    let bank: Vec<usize> = train_idx.iter().copied().take(bank_size).collect();
    let mut out = serde_json::Map::new();
    let fresh = { config.encoder().init(&plain) };
    for (name, enc) in [("trained", model.encoder.valid()), ("random_init", fresh)] {
        let (bf, bl) = knn::embed(&enc, source.clone(), bank.clone(), &plain)?;
        let (vf, vl) = knn::embed(&enc, source.clone(), val_idx.to_vec(), &plain)?;
        out.insert(name.into(), knn::knn_accuracy(&bf, &bl, &vf, &vl, config.encoder().y_dim, 20).into());
    }
    out.insert("bank_images".into(), bank.len().into());
    out.insert("validation_images".into(), val_idx.len().into());
    Ok(out.into())
}
