//! The DIM model: an encoder and the critics that train it.

pub mod bf16;
pub mod conv_rows;
pub mod critic;
pub mod encoder;

use burn::prelude::*;
pub use critic::{DistillCritic, EncodeDotLnCritic, GlobalCritic, LocalCritic, LocalCriticKind, PriorDiscriminator, Scores};
pub use encoder::{EncoderConfig, EncoderNet, EncoderOutput};

/// `a · b`, with the operands rounded to bf16 when `bf16` ([`bf16::matmul_bf16`]).
pub fn product(a: Tensor<2>, b: Tensor<2>, bf16: bool) -> Tensor<2> {
    if bf16 { bf16::matmul_bf16(a, b) } else { a.matmul(b) }
}

/// Everything trained by the DIM loss (the prior discriminator has its own optimiser).
#[derive(Module, Debug)]
pub struct DimModel {
    pub encoder: EncoderNet,
    /// Present when the local weight β > 0.
    pub local: Option<LocalCritic>,
    /// Present when the global weight α > 0.
    pub global: Option<GlobalCritic>,
    /// Present when the run distils a teacher (`[distill]` in the config).
    pub distill: Option<DistillCritic>,
}

/// What to build: the encoder and which critics (by their loss weights).
#[derive(Config, Debug)]
pub struct DimModelConfig {
    pub encoder: EncoderConfig,
    pub local_critic: LocalCriticKind,
    /// Width W of the encode-and-dot critic (2048 in the paper).
    pub critic_width: usize,
    pub with_local: bool,
    pub with_global: bool,
    /// The distillation critic: `(student layer width, teacher width, embedding width W,
    /// temperature τ)`.
    #[config(default = "None")]
    pub distill: Option<(usize, usize, usize, f64)>,
    /// The distillation critic is a regression head (`[distill] objective = "regress"`): the
    /// student's layer mapped to the teacher's width, the teacher's rows as they are.
    #[config(default = false)]
    pub distill_regress: bool,
    /// The encoder's and the local critic's large products in bf16 (CPU only; `fit --bf16`).
    #[config(default = false)]
    pub bf16_products: bool,
}

impl DimModelConfig {
    pub fn init(&self, device: &Device) -> DimModel {
        let local_channels = self.encoder.channels[1];
        let y = self.encoder.y_dim;
        let mut model = DimModel {
            encoder: self.encoder.init(device),
            local: self.with_local.then(|| LocalCritic::new(self.local_critic, local_channels, y, self.critic_width, device)),
            global: self.with_global.then(|| GlobalCritic::new(local_channels, y, device)),
            distill: self
                .distill
                .map(|(s, t, w, tau)| if self.distill_regress { DistillCritic::regressor(s, t, device) } else { DistillCritic::new(s, t, w, tau, device) }),
        };
        model.set_bf16_products(self.bf16_products);
        model
    }
}

impl DimModel {
    /// Runs the encoder's and the encode-and-dot critic's large products in bf16 or in f32.
    /// Not part of a checkpoint: the run's config says it.
    pub fn set_bf16_products(&mut self, on: bool) {
        self.encoder.bf16_products = on;
        match &mut self.local {
            Some(LocalCritic::EncodeDot(critic)) => critic.bf16_products = on,
            Some(LocalCritic::EncodeDotLn(critic)) => critic.bf16_products = on,
            _ => {}
        }
    }
}
