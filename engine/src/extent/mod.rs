//! Superpage-aware restore: the backup's guest memory allocated by 2 MiB
//! extent on first touch, each extent backed either by one transparent
//! huge page or by 4 KiB pages, as a [`SuperpagePolicy`] decides from the
//! order in which the PFN batches of the save-stream body (`FORMAT.md` §4)
//! name their pages.
//!
//! - [`plan`]: the policies' decisions, apart from any memory;
//! - [`ExtentMemory`] (Linux): the guest memory that carries them out on
//!   real huge pages and counts what it did;
//! - [`backing`] (Linux): what the kernel really gave, read back from the
//!   page map, the page flags and `smaps`;
//! - [`measure`] (Linux): restore and read speed per policy, over a stream
//!   held in memory.

#[cfg(target_os = "linux")]
pub mod backing;
#[cfg(target_os = "linux")]
pub mod measure;
#[cfg(target_os = "linux")]
mod memory;
pub mod plan;

#[cfg(target_os = "linux")]
pub use memory::ExtentMemory;
pub use plan::{Action, ExtentState, Planner};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Pages in one extent (2 MiB of 4 KiB pages).
pub const EXTENT_PAGES: u64 = 512;
/// Bytes in one extent.
pub const EXTENT_BYTES: usize = 2 << 20;

/// How the backup chooses between a huge page and 4 KiB pages for each
/// 2 MiB extent of the guest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SuperpagePolicy {
    /// 4 KiB pages only.
    None,
    /// A huge page only for an extent whose first PFN arrives while none
    /// of it is populated and whose other 511 PFNs follow it in order.
    /// When that run reaches the end of a batch, the huge page is given
    /// then, and broken into 4 KiB pages if the next batch breaks the
    /// order. Everything else gets 4 KiB pages.
    Tracking,
    /// A huge page for every extent at the first of its PFNs to arrive;
    /// the pages that never arrive stay allocated, zero. The default: a
    /// backup must be able to hold the whole guest anyway, and this backs
    /// the most of it with huge pages whatever the send order
    /// (`results/restore.md`).
    #[default]
    Optimistic,
}

impl SuperpagePolicy {
    /// Every policy, baseline first.
    pub const ALL: [SuperpagePolicy; 3] = [
        SuperpagePolicy::None,
        SuperpagePolicy::Tracking,
        SuperpagePolicy::Optimistic,
    ];

    /// The name used on the command line and in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            SuperpagePolicy::None => "none",
            SuperpagePolicy::Tracking => "tracking",
            SuperpagePolicy::Optimistic => "optimistic",
        }
    }
}

impl fmt::Display for SuperpagePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A policy name that is not `none`, `tracking` or `optimistic`.
#[derive(Debug, thiserror::Error)]
#[error("unknown superpage policy {0:?} (none, tracking or optimistic)")]
pub struct UnknownPolicy(pub String);

impl FromStr for SuperpagePolicy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SuperpagePolicy::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownPolicy(s.to_string()))
    }
}

/// What one [`ExtentMemory`] did and what the kernel really gave it (the
/// first five fields are the keys `ckpt bench --json` reports).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SuperpageReport {
    /// The policy.
    pub superpage_policy: SuperpagePolicy,
    /// Extents given a 2 MiB page, including those broken later.
    pub extents_2m: u64,
    /// 4 KiB pages allocated: pages written in 4 KiB extents, and the
    /// pages of broken extents, written again.
    pub pages_4k: u64,
    /// Extents moved from a 2 MiB page to 4 KiB pages.
    pub extents_broken: u64,
    /// Of the extents whose 512 pages were all written, the share the
    /// kernel backs with one huge page (`None` if there are no such
    /// extents, or the page flags cannot be read).
    pub huge_extent_share: Option<f64>,
    /// Extents whose 512 pages were all written.
    pub extents_full: u64,
    /// Of those, the ones the kernel backs with one huge page.
    pub extents_full_huge: Option<u64>,
    /// Extents the kernel backs with one huge page, full or not.
    pub extents_huge: Option<u64>,
    /// Of the pages written, those lying in an extent the kernel backs
    /// with one huge page.
    pub pages_in_huge: Option<u64>,
    /// Distinct pages written.
    pub pages_written: u64,
    /// Memory the guest holds: its resident pages, holes of huge pages
    /// included (page map).
    pub resident_bytes: u64,
    /// Of the mapping, the bytes the kernel maps with 2 MiB entries
    /// (`AnonHugePages` in `smaps`).
    pub anon_huge_bytes: u64,
    /// Time spent breaking extents, in milliseconds.
    pub break_ms: f64,
    /// `madvise` calls that failed (the extent keeps 4 KiB pages, or its
    /// huge page); contents never depend on them.
    pub advice_failures: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Receiver {
        superpages: SuperpagePolicy,
    }

    #[test]
    fn names_parse_and_print_alike() {
        for p in SuperpagePolicy::ALL {
            assert_eq!(p.to_string().parse::<SuperpagePolicy>().unwrap(), p);
            let r: Receiver = toml::from_str(&format!("superpages = \"{p}\"")).unwrap();
            assert_eq!(r.superpages, p);
        }
        assert!(toml::from_str::<Receiver>("superpages = \"always\"").is_err());
        assert_eq!(SuperpagePolicy::default(), SuperpagePolicy::Optimistic);
    }

    #[test]
    fn report_keys_are_the_bench_keys() {
        let r = SuperpageReport {
            superpage_policy: SuperpagePolicy::Tracking,
            extents_2m: 3,
            pages_4k: 700,
            extents_broken: 1,
            huge_extent_share: Some(0.5),
            extents_full: 4,
            extents_full_huge: Some(2),
            extents_huge: Some(2),
            pages_in_huge: Some(1024),
            pages_written: 1724,
            resident_bytes: 1724 * 4096,
            anon_huge_bytes: 4 << 20,
            break_ms: 0.25,
            advice_failures: 0,
        };
        let text = toml::to_string(&r).unwrap();
        for line in [
            "superpage_policy = \"tracking\"",
            "extents_2m = 3",
            "pages_4k = 700",
            "extents_broken = 1",
            "huge_extent_share = 0.5",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from\n{text}"
            );
        }
    }
}
