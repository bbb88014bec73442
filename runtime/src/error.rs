//! The runtime's error type.

use crate::preprocess::PreprocessError;

/// Why the runtime refused a model or an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The image buffer does not match its stated size or format.
    #[error("bad image: {0}")]
    Image(#[from] PreprocessError),
    /// The model bytes are not a usable encoder (corrupt, truncated, wrong inputs or outputs).
    #[cfg(feature = "std")]
    #[error("invalid model: {0}")]
    Model(std::string::String),
    /// The model has no value of this name to output (e.g. a probe layer it was exported without).
    #[cfg(feature = "std")]
    #[error("invalid model: the model has no value named `{0}`")]
    MissingOutput(std::string::String),
    /// Inference failed.
    #[cfg(feature = "std")]
    #[error("inference failed: {0}")]
    Run(std::string::String),
    /// A model file could not be read.
    #[cfg(feature = "std")]
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}
