//! `trainer bench`: training throughput, printed as `N img/s`, and where a step's time goes.
//!
//! Three measures: [`run`] trains on one fixed synthetic batch (the step alone), [`run_data`]
//! runs the whole `fit` loop on real data (loader, decode cache and augmentation included), and
//! [`breakdown`] times each phase of the step and sets it against its floating-point work.

use crate::data::{self, Batch, ImageSource, Shapes};
use crate::fit::config::TrainConfig;
use crate::fit::{self as train, Phase, Phases};
use crate::model::LocalCriticKind;
use anyhow::bail;
use std::time::{Duration, Instant};

/// FP32 peak of the 2-core development machine (2 cores × 2.6 GHz × 64 FLOP a cycle), for the
/// breakdown's last column.
pub const PEAK_GFLOPS: f64 = 330.0;

/// One batch of the config's shape: `batch_size` images, each repeated for every view (equal
/// views cost what distinct ones do).
fn fixed_batch(config: &TrainConfig) -> anyhow::Result<Batch> {
    let shapes = Shapes::new(config.batch_size, config.seed);
    let sources: Vec<usize> = (0..config.views).flat_map(|_| 0..config.batch_size).collect();
    let images = data::load_inputs(&shapes, &sources)?;
    let labels = sources.iter().map(|&i| shapes.label(i)).collect();
    Ok(Batch { images, labels, flipped: vec![false; sources.len()], sources, index: 0, views: config.views })
}

/// Trains `warmup + steps` steps on one fixed batch and returns images per second over `steps`.
pub fn run(config: &TrainConfig, warmup: usize, steps: usize) -> anyhow::Result<f64> {
    Ok(breakdown(config, warmup, steps)?.img_per_s())
}

/// Time of each phase of the step, with its floating-point work where it has a closed form.
#[derive(Debug)]
pub struct Breakdown {
    pub batch: usize,
    pub steps: usize,
    pub total: Duration,
    /// `(phase, time over all steps, GFLOP per step if counted)`.
    pub phases: Vec<(Phase, Duration, Option<f64>)>,
}

impl Breakdown {
    pub fn img_per_s(&self) -> f64 {
        (self.steps * self.batch) as f64 / self.total.as_secs_f64()
    }

    /// A Markdown table: ms per step, share of the step, GFLOP, GFLOP/s and % of [`PEAK_GFLOPS`].
    pub fn table(&self) -> String {
        let per_step = |d: Duration| d.as_secs_f64() * 1e3 / self.steps as f64;
        let mut t = String::from("| phase | ms / step | share | GFLOP | GFLOP/s | % of peak |\n|---|---|---|---|---|---|\n");
        let mut flops = 0.0;
        for (name, d, g) in &self.phases {
            let ms = per_step(*d);
            let share = 100.0 * d.as_secs_f64() / self.total.as_secs_f64();
            let (gf, rate, peak) = match g {
                Some(g) => {
                    flops += g;
                    let rate = g / (ms / 1e3);
                    (format!("{g:.2}"), format!("{rate:.0}"), format!("{:.0} %", 100.0 * rate / PEAK_GFLOPS))
                }
                None => ("".into(), "".into(), "".into()),
            };
            t += &format!("| {} | {ms:.1} | {share:.0} % | {gf} | {rate} | {peak} |\n", name.label());
        }
        let ms = per_step(self.total);
        let rate = flops / (ms / 1e3);
        t += &format!("| **step** | **{ms:.1}** | 100 % | {flops:.2} | {rate:.0} | {:.0} % |\n", 100.0 * rate / PEAK_GFLOPS);
        t
    }
}

/// Like [`run`], timing each phase (see [`Phases`]).
pub fn breakdown(config: &TrainConfig, warmup: usize, steps: usize) -> anyhow::Result<Breakdown> {
    let device = train::device(config.backend)?.autodiff();
    let batch = fixed_batch(config)?;
    let mut state = train::new_state(config, &device);
    let mut phases = Phases::default();
    let mut start = Instant::now();
    for s in 0..warmup + steps {
        if s == warmup {
            phases = Phases::default();
            start = Instant::now();
        }
        phases.start();
        state = train::step_timed(config, state, &batch, None, train::StepAt { step: s, steps_per_epoch: 1 }, &device, &mut phases)?.0;
    }
    let total = start.elapsed();
    let work = step_gflop(config);
    let phases = phases.totals.into_iter().map(|(name, d)| (name, d, work.iter().find(|(n, _)| *n == name).map(|(_, g)| *g))).collect();
    Ok(Breakdown { batch: config.batch_size, steps, total, phases })
}

/// The full `fit` loop on `config.data`: every training image is decoded into the cache first
/// (timed and reported apart), then `warmup + steps` steps run from the loader. Returns images
/// per second over `steps`.
pub fn run_data(config: &TrainConfig, warmup: usize, steps: usize) -> anyhow::Result<f64> {
    if config.data.is_none() {
        bail!("bench --data needs a data folder");
    }
    let device = train::device(config.backend)?.autodiff();
    let (cached, train_idx, _) = train::open_data(config)?;
    let t = Instant::now();
    let held = cached.fill(&train_idx);
    eprintln!("decoded {held} training images into memory in {:.1} s (once per run)", t.elapsed().as_secs_f64());
    let loader = train::train_loader(config, cached, train_idx);
    let mut state = train::new_state(config, &device);
    let (mut done, mut epoch) = (0, 0u64);
    let mut start = Instant::now();
    while done < warmup + steps {
        for batch in loader.epoch(epoch, 0) {
            if done == warmup {
                start = Instant::now();
            }
            state = train::step(config, state, &batch?, None, train::StepAt { step: done, steps_per_epoch: loader.batches_per_epoch() }, &device)?.0;
            done += 1;
            if done == warmup + steps {
                break;
            }
        }
        epoch += 1;
    }
    Ok((steps * config.batch_size) as f64 / start.elapsed().as_secs_f64())
}

/// Floating-point operations (GFLOP, 2 per multiply-add) of the phases that have a closed form:
/// convolutions, matrix products and the discriminator's layers. Element-wise work (BatchNorm,
/// ReLU, the estimator, Adam) is left out: it is memory-bound and shows as time without FLOPs.
/// A backward pass costs twice its forward (a gradient for the input and one for the weights).
pub fn step_gflop(config: &TrainConfig) -> Vec<(Phase, f64)> {
    let b = config.batch_size as f64;
    let enc = config.encoder();
    let encoder = 2.0 * b * enc.macs() as f64;
    let (c, y, w) = (enc.channels[1] as f64, enc.y_dim as f64, config.critic_width as f64);
    let n = b * 64.0; // rows of the 8×8 local map
    let critic = match (config.beta > 0.0, config.local_critic) {
        (false, _) => 0.0,
        // Reassociated encode-and-dot: hidden layer on every row, the W×W product on B rows.
        (true, LocalCriticKind::EncodeDot) => {
            let global_net = b * (2.0 * y * w + w * w);
            2.0 * (n * c * w + global_net + b * w * w + b * w * c + b * n * (w + c))
        }
        // LayerNorm form: both nets on all their rows, then the B × B·M·M scores.
        (true, LocalCriticKind::EncodeDotLn) => 2.0 * ((n + b) * (c.max(y) * w + w * w + c.max(y) * w) + b * n * w),
        (true, LocalCriticKind::ConcatConv) => 2.0 * 2.0 * n * ((c + y) * 512.0 + 512.0 * 512.0 + 512.0),
    };
    let disc_layer = y * 1000.0 + 1000.0 * 200.0 + 200.0;
    // Encoder side: B rows; discriminator: real + fake, and the penalty's 2 × (real + fake).
    let (prior_fwd, disc_fwd) = if config.gamma > 0.0 { (2.0 * b * disc_layer, 2.0 * 6.0 * b * disc_layer) } else { (0.0, 0.0) };
    let mut v = vec![
        (Phase::EncoderForward, encoder * 1e-9),
        (Phase::LocalCriticForward, critic * 1e-9),
        (Phase::PriorForward, (prior_fwd + disc_fwd) * 1e-9),
        (Phase::BackwardDim, 2.0 * (encoder + critic + prior_fwd) * 1e-9),
        (Phase::BackwardDisc, 2.0 * disc_fwd * 1e-9),
    ];
    v.retain(|(_, g)| *g > 0.0);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fit::config::ModelKind;
    use burn::prelude::*;

    /// `--bf16` trains the same model: from one initial state, on one batch, the first steps'
    /// loss terms agree with f32 within 2 % (bf16 keeps 8 significant bits; step 0 differs by
    /// 0.1 %, the gap grows as the weights move apart), and they are not bit-identical (the
    /// products really ran in bf16).
    #[test]
    fn bf16_steps_track_f32() {
        let base = TrainConfig::new().with_model(ModelKind::Dim32).with_critic_width(128).with_batch_size(8);
        let bf16 = base.clone().with_bf16(true);
        let batch = fixed_batch(&base).unwrap();
        let device = Device::flex().autodiff();
        // Both runs start from the same weights (other tests may draw from the device's RNG
        // between two initialisations).
        let start = train::new_state(&base, &device);
        let losses = |config: &TrainConfig| {
            let mut state = train::new_state(config, &device);
            state.model = start.model.clone();
            state.model.set_bf16_products(config.bf16);
            state.disc = start.disc.clone();
            let mut terms = Vec::new();
            for s in 0..3 {
                let (next, l) = train::step(config, state, &batch, None, train::StepAt { step: s, steps_per_epoch: 1 }, &device).unwrap();
                state = next;
                terms.push([l.loss, l.local_mi, l.prior, l.disc]);
            }
            terms
        };
        let (f32s, bf16s) = (losses(&base), losses(&bf16));
        for (step, (a, b)) in f32s.iter().zip(&bf16s).enumerate() {
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() <= 2e-2 * x.abs().max(1.0), "step {step}: f32 {a:?} vs bf16 {b:?}");
            }
        }
        assert_ne!(f32s, bf16s, "bf16 products gave f32's losses bit for bit");
    }
}
