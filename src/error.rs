//! The tool's error type: every failure a subcommand can report.

use thiserror::Error;

/// A failure of a `ckpt` subcommand.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file or socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The sending engine rejected an input.
    #[error(transparent)]
    Engine(#[from] ckpt_engine::EngineError),
    /// A stream or checkpoint was rejected by the receiver.
    #[error(transparent)]
    Receive(#[from] ckpt_engine::receiver::ReceiveError),
    /// A page encoding was malformed.
    #[error(transparent)]
    Decode(#[from] ckpt_simd::DecodeError),
    /// The configuration file is unusable.
    #[error(transparent)]
    Config(#[from] ckpt_engine::config::ConfigError),
    /// A kernel was named that this CPU lacks.
    #[error(transparent)]
    KernelUnavailable(#[from] ckpt_simd::KernelUnavailable),
    /// A kernel name that names no kernel.
    #[error(transparent)]
    UnknownKernel(#[from] ckpt_simd::UnknownKernel),
    /// Anything else, with its explanation.
    #[error("{0}")]
    Other(String),
}

/// Result of a subcommand.
pub type Result<T> = std::result::Result<T, Error>;
