//! The backup's side: the [`Receiver`] reads a checkpoint stream, verifies
//! each checkpoint whole and commits it to [`GuestMemory`]; a [`Replica`]
//! is memory a backup replicates into, [`DurableImage`] the crash-consistent
//! one on disk.

#[cfg(unix)]
mod journal;
mod memory;
mod receiver;
mod replica;

#[cfg(unix)]
pub use journal::{
    journal_path, state_path, CommitStats, Discarded, Durability, DurableImage, ImageError,
    Recovery,
};
pub use memory::{Commit, GuestMemory, ImageFile, SparseMemory};
pub use receiver::{CheckpointInfo, ReceiveError, Receiver};
pub use replica::Replica;
