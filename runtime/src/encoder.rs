//! The tract-backed encoder: an ONNX file in, embeddings out.

use crate::Error;
use crate::preprocess::{INPUT_LEN, INPUT_SIDE, preprocess};
use std::path::Path;
use std::sync::Arc;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::dims;
use tract_onnx::tract_hir::internal::DimLike;

/// An 8-bit image in HWC order (RGB with 3 channels, grey with 1), any size.
#[derive(Debug, Clone, Copy)]
pub struct Image<'a> {
    /// `width · height · channels` bytes, row by row.
    pub pixels: &'a [u8],
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// 3 (RGB) or 1 (grey).
    pub channels: usize,
}

impl<'a> Image<'a> {
    /// An RGB image (3 bytes a pixel).
    pub fn rgb(pixels: &'a [u8], width: usize, height: usize) -> Self {
        Self { pixels, width, height, channels: 3 }
    }
}

/// A loaded encoder, built once. `Encoder` is `Send + Sync` and cheap to clone; share it
/// across threads.
///
/// An f32 file of `trainer export`'s form runs on our own products ([`crate::float`]); tract
/// still reads and optimises it first — that is the check that the file is a model tract
/// accepts, and where its width comes from — but its plans are not kept. Any other file runs
/// on two tract plans: one for a single image, with every shape concrete, and one for any
/// batch size (a symbolic `N`). tract resolves a symbolic shape on every run and plans it less
/// tightly: the concrete plan embeds one image in about three quarters of the time
/// (`scripts/bench-runtime`). The price is the packed weights held twice.
#[derive(Clone)]
pub struct Encoder {
    run: Runner,
    /// The plan with the extra outputs of [`Encoder::from_bytes_with_layers`].
    layers: Option<Arc<TypedRunnableModel>>,
    dim: usize,
    /// Threads a batch is split over (tract runs one image stream per thread).
    threads: usize,
}

/// What embeds: our float path, or tract's two plans.
#[derive(Clone)]
enum Runner {
    Float(Arc<crate::float::FloatModel>),
    Tract { single: Arc<TypedRunnableModel>, plan: Arc<TypedRunnableModel> },
}

/// Fewest images a thread is given: below that, starting it costs more than it saves.
const MIN_IMAGES_PER_THREAD: usize = 4;

/// How an int8 graph is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Int8Form {
    /// The faster of the int8 kernels and the float form on this architecture.
    Fastest,
    /// tract's int8 kernels everywhere.
    AsWritten,
}

fn model_err(e: impl std::fmt::Display) -> Error {
    Error::Model(format!("{e:#}"))
}

impl Encoder {
    /// Loads an ONNX encoder file (f32 or int8, from `trainer export` / `trainer quantize`).
    ///
    /// ```no_run
    /// let encoder = dim_runtime::Encoder::from_path("models/tiny/encoder.int8.onnx")?;
    /// let pixels = vec![128u8; 64 * 48 * 3]; // any size: scaled and centre-cropped to 32×32
    /// let y = encoder.embed(dim_runtime::Image::rgb(&pixels, 64, 48))?;
    /// assert_eq!(y.len(), encoder.dim());
    /// # Ok::<(), dim_runtime::Error>(())
    /// ```
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Self::from_bytes(&bytes).map_err(|e| match e {
            Error::Model(m) => Error::Model(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Loads an ONNX encoder with input `[N, 3, 32, 32]` f32 and a first output `[N, D]`.
    /// Untrusted bytes give `Err`, never a panic: tract's own checks run inside
    /// `catch_unwind`, so a malformed graph that trips an assertion is reported, not raised.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        Self::from_bytes_with_layers(bytes, &[])
    }

    /// Like [`Encoder::from_bytes`], and [`Encoder::embed_layers`] also returns the named
    /// intermediate values (e.g. `relu3`, `fc_relu` of a `trainer export` / `quantize` file),
    /// as f32. Embedding alone is unchanged: the extra outputs are not computed for it.
    pub fn from_bytes_with_layers(bytes: &[u8], layers: &[&str]) -> Result<Self, Error> {
        Self::load_guarded(bytes, layers, Int8Form::Fastest)
    }

    /// Like [`Encoder::from_bytes`], but the file runs on tract exactly as written: an int8
    /// graph on tract's int8 kernels on every architecture — what an aarch64 board runs (on
    /// x86-64 [`Encoder::from_bytes`] runs it in an equivalent float form instead, several times
    /// faster there) — and an f32 encoder on tract's plan rather than the float path
    /// ([`crate::float`]). The tests hold the fast forms to this one.
    pub fn from_bytes_as_written(bytes: &[u8]) -> Result<Self, Error> {
        Self::load_guarded(bytes, &[], Int8Form::AsWritten)
    }

    fn load_guarded(bytes: &[u8], layers: &[&str], form: Int8Form) -> Result<Self, Error> {
        let bytes = bytes.to_vec();
        let layers: Vec<String> = layers.iter().map(|s| s.to_string()).collect();
        std::panic::catch_unwind(move || Self::load(&bytes, &layers, form)).unwrap_or_else(|p| {
            let msg = p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned());
            Err(Error::Model(format!("rejected by tract: {}", msg.unwrap_or_else(|| "panic while loading".into()))))
        })
    }

    fn load(bytes: &[u8], layers: &[String], form: Int8Form) -> Result<Self, Error> {
        // On x86-64 an int8 graph runs faster in its float form (see `qdq`); elsewhere as written.
        let float_form = if cfg!(target_arch = "x86_64") && form == Int8Form::Fastest { crate::qdq::float_form(bytes) } else { None };
        let bytes = float_form.as_deref().unwrap_or(bytes);
        let mut model = tract_onnx::onnx().model_for_read(&mut &bytes[..]).map_err(model_err)?;
        if model.inputs.len() != 1 {
            return Err(Error::Model(format!("expected 1 input, found {}", model.inputs.len())));
        }
        model.outputs.truncate(1);
        let layered = if layers.is_empty() {
            None
        } else {
            let mut outputs = model.outputs.clone();
            for name in layers {
                // A node of that name (`trainer export` names each node after its output), else a
                // value of that name: other exporters (PyTorch's) name nodes by their module path.
                let outlet = match model.node_by_name(name) {
                    Ok(node) => OutletId::new(node.id, 0),
                    Err(_) => model.find_outlet_label(name).ok_or_else(|| Error::MissingOutput(name.clone()))?,
                };
                outputs.push(outlet);
            }
            let mut with = model.clone();
            with.select_output_outlets(&outputs).map_err(model_err)?;
            Some(with)
        };
        let n = model.sym("N");
        let s = INPUT_SIDE as i64;
        let one = model.clone();
        let model = model.with_input_fact(0, f32::fact(dims!(n, 3, s, s)).into()).map_err(model_err)?.into_optimized().map_err(model_err)?;
        let out = model.output_fact(0).map_err(model_err)?;
        let shape = out.shape.to_tvec();
        if shape.len() != 2 || out.datum_type != f32::datum_type() {
            return Err(Error::Model(format!("output must be f32 [N, D], found {:?} {:?}", out.datum_type, shape)));
        }
        let dim = shape[1].to_usize().map_err(|_| Error::Model(format!("embedding width {} is not a constant", shape[1])))?;
        if dim == 0 {
            return Err(Error::Model("the model's output is 0 wide: it embeds nothing".into()));
        }
        let layers = match layered {
            None => None,
            Some(m) => {
                let n = m.sym("N");
                let m = m.with_input_fact(0, f32::fact(dims!(n, 3, s, s)).into()).map_err(model_err)?.into_optimized().map_err(model_err)?;
                Some(m.into_runnable().map_err(model_err)?)
            }
        };
        // With layers, y stays on tract too, so that `embed` and `embed_layers` give the same y.
        let float = if form == Int8Form::Fastest && layers.is_none() { crate::float::FloatModel::from_onnx(bytes).filter(|f| f.dim() == dim) } else { None };
        let run = match float {
            Some(float) => Runner::Float(Arc::new(float)),
            None => {
                let single = one.with_input_fact(0, f32::fact(dims!(1, 3, s, s)).into()).map_err(model_err)?.into_optimized().map_err(model_err)?;
                Runner::Tract { single: single.into_runnable().map_err(model_err)?, plan: model.into_runnable().map_err(model_err)? }
            }
        };
        Ok(Self { run, layers, dim, threads: crate::cores() })
    }

    /// Width of the embedding.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Runs batches on `threads` threads at most (default: the cores the system reports).
    /// tract computes one image stream per thread, so a batch is split into that many parts;
    /// a single image always runs on the calling thread.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Embeds already preprocessed images: `input` is `[n, 3, 32, 32]` f32 (see
    /// [`crate::preprocess`]), the result `[n, dim]`, row-major.
    pub fn embed_preprocessed(&self, input: &[f32]) -> Result<Vec<f32>, Error> {
        match &self.run {
            Runner::Float(float) => {
                check_input(input)?;
                Ok(float.run(input, self.threads))
            }
            Runner::Tract { single, plan } => {
                let plan = if input.len() == INPUT_LEN { single } else { plan };
                Ok(self.run_split(plan, input)?.remove(0))
            }
        }
    }

    /// `[y, layer 1, …]` for preprocessed `input`, each row-major `[n, width]` (a feature map
    /// flattened in CHW order). Needs [`Encoder::from_bytes_with_layers`].
    pub fn embed_layers(&self, input: &[f32]) -> Result<Vec<Vec<f32>>, Error> {
        let plan = self.layers.as_ref().ok_or_else(|| Error::Run("the encoder was loaded without layers".into()))?;
        self.run_split(plan, input)
    }

    /// [`Self::run`] over up to `threads` parts of the batch at once, outputs joined in order.
    fn run_split(&self, plan: &Arc<TypedRunnableModel>, input: &[f32]) -> Result<Vec<Vec<f32>>, Error> {
        check_input(input)?;
        let n = input.len() / INPUT_LEN;
        let parts = self.threads.min(n / MIN_IMAGES_PER_THREAD).max(1);
        if parts == 1 {
            return Self::run(plan, input);
        }
        let per = n.div_ceil(parts) * INPUT_LEN;
        let results: Vec<Result<Vec<Vec<f32>>, Error>> = std::thread::scope(|s| {
            let workers: Vec<_> = input.chunks(per).map(|part| s.spawn(move || Self::run(plan, part))).collect();
            workers.into_iter().map(|w| w.join().unwrap_or_else(|_| Err(Error::Run("a worker thread panicked".into())))).collect()
        });
        let mut joined: Vec<Vec<f32>> = Vec::new();
        for outputs in results {
            let outputs = outputs?;
            joined.resize(outputs.len(), Vec::new());
            joined.iter_mut().zip(outputs).for_each(|(all, part)| all.extend(part));
        }
        Ok(joined)
    }

    fn run(plan: &Arc<TypedRunnableModel>, input: &[f32]) -> Result<Vec<Vec<f32>>, Error> {
        let n = input.len() / INPUT_LEN;
        let t = Tensor::from_shape(&[n, 3, INPUT_SIDE, INPUT_SIDE], input).map_err(|e| Error::Run(e.to_string()))?;
        // A model that loaded may still be hostile (mutated weights or shapes): keep tract's
        // internal assertions from unwinding into the caller.
        let plan = plan.clone();
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || plan.run(tvec!(t.into_tvalue()))))
            .map_err(|_| Error::Run("tract panicked while running the model".into()))?
            .map_err(|e| Error::Run(format!("{e:#}")))?;
        out.iter()
            .map(|o| {
                Ok(o.cast_to::<f32>()
                    .map_err(|e| Error::Run(e.to_string()))?
                    .to_plain_array_view::<f32>()
                    .map_err(|e| Error::Run(e.to_string()))?
                    .iter()
                    .copied()
                    .collect())
            })
            .collect()
    }

    /// Whether embedding runs on the float path ([`crate::float`]) rather than tract's plan.
    pub fn runs_float_path(&self) -> bool {
        matches!(self.run, Runner::Float(_))
    }

    /// Embeds one image of any size.
    pub fn embed(&self, image: Image<'_>) -> Result<Vec<f32>, Error> {
        self.embed_batch(&[image]).map(|mut v| v.remove(0))
    }

    /// Embeds a batch of images (any sizes) in one run.
    pub fn embed_batch(&self, images: &[Image<'_>]) -> Result<Vec<Vec<f32>>, Error> {
        let mut input = vec![0f32; images.len() * INPUT_LEN];
        for (img, out) in images.iter().zip(input.chunks_mut(INPUT_LEN)) {
            preprocess(img.pixels, img.width, img.height, img.channels, out)?;
        }
        if images.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.embed_preprocessed(&input)?.chunks(self.dim).map(<[f32]>::to_vec).collect())
    }
}

/// A batch of whole preprocessed images, at least one.
fn check_input(input: &[f32]) -> Result<(), Error> {
    if input.is_empty() || !input.len().is_multiple_of(INPUT_LEN) {
        return Err(Error::Run(format!("input holds {} values, not a multiple of {INPUT_LEN}", input.len())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_empty_bytes_are_errors() {
        for bytes in [&b""[..], b"not a model", &[0xff; 64]] {
            assert!(matches!(Encoder::from_bytes(bytes), Err(Error::Model(_))));
        }
        let err = Encoder::from_path("/nonexistent/encoder.onnx").err().unwrap().to_string();
        assert!(err.contains("/nonexistent/encoder.onnx"), "{err}");
    }

    fn _is_send_sync() {
        fn f<T: Send + Sync>() {}
        f::<Encoder>();
    }
}
