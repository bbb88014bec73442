//! `dim-runtime`: run Deep InfoMax encoders on edge devices.
//!
//! The core is `no_std` and allocation-free. It holds what every deployment target must agree on
//! with the trainer, starting with image preprocessing: the trainer feeds its models through the
//! same [`preprocess`] functions, so a device sees exactly the pixels the encoder was trained on.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

pub mod preprocess;

pub use preprocess::{INPUT_CHANNELS, INPUT_SIDE, INPUT_LEN, PreprocessError};
