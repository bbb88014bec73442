//! The convolution's inner product, two multiply-accumulates per instruction on Cortex-M4/M7.
//!
//! The DSP extension of ARMv7E-M multiplies packed 16-bit halves: `SMLAD acc, a, b` adds
//! `a.lo·b.lo + a.hi·b.hi` to `acc`. Weights stay int8 in the blob (OIHW, as written); four of
//! them are one 32-bit load, and `SXTB16` sign-extends bytes 0 and 2 (or, rotated by 8, bytes 1
//! and 3) into such a pair. So the activations are laid out to match when the convolution gathers
//! them (`ops::im2col`): each group of four values `x0 x1 x2 x3` is stored as the halfword pairs
//! `(x0, x2)`, `(x1, x3)`:
//!
//! ```text
//! weights  w0 w1 w2 w3          ─ ldr ─►  SXTB16 → (w0, w2)      SXTB16 ROR 8 → (w1, w3)
//! column   x0 x2 | x1 x3 (i16)  ─ ldr ─►  (x0, x2)               (x1, x3)
//! acc  +=  SMLAD((x0, x2), (w0, w2)) then SMLAD((x1, x3), (w1, w3))  =  Σ xᵢ·wᵢ
//! ```
//!
//! A column of `n` values is `u32` words: two per group of four, then the `n mod 4` leftover
//! values one word each (plain multiply-accumulates); [`ColumnWriter`] writes it in value order.
//!
//! Reordering the activations rather than the weights leaves the blob format unchanged: the
//! gather writes every value anyway, and it runs once per output position, not once per output
//! channel (CMSIS-NN reorders the weights in the file instead).
//!
//! # The one place with `unsafe`
//!
//! On thumbv7em targets (`cfg(dim_dsp)`, set by `build.rs`) [`sxtb16`], [`sxtb16_ror8`] and
//! [`smlad`] are single instructions in `asm!`. Proof of soundness: each block reads only its input
//! registers and writes only its output register — no memory (`nomem`), no stack (`nostack`);
//! `SXTB16` changes no flags (`preserves_flags`); `SMLAD` may set the sticky saturation flag Q,
//! which no Rust code reads and which is not claimed preserved. No input value is invalid for
//! either instruction. Everywhere else the portable twins (`*_portable`) are used; they are the
//! instructions' definitions (ARMv7-M Architecture Reference Manual, SXTB16 and SMLAD: the
//! products summed in full precision, the low 32 bits kept — a wrapping add). The host tests run
//! the twins; the firmware runs the instructions in QEMU, and its test compares every layer's
//! activations with the host engine's, byte for byte.
#![allow(unsafe_code)]

/// SXTB16 (portable twin): bytes 0 and 2 of `x`, each sign-extended to a halfword.
pub fn sxtb16_portable(x: u32) -> u32 {
    let half = |b: u32| (b as u8 as i8 as i16 as u16) as u32;
    half(x) | half(x >> 16) << 16
}

/// SMLAD (portable twin): `acc + a.lo·b.lo + a.hi·b.hi`, wrapping.
pub fn smlad_portable(a: u32, b: u32, acc: i32) -> i32 {
    let (alo, ahi) = (a as u16 as i16 as i32, (a >> 16) as u16 as i16 as i32);
    let (blo, bhi) = (b as u16 as i16 as i32, (b >> 16) as u16 as i16 as i32);
    acc.wrapping_add(alo * blo).wrapping_add(ahi * bhi)
}

/// Bytes 0 and 2 of `x`, sign-extended to halfwords.
#[inline(always)]
pub fn sxtb16(x: u32) -> u32 {
    #[cfg(dim_dsp)]
    {
        let r: u32;
        // SAFETY: registers only; see the module doc.
        unsafe { core::arch::asm!("sxtb16 {r}, {x}", r = lateout(reg) r, x = in(reg) x, options(pure, nomem, nostack, preserves_flags)) };
        r
    }
    #[cfg(not(dim_dsp))]
    sxtb16_portable(x)
}

/// Bytes 1 and 3 of `x`, sign-extended to halfwords (`SXTB16` of `x` rotated right by 8).
#[inline(always)]
pub fn sxtb16_ror8(x: u32) -> u32 {
    #[cfg(dim_dsp)]
    {
        let r: u32;
        // SAFETY: registers only; see the module doc.
        unsafe { core::arch::asm!("sxtb16 {r}, {x}, ror #8", r = lateout(reg) r, x = in(reg) x, options(pure, nomem, nostack, preserves_flags)) };
        r
    }
    #[cfg(not(dim_dsp))]
    sxtb16_portable(x.rotate_right(8))
}

/// `acc + a.lo·b.lo + a.hi·b.hi` (halves as i16), wrapping.
#[inline(always)]
pub fn smlad(a: u32, b: u32, acc: i32) -> i32 {
    #[cfg(dim_dsp)]
    {
        let r: i32;
        // SAFETY: registers only; see the module doc.
        unsafe {
            core::arch::asm!("smlad {r}, {a}, {b}, {acc}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b, acc = in(reg) acc, options(pure, nomem, nostack))
        };
        r
    }
    #[cfg(not(dim_dsp))]
    smlad_portable(a, b, acc)
}

/// The little-endian 32-bit word at `b[0..4]` (one unaligned `LDR` on Cortex-M4/M7).
#[inline(always)]
fn word(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// `acc + Σ xᵢ·wᵢ` over a gathered column (`col`, laid out as above: two words per group of
/// four values, then each of the `w.len() % 4` leftover values as a whole word) and int8 weights.
#[inline(always)]
pub fn dot(col: &[u32], w: &[u8], mut acc: i32) -> i32 {
    let groups = w.len() / 4;
    for (c, w4) in col.chunks_exact(2).zip(w.chunks_exact(4)) {
        let w4 = word(w4);
        acc = smlad(c[0], sxtb16(w4), acc);
        acc = smlad(c[1], sxtb16_ror8(w4), acc);
    }
    for (&x, &wv) in col[2 * groups..].iter().zip(&w[4 * groups..]) {
        acc = acc.wrapping_add(x as i32 * wv as i8 as i32);
    }
    acc
}

/// [`dot`] for two output channels at once: each column word is loaded once for both, which
/// brings the loop under two instructions per multiply-accumulate.
#[inline(always)]
pub fn dot2(col: &[u32], wa: &[u8], wb: &[u8], mut a: i32, mut b: i32) -> (i32, i32) {
    let groups = wa.len() / 4;
    for ((c, w4a), w4b) in col.chunks_exact(2).zip(wa.chunks_exact(4)).zip(wb.chunks_exact(4)) {
        let (w4a, w4b) = (word(w4a), word(w4b));
        a = smlad(c[0], sxtb16(w4a), a);
        b = smlad(c[0], sxtb16(w4b), b);
        a = smlad(c[1], sxtb16_ror8(w4a), a);
        b = smlad(c[1], sxtb16_ror8(w4b), b);
    }
    for ((&x, &va), &vb) in col[2 * groups..].iter().zip(&wa[4 * groups..]).zip(&wb[4 * groups..]) {
        a = a.wrapping_add(x as i32 * va as i8 as i32);
        b = b.wrapping_add(x as i32 * vb as i8 as i32);
    }
    (a, b)
}

/// Words of a gathered column of `n` values.
pub const fn column_words(n: usize) -> usize {
    2 * (n / 4) + n % 4
}

/// Writes a column's values in order into the layout [`dot`] reads (see the module doc).
pub struct ColumnWriter<'a> {
    col: &'a mut [u32],
    /// Values in whole groups of four; the rest are stored as words after them.
    full: usize,
    j: usize,
    /// The group being filled.
    stage: [i16; 4],
}

impl<'a> ColumnWriter<'a> {
    /// A writer for a column of `n` values into `col` ([`column_words`] of `n`).
    pub fn new(col: &'a mut [u32], n: usize) -> Self {
        Self { col, full: n / 4 * 4, j: 0, stage: [0; 4] }
    }

    /// Stores the next value.
    #[inline(always)]
    pub fn push(&mut self, v: i16) {
        let pack = |lo: i16, hi: i16| lo as u16 as u32 | (hi as u16 as u32) << 16;
        let (j, r) = (self.j, self.j & 3);
        if j >= self.full {
            self.col[self.full / 2 + (j - self.full)] = v as i32 as u32;
        } else if r == 3 {
            let g = 2 * (j / 4);
            self.col[g] = pack(self.stage[0], self.stage[2]);
            self.col[g + 1] = pack(self.stage[1], v);
        } else {
            self.stage[r] = v;
        }
        self.j += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twins_follow_the_instruction_definitions() {
        assert_eq!(sxtb16_portable(0x80_7F_FF_01), 0x007F_0001);
        assert_eq!(sxtb16_portable(0x00_80_00_FF), 0xFF80_FFFF);
        // (−1)·(−1) + 2·3 + 10; and the wrap of (−32768)² + (−32768)² + i32::MAX.
        assert_eq!(smlad_portable(0x0002_FFFF, 0x0003_FFFF, 10), 17);
        assert_eq!(smlad_portable(0x8000_8000, 0x8000_8000, i32::MAX), i32::MAX.wrapping_add(1 << 31));
    }

    /// The packed dot product equals the plain one for every length (groups and leftovers) and
    /// extreme values.
    #[test]
    fn dot_equals_the_plain_sum() {
        for n in 0..20 {
            let x: Vec<i16> = (0..n).map(|i| [255i16, -255, 0, 17, -3][i % 5] - i as i16).collect();
            let w: Vec<u8> = (0..n).map(|i| [127i8, -128, 5, -1, 0, 99][i % 6] as u8).collect();
            let mut col = vec![0u32; column_words(n)];
            let mut writer = ColumnWriter::new(&mut col, n);
            x.iter().for_each(|&v| writer.push(v));
            // The layout, written out: (x0, x2), (x1, x3), … then leftovers whole.
            let packed = |lo: i16, hi: i16| lo as u16 as u32 | (hi as u16 as u32) << 16;
            for g in 0..n / 4 {
                assert_eq!(col[2 * g..2 * g + 2], [packed(x[4 * g], x[4 * g + 2]), packed(x[4 * g + 1], x[4 * g + 3])]);
            }
            let want = x.iter().zip(&w).fold(7i32, |a, (&xv, &wv)| a + xv as i32 * wv as i8 as i32);
            assert_eq!(dot(&col, &w, 7), want, "n = {n}");
            let w2: Vec<u8> = w.iter().map(|v| v.wrapping_mul(3)).collect();
            let want2 = x.iter().zip(&w2).fold(-5i32, |a, (&xv, &wv)| a + xv as i32 * wv as i8 as i32);
            assert_eq!(dot2(&col, &w, &w2, 7, -5), (want, want2), "n = {n}");
        }
    }
}
