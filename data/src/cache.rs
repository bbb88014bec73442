//! Decode-once cache: an [`ImageSource`] wrapper that keeps every decoded image in memory.
//!
//! Training reads each image once per epoch; decoding a JPEG costs far more than the bytes it
//! yields (3,072 per 32×32 image, so CIFAR-10's 50,000 fit in 150 MB). The first read of image `i`
//! decodes it through the wrapped source and keeps the result; every later read copies it.
//! Failures are not kept: a bad file fails (or is skipped) every time it is read, exactly as
//! without the cache, so `--skip-bad` and the error messages do not change.

use super::{DataError, ImageSource, Rgb32};
use std::sync::{Arc, OnceLock};

pub struct Cached {
    inner: Arc<dyn ImageSource>,
    slots: Vec<OnceLock<Box<Rgb32>>>,
}

impl Cached {
    pub fn new(inner: Arc<dyn ImageSource>) -> Self {
        let slots = (0..inner.len()).map(|_| OnceLock::new()).collect();
        Self { inner, slots }
    }

    /// Decodes `indices` now (in parallel), so later reads are copies; returns how many are held.
    /// Unreadable images are left out here and reported when the loader reads them.
    pub fn fill(&self, indices: &[usize]) -> usize {
        use rayon::prelude::*;
        indices.par_iter().for_each(|&i| {
            let _ = self.load(i);
        });
        self.held()
    }

    /// Images decoded and held so far.
    pub fn held(&self) -> usize {
        self.slots.iter().filter(|s| s.get().is_some()).count()
    }
}

impl ImageSource for Cached {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn label(&self, i: usize) -> usize {
        self.inner.label(i)
    }
    fn classes(&self) -> &[String] {
        self.inner.classes()
    }
    fn load(&self, i: usize) -> Result<Rgb32, DataError> {
        if let Some(img) = self.slots[i].get() {
            return Ok(**img);
        }
        let img = self.inner.load(i)?;
        Ok(**self.slots[i].get_or_init(|| Box::new(img)))
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::super::ImageFolder;
    use super::*;
    use crate::testing::write_folder;

    #[test]
    fn cached_reads_equal_fresh_reads_and_bad_files_keep_failing() {
        let dir = tempfile::tempdir().unwrap();
        write_folder(dir.path(), 3);
        std::fs::write(dir.path().join("dogs/0001.jpg"), b"junk").unwrap();
        let src: Arc<dyn ImageSource> = Arc::new(ImageFolder::open(dir.path()).unwrap());
        let cached = Cached::new(src.clone());
        assert_eq!(cached.held(), 0);
        assert_eq!(cached.fill(&(0..6).collect::<Vec<_>>()), 5, "the junk file is not held");
        for i in 0..6 {
            match (src.load(i), cached.load(i)) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "image {i}"),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                (a, b) => panic!("image {i}: {:?} vs {:?}", a.is_ok(), b.is_ok()),
            }
        }
        // The cache answers from memory: the files can go.
        let good = (0..6).find(|&i| src.load(i).is_ok()).unwrap();
        let want = src.load(good).unwrap();
        std::fs::remove_dir_all(dir.path()).unwrap();
        assert_eq!(cached.load(good).unwrap(), want);
        assert_eq!((cached.len(), cached.label(good)), (src.len(), src.label(good)));
    }
}
