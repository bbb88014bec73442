//! On-device few-shot memory: labelled int8 embeddings, nearest-prototype class and novelty.
//!
//! A device stores a handful of embeddings per class it should recognise (no training on the
//! device); a new embedding gets the label of its most similar prototype (cosine), and its
//! novelty is `1 − that similarity`: high when the camera sees something unlike anything stored.

pub mod file;

use heapless::Vec;

/// Up to `N` prototypes of width `D`.
#[derive(Debug, Default)]
pub struct PrototypeStore<const N: usize, const D: usize> {
    items: Vec<(u16, [i8; D]), N>,
}

/// The closest prototype to a query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Match {
    /// The label of the most similar prototype.
    pub label: u16,
    /// Its cosine similarity to the query, in [−1, 1].
    pub similarity: f32,
    /// `1 − similarity`: high for what the store has never seen.
    pub novelty: f32,
}

fn cosine<const D: usize>(a: &[i8; D], b: &[i8; D]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0i64, 0i64, 0i64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as i64, y as i64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0 || bb == 0 { 0.0 } else { ab as f32 / libm::sqrtf(aa as f32 * bb as f32) }
}

impl<const N: usize, const D: usize> PrototypeStore<N, D> {
    /// An empty store.
    ///
    /// ```
    /// use dim_runtime::PrototypeStore;
    /// let mut store = PrototypeStore::<8, 4>::new();
    /// store.insert(1, [100, 0, 0, 0]).unwrap();
    /// store.insert(2, [0, 100, 0, 0]).unwrap();
    /// let m = store.nearest(&[90, 10, 0, 0]).unwrap();
    /// assert_eq!(m.label, 1);
    /// assert!(m.novelty < 0.01);
    /// ```
    pub const fn new() -> Self {
        Self { items: Vec::new() }
    }

    /// Prototypes stored.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether none is stored.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Stores a prototype; when full, hands it back.
    pub fn insert(&mut self, label: u16, embedding: [i8; D]) -> Result<(), (u16, [i8; D])> {
        self.items.push((label, embedding))
    }

    /// Removes every prototype of `label`; returns how many.
    pub fn forget(&mut self, label: u16) -> usize {
        let before = self.items.len();
        self.items.retain(|(l, _)| *l != label);
        before - self.items.len()
    }

    /// Removes every prototype.
    pub fn clear(&mut self) {
        self.items.clear();
    }

    /// The most similar prototype, or `None` when the store is empty.
    pub fn nearest(&self, query: &[i8; D]) -> Option<Match> {
        self.items
            .iter()
            .map(|(label, p)| (*label, cosine(query, p)))
            .fold(None, |best: Option<(u16, f32)>, (l, s)| match best {
                Some((_, b)) if b >= s => best,
                _ => Some((l, s)),
            })
            .map(|(label, similarity)| Match { label, similarity, novelty: 1.0 - similarity })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_label_novelty_and_capacity() {
        let mut store = PrototypeStore::<2, 3>::new();
        assert_eq!(store.nearest(&[1, 0, 0]), None);
        store.insert(7, [100, 0, 0]).unwrap();
        store.insert(9, [0, 50, 50]).unwrap();
        assert_eq!(store.insert(11, [1, 1, 1]), Err((11, [1, 1, 1])), "full: the item comes back");
        let m = store.nearest(&[10, 1, 0]).unwrap();
        assert_eq!(m.label, 7);
        assert!((m.similarity - 10.0 / 101f32.sqrt()).abs() < 1e-6);
        let m = store.nearest(&[0, 0, 127]).unwrap();
        assert_eq!(m.label, 9);
        assert!((m.novelty - (1.0 - 1.0 / 2f32.sqrt())).abs() < 1e-6, "45° away: novelty 1 − cos 45°");
        assert_eq!(store.nearest(&[0, 0, 0]).unwrap().similarity, 0.0);
        assert_eq!(store.forget(7), 1);
        assert_eq!(store.nearest(&[10, 1, 0]).unwrap().label, 9, "only 9 is left");
        assert_eq!(store.forget(7), 0);
        store.clear();
        assert!(store.is_empty() && store.nearest(&[1, 0, 0]).is_none());
    }
}
