//! The engine's int8 arithmetic laid out for a host's vector units and threads: the same model
//! blob, the same results bit for bit, several times faster on x86-64 and aarch64.
//!
//! The no_std [`engine`](crate::engine) is written for Cortex-M: CHW maps, one receptive field
//! gathered at a time into the `SMLAD` pair layout, two output channels per pass. On a host that
//! layout costs more than it saves. [`FastModel`] keeps the engine's arithmetic and changes the
//! order of the work and the layout of the maps:
//!
//! ```text
//! engine (per layer, CHW maps)            fast path (per layer, HWC maps)
//! for each output position:               gather every receptive field once, a kernel row of
//!   gather its field (SMLAD pairs)          taps being one run of kernel·C bytes in HWC:
//!   for each pair of channels:              cols [positions][n]   (ky, kx, c order; weights too)
//!     acc = bias + Σ field·w (SMLAD)      acc [positions][out] = cols · wᵀ  (vector products)
//!     requantize(acc, m)                  y [positions][out] = requantize(bias + acc, m)
//!                                           (one vectorised pass per layer: y is HWC again)
//! ```
//!
//! Every product is exact in i32, and the sums are the same integers in another order (wrapping
//! adds, as `SMLAD`'s: addition modulo 2³² is associative), so each accumulator equals the
//! engine's; the requantization is the engine's IEEE operations (vectorised, see
//! [`requantize_rows`]), and the pool, the image's quantization (a table of
//! [`Model::quantize_pixel`]) and the `y` layer's output are the engine's own functions. The
//! reductions are plain `Σ a[i]·b[i]` over i16 for the compiler to vectorise: [`dot`] is
//! compiled for AVX-512, AVX2, NEON and the baseline and chosen at run time (`multiversion`),
//! with no `unsafe` here.
//!
//! On x86-64 CPUs with AVX-512 VNNI the products run in [`vnni`] instead: raw uint8 fields
//! times int8 weights, 64 multiply-accumulates per instruction, the zero point subtracted after
//! (`Σ(x − z)·w = Σx·w − z·Σw`, an integer identity, so the accumulators are still the engine's).
//! That module is the fast path's only `unsafe` (its proof is in its doc); the i16 path above is
//! its safe twin. On aarch64 CPUs with the dot-product extension (Cortex-A55, A76 and later)
//! the products are int8 × int8 instead ([`Signed`]: `x − 128` against the weights, the
//! offset added back as `(128 − z)·Σw`), a plain loop ([`dot8`]) that LLVM compiles to `sdot`
//! when built for the extension — `multiversion` picks that build at run time, with no
//! `unsafe`. Every other CPU runs the i16 path.
//!
//! Threads ([`FastModel::run_batch`]): a batch is shared out between threads, each running its
//! fc layer (the largest weights) over groups of [`GROUP`] images at once; a single image has
//! each large layer split in two ([`crate::pool`]: a worker kept spinning through the run), by
//! positions (or, for the fc layer, by output channels). Splitting changes which thread
//! computes an output, never how.
//!
//! Tests: `tests/fast.rs` compares every layer and `y` with the engine's on the shipped blobs'
//! golden images and on random images (property test), on both paths and thread layouts.

use crate::engine::{EngineError, Model, blob, ops};
use crate::fields::Fields;
use core::ops::Range;

#[cfg(target_arch = "x86_64")]
pub mod vnni;

/// Images whose fc layer [`FastModel::run_batch`] runs as one product: the fc weights are the
/// model's largest (4 MiB in dim32), and 8 images read them once instead of 8 times.
const GROUP: usize = 8;

/// Output channels the vector path computes at once; a split between threads falls on them.
const LANES: usize = 16;

/// Multiply-accumulates from which a layer is split between two threads at batch 1: every
/// layer of tiny and dim32 but their first few. The hand-off is to [`crate::pool`]'s spinning
/// worker (~1.5 µs). On rayon's pool it cost a wake-up, and only 2²¹ (dim32's last three
/// layers) paid: dim32 read 164–175 µs on two threads against 148 on one, tiny ran on one.
/// On the spinning worker, alternating thresholds (`examples/latency`, this 2-core EPYC):
/// tiny 18 µs at 2¹⁷, 21 at 2¹⁸, 24 at 2²¹ (one thread: 24–25); dim32 82 µs at 2¹⁷ and 2¹⁹,
/// 89–90 at 2²¹ (one thread: 150).
const SPLIT_MACS: usize = 1 << 17;

/// Which products a [`FastModel`] runs: all give the engine's accumulators, bit for bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Products {
    /// `(x − zero)` and the weights widened to i16: [`dot`], for any CPU.
    Wide,
    /// `x − 128` and the weights as int8: [`dot8`], one `sdot` per 16 products on aarch64 with
    /// the dot-product extension (see [`Signed`]).
    Signed,
    /// Raw bytes times int8 weights on AVX-512 VNNI ([`vnni`]), where the CPU has it.
    #[cfg(target_arch = "x86_64")]
    Vnni,
}

impl Products {
    /// The fastest this CPU runs.
    fn best() -> Self {
        #[cfg(target_arch = "x86_64")]
        if vnni::available() {
            return Self::Vnni;
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            return Self::Signed;
        }
        Self::Wide
    }
}

/// A layer's weights as int8 with the start of each channel's signed sums, for [`dot8`].
///
/// The activations go in as `x − 128` (an int8: the byte with its top bit flipped) and the
/// padding as `zero − 128`, so that each tap's `x − zero` is `(x − 128) + (128 − zero)`:
///
/// ```text
/// Σ (x − z)·w  =  Σ (x − 128)·w  +  (128 − z)·Σ w      (integers: the engine's accumulator)
/// ```
///
/// Half the bytes of the i16 path per product, and the products LLVM turns into `sdot` where
/// the CPU has it (16 multiply-accumulates an instruction, against 8 for NEON's widening ones).
#[derive(Debug, Clone)]
struct Signed {
    /// `[out][n]`, as `FastConv::weight`.
    weight: Vec<i8>,
    /// `bias[o] + (128 − zero)·Σw[o]`: where the signed sums start.
    base: Vec<i32>,
}

impl Signed {
    fn new(hwc: &[i8], n: usize, bias: &[i32], zero: u8) -> Self {
        let shift = 128 - zero as i32;
        let base = bias.iter().zip(hwc.chunks_exact(n)).map(|(&b, w)| b.wrapping_add(shift.wrapping_mul(w.iter().map(|&w| w as i32).sum()))).collect();
        Self { weight: hwc.to_vec(), base }
    }
}

/// `x − 128` as an int8: the byte with its top bit flipped.
fn centred(x: u8) -> i8 {
    (x ^ 0x80) as i8
}

/// A convolution (or fc) with its weights reordered for HWC maps and widened to i16.
#[derive(Debug, Clone)]
struct FastConv {
    out: usize,
    fields: Fields,
    x_zero: u8,
    /// `[out][n]`, each row in (ky, kx, ci) order: the order an HWC map's field is read in.
    weight: Vec<i16>,
    bias: Vec<i32>,
    /// The engine's requantization multiplier per channel, computed as it computes it.
    m: Vec<f32>,
    /// The weights as int8, on [`Products::Signed`].
    signed: Option<Signed>,
    /// The weights packed for AVX-512 VNNI, where the CPU has it and the layer fits.
    #[cfg(target_arch = "x86_64")]
    vnni: Option<vnni::Packed>,
    /// `bias[o] − zero·Σw[o]`: where VNNI's raw-byte sums start (see [`vnni`]).
    #[cfg(target_arch = "x86_64")]
    vnni_base: Vec<i32>,
}

impl FastConv {
    /// The layer, with its weights laid out for `products` as well as widened.
    fn new(c: &blob::Conv, products: Products) -> Self {
        let (k, inp) = (c.kernel, c.inp);
        let n = inp * k * k;
        // OIHW → O(ky, kx, ci): the same weights, in the order `gather` lays out a field.
        let hwc: Vec<i8> = (0..c.out)
            .flat_map(|o| (0..n).map(move |j| (o, j / inp % k, j / inp / k, j % inp)))
            .map(|(o, kx, ky, ci)| c.weight[o * n + (ci * k + ky) * k + kx] as i8)
            .collect();
        let bias: Vec<i32> = (0..c.out).map(|o| c.bias.i32(o)).collect();
        #[cfg(target_arch = "x86_64")]
        let vnni = (products == Products::Vnni).then(|| vnni::Packed::new(&hwc, c.out, n)).flatten();
        #[cfg(not(target_arch = "x86_64"))]
        let vnni: Option<()> = None;
        let signed = (products == Products::Signed).then(|| Signed::new(&hwc, n, &bias, c.x_zero));
        // The widened copy only where `run` reads it: a VNNI layer whose width is not a multiple
        // of its lanes falls back to it, an int8 one never does (dim32's fc: 8 MB less).
        let weight = if signed.is_some() || vnni.is_some() { Vec::new() } else { hwc.iter().map(|&w| w as i16).collect() };
        let inv_y = c.y_scale.recip();
        Self {
            out: c.out,
            fields: Fields { kernel: k, stride: c.stride, pad: c.pad, inp, in_side: c.in_side, out_side: c.out_side },
            x_zero: c.x_zero,
            weight,
            m: (0..c.out).map(|o| (c.w_scale.f32(o) * c.x_scale) * inv_y).collect(),
            signed,
            #[cfg(target_arch = "x86_64")]
            vnni_base: match &vnni {
                Some(w) => bias.iter().zip(&w.sums).map(|(&b, &s)| b.wrapping_sub((c.x_zero as i32).wrapping_mul(s))).collect(),
                None => Vec::new(),
            },
            #[cfg(target_arch = "x86_64")]
            vnni,
            bias,
        }
    }

    /// Bytes of weights the layer holds, in whichever layouts its products read.
    fn weight_bytes(&self) -> usize {
        #[cfg(target_arch = "x86_64")]
        let vnni = self.vnni.as_ref().map_or(0, |w| w.bytes());
        #[cfg(not(target_arch = "x86_64"))]
        let vnni = 0;
        self.weight.len() * 2 + self.signed.as_ref().map_or(0, |s| s.weight.len()) + vnni
    }

    /// Output positions per image.
    fn area(&self) -> usize {
        self.fields.area()
    }

    /// Whether the layer is worth splitting between two threads on one image.
    fn worth_splitting(&self) -> bool {
        self.out * self.area() * self.fields.n() >= SPLIT_MACS
    }

    /// The layer on `images` HWC maps one after another in `x`, into as many HWC maps in `y`:
    /// `y[q·out + o] = requantize(bias[o] + field(q)·w[o], m[o])`. With `split`, on two threads
    /// ([`crate::pool`]): each gathers and computes half the positions, or, for a single
    /// position (the fc layer), half the channels.
    fn run(&self, x: &[u8], images: usize, work: &mut Work, y: &mut [u8], split: bool) {
        let rows = images * self.area();
        let y = &mut y[..rows * self.out];
        let split = split && self.worth_splitting();
        let n = self.fields.n();
        #[cfg(target_arch = "x86_64")]
        if let Some(w) = &self.vnni {
            let zero = self.x_zero;
            // Raw bytes, the zero point where a tap is padding (see `vnni`).
            let gather = |rows: Range<usize>, cols: &mut [u8]| self.fields.gather(x, rows, w.n4, zero, |v| v, cols);
            let compute = |cols: &[u8], positions: usize, ch: Range<usize>, acc: &mut Vec<i32>, y: &mut [u8]| {
                acc.resize(positions * ch.len(), 0);
                vnni::products(w, ch.start / LANES..ch.end / LANES, cols, positions, acc);
                requantize_rows(y, self.out, acc, &self.vnni_base[ch.clone()], &self.m[ch.clone()]);
            };
            return self.split_run(rows, w.n4, split, &mut work.bytes, &mut work.acc, y, gather, compute);
        }
        if let Some(sg) = &self.signed {
            // `x − 128`, `zero − 128` where a tap is padding (see `Signed`).
            let gather = |rows: Range<usize>, cols: &mut [i8]| self.fields.gather(x, rows, n, centred(self.x_zero), centred, cols);
            let compute = |cols: &[i8], positions: usize, ch: Range<usize>, _: &mut Vec<i32>, y: &mut [u8]| {
                self.requantize_each(cols, positions, ch, y, &sg.base, |col, o| dot8(col, &sg.weight[o * n..][..n]))
            };
            return self.split_run(rows, n, split, &mut work.signed, &mut work.acc, y, gather, compute);
        }
        // `x − zero`, 0 where a tap is padding.
        let gather = |rows: Range<usize>, cols: &mut [i16]| self.fields.gather(x, rows, n, 0, |v| v as i16 - self.x_zero as i16, cols);
        let compute = |cols: &[i16], positions: usize, ch: Range<usize>, _: &mut Vec<i32>, y: &mut [u8]| {
            self.requantize_each(cols, positions, ch, y, &self.bias, |col, o| dot(col, &self.weight[o * n..][..n]))
        };
        self.split_run(rows, n, split, &mut work.cols, &mut work.acc, y, gather, compute);
    }

    /// `y[p·out + o] = requantize(start[o] + product(field p, o), m[o])` for the channels `ch`
    /// of the first `positions` fields of `cols` (rows of `n` values): the i16 and int8 paths'
    /// loop, each with its own product and where its sums start.
    fn requantize_each<T>(&self, cols: &[T], positions: usize, ch: Range<usize>, y: &mut [u8], start: &[i32], product: impl Fn(&[T], usize) -> i32) {
        for (col, out) in cols.chunks_exact(self.fields.n()).take(positions).zip(y.chunks_mut(self.out)) {
            for (o, v) in ch.clone().zip(out.iter_mut()) {
                *v = ops::requantize(start[o].wrapping_add(product(col, o)), self.m[o]);
            }
        }
    }

    /// Gathers `rows` fields into `cols` and computes them into `y` (rows of `out` channels),
    /// on one thread or, with `split`, two. `compute(cols, positions, channels, acc, y)` writes
    /// channels `channels` of `positions` rows of `y` (each row from its start; `y`'s rows are
    /// `out` apart).
    #[allow(clippy::too_many_arguments)] // the two paths' closures and their buffers
    fn split_run<T: Copy + Default + Send + Sync>(
        &self,
        rows: usize,
        row_len: usize,
        split: bool,
        cols: &mut Vec<T>,
        acc: &mut [Vec<i32>; 2],
        y: &mut [u8],
        gather: impl Fn(Range<usize>, &mut [T]) + Sync,
        compute: impl Fn(&[T], usize, Range<usize>, &mut Vec<i32>, &mut [u8]) + Sync,
    ) {
        cols.resize(rows * row_len, T::default());
        let [acc0, acc1] = acc;
        let all = 0..self.out;
        if split && rows >= 2 {
            // Half the positions each: contiguous fields, accumulators and output rows.
            let half = rows / 2;
            let (c0, c1) = cols.split_at_mut(half * row_len);
            let (y0, y1) = y.split_at_mut(half * self.out);
            crate::pool::join(
                || {
                    gather(0..half, c0);
                    compute(c0, half, all.clone(), acc0, y0)
                },
                || {
                    gather(half..rows, c1);
                    compute(c1, rows - half, all.clone(), acc1, y1)
                },
            );
            return;
        }
        gather(0..rows, cols);
        if split && rows == 1 && self.out >= 2 * LANES {
            // One position: half the channels each (whole blocks of the vector path).
            let mid = (self.out / 2).next_multiple_of(LANES);
            let (y0, y1) = y.split_at_mut(mid);
            crate::pool::join(|| compute(cols, 1, 0..mid, acc0, y0), || compute(cols, 1, mid..self.out, acc1, y1));
            return;
        }
        compute(cols, rows, all, acc0, y);
    }
}

/// The `y` layer with its weights transposed to `[out][inp]` and widened, so each output is one
/// vectorised [`dot`]; the accumulators are the engine's integers, the outputs its
/// [`ops::dense_out`].
#[derive(Debug, Clone)]
struct FastDense {
    inp: usize,
    weight: Vec<i16>,
    rescale: Vec<f32>,
    bias: Vec<f32>,
}

impl FastDense {
    fn new(d: &blob::Dense) -> Self {
        Self {
            inp: d.inp,
            weight: (0..d.out).flat_map(|n| (0..d.inp).map(move |k| d.weight[k * d.out + n] as i8 as i16)).collect(),
            rescale: (0..d.out).map(|n| d.rescale.f32(n)).collect(),
            bias: (0..d.out).map(|n| d.bias.f32(n)).collect(),
        }
    }

    fn out(&self) -> usize {
        self.bias.len()
    }

    fn run(&self, x: &[u8], wide: &mut Vec<i16>, y: &mut [f32]) {
        wide.clear();
        wide.extend(x[..self.inp].iter().map(|&v| v as i16));
        for (n, (out, w)) in y.iter_mut().zip(self.weight.chunks_exact(self.inp)).enumerate() {
            *out = ops::dense_out(dot(wide, w), self.rescale[n], self.bias[n]);
        }
    }
}

/// `y[r·stride + o] = ops::requantize(base[o] + acc[r·width + o], m[o])` for each row `r` of
/// `acc` (`width` = `base.len()` channels), in one call: rows are short (32 channels in tiny's
/// first layer) and the dispatch is per call. Written without branches so that the loop is
/// vectorised. The same IEEE operations as `ops::requant` (the host's requantization; the
/// integer-only one is for Cortex-M cores without an FPU, never a host): for `acc > 0`,
/// `x = acc·m` and `x + 2²³` kept within `[2²³, 2²³ + 255]` is `2²³ + ` `requant`'s `x ≥ 255 →
/// 255, else round(x)` (a value just under 255 rounds to 255 either way; `x ≥ 2²³` and an
/// infinite `x` cap to 255). Tested bit for bit against the engine (`tests/fast.rs`, and the
/// `blob` fuzz target on hostile blobs).
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw", "x86_64+avx2", "aarch64+neon"))]
#[allow(clippy::manual_clamp)] // `clamp` returns NaN for NaN; `max` then `min` gives 0, as `requant`
fn requantize_rows(y: &mut [u8], stride: usize, acc: &[i32], base: &[i32], m: &[f32]) {
    const TWO_23: f32 = 8_388_608.0;
    let width = base.len();
    for (out, acc) in y.chunks_mut(stride).zip(acc.chunks_exact(width)) {
        for (((v, &a), &b), &m) in out[..width].iter_mut().zip(acc).zip(base).zip(m) {
            let a = b.wrapping_add(a);
            // `x + 2²³` for `0 ≤ x < 2²³` is the float `2²³ + round_even(x)`, whose bits are
            // `0x4B00_0000 + round_even(x)`: the integer read from the bits, with no float →
            // int conversion (Rust's saturating one is done lane by lane, not vectorised). A
            // negative or NaN `x` (a hostile blob's negative or NaN weight scale) is 0, as
            // `requant`'s saturating `as u8` makes it: `max` returns 2²³ for both.
            let t = (a as f32 * m + TWO_23).max(TWO_23).min(TWO_23 + 255.0);
            let r = t.to_bits().wrapping_sub(TWO_23.to_bits());
            *v = if a <= 0 { 0 } else { r as u8 };
        }
    }
}

/// `Σ a[i]·b[i]` of i16 values in i32, wrapping, vectorised for the machine it runs on.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw", "x86_64+avx2", "aarch64+neon"))]
pub fn dot(a: &[i16], b: &[i16]) -> i32 {
    a.iter().zip(b).fold(0i32, |s, (&x, &w)| s.wrapping_add(x as i32 * w as i32))
}

/// `Σ a[i]·b[i]` of int8 values in i32, wrapping: `sdot` on aarch64 with the dot-product
/// extension (LLVM forms it from this loop), widening multiplies elsewhere.
#[multiversion::multiversion(targets("aarch64+neon+dotprod", "x86_64+avx512f+avx512bw", "x86_64+avx2"))]
pub fn dot8(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).fold(0i32, |s, (&x, &w)| s.wrapping_add(x as i32 * w as i32))
}

/// `hwc` (`side²` positions of `channels` values) as the engine's CHW, into `chw`.
fn to_chw(hwc: &[u8], channels: usize, chw: &mut Vec<u8>) {
    let area = hwc.len() / channels.max(1);
    chw.clear();
    chw.extend((0..channels).flat_map(|c| (0..area).map(move |p| hwc[p * channels + c])));
}

/// Work space of [`FastModel::run`]: the activations (HWC) and the layers' work.
#[derive(Debug, Default, Clone)]
pub struct Scratch {
    a: Vec<u8>,
    b: Vec<u8>,
    /// An activation in CHW, for the observer.
    chw: Vec<u8>,
    /// The fc inputs and outputs of a group of images.
    group_in: Vec<u8>,
    group_out: Vec<u8>,
    work: Work,
}

/// A layer's work space: the gathered fields (i16, or raw bytes for VNNI) and accumulators
/// (two: one per half when a layer is split between threads).
#[derive(Debug, Default, Clone)]
struct Work {
    cols: Vec<i16>,
    signed: Vec<i8>,
    #[cfg(target_arch = "x86_64")]
    bytes: Vec<u8>,
    acc: [Vec<i32>; 2],
}

/// The observer of [`FastModel::run_observed`], when there is one.
type Seen<'s> = Option<&'s mut dyn FnMut(usize, &[u8])>;

/// An engine blob prepared for a host: run it with [`FastModel::run`]; equal to
/// [`Model::run`] bit for bit. It owns its (reordered) weights: the blob can be dropped.
#[derive(Debug, Clone)]
pub struct FastModel {
    convs: Vec<FastConv>,
    fc: FastConv,
    y: FastDense,
    /// [`Model::quantize_pixel`] of every byte: the image quantized straight into HWC.
    pixels: [u8; 256],
    /// The global average pool's scales (input, output), when the model pools.
    pool: Option<(f32, f32)>,
}

impl FastModel {
    /// Reorders and widens a parsed blob's weights into its own copy (the blob may be dropped
    /// afterwards), and packs them for AVX-512 VNNI where the CPU has it.
    pub fn new(model: &Model) -> Self {
        Self::build(model, Products::best())
    }

    /// [`FastModel::new`] on the portable i16 path only (no VNNI, no int8 products): the safe
    /// twin the tests compare the other paths with, on a CPU that has them.
    pub fn portable(model: &Model) -> Self {
        Self::build(model, Products::Wide)
    }

    /// [`FastModel::new`] on the int8 × int8 products (`sdot` on aarch64 with the dot-product
    /// extension, which [`FastModel::new`] picks there): on any CPU, so that the tests check
    /// its arithmetic everywhere.
    pub fn signed(model: &Model) -> Self {
        Self::build(model, Products::Signed)
    }

    fn build(model: &Model, products: Products) -> Self {
        Self {
            convs: model.convs.iter().map(|c| FastConv::new(c, products)).collect(),
            fc: FastConv::new(&model.fc, products),
            y: FastDense::new(&model.y),
            pixels: core::array::from_fn(|v| model.quantize_pixel(v as u8)),
            pool: model.pool_scale.map(|s| (model.convs[2].y_scale, s)),
        }
    }

    /// Bytes of weights held (every layer, in the layouts its products read): what the model
    /// costs in memory beyond its scratch.
    pub fn weight_bytes(&self) -> usize {
        self.convs.iter().chain([&self.fc]).map(FastConv::weight_bytes).sum::<usize>() + self.y.weight.len() * 2
    }

    /// Width of the embedding.
    pub fn dim(&self) -> usize {
        self.y.out()
    }

    /// Embeds one 32×32 RGB image into `y`, as [`Model::run`] does, on this thread.
    pub fn run(&self, rgb: &crate::Rgb32, scratch: &mut Scratch, y: &mut [f32]) -> Result<(), EngineError> {
        self.forward(rgb, scratch, y, false, None)
    }

    /// Embeds `images` into `y` (`images.len() × dim` values, image by image), on `threads`
    /// threads (at least 1). Several images: each thread takes a contiguous share, and runs its
    /// fc layer 8 images at a time. One image on 2 or more threads: each layer large enough to
    /// gain from it is split in two ([`crate::pool`]), as onnxruntime splits its products at
    /// batch 1.
    pub fn run_batch(&self, images: &[crate::Rgb32], y: &mut [f32], threads: usize) -> Result<(), EngineError> {
        let dim = self.dim();
        if y.len() != images.len() * dim {
            return Err(EngineError::Output { need: images.len() * dim, got: y.len() });
        }
        match images {
            [] => Ok(()),
            // The layers' splits are hand-offs to a worker kept spinning through the run.
            [one] if threads > 1 && self.convs.iter().chain([&self.fc]).any(FastConv::worth_splitting) => {
                crate::pool::wake();
                self.forward(one, &mut Scratch::default(), y, true, None)
            }
            _ => {
                let share = images.len().div_ceil(threads.max(1));
                let run = |imgs: &[crate::Rgb32], ys: &mut [f32]| {
                    let mut scratch = Scratch::default();
                    imgs.chunks(GROUP).zip(ys.chunks_mut(GROUP * dim)).for_each(|(g, ys)| self.run_group(g, &mut scratch, ys));
                };
                if share >= images.len() {
                    run(images, y);
                    return Ok(());
                }
                if threads == 2 {
                    // This thread and the spinning worker: on rayon's pool (two workers, this
                    // thread waiting) tiny's batch of 64 read 25–82 K img/s from one process to
                    // the next, 41 K on one thread; on this pool 82–83 K in six of six.
                    let (i0, i1) = images.split_at(share);
                    let (y0, y1) = y.split_at_mut(share * dim);
                    crate::pool::wake();
                    crate::pool::join(|| run(i0, y0), || run(i1, y1));
                    return Ok(());
                }
                // More threads: rayon's pool, whose threads are already running (a thread
                // started per call cost tiny's batch its whole second core).
                rayon::scope(|s| {
                    for (imgs, ys) in images.chunks(share).zip(y.chunks_mut(share * dim)) {
                        s.spawn(move |_| run(imgs, ys));
                    }
                });
                Ok(())
            }
        }
    }

    /// [`FastModel::run`], calling `seen(i, activation)` with each uint8 activation (CHW, as
    /// the engine lays it out) in the order [`Model::run_observed`] does.
    pub fn run_observed(&self, rgb: &crate::Rgb32, scratch: &mut Scratch, y: &mut [f32], mut seen: impl FnMut(usize, &[u8])) -> Result<(), EngineError> {
        self.forward(rgb, scratch, y, false, Some(&mut seen))
    }

    fn forward(&self, rgb: &crate::Rgb32, scratch: &mut Scratch, y: &mut [f32], split: bool, mut seen: Seen) -> Result<(), EngineError> {
        if y.len() != self.dim() {
            return Err(EngineError::Output { need: self.dim(), got: y.len() });
        }
        let len = self.features(rgb, scratch, split, &mut seen);
        let Scratch { a, b, work, .. } = scratch;
        b.resize(self.fc.out, 0);
        self.fc.run(&a[..len], 1, work, b, split);
        if let Some(seen) = seen {
            seen(self.convs.len() + 1 + self.pool.is_some() as usize, b);
        }
        self.y.run(b, &mut work.cols, y);
        Ok(())
    }

    /// Embeds a group of images with one fc product for all of them.
    fn run_group(&self, images: &[crate::Rgb32], scratch: &mut Scratch, ys: &mut [f32]) {
        let (mut group_in, mut group_out) = (core::mem::take(&mut scratch.group_in), core::mem::take(&mut scratch.group_out));
        group_in.clear();
        for rgb in images {
            let len = self.features(rgb, scratch, false, &mut None);
            group_in.extend_from_slice(&scratch.a[..len]);
        }
        group_out.resize(images.len() * self.fc.out, 0);
        self.fc.run(&group_in, images.len(), &mut scratch.work, &mut group_out, false);
        for (fc, y) in group_out.chunks_exact(self.fc.out).zip(ys.chunks_exact_mut(self.dim())) {
            self.y.run(fc, &mut scratch.work.cols, y);
        }
        (scratch.group_in, scratch.group_out) = (group_in, group_out);
    }

    /// The image through the convolutions (and the pool): the fc layer's input, HWC, left in
    /// `scratch.a`; returns its length.
    fn features(&self, rgb: &crate::Rgb32, scratch: &mut Scratch, split: bool, seen: &mut Seen) -> usize {
        let Scratch { a, b, chw, work, .. } = scratch;
        a.clear();
        a.extend(rgb.iter().map(|&v| self.pixels[v as usize]));
        if let Some(seen) = seen {
            to_chw(a, 3, chw);
            seen(0, chw);
        }
        for (i, conv) in self.convs.iter().enumerate() {
            b.resize(conv.out * conv.area(), 0);
            conv.run(a, 1, work, b, split);
            core::mem::swap(a, b);
            if let Some(seen) = seen {
                to_chw(a, conv.out, chw);
                seen(i + 1, chw);
            }
        }
        if let (Some((x_scale, pool_scale)), Some(c3)) = (self.pool, self.convs.last()) {
            // The engine's pool of one channel, fed the channel's values in position order
            // (a stride of `out` in HWC): the same f32 additions in the same order.
            let (channels, inv) = (c3.out, pool_scale.recip());
            b.clear();
            b.extend((0..channels).map(|c| ops::pool_channel(a[c..].iter().step_by(channels).copied(), c3.area(), x_scale, inv)));
            core::mem::swap(a, b);
            if let Some(seen) = seen {
                seen(self.convs.len() + 1, &a[..c3.out]);
            }
            return c3.out;
        }
        a.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectorised requantization against the engine's on accumulators and multipliers from
    /// the ordinary to the hostile: a negative, NaN, infinite, subnormal or huge `m` (a blob's
    /// weight scale can be any float), accumulators of both signs and at the extremes.
    #[test]
    fn requantize_rows_is_the_engines_requant() {
        let ms = [0.0059, 1.0, 0.5, 254.5 / 1000.0, 1e-40, 3.0e38, f32::INFINITY, -f32::INFINITY, -8.97e23, -0.001, f32::NAN, 0.0, -0.0];
        let accs = [i32::MIN, -1_000_000, -1, 0, 1, 2, 127, 1000, 1019, 43_000, 1 << 23, (1 << 24) + 1, i32::MAX];
        let (base, m): (Vec<i32>, Vec<f32>) = ms.iter().flat_map(|&m| accs.iter().map(move |&a| (a, m))).unzip();
        for acc_shift in [0, 1, -1] {
            let acc = vec![acc_shift; base.len()];
            let mut y = vec![7u8; base.len()];
            requantize_rows(&mut y, base.len(), &acc, &base, &m);
            for i in 0..base.len() {
                let a = base[i].wrapping_add(acc_shift);
                assert_eq!(y[i], ops::requant(a, m[i]), "acc {a} m {:e}", m[i]);
            }
        }
    }
}
