//! The encoder's stride-2 convolutions as one matrix product over the whole batch.
//!
//! burn's CPU backend convolves image by image: one small product per image (`C_out × k²C_in`
//! by `k²C_in × H_out·W_out`, 16 columns for the third layer) and the weight gradient as a
//! convolution whose output is the kernel itself (again 16 columns). Products that narrow run
//! at a third of what the same library reaches on one large product (measured: 75 against
//! 200 GFLOP/s on 2 cores, README "Performance").
//!
//! Here activations are **rows**, one per image location (`[B·H·W, C]`, image-major then
//! row-major: the NHWC layout). A `k×k` convolution with stride 2 and padding 1 becomes
//!
//! ```text
//!   cols = rows gathered for every (output location, tap)   [B·H'·W'·k², C] = [B·H'·W', k²·C]
//!   out  = cols · W' + b                                     W' = W permuted to [k·k·C_in, C_out]
//! ```
//!
//! A tap that falls in the padding reads one zero row appended after the input's rows. The
//! gather is burn's `select` (its backward, a scatter-add, is col2im) and the rest is one
//! `matmul` each way, so autodiff needs nothing new and every backend runs it. The same
//! function as `Conv2d::forward`: `tests::rows_match_conv2d` compares values and gradients.

use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use std::sync::Mutex;

/// Stride and padding of every encoder convolution.
const STRIDE: usize = 2;
const PAD: usize = 1;

/// Where a set of rows came from: `batch` images of `height × width` locations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub batch: usize,
    pub height: usize,
    pub width: usize,
}

impl Grid {
    pub fn rows(&self) -> usize {
        self.batch * self.height * self.width
    }

    /// The output grid of a `kernel × kernel` convolution with stride 2 and padding 1.
    pub fn after_conv(&self, kernel: usize) -> Self {
        let out = |n: usize| (n + 2 * PAD - kernel) / STRIDE + 1;
        Self { batch: self.batch, height: out(self.height), width: out(self.width) }
    }
}

/// Row index read by every (output location, tap), in `cols` order; `grid.rows()` (the appended
/// zero row) for taps in the padding.
pub fn gather_indices(grid: Grid, kernel: usize) -> Vec<i64> {
    let out = grid.after_conv(kernel);
    let zero_row = grid.rows() as i64;
    let mut idx = Vec::with_capacity(out.rows() * kernel * kernel);
    for b in 0..grid.batch {
        for oh in 0..out.height {
            for ow in 0..out.width {
                for kh in 0..kernel {
                    for kw in 0..kernel {
                        // Input coordinates, shifted by the padding (so -1 is the top/left pad).
                        let (ih, iw) = ((oh * STRIDE + kh) as isize - PAD as isize, (ow * STRIDE + kw) as isize - PAD as isize);
                        let inside = (0..grid.height as isize).contains(&ih) && (0..grid.width as isize).contains(&iw);
                        idx.push(if inside { ((b * grid.height + ih as usize) * grid.width + iw as usize) as i64 } else { zero_row });
                    }
                }
            }
        }
    }
    idx
}

/// How many index tensors [`gather_tensor`] keeps (a run sees a few grids: its batch sizes times
/// three layers).
const CACHED_INDEX_TENSORS: usize = 16;

/// [`gather_indices`] as a tensor on `device`, built once per grid, kernel and device (building
/// and uploading them every forward was ~1 % of a dim32 step).
fn gather_tensor(grid: Grid, kernel: usize, device: &Device) -> Tensor<1, Int> {
    type Entry = (Grid, usize, Device, Tensor<1, Int>);
    static CACHE: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
    // A panic elsewhere while the lock was held leaves a list that is still valid.
    let mut cache = CACHE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((.., t)) = cache.iter().find(|(g, k, d, _)| (*g, *k) == (grid, kernel) && d == device) {
        return t.clone();
    }
    let idx = gather_indices(grid, kernel);
    let n = idx.len();
    let t = Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), device);
    if cache.len() == CACHED_INDEX_TENSORS {
        cache.remove(0);
    }
    cache.push((grid, kernel, device.clone(), t.clone()));
    t
}

/// `conv` (stride 2, padding 1) on rows `x` (`[grid.rows(), C_in]`): rows `[out.rows(), C_out]`;
/// the product in bf16 when `bf16`.
pub fn conv_rows(conv: &Conv2d, x: Tensor<2>, grid: Grid, bf16: bool) -> (Tensor<2>, Grid) {
    let [c_out, c_in, kernel, _] = conv.weight.dims();
    let device = x.device();
    let out = grid.after_conv(kernel);
    let padded = Tensor::cat(vec![x, Tensor::zeros([1, c_in], &device)], 0);
    let cols = padded.select(0, gather_tensor(grid, kernel, &device)).reshape([out.rows(), kernel * kernel * c_in]);
    // [C_out, C_in, kh, kw] → [k²·C_in, C_out] in the cols' order (tap-major, then channel): a
    // batched transpose to [C_out, k², C_in] (which burn copies tile by tile, and the weight's
    // gradient back) viewed transposed (a stride, no copy). One 4-D permutation instead fell to
    // burn's element-by-element strided copy, forward and for the gradient (2 % of a step).
    let w = conv.weight.val().reshape([c_out, c_in, kernel * kernel]).swap_dims(1, 2).reshape([c_out, kernel * kernel * c_in]).transpose();
    let mut y = super::product(cols, w, bf16);
    if let Some(bias) = &conv.bias {
        y = y + bias.val().unsqueeze_dim(0);
    }
    (y, out)
}

/// `bn` on rows `[N, C]` (one per image location): the same function as `BatchNorm::forward` on
/// `[B, C, H, W]`, statistics per channel over every row.
///
/// burn's batch norm transposes its input to channel-major and back, forward and backward; on
/// rows that is a full transposition each way (measured 3–4× the cost of the formula below,
/// whose column means over rows are one pass). Training mode (an autodiff device and the layer
/// not frozen) normalises by the batch's biased variance and updates the running statistics
/// exactly as `BatchNorm::forward` does; otherwise it uses the running statistics.
pub fn batch_norm_rows(bn: &BatchNorm, x: Tensor<2>) -> Tensor<2> {
    let c = x.dims()[1];
    let device = x.device();
    let (centred, var) = if device.is_autodiff() && bn.training.is_enabled() {
        let mean = x.clone().mean_dim(0); // [1, C]
        let centred = x - mean.clone();
        let var = (centred.clone() * centred.clone()).mean_dim(0); // biased, [1, C]
        update_running(bn, mean.reshape([c]), var.clone().reshape([c]));
        (centred, var)
    } else {
        let mean = bn.running_mean.value().to_device(&device).reshape([1, c]);
        (x - mean, bn.running_var.value().to_device(&device).reshape([1, c]))
    };
    let scale = bn.gamma.val().reshape([1, c]) / (var + bn.epsilon).sqrt();
    centred * scale + bn.beta.val().reshape([1, c])
}

/// BatchNorm's running statistics after a training batch with `mean` and biased `var`
/// (`running ← (1 − m)·running + m·batch`, as `BatchNorm::forward`).
pub fn update_running(bn: &BatchNorm, mean: Tensor<1>, var: Tensor<1>) {
    let device = mean.device();
    let m = bn.momentum;
    let running_mean = bn.running_mean.value_sync().to_device(&device);
    let running_var = bn.running_var.value_sync().to_device(&device);
    bn.running_mean.update(running_mean.mul_scalar(1.0 - m).add(mean.detach().mul_scalar(m)).detach());
    bn.running_var.update(running_var.mul_scalar(1.0 - m).add(var.detach().mul_scalar(m)).detach());
}

/// Rows `[B·H·W, C]` viewed as `[B, C, H, W]` (a permutation: no copy on the CPU backend).
pub fn rows_to_nchw(rows: Tensor<2>, grid: Grid) -> Tensor<4> {
    let c = rows.dims()[1];
    rows.reshape([grid.batch, grid.height, grid.width, c]).permute([0, 3, 1, 2])
}

/// `[B, C, H, W]` as rows `[B·H·W, C]` (the inverse of [`rows_to_nchw`]).
pub fn nchw_to_rows(x: Tensor<4>) -> (Tensor<2>, Grid) {
    let [b, c, h, w] = x.dims();
    (x.permute([0, 2, 3, 1]).reshape([b * h * w, c]), Grid { batch: b, height: h, width: w })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn output_grid_and_padding_taps() {
        let g = Grid { batch: 2, height: 4, width: 4 };
        assert_eq!(g.after_conv(4), Grid { batch: 2, height: 2, width: 2 });
        assert_eq!(g.after_conv(3), Grid { batch: 2, height: 2, width: 2 });
        let idx = gather_indices(g, 3);
        assert_eq!(idx.len(), 2 * 4 * 9);
        // First output of image 0: taps (−1,−1) (−1,0) (−1,1) are padding, then rows 0 1, …
        assert_eq!(&idx[..9], &[32, 32, 32, 32, 0, 1, 32, 4, 5]);
        // Last output of image 1 (oh = ow = 1): input rows 2..4 of columns 1..4, image offset 16.
        assert_eq!(&idx[idx.len() - 9..], &[21, 22, 23, 25, 26, 27, 29, 30, 31]);
    }

    /// Values and every gradient (input, weight, bias) against burn's `Conv2d::forward`, for
    /// both encoders' kernels (4 and 3), on odd and even grids.
    #[test]
    fn rows_match_conv2d() {
        let device = Device::flex().autodiff();
        for (kernel, h, c_in, c_out) in [(4, 8, 5, 7), (3, 8, 4, 6), (3, 7, 3, 5), (4, 6, 2, 3)] {
            let conv = Conv2dConfig::new([c_in, c_out], [kernel, kernel]).with_stride([2, 2]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(&device);
            let n = 3 * c_in * h * h;
            let x0: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
            let x = Tensor::<4>::from_data(TensorData::new(x0, [3, c_in, h, h]), &device).require_grad();
            // A weighting of the output so the gradient differs per element.
            let want = conv.forward(x.clone());
            let wdims = want.dims();
            let m: Tensor<4> =
                Tensor::from_data(TensorData::new((0..wdims.iter().product::<usize>()).map(|i| (i % 13) as f32 - 6.0).collect::<Vec<f32>>(), wdims), &device);
            let (rows, grid) = nchw_to_rows(x.clone());
            let (y, out) = conv_rows(&conv, rows, grid, false);
            let got = rows_to_nchw(y, out);
            assert_eq!(got.dims(), wdims);
            let close = |a: Vec<f32>, b: Vec<f32>, what: &str| {
                assert_eq!(a.len(), b.len());
                for (i, (p, q)) in a.iter().zip(&b).enumerate() {
                    assert!((p - q).abs() <= 1e-5 * (1.0 + q.abs()), "{what} k={kernel} h={h} [{i}]: {p} vs {q}");
                }
            };
            close(values(got.clone()), values(want.clone()), "output");
            let g_want = (want * m.clone()).sum().backward();
            let g_got = (got * m).sum().backward();
            close(values(x.grad(&g_got).unwrap()), values(x.grad(&g_want).unwrap()), "input grad");
            close(values(conv.weight.val().grad(&g_got).unwrap()), values(conv.weight.val().grad(&g_want).unwrap()), "weight grad");
            let b = conv.bias.as_ref().unwrap();
            close(values(b.val().grad(&g_got).unwrap()), values(b.val().grad(&g_want).unwrap()), "bias grad");
        }
    }

    /// Against `BatchNorm::forward` on the same values laid out `[B, C, H, W]`: output, input
    /// and parameter gradients, the running statistics after two training batches, and the
    /// inference path (off autodiff) that uses them.
    #[test]
    fn batch_norm_rows_matches_batchnorm() {
        use burn::nn::BatchNormConfig;
        use rand::{Rng, SeedableRng, rngs::StdRng};
        // From a host RNG: the device's RNG is shared with other tests.
        let random = |dims: [usize; 4], mean: f32, std: f32, seed: u64, device: &Device| {
            let mut rng = StdRng::seed_from_u64(seed);
            let n = dims.iter().product::<usize>();
            Tensor::<4>::from_data(TensorData::new((0..n).map(|_| mean + std * (rng.random::<f32>() * 2.0 - 1.0) * 1.7).collect::<Vec<f32>>(), dims), device)
        };
        let d = Device::flex().autodiff();
        let (ours, theirs) = (BatchNormConfig::new(6).init(&d), BatchNormConfig::new(6).init(&d));
        let close = |a: Vec<f32>, b: Vec<f32>, what: &str| {
            for (i, (p, q)) in a.iter().zip(&b).enumerate() {
                assert!((p - q).abs() <= 1e-5 * (1.0 + q.abs()), "{what}[{i}]: {p} vs {q}");
            }
        };
        for seed in [3, 4] {
            let x = random([3, 6, 4, 5], 2.0, 3.0, seed, &d).require_grad();
            let m = random([3, 6, 4, 5], 0.0, 1.0, seed + 10, &d);
            let want = theirs.forward(x.clone());
            let (rows, grid) = nchw_to_rows(x.clone());
            let got = rows_to_nchw(batch_norm_rows(&ours, rows), grid);
            close(values(got.clone()), values(want.clone()), "output");
            let (g_got, g_want) = ((got * m.clone()).sum().backward(), (want * m).sum().backward());
            close(values(x.grad(&g_got).unwrap()), values(x.grad(&g_want).unwrap()), "input grad");
            close(values(ours.gamma.val().grad(&g_got).unwrap()), values(theirs.gamma.val().grad(&g_want).unwrap()), "gamma grad");
            close(values(ours.beta.val().grad(&g_got).unwrap()), values(theirs.beta.val().grad(&g_want).unwrap()), "beta grad");
        }
        close(values(ours.running_mean.value()), values(theirs.running_mean.value()), "running mean");
        close(values(ours.running_var.value()), values(theirs.running_var.value()), "running var");
        let plain = Device::flex();
        let x = random([2, 6, 3, 3], 1.0, 2.0, 7, &plain);
        let (ours, theirs) = (ours.valid(), theirs.valid());
        let (rows, grid) = nchw_to_rows(x.clone());
        close(values(rows_to_nchw(batch_norm_rows(&ours, rows), grid)), values(theirs.forward(x)), "inference");
    }
}
