//! The engine's operations, one function each, with hand-computed tests: tract's rounding and
//! requantization, the direct convolution, the average pool and the `y` layer.

use super::blob;

/// IEEE round-half-to-even, as tract rounds.
pub fn round_even(x: f32) -> f32 {
    libm::rintf(x)
}

/// tract's requantization of an int32 accumulator by `m`, clamped to uint8.
pub fn requant(acc: i32, m: f32) -> u8 {
    let a = acc as f32;
    (round_even(a.abs() * m) * a.signum()).clamp(0.0, 255.0) as u8
}

/// Direct convolution, CHW uint8 in and out; `parse` guaranteed every index below is in bounds.
/// Padding contributes `(zero − zero)·w = 0`, so each output sums over the kernel rows and
/// columns that fall inside the map, found once per output row / column.
pub fn conv2d(c: &blob::Conv, x: &[u8], y: &mut [u8]) {
    let (k, s, p, side, os) = (c.kernel, c.stride, c.pad, c.in_side, c.out_side);
    let zero = c.x_zero as i32;
    // Kernel taps `lo..hi` that land inside the map, for output coordinate `o`.
    let taps = |o: usize| {
        let start = o * s;
        let lo = p.saturating_sub(start);
        (lo, k.min((side + p).saturating_sub(start)).max(lo))
    };
    for o in 0..c.out {
        // tract folds `(w_scale·x_scale) / y_scale` with the division turned into a product by
        // the reciprocal; the last bit of `m` decides values that land next to a .5.
        let m = (c.w_scale.f32(o) * c.x_scale) * c.y_scale.recip();
        let w_o = &c.weight[o * c.inp * k * k..(o + 1) * c.inp * k * k];
        let bias = c.bias.i32(o);
        for oy in 0..os {
            let (ky0, ky1) = taps(oy);
            for ox in 0..os {
                let (kx0, kx1) = taps(ox);
                let mut acc = bias;
                for (x_i, w_i) in x.chunks_exact(side * side).zip(w_o.chunks_exact(k * k)) {
                    for ky in ky0..ky1 {
                        let at = (oy * s + ky - p) * side + ox * s + kx0 - p;
                        let xs = &x_i[at..at + (kx1 - kx0)];
                        let ws = &w_i[ky * k + kx0..ky * k + kx1];
                        for (&xv, &wv) in xs.iter().zip(ws) {
                            acc = acc.wrapping_add((xv as i32 - zero) * (wv as i8 as i32));
                        }
                    }
                }
                y[o * os * os + oy * os + ox] = requant(acc, m);
            }
        }
    }
}

/// `tiny`'s global average pool of `channels` maps of `hw` uint8 values (scale `x_scale`, zero
/// point 0): dequantize, mean in f32, quantize by `y_scale`.
pub fn average_pool(x: &[u8], channels: usize, hw: usize, x_scale: f32, y_scale: f32, y: &mut [u8]) {
    let inv = y_scale.recip();
    for (c, out) in y[..channels].iter_mut().enumerate() {
        let sum: f32 = x[c * hw..(c + 1) * hw].iter().map(|&q| q as f32 * x_scale).sum();
        *out = round_even(sum / hw as f32 * inv).clamp(0.0, 255.0) as u8;
    }
}

/// The `y` layer: exact int32 `Σ x·w` (uint8 `x` with zero point 0, int8 `w` `[K, N]`), then
/// `f32(acc)·rescale + bias`.
pub fn dense(d: &blob::Dense, x: &[u8], y: &mut [f32]) {
    for (n, out) in y.iter_mut().enumerate() {
        let mut acc: i32 = 0;
        for (k, &xv) in x[..d.inp].iter().enumerate() {
            acc = acc.wrapping_add(xv as i32 * d.weight[k * d.out + n] as i8 as i32);
        }
        *out = acc as f32 * d.rescale.f32(n) + d.bias.f32(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blob::{Conv, Dense, Le32};

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
        conv2d(&c, &x, &mut y);
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
