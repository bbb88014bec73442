//! `trainer check`: the measures of a deployed encoder against a float reference report.
//!
//! Tolerances:
//! - accuracies (probes, kNN): the deployed mean may fall at most `max_drop` points
//!   (default 1) below the reference mean; a gain never fails. When a probe's own run-to-run
//!   spread is comparable to `max_drop`, the table says so: more seeds or epochs are needed to
//!   resolve such a drop.
//! - MINE and NDM (nats): the deployed mean must lie within `band` of the reference mean, with
//!   `band = max(4·σ·√(1/n_ref + 1/n_dep), 2 % of |mean|, 0.01)`: four standard errors of a
//!   difference of two means, σ being the reference's run-to-run standard deviation over its
//!   seeds; the floors stop a near-zero σ (one seed, or a deterministic critic) from demanding
//!   bit-equality.

use super::{Measure, Unit};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Row {
    pub name: String,
    pub unit: Unit,
    pub reference: f64,
    pub reference_std: f64,
    pub deployed: f64,
    pub deployed_std: f64,
    pub tolerance: f64,
    pub ok: bool,
    pub note: String,
}

/// Whether a measure is a floor the deployed file does not change: raw pixels (`*.pixels`) or
/// the untrained twin (`*.random`, built from the training config, not from the file).
fn is_floor(name: &str) -> bool {
    name.ends_with(".pixels") || name.ends_with(".random")
}

/// Compares every measure present in both, floors ([`is_floor`]) aside.
pub fn compare(reference: &[Measure], deployed: &[Measure], max_drop: f64) -> Vec<Row> {
    let mut rows = Vec::new();
    for r in reference.iter().filter(|r| !is_floor(&r.name)) {
        let Some(d) = deployed.iter().find(|d| d.name == r.name) else {
            continue;
        };
        let (tolerance, ok, mut note) = if r.is_accuracy() {
            let drop = r.mean - d.mean;
            (max_drop, drop <= max_drop, if drop > 0.0 { format!("drop {drop:.2} pt") } else { format!("gain {:.2} pt", (-drop).max(0.0)) })
        } else {
            let (nr, nd) = (r.values.len().max(1) as f64, d.values.len().max(1) as f64);
            let band = (4.0 * r.std * (1.0 / nr + 1.0 / nd).sqrt()).max(0.02 * r.mean.abs()).max(0.01);
            let diff = d.mean - r.mean;
            (band, diff.abs() <= band, format!("diff {diff:+.p$}", p = r.unit.decimals() + 1))
        };
        if r.is_accuracy() && r.std > max_drop / 2.0 {
            note += &format!("; spread σ={:.2} pt: too noisy to resolve {max_drop} pt", r.std);
        }
        rows.push(Row {
            name: r.name.clone(),
            unit: r.unit,
            reference: r.mean,
            reference_std: r.std,
            deployed: d.mean,
            deployed_std: d.std,
            tolerance,
            ok,
            note,
        });
    }
    rows
}

/// The comparison as a Markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::from("| measure | reference | deployed | tolerance | result | note |\n|---|---|---|---|---|---|\n");
    for r in rows {
        s += &format!(
            "| {} | {:.p$} ± {:.p$} {u} | {:.p$} ± {:.p$} {u} | {} {:.p$} | {} | {} |\n",
            r.name,
            r.reference,
            r.reference_std,
            r.deployed,
            r.deployed_std,
            if r.unit == Unit::Percent { "drop ≤" } else { "±" },
            r.tolerance,
            if r.ok { "ok" } else { "FAIL" },
            r.note,
            u = r.unit,
            p = r.unit.decimals()
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, unit: Unit, values: &[f64]) -> Measure {
        Measure::new(name.into(), unit, values.iter().map(|&v| (v, vec![])).collect())
    }

    #[test]
    fn accuracy_drops_fail_beyond_max_drop_and_gains_pass() {
        let r = [m("probe.nonlinear.fc", Unit::Percent, &[70.0, 70.2, 69.8]), m("knn.y", Unit::Percent, &[50.0])];
        let rows = compare(&r, &[m("probe.nonlinear.fc", Unit::Percent, &[68.5, 68.9, 68.7]), m("knn.y", Unit::Percent, &[52.0])], 1.0);
        assert!(!rows[0].ok && rows[0].note.contains("drop 1.30"), "{:?}", rows[0]);
        assert!(rows[1].ok && rows[1].note.contains("gain 2.00"));
        assert!(compare(&r, &[m("probe.nonlinear.fc", Unit::Percent, &[69.5])], 1.0)[0].ok);
        // Floors are not the deployed file's: not compared, however far apart.
        let floors = [m("novelty.auroc.random", Unit::Percent, &[60.0]), m("fewshot.5way.5shot.pixels", Unit::Percent, &[40.0])];
        let moved = [m("novelty.auroc.random", Unit::Percent, &[50.0]), m("fewshot.5way.5shot.pixels", Unit::Percent, &[30.0])];
        assert!(compare(&floors, &moved, 1.0).is_empty());
        // A deployed encoder whose few-shot accuracy or novelty detection dropped fails.
        let device = [m("fewshot.5way.5shot", Unit::Percent, &[41.0, 40.9]), m("novelty.auroc", Unit::Percent, &[60.3, 60.2])];
        let worse = [m("fewshot.5way.5shot", Unit::Percent, &[38.0, 38.4]), m("novelty.auroc", Unit::Percent, &[60.0, 60.1])];
        let rows = compare(&device, &worse, 1.0);
        assert_eq!(rows.iter().map(|r| (r.name.as_str(), r.ok)).collect::<Vec<_>>(), [("fewshot.5way.5shot", false), ("novelty.auroc", true)]);
    }

    #[test]
    fn estimator_band_follows_the_reference_spread() {
        // σ = 0.5 over 3 seeds vs 3 seeds: band = 4·0.5·√(2/3) ≈ 1.633.
        let r = [m("mine", Unit::Nats, &[4.5, 5.0, 5.5])];
        let rows = compare(&r, &[m("mine", Unit::Nats, &[6.6])], 1.0);
        assert!((rows[0].tolerance - 4.0 * 0.5 * (1.0f64 / 3.0 + 1.0).sqrt()).abs() < 1e-9);
        assert!(rows[0].ok);
        assert!(!compare(&r, &[m("mine", Unit::Nats, &[3.0, 3.1, 3.2])], 1.0)[0].ok);
        // One seed: the 2 % floor.
        let rows = compare(&[m("ndm", Unit::Nats, &[1.0])], &[m("ndm", Unit::Nats, &[1.03])], 1.0);
        assert!(!rows[0].ok && (rows[0].tolerance - 0.02).abs() < 1e-12);
    }
}
