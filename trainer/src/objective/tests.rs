use super::*;
use crate::model::critic::{PriorDiscriminator, Scores};
use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use rand::SeedableRng;

fn t2(v: &[f32], shape: [usize; 2], d: &Device) -> Tensor<2> {
    Tensor::<1>::from_floats(v, d).reshape(shape)
}

fn val(t: Tensor<1>) -> f64 {
    t.into_scalar::<f32>() as f64
}

fn spf(x: f64) -> f64 {
    (1.0 + x.exp()).ln()
}

/// pos = [[2], [0]], neg = [[1, 1000*], [-1, 0]] with (0, 1) masked out.
fn masked(d: &Device) -> Scores {
    Scores { pos: t2(&[2.0, 0.0], [2, 1], d), neg: t2(&[1.0, 1000.0, -1.0, 0.0], [2, 2], d), neg_mask: Some(t2(&[1.0, 0.0, 1.0, 1.0], [2, 2], d)) }
}

#[test]
fn jsd_matches_hand_computation() {
    let d = Device::flex();
    let want = (-spf(-2.0) - spf(0.0)) / 2.0 - (spf(1.0) + spf(-1.0) + spf(0.0)) / 3.0;
    let got = val(mi_lower_bound(&masked(&d), Estimator::Jsd));
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
}

#[test]
fn dv_matches_hand_computation() {
    let d = Device::flex();
    let want = 1.0 - ((1f64.exp() + (-1f64).exp() + 1.0) / 3.0).ln();
    let got = val(mi_lower_bound(&masked(&d), Estimator::Dv));
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    // Unmasked: all four negatives count.
    let s = Scores { neg_mask: None, neg: t2(&[1.0, 2.0, -1.0, 0.0], [2, 2], &d), ..masked(&d) };
    let want = 1.0 - ((1f64.exp() + 2f64.exp() + (-1f64).exp() + 1.0) / 4.0).ln();
    assert!((val(mi_lower_bound(&s, Estimator::Dv)) - want).abs() < 1e-5);
}

#[test]
fn infonce_matches_hand_computation() {
    let d = Device::flex();
    let row0 = 2.0 - (2f64.exp() + 1f64.exp()).ln();
    let row1 = 0.0 - (1.0 + (-1f64).exp() + 1.0).ln();
    let got = val(mi_lower_bound(&masked(&d), Estimator::InfoNce));
    assert!((got - (row0 + row1) / 2.0).abs() < 1e-5, "{got}");
    // InfoNCE is bounded above by log(1 + #negatives) per row: here row 1 has 2, row 0 has 1.
    assert!(got <= ((2f64).ln() + 3f64.ln()) / 2.0);
}

#[test]
fn soft_targets_match_hand_computation_and_a_cold_target_is_infonce() {
    let d = Device::flex();
    // A target one-hot on the positive (its score far above the rest): InfoNCE exactly.
    let cold = Scores { pos: t2(&[100.0, 100.0], [2, 1], &d), neg: t2(&[0.0, 0.0, 0.0, 0.0], [2, 2], &d), ..masked(&d) };
    let infonce = val(mi_lower_bound(&masked(&d), Estimator::InfoNce));
    assert!((val(soft_target_bound(&masked(&d), &cold)) - infonce).abs() < 1e-5);
    // A flat target: each row's real candidates weigh alike. Row 0 has {pos 2, neg 1} (the
    // other masked), row 1 {pos 0, neg −1, neg 0}; log p_S = score − log Σ e^score.
    let flat = Scores { pos: t2(&[0.0, 0.0], [2, 1], &d), neg: t2(&[0.0, 0.0, 0.0, 0.0], [2, 2], &d), ..masked(&d) };
    let (z0, z1) = ((2f64.exp() + 1f64.exp()).ln(), (1.0 + (-1f64).exp() + 1.0).ln());
    let row0 = ((2.0 - z0) + (1.0 - z0)) / 2.0;
    let row1 = ((0.0 - z1) + (-1.0 - z1) + (0.0 - z1)) / 3.0;
    let got = val(soft_target_bound(&masked(&d), &flat));
    assert!((got - (row0 + row1) / 2.0).abs() < 1e-5, "{got} vs {}", (row0 + row1) / 2.0);
    // The student matching the target exactly maximises it: no candidate weighting beats
    // its own (Gibbs' inequality), so the flat student scores above the masked one here.
    assert!(val(soft_target_bound(&flat, &flat)) > got);
}

#[test]
fn masked_negatives_get_no_gradient_and_stay_finite() {
    let d = Device::flex().autodiff();
    for est in [Estimator::Jsd, Estimator::Dv, Estimator::InfoNce] {
        let neg = t2(&[1.0, 1000.0, -1.0, 0.0], [2, 2], &d).require_grad();
        let s = Scores { neg: neg.clone(), ..masked(&d) };
        let i = mi_lower_bound(&s, est);
        assert!(val(i.clone()).is_finite());
        let grads = i.backward();
        let g: Vec<f32> = neg.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(g[1], 0.0, "{est:?}: masked entry got gradient {g:?}");
        assert!(g[0] < 0.0 && g[2] < 0.0, "{est:?}: raising a negative lowers the bound: {g:?}");
    }
}

#[test]
fn perfect_critic_beats_random_critic() {
    let d = Device::flex();
    let good = Scores { pos: t2(&[5.0; 4], [2, 2], &d), neg: t2(&[-5.0; 4], [2, 2], &d), neg_mask: None };
    let flat = Scores { pos: t2(&[0.0; 4], [2, 2], &d), neg: t2(&[0.0; 4], [2, 2], &d), neg_mask: None };
    for est in [Estimator::Jsd, Estimator::Dv, Estimator::InfoNce] {
        assert!(val(mi_lower_bound(&good, est)) > val(mi_lower_bound(&flat, est)) + 1.0, "{est:?}");
    }
    // Uninformative critic: DV gives exactly 0, JSD gives -2 log 2.
    assert!(val(mi_lower_bound(&flat, Estimator::Dv)).abs() < 1e-6);
    assert!((val(mi_lower_bound(&flat, Estimator::Jsd)) + 2.0 * 2f64.ln()).abs() < 1e-5);
}

#[test]
fn prior_samples_follow_the_prior() {
    let d = Device::flex();
    let mut rng = StdRng::seed_from_u64(1);
    let u: Vec<f32> = prior_samples(Prior::Uniform, 1000, 8, &mut rng, &d).into_data().try_to_vec::<f32>().unwrap();
    let mean = u.iter().sum::<f32>() / u.len() as f32;
    assert!(u.iter().all(|v| (0.0..=1.0).contains(v)) && (mean - 0.5).abs() < 0.02, "{mean}");
    let g: Vec<f32> = prior_samples(Prior::Gaussian, 1000, 8, &mut rng, &d).into_data().try_to_vec::<f32>().unwrap();
    let var = g.iter().map(|v| (v - 0.5).powi(2)).sum::<f32>() / g.len() as f32;
    assert!((var.sqrt() - 0.25).abs() < 0.03, "std {}", var.sqrt());
}

/// After the discriminator learns that σ(Y) ≈ 0 is fake, the encoder's prior loss pushes Y up,
/// toward the uniform prior's bulk — and the penalty keeps the discriminator's slope bounded.
#[test]
fn prior_term_moves_encoder_toward_prior() {
    let d = Device::flex().autodiff();
    d.seed(0);
    let mut rng = StdRng::seed_from_u64(0);
    let mut disc = PriorDiscriminator::new(4, &d);
    let mut optim = AdamConfig::new().init();
    // Encoder outputs spread around −3 (σ ≈ 0.05): far from the bulk of the uniform prior.
    let noise: Vec<f32> = (0..256).map(|_| -3.0 + normal(&mut rng)).collect();
    let y = Tensor::<1>::from_floats(noise.as_slice(), &d).reshape([64, 4]);
    let mut first = None;
    for _ in 0..150 {
        let real = prior_samples(Prior::Uniform, 64, 4, &mut rng, &d);
        let loss = prior_discriminator_loss(&disc, real, y.clone(), 0.1, &mut rng);
        first.get_or_insert(val(loss.clone()));
        let grads = GradientsParams::from_grads(loss.backward(), &disc);
        disc = optim.step(5e-3, disc, grads);
    }
    let real = prior_samples(Prior::Uniform, 64, 4, &mut rng, &d);
    let last = val(prior_discriminator_loss(&disc, real, y.clone(), 0.1, &mut rng));
    assert!(last < first.unwrap() - 0.1, "discriminator learns: {first:?} -> {last}");
    let y = y.require_grad();
    let loss = prior_encoder_loss(&disc, y.clone());
    let g: Vec<f32> = y.grad(&loss.backward()).unwrap().into_data().try_to_vec::<f32>().unwrap();
    let mean = g.iter().sum::<f32>() / g.len() as f32;
    assert!(mean < 0.0, "gradient descent must raise Y toward the prior: mean grad {mean}");
    let _ = disc.num_params();
}
