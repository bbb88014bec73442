//! Embed every image of a folder with an exported encoder, one CSV row per image.
//!
//! ```sh
//! cargo run --release -p dim-runtime --example embed -- MODEL.onnx IMAGE_DIR OUT.csv
//! ```
//! Images (`.png`, `.jpg`, `.jpeg`, searched recursively) of any size are scaled and
//! centre-cropped to 32×32 by `dim_runtime::preprocess`, exactly as in training.

use anyhow::{Context, bail};
use dim_runtime::{Encoder, Image};
use std::io::Write;
use std::path::{Path, PathBuf};

fn images(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            images(&path, out)?;
        } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| ["png", "jpg", "jpeg"].contains(&e.to_ascii_lowercase().as_str())) {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, dir, out] = args.as_slice() else {
        bail!("usage: embed MODEL.onnx IMAGE_DIR OUT.csv");
    };
    let encoder = Encoder::from_path(model)?;
    let mut files = Vec::new();
    images(Path::new(dir), &mut files)?;
    files.sort();
    if files.is_empty() {
        bail!("{dir}: no .png/.jpg images found");
    }
    let mut csv = std::io::BufWriter::new(std::fs::File::create(out).with_context(|| format!("cannot write {out}"))?);
    write!(csv, "file")?;
    (0..encoder.dim()).try_for_each(|i| write!(csv, ",y{i}"))?;
    writeln!(csv)?;
    for chunk in files.chunks(64) {
        let decoded: Vec<image::RgbImage> =
            chunk.iter().map(|f| image::open(f).map(|i| i.to_rgb8()).with_context(|| format!("cannot decode {}", f.display()))).collect::<Result<_, _>>()?;
        let batch: Vec<Image> = decoded.iter().map(|i| Image::rgb(i.as_raw(), i.width() as usize, i.height() as usize)).collect();
        for (file, y) in chunk.iter().zip(encoder.embed_batch(&batch)?) {
            write!(csv, "{}", file.display())?;
            y.iter().try_for_each(|v| write!(csv, ",{v}"))?;
            writeln!(csv)?;
        }
    }
    csv.flush()?;
    println!("wrote {} embeddings of width {} to {out}", files.len(), encoder.dim());
    Ok(())
}
