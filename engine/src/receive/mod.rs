//! The backup's side: the [`Receiver`] reads a checkpoint stream, verifies
//! each checkpoint whole and commits it to [`GuestMemory`]: in RAM
//! ([`SparseMemory`], or [`ExtentMemory`], which backs 2 MiB extents with
//! huge pages as a [`SuperpagePolicy`] decides), or an image file
//! ([`ImageFile`]).

pub mod extent;
mod memory;
mod receiver;

#[cfg(target_os = "linux")]
pub use extent::ExtentMemory;
pub use extent::{SuperpagePolicy, SuperpageReport};
pub use memory::{Commit, GuestMemory, ImageFile, SparseMemory};
pub use receiver::{CheckpointInfo, ReceiveError, Receiver};
