//! AVX-512 (F + BW): one 64-byte compare per block straight into a mask
//! register, which is already the 16-bit word mask the algorithm wants.
use crate::generic::{entry_points, Isa};
use core::arch::x86_64::*;

pub(crate) struct Avx512;

impl Isa for Avx512 {
    #[inline(always)]
    unsafe fn block_diff(a: *const u8, b: *const u8) -> u16 {
        // SAFETY: the caller guarantees 64 readable bytes at `a` and `b` and
        // AVX-512F support; loadu has no alignment requirement.
        unsafe {
            let x = _mm512_loadu_si512(a as *const __m512i);
            let y = _mm512_loadu_si512(b as *const __m512i);
            _mm512_cmpneq_epi32_mask(x, y)
        }
    }
}

entry_points!(Avx512, "avx512f,avx512bw");

/// Page fingerprint (see `crate::fingerprint`): sixteen 32x32->64
/// products per 64-byte block, two keys.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn fingerprint(page: &crate::Page, key: &crate::FingerprintKey) -> u128 {
    let (p, k) = (page.as_ptr(), key.words().as_ptr());
    // SAFETY: every load reads 64 bytes at offset 64 * i < 4096 of the page
    // and 16 words at word 16 * i (+ 2) <= 1024 + 2 - 16 of the key (1026
    // words); loadu has no alignment requirement; the caller guarantees
    // AVX-512F.
    unsafe {
        let (mut a, mut b) = (_mm512_setzero_si512(), _mm512_setzero_si512());
        for i in 0..crate::PAGE_SIZE / 64 {
            let m = _mm512_loadu_si512(p.add(64 * i) as *const __m512i);
            let k0 = _mm512_loadu_si512(k.add(16 * i) as *const __m512i);
            let k2 = _mm512_loadu_si512(k.add(16 * i + 2) as *const __m512i);
            let s = _mm512_add_epi32(m, k0);
            let t = _mm512_add_epi32(m, k2);
            a = _mm512_add_epi64(a, _mm512_mul_epu32(s, _mm512_srli_epi64::<32>(s)));
            b = _mm512_add_epi64(b, _mm512_mul_epu32(t, _mm512_srli_epi64::<32>(t)));
        }
        (_mm512_reduce_add_epi64(a) as u64 as u128) << 64
            | _mm512_reduce_add_epi64(b) as u64 as u128
    }
}

/// The encoder's first pass fused with the fingerprint of `new`: the block
/// of `new` loaded for the compare feeds the fingerprint's products.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn change_map_fingerprint(
    new: &crate::Page,
    reference: &crate::Page,
    key: &crate::FingerprintKey,
) -> (crate::ChangeMap, u128) {
    let (n, r, k) = (new.as_ptr(), reference.as_ptr(), key.words().as_ptr());
    let mut bits = [0u64; crate::WORDS_PER_PAGE / 64];
    // SAFETY: block i reads 64 bytes at offset 64 * i < 4096 of both pages
    // and 16 words at word 16 * i (+ 2) <= 1026 - 16 of the key; loadu has
    // no alignment requirement; the caller guarantees the features.
    unsafe {
        let (mut a, mut b) = (_mm512_setzero_si512(), _mm512_setzero_si512());
        for (q, slot) in bits.iter_mut().enumerate() {
            let mut mask = 0u64;
            for j in 0..4 {
                let i = q * 4 + j;
                let x = _mm512_loadu_si512(n.add(64 * i) as *const __m512i);
                let y = _mm512_loadu_si512(r.add(64 * i) as *const __m512i);
                mask |= (_mm512_cmpneq_epi32_mask(x, y) as u64) << (16 * j);
                let k0 = _mm512_loadu_si512(k.add(16 * i) as *const __m512i);
                let k2 = _mm512_loadu_si512(k.add(16 * i + 2) as *const __m512i);
                let s = _mm512_add_epi32(x, k0);
                let t = _mm512_add_epi32(x, k2);
                a = _mm512_add_epi64(a, _mm512_mul_epu32(s, _mm512_srli_epi64::<32>(s)));
                b = _mm512_add_epi64(b, _mm512_mul_epu32(t, _mm512_srli_epi64::<32>(t)));
            }
            *slot = mask;
        }
        let fp = (_mm512_reduce_add_epi64(a) as u64 as u128) << 64
            | _mm512_reduce_add_epi64(b) as u64 as u128;
        (crate::ChangeMap(bits), fp)
    }
}
