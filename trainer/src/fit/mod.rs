//! `trainer fit`: a config, the trainable state built from it, the step, the loop that runs the
//! steps over epochs, and what the loop leaves behind — checkpoints and `metrics.jsonl`.

pub mod adam;
pub mod checkpoint;
pub mod config;
pub mod knn;
pub mod metrics;
pub mod monitor;
pub mod preset;
pub mod state;
pub mod step;
pub mod teacher;
pub mod train;
pub mod warm_start;

pub use config::{BackendKind, ModelKind, TrainConfig};
pub use state::{TrainState, device, new_state};
pub use step::{Phase, Phases, StepAt, StepLosses, step, step_timed};
pub use train::{FitOptions, FitSummary, INTERRUPTED, fit, open_data, train_loader};
