//! IDX files (MNIST, Fashion-MNIST), raw or gzip-compressed: big-endian header
//! `0 0 <type> <ndims>`, the dimensions as u32, then the data. Images are `u8 [N, H, W]`
//! (grey; replicated to RGB and resized to 32×32), labels `u8 [N]`.

use super::{DataError, ImageSource, Rgb32};
use dim_runtime::preprocess::to_rgb32;
use std::io::Read;
use std::path::{Path, PathBuf};

pub struct Idx {
    pixels: Vec<u8>,
    labels: Vec<u8>,
    rows: usize,
    cols: usize,
    classes: Vec<String>,
    path: PathBuf,
}

pub(super) fn is_idx_name(name: &str) -> bool {
    name.contains("idx3-ubyte") || name.contains("idx1-ubyte")
}

/// The training images file in `dir` (and its labels file when present). Prefers `train-*`.
pub(super) fn find_pair(dir: &Path) -> Option<(PathBuf, Option<PathBuf>)> {
    let mut images: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains("idx3-ubyte")))
        .collect();
    images.sort_by_key(|p| !p.file_name().unwrap().to_string_lossy().starts_with("train"));
    let images = images.into_iter().next()?;
    let name = images.file_name()?.to_str()?.replace("images-idx3", "labels-idx1");
    let stem = name.trim_end_matches(".gz").to_string();
    let labels = [stem.clone(), format!("{stem}.gz")].into_iter().map(|n| dir.join(n)).find(|p| p.exists());
    Some((images.clone(), labels))
}

/// Largest IDX payload read (4 GiB would be 4 million 32×32 images): a gzip bomb or a forged
/// header stops here, before memory runs out.
const MAX_IDX_BYTES: u64 = 1 << 31;

/// The IDX bytes of `raw`: itself, or its gzip stream decompressed (at most `cap` bytes).
fn decompress_capped<'a>(raw: &'a [u8], cap: u64, path: &Path) -> Result<std::borrow::Cow<'a, [u8]>, DataError> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw.into());
    }
    let mut out = Vec::new();
    // Decompress no more than the cap (+1 byte to tell "exactly the cap" from "more").
    flate2::read::GzDecoder::new(raw)
        .take(cap + 1)
        .read_to_end(&mut out)
        .map_err(|e| DataError::format(path, format!("corrupt gzip stream ({e}); re-download the file")))?;
    if out.len() as u64 > cap {
        return Err(DataError::format(path, format!("decompresses to more than {cap} bytes; not an image set this tool reads")));
    }
    Ok(out.into())
}

/// Parses an IDX header and checks the payload length; returns (dims, payload).
fn parse(path: &Path, bytes: &[u8], want_dims: u8) -> Result<(Vec<usize>, std::ops::Range<usize>), DataError> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(DataError::format(path, "not an IDX file (bad magic number)"));
    }
    if bytes[2] != 0x08 {
        return Err(DataError::format(path, format!("IDX element type 0x{:02x}; only unsigned bytes (0x08) are supported", bytes[2])));
    }
    if bytes[3] != want_dims {
        return Err(DataError::format(path, format!("IDX file has {} dimensions, expected {want_dims}", bytes[3])));
    }
    let header = 4 + 4 * want_dims as usize;
    if bytes.len() < header {
        return Err(DataError::format(path, "IDX header is truncated"));
    }
    let dims: Vec<usize> = (0..want_dims as usize).map(|d| u32::from_be_bytes(bytes[4 + 4 * d..8 + 4 * d].try_into().unwrap()) as usize).collect();
    let want = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    match want {
        Some(n) if header + n == bytes.len() => Ok((dims, header..bytes.len())),
        _ => Err(DataError::format(path, format!("header promises {:?} but the file holds {} data bytes: truncated or corrupt", dims, bytes.len() - header))),
    }
}

impl Idx {
    /// Reads an images file and, when given, its labels file (raw or gzip); without labels
    /// every image is class 0.
    pub fn open(images: &Path, labels: Option<&Path>) -> Result<Self, DataError> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| DataError::io(p, e));
        let image_bytes = read(images)?;
        let label_bytes = labels.map(|p| read(p).map(|b| (p, b))).transpose()?;
        Self::from_bytes((images, &image_bytes), label_bytes.as_ref().map(|(p, b)| (*p, &b[..])))
    }

    /// Parses the bytes of an images file and of its labels file (raw or gzip), each with the
    /// path its errors name. Untrusted input: sizes are checked before anything is allocated.
    pub fn from_bytes((images, image_bytes): (&Path, &[u8]), labels: Option<(&Path, &[u8])>) -> Result<Self, DataError> {
        let bytes = decompress_capped(image_bytes, MAX_IDX_BYTES, images)?;
        let (dims, body) = parse(images, &bytes, 3)?;
        let (n, rows, cols) = (dims[0], dims[1], dims[2]);
        if n == 0 || rows == 0 || cols == 0 {
            return Err(DataError::format(images, "IDX file holds no images"));
        }
        let pixels = bytes[body].to_vec();
        let labels = match labels {
            Some((lp, raw)) => {
                let lb = decompress_capped(raw, MAX_IDX_BYTES, lp)?;
                let (ld, lbody) = parse(lp, &lb, 1)?;
                if ld[0] != n {
                    return Err(DataError::format(lp, format!("{} labels for {n} images in {}", ld[0], images.display())));
                }
                lb[lbody].to_vec()
            }
            None => vec![0; n],
        };
        let k = labels.iter().copied().max().unwrap_or(0) as usize + 1;
        Ok(Self { pixels, labels, rows, cols, classes: (0..k).map(|c| c.to_string()).collect(), path: images.to_path_buf() })
    }
}

impl ImageSource for Idx {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn label(&self, i: usize) -> usize {
        self.labels[i] as usize
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn load(&self, i: usize) -> Result<Rgb32, DataError> {
        let px = self.rows * self.cols;
        let mut out = [0u8; super::IMAGE_BYTES];
        to_rgb32(&self.pixels[i * px..(i + 1) * px], self.cols, self.rows, 1, &mut out).map_err(|e| DataError::format(&self.path, e.to_string()))?;
        Ok(out)
    }
    fn describe(&self) -> String {
        format!("IDX {}×{} grey, {} images from {}", self.cols, self.rows, self.len(), self.path.display())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    pub(crate) fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            b.extend(d.to_be_bytes());
        }
        b.extend(data);
        b
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn reads_gz_and_raw_pairs_and_replicates_grey() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3 * 32 * 32).map(|i| (i / 1024 * 100) as u8).collect();
        std::fs::write(dir.path().join("train-images-idx3-ubyte.gz"), gz(&idx_bytes(&[3, 32, 32], &data))).unwrap();
        std::fs::write(dir.path().join("train-labels-idx1-ubyte"), idx_bytes(&[3], &[4, 0, 7])).unwrap();
        std::fs::write(dir.path().join("t10k-images-idx3-ubyte"), idx_bytes(&[1, 1, 1], &[0])).unwrap();
        let src = super::super::open(dir.path()).unwrap();
        assert_eq!(src.len(), 3);
        assert_eq!((src.label(0), src.label(2)), (4, 7));
        assert_eq!(src.classes().len(), 8);
        let img = src.load(2).unwrap();
        assert!(img.iter().all(|&v| v == 200));
    }

    /// A small gzip that inflates past the cap stops at the cap, not after inflating it all.
    #[test]
    fn gzip_bombs_stop_at_the_cap() {
        let path = Path::new("t10k-images-idx3-ubyte.gz");
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&vec![0u8; 1 << 20]).unwrap();
        let gz = e.finish().unwrap();
        assert!(gz.len() < 4096, "1 MiB of zeros packs small");
        let err = decompress_capped(&gz, 1000, path).unwrap_err().to_string();
        assert!(err.contains("more than 1000 bytes") && err.contains("t10k-images"), "{err}");
        assert_eq!(decompress_capped(&gz, 1 << 20, path).unwrap().len(), 1 << 20);
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x-images-idx3-ubyte");
        std::fs::write(&p, idx_bytes(&[2, 28, 28], &[0; 100])).unwrap();
        let err = Idx::open(&p, None).err().unwrap().to_string();
        assert!(err.contains("x-images-idx3-ubyte") && err.contains("truncated"), "{err}");
        std::fs::write(&p, b"\x1f\x8b garbage").unwrap();
        let err = Idx::open(&p, None).err().unwrap().to_string();
        assert!(err.contains("corrupt gzip"), "{err}");
        std::fs::write(&p, idx_bytes(&[2, 2], &[0; 4])).unwrap();
        assert!(Idx::open(&p, None).err().unwrap().to_string().contains("2 dimensions"));
    }
}
