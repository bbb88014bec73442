//! The f32 encoder on our own products: what [`crate::Encoder`] runs an f32 file on
//! when the file is the encoder `trainer export` writes ([`graph`] says which files are).
//!
//! tract plans a general graph; at batch 1 it runs each product on one thread and converts
//! between its layouts around each convolution. This path runs the encoder's own op set in the
//! int8 fast path's layout ([`crate::fast`]), with f32 products:
//!
//! ```text
//! per layer, HWC maps, a group of images at once
//! conv   cols [images·positions][kernel²·C]   every receptive field gathered once, a kernel
//!                                             row of taps one run of kernel·C values
//!        y    [images·positions][out] = bias + cols · W      W [(ky, kx, c)][out]
//! pool   y    [images][C] = the mean over positions
//! dense  y    [images][out] = bias + x · W                   W [in][out], the rows of a
//!                                                            CHW-flattened map put in HWC order
//! ```
//!
//! each followed by its ReLU where the file has one. The products are [`kernel::product`], on
//! weights packed once at load (why not a matrix crate: that module's doc). At batch 1 each
//! large product is split between the caller and a worker kept spinning through the run
//! ([`crate::pool`], and why not rayon's); a batch is shared out between the cores instead (rayon),
//! each running groups of [`GROUP`] images as one product per layer. The sums are the same as
//! tract's in another order, so the two agree to f32 rounding (`tests/float.rs` compares them
//! on the shipped files, golden images and random ones).

mod graph;
mod kernel;

use crate::fields::Fields;
use kernel::Packed;

use crate::preprocess::{INPUT_CHANNELS, INPUT_LEN, INPUT_SIDE};
use std::cell::RefCell;

/// Images run through each layer as one product in a batch: the rows of dim32's largest product
/// (fc, 16 MiB of f32 weights) are read once per group instead of once per image.
const GROUP: usize = 8;

/// A convolution with its weights in the order an HWC field is gathered in.
#[derive(Debug, Clone)]
struct Conv {
    out: usize,
    fields: Fields,
    /// `[(ky, kx, c)][out]`, packed.
    weight: Packed,
    bias: Vec<f32>,
    relu: bool,
}

/// A fully connected layer (`Gemm`).
#[derive(Debug, Clone)]
struct Dense {
    out: usize,
    inp: usize,
    /// `[in][out]`, packed.
    weight: Packed,
    bias: Vec<f32>,
    relu: bool,
}

#[derive(Debug, Clone)]
enum Layer {
    Conv(Conv),
    /// The global average pool: `[positions][channels]` → `[channels]`.
    Pool {
        channels: usize,
        positions: usize,
    },
    Dense(Dense),
}

/// A run's buffers, kept per thread between runs: the maps in and out of a layer, the
/// gathered fields and the interleaved rows (reallocated per call, they cost page faults).
#[derive(Default)]
struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
    cols: Vec<f32>,
    tiles: Vec<f32>,
}

/// An f32 encoder of `trainer export`'s form, ready to run. `Send + Sync`: share it.
#[derive(Debug, Clone)]
pub struct FloatModel {
    layers: Vec<Layer>,
    dim: usize,
}

impl FloatModel {
    /// The encoder in `bytes` (an ONNX file), if it has the form [`graph`] describes; `None`
    /// for any other file, valid or not (tract runs those).
    pub fn from_onnx(bytes: &[u8]) -> Option<Self> {
        let layers = graph::read(bytes)?;
        let dim = match layers.last()? {
            Layer::Dense(d) => d.out,
            _ => return None,
        };
        Some(Self { layers, dim })
    }

    /// Width of the embedding.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// `y` `[n, dim]` of preprocessed images `input` `[n, 3, 32, 32]` (CHW, as
    /// [`crate::preprocess`] writes them), on up to `threads` threads.
    pub fn run(&self, input: &[f32], threads: usize) -> Vec<f32> {
        let n = input.len() / INPUT_LEN;
        let mut y = vec![0f32; n * self.dim];
        let threads = threads.max(1);
        if n <= 1 || threads == 1 {
            // One image: its products are split between the cores (`kernel::product`), by
            // hand-offs to a worker kept spinning through the run (`pool`).
            let each = if n <= 1 { threads } else { 1 };
            if each > 1 {
                crate::pool::wake();
            }
            self.run_groups(input, &mut y, each);
            return y;
        }
        // A batch: shared out between the cores, whole groups each.
        let share = n.div_ceil(threads).div_ceil(GROUP) * GROUP;
        if threads == 2 && share < n {
            // This thread and the spinning worker, as `fast::FastModel::run_batch` does (rayon's
            // two workers, this thread waiting, gave batches a second core in some processes
            // only).
            let (x0, x1) = input.split_at(share * INPUT_LEN);
            let (y0, y1) = y.split_at_mut(share * self.dim);
            crate::pool::wake();
            crate::pool::join(|| self.run_groups(x0, y0, 1), || self.run_groups(x1, y1, 1));
            return y;
        }
        rayon::scope(|s| {
            for (x, y) in input.chunks(share * INPUT_LEN).zip(y.chunks_mut(share * self.dim)) {
                s.spawn(move |_| self.run_groups(x, y, 1));
            }
        });
        y
    }

    /// Runs `input` in groups of [`GROUP`] images, each product on `threads` threads, in this
    /// thread's [`Scratch`].
    fn run_groups(&self, input: &[f32], y: &mut [f32], threads: usize) {
        thread_local! {
            static SCRATCH: RefCell<Scratch> = RefCell::default();
        }
        // Busy only if this thread is already inside a run (a rayon worker waiting on a split
        // can pick up another call's work): that one gets buffers of its own.
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => self.run_groups_in(input, y, threads, &mut scratch),
            Err(_) => self.run_groups_in(input, y, threads, &mut Scratch::default()),
        })
    }

    fn run_groups_in(&self, input: &[f32], y: &mut [f32], threads: usize, s: &mut Scratch) {
        for (x, y) in input.chunks(GROUP * INPUT_LEN).zip(y.chunks_mut(GROUP * self.dim)) {
            let images = x.len() / INPUT_LEN;
            to_hwc(x, &mut s.a);
            for layer in &self.layers {
                match layer {
                    Layer::Conv(c) => c.forward(&s.a, images, &mut s.cols, &mut s.b, threads, &mut s.tiles),
                    Layer::Pool { channels, positions } => pool(&s.a, *channels, *positions, &mut s.b),
                    Layer::Dense(d) => d.forward(&s.a, images, &mut s.b, threads, &mut s.tiles),
                }
                std::mem::swap(&mut s.a, &mut s.b);
            }
            y.copy_from_slice(&s.a);
        }
    }
}

impl Conv {
    /// `y` `[images·positions][out]` of HWC maps `x` `[images][in_side²][inp]`.
    fn forward(&self, x: &[f32], images: usize, cols: &mut Vec<f32>, y: &mut Vec<f32>, threads: usize, tiles: &mut Vec<f32>) {
        let (rows, n) = (images * self.fields.area(), self.fields.n());
        // Every value of `cols` is written (padding taps as 0.0): no clearing.
        cols.resize(rows * n, 0.0);
        self.fields.gather(x, 0..rows, n, 0.0, |v| v, cols);
        y.resize(rows * self.out, 0.0);
        kernel::product(cols, rows, &self.weight, &self.bias, self.relu, y, threads, tiles);
    }
}

impl Dense {
    /// `y` `[images][out]` of `x` `[images][inp]`.
    fn forward(&self, x: &[f32], images: usize, y: &mut Vec<f32>, threads: usize, tiles: &mut Vec<f32>) {
        y.resize(images * self.out, 0.0);
        kernel::product(&x[..images * self.inp], images, &self.weight, &self.bias, self.relu, y, threads, tiles);
    }
}

/// CHW images `[n][3][32][32]` as HWC `[n][32·32][3]`.
fn to_hwc(x: &[f32], hwc: &mut Vec<f32>) {
    const POSITIONS: usize = INPUT_SIDE * INPUT_SIDE;
    hwc.clear();
    hwc.resize(x.len(), 0.0);
    for (img, out) in x.chunks_exact(INPUT_LEN).zip(hwc.chunks_exact_mut(INPUT_LEN)) {
        // Positions outside, channels inside: no division per value (a tenth of tiny's run
        // went to `i / 3` and `i % 3`).
        let planes: [&[f32]; INPUT_CHANNELS] = std::array::from_fn(|c| &img[c * POSITIONS..(c + 1) * POSITIONS]);
        for (p, px) in out.chunks_exact_mut(INPUT_CHANNELS).enumerate() {
            for (v, plane) in px.iter_mut().zip(planes) {
                *v = plane[p];
            }
        }
    }
}

/// The mean over positions of each image's `[positions][channels]` map.
fn pool(x: &[f32], channels: usize, positions: usize, y: &mut Vec<f32>) {
    y.clear();
    for map in x.chunks_exact(positions * channels) {
        let start = y.len();
        y.resize(start + channels, 0.0);
        for row in map.chunks_exact(channels) {
            y[start..].iter_mut().zip(row).for_each(|(s, v)| *s += v);
        }
        y[start..].iter_mut().for_each(|s| *s /= positions as f32);
    }
}
