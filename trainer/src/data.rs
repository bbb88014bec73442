//! Image data: the `dim-data` crate's sources, cache and loader, and `trainer data fetch`.

pub use dim_data::*;
pub mod fetch;
