//! One optimisation step of DIM: encode, score, estimate, prior matching, one sync, two
//! backward passes and two Adam updates — with an optional clock per phase.
//!
//! Two optimisers: Adam on the encoder and its critics (the DIM loss), Adam on the prior
//! discriminator (its own loss, on detached Y). The step's randomness (prior samples, the
//! penalty's directions) is seeded by `(seed, step)`, so `--resume` continues exactly.

use super::config::{DistillObjective, StudentLayer, TrainConfig};
use super::state::TrainState;
use super::teacher::Teacher;
use crate::data::Batch;
use crate::objective::{self, mi_lower_bound};
use anyhow::bail;
use burn::optim::GradientsParams;
use burn::prelude::*;
use rand::{SeedableRng, rngs::StdRng};
use std::time::{Duration, Instant};

/// Loss terms of one step.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct StepLosses {
    pub loss: f64,
    pub local_mi: f64,
    pub global_mi: f64,
    pub prior: f64,
    pub disc: f64,
    /// The distillation bound (0 without a teacher; absent from older metrics).
    #[serde(default)]
    pub distill_mi: f64,
}

/// A phase of the step, as `trainer bench --breakdown` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    HostCopy,
    EncoderForward,
    LocalCriticForward,
    Estimator,
    GlobalCritic,
    Distill,
    PriorForward,
    LossSync,
    BackwardDim,
    AdamModel,
    BackwardDisc,
    AdamDisc,
}

impl Phase {
    /// The row label of the breakdown table.
    pub fn label(self) -> &'static str {
        match self {
            Self::HostCopy => "host → tensor copy",
            Self::EncoderForward => "encoder forward",
            Self::LocalCriticForward => "local critic forward",
            Self::Estimator => "estimator",
            Self::GlobalCritic => "global critic + estimator",
            Self::Distill => "distillation critic + estimator",
            Self::PriorForward => "prior term + discriminator forward",
            Self::LossSync => "losses → host (one sync)",
            Self::BackwardDim => "backward (DIM loss)",
            Self::AdamModel => "Adam (encoder + critics)",
            Self::BackwardDisc => "backward (discriminator)",
            Self::AdamDisc => "Adam (discriminator)",
        }
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
    pub totals: Vec<(Phase, Duration)>,
}

impl Phases {
    /// Starts the clock of the next phase.
    pub fn start(&mut self) {
        self.last = Some(Instant::now());
    }
    /// Ends phase `name` (begun at the previous mark) and starts the next one.
    fn mark(&mut self, name: Phase) {
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

/// The (local map, Y) pairs a critic scores. One view: each image's Y against its own local
/// features, the paper's DIM. Two views (rows `0..n` and `n..2n` of the batch, the same images):
/// each view's Y against the *other* view's local features, both ways — the positive pair then
/// shares only what the augmentation leaves alone (shape, not the exact colours or position),
/// which is AMDIM's change to DIM. The negatives are the other images' features, as before.
fn scored_pairs(local: &Tensor<4>, y: &Tensor<2>, views: usize) -> Vec<(Tensor<4>, Tensor<2>)> {
    if views < 2 {
        return vec![(local.clone(), y.clone())];
    }
    let n = y.dims()[0] / 2;
    vec![(half(local, 1, n), half(y, 0, n)), (half(local, 0, n), half(y, 1, n))]
}

/// Rows `i·n .. (i+1)·n` of `t`: view `i` of a batch laid out view after view.
fn half<const D: usize>(t: &Tensor<D>, i: usize, n: usize) -> Tensor<D> {
    t.clone().narrow(0, i * n, n)
}

/// The mean of one-element tensors (one bound per scored pair).
fn mean(terms: Vec<Tensor<1>>) -> Tensor<1> {
    let k = terms.len() as f64;
    Tensor::cat(terms, 0).sum() / k
}

/// Where a step stands in its run: its index (0-based; it seeds the step's randomness) and the
/// steps to an epoch (the learning-rate schedule is in epochs).
#[derive(Debug, Clone, Copy)]
pub struct StepAt {
    pub step: usize,
    pub steps_per_epoch: usize,
}

/// One optimiser step on `batch` (with the teacher's rows of its images when the run distils).
pub fn step(
    config: &TrainConfig,
    state: TrainState,
    batch: &Batch,
    teacher: Option<&Teacher>,
    at: StepAt,
    device: &Device,
) -> anyhow::Result<(TrainState, StepLosses)> {
    step_timed(config, state, batch, teacher, at, device, &mut Phases::default())
}

/// [`step`], recording the time of each phase in `phases` (nothing when it was not started).
pub fn step_timed(
    config: &TrainConfig,
    state: TrainState,
    batch: &Batch,
    teacher: Option<&Teacher>,
    at: StepAt,
    device: &Device,
    phases: &mut Phases,
) -> anyhow::Result<(TrainState, StepLosses)> {
    let StepAt { step, steps_per_epoch } = at;
    let TrainState { model, mut optim, disc, mut disc_optim } = state;
    let x = Tensor::<4>::from_data(TensorData::new(batch.images.clone(), [batch.len(), 3, 32, 32]), device);
    phases.mark(Phase::HostCopy);
    let out = model.encoder.forward(x);
    phases.mark(Phase::EncoderForward);
    let zero = || Tensor::<1>::zeros([1], device);
    let (mut local_mi, mut global_mi, mut prior_term, mut distill_mi) = (zero(), zero(), zero(), zero());
    let mut loss = zero();
    let pairs = scored_pairs(&out.local, &out.y, batch.views);
    if let Some(critic) = &model.local {
        let scores: Vec<_> = pairs.iter().map(|(l, y)| critic.scores(l.clone(), y.clone())).collect();
        phases.mark(Phase::LocalCriticForward);
        local_mi = mean(scores.iter().map(|s| mi_lower_bound(s, config.estimator)).collect());
        loss = loss - local_mi.clone() * config.beta;
        phases.mark(Phase::Estimator);
    }
    if let Some(critic) = &model.global {
        global_mi = mean(pairs.iter().map(|(l, y)| mi_lower_bound(&critic.scores(l.clone(), y.clone()), config.estimator)).collect());
        loss = loss - global_mi.clone() * config.alpha;
        phases.mark(Phase::GlobalCritic);
    }
    if let Some(critic) = &model.distill {
        let Some(teacher) = teacher else { bail!("the model distils a teacher, but the step was given none") };
        let (b, w) = (batch.len(), teacher.width());
        let t = Tensor::<2>::from_data(TensorData::new(teacher.views(&batch.sources, &batch.flipped), [b, w]), device);
        let student = config.distill.as_ref().map_or(StudentLayer::Y, |d| d.student_layer).rows(&out);
        distill_mi = if config.distill.as_ref().is_some_and(|d| d.objective == DistillObjective::Regress) {
            critic.regression(t, student)
        } else {
            let k = config.distill.as_ref().map_or(0, |d| d.negatives);
            // Its own stream, so the prior's draws below are the same with or without distillation.
            let mut rng = StdRng::seed_from_u64(config.seed ^ (step as u64).wrapping_mul(0x94D0_49BB_1331_11EB) ^ 0xD157_111A);
            let extra = (k > 0).then(|| {
                let (rows, mask) = teacher.negatives(k, &batch.sources, &mut rng);
                let rows = Tensor::<2>::from_data(TensorData::new(rows, [k, w]), device);
                (rows, mask.map(|m| Tensor::<2>::from_data(TensorData::new(m, [b, k]), device)))
            });
            let scores = critic.scores(t.clone(), student, extra.clone());
            match config.distill.as_ref().and_then(|d| d.teacher_temperature) {
                Some(tau) => objective::soft_target_bound(&scores, &crate::model::critic::teacher_scores(t, extra, tau)),
                None => mi_lower_bound(&scores, config.estimator),
            }
        };
        loss = loss - distill_mi.clone() * config.distill_weight();
        phases.mark(Phase::Distill);
    }
    let mut rng = StdRng::seed_from_u64(config.seed ^ (step as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let disc_loss = disc.as_ref().map(|d| {
        prior_term = objective::prior_encoder_loss(d, out.y.clone());
        loss = loss.clone() + prior_term.clone() * config.gamma;
        let real = objective::prior_samples(config.prior, batch.len(), out.y.dims()[1], &mut rng, device);
        objective::prior_discriminator_loss(d, real, out.y.clone(), config.gradient_penalty, &mut rng)
    });
    phases.mark(Phase::PriorForward);
    let disc_value = disc_loss.clone().unwrap_or_else(zero);
    let v = losses_to_host(vec![loss.clone().detach(), local_mi.detach(), global_mi.detach(), prior_term.detach(), disc_value.detach(), distill_mi.detach()]);
    let l = StepLosses { loss: v[0], local_mi: v[1], global_mi: v[2], prior: v[3], disc: v[4], distill_mi: v[5] };
    phases.mark(Phase::LossSync);
    if !l.loss.is_finite() || !l.disc.is_finite() {
        bail!(
            "the loss became {} at step {step} (terms: {l:?}); the model was not updated. Lower --learning-rate or the critic width, or check the data",
            l.loss
        );
    }
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    phases.mark(Phase::BackwardDim);
    let lr = config.learning_rate_at(step, steps_per_epoch);
    let model = optim.step(lr, model, grads);
    phases.mark(Phase::AdamModel);
    let disc = match (disc, disc_loss) {
        (Some(d), Some(dl)) => {
            let grads = GradientsParams::from_grads(dl.backward(), &d);
            phases.mark(Phase::BackwardDisc);
            let d = disc_optim.step(lr, d, grads);
            phases.mark(Phase::AdamDisc);
            Some(d)
        }
        (d, _) => d,
    };
    Ok((TrainState { model, optim, disc, disc_optim }, l))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows 0..2 are the first views of images a, b; rows 2..4 their second views. Each pair
    /// scores one view's Y against the other view's local features, the images in order.
    #[test]
    fn two_views_pair_each_y_with_the_other_views_local_features() {
        let d = Device::flex();
        // Row r of both tensors holds the value r, so a pair's rows name where they came from.
        let local = Tensor::<1>::from_floats([0.0, 1.0, 2.0, 3.0], &d).reshape([4, 1, 1, 1]);
        let y = Tensor::<1>::from_floats([0.0, 1.0, 2.0, 3.0], &d).reshape([4, 1]);
        let rows = |t: Tensor<2>| t.into_data().iter::<f32>().collect::<Vec<_>>();
        let pairs = scored_pairs(&local, &y, 2);
        let seen: Vec<_> = pairs.into_iter().map(|(l, y)| (rows(l.reshape([-1, 1])), rows(y))).collect();
        assert_eq!(seen, [(vec![2.0, 3.0], vec![0.0, 1.0]), (vec![0.0, 1.0], vec![2.0, 3.0])]);
        let one = scored_pairs(&local, &y, 1);
        assert_eq!(one.len(), 1);
        assert_eq!(rows(one[0].1.clone()), [0.0, 1.0, 2.0, 3.0], "one view: the paper's own-image pairs");
        let m = mean(vec![Tensor::from_floats([1.0], &d), Tensor::from_floats([4.0], &d)]);
        assert_eq!(m.into_scalar::<f32>(), 2.5);
    }
}
