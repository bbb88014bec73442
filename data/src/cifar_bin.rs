//! CIFAR-10 binary batches, the official format: records of 1 label byte + 3072 pixel bytes
//! (1024 red, 1024 green, 1024 blue, rows top to bottom).

use super::{DataError, IMAGE_BYTES, ImageSource, Rgb32};
use std::path::{Path, PathBuf};

const RECORD: usize = 1 + IMAGE_BYTES;
/// CIFAR-10's class names, in label order.
pub const CLASSES: [&str; 10] = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// CIFAR-10 records held in memory (150 MB for the whole train split).
pub struct CifarBinary {
    records: Vec<u8>,
    classes: Vec<String>,
    files: Vec<PathBuf>,
}

/// `data_batch_1.bin` … `data_batch_5.bin` in `dir`, sorted; empty when none.
pub(super) fn train_batches(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n.starts_with("data_batch") && n.ends_with(".bin")
        })
        .collect();
    found.sort();
    found
}

impl CifarBinary {
    pub fn open(files: &[PathBuf]) -> Result<Self, DataError> {
        let mut records = Vec::new();
        for file in files {
            let bytes = std::fs::read(file).map_err(|e| DataError::io(file, e))?;
            if bytes.is_empty() || bytes.len() % RECORD != 0 {
                return Err(DataError::format(
                    file,
                    format!(
                        "{} bytes is not a whole number of {RECORD}-byte CIFAR-10 records; the file is truncated or not a CIFAR-10 batch (re-download it)",
                        bytes.len()
                    ),
                ));
            }
            if let Some(bad) = bytes.chunks(RECORD).position(|r| r[0] as usize >= CLASSES.len()) {
                return Err(DataError::format(file, format!("record {bad} has label {} (CIFAR-10 labels are 0-9); not a CIFAR-10 batch", bytes[bad * RECORD])));
            }
            records.extend_from_slice(&bytes);
        }
        let classes = match files.first().and_then(|f| f.parent()).map(|d| d.join("batches.meta.txt")) {
            Some(meta) if meta.exists() => std::fs::read_to_string(&meta)
                .map_err(|e| DataError::io(&meta, e))?
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.trim().to_string())
                .collect(),
            _ => CLASSES.iter().map(|s| s.to_string()).collect(),
        };
        Ok(Self { records, classes, files: files.to_vec() })
    }
}

impl ImageSource for CifarBinary {
    fn len(&self) -> usize {
        self.records.len() / RECORD
    }
    fn label(&self, i: usize) -> usize {
        self.records[i * RECORD] as usize
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn load(&self, i: usize) -> Result<Rgb32, DataError> {
        let planes = &self.records[i * RECORD + 1..(i + 1) * RECORD];
        let mut out = [0u8; IMAGE_BYTES];
        for p in 0..1024 {
            for c in 0..3 {
                out[p * 3 + c] = planes[c * 1024 + p];
            }
        }
        Ok(out)
    }
    fn describe(&self) -> String {
        format!("CIFAR-10 binary, {} images from {} file(s) starting {}", self.len(), self.files.len(), self.files[0].display())
    }
}

#[cfg(test)]
mod tests {

    fn record(label: u8, fill: impl Fn(usize, usize) -> u8) -> Vec<u8> {
        let mut r = vec![label];
        for c in 0..3 {
            for p in 0..1024 {
                r.push(fill(c, p));
            }
        }
        r
    }

    #[test]
    fn reads_planar_records_as_hwc() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = record(3, |c, p| (c * 80 + p % 7) as u8);
        bytes.extend(record(9, |_, _| 200));
        std::fs::write(dir.path().join("data_batch_1.bin"), &bytes).unwrap();
        let src = super::super::open(dir.path()).unwrap();
        assert_eq!(src.len(), 2);
        assert_eq!((src.label(0), src.label(1)), (3, 9));
        assert_eq!(src.classes()[9], "truck");
        let img = src.load(0).unwrap();
        // pixel 5, channel 2 (blue) = 160 + 5
        assert_eq!(img[5 * 3 + 2], 165);
        assert_eq!(img[5 * 3], 5);
        assert!(src.load(1).unwrap().iter().all(|&v| v == 200));
    }

    #[test]
    fn truncated_and_mislabelled_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data_batch_1.bin");
        let mut bytes = record(1, |_, _| 0);
        bytes.truncate(3000);
        std::fs::write(&path, &bytes).unwrap();
        let err = super::super::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("data_batch_1.bin") && err.contains("truncated"), "{err}");
        std::fs::write(&path, record(42, |_, _| 0)).unwrap();
        let err = super::super::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("label 42"), "{err}");
    }
}
