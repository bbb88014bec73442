//! The engine's operations, one function each, with hand-computed tests: tract's rounding and
//! requantization, the direct convolution, the average pool and the `y` layer.

use super::{blob, dsp};

/// IEEE round-half-to-even, as tract rounds.
pub fn round_even(x: f32) -> f32 {
    libm::rintf(x)
}

/// tract's requantization of an int32 accumulator by `m`, clamped to uint8:
/// `clamp(round_even(|acc|·m)·sign(acc), 0, 255)`.
///
/// Computed without a rounding call: a positive accumulator gives `round_even(acc·m)` (a
/// non-positive one clamps to 0), and for `0 ≤ x < 2²³` adding and subtracting 2²³ in f32 rounds
/// `x` half to even (the sum's last bit is a unit); anything from 255 up clamps first. Cortex-M4
/// has no rounding instruction, so this is a few instructions instead of a libm call per output;
/// the test compares it with the formula above.
pub fn requant(acc: i32, m: f32) -> u8 {
    const TWO_23: f32 = 8_388_608.0;
    if acc <= 0 {
        return 0;
    }
    let x = acc as f32 * m;
    if x >= 255.0 {
        return 255;
    }
    // `as u8` saturates, and a NaN gives 0, as the clamp above does. (`m` is never negative:
    // parsing checks that every scale is positive.)
    ((x + TWO_23) - TWO_23) as u8
}

/// [`requant`] in integers only, for cores without an FPU (`cfg(dim_no_fpu)`, set by `build.rs`
/// for thumbv6m / thumbv7m and other non-`hf` Arm targets): `m` is, exactly, the multiplier
/// `mant` and shift `150 − e` of its f32 bits (`m = mant·2^(e−150)`), so `acc·m` is one 32×64
/// product and one shift, rounded half to even. tract rounds `acc·m` to f32 first (24 bits), so
/// the two can differ, by 1 LSB, only where that f32 product lands across a .5 from the exact
/// one; the test measures how often over a sweep of accumulators and scales.
pub fn requant_int(acc: i32, m: f32) -> u8 {
    let bits = m.to_bits();
    let (e, frac) = ((bits >> 23) & 0xFF, bits & 0x7F_FFFF);
    if e == 0xFF {
        return if frac == 0 && acc > 0 { 255 } else { 0 }; // ∞ (NaN gives 0, as `requant`)
    }
    if acc <= 0 || bits == 0 {
        return 0;
    }
    // Normal numbers carry the implicit 1; subnormals have exponent 1 and none.
    let (mant, e) = if e == 0 { (frac as u64, 1) } else { ((frac | 0x80_0000) as u64, e as i32) };
    let shift = 150 - e;
    let p = acc as u64 * mant; // < 2^31 · 2^24
    if shift <= 0 {
        return 255; // m ≥ 2^23·… : acc·m far above 255
    }
    if shift > 56 {
        return 0; // p < 2^55 ≤ half a unit
    }
    let (q, rem, half) = (p >> shift, p & ((1u64 << shift) - 1), 1u64 << (shift - 1));
    let q = q + (rem > half || (rem == half && q & 1 == 1)) as u64;
    q.min(255) as u8
}

/// The requantization the engine runs: [`requant`], or [`requant_int`] without an FPU.
#[inline(always)]
pub fn requantize(acc: i32, m: f32) -> u8 {
    if cfg!(dim_no_fpu) { requant_int(acc, m) } else { requant(acc, m) }
}

/// Gathers the receptive field of output `(oy, ox)` into `col`, as [`dsp::dot`] reads it: each
/// value is `x − zero` as i16, in weight order (input channel, kernel row, kernel column); taps in
/// the padding are 0 (padding holds the zero point, and `(zero − zero)·w = 0`). `parse`
/// guaranteed every index is in bounds.
pub fn im2col(c: &blob::Conv, x: &[u8], oy: usize, ox: usize, col: &mut [u32]) {
    let (k, s, p, side) = (c.kernel, c.stride, c.pad, c.in_side);
    let zero = c.x_zero as i16;
    // Kernel taps `lo..hi` that land inside the map for output coordinate `o` (the others are
    // padding, stored as 0).
    let taps = |o: usize| {
        let start = o * s;
        let lo = p.saturating_sub(start).min(k);
        (lo, k.min((side + p).saturating_sub(start)).max(lo))
    };
    let ((ky0, ky1), (kx0, kx1)) = (taps(oy), taps(ox));
    let mut out = dsp::ColumnWriter::new(col, c.inp * k * k);
    for plane in x.chunks_exact(side * side).take(c.inp) {
        for ky in 0..k {
            if ky < ky0 || ky >= ky1 {
                (0..k).for_each(|_| out.push(0));
                continue;
            }
            let row = &plane[(oy * s + ky - p) * side..][..side];
            (0..kx0).for_each(|_| out.push(0));
            for &v in &row[ox * s + kx0 - p..ox * s + kx1 - p] {
                out.push(v as i16 - zero);
            }
            (kx1..k).for_each(|_| out.push(0));
        }
    }
}

/// Convolution, CHW uint8 in and out: per output position the receptive field is gathered once
/// ([`im2col`], into `col`: [`dsp::column_words`] of `inp·k·k`), then every output channel is
/// its dot product with that channel's int8 weights ([`dsp::dot2`], two channels at a time: two
/// multiply-accumulates an instruction on Cortex-M4/M7), plus bias, requantized.
pub fn conv2d(c: &blob::Conv, x: &[u8], col: &mut [u32], y: &mut [u8]) {
    let (k, os) = (c.kernel, c.out_side);
    let (n, area) = (c.inp * k * k, os * os);
    let col = &mut col[..dsp::column_words(n)];
    // tract folds `(w_scale·x_scale) / y_scale` with the division turned into a product by the
    // reciprocal; the last bit of `m` decides values next to a .5.
    let inv_y = c.y_scale.recip();
    let m = |o: usize| (c.w_scale.f32(o) * c.x_scale) * inv_y;
    for oy in 0..os {
        for ox in 0..os {
            im2col(c, x, oy, ox, col);
            let at = oy * os + ox;
            let mut pairs = c.weight.chunks_exact(2 * n).take(c.out / 2).enumerate();
            for (h, w) in &mut pairs {
                let o = 2 * h;
                let (a, b) = dsp::dot2(col, &w[..n], &w[n..], c.bias.i32(o), c.bias.i32(o + 1));
                y[o * area + at] = requantize(a, m(o));
                y[(o + 1) * area + at] = requantize(b, m(o + 1));
            }
            if c.out % 2 == 1 {
                let o = c.out - 1;
                let acc = dsp::dot(col, &c.weight[o * n..(o + 1) * n], c.bias.i32(o));
                y[o * area + at] = requantize(acc, m(o));
            }
        }
    }
}

/// `tiny`'s global average pool of `channels` maps of `hw` uint8 values (scale `x_scale`, zero
/// point 0): dequantize, mean in f32, quantize by `y_scale`.
pub fn average_pool(x: &[u8], channels: usize, hw: usize, x_scale: f32, y_scale: f32, y: &mut [u8]) {
    let inv = y_scale.recip();
    for (c, out) in y[..channels].iter_mut().enumerate() {
        *out = pool_channel(x[c * hw..(c + 1) * hw].iter().copied(), hw, x_scale, inv);
    }
}

/// One channel of [`average_pool`] from its `hw` values in position order (`inv` = 1/y_scale):
/// the f32 sum of `q·x_scale` in that order, its mean requantized. The host fast path pools its
/// HWC maps with it (the same values in the same order).
pub fn pool_channel(values: impl Iterator<Item = u8>, hw: usize, x_scale: f32, inv: f32) -> u8 {
    let sum: f32 = values.map(|q| q as f32 * x_scale).sum();
    round_even(sum / hw as f32 * inv).clamp(0.0, 255.0) as u8
}

/// The `y` layer: exact int32 `Σ x·w` (uint8 `x` with zero point 0, int8 `w` `[K, N]`), then
/// `f32(acc)·rescale + bias`.
pub fn dense(d: &blob::Dense, x: &[u8], y: &mut [f32]) {
    for (n, out) in y.iter_mut().enumerate() {
        let mut acc: i32 = 0;
        for (k, &xv) in x[..d.inp].iter().enumerate() {
            acc = acc.wrapping_add(xv as i32 * d.weight[k * d.out + n] as i8 as i32);
        }
        *out = dense_out(acc, d.rescale.f32(n), d.bias.f32(n));
    }
}

/// An output of the `y` layer from its int32 accumulator: `f32(acc)·rescale + bias`.
pub fn dense_out(acc: i32, rescale: f32, bias: f32) -> f32 {
    acc as f32 * rescale + bias
}

#[cfg(test)]
mod tests {
    use super::*;
    use blob::{Conv, Dense, Le32};

    /// The formula `requant` stands for, computed as written.
    fn requant_as_written(acc: i32, m: f32) -> u8 {
        let a = acc as f32;
        (round_even(a.abs() * m) * a.signum()).clamp(0.0, 255.0) as u8
    }

    #[test]
    fn requantization_equals_its_formula() {
        // Every `m` a parsed blob gives: products of positive finite scales (0 and ∞ when they
        // underflow or overflow); NaN for good measure.
        let ms = [1.0, 0.5, 0.25, 1.0 / 3.0, 0.000_123, 0.1, 7.5, 0.0, f32::NAN, f32::INFINITY];
        for m in ms {
            for acc in (-3000..3000).chain([i32::MIN, i32::MAX, 1 << 24, (1 << 24) + 1, 510, 511, 509]) {
                assert_eq!(requant(acc, m), requant_as_written(acc, m), "acc {acc}, m {m}");
            }
        }
        // Halves: k + 0.5 for every k the output can take.
        for k in 0..300 {
            assert_eq!(requant(2 * k + 1, 0.5), requant_as_written(2 * k + 1, 0.5), "{k}.5");
        }
    }

    /// The integer path equals the f32 one wherever the f32 product is exact, and never differs
    /// by more than 1 LSB; over a sweep of real-sized scales the differences are counted.
    #[test]
    fn integer_requantization_is_within_one_lsb() {
        let ms = [1.0, 0.5, 0.25, 0.0, f32::NAN, f32::INFINITY, f32::MIN_POSITIVE / 4.0, 1e-30, 3e7];
        for m in ms {
            for acc in (-3000..3000).chain([i32::MIN, i32::MAX, 1 << 24, 510, 511, 509]) {
                assert_eq!(requant_int(acc, m), requant_as_written(acc, m), "acc {acc}, m {m}");
            }
        }
        let (mut differ, mut total) = (0, 0);
        for i in 0..2000u32 {
            // Scales like the blob's: m = w_scale·x_scale / y_scale, around 1e-4 … 1e-1.
            let m = 1e-4 * (1.0 + i as f32 * 0.4999);
            for acc in (1..200_000).step_by(97) {
                let (a, b) = (requant_int(acc, m), requant_as_written(acc, m));
                assert!(a.abs_diff(b) <= 1, "acc {acc}, m {m}: {a} vs {b}");
                differ += (a != b) as usize;
                total += 1;
            }
        }
        std::eprintln!("integer vs f32 requantization: {differ} of {total} differ (by 1 LSB)");
        assert!(differ * 100_000 < total, "{differ} of {total} differ");
    }

    #[test]
    fn requantization_rounds_half_to_even_and_saturates() {
        assert_eq!((requant(5, 0.5), requant(7, 0.5), requant(3, 0.5)), (2, 4, 2)); // 2.5 → 2, 3.5 → 4, 1.5 → 2
        assert_eq!((requant(-9, 1.0), requant(1000, 1.0)), (0, 255));
    }

    /// 1 input channel 3×3 = 1..9, kernel 3×3 of ones, stride 1, padding 1, zero point 1: each
    /// output sums `(x − 1)` over the taps inside the map, plus bias 2; `m = 1`.
    #[test]
    fn convolution_matches_a_hand_computed_map() {
        let x: [u8; 9] = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        let (one, bias) = (1f32.to_le_bytes(), 2i32.to_le_bytes());
        let c = Conv {
            out: 1,
            inp: 1,
            kernel: 3,
            stride: 1,
            pad: 1,
            x_scale: 1.0,
            x_zero: 1,
            y_scale: 1.0,
            weight: &[1; 9],
            w_scale: Le32(&one),
            bias: Le32(&bias),
            in_side: 3,
            out_side: 3,
        };
        let mut y = [0u8; 9];
        conv2d(&c, &x, &mut [0u32; dsp::column_words(9)], &mut y);
        // x − 1 = 0..8; corner (0,0) sums 0+1+3+4 = 8, centre sums 0..8 = 36.
        assert_eq!(y, [10, 17, 14, 23, 38, 29, 22, 35, 26]);
    }

    #[test]
    fn pool_and_dense_match_hand_computation() {
        let mut y = [0u8; 2];
        average_pool(&[2, 4, 6, 8, 0, 0, 1, 1], 2, 4, 0.5, 1.0, &mut y);
        assert_eq!(y, [2, 0]); // means 2.5 → 2 (half to even), 0.25 → 0
        let (w, rescale, bias) =
            ([1i8 as u8, 2, (-1i8) as u8, 3], [0.5f32.to_le_bytes(), 2f32.to_le_bytes()].concat(), [1f32.to_le_bytes(), 0f32.to_le_bytes()].concat());
        let d = Dense { inp: 2, out: 2, weight: &w, rescale: Le32(&rescale), bias: Le32(&bias), print_scale: 1.0 };
        let mut out = [0f32; 2];
        dense(&d, &[10, 20], &mut out);
        // acc0 = 10·1 + 20·(−1) = −10 → −5 + 1; acc1 = 10·2 + 20·3 = 80 → 160.
        assert_eq!(out, [-4.0, 160.0]);
    }
}
