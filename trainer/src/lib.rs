//! `dim-trainer`: learn image representations with Deep InfoMax (Hjelm et al., ICLR 2019).
//!
//! The pipeline reads top to bottom: [`data`] (readers, loader), [`model`] (encoders, critics),
//! [`objective`] (JSD / InfoNCE / DV estimators, prior matching), [`train`] (the `fit` loop,
//! [`checkpoint`]s), [`eval`] (probes), [`export`] (ONNX), [`bench`] (throughput).

pub mod adam;
pub mod bench;
pub mod card;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod eval;
pub mod export;
pub mod model;
pub mod objective;
pub mod train;
