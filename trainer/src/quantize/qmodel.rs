//! The quantized encoder, computed once and written twice: as int8 ONNX (tract, onnxruntime)
//! and as the no_std engine's blob (`dim_runtime::engine::blob`), so both hold the same integers.

use super::calibrate::Ranges;
use crate::export::Layers;
use dim_runtime::engine::blob;

/// The image's quantization: uint8, zero point 128, scale 1/127 (it lies in `[-1, 1]`).
pub const IMAGE_SCALE: f32 = 1.0 / 127.0;
pub const IMAGE_ZERO: u8 = 128;

/// A QLinearConv: int8 OIHW weights with per-channel scales, int32 bias, uint8 in and out
/// (output zero point 0: saturating at 0 is the ReLU).
#[derive(Debug, Clone)]
pub struct QConv {
    /// `[out, in, k, k]`.
    pub dims: [usize; 4],
    pub stride: usize,
    pub pad: usize,
    pub weight: Vec<i8>,
    pub w_scale: Vec<f32>,
    pub bias: Vec<i32>,
    pub x_scale: f32,
    pub x_zero: u8,
    pub y_scale: f32,
}

/// `y`: int8 `[K, N]` weights, exact int32 accumulation, then `f32(acc)·rescale + bias`.
#[derive(Debug, Clone)]
pub struct QDense {
    pub dims: [usize; 2],
    pub weight: Vec<i8>,
    pub rescale: Vec<f32>,
    pub bias: Vec<f32>,
    /// Symmetric scale for printing y as int8 (max |y| over the calibration images / 127).
    pub print_scale: f32,
}

#[derive(Debug, Clone)]
pub struct QModel {
    pub convs: [QConv; 3],
    /// `tiny`: the scale `GlobalAveragePool`'s output is requantized to.
    pub pool_scale: Option<f32>,
    pub fc: QConv,
    pub y: QDense,
}

/// Per-channel symmetric int8: `(q, scales)`; `channels` splits `w` into contiguous rows
/// (conv `[O, …]`), or strides over columns when `columns` (Gemm `[K, N]`).
pub fn quantize_weights(w: &[f32], channels: usize, columns: bool) -> (Vec<i8>, Vec<f32>) {
    let idx = |i: usize| if columns { i % channels } else { i / (w.len() / channels) };
    let mut max = vec![0f32; channels];
    w.iter().enumerate().for_each(|(i, v)| max[idx(i)] = max[idx(i)].max(v.abs()));
    let scales: Vec<f32> = max.iter().map(|m| if *m > 0.0 { m / 127.0 } else { 1.0 }).collect();
    let q = w.iter().enumerate().map(|(i, v)| (v / scales[idx(i)]).round().clamp(-127.0, 127.0) as i8).collect();
    (q, scales)
}

fn qconv(weight: &[f32], dims: [usize; 4], bias: &[f32], (stride, pad): (usize, usize), (x_scale, x_zero): (f32, u8), y_scale: f32) -> QConv {
    let (weight, w_scale) = quantize_weights(weight, dims[0], false);
    let bias = bias.iter().zip(&w_scale).map(|(b, s)| (b / (x_scale * s)).round() as i32).collect();
    QConv { dims, stride, pad, weight, w_scale, bias, x_scale, x_zero, y_scale }
}

impl QModel {
    pub fn new(layers: &Layers, ranges: &Ranges) -> Self {
        let mut x = (IMAGE_SCALE, IMAGE_ZERO);
        let convs = std::array::from_fn(|i| {
            let l = &layers.convs[i];
            let dims = [l.dims[0], l.dims[1], l.dims[2], l.dims[3]];
            let c = qconv(&l.weight, dims, &l.bias, (2, 1), x, ranges.relu[i] / 255.0);
            x = (c.y_scale, 0);
            c
        });
        let pool_scale = ranges.pool.filter(|_| layers.global_pool).map(|p| p / 255.0);
        if let Some(s) = pool_scale {
            x = (s, 0);
        }
        // fc as a convolution whose kernel covers the whole feature map: Gemm `[K, N]` → OIHW.
        let fc = &layers.fc;
        let (k, o) = (fc.dims[0], fc.dims[1]);
        let c = if layers.global_pool { k } else { layers.convs[2].dims[0] };
        let side = ((k / c) as f64).sqrt().round() as usize;
        let mut w = vec![0f32; k * o];
        for (i, row) in fc.weight.chunks(o).enumerate() {
            row.iter().enumerate().for_each(|(j, v)| w[j * k + i] = *v);
        }
        let fc = qconv(&w, [o, c, side, side], &fc.bias, (1, 0), x, ranges.fc / 255.0);
        let y = &layers.y;
        let (weight, ws) = quantize_weights(&y.weight, y.dims[1], true);
        let rescale = ws.iter().map(|s| s * fc.y_scale).collect();
        let y = QDense { dims: [y.dims[0], y.dims[1]], weight, rescale, bias: y.bias.clone(), print_scale: ranges.y_abs.max(1e-6) / 127.0 };
        Self { convs, pool_scale, fc, y }
    }

    /// The engine's blob (layout in `dim_runtime::engine::blob`).
    pub fn to_blob(&self) -> Vec<u8> {
        fn conv(c: &QConv) -> blob::ConvSpec<'_> {
            blob::ConvSpec {
                out: c.dims[0],
                inp: c.dims[1],
                kernel: c.dims[2],
                stride: c.stride,
                pad: c.pad,
                x_scale: c.x_scale,
                x_zero: c.x_zero,
                y_scale: c.y_scale,
                weight: &c.weight,
                w_scale: &c.w_scale,
                bias: &c.bias,
            }
        }
        let y = &self.y;
        blob::write(&blob::ModelSpec {
            image_scale: IMAGE_SCALE,
            convs: [conv(&self.convs[0]), conv(&self.convs[1]), conv(&self.convs[2])],
            pool_scale: self.pool_scale,
            fc: conv(&self.fc),
            y: blob::DenseSpec { inp: y.dims[0], out: y.dims[1], weight: &y.weight, rescale: &y.rescale, bias: &y.bias, print_scale: y.print_scale },
        })
    }
}
