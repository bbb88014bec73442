//! `trainer embed`: the representation Y of every image under the given paths, through
//! dim-runtime (as a device computes it), written as CSV (`path,y0,…`) or NPY (`f32 [n, d]`,
//! with the paths in order beside it as `<out>.paths.txt`). ONNX files (f32 or int8) and run
//! folders go through tract, engine blobs (`.blob`) through the no_std engine, as `eval` does.
//!
//! Images are decoded, scaled and centre-cropped as in training (`data::decode_file`), 64 at a
//! time, so memory stays bounded however many there are.

use crate::data;
use anyhow::{Context, bail};
use dim_runtime::INPUT_LEN;
use std::path::{Path, PathBuf};

/// What `trainer embed` is asked to do.
#[derive(Debug, Clone)]
pub struct EmbedOptions {
    /// An ONNX encoder (f32 or int8), a run folder / checkpoint, or an engine blob (`.blob`).
    pub model: PathBuf,
    /// Image files, or folders searched recursively for `.png` / `.jpg` / `.jpeg`.
    pub inputs: Vec<PathBuf>,
    /// `.csv` or `.npy`.
    pub out: PathBuf,
}

/// Images under `inputs`: files as given, folders walked in sorted order.
pub fn image_files(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?.flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out)?;
            } else if data::is_image(&p) {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            walk(input, &mut files)?;
        } else if input.exists() {
            files.push(input.clone());
        } else {
            bail!("{}: no such file or folder", input.display());
        }
    }
    if files.is_empty() {
        bail!("no .png / .jpg images under {}", inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    }
    Ok(files)
}

/// Embeds every image and writes `o.out`; returns (images, width of Y).
pub fn run(o: &EmbedOptions) -> anyhow::Result<(usize, usize)> {
    let format = o.out.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    if !matches!(format.as_deref(), Some("csv" | "npy")) {
        bail!("{}: the output must end in .csv or .npy", o.out.display());
    }
    let files = image_files(&o.inputs)?;
    let embedder = Embedder::open(&o.model)?;
    let dim = embedder.dim();
    let mut y = Vec::with_capacity(files.len() * dim);
    let bar = crate::progress::bar(true, files.len(), "images embedded");
    for chunk in files.chunks(64) {
        let rgb: Vec<data::Rgb32> = chunk.iter().map(|p| data::decode_file(p)).collect::<Result<_, _>>()?;
        y.extend(embedder.embed(&rgb)?);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    if format.as_deref() == Some("csv") {
        crate::fs::write_atomic(&o.out, csv(&files, &y, dim).as_bytes())?;
    } else {
        let mut bytes = Vec::new();
        use npyz::WriterBuilder;
        let mut w = npyz::WriteOptions::<f32>::new().default_dtype().shape(&[files.len() as u64, dim as u64]).writer(&mut bytes).begin_nd()?;
        w.extend(y.iter().copied())?;
        w.finish()?;
        crate::fs::write_atomic(&o.out, &bytes)?;
        let paths: String = files.iter().map(|p| format!("{}\n", p.display())).collect();
        crate::fs::write_atomic(&o.out.with_extension("paths.txt"), paths.as_bytes())?;
    }
    Ok((files.len(), dim))
}

/// The runtime that embeds: tract for ONNX files and run folders, the engine's arithmetic for a
/// blob (on the host fast path: the engine's results bit for bit, on every core).
enum Embedder {
    Tract(dim_runtime::Encoder),
    Engine(Box<dim_runtime::fast::FastModel>),
}

impl Embedder {
    fn open(model: &Path) -> anyhow::Result<Self> {
        use crate::eval::deployed::Runtime;
        if Runtime::for_model(model) == Runtime::Engine {
            let bytes = std::fs::read(model).with_context(|| format!("cannot read {}", model.display()))?;
            let parsed = dim_runtime::engine::Model::parse(&bytes).map_err(|e| {
                anyhow::anyhow!(
                    "{}: not an engine blob ({e}); embed takes an ONNX encoder (.onnx), a run folder, or a blob from `trainer quantize --blob`",
                    model.display()
                )
            })?;
            return Ok(Self::Engine(Box::new(dim_runtime::fast::FastModel::new(&parsed))));
        }
        let (encoder, _) = crate::eval::deployed::load_encoder(model)
            .with_context(|| format!("{}: embed takes an ONNX encoder (.onnx, f32 or int8), a run folder, or an engine blob (.blob)", model.display()))?;
        Ok(Self::Tract(encoder))
    }

    fn dim(&self) -> usize {
        match self {
            Self::Tract(e) => e.dim(),
            Self::Engine(fast) => fast.dim(),
        }
    }

    /// Y of every image, rows in order.
    fn embed(&self, images: &[data::Rgb32]) -> anyhow::Result<Vec<f32>> {
        match self {
            Self::Tract(encoder) => {
                let mut input = vec![0f32; images.len() * INPUT_LEN];
                for (rgb, out) in images.iter().zip(input.chunks_mut(INPUT_LEN)) {
                    dim_runtime::preprocess::rgb32_to_input(rgb, out).expect("INPUT_LEN slice");
                }
                Ok(encoder.embed_preprocessed(&input)?)
            }
            Self::Engine(fast) => {
                let mut y = vec![0f32; images.len() * fast.dim()];
                let threads = dim_runtime::cores();
                fast.run_batch(images, &mut y, threads).map_err(|e| anyhow::anyhow!("{e}"))?;
                Ok(y)
            }
        }
    }
}

fn csv(files: &[PathBuf], y: &[f32], dim: usize) -> String {
    let mut s = String::from("path");
    (0..dim).for_each(|i| s += &format!(",y{i}"));
    s.push('\n');
    for (path, row) in files.iter().zip(y.chunks(dim)) {
        // Quoted, with quotes doubled (RFC 4180): paths may hold commas.
        s += &format!("\"{}\"", path.display().to_string().replace('"', "\"\""));
        row.iter().for_each(|v| s += &format!(",{v}"));
        s.push('\n');
    }
    s
}
