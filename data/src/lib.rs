//! Image data: readers for the formats users have, a built-in synthetic set, and the loader.
//!
//! Every source yields 32×32 RGB images (HWC u8, see [`dim_runtime::preprocess`]) with a class
//! label. Sources are indexed, so the loader can decode any subset in any order on worker threads
//! while the backend trains on the previous batch.
//!
//! The readers take untrusted bytes (downloaded archives, users' photos): they check sizes
//! before allocating and return a [`DataError`] naming the file, never panic; `fuzz/` drives
//! [`decode_bytes`] and [`Idx::from_bytes`] with arbitrary input.

mod augment;
mod cache;
mod cifar_bin;
mod folder;
mod idx;
mod loader;
mod synthetic;

use std::path::{Path, PathBuf};

pub use augment::Augment;
pub use cache::Cached;
pub use cifar_bin::{CLASSES as CIFAR10_CLASSES, CifarBinary};
pub use folder::{ImageFolder, decode_bytes, decode_file, is_image};
pub use idx::Idx;
pub use loader::{Batch, Loader, LoaderConfig};
pub use synthetic::Shapes;

/// Bytes in one 32×32 RGB image, and the image (HWC): the runtime's, so trainer and devices agree.
pub use dim_runtime::preprocess::{RGB32_LEN as IMAGE_BYTES, Rgb32};

/// Why data could not be read. Each variant names the file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: cannot decode image ({reason}); remove or replace the file, or pass --skip-bad")]
    Decode { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{path}: no images found; expected CIFAR-10 `*_batch*.bin`, IDX `*-images-idx3-ubyte[.gz]`, or `<class>/*.png|jpg` folders")]
    Empty { path: PathBuf },
}

impl DataError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }
    pub(crate) fn format(path: &Path, reason: impl Into<String>) -> Self {
        Self::Format { path: path.to_path_buf(), reason: reason.into() }
    }
}

/// An indexed set of labelled images.
pub trait ImageSource: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Class label of image `i`.
    fn label(&self, i: usize) -> usize;
    /// Class names, indexed by label.
    fn classes(&self) -> &[String];
    /// Decodes image `i` (resized/cropped to 32×32 RGB).
    fn load(&self, i: usize) -> Result<Rgb32, DataError>;
    /// Human-readable description of where the data comes from.
    fn describe(&self) -> String;
}

/// Opens `path` as whichever supported format it holds.
///
/// A directory is searched for, in order: CIFAR-10 binary batches (`data_batch_*.bin`, also
/// inside a `cifar-10-batches-bin/` subfolder), IDX image files, then `<class>/` image folders
/// (also inside a `train/` subfolder). A single `.bin` or IDX file opens directly.
///
/// `builtin:shapes` (or `builtin:shapes:N`) names the built-in synthetic set (12,000 images by
/// default, seed 0), so commands that take a data path also run without any download.
pub fn open(path: &Path) -> Result<Box<dyn ImageSource>, DataError> {
    if let Some(rest) = path.to_str().and_then(|p| p.strip_prefix("builtin:shapes")) {
        let n = rest.strip_prefix(':').map_or(Ok(12_000), str::parse).map_err(|_| DataError::format(path, "expected builtin:shapes or builtin:shapes:N"))?;
        return Ok(Box::new(Shapes::new(n, 0)));
    }
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    if meta.is_file() {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".bin") {
            return Ok(Box::new(CifarBinary::open(&[path.to_path_buf()])?));
        }
        if idx::is_idx_name(name) {
            return Ok(Box::new(Idx::open(path, None)?));
        }
        return Err(DataError::format(path, "unknown file type; expected a CIFAR-10 .bin batch or an IDX file"));
    }
    for dir in [path.to_path_buf(), path.join("cifar-10-batches-bin")] {
        let batches = cifar_bin::train_batches(&dir);
        if !batches.is_empty() {
            return Ok(Box::new(CifarBinary::open(&batches)?));
        }
    }
    if let Some((images, labels)) = idx::find_pair(path) {
        return Ok(Box::new(Idx::open(&images, labels.as_deref())?));
    }
    for dir in [path.to_path_buf(), path.join("train")] {
        if folder::looks_like_folder(&dir) {
            return Ok(Box::new(ImageFolder::open(&dir)?));
        }
    }
    Err(DataError::Empty { path: path.to_path_buf() })
}

/// Splits `0..n` with a seeded shuffle into (train, validation), the validation part being the
/// last `val` indices of the shuffle (DESIGN.md: the last 5,000 of a fixed seeded shuffle).
pub fn split(n: usize, val: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
    use rand::{SeedableRng, seq::SliceRandom};
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let val = val.min(n / 2);
    let valid = order.split_off(n - val);
    (order, valid)
}

/// Model inputs (`[n, 3, 32, 32]` f32) for `indices`, decoded in parallel.
pub fn load_inputs(source: &dyn ImageSource, indices: &[usize]) -> Result<Vec<f32>, DataError> {
    use rayon::prelude::*;
    let imgs: Vec<Rgb32> = indices.par_iter().map(|&i| source.load(i)).collect::<Result<_, _>>()?;
    let mut out = vec![0f32; imgs.len() * dim_runtime::INPUT_LEN];
    for (img, o) in imgs.iter().zip(out.chunks_mut(dim_runtime::INPUT_LEN)) {
        dim_runtime::preprocess::rgb32_to_input(img, o).expect("INPUT_LEN chunk");
    }
    Ok(out)
}

/// Helpers for other crates' tests (feature `testing`).
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use std::path::Path;

    /// Writes `<root>/{cats,dogs}/<i>.png|jpg` (40×32, alternating PNG and JPEG), `per_class`
    /// of each; the red channel tells the classes apart.
    pub fn write_folder(root: &Path, per_class: usize) {
        for (c, name) in ["cats", "dogs"].iter().enumerate() {
            std::fs::create_dir_all(root.join(name)).unwrap();
            for i in 0..per_class {
                let img = image::RgbImage::from_fn(40, 32, |x, _| image::Rgb([(c * 200) as u8, (x * 6) as u8, i as u8]));
                let ext = if i % 2 == 0 { "png" } else { "jpg" };
                img.save(root.join(name).join(format!("{i:04}.{ext}"))).unwrap();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_seeded_disjoint_and_complete() {
        let (a, b) = split(100, 10, 7);
        let (a2, b2) = split(100, 10, 7);
        assert_eq!((a.clone(), b.clone()), (a2, b2));
        assert_eq!((a.len(), b.len()), (90, 10));
        let mut all: Vec<_> = a.iter().chain(&b).copied().collect();
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_ne!(split(100, 10, 8).1, b);
    }

    #[test]
    fn open_missing_and_empty_paths_name_them() {
        let dir = tempfile::tempdir().unwrap();
        let err = open(&dir.path().join("nope")).err().unwrap().to_string();
        assert!(err.contains("nope"), "{err}");
        let err = open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("no images found"), "{err}");
        assert_eq!(open(Path::new("builtin:shapes:30")).unwrap().len(), 30);
        assert!(open(Path::new("builtin:shapes:x")).is_err());
    }
}
