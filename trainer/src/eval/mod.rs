//! Evaluation of representations. `knn` is the quick probe `fit` reports at the end of a run.

pub mod knn;
