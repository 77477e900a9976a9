//! Page fingerprints: a keyed 128-bit hash that tells, with a collision
//! chance of at most 2^-64 per pair of different pages, whether a page
//! changed, without reading the old copy.
//!
//! The hash is NH (the inner hash of UMAC) twice, with the second key the
//! first one shifted by two words (the Toeplitz construction): over 32-bit
//! words `m` and key `k`,
//! `NH = sum of (m[2i] + k[2i]) * (m[2i+1] + k[2i+1])` modulo 2^64, with the
//! additions modulo 2^32. For a random key two different pages collide in
//! one NH with probability at most 2^-32, in both at most 2^-64. The key is
//! drawn per use (see [`FingerprintKey::random`]), so the bound holds for
//! any pages, but the hash is not meant to resist anyone who knows the key.
//!
//! The body is one loop of 32x32->64 multiplies and adds that the
//! compiler turns into `pmuludq`/`vpmuludq` (or `umull` on NEON) under each
//! kernel's features; every kernel gives the same value.

use crate::{Page, WORDS_PER_PAGE};

/// Words in a key: one per page word, plus the shift of the second hash.
pub(crate) const KEY_WORDS: usize = WORDS_PER_PAGE + 2;

/// Pairs of words summed per lane; eight lanes fill one 512-bit vector.
const LANES: usize = 8;

/// The key of a page fingerprint.
#[derive(Clone)]
pub struct FingerprintKey {
    words: Box<[u32; KEY_WORDS]>,
}

impl FingerprintKey {
    /// A key derived from `seed` (SplitMix64).
    pub fn from_seed(seed: u64) -> FingerprintKey {
        let mut state = seed;
        let mut words = Box::new([0u32; KEY_WORDS]);
        for w in words.iter_mut() {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            *w = (z ^ (z >> 31)) as u32;
        }
        FingerprintKey { words }
    }

    /// A key from the process's random source (the one `HashMap` seeds
    /// itself from), different on every call.
    pub fn random() -> FingerprintKey {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x636b_7074);
        FingerprintKey::from_seed(h.finish())
    }
}

impl FingerprintKey {
    /// The key's words, for the kernels with a fingerprint loop of their own.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn words(&self) -> &[u32; KEY_WORDS] {
        &self.words
    }
}

impl std::fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FingerprintKey(..)")
    }
}

/// Lanes of the two NH sums, folded into the fingerprint at the end.
#[derive(Clone, Copy, Default)]
pub(crate) struct Nh {
    a: [u64; LANES],
    b: [u64; LANES],
}

impl Nh {
    /// Adds the 64-byte block `blk` of a page (`bytes`, its 16 words) to
    /// both sums.
    #[inline(always)]
    pub(crate) fn block(&mut self, blk: usize, bytes: &[u8], key: &FingerprintKey) {
        let mut m = [0u32; 2 * LANES];
        for (w, c) in m.iter_mut().zip(bytes.chunks_exact(4)) {
            *w = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        let kb = &key.words[blk * 2 * LANES..blk * 2 * LANES + 2 * LANES + 2];
        let mut s = [0u32; 2 * LANES];
        let mut t = [0u32; 2 * LANES];
        for j in 0..2 * LANES {
            s[j] = m[j].wrapping_add(kb[j]);
            t[j] = m[j].wrapping_add(kb[j + 2]);
        }
        for l in 0..LANES {
            self.a[l] = self.a[l].wrapping_add(s[2 * l] as u64 * s[2 * l + 1] as u64);
            self.b[l] = self.b[l].wrapping_add(t[2 * l] as u64 * t[2 * l + 1] as u64);
        }
    }

    /// The fingerprint of the blocks added.
    #[inline(always)]
    pub(crate) fn finish(&self) -> u128 {
        let fold = |v: &[u64; LANES]| v.iter().fold(0u64, |s, &x| s.wrapping_add(x));
        (fold(&self.a) as u128) << 64 | fold(&self.b) as u128
    }
}

/// The fingerprint, written plainly: NH over the page's 64-byte blocks.
/// Kernels without a loop of their own compile this with their features.
#[inline(always)]
pub(crate) fn fingerprint(page: &Page, key: &FingerprintKey) -> u128 {
    let mut nh = Nh::default();
    for (blk, bytes) in page.chunks_exact(8 * LANES).enumerate() {
        nh.block(blk, bytes, key);
    }
    nh.finish()
}

/// Entry point for kernels without their own: the loop above compiled
/// with the kernel's features.
macro_rules! generic_fingerprint {
    ($feature:tt) => {
        /// Page fingerprint entry point.
        ///
        /// # Safety
        /// The CPU must support the features named in `target_feature`.
        #[target_feature(enable = $feature)]
        pub(crate) unsafe fn fingerprint(
            page: &$crate::Page,
            key: &$crate::FingerprintKey,
        ) -> u128 {
            $crate::fingerprint::fingerprint(page, key)
        }
    };
}
#[allow(unused_imports)]
pub(crate) use generic_fingerprint;
