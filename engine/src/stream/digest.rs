//! The page digest of a checkpoint (`docs/STREAM.md`, "Trailer"): what
//! committing the checkpoint must produce, so that a backup whose memory
//! would differ from the primary's by a single word refuses the checkpoint.
//!
//! Each page enters the digest by its 128-bit fingerprint (the NH hash of
//! the page kernels, [`ckpt_simd::Codec::fingerprint`]) under a key fixed by
//! the format, so that the sender can take it in the same pass as the
//! encoder's compare, at almost no cost.

use ckpt_simd::{Codec, FingerprintKey, Page};
use std::sync::OnceLock;
use xxhash_rust::xxh3::Xxh3;

/// The seed of the fingerprint key every stream's digest uses.
pub const DIGEST_KEY_SEED: u64 = 0x636b_7074_6469_6731;

/// The fingerprint key of the digest.
pub fn digest_key() -> &'static FingerprintKey {
    static KEY: OnceLock<FingerprintKey> = OnceLock::new();
    KEY.get_or_init(|| FingerprintKey::from_seed(DIGEST_KEY_SEED))
}

/// A page's fingerprint as the digest takes it.
pub fn page_fingerprint(codec: &Codec, page: &Page) -> u128 {
    codec.fingerprint(page, digest_key())
}

/// Folds the pages of one checkpoint, in body order, into its digest:
/// XXH3-128 over `pfn (u64) || fingerprint(page) (u128)` of every
/// data-carrying entry, where `page` is the content after the checkpoint is
/// committed.
pub struct Digest {
    state: Xxh3,
    pages: u64,
}

impl Default for Digest {
    fn default() -> Self {
        Digest::new()
    }
}

impl Digest {
    /// An empty digest.
    pub fn new() -> Digest {
        Digest {
            state: Xxh3::new(),
            pages: 0,
        }
    }

    /// Adds a page by its fingerprint ([`page_fingerprint`]).
    pub fn add(&mut self, pfn: u64, fingerprint: u128) {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&pfn.to_le_bytes());
        b[8..].copy_from_slice(&fingerprint.to_le_bytes());
        self.state.update(&b);
        self.pages += 1;
    }

    /// Adds a page by its content.
    pub fn add_page(&mut self, codec: &Codec, pfn: u64, page: &Page) {
        self.add(pfn, page_fingerprint(codec, page));
    }

    /// Pages added.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// The digest value.
    pub fn finish(&self) -> u128 {
        self.state.digest128()
    }
}
