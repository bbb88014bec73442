//! The k-nearest-neighbour probe (cosine similarity, majority vote) over embeddings, shared by
//! `fit`'s closing figure and `eval`.

fn normalise(v: &mut [f32], dim: usize) {
    for row in v.chunks_mut(dim) {
        let n = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|x| *x /= n);
    }
}

/// Accuracy of a `k`-NN vote (cosine similarity) of `query` against `bank`.
pub fn knn_accuracy(bank: &[f32], bank_labels: &[usize], query: &[f32], query_labels: &[usize], dim: usize, k: usize) -> f64 {
    let (mut bank, mut query) = (bank.to_vec(), query.to_vec());
    normalise(&mut bank, dim);
    normalise(&mut query, dim);
    let classes = bank_labels.iter().chain(query_labels).max().map_or(1, |m| m + 1);
    let k = k.min(bank_labels.len()).max(1);
    let correct: usize = query
        .chunks(dim)
        .zip(query_labels)
        .filter(|(q, label)| {
            let mut sims: Vec<(f32, usize)> = bank.chunks(dim).zip(bank_labels).map(|(b, &l)| (b.iter().zip(q.iter()).map(|(a, c)| a * c).sum(), l)).collect();
            sims.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
            let mut votes = vec![0usize; classes];
            sims[..k].iter().for_each(|&(_, l)| votes[l] += 1);
            let best = (0..classes).max_by_key(|&c| (votes[c], std::cmp::Reverse(c))).unwrap();
            best == **label
        })
        .count();
    correct as f64 / query_labels.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knn_on_separable_and_random_points() {
        // Two clusters along the axes: perfect; query mislabelled: zero.
        let bank = [1.0, 0.1, 0.9, 0.0, 0.0, 1.0, 0.1, 0.8];
        let labels = [0, 0, 1, 1];
        assert_eq!(knn_accuracy(&bank, &labels, &[1.0, 0.0, 0.0, 1.0], &[0, 1], 2, 1), 1.0);
        assert_eq!(knn_accuracy(&bank, &labels, &[1.0, 0.0, 0.0, 1.0], &[1, 0], 2, 2), 0.0);
    }
}
