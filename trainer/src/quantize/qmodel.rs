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
        let mut p = Vec::new();
        let f = |p: &mut Vec<u8>, v: f32| p.extend(v.to_le_bytes());
        f(&mut p, IMAGE_SCALE);
        p.extend([self.pool_scale.is_some() as u8, 0, 0, 0]);
        let conv = |p: &mut Vec<u8>, c: &QConv| {
            p.extend((c.dims[0] as u16).to_le_bytes());
            p.extend((c.dims[1] as u16).to_le_bytes());
            p.extend([c.dims[2] as u8, c.stride as u8, c.pad as u8, 0]);
            f(p, c.x_scale);
            p.extend([c.x_zero, 0, 0, 0]);
            f(p, c.y_scale);
            p.extend(c.weight.iter().map(|&w| w as u8));
            c.w_scale.iter().for_each(|&s| f(p, s));
            c.bias.iter().for_each(|&b| p.extend(b.to_le_bytes()));
        };
        self.convs.iter().for_each(|c| conv(&mut p, c));
        if let Some(s) = self.pool_scale {
            f(&mut p, s);
        }
        conv(&mut p, &self.fc);
        p.extend((self.y.dims[0] as u16).to_le_bytes());
        p.extend((self.y.dims[1] as u16).to_le_bytes());
        p.extend(self.y.weight.iter().map(|&w| w as u8));
        self.y.rescale.iter().for_each(|&s| f(&mut p, s));
        self.y.bias.iter().for_each(|&b| f(&mut p, b));
        f(&mut p, self.y.print_scale);
        let mut out = Vec::with_capacity(blob::HEADER_LEN + p.len());
        out.extend(blob::MAGIC);
        out.extend(blob::VERSION.to_le_bytes());
        out.extend([0, 0]);
        out.extend((p.len() as u32).to_le_bytes());
        out.extend(blob::checksum(&p).to_le_bytes());
        out.extend(p);
        out
    }
}
