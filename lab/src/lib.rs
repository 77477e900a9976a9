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
//!   commands; [`streams`] and [`demo`]: stream files and the built-in run;
//!   [`tune`]: settings measured against each other on this host;
//!   `restore_bench` (Linux): restore and read speed per superpage policy;
//!   [`convert`]: a stream rewritten in another wire format.
//! - [`figures`]: how a ratio, a percentile, a rate and a goal are stated.
//! - [`replicate`]: sources fed to a replicating primary (`ckpt send`).
#![deny(missing_docs)]

pub mod bench;
pub mod conformance;
pub mod convert;
pub mod demo;
pub mod figures;
pub mod hostile;
pub mod kernels;
pub mod pipeline_bench;
#[cfg(target_os = "linux")]
pub mod record;
#[cfg(target_os = "linux")]
pub mod record_session;
pub mod replay;
pub mod replicate;
#[cfg(target_os = "linux")]
pub mod restore_bench;
pub mod streams;
pub mod synth;
pub mod trace;
pub mod tune;
pub mod vectors;

use std::path::{Path, PathBuf};
use thiserror::Error;

/// A failure of a lab job, naming the file it concerns where there is one.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LabError {
    /// A file could not be opened, read or written (the cause follows in
    /// the error's chain).
    #[error("{path}")]
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
    /// A trace could not be read or written (the cause follows in the
    /// error's chain).
    #[error("{path}")]
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
    /// Replication stopped.
    #[error(transparent)]
    Replicate(#[from] ckpt_engine::replicate::ReplicateError),
    /// A backup's image could not be opened or created.
    #[error(transparent)]
    Image(#[from] ckpt_engine::ImageError),
    /// Recording a process failed.
    #[cfg(target_os = "linux")]
    #[error(transparent)]
    Record(#[from] record::RecordError),
    /// A job that cannot run as asked, with the reason.
    #[error("{0}")]
    Invalid(String),
    /// A recording ended by an error after `epochs` epochs, which its
    /// trace holds (finished and readable).
    #[error("recording stopped by an error after {epochs} epoch(s), which the trace holds")]
    Stopped {
        /// Epochs completed and written.
        epochs: usize,
        /// The error.
        #[source]
        source: Box<LabError>,
    },
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

/// The folders searched for the bundled traces, in order: `$CKPT_TRACES`;
/// `traces/` beside the executable and one level up, and an installed
/// tree's `share/ckpt/traces`; and, for an executable cargo built in its
/// build folder (one with a `.fingerprint` folder beside it or one level
/// up), the source tree's `traces/`. A copied or installed executable does
/// not look in the tree it was built from, which may be gone.
pub fn trace_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("CKPT_TRACES") {
        dirs.push(PathBuf::from(d));
    }
    let exe = std::env::current_exe().ok();
    let bin = exe.as_deref().and_then(Path::parent);
    if let Some(bin) = bin {
        dirs.push(bin.join("traces"));
        if let Some(up) = bin.parent() {
            dirs.push(up.join("traces"));
            dirs.push(up.join("share/ckpt/traces"));
        }
    }
    let built_here = bin.is_some_and(|b| {
        b.join(".fingerprint").is_dir()
            || b.parent()
                .is_some_and(|up| up.join(".fingerprint").is_dir())
    });
    if built_here {
        let lab = Path::new(env!("CARGO_MANIFEST_DIR"));
        dirs.push(lab.parent().unwrap_or(lab).join("traces"));
    }
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

/// Writes a trace carried inside an executable to a file the commands can
/// open: `name` in a folder of the system's temporary directory named for
/// this version, written once (through a temporary name, then renamed, so
/// a concurrent run never reads half a file) and reused while it holds the
/// same bytes. Returns the file's path.
pub fn embedded_trace(name: &str, bytes: &[u8]) -> Result<PathBuf, LabError> {
    let dir = std::env::temp_dir().join(format!("ckpt-{}-traces", env!("CARGO_PKG_VERSION")));
    let path = dir.join(name);
    if std::fs::read(&path).is_ok_and(|b| b == bytes) {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir).map_err(|e| LabError::file(&dir, e))?;
    let part = dir.join(format!("{name}.{}.part", std::process::id()));
    std::fs::write(&part, bytes).map_err(|e| LabError::file(&part, e))?;
    std::fs::rename(&part, &path).map_err(|e| LabError::file(&path, e))?;
    Ok(path)
}
