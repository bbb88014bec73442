//! The engine's int8 arithmetic laid out for a host's vector units: the same model blob, the
//! same results bit for bit, several times faster on x86-64 and aarch64.
//!
//! The no_std [`engine`](crate::engine) is written for Cortex-M: one receptive field gathered at
//! a time into the `SMLAD` pair layout, two output channels per pass. On a host that layout
//! costs more than it saves. [`FastModel`] keeps the engine's arithmetic and changes only the
//! order of the work:
//!
//! ```text
//! engine (per layer)                      fast path (per layer)
//! for each output position:               gather every receptive field once:
//!   gather its field (SMLAD pairs)          cols [positions][n] i16 (x − zero; padding 0)
//!   for each pair of channels:            for each output channel o (weights w[o] as i16):
//!     acc = bias + Σ field·w (SMLAD)        for each position p:
//!     requantize(acc, m)                      acc = bias + Σ cols[p]·w[o]   (one i32 reduction)
//!                                             requantize(acc, m)
//! ```
//!
//! Every product is an exact i16·i16 into i32, and the sums are the same integers in another
//! order (wrapping adds, as `SMLAD`'s: addition modulo 2³² is associative), so each accumulator
//! equals the engine's; the requantization, the pool, the `y` layer and the image's
//! quantization are the engine's own functions. The reduction is written as a plain
//! `Σ a[i]·b[i]` over i16 for the compiler to vectorise (the generated code was not inspected);
//! [`dot`] is compiled for AVX-512, AVX2, NEON and the baseline and chosen at run time
//! (`multiversion`), with no `unsafe` here.
//!
//! On x86-64 CPUs with AVX-512 VNNI the products run in [`vnni`] instead: raw uint8 fields
//! times int8 weights, 64 multiply-accumulates per instruction, the zero point subtracted after
//! (`Σ(x − z)·w = Σx·w − z·Σw`, an integer identity, so the accumulators are still the engine's).
//! That module is the fast path's only `unsafe` (its proof is in its doc); the i16 path above is
//! its safe twin, and the one every other CPU runs.
//!
//! Tests: `tests/fast.rs` compares every layer and `y` with the engine's on the shipped blobs'
//! golden images and on random images (property test).

use crate::engine::{EngineError, Model, blob, ops};

#[cfg(target_arch = "x86_64")]
pub mod vnni;

/// A convolution (or fc) with its weights widened to i16, `n` = inputs·k·k per output.
#[derive(Debug, Clone)]
struct FastConv {
    out: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    inp: usize,
    in_side: usize,
    out_side: usize,
    x_zero: i16,
    n: usize,
    /// `[out][n]`, OIHW order.
    weight: Vec<i16>,
    bias: Vec<i32>,
    /// The engine's requantization multiplier per channel, computed as it computes it.
    m: Vec<f32>,
    /// The weights packed for AVX-512 VNNI, where the CPU has it and the layer fits.
    #[cfg(target_arch = "x86_64")]
    vnni: Option<vnni::Packed>,
}

impl FastConv {
    /// The layer, with VNNI-packed weights when `vector` and the CPU has the instructions.
    fn new(c: &blob::Conv, vector: bool) -> Self {
        #[cfg(not(target_arch = "x86_64"))]
        let _ = vector; // only x86-64 has a vector path besides the portable one
        let n = c.inp * c.kernel * c.kernel;
        let inv_y = c.y_scale.recip();
        Self {
            out: c.out,
            kernel: c.kernel,
            stride: c.stride,
            pad: c.pad,
            inp: c.inp,
            in_side: c.in_side,
            out_side: c.out_side,
            x_zero: c.x_zero as i16,
            n,
            weight: c.weight[..c.out * n].iter().map(|&w| w as i8 as i16).collect(),
            bias: (0..c.out).map(|o| c.bias.i32(o)).collect(),
            m: (0..c.out).map(|o| (c.w_scale.f32(o) * c.x_scale) * inv_y).collect(),
            #[cfg(target_arch = "x86_64")]
            vnni: (vector && vnni::available()).then(|| vnni::Packed::new(bytemuck::cast_slice(&c.weight[..c.out * n]), c.out, n)).flatten(),
        }
    }

    /// Every receptive field of `x` (CHW uint8) as a row of `row_len` values of `cols`: each
    /// value `value(x)` in weight order, `padding` where a tap falls outside the map, and the
    /// row's tail past `n` left at `T::default()`. The i16 path stores `x − zero` (padding 0),
    /// the VNNI path the raw bytes (padding: the zero point).
    fn gather<T: Copy + Default>(&self, x: &[u8], row_len: usize, padding: T, value: impl Fn(u8) -> T, cols: &mut Vec<T>) {
        let (k, s, p, side, os) = (self.kernel, self.stride, self.pad, self.in_side, self.out_side);
        cols.clear();
        cols.resize(os * os * row_len, T::default());
        for (at, row) in cols.chunks_exact_mut(row_len).enumerate() {
            let (oy, ox) = (at / os, at % os);
            row[..self.n].fill(padding);
            for (ci, plane) in x.chunks_exact(side * side).take(self.inp).enumerate() {
                for ky in 0..k {
                    let Some(iy) = (oy * s + ky).checked_sub(p).filter(|&iy| iy < side) else { continue };
                    let dst = &mut row[(ci * k + ky) * k..][..k];
                    match (ox * s).checked_sub(p).filter(|&ix| ix + k <= side) {
                        // The whole kernel row inside the map (most positions).
                        Some(ix) => dst.iter_mut().zip(&plane[iy * side + ix..][..k]).for_each(|(d, &v)| *d = value(v)),
                        None => {
                            for (kx, d) in dst.iter_mut().enumerate() {
                                if let Some(ix) = (ox * s + kx).checked_sub(p).filter(|&ix| ix < side) {
                                    *d = value(plane[iy * side + ix]);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The layer: `y[o·area + p] = requantize(bias[o] + cols[p]·w[o], m[o])`.
    fn run(&self, x: &[u8], scratch: &mut Work, y: &mut [u8]) {
        let area = self.out_side * self.out_side;
        #[cfg(target_arch = "x86_64")]
        if let Some(w) = &self.vnni {
            // Σ(x − z)·w = Σx·w − z·Σw: the engine's accumulator, as an integer identity.
            self.gather(x, w.n4, self.x_zero as u8, |v| v, &mut scratch.bytes);
            scratch.acc.resize(self.out * area, 0);
            vnni::products(w, &scratch.bytes, area, &mut scratch.acc);
            let zero = self.x_zero as i32;
            for (o, (out, acc)) in y.chunks_exact_mut(area).zip(scratch.acc.chunks_exact(area)).take(self.out).enumerate() {
                requantize_row(out, acc, self.bias[o].wrapping_sub(zero.wrapping_mul(w.sums[o])), self.m[o]);
            }
            return;
        }
        self.gather(x, self.n, 0, |v| v as i16 - self.x_zero, &mut scratch.cols);
        for (o, w) in self.weight.chunks_exact(self.n).enumerate() {
            let out = &mut y[o * area..(o + 1) * area];
            for (v, col) in out.iter_mut().zip(scratch.cols.chunks_exact(self.n)) {
                *v = ops::requantize(self.bias[o].wrapping_add(dot(col, w)), self.m[o]);
            }
        }
    }
}

/// `out[i] = ops::requantize(base + acc[i], m)`, written without branches so that the loop is
/// vectorised. The same IEEE operations as `ops::requant` (the host's requantization; the
/// integer-only one is for Cortex-M cores without an FPU, never a host): for `acc > 0`,
/// `round(x)` capped at 255 is `requant`'s `x ≥ 255 → 255, else round(x)` (a value just under
/// 255 rounds to 255 either way; an infinite `x` gives NaN, and `min` returns 255 for it). Tested
/// bit for bit against the engine (`tests/fast.rs`).
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw", "x86_64+avx2", "aarch64+neon"))]
fn requantize_row(out: &mut [u8], acc: &[i32], base: i32, m: f32) {
    const TWO_23: f32 = 8_388_608.0;
    for (v, &a) in out.iter_mut().zip(acc) {
        let a = base.wrapping_add(a);
        let r = ((a as f32 * m + TWO_23) - TWO_23).min(255.0);
        *v = if a <= 0 { 0 } else { r as u8 };
    }
}

/// `Σ a[i]·b[i]` of i16 values in i32, wrapping, vectorised for the machine it runs on.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw", "x86_64+avx2", "aarch64+neon"))]
pub fn dot(a: &[i16], b: &[i16]) -> i32 {
    a.iter().zip(b).fold(0i32, |s, (&x, &w)| s.wrapping_add(x as i32 * w as i32))
}

/// Work space of [`FastModel::run`]: the two activation halves and the layers' work.
#[derive(Debug, Default, Clone)]
pub struct Scratch {
    a: Vec<u8>,
    b: Vec<u8>,
    work: Work,
}

/// A layer's work space: the gathered fields (i16, or raw bytes for VNNI) and accumulators.
#[derive(Debug, Default, Clone)]
struct Work {
    cols: Vec<i16>,
    #[cfg(target_arch = "x86_64")]
    bytes: Vec<u8>,
    #[cfg(target_arch = "x86_64")]
    acc: Vec<i32>,
}

/// An engine blob prepared for a host: run it with [`FastModel::run`]; equal to
/// [`Model::run`] bit for bit.
#[derive(Debug, Clone)]
pub struct FastModel<'m> {
    model: Model<'m>,
    convs: Vec<FastConv>,
    fc: FastConv,
    /// Bytes of the widest activation (the image or a layer's output): each scratch half's size.
    widest: usize,
}

impl<'m> FastModel<'m> {
    /// Widens a parsed blob's weights (once; the blob stays borrowed for the rest), and packs
    /// them for AVX-512 VNNI where the CPU has it.
    pub fn new(model: Model<'m>) -> Self {
        Self::build(model, true)
    }

    /// [`FastModel::new`] on the portable i16 path only (no VNNI): the safe twin the tests
    /// compare the VNNI path with, on a CPU that has both.
    pub fn portable(model: Model<'m>) -> Self {
        Self::build(model, false)
    }

    fn build(model: Model<'m>, vector: bool) -> Self {
        let (convs, fc): (Vec<_>, _) = (model.convs.iter().map(|c| FastConv::new(c, vector)).collect(), FastConv::new(&model.fc, vector));
        let widest = convs.iter().chain([&fc]).map(|c| c.out * c.out_side * c.out_side).max().unwrap_or(0).max(crate::RGB32_LEN);
        Self { convs, fc, widest, model }
    }

    /// The parsed blob it runs.
    pub fn model(&self) -> &Model<'m> {
        &self.model
    }

    /// Embeds one 32×32 RGB image into `y`, as [`Model::run`] does.
    pub fn run(&self, rgb: &crate::Rgb32, scratch: &mut Scratch, y: &mut [f32]) -> Result<(), EngineError> {
        self.run_observed(rgb, scratch, y, |_, _| ())
    }

    /// Embeds `images` into `y` (`images.len() × dim` values, image by image), on `threads`
    /// threads (at least 1; each takes a contiguous share of the images, with its own scratch).
    pub fn run_batch(&self, images: &[crate::Rgb32], y: &mut [f32], threads: usize) -> Result<(), EngineError> {
        let dim = self.model.y.out;
        if y.len() != images.len() * dim {
            return Err(EngineError::Output { need: images.len() * dim, got: y.len() });
        }
        if images.is_empty() {
            return Ok(());
        }
        let share = images.len().div_ceil(threads.max(1));
        std::thread::scope(|s| {
            let jobs: Vec<_> = images
                .chunks(share)
                .zip(y.chunks_mut(share * dim))
                .map(|(imgs, ys)| {
                    s.spawn(move || {
                        let mut scratch = Scratch::default();
                        imgs.iter().zip(ys.chunks_exact_mut(dim)).try_for_each(|(img, y)| self.run(img, &mut scratch, y))
                    })
                })
                .collect();
            jobs.into_iter().try_for_each(|j| j.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
        })
    }

    /// [`FastModel::run`], calling `seen(i, activation)` with each uint8 activation in the
    /// order [`Model::run_observed`] does.
    pub fn run_observed(&self, rgb: &crate::Rgb32, scratch: &mut Scratch, y: &mut [f32], mut seen: impl FnMut(usize, &[u8])) -> Result<(), EngineError> {
        let m = &self.model;
        if y.len() != m.y.out {
            return Err(EngineError::Output { need: m.y.out, got: y.len() });
        }
        let Scratch { a, b, work } = scratch;
        a.resize(self.widest, 0);
        b.resize(self.widest, 0);
        m.quantize_image(rgb, a);
        seen(0, &a[..crate::RGB32_LEN]);
        for (i, conv) in self.convs.iter().enumerate() {
            conv.run(a, work, b);
            core::mem::swap(a, b);
            seen(i + 1, &a[..conv.out * conv.out_side * conv.out_side]);
        }
        let mut seen_at = self.convs.len() + 1;
        if let Some(pool_scale) = m.pool_scale {
            let c3 = &m.convs[2];
            ops::average_pool(a, c3.out, c3.out_side * c3.out_side, c3.y_scale, pool_scale, b);
            core::mem::swap(a, b);
            seen(seen_at, &a[..c3.out]);
            seen_at += 1;
        }
        self.fc.run(a, work, b);
        seen(seen_at, &b[..self.fc.out]);
        ops::dense(&m.y, &b[..m.y.inp], y);
        Ok(())
    }
}
