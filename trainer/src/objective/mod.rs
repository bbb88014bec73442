//! DIM objectives: the three mutual-information estimators and the prior-matching term.
//!
//! Estimators return the lower bound `Î` (to be maximised; the loss is `−Î`) from [`Scores`]:
//! - JSD: `Î = E_P[−sp(−T)] − E_N[sp(T)]`
//! - DV (MINE): `Î = E_P[T] − log E_N[e^T]`
//! - InfoNCE: `Î = E_P[T − log(e^T + Σ_{n ∈ N(j)} e^{T_n})]`, negatives of the same row `j`.

use crate::model::critic::{PriorDiscriminator, Scores};
use burn::prelude::*;
use burn::tensor::activation::{sigmoid, softplus};
use rand::{Rng, rngs::StdRng};
use rand_distr::{Distribution, StandardNormal};

fn normal(rng: &mut StdRng) -> f32 {
    StandardNormal.sample(rng)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Estimator {
    Jsd,
    #[serde(rename = "infonce")]
    InfoNce,
    Dv,
}

/// Large enough that `exp(x − max)` of a masked entry is exactly 0, small enough to stay finite.
const MASKED: f32 = -1.0e30;

fn sp(x: Tensor<2>) -> Tensor<2> {
    softplus(x, 1.0)
}

/// Negatives with masked-out entries replaced by [`MASKED`] (and no gradient through them).
fn masked_neg(s: &Scores) -> Tensor<2> {
    match &s.neg_mask {
        Some(m) => s.neg.clone() * m.clone() + (m.clone() - 1.0) * (-MASKED),
        None => s.neg.clone(),
    }
}

/// Mean of `x` over the real negatives.
fn neg_mean(x: Tensor<2>, s: &Scores) -> Tensor<1> {
    match &s.neg_mask {
        Some(m) => (x * m.clone()).sum() / m.clone().sum(),
        None => x.mean(),
    }
}

/// `log Σ exp` over dimension 1, stable for masked rows.
fn log_sum_exp_rows(x: Tensor<2>) -> Tensor<2> {
    let m = x.clone().max_dim(1).detach();
    (x - m.clone()).exp().sum_dim(1).log() + m
}

/// The estimator's lower bound `Î` on the mutual information the scores express.
pub fn mi_lower_bound(s: &Scores, estimator: Estimator) -> Tensor<1> {
    match estimator {
        Estimator::Jsd => sp(s.pos.clone().neg()).neg().mean() - neg_mean(sp(s.neg.clone()), s),
        Estimator::Dv => {
            let neg = masked_neg(s);
            let [b, q] = neg.dims();
            let count = match &s.neg_mask {
                Some(m) => m.clone().sum(),
                None => Tensor::<1>::from_floats([(b * q) as f32], &neg.device()),
            };
            let lse = log_sum_exp_rows(neg.reshape([1, b * q])).reshape([1]);
            s.pos.clone().mean() - (lse - count.log())
        }
        Estimator::InfoNce => {
            let lse_neg = log_sum_exp_rows(masked_neg(s)); // [B, 1]
            let [b, p] = s.pos.dims();
            let both = Tensor::stack::<3>(vec![s.pos.clone(), lse_neg.repeat_dim(1, p)], 2).reshape([b * p, 2]);
            (s.pos.clone().reshape([b * p, 1]) - log_sum_exp_rows(both)).mean()
        }
    }
}

/// InfoNCE with soft targets (relational distillation, as SEED, Fang et al. 2021): each row's
/// candidates (its positive, then its negatives) are weighted by the softmax of `target`'s
/// scores over the same candidates instead of one-hot on the positive:
///
/// `Î = E_j[ Σ_c p_T(c | j) · log p_S(c | j) ]`,  `p_S(· | j) = softmax(s_j)`, `p_T(· | j) = softmax(target_j)`
///
/// — the InfoNCE bound above when `p_T` is one-hot on the positive (a cold target), and the
/// student's log-likelihood of the teacher's view of which images are alike otherwise. Masked
/// candidates weigh 0 on both sides. `target` is a constant (no gradient).
pub fn soft_target_bound(s: &Scores, target: &Scores) -> Tensor<1> {
    let logits = |s: &Scores| Tensor::cat(vec![s.pos.clone(), masked_neg(s)], 1);
    let student = logits(s);
    let log_p = student.clone() - log_sum_exp_rows(student);
    let t = logits(target).detach();
    let p_t = (t.clone() - log_sum_exp_rows(t)).exp();
    let [b, _] = log_p.dims();
    (p_t * log_p).sum() / b as f64
}

/// Distribution the prior term pushes `σ(Y)` toward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Prior {
    /// Uniform on `[0, 1]^d` (the paper's default).
    Uniform,
    /// Normal with mean 0.5, std 0.25 (clipped to `[0, 1]`, the range of `σ(Y)`).
    Gaussian,
}

/// Draws `[n, d]` prior samples on the host (seeded, so resumed runs draw the same ones).
pub fn prior_samples(prior: Prior, n: usize, d: usize, rng: &mut StdRng, device: &Device) -> Tensor<2> {
    let v: Vec<f32> = (0..n * d)
        .map(|_| match prior {
            Prior::Uniform => rng.random::<f32>(),
            Prior::Gaussian => (0.5 + 0.25 * normal(rng)).clamp(0.0, 1.0),
        })
        .collect();
    Tensor::<1>::from_floats(v.as_slice(), device).reshape([n, d])
}

/// Encoder side of prior matching (non-saturating): `E[sp(−D(σ(Y)))]`, i.e. `−log D`.
pub fn prior_encoder_loss(disc: &PriorDiscriminator, y: Tensor<2>) -> Tensor<1> {
    sp(disc.forward(sigmoid(y)).neg()).mean()
}

/// Discriminator side: tell prior samples (real) from `σ(Y)` (fake, detached), plus a gradient
/// penalty `w · E‖∇D‖²`.
///
/// burn's autodiff has no double backward, so the penalty uses the central difference along a
/// random Gaussian direction `u`: `E_u[((D(x+εu) − D(x−εu)) / 2ε)²] = ‖∇D(x)‖²` for smooth `D`,
/// an unbiased first-order estimate that needs only ordinary gradients.
pub fn prior_discriminator_loss(disc: &PriorDiscriminator, real: Tensor<2>, y: Tensor<2>, gp_weight: f64, rng: &mut StdRng) -> Tensor<1> {
    let fake = sigmoid(y.detach());
    let loss = sp(disc.forward(real.clone()).neg()).mean() + sp(disc.forward(fake.clone())).mean();
    if gp_weight == 0.0 {
        return loss;
    }
    let x = Tensor::cat(vec![real, fake], 0);
    let [n, d] = x.dims();
    let eps = 1e-2;
    let u: Vec<f32> = (0..n * d).map(|_| normal(rng)).collect();
    let u = Tensor::<1>::from_floats(u.as_slice(), &x.device()).reshape([n, d]) * eps;
    let slope = (disc.forward(x.clone() + u.clone()) - disc.forward(x - u)) / (2.0 * eps);
    loss + slope.powi_scalar(2).mean() * gp_weight
}

#[cfg(test)]
mod tests;
