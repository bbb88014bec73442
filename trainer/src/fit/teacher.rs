//! The teacher's representations for distillation: every image of the run's data embedded once
//! by the teacher — an f32 ONNX file run by dim-runtime's tract `Encoder`, the deployed form —
//! and cached in the run folder, so later calls (`--resume`) and every epoch reuse them.
//!
//! ```text
//! OUT/teacher.npy    [images, width] f32, row i = image i of the source (npy, any reader);
//!                    [2 × images, width] with `follow_flips`: row images + i = image i mirrored
//! OUT/teacher.json   TeacherKey: the teacher file's SHA-256, the layer, images, width, flips
//! ```
//! The cache is used only while its key matches the teacher file, layer and data; otherwise it
//! is computed again (and replaced atomically, the `.npy` before the key).
//!
//! The teacher sees each image as stored, the student its augmented views: the student also
//! learns to give the teacher's answer under the augmentation. With `follow_flips` the teacher
//! also sees each image mirrored and a mirrored view gets that row, so the target moves with the
//! view (crops still do not: 25 offsets would be 25 caches). Rows are standardised per
//! dimension (mean 0, std 1 over all images) when loaded, so the critic's linear embedding
//! starts on inputs of unit scale whichever layer is distilled.

use super::config::{Distill, TeacherLayer};
use crate::data::{self, ImageSource};
use anyhow::{Context, bail};
use rand::{Rng, rngs::StdRng};
use std::path::Path;

/// What a cached `teacher.npy` was computed from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TeacherKey {
    pub teacher_sha256: String,
    pub layer: TeacherLayer,
    pub images: usize,
    pub width: usize,
    /// Rows of the mirrored images follow the originals' (caches written before it: no).
    #[serde(default)]
    pub flips: bool,
}

/// The teacher's standardised representation of every image of the source.
#[derive(Debug, Clone)]
pub struct Teacher {
    width: usize,
    /// Every image's row, then (with flips) every mirrored image's.
    rows: Vec<f32>,
    /// Rows of mirrored images follow (`follow_flips`).
    flips: bool,
    /// The images extra negatives are drawn from (the training split; all by default).
    pool: Vec<usize>,
}

/// Images per call into tract (it splits each call over its threads).
const CHUNK: usize = 512;

impl Teacher {
    /// The teacher of `distill` over every image of `source`: from `OUT/teacher.npy` when its
    /// key matches, computed (and cached) otherwise. Extra negatives are drawn from `pool` (the
    /// training split: validation images stay unseen).
    pub fn open(distill: &Distill, source: &dyn ImageSource, pool: Vec<usize>, out: &Path) -> anyhow::Result<Self> {
        let path = Path::new(&distill.teacher);
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read the distillation teacher {}; give an ONNX file that `trainer export` wrote", path.display()))?;
        let sha = crate::data::fetch::sha256_hex(&bytes);
        let (npy, key_path) = (out.join("teacher.npy"), out.join("teacher.json"));
        let wanted = |k: &TeacherKey| k.teacher_sha256 == sha && k.layer == distill.layer && k.images == source.len() && k.flips == distill.follow_flips;
        let cached = read_cache(&npy, &key_path).filter(|(key, _)| wanted(key));
        let from_cache = cached.is_some();
        let (width, rows) = match cached {
            Some((key, rows)) => {
                eprintln!("teacher: {} ({}, {} × {}) from {}", path.display(), distill.layer.name(), key.images, key.width, npy.display());
                (key.width, rows)
            }
            None => embed(&bytes, path, distill.layer, source, distill.follow_flips)?,
        };
        if let Some(w) = distill.teacher_dim.filter(|&w| w != width) {
            // Checked before the cache is replaced: the run's own teacher stays cached.
            bail!(
                "the run's distillation critic was built for a teacher {} of width {w}; {} gives {width}: use the run's teacher, or start a new run in another --out",
                distill.layer.name(),
                path.display()
            );
        }
        if !from_cache {
            let key = TeacherKey { teacher_sha256: sha, layer: distill.layer, images: source.len(), width, flips: distill.follow_flips };
            write_cache(&npy, &key_path, &key, &rows)?;
        }
        // The probes' standardisation: the critic's linear embedding starts on unit-scale inputs.
        let (rows, _) = crate::probe::standardise(&rows, &[], width);
        Ok(Self { width, rows, flips: distill.follow_flips, pool })
    }

    /// `k` rows drawn uniformly (with replacement) from the pool, `[k, width]`, and the `[B, k]`
    /// 0/1 mask that drops each batch image's draws of itself (`None` when there are none).
    pub fn negatives(&self, k: usize, sources: &[usize], rng: &mut StdRng) -> (Vec<f32>, Option<Vec<f32>>) {
        if self.pool.is_empty() {
            return (Vec::new(), None);
        }
        let drawn: Vec<usize> = (0..k).map(|_| self.pool[rng.random_range(0..self.pool.len())]).collect();
        let clash = sources.iter().any(|s| drawn.contains(s));
        let mask = clash.then(|| sources.iter().flat_map(|s| drawn.iter().map(move |d| if d == s { 0.0 } else { 1.0 })).collect());
        (self.rows(&drawn), mask)
    }

    /// Width of one representation.
    pub fn width(&self) -> usize {
        self.width
    }

    /// `[sources.len(), width]` rows of the given source indices, row-major (as stored).
    pub fn rows(&self, sources: &[usize]) -> Vec<f32> {
        sources.iter().flat_map(|&i| self.row(i)).copied().collect()
    }

    /// The rows of a batch's views: a mirrored view gets its mirrored image's row when the
    /// teacher embedded those (`follow_flips`), the stored image's otherwise.
    pub fn views(&self, sources: &[usize], flipped: &[bool]) -> Vec<f32> {
        let images = self.rows.len() / self.width / if self.flips { 2 } else { 1 };
        let at = |k: usize| if self.flips && flipped.get(k) == Some(&true) { images + sources[k] } else { sources[k] };
        (0..sources.len()).flat_map(|k| self.row(at(k))).copied().collect()
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.rows[i * self.width..(i + 1) * self.width]
    }
}

/// Embeds every image of `source` with the teacher (`bytes`, read from `path`), then with
/// `flips` every image mirrored; returns `(width, rows)`.
fn embed(bytes: &[u8], path: &Path, layer: TeacherLayer, source: &dyn ImageSource, flips: bool) -> anyhow::Result<(usize, Vec<f32>)> {
    let encoder = dim_runtime::Encoder::from_bytes_with_layers(bytes, &crate::export::PROBE_LAYERS).with_context(|| {
        format!("{}: cannot load it as a teacher with its probe layers (relu3, fc_relu); re-export it with `trainer export`", path.display())
    })?;
    // embed_layers returns y, then the PROBE_LAYERS in order.
    let at = match layer {
        TeacherLayer::Y => 0,
        TeacherLayer::Conv => 1,
        TeacherLayer::Fc => 2,
    };
    let n = source.len();
    let passes: &[bool] = if flips { &[false, true] } else { &[false] };
    eprintln!(
        "teacher: embedding {n} images{} with {} ({}), once for this run",
        if flips { " and their mirror images" } else { "" },
        path.display(),
        layer.name()
    );
    let bar = crate::progress::bar(true, n * passes.len(), "images (teacher)");
    let mut rows = Vec::new();
    let all: Vec<usize> = (0..n).collect();
    for &mirror in passes {
        for chunk in all.chunks(CHUNK) {
            let mut inputs = data::load_inputs(source, chunk)?;
            if mirror {
                mirror_inputs(&mut inputs);
            }
            let mut parts = encoder.embed_layers(&inputs).with_context(|| format!("{}: the teacher failed on images {}..", path.display(), chunk[0]))?;
            rows.append(&mut parts.swap_remove(at));
            bar.inc(chunk.len() as u64);
        }
    }
    bar.finish_and_clear();
    let views = n * passes.len();
    if n == 0 || rows.is_empty() || !rows.len().is_multiple_of(views) {
        bail!("{}: the teacher gave {} values for {views} images", path.display(), rows.len());
    }
    let width = rows.len() / views;
    if let Some(i) = rows.iter().position(|v| !v.is_finite()) {
        bail!("{}: the teacher's {} holds a non-finite value (image {}); it cannot be distilled", path.display(), layer.name(), (i / width) % n);
    }
    Ok((width, rows))
}

/// Mirrors `[n, 3, 32, 32]` inputs left to right, in place (what `Augment`'s hflip does to the
/// pixels the student sees).
fn mirror_inputs(inputs: &mut [f32]) {
    for line in inputs.chunks_exact_mut(32) {
        line.reverse();
    }
}

/// The cache's key and rows, when both files are there and agree; `None` otherwise (a missing,
/// torn or foreign cache is recomputed, never trusted).
fn read_cache(npy: &Path, key_path: &Path) -> Option<(TeacherKey, Vec<f32>)> {
    let key: TeacherKey = serde_json::from_slice(&std::fs::read(key_path).ok()?).ok()?;
    let bytes = std::fs::read(npy).ok()?;
    let file = npyz::NpyFile::new(&bytes[..]).ok()?;
    let views = key.images * if key.flips { 2 } else { 1 };
    if file.shape() != [views as u64, key.width as u64] {
        return None;
    }
    let rows: Vec<f32> = file.into_vec().ok()?;
    (rows.len() == views * key.width && rows.iter().all(|v| v.is_finite())).then_some((key, rows))
}

/// Removes the old key, then writes the rows and the new key, each atomically: a kill in between
/// leaves rows without a key, which the next call computes again.
fn write_cache(npy: &Path, key_path: &Path, key: &TeacherKey, rows: &[f32]) -> anyhow::Result<()> {
    use npyz::WriterBuilder;
    let _ = std::fs::remove_file(key_path);
    let mut bytes = Vec::with_capacity(rows.len() * 4 + 128);
    let views = key.images * if key.flips { 2 } else { 1 };
    let mut w = npyz::WriteOptions::<f32>::new().default_dtype().shape(&[views as u64, key.width as u64]).writer(&mut bytes).begin_nd()?;
    w.extend(rows.iter().copied())?;
    w.finish()?;
    crate::fs::write_atomic(npy, &bytes)?;
    crate::fs::write_atomic(key_path, &serde_json::to_vec_pretty(key)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_looked_up_by_source_index() {
        let t = Teacher { width: 2, rows: vec![0.0, 1.0, 10.0, 11.0, 20.0, 21.0], flips: false, pool: vec![0, 1, 2] };
        assert_eq!(t.rows(&[2, 0]), [20.0, 21.0, 0.0, 1.0]);
        assert_eq!(t.views(&[2, 0], &[true, false]), [20.0, 21.0, 0.0, 1.0], "no mirrored rows: a mirrored view gets the stored image's");
    }

    #[test]
    fn a_mirrored_view_gets_its_mirrored_row() {
        // Two images of width 1: rows 0, 1 stored, then 100, 101 mirrored.
        let t = Teacher { width: 1, rows: vec![0.0, 1.0, 100.0, 101.0], flips: true, pool: vec![0, 1] };
        assert_eq!(t.views(&[1, 0, 1], &[true, false, false]), [101.0, 0.0, 1.0]);
        assert_eq!(t.rows(&[1, 0]), [1.0, 0.0], "negatives are drawn from the stored images");
    }

    #[test]
    fn the_teachers_mirror_is_the_augmentations_flip() {
        use crate::data::Augment;
        use dim_runtime::preprocess::{INPUT_LEN, rgb32_to_input};
        use rand::SeedableRng;
        let img: [u8; 3072] = std::array::from_fn(|i| (i * 7 % 251) as u8);
        let mut rng = StdRng::seed_from_u64(0);
        let (view, _) = std::iter::repeat_with(|| Augment { hflip: true, ..Augment::default() }.apply(&img, &mut rng)).find(|v| v.1).unwrap();
        let (mut want, mut got) = (vec![0.0; INPUT_LEN], vec![0.0; INPUT_LEN]);
        rgb32_to_input(&view, &mut want).unwrap();
        rgb32_to_input(&img, &mut got).unwrap();
        mirror_inputs(&mut got);
        assert_eq!(got, want);
    }

    #[test]
    fn negatives_come_from_the_pool_and_a_batch_image_never_meets_itself() {
        use rand::SeedableRng;
        let t = Teacher { width: 1, rows: (0..10).map(|i| i as f32).collect(), flips: false, pool: vec![3, 4, 5] };
        let mut rng = StdRng::seed_from_u64(1);
        let (rows, mask) = t.negatives(40, &[4, 9], &mut rng);
        assert!(rows.iter().all(|&r| (3.0..=5.0).contains(&r)), "{rows:?}");
        let mask = mask.expect("40 draws from 3 images hit image 4");
        for (b, source) in [4.0, 9.0].into_iter().enumerate() {
            for (k, &r) in rows.iter().enumerate() {
                assert_eq!(mask[b * 40 + k], if r == source { 0.0 } else { 1.0 }, "batch image {b}, draw {k}");
            }
        }
        assert_eq!(t.negatives(5, &[9], &mut rng).1, None, "no clash, no mask");
        // Seeded: the same draws again (so a resumed run repeats them).
        assert_eq!(t.negatives(40, &[4, 9], &mut StdRng::seed_from_u64(1)).0, rows);
    }

    #[test]
    fn a_torn_or_foreign_cache_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let (npy, key) = (dir.path().join("teacher.npy"), dir.path().join("teacher.json"));
        let k = TeacherKey { teacher_sha256: "ab".into(), layer: TeacherLayer::Fc, images: 2, width: 3, flips: false };
        write_cache(&npy, &key, &k, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        assert_eq!(read_cache(&npy, &key), Some((k.clone(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])));
        let bytes = std::fs::read(&npy).unwrap();
        std::fs::write(&npy, &bytes[..bytes.len() - 4]).unwrap();
        assert_eq!(read_cache(&npy, &key), None, "truncated rows");
        write_cache(&npy, &key, &TeacherKey { images: 3, width: 2, ..k.clone() }, &[1.0; 6]).unwrap();
        std::fs::write(&key, serde_json::to_vec(&k).unwrap()).unwrap();
        assert_eq!(read_cache(&npy, &key), None, "a key that does not describe the rows");
    }

    #[test]
    fn a_cache_with_mirrored_rows_round_trips_and_an_old_key_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let (npy, key) = (dir.path().join("teacher.npy"), dir.path().join("teacher.json"));
        let k = TeacherKey { teacher_sha256: "ab".into(), layer: TeacherLayer::Fc, images: 2, width: 1, flips: true };
        write_cache(&npy, &key, &k, &[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(read_cache(&npy, &key), Some((k.clone(), vec![1.0, 2.0, 3.0, 4.0])));
        // A key written before mirrored rows existed has no `flips`: it describes stored rows only.
        std::fs::write(&key, r#"{"teacher_sha256":"ab","layer":"fc","images":4,"width":1}"#).unwrap();
        let (old, rows) = read_cache(&npy, &key).expect("4 stored rows of width 1");
        assert_eq!((old.flips, rows.len()), (false, 4));
    }
}
