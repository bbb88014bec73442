//! The k-nearest-neighbour probe (cosine similarity, majority vote) over embeddings, shared by
//! `fit`'s closing figure and `eval`.

/// Scales each `dim`-wide row of `v` to unit length (a zero row stays zero).
pub(crate) fn normalise(v: &mut [f32], dim: usize) {
    for row in v.chunks_mut(dim) {
        let n = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|x| *x /= n);
    }
}

/// Accuracy of a `k`-NN vote (cosine similarity) of `query` against `bank`. An empty bank or a
/// zero-wide embedding is an error (there is nothing to vote with), not a panic.
pub fn knn_accuracy(bank: &[f32], bank_labels: &[usize], query: &[f32], query_labels: &[usize], dim: usize, k: usize) -> anyhow::Result<f64> {
    anyhow::ensure!(dim > 0, "the embeddings are 0 wide: the model has no output to compare");
    anyhow::ensure!(!bank_labels.is_empty(), "the kNN bank is empty: no training images were embedded");
    anyhow::ensure!(bank.len() == bank_labels.len() * dim && query.len() == query_labels.len() * dim, "embeddings and labels disagree in count");
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
    Ok(correct as f64 / query_labels.len().max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knn_on_separable_and_random_points() {
        // Two clusters along the axes: perfect; query mislabelled: zero.
        let bank = [1.0, 0.1, 0.9, 0.0, 0.0, 1.0, 0.1, 0.8];
        let labels = [0, 0, 1, 1];
        assert_eq!(knn_accuracy(&bank, &labels, &[1.0, 0.0, 0.0, 1.0], &[0, 1], 2, 1).unwrap(), 1.0);
        assert_eq!(knn_accuracy(&bank, &labels, &[1.0, 0.0, 0.0, 1.0], &[1, 0], 2, 2).unwrap(), 0.0);
    }

    #[test]
    fn empty_bank_and_zero_width_are_errors() {
        let e = knn_accuracy(&[], &[], &[1.0, 0.0], &[0], 2, 20).unwrap_err();
        assert!(e.to_string().contains("bank is empty"), "{e}");
        let e = knn_accuracy(&[], &[0, 1], &[], &[0], 0, 20).unwrap_err();
        assert!(e.to_string().contains("0 wide"), "{e}");
    }
}
