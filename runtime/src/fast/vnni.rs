//! The fast path's products on AVX-512 VNNI: 64 multiply-accumulates per instruction.
//!
//! `vpdpbusd acc, x, w` multiplies 4 unsigned bytes of `x` by the 4 signed bytes of `w` in each
//! of 16 i32 lanes and adds the 4 products to the lane: exact (a product fits in 16 bits, their
//! sum in 18; no saturation, unlike `vpmaddubsw`). So the activations go in as the blob's raw
//! uint8 values `x` (padding holds the zero point `z`, as in the engine) and the weights as their
//! int8 bytes; the zero point comes out afterwards:
//!
//! ```text
//! Σ (x − z)·w  =  Σ x·w  −  z·Σ w        (integers: the engine's accumulator, exactly)
//! ```
//!
//! Weights are packed once, per block of 16 output channels, as `[group][channel][4 bytes]`
//! (a group is 4 consecutive inputs of the receptive field; `n` is padded to a multiple of 4
//! with zero weights), so one 64-byte load feeds one instruction for 16 channels. A tile keeps
//! `CB` channel blocks × `P` output positions of accumulators in registers: convolutions use
//! 2 × 4 (two weight loads and four 4-byte broadcasts per 8 instructions), the fc layer — one
//! position — 8 × 1.
//!
//! # The one place with `unsafe` in the fast path
//!
//! Proof of soundness: [`products`] calls the `target_feature` function only after
//! [`available`] confirmed the CPU has AVX-512F, BW and VNNI (`is_x86_feature_detected!`). Every
//! pointer handed to an unaligned load or store comes from a `&[u8; 64]`, `&[i32; 16]` or
//! `&mut [i32; 16]` of exactly the 64 bytes it reads or writes (the slices are bounds-checked when
//! converted); no other memory is touched. The safe twin is `FastConv`'s i16 `dot` path (and the
//! engine itself): `tests/fast.rs` compares the two bit for bit, layer by layer, on the shipped
//! blobs and random images.
#![allow(unsafe_code)]

use core::arch::x86_64::*;
use core::ops::Range;

/// Output channels per vector (i32 lanes of a 512-bit register).
pub const LANES: usize = 16;

/// A layer's weights packed for [`products`], with each channel's weight sum.
#[derive(Debug, Clone)]
pub struct Packed {
    /// Inputs per output, padded to a multiple of 4 (the row length of the gathered fields).
    pub n4: usize,
    /// Output channels (a multiple of [`LANES`]).
    pub out: usize,
    /// `[block][group][lane][4]` int8 bytes.
    weight: Vec<u8>,
    /// `Σ w` of each output channel (for the zero-point correction).
    pub sums: Vec<i32>,
}

impl Packed {
    /// Bytes of packed weights.
    pub fn bytes(&self) -> usize {
        self.weight.len()
    }

    /// Packs `weight` (`[out][n]` int8, OIHW); `None` when `out` is not a multiple of
    /// [`LANES`] (the i16 path runs those).
    pub fn new(weight: &[i8], out: usize, n: usize) -> Option<Self> {
        if out == 0 || !out.is_multiple_of(LANES) || weight.len() < out * n {
            return None;
        }
        let n4 = n.div_ceil(4) * 4;
        let groups = n4 / 4;
        let mut packed = vec![0u8; out * n4];
        for (o, row) in weight.chunks_exact(n).take(out).enumerate() {
            let (block, lane) = (o / LANES, o % LANES);
            for (k, &w) in row.iter().enumerate() {
                let (g, b) = (k / 4, k % 4);
                packed[((block * groups + g) * LANES + lane) * 4 + b] = w as u8;
            }
        }
        let sums = weight.chunks_exact(n).take(out).map(|r| r.iter().map(|&w| w as i32).sum()).collect();
        Some(Self { n4, out, weight: packed, sums })
    }
}

/// Whether this CPU runs [`products`].
pub fn available() -> bool {
    std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw") && std::is_x86_feature_detected!("avx512vnni")
}

/// `acc[p·width + o − blocks.start·16] = Σₖ cols[p·n4 + k] · w[o][k]` for the output channels
/// `o` of channel blocks `blocks` (16 channels each; `width` = 16·`blocks.len()`) and every
/// position `p` (`cols`: `positions` rows of `n4` uint8 values). Accumulators come out as rows
/// of channels, the layout of an HWC map.
///
/// # Panics
/// When the CPU lacks the instructions (check [`available`]), `blocks` is not within the
/// layer's, or a buffer is too short.
pub fn products(w: &Packed, blocks: Range<usize>, cols: &[u8], positions: usize, acc: &mut [i32]) {
    assert!(available(), "vnni::products on a CPU without AVX-512 VNNI");
    assert!(blocks.start <= blocks.end && blocks.end <= w.out / LANES, "blocks {blocks:?} of {}", w.out / LANES);
    assert!(cols.len() >= positions * w.n4 && acc.len() >= positions * blocks.len() * LANES);
    // SAFETY: the CPU has every feature the function is compiled for (asserted above).
    unsafe { products_avx512(w, blocks, cols, positions, acc) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn products_avx512(w: &Packed, blocks: Range<usize>, cols: &[u8], positions: usize, acc: &mut [i32]) {
    let at = Tiles { first: blocks.start, width: blocks.len() * LANES };
    let mut b = blocks.start;
    if positions == 1 {
        while b + 8 <= blocks.end {
            tile::<8, 1>(w, &at, cols, b, 0, acc);
            b += 8;
        }
        for b in b..blocks.end {
            tile::<1, 1>(w, &at, cols, b, 0, acc);
        }
        return;
    }
    while b + 2 <= blocks.end {
        let mut p = 0;
        while p + 8 <= positions {
            tile::<2, 8>(w, &at, cols, b, p, acc);
            p += 8;
        }
        while p + 4 <= positions {
            tile::<2, 4>(w, &at, cols, b, p, acc);
            p += 4;
        }
        for p in p..positions {
            tile::<2, 1>(w, &at, cols, b, p, acc);
        }
        b += 2;
    }
    for b in b..blocks.end {
        for p in 0..positions {
            tile::<1, 1>(w, &at, cols, b, p, acc);
        }
    }
}

/// Where a tile's sums go: the first block of the call and the accumulator rows' width.
struct Tiles {
    first: usize,
    width: usize,
}

/// `CB` blocks of 16 channels from block `b0`, `P` positions from `p0`, summed over the whole
/// receptive field in registers, then stored (one 64-byte store per block and position).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn tile<const CB: usize, const P: usize>(w: &Packed, at: &Tiles, cols: &[u8], b0: usize, p0: usize, acc: &mut [i32]) {
    let groups = w.n4 / 4;
    let mut sum = [[_mm512_setzero_si512(); P]; CB];
    let blocks: [&[u8]; CB] = core::array::from_fn(|c| &w.weight[(b0 + c) * groups * 64..][..groups * 64]);
    let rows: [&[u8]; P] = core::array::from_fn(|j| &cols[(p0 + j) * w.n4..][..w.n4]);
    for g in 0..groups {
        let wv: [__m512i; CB] = core::array::from_fn(|c| load(blocks[c][g * 64..][..64].try_into().unwrap()));
        for j in 0..P {
            let x = i32::from_le_bytes(rows[j][g * 4..][..4].try_into().unwrap());
            let xv = _mm512_set1_epi32(x);
            for c in 0..CB {
                sum[c][j] = _mm512_dpbusd_epi32(sum[c][j], xv, wv[c]);
            }
        }
    }
    for (c, sums) in sum.iter().enumerate() {
        for (j, &s) in sums.iter().enumerate() {
            let o = (b0 + c - at.first) * LANES;
            store((&mut acc[(p0 + j) * at.width + o..][..LANES]).try_into().unwrap(), s);
        }
    }
}

#[target_feature(enable = "avx512f")]
fn load(bytes: &[u8; 64]) -> __m512i {
    // SAFETY: reads exactly the 64 bytes of `bytes` (unaligned load).
    unsafe { _mm512_loadu_si512(bytes.as_ptr().cast()) }
}

#[target_feature(enable = "avx512f")]
fn store(lanes: &mut [i32; LANES], v: __m512i) {
    // SAFETY: writes exactly the 64 bytes of `lanes` (unaligned store).
    unsafe { _mm512_storeu_si512(lanes.as_mut_ptr().cast(), v) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-sized case against the plain sum, including a field length that is not a multiple
    /// of 4 and every tile shape (2×8, 2×4, 2×1, 8×1, 1×1), on sub-ranges of the channel blocks.
    #[test]
    fn products_equal_the_plain_sums() {
        if !available() {
            eprintln!("skipped: no AVX-512 VNNI on this CPU");
            return;
        }
        for (out, n, positions) in [(16, 5, 3), (32, 27, 9), (48, 48, 6), (64, 40, 21), (128, 64, 1), (144, 7, 1)] {
            let weight: Vec<i8> = (0..out * n).map(|i| ((i * 37 + 11) % 256) as u8 as i8).collect();
            let packed = Packed::new(&weight, out, n).unwrap();
            let mut cols = vec![0u8; positions * packed.n4];
            for p in 0..positions {
                for k in 0..n {
                    cols[p * packed.n4 + k] = ((p * 53 + k * 29 + 7) % 256) as u8;
                }
            }
            // Every block range: all, the first block alone, all but the first.
            let blocks = out / LANES;
            for range in [0..blocks, 0..1, 1..blocks] {
                let width = range.len() * LANES;
                let mut acc = vec![0; width * positions];
                products(&packed, range.clone(), &cols, positions, &mut acc);
                for o in range.start * LANES..range.end * LANES {
                    for p in 0..positions {
                        let want: i32 = (0..n).map(|k| cols[p * packed.n4 + k] as i32 * weight[o * n + k] as i32).sum();
                        assert_eq!(acc[p * width + o - range.start * LANES], want, "out {out} n {n} blocks {range:?}: channel {o} position {p}");
                    }
                }
            }
            for o in 0..out {
                assert_eq!(packed.sums[o], weight[o * n..][..n].iter().map(|&w| w as i32).sum::<i32>());
            }
        }
        assert!(Packed::new(&[0; 24], 8, 3).is_none(), "8 channels: not a multiple of 16");
    }
}
