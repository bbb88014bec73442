//! `trainer fit`: the DIM training loop — data, resume, steps, epochs, checkpoints, metrics.
//!
//! Everything random after initialisation is seeded by `(seed, epoch, batch)` (the loader) and
//! `(seed, step)` (the step), so `--resume` continues exactly where an uninterrupted run would.

use super::checkpoint::{self, Progress};
use super::config::{DistillObjective, TrainConfig};
use super::knn::knn_report;
use super::metrics::{EpochRecord, KnnRecord, MetricsWriter, MonitorRecord, StepRecord};
use super::monitor;
use super::state::{TrainState, device, new_state};
use super::step::{StepAt, StepLosses, step};
use super::teacher::Teacher;
use crate::data::{self, Cached, ImageSource, Loader, LoaderConfig, Shapes};
use anyhow::{Context, bail};
use burn::prelude::Device;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by Ctrl-C; the loop checkpoints and stops at the next step.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// How a run ended.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FitSummary {
    pub steps: usize,
    pub checkpoint: PathBuf,
    pub interrupted: bool,
    pub losses: Vec<f64>,
    pub img_per_s: f64,
}

/// A data source with its train and validation indices.
pub type SplitData = (Arc<Cached>, Vec<usize>, Vec<usize>);

/// Opens the configured data (or the built-in shapes) and splits it (train, validation).
pub fn open_data(config: &TrainConfig) -> anyhow::Result<SplitData> {
    let source: Arc<dyn ImageSource> = match &config.data {
        Some(path) => Arc::from(data::open(Path::new(path))?),
        None => Arc::new(Shapes::new(config.synthetic_images, config.seed)),
    };
    let (train, val) = data::split(source.len(), config.validation_size, config.seed);
    // Every epoch reads every training image again: decode each once (the loader must
    // keep up with the step; CIFAR-10 is 150 MB decoded).
    Ok((Arc::new(Cached::new(source)), train, val))
}

/// Options of one `fit` call that are not part of the saved config.
#[derive(Debug, Clone, Default)]
pub struct FitOptions {
    pub resume: bool,
    pub progress: bool,
    /// Train images embedded for the final kNN probe (0 = skip it).
    pub knn_images: usize,
    /// Run the online monitor after every this many epochs (0 = never); see [`monitor`].
    pub monitor_every: usize,
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
        views: config.views,
    };
    Loader::new(source, train_idx, cfg)
}

/// The config a call runs with and the checkpoint it resumes from, if any: on resume the
/// saved config defines the run and only its length may change.
fn resolve_run(config: TrainConfig, out: &Path, opts: &FitOptions) -> anyhow::Result<(TrainConfig, Option<PathBuf>)> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create output folder {}", out.display()))?;
    // Leftovers of a process killed while writing: temporary files and checkpoint folders.
    crate::fs::clean_stale(out);
    checkpoint::clean_stale(out);
    let resume_from = if opts.resume { checkpoint::latest(out)? } else { None };
    if opts.resume && resume_from.is_none() {
        eprintln!("no checkpoint in {}; starting a new run", checkpoint::dir(out).display());
    }
    let config = match &resume_from {
        Some(ck) => {
            let saved = checkpoint::load_config(ck)?;
            same_run(&saved, &config).with_context(|| format!("cannot resume {}", ck.display()))?;
            let mut config = config;
            // The critic's shape came from the run's teacher: a teacher of another width is
            // refused when it is opened, before it replaces the run's cached rows.
            if let (Some(d), Some(s)) = (&mut config.distill, &saved.distill) {
                d.teacher_dim = d.teacher_dim.or(s.teacher_dim);
            }
            config
        }
        None if checkpoint::latest(out)?.is_some() => {
            bail!("{} already holds a run; pass --resume to continue it, or choose another --out", out.display())
        }
        None => config,
    };
    config.validate()?;
    config.save_json(&out.join("config.json"))?;
    Ok((config, resume_from))
}

/// Whether `new` can continue a run saved with `saved`: the same model and state (critics,
/// discriminator), the same batch size (the epoch position counts batches) and the same split
/// (seed, validation size). The rest — length, learning rate, data path, augmentation, … — may
/// change on resume; what changed is printed.
fn same_run(saved: &TrainConfig, new: &TrainConfig) -> anyhow::Result<()> {
    let distill = |c: &TrainConfig| c.distill.as_ref().map(|d| (d.layer, d.student_layer, d.objective, d.width));
    if distill(saved) != distill(new) {
        bail!(
            "the checkpoint's distillation is {:?} (teacher layer, student layer, objective, critic width); these flags ask for {:?}: keep the run's [distill] settings, or start a new run in another --out",
            distill(saved),
            distill(new)
        );
    }
    let shape = |c: &TrainConfig| (c.model, c.local_critic, c.critic_width, c.alpha > 0.0, c.beta > 0.0, c.gamma > 0.0, c.batch_size);
    if shape(saved) != shape(new) {
        bail!(
            "the checkpoint is a {:?} run (critic {:?} W={}, α={} β={} γ={}, batch {}); these flags ask for {:?} (critic {:?} W={}, α={} β={} γ={}, batch {}): drop them, or start a new run in another --out",
            saved.model,
            saved.local_critic,
            saved.critic_width,
            saved.alpha,
            saved.beta,
            saved.gamma,
            saved.batch_size,
            new.model,
            new.local_critic,
            new.critic_width,
            new.alpha,
            new.beta,
            new.gamma,
            new.batch_size
        );
    }
    let split = |c: &TrainConfig| (c.seed, c.validation_size, c.data.is_none().then_some(c.synthetic_images));
    if split(saved) != split(new) {
        bail!(
            "the run's train/validation split came from seed {}, validation size {}; resuming with other values would train on other images",
            saved.seed,
            saved.validation_size
        );
    }
    let (a, b) = (serde_json::to_value(saved)?, serde_json::to_value(new)?);
    let changed: Vec<String> =
        a.as_object().into_iter().flatten().filter(|(k, v)| b.get(k.as_str()) != Some(v)).map(|(k, v)| format!("{k}: {v} → {}", b[k.as_str()])).collect();
    if !changed.is_empty() {
        eprintln!("resuming with changes: {}", changed.join(", "));
    }
    Ok(())
}

/// The state a call starts from: fresh (seeded, the encoder from `init_encoder` and the critics
/// from `init_critics` if the config names them), or the checkpoint's, after checking that the
/// data still holds the images the run trained on and dropping metrics written after it.
fn start(
    config: &TrainConfig,
    out: &Path,
    resume_from: Option<&Path>,
    source: &dyn ImageSource,
    train_idx: &[usize],
    device: &Device,
) -> anyhow::Result<(TrainState, Progress)> {
    let mut state = new_state(config, device);
    let mut progress = Progress::default();
    if let (None, Some(file)) = (resume_from, &config.init_encoder) {
        state.model.encoder = super::warm_start::open(Path::new(file), config, source, train_idx, state.model.encoder)?;
    }
    if let (None, Some(ckpt)) = (resume_from, &config.init_critics) {
        state = super::warm_start::critics(Path::new(ckpt), config, device, state)?;
    }
    if let Some(ck) = resume_from {
        state = checkpoint::load_into(ck, config, device, state)?;
        progress = checkpoint::load_progress(ck)?;
        if let Some(n) = progress.images.filter(|&n| n != source.len()) {
            bail!(
                "{} holds {} images but the run trained on {n}: the train/validation split would change. Restore the data (or pass the --data it trained on)",
                source.describe(),
                source.len()
            );
        }
        eprintln!("resuming from {} (step {}, epoch {})", ck.display(), progress.step, progress.epoch + 1);
        super::metrics::truncate_after(&out.join("metrics.jsonl"), progress.step, progress.epoch)?;
    }
    progress.images = Some(source.len());
    Ok((state, progress))
}

/// Whether the run's products go in bf16: `bf16` asks for it, and it pays only where the CPU
/// multiplies bf16 itself (`native`); elsewhere the f32 step is the faster one, so the run takes
/// it and says why. The config keeps `bf16`, so a resume on a CPU that has it goes back to bf16
/// (the two mix within a run: docs/recipes.md, "The prior off, and bf16 products").
fn products_in_bf16(config: &TrainConfig, native: bool) -> bool {
    if config.bf16 && !native {
        eprintln!(
            "bf16: this CPU has no AVX512-BF16, so bf16 products would be widened to f32 in software, slower than f32 ones; training with f32 products (the config keeps bf16 for a CPU that has it)"
        );
        return false;
    }
    config.bf16
}

/// The teacher of a distilling run (cached in `out`), with the width of its layer written into
/// the config (the critic's shape depends on it; see [`super::config::Distill::teacher_dim`]).
fn open_teacher(config: &mut TrainConfig, source: &dyn ImageSource, train_idx: &[usize], out: &Path) -> anyhow::Result<Option<Teacher>> {
    let Some(d) = &mut config.distill else { return Ok(None) };
    let teacher = Teacher::open(d, source, train_idx.to_vec(), out)?;
    d.teacher_dim = Some(teacher.width());
    config.save_json(&out.join("config.json"))?;
    Ok(Some(teacher))
}

/// Prints, records and saves (`OUT/knn.json`) the closing kNN figure.
fn closing_knn(knn: super::knn::KnnReport, out: &Path, metrics: &mut MetricsWriter) -> anyhow::Result<()> {
    eprintln!("kNN (k=20, cosine) on Y, validation split: trained {:.2}% vs randomly initialised {:.2}%", knn.trained * 100.0, knn.random_init * 100.0);
    metrics.write(KnnRecord { knn })?;
    crate::fs::write_atomic(&out.join("knn.json"), &serde_json::to_vec_pretty(&knn)?)
}

/// A checkpoint after a step; when it is refused (non-finite weights), the error names the last
/// good one.
fn save_after_step(out: &Path, config: &TrainConfig, progress: Progress, state: &TrainState, last: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    checkpoint::save(out, config, progress, state).with_context(|| match last {
        Some(c) => format!("training stopped; the last good checkpoint is {}", c.display()),
        None => "training stopped before the first checkpoint".to_string(),
    })
}

/// Running sums of an epoch's loss terms.
#[derive(Default)]
struct EpochSums {
    sum: StepLosses,
    steps: usize,
}

impl EpochSums {
    fn add(&mut self, l: &StepLosses) {
        let s = &mut self.sum;
        (s.loss, s.local_mi, s.global_mi, s.prior, s.disc, s.distill_mi) =
            (s.loss + l.loss, s.local_mi + l.local_mi, s.global_mi + l.global_mi, s.prior + l.prior, s.disc + l.disc, s.distill_mi + l.distill_mi);
        self.steps += 1;
    }
    fn mean(&self) -> StepLosses {
        let n = self.steps.max(1) as f64;
        let s = &self.sum;
        StepLosses {
            loss: s.loss / n,
            local_mi: s.local_mi / n,
            global_mi: s.global_mi / n,
            prior: s.prior / n,
            disc: s.disc / n,
            distill_mi: s.distill_mi / n,
        }
    }
}

pub fn fit(config: TrainConfig, out: &Path, opts: &FitOptions) -> anyhow::Result<FitSummary> {
    let (mut config, resume_from) = resolve_run(config, out, opts)?;
    let device = device(config.backend)?.autodiff();
    let (source, train_idx, val_idx) = open_data(&config)?;
    eprintln!("data: {} ({} train / {} validation)", source.describe(), train_idx.len(), val_idx.len());
    let teacher = open_teacher(&mut config, &*source, &train_idx, out)?;
    let (mut state, mut progress) = start(&config, out, resume_from.as_deref(), &*source, &train_idx, &device)?;
    state.model.set_bf16_products(products_in_bf16(&config, crate::model::bf16::native_products()));
    let loader = train_loader(&config, source.clone(), train_idx.clone());
    let per_epoch = loader.batches_per_epoch();
    if per_epoch == 0 {
        bail!("{} training images make no batch of {}; lower --batch-size", train_idx.len(), config.batch_size);
    }
    let total = (config.epochs * per_epoch).min(config.max_steps.unwrap_or(usize::MAX));
    let bar = crate::progress::bar(opts.progress, total, "steps");
    bar.set_position(progress.step as u64);
    let mut metrics = MetricsWriter::open(&out.join("metrics.jsonl"))?;
    let mut losses = Vec::new();
    let started = std::time::Instant::now();
    let mut images = 0usize;
    let mut last_ckpt = resume_from.clone();
    let mut interrupted = false;
    'run: while progress.epoch < config.epochs && progress.step < total {
        let mut epoch = EpochSums::default();
        let first_batch = progress.batch;
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
            // A batch with fewer than 2 readable images (--skip-bad) teaches nothing: DIM's
            // negatives come from the other images. It still counts as read, so the epoch ends.
            let n = batch.image_count();
            let stepped = n >= 2;
            let mut rate = images as f64 / started.elapsed().as_secs_f64().max(1e-9);
            if stepped {
                let t = std::time::Instant::now();
                let (next, l) = step(&config, state, &batch, teacher.as_ref(), StepAt { step: progress.step, steps_per_epoch: per_epoch }, &device)
                    .with_context(|| match &last_ckpt {
                        Some(c) => format!("training stopped; the last good checkpoint is {}", c.display()),
                        None => "training stopped before the first checkpoint".to_string(),
                    })?;
                state = next;
                images += n;
                progress.step += 1;
                losses.push(l.loss);
                epoch.add(&l);
                let img_per_s = n as f64 / t.elapsed().as_secs_f64();
                metrics.write(StepRecord { step: progress.step, epoch: progress.epoch + 1, losses: l, img_per_s })?;
                rate = images as f64 / started.elapsed().as_secs_f64();
                let distill = if teacher.is_some() { format!(" distill {:.3}", l.distill_mi) } else { String::new() };
                bar.set_message(format!("loss {:.4} local {:.4}{distill} prior {:.3} disc {:.3} | {rate:.0} img/s", l.loss, l.local_mi, l.prior, l.disc));
                bar.set_position(progress.step as u64);
            }
            progress.batch += 1;
            let at_end = progress.step >= total;
            let periodic = stepped && config.checkpoint_every > 0 && progress.step % config.checkpoint_every == 0;
            interrupted |= INTERRUPTED.load(Ordering::SeqCst);
            if progress.batch >= per_epoch {
                if epoch.steps == 0 && first_batch == 0 {
                    bail!(
                        "no batch of epoch {} held 2 readable images (every image skipped?): nothing was trained; check the data in {}",
                        progress.epoch + 1,
                        source.describe()
                    );
                }
                progress.epoch += 1;
                progress.batch = 0;
                last_ckpt = Some(save_after_step(out, &config, progress, &state, &last_ckpt)?);
                let m = epoch.mean();
                // A regression's term is a mean cosine − 1, not a bound on MI: named for what it is.
                let term = if config.distill.as_ref().is_some_and(|d| d.objective == DistillObjective::Regress) { "distill cos−1" } else { "distill MI" };
                let distill = if teacher.is_some() { format!(" {term} {:.4}", m.distill_mi) } else { String::new() };
                let msg = format!(
                    "epoch {}/{}: loss {:.4} local MI {:.4}{distill} prior {:.4} disc {:.4} ({rate:.0} img/s)",
                    progress.epoch, config.epochs, m.loss, m.local_mi, m.prior, m.disc
                );
                bar.suspend(|| eprintln!("{msg}"));
                metrics.write(EpochRecord { epoch_end: progress.epoch, losses: m })?;
                if opts.monitor_every > 0 && progress.epoch % opts.monitor_every == 0 {
                    let r = monitor::measure(&config, &state.model, source.clone(), &train_idx, &val_idx, progress.epoch, &device)?;
                    bar.suspend(|| {
                        eprintln!("monitor after epoch {}: kNN {:.2}%, linear probe {:.2}% on Y ({:.0} s)", r.epoch, r.knn, r.linear_probe, r.seconds)
                    });
                    metrics.write(MonitorRecord { monitor: r })?;
                }
            } else if at_end || periodic || interrupted {
                last_ckpt = Some(save_after_step(out, &config, progress, &state, &last_ckpt)?);
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
        let knn = knn_report(&config, &state.model, source, &train_idx, &val_idx, opts.knn_images, &device)?;
        closing_knn(knn, out, &mut metrics)?;
    }
    Ok(FitSummary { steps: progress.step, checkpoint, interrupted, losses, img_per_s })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_products_are_taken_only_where_the_cpu_has_them() {
        let asked = TrainConfig::new().with_bf16(true);
        assert!(products_in_bf16(&asked, true), "asked for, native: bf16");
        assert!(!products_in_bf16(&asked, false), "asked for, widened in software: f32");
        assert!(!products_in_bf16(&TrainConfig::new(), true), "not asked for: f32");
    }
}
