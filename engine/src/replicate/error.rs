//! Why replication stopped, on either side.

use super::Refusal;
use crate::{ReceiveError, SendError};
use std::io;
use std::time::Duration;
use thiserror::Error;

/// Why a primary or a backup stopped replicating.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ReplicateError {
    /// The primary could not reach its backup within the reconnect time.
    #[error("backup {addr} lost: no connection for {waited:?} ({last_error}); last acknowledged checkpoint: {last_acknowledged}")]
    BackupLost {
        /// The backup's address.
        addr: String,
        /// How long the primary tried.
        waited: Duration,
        /// The last connection error.
        last_error: String,
        /// What the backup last acknowledged, as text ("none" before any).
        last_acknowledged: String,
    },
    /// The backup refused the primary's stream.
    #[error("the backup refused the stream: {0}")]
    Refused(Refusal),
    /// A call the primary's sender refused (a caller's mistake, such as a
    /// PFN given twice); the connection is unaffected.
    #[error(transparent)]
    Send(#[from] SendError),
    /// The backup's image could not commit a checkpoint (a disk error):
    /// the backup stops, its image as the last commit left it.
    #[error(transparent)]
    Commit(#[from] ReceiveError),
    /// A call out of order (a page outside a checkpoint, say).
    #[error("out of order: {0}")]
    Sequence(&'static str),
    /// A socket or listener failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}
