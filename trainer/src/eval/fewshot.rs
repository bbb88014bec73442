//! What a device does with the representation: recognise from a few enrolled examples, and flag
//! what it was never shown — measured the way `dim_runtime::PrototypeStore` works (nearest
//! prototype by cosine similarity, novelty = 1 − that similarity).
//!
//! - **N-way K-shot accuracy**: an episode draws `ways` classes, `shots` support images of each
//!   from the train split (their normalised mean is the class prototype) and `queries` query
//!   images of each from the test split; the score is the fraction of queries whose nearest
//!   prototype is their class. Chance is `1 / ways`.
//! - **Novelty**: an episode enrols half the classes (`shots` images each) and scores every
//!   test image of all classes; images of classes not enrolled are the positives. AUROC of the
//!   novelty score (0.5 is chance), and the true-negative rate at 95 % recall: the fraction of
//!   enrolled-class images *not* flagged when the threshold flags 95 % of the novel ones
//!   (`1 − FPR@95`, so that, like every accuracy `check` bounds, higher is better).
//!
//! Episodes are drawn from a seeded generator, so `check` replays the same ones.

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{SeedableRng, rngs::StdRng};

/// Rows of embeddings with their labels.
#[derive(Debug, Clone, Copy)]
pub struct Labelled<'a> {
    pub y: &'a [f32],
    pub labels: &'a [usize],
    pub dim: usize,
}

impl Labelled<'_> {
    fn row(&self, i: usize) -> &[f32] {
        &self.y[i * self.dim..(i + 1) * self.dim]
    }
    /// Row indices of each class `0..classes`.
    fn by_class(&self, classes: usize) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); classes];
        for (i, &l) in self.labels.iter().enumerate() {
            if l < classes {
                out[l].push(i);
            }
        }
        out
    }
}

/// `v / |v|` (a zero vector stays zero), as the kNN probe normalises.
fn normalised(v: &[f32]) -> Vec<f32> {
    let (mut row, dim) = (v.to_vec(), v.len().max(1));
    crate::knn::normalise(&mut row, dim);
    row
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The normalised mean of normalised `dim`-wide rows: a class prototype (each row counts once,
/// whatever its length). `trainer prototypes` stores the same for the device.
pub fn normalised_mean<'a>(rows: impl IntoIterator<Item = &'a [f32]>, dim: usize) -> Vec<f32> {
    let mut sum = vec![0f32; dim];
    for row in rows {
        sum.iter_mut().zip(normalised(row)).for_each(|(s, v)| *s += v);
    }
    normalised(&sum)
}

/// The prototype of the rows `idx` of `set`.
fn prototype(set: &Labelled, idx: &[usize]) -> Vec<f32> {
    normalised_mean(idx.iter().map(|&i| set.row(i)), set.dim)
}

/// The shape of a few-shot episode.
#[derive(Debug, Clone, Copy)]
pub struct Episode {
    /// Classes per episode (N).
    pub ways: usize,
    /// Support images per class (K).
    pub shots: usize,
    /// Query images per class.
    pub queries: usize,
}

/// Mean N-way K-shot accuracy (a fraction) over `episodes` seeded episodes; `None` when fewer
/// than `ways` classes have `shots` support and `queries` query images.
pub fn few_shot_accuracy(support: Labelled, query: Labelled, classes: usize, episode: Episode, episodes: usize, seed: u64) -> Option<f64> {
    let Episode { ways, shots, queries } = episode;
    let (s_by, q_by) = (support.by_class(classes), query.by_class(classes));
    let usable: Vec<usize> = (0..classes).filter(|&c| s_by[c].len() >= shots && q_by[c].len() >= queries).collect();
    if usable.len() < ways || ways < 2 || shots == 0 || queries == 0 {
        return None;
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut correct, mut total) = (0usize, 0usize);
    for _ in 0..episodes {
        let chosen: Vec<usize> = usable.choose_multiple(&mut rng, ways).copied().collect();
        let protos: Vec<Vec<f32>> =
            chosen.iter().map(|&c| prototype(&support, &s_by[c].choose_multiple(&mut rng, shots).copied().collect::<Vec<_>>())).collect();
        for (want, &c) in chosen.iter().enumerate() {
            for &q in q_by[c].choose_multiple(&mut rng, queries) {
                let x = normalised(query.row(q));
                let best = (0..ways).max_by(|&a, &b| dot(&x, &protos[a]).total_cmp(&dot(&x, &protos[b]))).unwrap();
                correct += (best == want) as usize;
                total += 1;
            }
        }
    }
    Some(correct as f64 / total as f64)
}

/// Novelty detection over `episodes` seeded episodes: (mean AUROC, mean true-negative rate at
/// 95 % recall), both fractions; `None` with fewer than 2 classes or too few images.
pub fn novelty(support: Labelled, query: Labelled, classes: usize, shots: usize, episodes: usize, seed: u64) -> Option<(f64, f64)> {
    let s_by = support.by_class(classes);
    let present: Vec<usize> = (0..classes).filter(|&c| s_by[c].len() >= shots).collect();
    if present.len() < 2 || shots == 0 {
        return None;
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut auc_sum, mut tnr_sum) = (0.0, 0.0);
    let x: Vec<Vec<f32>> = (0..query.labels.len()).map(|i| normalised(query.row(i))).collect();
    for _ in 0..episodes {
        let mut order = present.clone();
        order.shuffle(&mut rng);
        let enrolled = &order[..order.len() / 2];
        let protos: Vec<Vec<f32>> =
            enrolled.iter().map(|&c| prototype(&support, &s_by[c].choose_multiple(&mut rng, shots).copied().collect::<Vec<_>>())).collect();
        let (mut novel, mut known) = (Vec::new(), Vec::new());
        for (xi, &l) in x.iter().zip(query.labels) {
            let score = 1.0 - protos.iter().map(|p| dot(xi, p)).fold(f32::MIN, f32::max);
            if enrolled.contains(&l) { known.push(score) } else { novel.push(score) }
        }
        if novel.is_empty() || known.is_empty() {
            return None;
        }
        auc_sum += auroc(&novel, &known);
        tnr_sum += tnr_at_recall(&novel, &known, 0.95);
    }
    Some((auc_sum / episodes as f64, tnr_sum / episodes as f64))
}

/// P(a positive scores above a negative), ties counting half: the area under the ROC curve.
pub fn auroc(positive: &[f32], negative: &[f32]) -> f64 {
    let mut neg = negative.to_vec();
    neg.sort_by(f32::total_cmp);
    let mut wins = 0.0;
    for &p in positive {
        let below = neg.partition_point(|&n| n < p);
        let ties = neg[below..].partition_point(|&n| n <= p);
        wins += below as f64 + 0.5 * ties as f64;
    }
    wins / (positive.len() as f64 * neg.len() as f64)
}

/// With the threshold that flags (score ≥ threshold) a fraction `recall` of the positives, the
/// fraction of negatives left unflagged.
pub fn tnr_at_recall(positive: &[f32], negative: &[f32], recall: f64) -> f64 {
    let mut pos = positive.to_vec();
    pos.sort_by(|a, b| b.total_cmp(a));
    let k = ((recall * pos.len() as f64).ceil() as usize).clamp(1, pos.len());
    let threshold = pos[k - 1];
    negative.iter().filter(|&&n| n < threshold).count() as f64 / negative.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `per` points of each class on its own axis (plus a little of the next), or all random.
    fn points(classes: usize, per: usize, separable: bool, seed: u64) -> (Vec<f32>, Vec<usize>) {
        use rand::Rng;
        let mut rng = StdRng::seed_from_u64(seed);
        let (mut y, mut labels) = (Vec::new(), Vec::new());
        for c in 0..classes {
            for _ in 0..per {
                for d in 0..classes {
                    let v: f32 = rng.random_range(-1.0..1.0);
                    y.push(if separable { if d == c { 5.0 + v } else { 0.3 * v } } else { v });
                }
                labels.push(c);
            }
        }
        (y, labels)
    }

    fn ep(ways: usize, shots: usize, queries: usize) -> Episode {
        Episode { ways, shots, queries }
    }

    #[test]
    fn few_shot_is_perfect_on_separable_classes_and_chance_on_noise() {
        let (y, l) = points(10, 30, true, 1);
        let set = Labelled { y: &y, labels: &l, dim: 10 };
        assert_eq!(few_shot_accuracy(set, set, 10, ep(5, 1, 10), 50, 0), Some(1.0));
        // Noise: support and queries drawn apart (a query that is also a support image would
        // find itself).
        let ((ys, ls), (yq, lq)) = (points(10, 60, false, 2), points(10, 60, false, 5));
        let (support, queries) = (Labelled { y: &ys, labels: &ls, dim: 10 }, Labelled { y: &yq, labels: &lq, dim: 10 });
        let acc = few_shot_accuracy(support, queries, 10, ep(5, 5, 15), 400, 0).unwrap();
        assert!((acc - 0.2).abs() < 0.03, "5-way chance is 20 %: {acc}");
        let set = support;
        // Too few images per class for the episode asked: no figure, not a wrong one.
        assert_eq!(few_shot_accuracy(set, set, 10, ep(5, 61, 15), 10, 0), None);
        assert_eq!(few_shot_accuracy(set, set, 10, ep(11, 1, 1), 10, 0), None);
    }

    #[test]
    fn novelty_separates_unseen_classes_only_when_the_representation_does() {
        let (y, l) = points(10, 30, true, 3);
        let set = Labelled { y: &y, labels: &l, dim: 10 };
        assert_eq!(novelty(set, set, 10, 5, 20, 0), Some((1.0, 1.0)));
        let ((ys, ls), (yq, lq)) = (points(10, 60, false, 4), points(10, 60, false, 6));
        let (support, queries) = (Labelled { y: &ys, labels: &ls, dim: 10 }, Labelled { y: &yq, labels: &lq, dim: 10 });
        let (auc, tnr) = novelty(support, queries, 10, 5, 50, 0).unwrap();
        assert!((auc - 0.5).abs() < 0.05 && tnr < 0.15, "noise: AUROC {auc}, TNR@95 {tnr}");
    }

    #[test]
    fn auroc_and_tnr_by_hand() {
        // Positives 3, 4 vs negatives 1, 3: pairs (3>1) (3=3: half) (4>1) (4>3) → 3.5 / 4.
        assert_eq!(auroc(&[3.0, 4.0], &[1.0, 3.0]), 0.875);
        assert_eq!(auroc(&[1.0], &[2.0]), 0.0);
        // Flag 95 % of 20 positives 1..=20: threshold 2 (19 of them ≥ 2); negatives 0, 1.5, 2.5: two below.
        let pos: Vec<f32> = (1..=20).map(|v| v as f32).collect();
        assert!((tnr_at_recall(&pos, &[0.0, 1.5, 2.5], 0.95) - 2.0 / 3.0).abs() < 1e-12);
    }
}
