//! The float path's one product, `y[m][n] = bias + x[m][k] · W[k][n]` (then ReLU), with `W`
//! packed once when the model loads.
//!
//! Why not a general matrix crate: the `gemm` crate (tried first, through its safe-shape
//! wrapper) packs the weights again on every call. On the encoder's products that packing is
//! most of the work — dim32's fc at batch 1 is a 4096 × 1024 weight matrix times one row, and
//! `gemm` took 0.8–1.3 ms for it and 4.4 ms for a group of 8 images; its 64 × 1024 × 128 conv2
//! ran at 29 GMAC/s on one core. An inference library packs once, so this does:
//!
//! ```text
//! W [k][n]  →  panels [n / PANEL][k][PANEL]          (the last panel zero-padded)
//! x [m][k]  →  tiles [m / ROWS][k][ROWS]              (interleaved, the last zero-padded)
//! for each panel (k·PANEL values, read in order):
//!   for each tile:
//!     acc[ROWS][PANEL] = Σ_k  tile[k][r] · panel[k][..]  (one vector load of W per k, ROWS
//!                                                        broadcast multiply-adds from it)
//!     y[r][panel's columns] = relu?(bias + acc)
//! ```
//!
//! A single row (the fc layer of one image) skips the interleaving and keeps ROWS partial
//! sums instead, so its multiply-adds do not wait on each other.
//!
//! `acc` is ROWS × PANEL = 8 × 16 values: eight AVX-512 registers, independent, so both FMA units
//! stay busy. The loops are plain Rust for the compiler to vectorise: [`tile_times_panel`] and
//! [`row_times_panel`] are compiled for
//! AVX-512, AVX2 (both with FMA), NEON and the baseline, chosen at run time (`multiversion`),
//! with no `unsafe`. At batch 1 each large product is split between two threads, by tiles or
//! by panels ([`SPLIT_MACS`] says which and why).

use multiversion::multiversion;
use multiversion::target::target_cfg_f;

/// Output columns per panel: one AVX-512 register of f32.
pub const PANEL: usize = 16;

/// Rows of `x` per tile: positions of a map, or images at the fc layer.
const ROWS: usize = 8;

/// Multiply-accumulates from which a product is split between two threads (the caller and
/// [`crate::pool`]'s worker, a hand-off of ~1.5 µs when the worker is spinning): below it the
/// hand-off costs more than half the product. With 2¹⁷ every convolution and fc layer of tiny
/// and dim32 splits, their last layer (≤ 1024 × 64) does not.
///
/// How: a product of many tiles (a convolution's positions) by tiles, each thread interleaving
/// and computing its own rows; a product of few tiles and more panels by panels, each thread
/// reading half the weights — such a product waits on reading its weights (each serves ≤ 8
/// rows), and dim32's fc at batch 1 (4096 × 1024) took 301 µs on one thread, 120 µs split.
///
/// Measured on this 2-core machine with rayon's pool first: its idle worker sleeps within
/// microseconds, a hand-off cost ~21 µs (a `join` of two empty halves; micropool's: 0.1 µs,
/// and two 10.8 µs halves 12.2 µs against 21.7 one after the other), and splitting every
/// product of ≥ 2¹⁹ MACs made whole runs slower (tiny 75–81 → 139–144 µs). On micropool's
/// spinning worker, tiny reads 61 µs on one thread, 51–53 on two; dim32 ~800 and ~350–450.
const SPLIT_MACS: usize = 1 << 17;

/// Weights `[k][n]` as panels of [`PANEL`] columns, each `[k][PANEL]`.
#[derive(Debug, Clone)]
pub struct Packed {
    k: usize,
    n: usize,
    panels: Vec<f32>,
}

impl Packed {
    /// `w` is `[k][n]`, row-major.
    pub fn new(w: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(w.len(), k * n, "weights are not {k}×{n}");
        let count = n.div_ceil(PANEL);
        let mut panels = vec![0f32; count * k * PANEL];
        for (p, panel) in panels.chunks_exact_mut(k * PANEL).enumerate() {
            let cols = (n - p * PANEL).min(PANEL);
            for (row, w) in panel.chunks_exact_mut(PANEL).zip(w.chunks_exact(n)) {
                row[..cols].copy_from_slice(&w[p * PANEL..p * PANEL + cols]);
            }
        }
        Self { k, n, panels }
    }

    fn count(&self) -> usize {
        self.n.div_ceil(PANEL)
    }

    fn panel(&self, p: usize) -> &[f32] {
        &self.panels[p * self.k * PANEL..(p + 1) * self.k * PANEL]
    }
}

/// `y` `[m][n]` = `bias + x · w`, ReLU'd if `relu`; `x` is `[m][k]`. On two threads (the
/// caller and [`crate::pool`]'s worker) when `threads > 1` and the product is large enough.
/// `scratch` holds the interleaved rows (and, when the panels are split between the threads,
/// the right half of the columns) between calls.
#[allow(clippy::too_many_arguments)]
pub fn product(x: &[f32], m: usize, w: &Packed, bias: &[f32], relu: bool, y: &mut [f32], threads: usize, scratch: &mut Vec<f32>) {
    let (k, n) = (w.k, w.n);
    assert_eq!(x.len(), m * k, "x is not {m}×{k}");
    assert_eq!(y.len(), m * n, "y is not {m}×{n}");
    assert_eq!(bias.len(), n, "bias is not {n} wide");
    let (panels, tiles) = (w.count(), m.div_ceil(ROWS));
    let split = threads > 1 && m * k * n >= SPLIT_MACS;
    if m == 1 {
        // One row is read as it is.
        if split && panels > 1 {
            scratch.resize(right_len(w, m), 0.0);
            by_panels(Rows::One(x), w, bias, relu, y, scratch);
        } else {
            panels_into(Rows::One(x), w, bias, relu, 0..panels, y, n);
        }
        return;
    }
    // More are interleaved by tiles (see `interleave`), each thread interleaving its own;
    // every value of `scratch` is written there, so it is not cleared.
    scratch.resize(tiles * k * ROWS, 0.0);
    if !split || (tiles < 2 && panels < 2) {
        interleave(x, k, scratch);
        panels_into(Rows::Tiles(scratch, m), w, bias, relu, 0..panels, y, n);
    } else if tiles >= panels {
        // Many rows (a convolution's positions): each thread takes half the tiles and all the
        // panels, and writes its own rows of `y`.
        let mid = tiles / 2;
        let (x_left, x_right) = x.split_at(mid * ROWS * k);
        let (left, right) = scratch.split_at_mut(mid * k * ROWS);
        let (y_left, y_right) = y.split_at_mut(mid * ROWS * n);
        crate::pool::join(
            || {
                interleave(x_left, k, left);
                panels_into(Rows::Tiles(left, mid * ROWS), w, bias, relu, 0..panels, y_left, n)
            },
            || {
                interleave(x_right, k, right);
                panels_into(Rows::Tiles(right, m - mid * ROWS), w, bias, relu, 0..panels, y_right, n)
            },
        );
    } else {
        // Few rows, many columns (dim32's fc with a group of images, tiny's last convolution):
        // each weight serves few rows, so the product waits on reading the weights; each
        // thread reads half of them.
        scratch.resize(tiles * k * ROWS + right_len(w, m), 0.0);
        let (tiled, right) = scratch.split_at_mut(tiles * k * ROWS);
        interleave(x, k, tiled);
        by_panels(Rows::Tiles(tiled, m), w, bias, relu, y, right);
    }
}

/// The room [`by_panels`] needs for the right half of `m` rows.
fn right_len(w: &Packed, m: usize) -> usize {
    m * (w.n - w.count() / 2 * PANEL)
}

/// [`panels_into`] of all panels on two threads, each computing half of them: panels
/// `[mid, panels)` go into `right` (the caller's scratch, [`right_len`] long: the threads cannot
/// share `y`'s rows), copied into `y` after.
fn by_panels(rows: Rows, w: &Packed, bias: &[f32], relu: bool, y: &mut [f32], right: &mut [f32]) {
    let (panels, n) = (w.count(), w.n);
    let m = y.len() / n;
    let mid = panels / 2;
    let right_cols = n - mid * PANEL;
    let right = &mut right[..m * right_cols];
    crate::pool::join(|| panels_into(rows, w, bias, relu, 0..mid, y, n), || panels_into(rows, w, &bias[mid * PANEL..], relu, mid..panels, right, right_cols));
    for (row, part) in y.chunks_exact_mut(n).zip(right.chunks_exact(right_cols)) {
        row[mid * PANEL..].copy_from_slice(part);
    }
}

/// The rows of `x` as [`product`] hands them to [`panels_into`].
#[derive(Clone, Copy)]
enum Rows<'a> {
    /// A single row `[k]`.
    One(&'a [f32]),
    /// `m` rows interleaved by [`interleave`].
    Tiles(&'a [f32], usize),
}

/// `x` `[m][k]` as tiles of [`ROWS`] rows, each `[k][ROWS]`, into `tiles` (room for whole
/// tiles: the last one's missing rows are written as zeros): at each step a tile's multiply-adds
/// read `ROWS` neighbouring values. Read row by row, the eight rows' addresses were a chain of
/// dependent adds, the loop's bottleneck. Written tile by tile, step by step, so that the
/// stores are in order and the eight loads are one base address plus constant offsets.
fn interleave(x: &[f32], k: usize, tiles: &mut [f32]) {
    let mut rows = x.chunks_exact(ROWS * k);
    let mut out = tiles.chunks_exact_mut(ROWS * k);
    for (rows, tile) in rows.by_ref().zip(out.by_ref()) {
        let rows: [&[f32]; ROWS] = std::array::from_fn(|r| &rows[r * k..(r + 1) * k]);
        for (j, step) in tile.chunks_exact_mut(ROWS).enumerate() {
            for (v, row) in step.iter_mut().zip(rows) {
                *v = row[j];
            }
        }
    }
    // The last, partial tile.
    if let Some(tile) = out.next() {
        tile.fill(0.0);
        for (r, row) in rows.remainder().chunks_exact(k).enumerate() {
            for (v, &x) in tile[r..].iter_mut().step_by(ROWS).zip(row) {
                *v = x;
            }
        }
    }
}

/// The columns of panels `range` of every row into `out` (row stride `stride`, the range's
/// first column at column 0, `bias` starting at that column).
fn panels_into(rows: Rows, w: &Packed, bias: &[f32], relu: bool, range: std::ops::Range<usize>, out: &mut [f32], stride: usize) {
    let k = w.k;
    for (i, p) in range.enumerate() {
        let (panel, col) = (w.panel(p), i * PANEL);
        let cols = (stride - col).min(PANEL);
        let mut store = |row: usize, acc: &[f32; PANEL]| {
            let dst = &mut out[row * stride + col..][..cols];
            for ((d, &a), &b) in dst.iter_mut().zip(acc).zip(&bias[col..col + cols]) {
                let v = a + b;
                *d = if relu { v.max(0.0) } else { v };
            }
        };
        match rows {
            Rows::One(x) => store(0, &row_times_panel(x, panel)),
            Rows::Tiles(tiles, m) => {
                for (t, tile) in tiles.chunks_exact(k * ROWS).enumerate() {
                    let acc = tile_times_panel(tile, panel);
                    for (r, acc) in acc.iter().enumerate().take(m - t * ROWS) {
                        store(t * ROWS + r, acc);
                    }
                }
            }
        }
    }
}

/// `Σ_k tile[k][r] · panel[k][..]` for each of the tile's [`ROWS`] rows.
#[multiversion(targets("x86_64+avx512f+fma", "x86_64+avx2+fma", "aarch64+neon"))]
fn tile_times_panel(tile: &[f32], panel: &[f32]) -> [[f32; PANEL]; ROWS] {
    // Fused multiply-adds where the CPU has them (where it does not, `mul_add` calls libm).
    if target_cfg_f!(any(target_feature = "fma", target_feature = "neon")) { tile_sums::<true>(tile, panel) } else { tile_sums::<false>(tile, panel) }
}

#[inline(always)]
fn tile_sums<const FUSED: bool>(tile: &[f32], panel: &[f32]) -> [[f32; PANEL]; ROWS] {
    // Local sums, returned by value, so that they live in registers.
    let mut sum = [[0f32; PANEL]; ROWS];
    for (x, w) in tile.chunks_exact(ROWS).zip(panel.chunks_exact(PANEL)) {
        // Columns outside, rows inside: the row loop unrolls, and the column loop is the one
        // the compiler vectorises (rows outside, it vectorised across rows, with gathers).
        for j in 0..PANEL {
            for r in 0..ROWS {
                sum[r][j] = if FUSED { x[r].mul_add(w[j], sum[r][j]) } else { sum[r][j] + x[r] * w[j] };
            }
        }
    }
    sum
}

/// `Σ_k x[k] · panel[k][..]` for one row `x` (`[k]`): the fc layer of a single image.
#[multiversion(targets("x86_64+avx512f+fma", "x86_64+avx2+fma", "aarch64+neon"))]
fn row_times_panel(x: &[f32], panel: &[f32]) -> [f32; PANEL] {
    if target_cfg_f!(any(target_feature = "fma", target_feature = "neon")) { row_sums::<true>(x, panel) } else { row_sums::<false>(x, panel) }
}

/// With one row there is one multiply-add per step, each waiting for the one before: the sums
/// are kept in [`ROWS`] partial sums (steps `k mod ROWS`), independent, added at the end.
#[inline(always)]
fn row_sums<const FUSED: bool>(x: &[f32], panel: &[f32]) -> [f32; PANEL] {
    let mut part = [[0f32; PANEL]; ROWS];
    let whole = x.len() / ROWS * ROWS;
    for (xs, ws) in x[..whole].chunks_exact(ROWS).zip(panel.chunks_exact(ROWS * PANEL)) {
        // Columns outside, as in `tile_sums`.
        for j in 0..PANEL {
            for r in 0..ROWS {
                part[r][j] = if FUSED { xs[r].mul_add(ws[r * PANEL + j], part[r][j]) } else { part[r][j] + xs[r] * ws[r * PANEL + j] };
            }
        }
    }
    for (&x, w) in x[whole..].iter().zip(panel[whole * PANEL..].chunks_exact(PANEL)) {
        for j in 0..PANEL {
            part[0][j] += x * w[j];
        }
    }
    let mut sum = [0f32; PANEL];
    for p in &part {
        sum.iter_mut().zip(p).for_each(|(s, v)| *s += v);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len).map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0).collect()
    }

    /// The product as three loops in f64: what every layout and thread split must give.
    fn reference(x: &[f32], m: usize, w: &[f32], k: usize, n: usize, bias: &[f32], relu: bool) -> Vec<f32> {
        let mut y = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let s = bias[j] as f64 + (0..k).map(|p| x[i * k + p] as f64 * w[p * n + j] as f64).sum::<f64>();
                y[i * n + j] = if relu { s.max(0.0) as f32 } else { s as f32 };
            }
        }
        y
    }

    #[test]
    fn equals_the_three_loops_on_the_encoders_shapes_and_ragged_ones() {
        // dim32's conv2 and fc at batch 1 and 8, tiny's conv1, split products whose last tile
        // or panel is partial (by tiles, then by panels), then small ragged ones that are not
        // split, and a single value. One scratch serves every call, as in a model, and starts
        // as NaN: a value left from another shape, or never written, would show.
        let mut scratch = vec![f32::NAN; 1 << 16];
        for (m, k, n) in [(64, 1024, 128), (1, 4096, 1024), (8, 4096, 1024), (256, 27, 32), (61, 300, 40), (9, 2000, 100), (13, 37, 21), (3, 5, 17), (1, 1, 1)]
        {
            let (x, w, bias) = (values(m * k, 1), values(k * n, 2), values(n, 3));
            let packed = Packed::new(&w, k, n);
            for relu in [false, true] {
                let want = reference(&x, m, &w, k, n, &bias, relu);
                for threads in [1, 2] {
                    let mut y = vec![f32::NAN; m * n];
                    product(&x, m, &packed, &bias, relu, &mut y, threads, &mut scratch);
                    for (i, (g, w)) in y.iter().zip(&want).enumerate() {
                        // k products of values ≤ 1 summed in f32: within k·2⁻²³ of the exact sum.
                        assert!((g - w).abs() <= k as f32 * 1.2e-7 + 1e-6, "{m}×{k}×{n} relu {relu} threads {threads}: y[{i}] = {g}, want {w}");
                    }
                }
            }
        }
    }

    #[test]
    fn panels_are_the_columns_padded_with_zeros() {
        let w: Vec<f32> = (0..3 * 20).map(|v| v as f32).collect();
        let p = Packed::new(&w, 3, 20);
        assert_eq!(p.count(), 2);
        assert_eq!(p.panel(0)[..PANEL], w[..PANEL]);
        assert_eq!(p.panel(0)[PANEL..2 * PANEL], w[20..20 + PANEL]);
        // The second panel holds columns 16..20 of each row, then zeros.
        assert_eq!(p.panel(1)[..PANEL], [16.0, 17.0, 18.0, 19.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(p.panel(1)[PANEL..PANEL + 4], [36.0, 37.0, 38.0, 39.0]);
    }
}
