//! ckpt's lab: what the engine is measured and tried with, kept apart from
//! the engine a toolstack links.
//!
//! - [`trace`]: the trace format, dirty sets of real programs epoch by epoch;
//! - [`record`]: the recorder that checkpoints a live Linux process into a
//!   trace, and [`record_session`], a whole recording with its stop rules;
//! - [`synth`]: deterministic synthetic guests;
//! - [`replay`]: checkpoints from either, and the one loop that sends them;
//! - [`bench`], [`kernels`], [`pipeline_bench`], [`conformance`]: the
//!   measurements and the golden vectors ([`vectors`]) behind `ckpt`'s
//!   commands; [`streams`] and [`demo`]: stream files and the built-in run.
#![deny(missing_docs)]

pub mod bench;
pub mod conformance;
pub mod demo;
pub mod hostile;
pub mod kernels;
pub mod pipeline_bench;
#[cfg(target_os = "linux")]
pub mod record;
#[cfg(target_os = "linux")]
pub mod record_session;
pub mod replay;
pub mod streams;
pub mod synth;
pub mod trace;
pub mod vectors;

use std::path::{Path, PathBuf};
use thiserror::Error;

/// A failure of a lab job, naming the file it concerns where there is one.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LabError {
    /// A file could not be opened, read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Any other I/O failure (a socket, a pipe).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A trace could not be read or written.
    #[error("{path}: {source}")]
    Trace {
        /// The trace file.
        path: String,
        /// Why.
        #[source]
        source: trace::TraceError,
    },
    /// The sender refused a call or stopped.
    #[error(transparent)]
    Send(#[from] ckpt_engine::SendError),
    /// The receiver rejected a checkpoint.
    #[error(transparent)]
    Receive(#[from] ckpt_engine::ReceiveError),
    /// Recording a process failed.
    #[cfg(target_os = "linux")]
    #[error(transparent)]
    Record(#[from] record::RecordError),
    /// A job that cannot run as asked, with the reason.
    #[error("{0}")]
    Invalid(String),
}

impl LabError {
    /// A file error naming `path`.
    pub fn file(path: &Path, source: std::io::Error) -> LabError {
        LabError::File {
            path: path.display().to_string(),
            source,
        }
    }

    /// A trace error naming `path`.
    pub fn trace(path: &Path, source: trace::TraceError) -> LabError {
        LabError::Trace {
            path: path.display().to_string(),
            source,
        }
    }
}

/// The folders searched for the bundled traces, in order: `$CKPT_TRACES`,
/// `traces/` beside the executable and one level up (an installed tree's
/// `share/ckpt/traces` too), and the source tree's `traces/`.
pub fn trace_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("CKPT_TRACES") {
        dirs.push(PathBuf::from(d));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(bin) = exe.parent() {
            dirs.push(bin.join("traces"));
            if let Some(up) = bin.parent() {
                dirs.push(up.join("traces"));
                dirs.push(up.join("share/ckpt/traces"));
            }
        }
    }
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../traces"));
    dirs
}

/// The bundled traces of the first folder of [`trace_dirs`] that has any,
/// sorted by name.
pub fn bundled_traces() -> Vec<PathBuf> {
    for dir in trace_dirs() {
        let mut v: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "trace"))
                    .collect()
            })
            .unwrap_or_default();
        if !v.is_empty() {
            v.sort();
            return v;
        }
    }
    Vec::new()
}
