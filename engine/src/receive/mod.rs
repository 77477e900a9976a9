//! The backup's side: the [`Receiver`] reads a checkpoint stream, verifies
//! each checkpoint whole and commits it to [`GuestMemory`].

mod memory;
mod receiver;

pub use memory::{Commit, GuestMemory, ImageFile, SparseMemory};
pub use receiver::{CheckpointInfo, ReceiveError, Receiver};
