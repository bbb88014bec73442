//! Mutual-information critics: they score (local feature, representation) pairs.
//!
//! Every critic returns [`Scores`]: row `j` holds the scores that share representation `Y_j`,
//! the positives (pairs from the same image) and the negatives (pairs with other images of the
//! batch). The estimators in [`crate::objective`] only ever see this form.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;

/// Critic scores grouped by representation.
#[derive(Debug, Clone)]
pub struct Scores {
    /// `[B, P]`: positive scores of row `j` (all pair `Y_j` with its own image).
    pub pos: Tensor<2>,
    /// `[B, Q]`: negative scores of row `j` (pair `Y_j` with other images).
    pub neg: Tensor<2>,
    /// `[B, Q]` of 0/1: which entries of `neg` are real negatives (`None` = all of them).
    pub neg_mask: Option<Tensor<2>>,
}

impl Scores {
    /// Splits a full score matrix `[B, B, K]` (row `j` = `Y_j`, column `i` = image `i`, `K`
    /// locations) into positives (`i = j`) and masked negatives (`i ≠ j`).
    pub fn from_matrix(s: Tensor<3>) -> Self {
        let [b, b2, k] = s.dims();
        assert_eq!(b, b2, "score matrix must be square in its first two dimensions");
        let device = s.device();
        let eye: Tensor<3> = Tensor::<2>::eye(b, &device).reshape([b, b, 1]);
        let pos = (s.clone() * eye.clone()).sum_dim(1).reshape([b, k]);
        let neg_mask = (eye.neg() + 1.0).repeat_dim(2, k).reshape([b, b * k]);
        Self { pos, neg: s.reshape([b, b * k]), neg_mask: Some(neg_mask) }
    }
}

/// Which local critic to build (DESIGN.md: encode-and-dot is the official default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LocalCriticKind {
    /// Encode local features and Y to width W (1×1 convs + shortcut), score = dot product.
    EncodeDot,
    /// Concatenate Y to every location, 1×1 convs 512-512-1; one shuffled negative per positive.
    ConcatConv,
}

/// 1×1 conv → BN → ReLU → 1×1 conv, plus a linear 1×1 shortcut (the official `MI1x1ConvNet`).
///
/// A 1×1 convolution is a linear map applied at every location, so the net works on rows
/// `[N, C]` (one row per image location) with `Linear` layers: the same function, computed as
/// plain matrix products, which run faster than convolutions forward and backward.
#[derive(Module, Debug)]
pub struct MiNet {
    pub block1: Linear,
    pub bn: BatchNorm,
    pub block2: Linear,
    pub shortcut: Linear,
}

impl MiNet {
    pub fn new(input: usize, width: usize, device: &Device) -> Self {
        let l = |i, o| LinearConfig::new(i, o).init(device);
        Self { block1: l(input, width), bn: BatchNormConfig::new(width).init(device), block2: l(width, width), shortcut: l(input, width) }
    }
    /// `x`: `[N, input]` → `[N, width]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.block2.forward(relu(self.bn.forward(self.block1.forward(x.clone())))) + self.shortcut.forward(x)
    }
}

#[derive(Module, Debug)]
pub struct EncodeDotCritic {
    pub local: MiNet,
    pub global: MiNet,
}

impl EncodeDotCritic {
    pub fn new(local_channels: usize, y_dim: usize, width: usize, device: &Device) -> Self {
        Self { local: MiNet::new(local_channels, width, device), global: MiNet::new(y_dim, width, device) }
    }
    pub fn scores(&self, local: Tensor<4>, y: Tensor<2>) -> Scores {
        let [b, c, h, w] = local.dims();
        // Rows ordered (image, location): [B·hw, C].
        let rows = local.permute([0, 2, 3, 1]).reshape([b * h * w, c]);
        let l = self.local.forward(rows);
        let g = self.global.forward(y);
        let s = g.matmul(l.transpose()); // [B (Y), B·hw (image, location)]
        Scores::from_matrix(s.reshape([b, b, h * w]))
    }
}

#[derive(Module, Debug)]
pub struct ConcatConvCritic {
    pub c1: Conv2d,
    pub c2: Conv2d,
    pub c3: Conv2d,
}

impl ConcatConvCritic {
    pub fn new(local_channels: usize, y_dim: usize, device: &Device) -> Self {
        let c = |i, o| Conv2dConfig::new([i, o], [1, 1]).init(device);
        Self { c1: c(local_channels + y_dim, 512), c2: c(512, 512), c3: c(512, 1) }
    }
    fn score(&self, local: Tensor<4>, y: Tensor<2>) -> Tensor<2> {
        let [b, _, h, w] = local.dims();
        let yd = y.dims()[1];
        let y = y.reshape([b, yd, 1, 1]).repeat_dim(2, h).repeat_dim(3, w);
        let x = Tensor::cat(vec![local, y], 1);
        self.c3.forward(relu(self.c2.forward(relu(self.c1.forward(x))))).reshape([b, h * w])
    }
    /// Row `j`: `Y_j` with its own map (positives) and with image `j+1`'s map (negatives).
    pub fn scores(&self, local: Tensor<4>, y: Tensor<2>) -> Scores {
        let b = local.dims()[0];
        let rolled = Tensor::cat(vec![local.clone().slice(1..b), local.clone().slice(0..1)], 0);
        Scores { pos: self.score(local, y.clone()), neg: self.score(rolled, y), neg_mask: None }
    }
}

/// The local critic in either form.
// One per run, never moved in a hot loop: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum LocalCritic {
    EncodeDot(EncodeDotCritic),
    ConcatConv(ConcatConvCritic),
}

impl LocalCritic {
    pub fn new(kind: LocalCriticKind, local_channels: usize, y_dim: usize, width: usize, device: &Device) -> Self {
        match kind {
            LocalCriticKind::EncodeDot => Self::EncodeDot(EncodeDotCritic::new(local_channels, y_dim, width, device)),
            LocalCriticKind::ConcatConv => Self::ConcatConv(ConcatConvCritic::new(local_channels, y_dim, device)),
        }
    }
    pub fn scores(&self, local: Tensor<4>, y: Tensor<2>) -> Scores {
        match self {
            Self::EncodeDot(c) => c.scores(local, y),
            Self::ConcatConv(c) => c.scores(local, y),
        }
    }
}

/// Global critic: the whole local map (two 3×3 convs, flattened) against Y through an MLP
/// 512-512-1 on the concatenation. The first MLP layer is split into its map and Y halves so
/// every (map, Y) pair of the batch is scored without materialising B² concatenations.
#[derive(Module, Debug)]
pub struct GlobalCritic {
    pub conv1: Conv2d,
    pub conv2: Conv2d,
    pub map_in: Linear,
    pub y_in: Linear,
    pub hidden: Linear,
    pub out: Linear,
}

impl GlobalCritic {
    pub fn new(local_channels: usize, y_dim: usize, device: &Device) -> Self {
        let c = |i, o| Conv2dConfig::new([i, o], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(device);
        Self {
            conv1: c(local_channels, 64),
            conv2: c(64, 32),
            map_in: LinearConfig::new(32 * 64, 512).init(device),
            y_in: LinearConfig::new(y_dim, 512).with_bias(false).init(device),
            hidden: LinearConfig::new(512, 512).init(device),
            out: LinearConfig::new(512, 1).init(device),
        }
    }
    pub fn scores(&self, local: Tensor<4>, y: Tensor<2>) -> Scores {
        let b = local.dims()[0];
        let m = self.conv2.forward(relu(self.conv1.forward(local))).flatten::<2>(1, 3);
        let a = self.map_in.forward(m).reshape([1, b, 512]);
        let g = self.y_in.forward(y).reshape([b, 1, 512]);
        let h = relu(a + g).reshape([b * b, 512]);
        let s = self.out.forward(relu(self.hidden.forward(h)));
        Scores::from_matrix(s.reshape([b, b, 1]))
    }
}

/// Prior discriminator: linear 1000 – ReLU – 200 – ReLU – 1 on σ(Y) or prior samples.
#[derive(Module, Debug)]
pub struct PriorDiscriminator {
    pub l1: Linear,
    pub l2: Linear,
    pub l3: Linear,
}

impl PriorDiscriminator {
    pub fn new(y_dim: usize, device: &Device) -> Self {
        Self { l1: LinearConfig::new(y_dim, 1000).init(device), l2: LinearConfig::new(1000, 200).init(device), l3: LinearConfig::new(200, 1).init(device) }
    }
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.l3.forward(relu(self.l2.forward(relu(self.l1.forward(x)))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_split_finds_diagonal_and_masks_it() {
        let d = Device::flex();
        // s[j, i, k] = 10 j + i + 0.5 k
        let data: Vec<f32> = (0..3 * 3 * 2).map(|n| ((n / 6) * 10 + (n / 2) % 3) as f32 + 0.5 * (n % 2) as f32).collect();
        let s = Tensor::<1>::from_floats(data.as_slice(), &d).reshape([3, 3, 2]);
        let sc = Scores::from_matrix(s);
        let pos: Vec<f32> = sc.pos.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(pos, [0.0, 0.5, 11.0, 11.5, 22.0, 22.5]);
        let mask: Vec<f32> = sc.neg_mask.unwrap().into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(&mask[..6], [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
        assert_eq!(&mask[6..12], [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]);
    }

    #[test]
    fn critic_shapes() {
        let d = Device::flex();
        let local = Tensor::<4>::random([4, 16, 8, 8], burn::tensor::Distribution::Default, &d);
        let y = Tensor::<2>::random([4, 8], burn::tensor::Distribution::Default, &d);
        let s = LocalCritic::new(LocalCriticKind::EncodeDot, 16, 8, 32, &d).scores(local.clone(), y.clone());
        assert_eq!((s.pos.dims(), s.neg.dims()), ([4, 64], [4, 256]));
        let s = LocalCritic::new(LocalCriticKind::ConcatConv, 16, 8, 0, &d).scores(local.clone(), y.clone());
        assert_eq!((s.pos.dims(), s.neg.dims()), ([4, 64], [4, 64]));
        let s = GlobalCritic::new(16, 8, &d).scores(local, y.clone());
        assert_eq!((s.pos.dims(), s.neg.dims()), ([4, 1], [4, 4]));
        assert_eq!(PriorDiscriminator::new(8, &d).forward(y).dims(), [4, 1]);
    }
}
