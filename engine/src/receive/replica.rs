//! What a backup replicates into (`docs/REPLICATION.md`, "The backup's
//! image"): guest memory that knows which checkpoint it holds, so that the
//! backup can report it, acknowledge it, and accept or refuse a stream.

use super::{Commit, GuestMemory, SparseMemory};
use std::io;

/// Guest memory a backup commits a primary's checkpoints to.
///
/// Besides the [`GuestMemory`] contract, a replica keeps the rule that
/// checkpoint 0 of a stream describes the whole guest: once it is
/// committed, every page it did not carry is zero, whatever an earlier
/// stream left there. Until then the replica holds the earlier stream's
/// last checkpoint.
pub trait Replica: GuestMemory {
    /// The checkpoint the memory holds: the last one committed, or `None`
    /// before the first.
    fn holds(&self) -> Option<Commit>;

    /// Called by the backup once a commit has been acknowledged: finish
    /// whatever the commit left for later (an image file syncs and retires
    /// its journal here), before the next checkpoint is committed.
    fn settle(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Replica for SparseMemory {
    fn holds(&self) -> Option<Commit> {
        self.holds
    }
}
