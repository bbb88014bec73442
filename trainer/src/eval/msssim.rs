//! MS-SSIM (Wang, Simoncelli & Bovik 2003), the score of the paper's reconstruction probe
//! (Table 3), for 32×32 images.
//!
//! SSIM compares two images through local (Gaussian-weighted) means μ, variances σ² and
//! covariance σ_xy:
//!
//! ```text
//! l  = (2 μx μy + C1) / (μx² + μy² + C1)        luminance
//! cs = (2 σxy + C2) / (σx² + σy² + C2)          contrast × structure
//! SSIM = mean(l · cs),  C1 = (0.01 L)², C2 = (0.03 L)², L = 1 (pixels in [0, 1])
//! MS-SSIM = Π_{j<M} mean(cs_j)^{w_j} · SSIM_M^{w_M}   (scale j+1: 2×2 average of scale j)
//! ```
//!
//! The usual setting (an 11-wide window over 5 scales) needs images of at least 161 pixels a
//! side. On 32×32 images this uses a 7-wide window (σ 1.5, "valid" filtering: no padding) over
//! 3 scales (32, 16, 8; the coarsest still leaves a 2×2 map), with the first three of the usual
//! weights (0.0448, 0.2856, 0.3001) renormalised to sum to 1, so a value reads like a full
//! MS-SSIM (1 = identical). Negative means are clipped to 0 before the powers, as
//! pytorch_msssim does. `trainer/tests/reference/msssim.py` computes the same with
//! pytorch_msssim's SSIM; the tests compare against its values.

const WINDOW: usize = 7;
const SIGMA: f64 = 1.5;
const WEIGHTS: [f64; 3] = [0.0448, 0.2856, 0.3001];
const C1: f64 = 0.01 * 0.01;
const C2: f64 = 0.03 * 0.03;

/// The normalised 1-D Gaussian window.
fn window() -> [f64; WINDOW] {
    let mut g = [0f64; WINDOW];
    let half = (WINDOW / 2) as f64;
    for (i, v) in g.iter_mut().enumerate() {
        *v = (-(i as f64 - half).powi(2) / (2.0 * SIGMA * SIGMA)).exp();
    }
    let sum: f64 = g.iter().sum();
    g.map(|v| v / sum)
}

/// Separable Gaussian filtering of a `side × side` plane without padding: `(side − 6)²` values.
fn filter(plane: &[f64], side: usize) -> Vec<f64> {
    let (g, out) = (window(), side + 1 - WINDOW);
    let mut rows = vec![0f64; side * out];
    for y in 0..side {
        for x in 0..out {
            rows[y * out + x] = (0..WINDOW).map(|k| g[k] * plane[y * side + x + k]).sum();
        }
    }
    let mut both = vec![0f64; out * out];
    for y in 0..out {
        for x in 0..out {
            both[y * out + x] = (0..WINDOW).map(|k| g[k] * rows[(y + k) * out + x]).sum();
        }
    }
    both
}

/// Mean SSIM and mean cs of two `side × side` planes.
fn ssim_cs(a: &[f64], b: &[f64], side: usize) -> (f64, f64) {
    let prod = |p: &[f64], q: &[f64]| p.iter().zip(q).map(|(x, y)| x * y).collect::<Vec<f64>>();
    let (ma, mb) = (filter(a, side), filter(b, side));
    let (saa, sbb, sab) = (filter(&prod(a, a), side), filter(&prod(b, b), side), filter(&prod(a, b), side));
    let (mut ssim, mut cs) = (0.0, 0.0);
    for i in 0..ma.len() {
        let (va, vb, cov) = (saa[i] - ma[i] * ma[i], sbb[i] - mb[i] * mb[i], sab[i] - ma[i] * mb[i]);
        let c = (2.0 * cov + C2) / (va + vb + C2);
        ssim += (2.0 * ma[i] * mb[i] + C1) / (ma[i] * ma[i] + mb[i] * mb[i] + C1) * c;
        cs += c;
    }
    let n = ma.len() as f64;
    (ssim / n, cs / n)
}

/// 2×2 average pooling.
fn halve(plane: &[f64], side: usize) -> Vec<f64> {
    let h = side / 2;
    let mut out = vec![0f64; h * h];
    for y in 0..h {
        for x in 0..h {
            let at = |dy: usize, dx: usize| plane[(2 * y + dy) * side + 2 * x + dx];
            out[y * h + x] = (at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1)) / 4.0;
        }
    }
    out
}

/// Single-scale SSIM of two `[3, 32, 32]` images with pixels in `[0, 1]`, averaged over channels.
pub fn ssim(a: &[f32], b: &[f32]) -> f64 {
    per_channel(a, b, |x, y| ssim_cs(x, y, 32).0)
}

/// MS-SSIM of two `[3, 32, 32]` images with pixels in `[0, 1]`, averaged over channels.
pub fn ms_ssim(a: &[f32], b: &[f32]) -> f64 {
    let total: f64 = WEIGHTS.iter().sum();
    per_channel(a, b, |x, y| {
        let (mut x, mut y, mut side, mut score) = (x.to_vec(), y.to_vec(), 32, 1.0);
        for (j, w) in WEIGHTS.iter().enumerate() {
            let (s, cs) = ssim_cs(&x, &y, side);
            let last = j + 1 == WEIGHTS.len();
            score *= (if last { s } else { cs }).max(0.0).powf(w / total);
            (x, y, side) = (halve(&x, side), halve(&y, side), side / 2);
        }
        score
    })
}

fn per_channel(a: &[f32], b: &[f32], f: impl Fn(&[f64], &[f64]) -> f64) -> f64 {
    const PLANE: usize = 32 * 32;
    assert!(a.len() == 3 * PLANE && b.len() == 3 * PLANE, "MS-SSIM takes [3, 32, 32] images");
    let planes = |v: &[f32]| v.chunks(PLANE).map(|p| p.iter().map(|&x| x as f64).collect::<Vec<f64>>()).collect::<Vec<_>>();
    let (pa, pb) = (planes(a), planes(b));
    pa.iter().zip(&pb).map(|(x, y)| f(x, y)).sum::<f64>() / 3.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pairs `trainer/tests/reference/msssim.py` builds, with the same integer formulas.
    fn pair(k: usize) -> (Vec<f32>, Vec<f32>) {
        let n = 3 * 32 * 32;
        if k == 0 {
            let x: Vec<f64> = (0..n).map(|i| ((i * 7919) % 256) as f64 / 255.0).collect();
            let y = (0..n).map(|i| (x[i] + (((i * 104729) % 97) as f64 / 97.0 - 0.5) * 0.4).clamp(0.0, 1.0)).collect::<Vec<f64>>();
            (x.iter().map(|&v| v as f32).collect(), y.iter().map(|&v| v as f32).collect())
        } else {
            let x: Vec<f64> = (0..n).map(|i| ((i % 32) + (i / 32 % 32)) as f64 / 62.0).collect();
            let y: Vec<f64> = x.iter().enumerate().map(|(i, v)| (0.8 * v + 0.1 + 0.05 * ((i / 3) % 2) as f64).min(1.0)).collect();
            (x.iter().map(|&v| v as f32).collect(), y.iter().map(|&v| v as f32).collect())
        }
    }

    /// pytorch_msssim's SSIM in float64 (the reference script, 10 printed digits) on the same
    /// pairs, rounded to f32 as here.
    #[test]
    fn matches_pytorch_msssim() {
        for (k, want_ssim, want_ms) in [(0, 0.9090885033, 0.9819795953), (1, 0.7850970245, 0.9563204130)] {
            let (x, y) = pair(k);
            assert!((ssim(&x, &y) - want_ssim).abs() < 1e-9, "pair {k}: SSIM {}", ssim(&x, &y));
            assert!((ms_ssim(&x, &y) - want_ms).abs() < 1e-9, "pair {k}: MS-SSIM {}", ms_ssim(&x, &y));
        }
    }

    /// Identical images score 1; flat images of values a and b have σ = 0 everywhere, so cs = 1
    /// at every scale and only the last scale's luminance term remains:
    /// ((2ab + C1) / (a² + b² + C1))^{w₃ / Σw}.
    #[test]
    fn closed_forms() {
        let (x, _) = pair(0);
        assert!((ms_ssim(&x, &x) - 1.0).abs() < 1e-12 && (ssim(&x, &x) - 1.0).abs() < 1e-12);
        let (a, b) = (0.25f32, 0.75f32);
        let l = (2.0 * 0.25 * 0.75 + C1) / (0.0625 + 0.5625 + C1);
        let want = l.powf(0.3001 / (0.0448 + 0.2856 + 0.3001));
        let got = ms_ssim(&[a; 3072], &[b; 3072]);
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
        assert!((ssim(&[a; 3072], &[b; 3072]) - l).abs() < 1e-9);
    }
}
