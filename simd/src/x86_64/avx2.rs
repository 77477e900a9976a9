//! AVX2: two 32-byte compares per 64-byte block.
use crate::generic::{entry_points, Isa};
use core::arch::x86_64::*;

pub(crate) struct Avx2;

impl Isa for Avx2 {
    #[inline(always)]
    unsafe fn block_diff(a: *const u8, b: *const u8) -> u16 {
        // SAFETY: the caller guarantees 64 readable bytes at `a` and `b` and
        // AVX2 support; loadu has no alignment requirement.
        unsafe {
            let x0 = _mm256_loadu_si256(a as *const __m256i);
            let y0 = _mm256_loadu_si256(b as *const __m256i);
            let x1 = _mm256_loadu_si256(a.add(32) as *const __m256i);
            let y1 = _mm256_loadu_si256(b.add(32) as *const __m256i);
            let e0 = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(x0, y0))) as u32;
            let e1 = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(x1, y1))) as u32;
            !(e0 | e1 << 8) as u16
        }
    }
}

entry_points!(Avx2, "avx2");

/// Page fingerprint (see `crate::fingerprint`): eight 32x32->64 products
/// per 256-bit step, two keys.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn fingerprint(page: &crate::Page, key: &crate::FingerprintKey) -> u128 {
    let (p, k) = (page.as_ptr(), key.words().as_ptr());
    // SAFETY: every load reads 32 bytes at offset 32 * i < 4096 of the page
    // and 8 words at word 8 * i (+ 2) <= 1024 + 2 - 8 of the key (1026
    // words); loadu has no alignment requirement; the caller guarantees AVX2.
    unsafe {
        let (mut a, mut b) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        for i in 0..crate::PAGE_SIZE / 32 {
            let m = _mm256_loadu_si256(p.add(32 * i) as *const __m256i);
            let k0 = _mm256_loadu_si256(k.add(8 * i) as *const __m256i);
            let k2 = _mm256_loadu_si256(k.add(8 * i + 2) as *const __m256i);
            let s = _mm256_add_epi32(m, k0);
            let t = _mm256_add_epi32(m, k2);
            a = _mm256_add_epi64(a, _mm256_mul_epu32(s, _mm256_srli_epi64::<32>(s)));
            b = _mm256_add_epi64(b, _mm256_mul_epu32(t, _mm256_srli_epi64::<32>(t)));
        }
        let mut la = [0u64; 4];
        let mut lb = [0u64; 4];
        _mm256_storeu_si256(la.as_mut_ptr() as *mut __m256i, a);
        _mm256_storeu_si256(lb.as_mut_ptr() as *mut __m256i, b);
        let fold = |v: [u64; 4]| v.iter().fold(0u64, |s, &x| s.wrapping_add(x));
        (fold(la) as u128) << 64 | fold(lb) as u128
    }
}

/// The encoder's first pass fused with the fingerprint of `new`: the two
/// 32-byte halves of each block of `new`, loaded for the compare, feed the
/// fingerprint's products while the reference's loads are outstanding.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn change_map_fingerprint(
    new: &crate::Page,
    reference: &crate::Page,
    key: &crate::FingerprintKey,
) -> (crate::ChangeMap, u128) {
    let (n, r, k) = (new.as_ptr(), reference.as_ptr(), key.words().as_ptr());
    let mut bits = [0u64; crate::WORDS_PER_PAGE / 64];
    // SAFETY: half h of block i reads 32 bytes at offset 64 * i + 32 * h <
    // 4096 of both pages and 8 words at word 16 * i + 8 * h (+ 2) <=
    // 1026 - 8 of the key; loadu has no alignment requirement; the caller
    // guarantees AVX2.
    unsafe {
        let (mut a, mut b) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        for (q, slot) in bits.iter_mut().enumerate() {
            let mut mask = 0u64;
            for j in 0..4 {
                let i = q * 4 + j;
                let mut eq = 0u32;
                for h in 0..2 {
                    let at = 64 * i + 32 * h;
                    let x = _mm256_loadu_si256(n.add(at) as *const __m256i);
                    let y = _mm256_loadu_si256(r.add(at) as *const __m256i);
                    let e = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(x, y)));
                    eq |= (e as u32) << (8 * h);
                    let w = 16 * i + 8 * h;
                    let k0 = _mm256_loadu_si256(k.add(w) as *const __m256i);
                    let k2 = _mm256_loadu_si256(k.add(w + 2) as *const __m256i);
                    let s = _mm256_add_epi32(x, k0);
                    let t = _mm256_add_epi32(x, k2);
                    a = _mm256_add_epi64(a, _mm256_mul_epu32(s, _mm256_srli_epi64::<32>(s)));
                    b = _mm256_add_epi64(b, _mm256_mul_epu32(t, _mm256_srli_epi64::<32>(t)));
                }
                mask |= (!eq as u16 as u64) << (16 * j);
            }
            *slot = mask;
        }
        let mut la = [0u64; 4];
        let mut lb = [0u64; 4];
        _mm256_storeu_si256(la.as_mut_ptr() as *mut __m256i, a);
        _mm256_storeu_si256(lb.as_mut_ptr() as *mut __m256i, b);
        let fold = |v: [u64; 4]| v.iter().fold(0u64, |s, &x| s.wrapping_add(x));
        let fp = (fold(la) as u128) << 64 | fold(lb) as u128;
        (crate::ChangeMap(bits), fp)
    }
}
