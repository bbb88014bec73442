//! Batches for training and evaluation, produced on a background thread.
//!
//! A producer thread decodes each batch with rayon (JPEG decode is the slow part) and keeps
//! `prefetch` batches ready in a bounded channel, so the backend never waits on decoding. The
//! order and the augmentation of batch `b` of epoch `e` depend only on `(seed, e, b)`: a resumed
//! run sees exactly the batches an uninterrupted one would have.

use super::{DataError, ImageSource, Rgb32};
use dim_runtime::preprocess::{INPUT_LEN, rgb32_to_input};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};
use rayon::prelude::*;
use std::sync::{Arc, mpsc};

/// Random crop with zero padding and horizontal flips.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Augment {
    /// Pixels of zero padding before a random 32×32 crop (0 = off).
    pub crop_padding: usize,
    /// Flip horizontally with probability 0.5.
    pub hflip: bool,
}

impl Augment {
    /// A random view of `img`, and whether it was mirrored (a distillation teacher that embedded
    /// the mirrored image too hands the student the matching row).
    pub fn apply(&self, img: &Rgb32, rng: &mut StdRng) -> (Rgb32, bool) {
        let p = self.crop_padding as isize;
        let (ox, oy) = if p > 0 { (rng.random_range(0..=2 * p as i64) as isize - p, rng.random_range(0..=2 * p as i64) as isize - p) } else { (0, 0) };
        let flip = self.hflip && rng.random_bool(0.5);
        let mut out = [0u8; super::IMAGE_BYTES];
        for y in 0..32isize {
            for x in 0..32isize {
                let sx = if flip { 31 - x } else { x } + ox;
                let sy = y + oy;
                if (0..32).contains(&sx) && (0..32).contains(&sy) {
                    let (d, s) = ((y * 32 + x) as usize * 3, (sy * 32 + sx) as usize * 3);
                    out[d..d + 3].copy_from_slice(&img[s..s + 3]);
                }
            }
        }
        (out, flip)
    }
}

#[derive(Debug, Clone)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub shuffle: bool,
    pub drop_last: bool,
    pub augment: Augment,
    /// Skip unreadable images with a warning instead of failing.
    pub skip_bad: bool,
    pub prefetch: usize,
    pub seed: u64,
}

/// A batch: `images` is `[n, 3, 32, 32]` f32 in `[-1, 1]`, row-major.
#[derive(Debug, Clone)]
pub struct Batch {
    pub images: Vec<f32>,
    pub labels: Vec<usize>,
    /// Index of each image in its source (what per-image side data, e.g. a distillation
    /// teacher's cached representations, is looked up by).
    pub sources: Vec<usize>,
    /// Whether the augmentation mirrored each image (all false without `hflip`).
    pub flipped: Vec<bool>,
    /// Position of the batch in its epoch.
    pub index: usize,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

pub struct Loader {
    source: Arc<dyn ImageSource>,
    indices: Arc<Vec<usize>>,
    config: LoaderConfig,
}

impl Loader {
    pub fn new(source: Arc<dyn ImageSource>, indices: Vec<usize>, config: LoaderConfig) -> Self {
        Self { source, indices: Arc::new(indices), config }
    }

    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.indices.len(), self.config.batch_size.max(1));
        if self.config.drop_last { n / b } else { n.div_ceil(b) }
    }

    /// Batches `start..` of `epoch`, decoded ahead on a background thread.
    pub fn epoch(&self, epoch: u64, start: usize) -> mpsc::Receiver<Result<Batch, DataError>> {
        let (tx, rx) = mpsc::sync_channel(self.config.prefetch.max(1));
        let (source, indices, cfg) = (self.source.clone(), self.indices.clone(), self.config.clone());
        let total = self.batches_per_epoch();
        std::thread::spawn(move || {
            let mut order: Vec<usize> = indices.to_vec();
            if cfg.shuffle {
                order.shuffle(&mut StdRng::seed_from_u64(cfg.seed ^ epoch.wrapping_mul(0xA24B_AED4_963E_E407)));
            }
            for b in start..total {
                let chunk = &order[b * cfg.batch_size..((b + 1) * cfg.batch_size).min(order.len())];
                let batch = make_batch(&*source, chunk, b, epoch, &cfg);
                let failed = batch.is_err();
                if tx.send(batch).is_err() || failed {
                    return;
                }
            }
        });
        rx
    }
}

fn make_batch(source: &dyn ImageSource, chunk: &[usize], b: usize, epoch: u64, cfg: &LoaderConfig) -> Result<Batch, DataError> {
    let decoded: Vec<(usize, Result<Rgb32, DataError>)> = chunk.par_iter().map(|&i| (i, source.load(i))).collect();
    let mut images = Vec::with_capacity(chunk.len() * INPUT_LEN);
    let mut labels = Vec::with_capacity(chunk.len());
    let mut sources = Vec::with_capacity(chunk.len());
    let mut flipped = Vec::with_capacity(chunk.len());
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ (epoch << 32) ^ (b as u64).wrapping_mul(0x9E37_79B9));
    for (i, img) in decoded {
        let img = match img {
            Ok(img) => img,
            Err(e) if cfg.skip_bad => {
                eprintln!("warning: skipping image: {e}");
                continue;
            }
            Err(e) => return Err(e),
        };
        let (img, flip) = if cfg.augment == Augment::default() { (img, false) } else { cfg.augment.apply(&img, &mut rng) };
        let start = images.len();
        images.resize(start + INPUT_LEN, 0.0);
        rgb32_to_input(&img, &mut images[start..]).expect("INPUT_LEN slice");
        labels.push(source.label(i));
        sources.push(i);
        flipped.push(flip);
    }
    Ok(Batch { images, labels, sources, flipped, index: b })
}

#[cfg(test)]
mod tests {
    use super::super::{ImageFolder, Shapes};
    use super::*;
    use crate::testing::write_folder;

    fn cfg(skip_bad: bool) -> LoaderConfig {
        LoaderConfig { batch_size: 4, shuffle: true, drop_last: false, augment: Augment::default(), skip_bad, prefetch: 2, seed: 3 }
    }

    #[test]
    fn epochs_are_seeded_and_resumable() {
        let src: Arc<dyn ImageSource> = Arc::new(Shapes::new(10, 0));
        let loader = Loader::new(src, (0..10).collect(), cfg(false));
        assert_eq!(loader.batches_per_epoch(), 3);
        let all: Vec<Batch> = loader.epoch(1, 0).into_iter().map(|b| b.unwrap()).collect();
        assert_eq!(all.iter().map(Batch::len).collect::<Vec<_>>(), [4, 4, 2]);
        let resumed: Vec<Batch> = loader.epoch(1, 1).into_iter().map(|b| b.unwrap()).collect();
        assert_eq!(resumed[0].labels, all[1].labels);
        assert_eq!(resumed[0].sources, all[1].sources);
        assert!(all.iter().all(|b| b.sources.iter().zip(&b.labels).all(|(&i, &l)| l == i % 10)), "sources name the images");
        assert_eq!(resumed[0].images, all[1].images);
        let other: Vec<usize> = loader.epoch(2, 0).into_iter().flat_map(|b| b.unwrap().labels).collect();
        let mut seen: Vec<usize> = all.iter().flat_map(|b| b.labels.clone()).collect();
        assert_ne!(other, seen, "epochs are shuffled differently");
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>(), "shapes label = index % 10");
        assert!(all[0].images.iter().all(|v| (-1.0..=1.0).contains(v)));
    }

    #[test]
    fn bad_files_fail_or_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        write_folder(dir.path(), 3);
        std::fs::write(dir.path().join("dogs/0002.png"), b"junk").unwrap();
        let src: Arc<dyn ImageSource> = Arc::new(ImageFolder::open(dir.path()).unwrap());
        let strict = Loader::new(src.clone(), (0..6).collect(), LoaderConfig { batch_size: 6, ..cfg(false) });
        let err = strict.epoch(0, 0).recv().unwrap().err().unwrap().to_string();
        assert!(err.contains("0002.png"), "{err}");
        let lenient = Loader::new(src, (0..6).collect(), LoaderConfig { batch_size: 6, ..cfg(true) });
        let batch = lenient.epoch(0, 0).recv().unwrap().unwrap();
        assert_eq!(batch.len(), 5);
        assert_eq!(batch.sources.len(), 5);
        let mut seen = batch.sources.clone();
        seen.sort();
        seen.dedup();
        assert!(seen.len() == 5 && seen.iter().all(|&i| i < 6), "{:?}", batch.sources);
    }

    #[test]
    fn flip_and_crop_move_pixels() {
        let mut img = [0u8; super::super::IMAGE_BYTES];
        img[0] = 255; // red at (0, 0)
        let mut rng = StdRng::seed_from_u64(0);
        let views: Vec<(Rgb32, bool)> = (0..20).map(|_| Augment { crop_padding: 0, hflip: true }.apply(&img, &mut rng)).collect();
        for (view, flip) in &views {
            // The flag says which way the pixel went: mirrored to x = 31, or left at x = 0.
            assert_eq!((view[31 * 3], view[0]), if *flip { (255, 0) } else { (0, 255) });
        }
        assert!(views.iter().any(|v| v.1) && views.iter().any(|v| !v.1), "both orientations within 20 draws");
        let (cropped, flip) = Augment { crop_padding: 4, hflip: false }.apply(&img, &mut rng);
        assert!(cropped.iter().filter(|&&v| v == 255).count() <= 1);
        assert!(!flip, "no mirror without hflip");
    }
}
