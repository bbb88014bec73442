//! Embed every image of a folder with an exported encoder, one CSV row per image.
//!
//! ```sh
//! cargo run --release -p dim-runtime --example embed -- MODEL.onnx IMAGE_DIR OUT.csv
//! ```
//! Images (`.png`, `.jpg`, `.jpeg`, searched recursively) of any size are scaled and
//! centre-cropped to 32×32 by `dim_runtime::preprocess`, exactly as in training.

use anyhow::{Context, bail};
use dim_runtime::preprocess::preprocess;
use dim_runtime::{Encoder, INPUT_LEN};
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
    // Each image is decoded (with size limits: a forged header cannot claim gigabytes) and
    // reduced to the 32×32 model input at once, so a batch holds 64 small inputs, never 64 photos.
    let mut limits = image::Limits::default();
    (limits.max_image_width, limits.max_image_height, limits.max_alloc) = (Some(8192), Some(8192), Some(256 << 20));
    for chunk in files.chunks(64) {
        let mut input = vec![0f32; chunk.len() * INPUT_LEN];
        for (file, out) in chunk.iter().zip(input.chunks_mut(INPUT_LEN)) {
            let mut reader = image::ImageReader::open(file).with_context(|| format!("cannot read {}", file.display()))?.with_guessed_format()?;
            reader.limits(limits.clone());
            let img = reader.decode().with_context(|| format!("cannot decode {}", file.display()))?.to_rgb8();
            preprocess(img.as_raw(), img.width() as usize, img.height() as usize, 3, out)?;
        }
        for (file, y) in chunk.iter().zip(encoder.embed_preprocessed(&input)?.chunks(encoder.dim())) {
            write!(csv, "{}", file.display())?;
            y.iter().try_for_each(|v| write!(csv, ",{v}"))?;
            writeln!(csv)?;
        }
    }
    csv.flush()?;
    println!("wrote {} embeddings of width {} to {out}", files.len(), encoder.dim());
    Ok(())
}
