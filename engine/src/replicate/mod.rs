//! Replication between two hosts (`docs/REPLICATION.md`): the checkpoint
//! stream of `docs/STREAM.md` over one TCP connection, acknowledgements
//! and heartbeat replies coming back on the same connection.
//!
//! - [`Primary`]: a [`crate::Sender`] on a connection, at most `window`
//!   checkpoints unacknowledged, heartbeats while idle, a new stream with
//!   a full checkpoint after a reconnect, and its figures
//!   ([`PrimaryReport`]);
//! - [`Backup`]: listens, receives with the [`crate::Receiver`], commits to
//!   a [`crate::Replica`], acknowledges, answers heartbeats, and declares
//!   the primary lost after a silent timeout;
//! - [`Reply`]: the back channel's messages, each of which reads and
//!   writes itself.

mod backup;
mod error;
mod link;
mod primary;
mod wire;

pub use backup::{Backup, BackupEnd, BackupEvent, BackupOptions, CreateImage};
pub use error::ReplicateError;
pub use primary::{
    CheckpointKind, Delivery, Primary, PrimaryOptions, PrimaryReport, ReplicationLatencies,
};
pub use wire::{lineage, Refusal, Reply, REPLY_LEN};

/// `docs/REPLICATION.md`, whose Rust example runs as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/REPLICATION.md")]
pub struct ReplicationDoc;
