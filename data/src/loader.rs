//! Batches for training and evaluation, produced on a background thread.
//!
//! A producer thread decodes each batch with rayon (JPEG decode is the slow part) and keeps
//! `prefetch` batches ready in a bounded channel, so the backend never waits on decoding. The
//! order and the augmentation of batch `b` of epoch `e` depend only on `(seed, e, b)`: a resumed
//! run sees exactly the batches an uninterrupted one would have.

use super::{Augment, DataError, ImageSource, Rgb32};
use dim_runtime::preprocess::{INPUT_LEN, rgb32_to_input};
use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};
use rayon::prelude::*;
use std::sync::{Arc, mpsc};

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
    /// Views drawn of each image (1, or 2 for cross-view training): a batch of `n` images holds
    /// `views · n` rows, all first views, then all second views (see [`Batch`]).
    pub views: usize,
}

/// A batch: `images` is `[rows, 3, 32, 32]` f32 in `[-1, 1]`, row-major, one row per view.
/// With two views of `n` images, rows `0..n` are the first views and `n..2n` the second views
/// of the same images in the same order; `labels`, `sources` and `flipped` follow the rows.
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
    /// Views of each image the rows hold (1, or 2: see above).
    pub views: usize,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// Images in the batch (rows over views).
    pub fn image_count(&self) -> usize {
        self.len() / self.views.max(1)
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
    let views = cfg.views.max(1);
    let mut rows: Vec<Vec<(Rgb32, bool)>> = vec![Vec::with_capacity(chunk.len()); views];
    let mut kept = Vec::with_capacity(chunk.len());
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
        // An image's views are drawn one after the other, so the first view of a one-view
        // config is what it always was.
        for view in &mut rows {
            view.push(if cfg.augment.is_identity() { (img, false) } else { cfg.augment.apply(&img, &mut rng) });
        }
        kept.push(i);
    }
    let n = views * kept.len();
    let (mut images, mut labels, mut sources, mut flipped) = (vec![0.0; n * INPUT_LEN], Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for ((img, flip), (&i, out)) in rows.iter().flatten().zip(kept.iter().cycle().zip(images.chunks_exact_mut(INPUT_LEN))) {
        rgb32_to_input(img, out).expect("INPUT_LEN slice");
        labels.push(source.label(i));
        sources.push(i);
        flipped.push(*flip);
    }
    Ok(Batch { images, labels, sources, flipped, index: b, views })
}

#[cfg(test)]
mod tests {
    use super::super::{ImageFolder, Shapes};
    use super::*;
    use crate::testing::write_folder;

    fn cfg(skip_bad: bool) -> LoaderConfig {
        LoaderConfig { batch_size: 4, shuffle: true, drop_last: false, augment: Augment::default(), skip_bad, prefetch: 2, seed: 3, views: 1 }
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

    /// Two views: the same images twice in the same order, drawn independently; without
    /// augmentation the two halves are equal, and the first view is the one-view batch.
    #[test]
    fn two_views_are_the_same_images_twice() {
        let src: Arc<dyn ImageSource> = Arc::new(Shapes::new(10, 0));
        let plain = Loader::new(src.clone(), (0..10).collect(), cfg(false)).epoch(0, 0).recv().unwrap().unwrap();
        let two = Loader::new(src.clone(), (0..10).collect(), LoaderConfig { views: 2, ..cfg(false) }).epoch(0, 0).recv().unwrap().unwrap();
        assert_eq!((two.len(), two.image_count(), plain.image_count()), (8, 4, 4));
        assert_eq!(two.sources[..4], plain.sources[..]);
        assert_eq!(two.sources[4..], plain.sources[..]);
        assert_eq!(two.labels[4..], plain.labels[..]);
        assert_eq!(two.images[..4 * INPUT_LEN], plain.images[..]);
        assert_eq!(two.images[4 * INPUT_LEN..], plain.images[..]);
        let augment = Augment { crop_padding: 4, hflip: true, ..Augment::default() };
        let one = Loader::new(src.clone(), (0..10).collect(), LoaderConfig { augment, ..cfg(false) }).epoch(0, 0).recv().unwrap().unwrap();
        let two = Loader::new(src, (0..10).collect(), LoaderConfig { augment, views: 2, ..cfg(false) }).epoch(0, 0).recv().unwrap().unwrap();
        assert_ne!(two.images[..4 * INPUT_LEN], two.images[4 * INPUT_LEN..], "the views differ");
        assert_eq!(two.sources[..4], one.sources[..]);
    }
}
