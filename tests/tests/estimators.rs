//! The evaluation's estimators on problems with known answers.

use dim_trainer::eval::estimators::{EstimatorConfig, Kind, concat_rows, correlated_gaussians, estimate};
use dim_trainer::probe::{ProbeConfig, ProbeKind, Rows, train_probe};

/// MINE on d = 2 correlated Gaussian pairs, ρ = 0.8: I(X;Y) = −d/2·ln(1−ρ²) = ln(1/0.36) = 1.0217 nats.
/// The DV bound is a lower bound estimated with a learned critic: accept [I − 0.15, I + 0.05].
#[test]
fn mine_recovers_gaussian_mutual_information() {
    let (d, rho) = (2, 0.8f32);
    let truth = -(d as f64) / 2.0 * (1.0 - (rho as f64).powi(2)).ln();
    let (x, y) = correlated_gaussians(20_000, d, rho, 1);
    let (xt, yt) = correlated_gaussians(5_000, d, rho, 2);
    let cfg = EstimatorConfig::new(vec![64, 64]).with_steps(1500).with_learning_rate(1e-3);
    let est = estimate(Kind::Mine { y_dim: d }, &cfg, &concat_rows(&x, d, &y, d), &concat_rows(&xt, d, &yt, d), 2 * d).unwrap();
    eprintln!("MINE {} vs closed form {truth}", est.value);
    assert!((truth - 0.15..truth + 0.05).contains(&est.value), "MINE {} vs closed form {truth}", est.value);
    // Independent pairs: zero information, and the bound must not invent any.
    let (x0, _) = correlated_gaussians(20_000, d, 0.0, 3);
    let (_, y0) = correlated_gaussians(20_000, d, 0.0, 4);
    let (xt0, yt0) = (correlated_gaussians(5_000, d, 0.0, 5).0, correlated_gaussians(5_000, d, 0.0, 6).1);
    let zero = estimate(Kind::Mine { y_dim: d }, &cfg, &concat_rows(&x0, d, &y0, d), &concat_rows(&xt0, d, &yt0, d), 2 * d).unwrap();
    assert!(zero.value.abs() < 0.05, "MINE on independent pairs: {}", zero.value);
}

/// NDM is the total correlation of Y's factors: ≈ 0 for independent ones; for Y = (x, ρx + …)
/// with ρ = 0.9 it is I(y1; y2) = −½·ln(1−0.81) = 0.830 nats.
#[test]
fn ndm_separates_independent_from_dependent_factors() {
    let cfg = EstimatorConfig::ndm().with_steps(1500).with_learning_rate(1e-3);
    let interleave = |a: &[f32], b: &[f32]| a.iter().zip(b).flat_map(|(p, q)| [*p, *q]).collect::<Vec<f32>>();
    let (a, b) = correlated_gaussians(20_000, 1, 0.0, 7);
    let (at, bt) = correlated_gaussians(5_000, 1, 0.0, 8);
    let independent = estimate(Kind::Ndm, &cfg, &interleave(&a, &b), &interleave(&at, &bt), 2).unwrap().value;
    let (a, b) = correlated_gaussians(20_000, 1, 0.9, 9);
    let (at, bt) = correlated_gaussians(5_000, 1, 0.9, 10);
    let dependent = estimate(Kind::Ndm, &cfg, &interleave(&a, &b), &interleave(&at, &bt), 2).unwrap().value;
    let truth = -0.5 * (1.0f64 - 0.81).ln();
    eprintln!("NDM independent {independent}, dependent {dependent} vs {truth}");
    assert!(independent.abs() < 0.05, "NDM of independent factors: {independent}");
    assert!((truth - 0.15..truth + 0.05).contains(&dependent), "NDM {dependent} vs total correlation {truth}");
}

/// Probes on linearly separable classes (two Gaussian blobs) reach ≥ 95 %, and a probe on noise
/// stays at chance, within 5 points.
#[test]
fn probes_learn_separable_classes_and_not_noise() {
    let (n, d) = (2_000, 8);
    let (noise, _) = correlated_gaussians(n, d, 0.0, 11);
    let labels: Vec<usize> = (0..n).map(|i| i % 2).collect();
    let shifted: Vec<f32> = noise.iter().enumerate().map(|(i, v)| v + if labels[i / d] == 1 { 1.5 } else { -1.5 }).collect();
    let cfg = ProbeConfig::new().with_epochs(5).with_learning_rate(1e-3);
    for kind in [ProbeKind::Linear, ProbeKind::Nonlinear] {
        let split =
            |x: &'static [f32]| (Rows { x: &x[..1500 * d], labels: &labels[..1500], dim: d }, Rows { x: &x[1500 * d..], labels: &labels[1500..], dim: d });
        let sep: &'static [f32] = Box::leak(shifted.clone().into_boxed_slice());
        let (tr, te) = split(sep);
        let acc = train_probe(kind, &cfg, tr, te, 2).unwrap();
        assert!(acc.accuracy >= 0.95 && acc.curve.len() == 5, "{kind:?}: {acc:?}");
        let noise: &'static [f32] = Box::leak(noise.clone().into_boxed_slice());
        let (tr, te) = split(noise);
        let chance = train_probe(kind, &cfg, tr, te, 2).unwrap().accuracy;
        assert!((chance - 0.5).abs() < 0.07, "{kind:?} on noise: {chance}");
    }
}
