//! The no_std int8 engine: runs a quantized encoder from a [`blob`] with a caller-provided arena.
//!
//! It computes what tract computes for the same `trainer quantize` output (see `tests/engine.rs`):
//! - image: `q = clamp(round_even(x · (1/s)) + 128, 0, 255)` with `x` from
//!   [`crate::preprocess::rgb32_to_input`] — tract's `QuantizeLinear`;
//! - convolutions (and fc, a convolution over the whole map): exact int32
//!   `acc = bias + Σ (x − x_zero)·w` (padding contributes 0), then
//!   `clamp(round_even(|acc|·m)·sign(acc), 0, 255)` with `m = (w_scale·x_scale)·(1/y_scale)` in f32
//!   — tract's `Scale` op, with the same f32 operations in the same order;
//! - `tiny`'s global average pool: dequantize, mean in f32, quantize. tract sums in another
//!   order, so a pooled value that lands on a rounding boundary may differ by 1 LSB;
//! - y: exact int32 `Σ x·w`, then `f32(acc)·rescale + bias`.
//!
//! Activations live in two halves of the arena (ping-pong); nothing is allocated.

pub mod blob;
mod prototypes;

pub use blob::Model;
pub use prototypes::PrototypeStore;

/// Why a blob or a run was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("not a dim-edge model blob (bad magic)")]
    NotABlob,
    #[error("blob version {found}; this engine reads version {supported}")]
    Version { found: u16, supported: u16 },
    #[error("the blob is truncated")]
    Truncated,
    #[error("the blob has bytes after its payload")]
    TrailingBytes,
    #[error("the blob's checksum does not match its payload")]
    Checksum,
    #[error("invalid blob: {0}")]
    Invalid(&'static str),
    #[error("the arena holds {got} bytes; this model needs {need}")]
    ArenaTooSmall { need: usize, got: usize },
    #[error("the output holds {got} values; this model writes {need}")]
    Output { need: usize, got: usize },
}

/// IEEE round-half-to-even, as tract rounds.
fn round_even(x: f32) -> f32 {
    libm::rintf(x)
}

/// tract's requantization of an int32 accumulator by `m`, clamped to uint8.
fn requant(acc: i32, m: f32) -> u8 {
    let a = acc as f32;
    (round_even(a.abs() * m) * a.signum()).clamp(0.0, 255.0) as u8
}

impl Model<'_> {
    /// Bytes of the activation sizes, in order: image, conv1..3, (pool), fc.
    fn activations(&self) -> impl Iterator<Item = usize> + '_ {
        let conv = |c: &blob::Conv| c.out * c.out_side * c.out_side;
        core::iter::once(crate::RGB32_LEN)
            .chain(self.convs.iter().map(conv))
            .chain(self.pool_scale.map(|_| self.convs[2].out))
            .chain(core::iter::once(conv(&self.fc)))
    }

    /// Arena bytes [`Model::run`] needs: the largest even-numbered activation plus the largest
    /// odd-numbered one (they alternate between the two halves).
    pub fn arena_size(&self) -> usize {
        let (mut even, mut odd) = (0, 0);
        for (i, n) in self.activations().enumerate() {
            if i % 2 == 0 { even = even.max(n) } else { odd = odd.max(n) }
        }
        even + odd
    }

    /// Width of the embedding.
    pub fn dim(&self) -> usize {
        self.y.out
    }

    /// Embeds one 32×32 RGB image (HWC, u8: see [`crate::preprocess::to_rgb32`]) into `y`.
    pub fn run(&self, rgb: &crate::Rgb32, arena: &mut [u8], y: &mut [f32]) -> Result<(), EngineError> {
        self.run_observed(rgb, arena, y, |_, _| ())
    }

    /// [`Model::run`], calling `seen(i, activation)` with each uint8 activation (CHW) in order:
    /// image, conv1, conv2, conv3, (pool), fc — to compare layers with another runtime.
    pub fn run_observed(&self, rgb: &crate::Rgb32, arena: &mut [u8], y: &mut [f32], mut seen: impl FnMut(usize, &[u8])) -> Result<(), EngineError> {
        let need = self.arena_size();
        if arena.len() < need {
            return Err(EngineError::ArenaTooSmall { need, got: arena.len() });
        }
        if y.len() != self.y.out {
            return Err(EngineError::Output { need: self.y.out, got: y.len() });
        }
        let (mut a, mut b) = arena[..need].split_at_mut(self.activations().step_by(2).max().unwrap_or(0));
        // Image: same f32 values as the trainer's input, then tract's QuantizeLinear.
        let inv = self.image_scale.recip();
        let plane = crate::INPUT_SIDE * crate::INPUT_SIDE;
        for i in 0..plane {
            for c in 0..3 {
                let x = crate::preprocess::scale_u8(rgb[i * 3 + c]);
                a[c * plane + i] = (round_even(x * inv) + 128.0).clamp(0.0, 255.0) as u8;
            }
        }
        let sizes: heapless::Vec<usize, 6> = self.activations().collect();
        seen(0, &a[..sizes[0]]);
        for (i, conv) in self.convs.iter().enumerate() {
            conv2d(conv, a, b);
            core::mem::swap(&mut a, &mut b);
            seen(i + 1, &a[..sizes[i + 1]]);
        }
        if let Some(pool_scale) = self.pool_scale {
            let c3 = &self.convs[2];
            let hw = c3.out_side * c3.out_side;
            let inv = pool_scale.recip();
            for (c, out) in b[..c3.out].iter_mut().enumerate() {
                let sum: f32 = a[c * hw..(c + 1) * hw].iter().map(|&q| q as f32 * c3.y_scale).sum();
                *out = round_even(sum / hw as f32 * inv).clamp(0.0, 255.0) as u8;
            }
            core::mem::swap(&mut a, &mut b);
            seen(4, &a[..sizes[4]]);
        }
        conv2d(&self.fc, a, b);
        seen(sizes.len() - 1, &b[..sizes[sizes.len() - 1]]);
        let d = &self.y;
        for (n, out) in y.iter_mut().enumerate() {
            let mut acc: i32 = 0;
            for (k, &x) in b[..d.inp].iter().enumerate() {
                acc = acc.wrapping_add(x as i32 * d.weight[k * d.out + n] as i8 as i32);
            }
            *out = acc as f32 * d.rescale.f32(n) + d.bias.f32(n);
        }
        Ok(())
    }

    /// `y` as int8 with the blob's symmetric print scale (what the firmware prints).
    pub fn quantize_output(&self, y: &[f32], out: &mut [i8]) {
        let inv = self.y.print_scale.recip();
        for (o, v) in out.iter_mut().zip(y) {
            *o = round_even(v * inv).clamp(-127.0, 127.0) as i8;
        }
    }
}

/// Direct convolution, CHW uint8 in and out; `parse` guaranteed every index below is in bounds.
/// Padding contributes `(zero − zero)·w = 0`, so each output sums over the kernel rows and
/// columns that fall inside the map, found once per output row / column.
fn conv2d(c: &blob::Conv, x: &[u8], y: &mut [u8]) {
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
