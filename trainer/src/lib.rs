//! `dim-trainer`: learn image representations with Deep InfoMax (Hjelm et al., ICLR 2019).
//!
//! The modules are the pipeline, in order:
//! - [`data`]: image readers (CIFAR-10, IDX, image folders, built-in shapes), the loader.
//! - [`model`]: the encoders and the critics that score (local feature, Y) pairs.
//! - [`objective`]: the JSD / InfoNCE / DV bounds and prior matching.
//! - [`fit`]: config, state, the step, the loop, checkpoints and metrics (`trainer fit`).
//! - [`export`]: the f32 ONNX file (`trainer export`).
//! - [`quantize`]: calibration, the int8 ONNX file and the engine blob (`trainer quantize`).
//! - [`eval`]: probes, kNN, MINE and NDM through the runtime; `check` of a deployed encoder.
//! - [`embed`]: Y of a folder of images through the runtime, as CSV or NPY (`trainer embed`).
//! - [`inspect`]: an encoder file layer by layer, and what a device needs (`trainer inspect`).
//! - [`prototypes`]: labelled images enrolled into the firmware's prototypes file, with a
//!   calibrated novelty threshold (`trainer prototypes`).
//! - [`card`]: a shipped model's README from its measurements.
//! - [`bench`]: training throughput and where the step's time goes.
//! - [`knn`], [`probe`], [`fs`] and [`progress`]: the kNN vote and the classifier probes that both `fit`'s
//!   monitor and `eval` use, atomic file writes and progress bars.

pub mod data;
pub mod model;
pub mod objective;
pub mod fit;
pub mod export;
pub mod quantize;
pub mod eval;
pub mod embed;
pub mod inspect;
pub mod prototypes;
pub mod card;
pub mod bench;
pub mod knn;
pub mod probe;
pub mod fs;
pub mod progress;
