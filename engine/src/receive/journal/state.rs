//! The image's state file (`docs/REPLICATION.md`, "State file"): the guest
//! size and the checkpoint the synced image holds, in two slots a block
//! apart that are written in turn, so that a torn write of one leaves the
//! other whole.

use super::{u128_at, u32_at, u64_at};
use crate::page::PFN_LIMIT;
use crate::Commit;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

const STATE_MAGIC: &[u8; 8] = b"CKPTIMGS";
const STATE_VERSION: u32 = 1;
/// Bytes of one state record.
const STATE_LEN: usize = 80;
/// Distance between the two state slots (each in its own block).
const STATE_SLOT: u64 = 4096;

/// What a state record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct State {
    /// One more per commit, across streams; the slot is `generation % 2`.
    pub(super) generation: u64,
    /// Pages of the guest.
    pub(super) guest_pages: u64,
    /// The checkpoint the synced image holds.
    pub(super) holds: Option<Commit>,
}

impl State {
    fn to_bytes(self) -> [u8; STATE_LEN] {
        let mut b = [0u8; STATE_LEN];
        b[..8].copy_from_slice(STATE_MAGIC);
        b[8..12].copy_from_slice(&STATE_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(self.holds.is_some() as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.generation.to_le_bytes());
        b[24..32].copy_from_slice(&self.guest_pages.to_le_bytes());
        if let Some(c) = self.holds {
            b[32..48].copy_from_slice(&c.stream_id.to_le_bytes());
            b[48..56].copy_from_slice(&c.seq.to_le_bytes());
            b[56..72].copy_from_slice(&c.digest.to_le_bytes());
        }
        let check = crc32c::crc32c(&b[..72]);
        b[72..76].copy_from_slice(&check.to_le_bytes());
        b
    }

    /// `None` for a slot that is not a whole, valid record.
    fn parse(b: &[u8; STATE_LEN]) -> Option<State> {
        if &b[..8] != STATE_MAGIC
            || u32_at(b, 72) != crc32c::crc32c(&b[..72])
            || u32_at(b, 8) != STATE_VERSION
            || u32_at(b, 12) > 1
            || u32_at(b, 76) != 0
        {
            return None;
        }
        let guest_pages = u64_at(b, 24);
        if guest_pages == 0 || guest_pages > PFN_LIMIT {
            return None;
        }
        let holds = (u32_at(b, 12) == 1).then(|| Commit {
            stream_id: u128_at(b, 32),
            guest_pages,
            seq: u64_at(b, 48),
            digest: u128_at(b, 56),
        });
        Some(State {
            generation: u64_at(b, 16),
            guest_pages,
            holds,
        })
    }

    /// The valid slot of `file` with the highest generation, or `None`
    /// when neither slot is valid.
    pub(super) fn read(file: &File) -> io::Result<Option<State>> {
        let mut newest: Option<State> = None;
        for k in 0..2u64 {
            let mut slot = [0u8; STATE_LEN];
            let mut got = 0;
            while got < STATE_LEN {
                match file.read_at(&mut slot[got..], k * STATE_SLOT + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if let Some(s) = State::parse(&slot) {
                if newest.is_none_or(|n| s.generation > n.generation) {
                    newest = Some(s);
                }
            }
        }
        Ok(newest)
    }

    /// Writes the record to its slot and syncs it.
    pub(super) fn write(self, file: &File) -> io::Result<()> {
        file.write_all_at(&self.to_bytes(), (self.generation % 2) * STATE_SLOT)?;
        file.sync_data()
    }
}
