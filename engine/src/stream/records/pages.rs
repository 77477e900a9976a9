//! The page records' heads and PFN entries (`docs/RECORDS.md`, "PAGE_DATA",
//! "CKPT_COMPRESSED_PAGE_DATA").
//!
//! ```text
//! PAGE_DATA (Xen)                   CKPT_COMPRESSED_PAGE_DATA
//!  0 count u32 (C >= 1)              0 count u32 (C >= 1)
//!  4 reserved u32                    4 stage u32 (0 none, 1 zstd)
//!  8 pfn[C] u64                      8 encoded_length u32
//!    page data, 4096 per data entry 12 reserved u32
//!                                   16 pfn[C] u64
//!                                      payload: the encodings of the data
//!                                      entries (docs/FORMAT.md §1), or
//!                                      zstd frames that decompress to them
//! ```
//!
//! A PFN entry is Xen's: the page type in bits 60..63, bits 52..59
//! reserved, the PFN in bits 0..51. Inside the engine entries keep the
//! legacy layout (type in bits 28..31), converted at this boundary.

use crate::page::{PFN_MASK, TYPE_SHIFT};
use crate::stream::le;

/// Bytes of a PAGE_DATA record's head.
pub const PAGE_DATA_HEAD_LEN: usize = 8;
/// Bytes of a CKPT_COMPRESSED_PAGE_DATA record's head.
pub const PAGES_HEAD_LEN: usize = 16;
/// Shift of the page type in a record stream's PFN entry.
const XEN_TYPE_SHIFT: u32 = 60;
/// Bits 52..59 of a record stream's PFN entry, reserved.
const XEN_RESERVED: u64 = ((1 << 60) - 1) & !((1 << 52) - 1);
/// Bits 0..51: the PFN.
const XEN_PFN_MASK: u64 = (1 << 52) - 1;

/// A record stream's PFN entry for an engine entry (type in bits 28..31).
pub fn to_xen_entry(entry: u64) -> u64 {
    (entry & PFN_MASK) | ((entry >> TYPE_SHIFT) & 0xF) << XEN_TYPE_SHIFT
}

/// The engine entry for a record stream's PFN entry, or what is wrong with
/// it: reserved bits set, or a PFN no engine entry can hold (2^28 or more).
/// The page type is checked by the caller, as for a legacy entry.
pub fn from_xen_entry(xen: u64) -> Result<u64, &'static str> {
    if xen & XEN_RESERVED != 0 {
        return Err("bits 52..59 are set");
    }
    let pfn = xen & XEN_PFN_MASK;
    if pfn > PFN_MASK {
        return Err("the PFN is 2^28 or more");
    }
    Ok(pfn | (xen >> XEN_TYPE_SHIFT) << TYPE_SHIFT)
}

/// The head of a CKPT_COMPRESSED_PAGE_DATA record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagesHead {
    /// PFN entries in the record.
    pub count: u32,
    /// How the payload carries the encodings (`STAGE_NONE`, `STAGE_ZSTD`).
    pub stage: u32,
    /// Bytes of the page encodings before the stage.
    pub encoded_len: u32,
}

impl PagesHead {
    /// The head's bytes.
    pub fn to_bytes(&self) -> [u8; PAGES_HEAD_LEN] {
        let mut b = [0u8; PAGES_HEAD_LEN];
        b[..4].copy_from_slice(&self.count.to_le_bytes());
        b[4..8].copy_from_slice(&self.stage.to_le_bytes());
        b[8..12].copy_from_slice(&self.encoded_len.to_le_bytes());
        b
    }

    /// Reads a head, or says which field is wrong.
    pub fn from_bytes(b: &[u8; PAGES_HEAD_LEN]) -> Result<PagesHead, &'static str> {
        if b[12..16] != [0; 4] {
            return Err("reserved");
        }
        let count = u32::from_le_bytes(le(b, 0));
        if count == 0 {
            return Err("count is 0");
        }
        Ok(PagesHead {
            count,
            stage: u32::from_le_bytes(le(b, 4)),
            encoded_len: u32::from_le_bytes(le(b, 8)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::{entry, PageType};

    #[test]
    fn entries_convert_both_ways() {
        let e = entry(
            0x00AB_CDEF,
            PageType::PageTable {
                level: 3,
                pinned: true,
            },
        );
        let x = to_xen_entry(e);
        assert_eq!(x, 0xB000_0000_00AB_CDEF);
        assert_eq!(from_xen_entry(x), Ok(e));
        assert_eq!(from_xen_entry(x | 1 << 52), Err("bits 52..59 are set"));
        assert_eq!(from_xen_entry(1 << 28), Err("the PFN is 2^28 or more"));
    }
}
