//! The backup's side: the [`Receiver`] reads a checkpoint stream, verifies
//! each checkpoint whole and commits it to [`GuestMemory`]: in RAM
//! ([`SparseMemory`], or [`ExtentMemory`], which backs 2 MiB extents with
//! huge pages as a [`SuperpagePolicy`] decides), or an image file
//! ([`ImageFile`]; [`DurableImage`] is the crash-consistent one a backup
//! commits to). A [`Replica`] is memory a backup replicates into.

pub mod extent;
#[cfg(unix)]
mod journal;
mod memory;
mod receiver;
mod replica;
mod verified;

#[cfg(target_os = "linux")]
pub use extent::ExtentMemory;
pub use extent::{SuperpagePolicy, SuperpageReport};
#[cfg(unix)]
pub use journal::{
    journal_path, state_path, CommitStats, Discarded, Durability, DurableImage, ImageError,
    RecordFault, Recovery,
};
pub use memory::{Commit, GuestMemory, ImageFile, SparseMemory};
pub use receiver::{CheckpointInfo, ReceiveError, Receiver};
pub use replica::Replica;
pub use verified::{PageEncoding, VerifiedCheckpoint};
