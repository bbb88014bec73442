//! `trainer data split`: the training and validation splits `fit` and `eval` draw, written as raw
//! arrays, so an outside program (the PyTorch twin in `trainer/benches/dim_twin.py`) trains on
//! exactly the images `fit` trains on, decoded by the same code.
//!
//! Files, in the split's order (the first image of `train.u8` is the first `fit` indexes):
//! ```text
//! train.u8      N × 32 × 32 × 3 bytes (HWC RGB, as dim_runtime::preprocess::Rgb32)
//! train.labels  N bytes (class index; class names in classes.txt)
//! valid.u8      V × 32 × 32 × 3 bytes
//! valid.labels  V bytes
//! classes.txt   one class name per line
//! ```

use super::{IMAGE_BYTES, ImageSource};
use std::path::Path;

/// Writes the split of `source` (`validation` images held out, shuffle seeded by `seed`, as
/// `fit` splits) into `out`; returns the sizes `(train, valid)`.
pub fn write(source: &dyn ImageSource, validation: usize, seed: u64, out: &Path) -> anyhow::Result<(usize, usize)> {
    anyhow::ensure!(source.classes().len() <= 256, "{} classes do not fit the one-byte labels", source.classes().len());
    let (train, valid) = super::split(source.len(), validation, seed);
    for (name, indices) in [("train", &train), ("valid", &valid)] {
        let mut images = Vec::with_capacity(indices.len() * IMAGE_BYTES);
        for &i in indices {
            images.extend_from_slice(&source.load(i)?);
        }
        let labels: Vec<u8> = indices.iter().map(|&i| source.label(i) as u8).collect();
        crate::fs::write_atomic(&out.join(format!("{name}.u8")), &images)?;
        crate::fs::write_atomic(&out.join(format!("{name}.labels")), &labels)?;
    }
    crate::fs::write_atomic(&out.join("classes.txt"), (source.classes().join("\n") + "\n").as_bytes())?;
    Ok((train.len(), valid.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_hold_the_split_in_its_order() {
        let shapes = crate::data::Shapes::new(40, 3);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(write(&shapes, 10, 7, dir.path()).unwrap(), (30, 10));
        let (train, valid) = crate::data::split(40, 10, 7);
        for (name, indices) in [("train", train), ("valid", valid)] {
            let images = std::fs::read(dir.path().join(format!("{name}.u8"))).unwrap();
            let labels = std::fs::read(dir.path().join(format!("{name}.labels"))).unwrap();
            assert_eq!((images.len(), labels.len()), (indices.len() * IMAGE_BYTES, indices.len()));
            for (k, &i) in indices.iter().enumerate() {
                assert_eq!(&images[k * IMAGE_BYTES..(k + 1) * IMAGE_BYTES], &shapes.load(i).unwrap()[..], "{name} image {k}");
                assert_eq!(labels[k] as usize, shapes.label(i));
            }
        }
        let classes = std::fs::read_to_string(dir.path().join("classes.txt")).unwrap();
        assert_eq!(classes.lines().count(), shapes.classes().len());
    }
}
