//! Mutual-information critics: they score (local feature, representation) pairs.
//!
//! Every critic returns [`Scores`]: row `j` holds the scores that share representation `Y_j`,
//! the positives (pairs from the same image) and the negatives (pairs with other images of the
//! batch). The estimators in [`crate::objective`] only ever see this form.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;

use super::conv_rows::{nchw_to_rows, update_running};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LocalCriticKind {
    /// Encode local features and Y to width W (1×1 convs + shortcut), score = dot product.
    EncodeDot,
    /// Concatenate Y to every location, 1×1 convs 512-512-1; one shuffled negative per positive.
    ConcatConv,
    /// The official `MI1x1ConvNet` whole: encode-and-dot with a LayerNorm on both encodings,
    /// no bias before the BatchNorm or on the shortcut, and the shortcut started near the
    /// identity (`--preset paper`; [`EncodeDotLnCritic`]).
    EncodeDotLn,
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
    /// The official `MI1x1ConvNet`'s layers (rdevon/DIM `cortex_DIM/nn_modules/mi_networks.py`):
    /// no bias on the first layer (the BatchNorm after it removes any) nor on the shortcut, and
    /// the shortcut drawn from `U(−0.01, 0.01)` with ones on its diagonal, so the encoding starts
    /// as a noisy copy of the input — the nonlinear block learns a correction to it.
    pub fn official(input: usize, width: usize, device: &Device) -> Self {
        let l = |i, o, bias| LinearConfig::new(i, o).with_bias(bias).init(device);
        let mut shortcut = l(input, width, false);
        if width >= input {
            // burn's weight is `[input, width]`: unit `i` of the output copies input `i`.
            let noise = Tensor::<2>::random([input, width], burn::tensor::Distribution::Uniform(-0.01, 0.01), device);
            let mut eye = vec![0f32; input * width];
            (0..input).for_each(|i| eye[i * width + i] = 1.0);
            let eye = Tensor::<1>::from_floats(eye.as_slice(), device).reshape([input, width]);
            shortcut.weight = burn::module::Param::from_tensor(noise * (eye.clone().neg() + 1.0) + eye);
        }
        Self { block1: l(input, width, false), bn: BatchNormConfig::new(width).init(device), block2: l(width, width, true), shortcut }
    }

    /// The bias of the output, `b₂ + bₛ` (either may be absent; `None` when both are).
    fn output_bias(&self) -> Option<Tensor<1>> {
        [&self.block2.bias, &self.shortcut.bias].into_iter().flatten().map(|p| p.val()).reduce(|a, b| a + b)
    }

    /// `x`: `[N, input]` → `[N, width]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.block2.forward(relu(self.bn.forward(self.block1.forward(x.clone())))) + self.shortcut.forward(x)
    }

    /// The hidden layer `relu(bn(x·W₁ + b₁))`, with the BatchNorm folded into `W₁`.
    ///
    /// BatchNorm is affine per column: `bn(z) = z∘a + (β − μ∘a)` with `a = γ / √(σ² + ε)`. For
    /// `z = x·W₁ + b₁` its batch statistics follow from the input's, `μ = x̄·W₁ + b₁` and
    /// `σ² = diag(W₁ᵀ·Σₓ·W₁)` (`Σₓ` the biased covariance of the rows of `x`), so
    /// `h = relu(x·(W₁∘a) + (b₁ − μ)∘a + β)`. The statistics cost `C×C` and `C×W` products instead
    /// of passes over the `N×W` activation, and no `N×W` tensor is normalised forward or backward —
    /// it was most of the critic's time, as `C` (128) is far below `W` (2048). Training mode (an
    /// autodiff device, the layer not frozen) uses the batch statistics and updates the running
    /// ones exactly as `BatchNorm::forward` does; otherwise the running statistics are folded.
    pub fn hidden_folded(&self, x: Tensor<2>, bf16: bool) -> Tensor<2> {
        let bn = &self.bn;
        let w1 = self.block1.weight.val(); // [C, W]
        let width = w1.dims()[1];
        let b1 = self.block1.bias.as_ref().map_or_else(|| Tensor::zeros([width], &x.device()), |b| b.val());
        let (mean, var) = if x.device().is_autodiff() && bn.training.is_enabled() {
            let n = x.dims()[0] as f64;
            let x_mean = x.clone().mean_dim(0); // [1, C]
            let centred = x.clone() - x_mean.clone();
            // `Σₓ = cᵀ·c / n` written as `P + Pᵀ − P` (the last detached) with `P = c̄ᵀ·c`, `c̄` the
            // detached `c`: the same value, and the same gradient `c·(G + Gᵀ) / n`, but through one
            // product whose tracked operand is on the right. `cᵀ·c` itself returned half its
            // gradient as a transposed view, which the sum with the other half read strided.
            let p = super::product(centred.clone().detach().transpose(), centred, bf16); // [C, C]
            let cov = (p.clone() + p.clone().transpose() - p.detach()) / n;
            let var = (cov.matmul(w1.clone()) * w1.clone()).sum_dim(0).reshape([width]);
            let mean = x_mean.matmul(w1.clone()).reshape([width]) + b1.clone();
            update_running(bn, mean.clone(), var.clone());
            (mean, var)
        } else {
            (bn.running_mean.value().to_device(&x.device()), bn.running_var.value().to_device(&x.device()))
        };
        let a = bn.gamma.val() / (var + bn.epsilon).sqrt(); // [W]
        let shift = (b1 - mean) * a.clone() + bn.beta.val();
        relu(super::product(x, w1 * a.reshape([1, width]), bf16) + shift.reshape([1, width]))
    }
}

#[derive(Module, Debug)]
pub struct EncodeDotCritic {
    pub local: MiNet,
    pub global: MiNet,
    /// The products of [`Self::scores`] (all but the global net's) in bf16 (set by `DimModelConfig`).
    /// The score products included, unlike [`EncodeDotLnCritic`]'s: a 4-epoch run's weights read
    /// the same mean loss through this critic in bf16 as in f32 (8.3163 against 8.3160 nats, the
    /// same 80 batches; docs/recipes.md, "The critic without LayerNorm under `--bf16`").
    #[module(skip)]
    pub bf16_products: bool,
}

impl EncodeDotCritic {
    pub fn new(local_channels: usize, y_dim: usize, width: usize, device: &Device) -> Self {
        Self { local: MiNet::new(local_channels, width, device), global: MiNet::new(y_dim, width, device), bf16_products: false }
    }
    /// Scores of every (Y, image location) pair: `s = g · lᵀ`, `g = global(Y)`, `l = local(rows)`.
    ///
    /// Computed reassociated. The local net's output is linear in its hidden layer and input,
    /// `l = h·W₂ + x·Wₛ + (b₂ + bₛ)` with `h = relu(bn(x·W₁ + b₁))`, so
    /// `s = (g·W₂ᵀ)·hᵀ + (g·Wₛᵀ)·xᵀ + g·(b₂ + bₛ)`: the `W×W` product runs on the `B` rows of
    /// `g` instead of the `B·M·M` rows of `h` (64× fewer multiply-adds for an 8×8 map), and the
    /// BatchNorm is folded into `W₁` ([`MiNet::hidden_folded`]). The same function and gradients
    /// up to rounding ([`Self::scores_direct`] is the literal form; a test compares the two).
    pub fn scores(&self, local: Tensor<4>, y: Tensor<2>) -> Scores {
        let [b, _, h, w] = local.dims();
        let rows = local_rows(local);
        let g = self.global.forward(y); // [B, W]
        let net = &self.local;
        let bf16 = self.bf16_products;
        let hidden = net.hidden_folded(rows.clone(), bf16); // [B·hw, W]
        // Computed as `sᵀ = h·(W₂·gᵀ) + x·(Wₛ·gᵀ)` ([B·hw, B]) and transposed once: with `hidden`,
        // `rows` and the weights as left operands their gradients come back contiguous. As right
        // operands (`g·hᵀ`) the gradients were transposed views, which the ReLU's and the input's
        // backward walked with strided reads on one thread (8 % of a dim32 W=512 step in a
        // profile) and Adam copied.
        let w2_gt = super::product(net.block2.weight.val(), g.clone().transpose(), bf16); // [W, B]
        let ws_gt = super::product(net.shortcut.weight.val(), g.clone().transpose(), bf16); // [C, B]
        let s_t = super::product(hidden, w2_gt, bf16) + super::product(rows, ws_gt, bf16); // [B·hw, B]
        let mut s = s_t.transpose(); // [B, B·hw]
        if let Some(bias) = net.output_bias() {
            let width = bias.dims()[0];
            s = s + g.matmul(bias.reshape([width, 1])); // [B, 1], broadcast over locations
        }
        Scores::from_matrix(s.reshape([b, b, h * w]))
    }

    /// The literal form of [`Self::scores`]: encode every location to width `W`, then dot.
    pub fn scores_direct(&self, local: Tensor<4>, y: Tensor<2>) -> Scores {
        let [b, _, h, w] = local.dims();
        let l = self.local.forward(local_rows(local));
        let g = self.global.forward(y);
        let s = g.matmul(l.transpose()); // [B (Y), B·hw (image, location)]
        Scores::from_matrix(s.reshape([b, b, h * w]))
    }
}

/// The official `MI1x1ConvNet`: [`MiNet`] (official initialisation) followed by a LayerNorm
/// over the `W` units of each row.
#[derive(Module, Debug)]
pub struct MiNetLn {
    pub net: MiNet,
    pub ln: LayerNorm,
}

impl MiNetLn {
    pub fn new(input: usize, width: usize, device: &Device) -> Self {
        Self { net: MiNet::official(input, width, device), ln: LayerNormConfig::new(width).init(device) }
    }

    /// `ln(relu(bn(x·W₁))·W₂ + b₂ + x·Wₛ)`, BatchNorm folded ([`MiNet::hidden_folded`]).
    pub fn forward(&self, x: Tensor<2>, bf16: bool) -> Tensor<2> {
        let net = &self.net;
        let hidden = net.hidden_folded(x.clone(), bf16);
        let z = super::product(hidden, net.block2.weight.val(), bf16) + super::product(x, net.shortcut.weight.val(), bf16);
        let z = match net.output_bias() {
            Some(b) => {
                let width = b.dims()[0];
                z + b.reshape([1, width])
            }
            None => z,
        };
        self.ln.forward(z)
    }

    /// The layers as written, one after another (the reference [`Self::forward`] is tested on).
    pub fn forward_direct(&self, x: Tensor<2>) -> Tensor<2> {
        self.ln.forward(self.net.forward(x))
    }
}

/// Encode-and-dot as the official code computes it: both encodings end in a LayerNorm, so the
/// score `s = ln(l)·ln(g)ᵀ` is no longer linear in the local net's hidden layer and cannot be
/// reassociated as [`EncodeDotCritic::scores`] is: the `W×W` layer runs on every one of the
/// `B·M·M` rows (64× the multiply-adds of the reassociated form for an 8×8 map). The price of
/// fidelity; [`EncodeDotCritic`] is the fast form without the LayerNorm.
///
/// Why the LayerNorm may matter: it fixes each encoding's scale (unit variance over its `W`
/// units, then a learned per-unit gain), so the critic cannot raise its scores by growing the
/// encodings alone; without it the bound can saturate on scale rather than on information.
#[derive(Module, Debug)]
pub struct EncodeDotLnCritic {
    pub local: MiNetLn,
    pub global: MiNetLn,
    /// The local encoding's products in bf16 (set by `DimModelConfig`; the score's stays f32,
    /// [`Self::scores`]).
    #[module(skip)]
    pub bf16_products: bool,
}

impl EncodeDotLnCritic {
    pub fn new(local_channels: usize, y_dim: usize, width: usize, device: &Device) -> Self {
        Self { local: MiNetLn::new(local_channels, width, device), global: MiNetLn::new(y_dim, width, device), bf16_products: false }
    }

    /// Scores of every (Y, image location) pair: `s = g·lᵀ`, computed as `sᵀ = l·gᵀ` and transposed
    /// (the large operand on the left: its gradient comes back contiguous).
    ///
    /// The score product stays in f32 under `--bf16`. In bf16 it read an 8-epoch bf16 run's
    /// weights 0.51 nats worse than f32 does (5.93 against 5.42, the same 80 batches), and training
    /// follows that forward: the bf16 run's loss stopped falling as its cosine ended. With this
    /// product alone back in f32 the same weights read 5.42, and with the encoder's products
    /// alone in bf16 too (docs/recipes.md, "The prior off, and bf16 products").
    pub fn scores(&self, local: Tensor<4>, y: Tensor<2>) -> Scores {
        let [b, _, h, w] = local.dims();
        let l = self.local.forward(local_rows(local), self.bf16_products); // [B·hw, W]
        let g = self.global.forward(y, false); // [B, W]
        let s = l.matmul(g.transpose()).transpose(); // [B, B·hw]
        Scores::from_matrix(s.reshape([b, b, h * w]))
    }

    /// The literal form: every layer as written (BatchNorm not folded), then the dot product.
    pub fn scores_direct(&self, local: Tensor<4>, y: Tensor<2>) -> Scores {
        let [b, _, h, w] = local.dims();
        let l = self.local.forward_direct(local_rows(local));
        let g = self.global.forward_direct(y);
        Scores::from_matrix(g.matmul(l.transpose()).reshape([b, b, h * w]))
    }
}

/// A local map `[B, C, H, W]` as rows ordered (image, location): `[B·H·W, C]`.
fn local_rows(local: Tensor<4>) -> Tensor<2> {
    nchw_to_rows(local).0
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
    EncodeDotLn(EncodeDotLnCritic),
}

impl LocalCritic {
    pub fn new(kind: LocalCriticKind, local_channels: usize, y_dim: usize, width: usize, device: &Device) -> Self {
        match kind {
            LocalCriticKind::EncodeDot => Self::EncodeDot(EncodeDotCritic::new(local_channels, y_dim, width, device)),
            LocalCriticKind::ConcatConv => Self::ConcatConv(ConcatConvCritic::new(local_channels, y_dim, device)),
            LocalCriticKind::EncodeDotLn => Self::EncodeDotLn(EncodeDotLnCritic::new(local_channels, y_dim, width, device)),
        }
    }
    pub fn scores(&self, local: Tensor<4>, y: Tensor<2>) -> Scores {
        match self {
            Self::EncodeDot(c) => c.scores(local, y),
            Self::ConcatConv(c) => c.scores(local, y),
            Self::EncodeDotLn(c) => c.scores(local, y),
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

/// Distillation critic (contrastive representation distillation, Tian et al. 2020): scores
/// (student representation `Y_j`, teacher representation `T`) pairs by the cosine of their
/// linear embeddings to width `W`, over a temperature `τ`. Row `j` is the student's `Y_j` (or
/// its fc row, `[distill] student_layer`); its
/// positive is the teacher's `T_j` of the same image, its negatives the teacher's rows of the
/// other images of the batch and of `K` more images drawn from the teacher's cache.
///
/// Why the extra teacher rows: with only the batch's 63 negatives the bound saturates within an
/// epoch (InfoNCE is capped at `log B`; measured on CIFAR-10: −0.07 of a possible 0 by epoch 3)
/// and the student stops learning from the teacher. The teacher's rows are cached features, so
/// more negatives cost one matrix product, not more images through an encoder — the role CRD's
/// memory bank plays. They go through the teacher embedding without a gradient (its weights
/// learn from the batch's rows), which keeps their cost to the forward product.
///
/// Why normalised: with a plain dot product the critic can raise the bound by growing its scale
/// alone; on the unit sphere with a fixed `τ` only better-aligned embeddings raise it.
///
/// Without a teacher embedding ([`Self::regressor`]) the teacher's rows are used as they are
/// and the student's embedding predicts them: [`Self::regression`]'s head.
#[derive(Module, Debug)]
pub struct DistillCritic {
    pub student: Linear,
    /// None: the teacher's rows unembedded (a regression head's target space).
    pub teacher: Option<Linear>,
    #[module(skip)]
    pub temperature: f64,
}

impl DistillCritic {
    /// `student_dim`: the width of the student's layer it reads (Y or fc).
    pub fn new(student_dim: usize, teacher_dim: usize, width: usize, temperature: f64, device: &Device) -> Self {
        Self { student: LinearConfig::new(student_dim, width).init(device), teacher: Some(LinearConfig::new(teacher_dim, width).init(device)), temperature }
    }

    /// The regression head of `[distill] objective = "regress"`: the student's layer mapped
    /// linearly to the teacher's width; the teacher's rows are the targets, not embedded (a
    /// learned teacher embedding would let both sides collapse onto one constant row).
    pub fn regressor(student_dim: usize, teacher_dim: usize, device: &Device) -> Self {
        Self { student: LinearConfig::new(student_dim, teacher_dim).init(device), teacher: None, temperature: 1.0 }
    }

    /// The regression term `mean_j cos(e_s(S_j), T_j) − 1` (`[1]`, in `[−2, 0]`, 0 when every
    /// prediction points along its teacher row). Cosine, not squared error, for the reason the
    /// scores are normalised: the head cannot win by scale. With a teacher embedding
    /// ([`Self::new`]) `T_j` is embedded first.
    pub fn regression(&self, teacher: Tensor<2>, student: Tensor<2>) -> Tensor<1> {
        let s = unit_rows(self.student.forward(student));
        let t = unit_rows(self.embed_teacher(teacher));
        (s * t).sum_dim(1).mean() - 1.0
    }

    fn embed_teacher(&self, teacher: Tensor<2>) -> Tensor<2> {
        match &self.teacher {
            Some(linear) => linear.forward(teacher),
            None => teacher,
        }
    }

    /// Scores `cos(e_s(Y_j), e_t(T)) / τ`: positives `[B, 1]` (`T_j`); negatives `[B, B + K]`,
    /// the batch's other rows, then `extra` (`[K, T]`), with `extra_mask` (`[B, K]` of 0/1, or
    /// `None` = all) marking which extra rows are real negatives for row `j` (not image `j`).
    pub fn scores(&self, teacher: Tensor<2>, y: Tensor<2>, extra: Option<(Tensor<2>, Option<Tensor<2>>)>) -> Scores {
        let s = unit_rows(self.student.forward(y));
        let t = unit_rows(self.embed_teacher(teacher));
        let extra = extra.map(|(extra, mask)| {
            let Some(linear) = &self.teacher else { return (unit_rows(extra), mask) };
            let mut e = extra.matmul(linear.weight.val().detach());
            if let Some(bias) = &linear.bias {
                let width = bias.dims()[0];
                e = e + bias.val().detach().reshape([1, width]);
            }
            (unit_rows(e), mask)
        });
        cosine_scores(s, t, extra, self.temperature)
    }
}

/// The teacher's own scores over the candidates [`DistillCritic::scores`] lays out — row `j`
/// of the teacher against the batch's rows and the extra rows, `cos(T_j, T_c) / τ_T` — the
/// soft targets of [`crate::objective::soft_target_bound`]: which other images the teacher
/// finds alike, not only which one is the same image. No parameters, no gradient.
pub fn teacher_scores(teacher: Tensor<2>, extra: Option<(Tensor<2>, Option<Tensor<2>>)>, temperature: f64) -> Scores {
    let t = unit_rows(teacher.detach());
    cosine_scores(t.clone(), t, extra.map(|(e, mask)| (unit_rows(e.detach()), mask)), temperature)
}

/// Scores of unit rows `s` `[B, W]` against unit rows `t` `[B, W]` (row `j`'s positive is
/// `t_j`, its negatives the other rows of `t`) and the unit rows of `extra` `[K, W]` (masked by
/// its `[B, K]` 0/1 mask, `None` = all real), over `temperature`.
fn cosine_scores(s: Tensor<2>, t: Tensor<2>, extra: Option<(Tensor<2>, Option<Tensor<2>>)>, temperature: f64) -> Scores {
    let [b, _] = s.dims();
    let batch = Scores::from_matrix((s.clone().matmul(t.transpose()) / temperature).reshape([b, b, 1]));
    let Some((e, extra_mask)) = extra else { return batch };
    let k = e.dims()[0];
    let neg = s.matmul(e.transpose()) / temperature; // [B, K]
    let mask = extra_mask.unwrap_or_else(|| Tensor::<2>::ones([b, k], &neg.device()));
    let batch_mask = batch.neg_mask.expect("from_matrix masks the diagonal");
    Scores { pos: batch.pos, neg: Tensor::cat(vec![batch.neg, neg], 1), neg_mask: Some(Tensor::cat(vec![batch_mask, mask], 1)) }
}

/// Rows scaled to unit length (a row of zeros stays finite: its norm is floored).
fn unit_rows(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
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

    /// Hand-computed: identity embeddings, so the scores are the cosines of the inputs over τ.
    #[test]
    fn distill_scores_are_cosines_over_temperature() {
        let d = Device::flex();
        let mut c = DistillCritic::new(2, 2, 2, 0.5, &d);
        let eye = || burn::module::Param::from_tensor(Tensor::<2>::eye(2, &d));
        let teacher = c.teacher.as_mut().unwrap();
        (c.student.weight, teacher.weight) = (eye(), eye());
        (c.student.bias, teacher.bias) = (None, None);
        let t = Tensor::<2>::from_floats([[3.0, 0.0], [1.0, 1.0]], &d);
        let y = Tensor::<2>::from_floats([[2.0, 0.0], [0.0, 5.0]], &d);
        let s = c.scores(t.clone(), y.clone(), None);
        let h = std::f32::consts::FRAC_1_SQRT_2;
        // Row j = Y_j: cos(Y_0, T_0) = 1, cos(Y_1, T_1) = h; negatives cos(Y_0, T_1) = h,
        // cos(Y_1, T_0) = 0.
        let close = |t: Tensor<2>, want: &[f32]| {
            let got = t.into_data().try_to_vec::<f32>().unwrap();
            assert!(got.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{got:?} vs {want:?}");
        };
        close(s.pos, &[2.0, 2.0 * h]);
        close(s.neg, &[2.0, 2.0 * h, 0.0, 2.0 * h]);
        close(s.neg_mask.unwrap(), &[0.0, 1.0, 1.0, 0.0]);
        // One extra teacher row (0, −4): cos with Y_0 = 0, with Y_1 = −1; masked out for row 1.
        let extra = Tensor::<2>::from_floats([[0.0, -4.0]], &d);
        let mask = Tensor::<2>::from_floats([[1.0], [0.0]], &d);
        let s = c.scores(t, y, Some((extra, Some(mask))));
        close(s.pos, &[2.0, 2.0 * h]);
        close(s.neg, &[2.0, 2.0 * h, 0.0, 0.0, 2.0 * h, -2.0]);
        close(s.neg_mask.unwrap(), &[0.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
        // The teacher against itself at τ_T = 0.25: positives cos(T_j, T_j) = 1; negatives
        // cos(T_0, T_1) = h both ways; the extra row (0, −4): cos 0 with T_0, −h with T_1.
        let s = teacher_scores(Tensor::<2>::from_floats([[3.0, 0.0], [1.0, 1.0]], &d), Some((Tensor::<2>::from_floats([[0.0, -4.0]], &d), None)), 0.25);
        close(s.pos, &[4.0, 4.0]);
        close(s.neg, &[4.0, 4.0 * h, 0.0, 4.0 * h, 4.0, -4.0 * h]);
        close(s.neg_mask.unwrap(), &[0.0, 1.0, 1.0, 1.0, 0.0, 1.0]);
    }

    /// Hand-computed: an identity head, so the term is the mean cosine of the inputs, minus 1.
    #[test]
    fn distill_regression_is_the_mean_cosine_minus_one() {
        let d = Device::flex();
        let head = DistillCritic::regressor(3, 5, &d);
        assert_eq!((head.student.weight.dims(), head.teacher.is_none()), ([3, 5], true), "student → teacher width, no teacher embedding");
        let mut c = DistillCritic::regressor(2, 2, &d);
        (c.student.weight, c.student.bias) = (burn::module::Param::from_tensor(Tensor::<2>::eye(2, &d)), None);
        let t = Tensor::<2>::from_floats([[3.0, 0.0], [1.0, 1.0]], &d);
        let s = Tensor::<2>::from_floats([[2.0, 0.0], [0.0, 5.0]], &d);
        // cos(S_0, T_0) = 1, cos(S_1, T_1) = 1/√2: (1 + 1/√2) / 2 − 1.
        let want = (1.0 + std::f32::consts::FRAC_1_SQRT_2) / 2.0 - 1.0;
        let got = values(c.regression(t.clone(), s.clone()))[0];
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        // Its scores (unembedded teacher rows) are the same cosines, over τ = 1.
        let sc = c.scores(t, s, None);
        assert!(values(sc.pos).iter().zip([1.0, std::f32::consts::FRAC_1_SQRT_2]).all(|(a, b)| (a - b).abs() < 1e-6));
        // The head cannot win by scale: S scaled by 7 reads the same.
        let scaled = values(c.regression(Tensor::<2>::from_floats([[3.0, 0.0], [1.0, 1.0]], &d), Tensor::<2>::from_floats([[14.0, 0.0], [0.0, 35.0]], &d)))[0];
        assert!((scaled - want).abs() < 1e-6);
    }

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

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// Largest difference relative to the largest magnitude of `want`.
    fn rel_diff(got: &[f32], want: &[f32]) -> f32 {
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(1e-12f32, |m, v| m.max(v.abs()));
        got.iter().zip(want).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale
    }

    fn max_abs(v: &[f32]) -> f32 {
        v.iter().fold(0f32, |m, x| m.max(x.abs()))
    }

    /// The hidden pre-activations `bn(x·W₁)` of a net, where its ReLU has its kink.
    fn pre_activations(net: &MiNet, x: Tensor<2>) -> Vec<f32> {
        values(net.bn.forward(net.block1.forward(x)))
    }

    /// A critic and inputs (a non-negative local map with a mean, as a ReLU map gives, and Y)
    /// from the first seed from `first` whose pre-activations (`pre`) all keep 1e-5 from the
    /// kink, with the inputs tracked for gradients.
    fn draw_away_from_kink<C>(
        first: u64,
        d: &Device,
        make: impl Fn(&Device) -> C,
        pre: impl Fn(&C, Tensor<4>, Tensor<2>) -> Vec<Vec<f32>>,
    ) -> (C, Tensor<4>, Tensor<2>) {
        use burn::tensor::Distribution;
        let (critic, local, y) = (first..first + 30)
            .map(|seed| {
                d.seed(seed);
                let critic = make(d);
                let local = relu(Tensor::<4>::random([6, 24, 8, 8], Distribution::Normal(0.5, 1.0), d));
                (critic, local, Tensor::<2>::random([6, 8], Distribution::Normal(0.0, 1.0), d))
            })
            .find(|(c, local, y)| pre(c, local.clone(), y.clone()).iter().flatten().all(|v| v.abs() > 1e-5))
            .expect("a seed with no pre-activation at the kink");
        (critic, local.require_grad(), y.require_grad())
    }

    /// The reassociated encode-and-dot scores (BatchNorm folded) give the loss and every gradient
    /// of the literal form within 1e-5, for each estimator, with non-zero biases.
    ///
    /// Two forms that round differently can put a pre-activation within rounding distance of 0
    /// on opposite sides of the ReLU; that unit's whole gradient then differs (both are right
    /// to rounding). The test checks that no pre-activation is that close, so the comparison is
    /// tight; in training, with ~10⁶ units a step, a few such flips are expected.
    #[test]
    fn reassociated_scores_match_the_direct_form() {
        use crate::objective::{Estimator, mi_lower_bound};
        let d = Device::flex().autodiff();
        let (critic, local, y) =
            draw_away_from_kink(11, &d, |d| EncodeDotCritic::new(24, 8, 96, d), |c, local, _| vec![pre_activations(&c.local, local_rows(local))]);
        assert!(values(critic.local.block2.bias.as_ref().unwrap().val()).iter().any(|v| *v != 0.0), "the test needs non-zero biases");
        for est in [Estimator::Jsd, Estimator::InfoNce, Estimator::Dv] {
            let fast = mi_lower_bound(&critic.scores(local.clone(), y.clone()), est);
            let direct = mi_lower_bound(&critic.scores_direct(local.clone(), y.clone()), est);
            let (lf, ld) = (values(fast.clone()), values(direct.clone()));
            assert!((lf[0] - ld[0]).abs() <= 1e-5 * ld[0].abs().max(1.0), "{est:?}: loss {lf:?} vs {ld:?}");
            let (gf, gd) = (fast.backward(), direct.backward());
            let mut pairs = vec![
                ("local map", values(local.grad(&gf).unwrap()), values(local.grad(&gd).unwrap())),
                ("y", values(y.grad(&gf).unwrap()), values(y.grad(&gd).unwrap())),
            ];
            for n in [&critic.local, &critic.global] {
                for (name, lin) in [("block1.weight", &n.block1), ("block2.weight", &n.block2), ("shortcut.weight", &n.shortcut)] {
                    let w = lin.weight.val();
                    pairs.push((name, values(w.grad(&gf).unwrap()), values(w.grad(&gd).unwrap())));
                }
                for (name, lin) in [("block2.bias", &n.block2), ("shortcut.bias", &n.shortcut)] {
                    let b = lin.bias.as_ref().unwrap().val();
                    let (f, g) = (values(b.grad(&gf).unwrap()), values(b.grad(&gd).unwrap()));
                    if est == Estimator::InfoNce && std::ptr::eq(n, &critic.local) {
                        // The local biases add g_j·(b₂ + bₛ) to every score of row j, which
                        // InfoNCE's per-row softmax ignores: 0 in exact arithmetic.
                        let w = values(n.block2.weight.val().grad(&gd).unwrap());
                        assert!(max_abs(&f).max(max_abs(&g)) <= 1e-5 * max_abs(&w), "{name}: {} / {}", max_abs(&f), max_abs(&g));
                    } else {
                        pairs.push((name, f, g));
                    }
                }
                let (gamma, beta) = (n.bn.gamma.val(), n.bn.beta.val());
                pairs.push(("bn.gamma", values(gamma.grad(&gf).unwrap()), values(gamma.grad(&gd).unwrap())));
                pairs.push(("bn.beta", values(beta.grad(&gf).unwrap()), values(beta.grad(&gd).unwrap())));
                // BatchNorm removes any shift of its input: b₁'s gradient is 0 in exact arithmetic.
                let (w, b) = (n.block1.weight.val(), n.block1.bias.as_ref().unwrap().val());
                for g in [&gf, &gd] {
                    let (gw, gb) = (values(w.grad(g).unwrap()), values(b.grad(g).unwrap()));
                    assert!(max_abs(&gb) <= 1e-5 * max_abs(&gw), "{est:?}: b1 gradient {} vs W1 {}", max_abs(&gb), max_abs(&gw));
                }
            }
            for (name, a, b) in pairs {
                let r = rel_diff(&a, &b);
                assert!(r <= 1e-5, "{est:?}: gradient of {name} differs by {r:e} (relative)");
            }
        }
    }

    /// Folding BatchNorm normalises with the batch statistics and updates the running ones as
    /// `BatchNorm::forward` does (training), and uses the running ones otherwise.
    #[test]
    fn folded_batchnorm_matches_batchnorm() {
        use burn::tensor::Distribution;
        let d = Device::flex().autodiff();
        d.seed(5);
        let net = MiNet::new(12, 40, &d);
        let x = Tensor::<2>::random([300, 12], Distribution::Normal(1.0, 2.0), &d);
        let z = net.block1.forward(x.clone());
        let mean = z.clone().mean_dim(0);
        let var = (z.clone() - mean.clone()).powi_scalar(2).mean_dim(0);
        let bn = &net.bn;
        let want = relu((z - mean.clone()) / (var.clone() + bn.epsilon).sqrt() * bn.gamma.val().reshape([1, 40]) + bn.beta.val().reshape([1, 40]));
        assert!(rel_diff(&values(net.hidden_folded(x.clone(), false)), &values(want)) <= 1e-5);
        let m = bn.momentum as f32;
        let running_mean: Vec<f32> = values(mean).iter().map(|v| m * v).collect(); // from 0
        let running_var: Vec<f32> = values(var).iter().map(|v| (1.0 - m) + m * v).collect(); // from 1
        assert!(rel_diff(&values(bn.running_mean.value_sync()), &running_mean) <= 1e-5);
        assert!(rel_diff(&values(bn.running_var.value_sync()), &running_var) <= 1e-5);
        // Off autodiff: the running statistics, as BatchNorm's inference path.
        let (net, x) = (net.valid(), x.inner());
        let want = values(relu(net.bn.forward(net.block1.forward(x.clone()))));
        assert!(rel_diff(&values(net.hidden_folded(x, false)), &want) <= 1e-5);
    }

    /// The LayerNorm critic (BatchNorm folded) gives the loss and every gradient of its literal
    /// form (BatchNorm, LayerNorm, dot product, as written) within 1e-5, for each estimator.
    #[test]
    fn layer_norm_critic_matches_its_literal_form() {
        use crate::objective::{Estimator, mi_lower_bound};
        let d = Device::flex().autodiff();
        let (critic, local, y) = draw_away_from_kink(
            3,
            &d,
            |d| EncodeDotLnCritic::new(24, 8, 96, d),
            |c, local, y| vec![pre_activations(&c.local.net, local_rows(local)), pre_activations(&c.global.net, y)],
        );
        for est in [Estimator::Jsd, Estimator::InfoNce, Estimator::Dv] {
            let fast = mi_lower_bound(&critic.scores(local.clone(), y.clone()), est);
            let direct = mi_lower_bound(&critic.scores_direct(local.clone(), y.clone()), est);
            let (lf, ld) = (values(fast.clone()), values(direct.clone()));
            assert!((lf[0] - ld[0]).abs() <= 1e-5 * ld[0].abs().max(1.0), "{est:?}: loss {lf:?} vs {ld:?}");
            let (gf, gd) = (fast.backward(), direct.backward());
            let mut pairs = vec![
                ("local map", values(local.grad(&gf).unwrap()), values(local.grad(&gd).unwrap())),
                ("y", values(y.grad(&gf).unwrap()), values(y.grad(&gd).unwrap())),
            ];
            for n in [&critic.local, &critic.global] {
                for (name, lin) in [("block1.weight", &n.net.block1), ("block2.weight", &n.net.block2), ("shortcut.weight", &n.net.shortcut)] {
                    let w = lin.weight.val();
                    pairs.push((name, values(w.grad(&gf).unwrap()), values(w.grad(&gd).unwrap())));
                }
                for (name, p) in [("bn.gamma", &n.net.bn.gamma), ("bn.beta", &n.net.bn.beta), ("ln.gamma", &n.ln.gamma)] {
                    pairs.push((name, values(p.val().grad(&gf).unwrap()), values(p.val().grad(&gd).unwrap())));
                }
            }
            for (name, a, b) in pairs {
                let r = rel_diff(&a, &b);
                assert!(r <= 1e-5, "{est:?}: gradient of {name} differs by {r:e} (relative)");
            }
        }
    }

    /// Under `--bf16` the LayerNorm critic's score product stays f32: its scores equal the f32
    /// dot product of its (bf16-computed) encodings to f32 rounding, where a bf16 product is off
    /// by ~2⁻⁹ of the largest score.
    #[test]
    fn layer_norm_critic_scores_stay_f32_under_bf16() {
        use burn::tensor::Distribution;
        let d = Device::flex();
        d.seed(9);
        let mut critic = EncodeDotLnCritic::new(24, 8, 96, &d);
        critic.bf16_products = true;
        let local = relu(Tensor::<4>::random([6, 24, 8, 8], Distribution::Normal(0.5, 1.0), &d));
        let y = Tensor::<2>::random([6, 8], Distribution::Normal(0.0, 1.0), &d);
        let l = critic.local.forward(local_rows(local.clone()), true);
        let g = critic.global.forward(y.clone(), false);
        let want = Scores::from_matrix(g.clone().matmul(l.clone().transpose()).reshape([6, 6, 64]));
        let got = critic.scores(local, y);
        assert!(rel_diff(&values(got.pos), &values(want.pos.clone())) <= 1e-6);
        assert!(rel_diff(&values(got.neg), &values(want.neg.clone())) <= 1e-6);
        // The same product in bf16 is measurably off: the test can tell the two apart.
        let bf16 = Scores::from_matrix(crate::model::bf16::matmul_bf16(l, g.transpose()).transpose().reshape([6, 6, 64]));
        assert!(rel_diff(&values(bf16.neg), &values(want.neg)) > 1e-4);
    }

    /// The official initialisation: no bias before the BatchNorm or on the shortcut, the shortcut
    /// the identity plus noise within ±0.01, and every encoding's rows normalised by the LayerNorm.
    #[test]
    fn official_minet_starts_near_identity_and_ends_normalised() {
        let d = Device::flex();
        d.seed(1);
        let n = MiNetLn::new(3, 5, &d);
        assert!(n.net.block1.bias.is_none() && n.net.shortcut.bias.is_none() && n.net.block2.bias.is_some());
        let w = values(n.net.shortcut.weight.val()); // [3, 5]
        for (k, v) in w.iter().enumerate() {
            let (i, j) = (k / 5, k % 5);
            if i == j {
                assert_eq!(*v, 1.0, "diagonal [{i}, {j}]");
            } else {
                assert!(v.abs() <= 0.01 && *v != 0.0, "off the diagonal [{i}, {j}]: {v}");
            }
        }
        let x = Tensor::<2>::random([7, 3], burn::tensor::Distribution::Normal(0.0, 3.0), &d);
        let out = values(n.forward(x, false));
        for row in out.chunks(5) {
            let mean = row.iter().sum::<f32>() / 5.0;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 5.0;
            assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3, "row {row:?}: mean {mean}, var {var}");
        }
    }

    #[test]
    fn critic_shapes() {
        let d = Device::flex();
        let local = Tensor::<4>::random([4, 16, 8, 8], burn::tensor::Distribution::Default, &d);
        let y = Tensor::<2>::random([4, 8], burn::tensor::Distribution::Default, &d);
        let s = LocalCritic::new(LocalCriticKind::EncodeDot, 16, 8, 32, &d).scores(local.clone(), y.clone());
        assert_eq!((s.pos.dims(), s.neg.dims()), ([4, 64], [4, 256]));
        let s = LocalCritic::new(LocalCriticKind::EncodeDotLn, 16, 8, 32, &d).scores(local.clone(), y.clone());
        assert_eq!((s.pos.dims(), s.neg.dims()), ([4, 64], [4, 256]));
        let s = LocalCritic::new(LocalCriticKind::ConcatConv, 16, 8, 0, &d).scores(local.clone(), y.clone());
        assert_eq!((s.pos.dims(), s.neg.dims()), ([4, 64], [4, 64]));
        let s = GlobalCritic::new(16, 8, &d).scores(local, y.clone());
        assert_eq!((s.pos.dims(), s.neg.dims()), ([4, 1], [4, 4]));
        assert_eq!(PriorDiscriminator::new(8, &d).forward(y).dims(), [4, 1]);
    }
}
