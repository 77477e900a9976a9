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
