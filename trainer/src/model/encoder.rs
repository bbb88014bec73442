//! The convolutional encoders: `dim32` (the paper's `basic32x32`) and `tiny` (for Cortex-M).
//!
//! Both map a `3×32×32` image in `[-1, 1]` to a local feature map (`C×8×8`, the M×M grid the
//! local objective works on), a `conv` map (`C'×4×4`), an `fc` vector and the representation `Y`.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;

use super::conv_rows::{Grid, batch_norm_rows, conv_rows, nchw_to_rows, rows_to_nchw};

/// Encoder shape. `EncoderConfig::dim32()` and `EncoderConfig::tiny()` are the shipped ones.
#[derive(Config, Debug)]
pub struct EncoderConfig {
    /// Output channels of the three stride-2 convolutions (the second is the local map).
    pub channels: [usize; 3],
    /// Square kernel of the convolutions (4 in the paper; padding 1 and stride 2 either way).
    pub kernel: usize,
    /// Global average pooling before `fc` (MCU-friendly) instead of flattening the 4×4 map.
    pub global_pool: bool,
    /// Width of the `fc` layer.
    pub fc: usize,
    /// Width of the representation `Y`.
    #[config(default = 64)]
    pub y_dim: usize,
}

impl EncoderConfig {
    /// The paper's encoder: 64-128-256 convs 4×4, flatten, fc 1024, Y 64 (≈ 4.92 M parameters).
    pub fn dim32() -> Self {
        Self::new([64, 128, 256], 4, false, 1024)
    }

    /// The MCU encoder: 32-64-128 convs 3×3, global average pool, fc 128, Y 64
    /// (118,016 parameters, 2.6 M MAC; fits 128 KiB of int8 weights).
    pub fn tiny() -> Self {
        Self::new([32, 64, 128], 3, true, 128)
    }

    pub fn by_name(name: &str) -> Option<Self> {
        match name {
            "dim32" => Some(Self::dim32()),
            "tiny" => Some(Self::tiny()),
            _ => None,
        }
    }

    fn fc_in(&self) -> usize {
        if self.global_pool { self.channels[2] } else { self.channels[2] * 16 }
    }

    /// Weights and biases (BatchNorm folded into the preceding layer, as deployed).
    pub fn deployed_params(&self) -> usize {
        let k2 = self.kernel * self.kernel;
        let [a, b, c] = self.channels;
        (3 * a * k2 + a) + (a * b * k2 + b) + (b * c * k2 + c) + (self.fc_in() * self.fc + self.fc) + (self.fc * self.y_dim + self.y_dim)
    }

    /// Multiply-accumulates for one 32×32 image.
    pub fn macs(&self) -> usize {
        let k2 = self.kernel * self.kernel;
        let [a, b, c] = self.channels;
        3 * a * k2 * 256 + a * b * k2 * 64 + b * c * k2 * 16 + self.fc_in() * self.fc + self.fc * self.y_dim
    }

    pub fn init(&self, device: &Device) -> EncoderNet {
        let conv = |i: usize, o: usize| ConvBlock {
            conv: Conv2dConfig::new([i, o], [self.kernel, self.kernel]).with_stride([2, 2]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(device),
            bn: BatchNormConfig::new(o).init(device),
        };
        let [a, b, c] = self.channels;
        EncoderNet {
            conv1: conv(3, a),
            conv2: conv(a, b),
            conv3: conv(b, c),
            fc: LinearConfig::new(self.fc_in(), self.fc).init(device),
            fc_bn: BatchNormConfig::new(self.fc).init(device),
            y: LinearConfig::new(self.fc, self.y_dim).init(device),
            global_pool: self.global_pool,
            bf16_products: false,
        }
    }
}

/// Convolution, BatchNorm, ReLU.
#[derive(Module, Debug)]
pub struct ConvBlock {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

impl ConvBlock {
    /// On rows (`[B·H·W, C]`, see [`conv_rows`]): BatchNorm over rows is BatchNorm over
    /// `(B, H, W)` per channel, the same statistics as on `[B, C, H, W]`.
    pub fn forward(&self, x: Tensor<2>, grid: Grid, bf16: bool) -> (Tensor<2>, Grid) {
        let (y, out) = conv_rows(&self.conv, x, grid, bf16);
        (relu(batch_norm_rows(&self.bn, y)), out)
    }
}

#[derive(Module, Debug)]
pub struct EncoderNet {
    pub conv1: ConvBlock,
    pub conv2: ConvBlock,
    pub conv3: ConvBlock,
    pub fc: Linear,
    pub fc_bn: BatchNorm,
    pub y: Linear,
    #[module(skip)]
    pub global_pool: bool,
    /// The convolutions' and fc's products in bf16 (set by `DimModelConfig`; off by default).
    #[module(skip)]
    pub bf16_products: bool,
}

/// Every layer a probe, critic or exporter may want.
#[derive(Debug, Clone)]
pub struct EncoderOutput {
    /// `[B, C, 8, 8]`: the local feature map.
    pub local: Tensor<4>,
    /// `[B, C', 4, 4]`.
    pub conv: Tensor<4>,
    /// `[B, fc]`, after BN and ReLU.
    pub fc: Tensor<2>,
    /// `[B, y_dim]`: the representation.
    pub y: Tensor<2>,
}

impl EncoderNet {
    /// The last block's map `[B, C', 4, 4]` as `fc`'s input: pooled globally or flattened.
    pub fn fc_input(&self, conv: Tensor<4>) -> Tensor<2> {
        if self.global_pool { conv.mean_dim(3).mean_dim(2).flatten(1, 3) } else { conv.flatten(1, 3) }
    }

    pub fn forward(&self, x: Tensor<4>) -> EncoderOutput {
        let (x, grid) = nchw_to_rows(x);
        let bf16 = self.bf16_products;
        let (h, grid) = self.conv1.forward(x, grid, bf16);
        let (local_rows, grid) = self.conv2.forward(h, grid, bf16);
        let local = rows_to_nchw(local_rows.clone(), grid);
        let (conv, grid) = self.conv3.forward(local_rows, grid, bf16);
        let conv = rows_to_nchw(conv, grid);
        let flat = self.fc_input(conv.clone());
        let fc_bias = self.fc.bias.as_ref().map(|b| b.val().unsqueeze_dim(0));
        let fc_pre = super::product(flat, self.fc.weight.val(), bf16);
        let fc_pre = match fc_bias {
            Some(b) => fc_pre + b,
            None => fc_pre,
        };
        let fc = relu(batch_norm_rows(&self.fc_bn, fc_pre));
        let y = self.y.forward(fc.clone());
        EncoderOutput { local, conv, fc, y }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_params_and_budgets() {
        let device = Device::flex();
        for (cfg, local_c) in [(EncoderConfig::dim32(), 128), (EncoderConfig::tiny(), 64)] {
            let enc = cfg.init(&device);
            let out = enc.forward(Tensor::zeros([2, 3, 32, 32], &device));
            assert_eq!(out.local.dims(), [2, local_c, 8, 8]);
            assert_eq!(out.conv.dims(), [2, cfg.channels[2], 4, 4]);
            assert_eq!(out.fc.dims(), [2, cfg.fc]);
            assert_eq!(out.y.dims(), [2, 64]);
            // BN holds 4 values per channel (scale, shift, running mean and variance); the
            // deployed count folds them into the preceding layer.
            let bn = 4 * (cfg.channels.iter().sum::<usize>() + cfg.fc);
            assert_eq!(enc.num_params(), cfg.deployed_params() + bn);
        }
        let d = EncoderConfig::dim32();
        assert_eq!(d.deployed_params(), 4_919_808); // paper: ≈ 4.92 M
        assert!((21_000_000..22_500_000).contains(&d.macs()), "{}", d.macs());
        let t = EncoderConfig::tiny();
        assert!(t.deployed_params() <= 128 * 1024, "tiny int8 weights {}", t.deployed_params());
        assert!(t.macs() <= 5_000_000, "tiny MAC {}", t.macs());
    }
}
