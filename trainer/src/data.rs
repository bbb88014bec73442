//! Image data: the `dim-data` crate's sources, cache and loader, and `trainer data fetch` and `trainer data split`.

pub use dim_data::*;
pub mod fetch;
pub mod split;
