//! Page types and PFN entries of the legacy save stream (`docs/FORMAT.md` §4):
//! a `u64` whose bits 28..31 hold the page type and bits 0..27 the PFN.

use bytemuck::{Pod, Zeroable};
use ckpt_simd::{Page, PAGE_SIZE};

/// Bits 0..27 of an entry: the PFN.
pub const PFN_MASK: u64 = (1 << 28) - 1;
/// Shift of the 4-bit page type.
pub const TYPE_SHIFT: u32 = 28;
/// Largest PFN an entry can carry, plus one.
pub const PFN_LIMIT: u64 = 1 << 28;

/// The page type carried in bits 28..31 of a PFN entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageType {
    /// 0x0: an ordinary page, delta-compressed against the cache.
    Normal,
    /// 0x1..0x4 (level 1..4) and 0x9..0xC (pinned): a page-table page, which
    /// the sender rewrites and so sends raw (FULL), never cached.
    PageTable {
        /// Table level, 1..=4.
        level: u8,
        /// Whether the table is pinned.
        pinned: bool,
    },
    /// 0xD: a broken page; carries no data.
    Broken,
    /// 0xE: allocate only; carries no data.
    XAlloc,
    /// 0xF: an invalid page; carries no data.
    XTab,
}

impl PageType {
    /// The type for a 4-bit code, or `None` for the codes with no meaning
    /// (0x5..0x8).
    pub fn from_code(code: u8) -> Option<PageType> {
        Some(match code {
            0x0 => PageType::Normal,
            0x1..=0x4 => PageType::PageTable {
                level: code,
                pinned: false,
            },
            0x9..=0xC => PageType::PageTable {
                level: code - 8,
                pinned: true,
            },
            0xD => PageType::Broken,
            0xE => PageType::XAlloc,
            0xF => PageType::XTab,
            _ => return None,
        })
    }

    /// The 4-bit code of this type.
    pub fn code(self) -> u8 {
        match self {
            PageType::Normal => 0,
            PageType::PageTable { level, pinned } => level + if pinned { 8 } else { 0 },
            PageType::Broken => 0xD,
            PageType::XAlloc => 0xE,
            PageType::XTab => 0xF,
        }
    }

    /// Whether an entry of this type is followed by (or compressed as) page data.
    pub fn carries_data(self) -> bool {
        matches!(self, PageType::Normal | PageType::PageTable { .. })
    }

    /// Whether the page is sent raw (FULL, uncached) in compressed mode.
    pub fn is_raw(self) -> bool {
        matches!(self, PageType::PageTable { .. })
    }
}

/// Packs a PFN and type into a stream entry. The PFN must be below 2^28.
pub fn entry(pfn: u64, ty: PageType) -> u64 {
    debug_assert!(pfn < PFN_LIMIT);
    pfn | (ty.code() as u64) << TYPE_SHIFT
}

/// A page buffer aligned to a cache line, the element of every page arena.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
pub struct PageBuf(pub Page);

impl PageBuf {
    /// An arena of `n` zeroed pages, allocated zeroed so that untouched
    /// pages cost no resident memory.
    pub fn arena(n: usize) -> Box<[PageBuf]> {
        bytemuck::allocation::zeroed_slice_box(n)
    }
}

const _: () = assert!(std::mem::size_of::<PageBuf>() == PAGE_SIZE);
