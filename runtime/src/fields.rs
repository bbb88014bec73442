//! Where a convolution's receptive fields lie in an HWC map, and how to gather them: the
//! geometry both host paths share (the int8 [`crate::fast`] path over bytes, the f32
//! [`crate::float`] path over floats).
//!
//! ```text
//! map   [in_side][in_side][inp]            HWC: a kernel row of taps at (iy, ix..ix+kernel)
//!                                          is one run of kernel·inp values
//! field of output position (oy, ox): taps (oy·stride − pad + ky, ox·stride − pad + kx),
//!       laid out [ky][kx][inp] = n values (the weights are reordered to match)
//! cols  [positions][row_len]               one field per row; taps over the padding hold
//!                                          `padding`, a row's tail past n the default
//! ```

use core::ops::Range;

/// A convolution's geometry on square HWC maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fields {
    /// Side of the square kernel.
    pub kernel: usize,
    pub stride: usize,
    /// Zero rows and columns around the map, each side.
    pub pad: usize,
    /// Input channels.
    pub inp: usize,
    pub in_side: usize,
    pub out_side: usize,
}

impl Fields {
    /// Output positions per map.
    pub fn area(&self) -> usize {
        self.out_side * self.out_side
    }

    /// Values of one input map.
    pub fn in_len(&self) -> usize {
        self.inp * self.in_side * self.in_side
    }

    /// Values of one field: `kernel²·inp`.
    pub fn n(&self) -> usize {
        self.kernel * self.kernel * self.inp
    }

    /// The fields of positions `rows` as rows of `row_len` (≥ [`Self::n`]) values of `cols`;
    /// `x` holds whole maps one after another and position `q` is position `q % area` of map
    /// `q / area`. Each value is `value(x)`, `padding` where a tap falls outside the map, and
    /// a row's tail past `n` is `T::default()`: every value of the rows is written. A field
    /// inside the map is `kernel` copies of a run.
    pub fn gather<X: Copy, T: Copy + Default>(&self, x: &[X], rows: Range<usize>, row_len: usize, padding: T, value: impl Fn(X) -> T, cols: &mut [T]) {
        let (k, s, p, side, c) = (self.kernel, self.stride, self.pad, self.in_side, self.inp);
        let (os, span, area) = (self.out_side, k * c, self.area());
        let inside = |o: usize| o * s >= p && o * s - p + k <= side;
        for (q, row) in rows.zip(cols.chunks_exact_mut(row_len)) {
            let map = &x[q / area * self.in_len()..][..self.in_len()];
            let (oy, ox) = (q % area / os, q % area % os);
            let (row, tail) = row.split_at_mut(self.n());
            tail.fill(T::default());
            if !(inside(oy) && inside(ox)) {
                row.fill(padding);
            }
            for ky in 0..k {
                let Some(iy) = (oy * s + ky).checked_sub(p).filter(|&iy| iy < side) else { continue };
                let (dst, line) = (&mut row[ky * span..][..span], &map[iy * side * c..][..side * c]);
                match (ox * s).checked_sub(p).filter(|&ix| ix + k <= side) {
                    Some(ix) => dst.iter_mut().zip(&line[ix * c..][..span]).for_each(|(d, &v)| *d = value(v)),
                    None => {
                        for (kx, taps) in dst.chunks_exact_mut(c).enumerate() {
                            if let Some(ix) = (ox * s + kx).checked_sub(p).filter(|&ix| ix < side) {
                                taps.iter_mut().zip(&line[ix * c..][..c]).for_each(|(d, &v)| *d = value(v));
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_a_padded_map_by_hand() {
        // A 3×3 map of 1 channel, values 1..=9, 2×2 kernel, stride 2, pad 1: output 2×2.
        //   pad row:   0 0 0 0
        //              0 1 2 3
        //              0 4 5 6
        //              0 7 8 9
        let f = Fields { kernel: 2, stride: 2, pad: 1, inp: 1, in_side: 3, out_side: 2 };
        let x: Vec<u8> = (1..=9).collect();
        let mut cols = vec![0i16; 4 * 5];
        f.gather(&x, 0..4, 5, -1, |v| v as i16 * 10, &mut cols);
        // Row tails (the fifth value) are the default, taps over the padding are -1.
        assert_eq!(cols, [-1, -1, -1, 10, 0, -1, -1, 20, 30, 0, -1, 40, -1, 70, 0, 50, 60, 80, 90, 0]);
    }

    #[test]
    fn positions_past_the_first_map_read_the_next_map() {
        // Two 2×2 maps of 2 channels, a 1×1 kernel: each field is one pixel's channels.
        let f = Fields { kernel: 1, stride: 1, pad: 0, inp: 2, in_side: 2, out_side: 2 };
        let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let mut cols = vec![f32::NAN; 3 * 2];
        f.gather(&x, 4..7, 2, 0.0, |v| v, &mut cols);
        assert_eq!(cols, [8.0, 9.0, 10.0, 11.0, 12.0, 13.0]);
    }
}
