//! The model `eval` and `check` measure, in the runtime a device runs it with.
//!
//! - **tract** (`dim_runtime::Encoder`): a checkpoint (exported in memory) or an ONNX file, f32
//!   or int8 — what an ARM Linux board runs.
//! - **engine** (`dim_runtime::engine`, built for the host): a `.blob` — the very code the
//!   Cortex-M firmware runs, so `check` covers it too. Its conv and fc probe layers are its own
//!   uint8 activations times their scales: what tract's `relu3` / `fc_relu` outputs compute.
//! - **fast** (`dim_runtime::fast`): a `.blob` on the host fast path — the engine's arithmetic
//!   vectorised, what the C API runs a blob with; the same activations, bit for bit.

use super::Split;
use crate::data::{self, ImageSource};
use crate::export::PROBE_LAYERS;
use anyhow::Context;
use dim_runtime::Encoder;
use dim_runtime::engine::Model;
use dim_runtime::fast::{FastModel, Scratch};
use rayon::prelude::*;
use std::path::Path;

/// Which runtime embeds the images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// dim-runtime's tract `Encoder` (checkpoints, ONNX files).
    Tract,
    /// The no_std int8 engine (`.blob` files).
    Engine,
    /// The host fast path (`.blob` files).
    Fast,
}

impl Runtime {
    /// The runtime for `model` when none is named: the engine for a `.blob`, tract otherwise.
    pub fn for_model(model: &Path) -> Self {
        if model.extension().is_some_and(|e| e == "blob") { Self::Engine } else { Self::Tract }
    }
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tract => "dim-runtime (tract)",
            Self::Engine => "the no_std engine",
            Self::Fast => "the host fast path",
        })
    }
}

/// A model loaded in its runtime.
pub enum Deployed {
    /// With whether its probe layers are there.
    Tract(Encoder, bool),
    /// The blob's bytes (parsed again where used: `Model` borrows them), and whether it runs on
    /// the fast path.
    Engine(Vec<u8>, bool),
}

impl Deployed {
    /// Loads `model` into `runtime` (by default the one [`Runtime::for_model`] picks).
    pub fn load(model: &Path, runtime: Option<Runtime>) -> anyhow::Result<Self> {
        match runtime.unwrap_or_else(|| Runtime::for_model(model)) {
            Runtime::Tract => {
                anyhow::ensure!(
                    Runtime::for_model(model) == Runtime::Tract,
                    "{} is an engine blob: measure it with --runtime engine (or fast)",
                    model.display()
                );
                let (encoder, layers) = load_encoder(model)?;
                Ok(Self::Tract(encoder, layers))
            }
            runtime @ (Runtime::Engine | Runtime::Fast) => {
                let bytes = std::fs::read(model).with_context(|| format!("cannot read {}", model.display()))?;
                Model::parse(&bytes)
                    .map_err(|e| anyhow::anyhow!("{}: {e}; the engine runs the `.blob` that `trainer quantize --blob` writes", model.display()))?;
                Ok(Self::Engine(bytes, runtime == Runtime::Fast))
            }
        }
    }

    /// The runtime it is in.
    pub fn runtime(&self) -> Runtime {
        match self {
            Self::Tract(..) => Runtime::Tract,
            Self::Engine(_, false) => Runtime::Engine,
            Self::Engine(_, true) => Runtime::Fast,
        }
    }

    /// Decodes `indices` of `source` and embeds them: `y`, then `conv` and `fc` when there.
    pub fn represent(&self, source: &dyn ImageSource, indices: &[usize]) -> anyhow::Result<Split> {
        match self {
            Self::Tract(encoder, layers) => represent_tract(encoder, *layers, source, indices),
            Self::Engine(blob, fast) => represent_engine(blob, *fast, source, indices),
        }
    }
}

/// The untrained twin of `model`: an encoder of its architecture seeded as its run was (the
/// training config of a run folder, or the `config.json` that `export` and `ship-model` put
/// beside an encoder file), in tract. `None` when no config is found.
pub fn random_twin(model: &Path) -> anyhow::Result<Option<Encoder>> {
    use crate::fit::{checkpoint, config::TrainConfig};
    let config = if model.is_dir() {
        checkpoint::load_config(&checkpoint::resolve(model)?)?
    } else {
        match model.parent().map(|d| d.join("config.json")).filter(|p| p.exists()) {
            Some(p) => TrainConfig::load_file(&p)?,
            None => return Ok(None),
        }
    };
    let device = burn::tensor::Device::flex();
    let encoder = crate::fit::state::random_encoder(&config, &device);
    Ok(Some(Encoder::from_bytes(&crate::export::to_onnx(&encoder, false))?))
}

/// Runs `indices` of `source` through the engine (or, with `fast`, the fast path), one image at
/// a time as on a device (images in parallel, an arena each).
fn represent_engine(blob: &[u8], fast: bool, source: &dyn ImageSource, indices: &[usize]) -> anyhow::Result<Split> {
    let model = Model::parse(blob).map_err(|e| anyhow::anyhow!("{e}"))?;
    let fast = fast.then(|| FastModel::new(&model));
    // The activations `run_observed` shows: image, conv1..3, (pool), fc.
    let (conv3, fc_at) = (3, 4 + model.pool_scale.is_some() as usize);
    let (conv_scale, fc_scale) = (model.convs[2].y_scale, model.fc.y_scale);
    let bar = crate::progress::bar(true, indices.len(), "images embedded");
    type Row = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);
    let rows: Vec<Row> = indices
        .par_iter()
        .map_init(
            || (vec![0u8; model.arena_size()], Scratch::default()),
            |(arena, scratch), &i| -> anyhow::Result<Row> {
                let rgb = source.load(i)?;
                let mut input = vec![0f32; dim_runtime::INPUT_LEN];
                dim_runtime::preprocess::rgb32_to_input(&rgb, &mut input)?;
                let (mut y, mut conv, mut fc) = (vec![0f32; model.dim()], Vec::new(), Vec::new());
                let dequantize = |a: &[u8], s: f32| a.iter().map(|&q| q as f32 * s).collect::<Vec<f32>>();
                let mut seen = |layer, a: &[u8]| match layer {
                    l if l == conv3 => conv = dequantize(a, conv_scale),
                    l if l == fc_at => fc = dequantize(a, fc_scale),
                    _ => {}
                };
                match &fast {
                    Some(fast) => fast.run_observed(&rgb, scratch, &mut y, &mut seen),
                    None => model.run_observed(&rgb, arena, &mut y, &mut seen),
                }
                .map_err(|e| anyhow::anyhow!("{e}"))?;
                bar.inc(1);
                Ok((input, y, conv, fc))
            },
        )
        .collect::<anyhow::Result<_>>()?;
    bar.finish_and_clear();
    let n = rows.len().max(1);
    let (mut images, mut y, mut conv, mut fc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, yy, c, f) in rows {
        images.extend(i);
        y.extend(yy);
        conv.extend(c);
        fc.extend(f);
    }
    let labels = indices.iter().map(|&i| source.label(i)).collect();
    let layers = vec![("y", y.len() / n, y), ("conv", conv.len() / n, conv), ("fc", fc.len() / n, fc)];
    Ok(Split { images, labels, layers })
}

/// Loads `model` (a run folder / checkpoint, or an ONNX file) into the runtime, with its probe
/// layers when it has them. Returns the encoder and whether the layers are there.
pub fn load_encoder(model: &Path) -> anyhow::Result<(Encoder, bool)> {
    let bytes = if model.is_dir() {
        let ck = crate::fit::checkpoint::resolve(model)?;
        let config = crate::fit::checkpoint::load_config(&ck)?;
        let m = crate::fit::checkpoint::load_model(&ck, &config, &burn::tensor::Device::flex())?;
        crate::export::to_onnx(&m.encoder, false)
    } else {
        std::fs::read(model).with_context(|| format!("cannot read {}", model.display()))?
    };
    match dim_runtime::Encoder::from_bytes_with_layers(&bytes, &PROBE_LAYERS) {
        Ok(e) => Ok((e, true)),
        Err(dim_runtime::Error::MissingOutput(_)) => {
            eprintln!(
                "note: {} has no `relu3` / `fc_relu` outputs (exported before they existed?): probes run on Y only; re-export to probe conv and fc",
                model.display()
            );
            Ok((dim_runtime::Encoder::from_bytes(&bytes).with_context(|| format!("{}", model.display()))?, false))
        }
        Err(e) => Err(e).with_context(|| format!("cannot load {}", model.display())),
    }
}

/// Decodes `indices` of `source` and runs them through tract.
fn represent_tract(encoder: &Encoder, layers: bool, source: &dyn ImageSource, indices: &[usize]) -> anyhow::Result<Split> {
    let images = data::load_inputs(source, indices)?;
    let labels = indices.iter().map(|&i| source.label(i)).collect();
    let layers = embed_inputs(encoder, layers, &images)?;
    Ok(Split { images, labels, layers })
}

/// `(name, width, rows)` of `y`, then `conv` and `fc` with `layers`, for already preprocessed
/// `images` (`[n, 3, 32, 32]`), embedded in chunks under a progress bar.
pub fn embed_inputs(encoder: &Encoder, layers: bool, images: &[f32]) -> anyhow::Result<Vec<(&'static str, usize, Vec<f32>)>> {
    let n = (images.len() / dim_runtime::INPUT_LEN).max(1);
    let mut out: Vec<Vec<f32>> = Vec::new();
    let bar = crate::progress::bar(true, images.len() / dim_runtime::INPUT_LEN, "images embedded");
    for chunk in images.chunks(256 * dim_runtime::INPUT_LEN) {
        let parts = if layers { encoder.embed_layers(chunk)? } else { vec![encoder.embed_preprocessed(chunk)?] };
        out.resize(parts.len(), Vec::new());
        out.iter_mut().zip(parts).for_each(|(o, p)| o.extend(p));
        bar.inc((chunk.len() / dim_runtime::INPUT_LEN) as u64);
    }
    bar.finish_and_clear();
    let names = ["y", "conv", "fc"];
    Ok(out.into_iter().enumerate().map(|(i, v)| (names[i], v.len() / n, v)).collect())
}
