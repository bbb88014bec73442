//! `dim-runtime`: run Deep InfoMax encoders on edge devices.
//!
//! The core is `no_std` and allocation-free. It holds what every deployment target must agree on
//! with the trainer, starting with image preprocessing: the trainer feeds its models through the
//! same [`preprocess`] functions, so a device sees exactly the pixels the encoder was trained on.
//!
//! [`engine`] runs an int8 encoder from a compact model blob in a caller-provided arena — the
//! engine microcontrollers use, computing what tract computes; [`fast`] (std) runs the same blob
//! with the same results, laid out for a host's vector units.
//!
//! With the `std` feature (default), [`Encoder`] runs an exported ONNX encoder (f32 or int8)
//! through tract: load once, share across threads, embed images of any size. An f32 file of
//! `trainer export`'s form runs on [`float`] (our products, tract's plan kept as the reference).
#![cfg_attr(not(feature = "std"), no_std)]
// `deny`, not `forbid`: the engine's `dsp` module alone allows it (two Cortex-M instructions in
// `asm!`, with their proof and portable twins there).
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod preprocess;
#[cfg(feature = "std")]
mod encoder;
#[cfg(feature = "std")]
mod qdq;
pub mod engine;
#[cfg(feature = "std")]
pub mod fast;
#[cfg(feature = "std")]
pub mod float;
#[cfg(feature = "std")]
mod fields;
#[cfg(feature = "std")]
mod pool;
pub mod prototypes;
mod error;

#[cfg(feature = "std")]
pub use encoder::{Encoder, Image};
pub use error::Error;
pub use preprocess::{INPUT_CHANNELS, INPUT_LEN, INPUT_SIDE, PreprocessError, RGB32_LEN, Rgb32};
pub use prototypes::PrototypeStore;

/// The threads this machine runs at once (at least 1): what [`Encoder`] splits a batch over by
/// default, and what callers of [`fast::FastModel::run_batch`] pass to use every core.
#[cfg(feature = "std")]
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
