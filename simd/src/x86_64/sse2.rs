//! SSE2: four 16-byte compares per 64-byte block.
use crate::generic::{entry_points, Isa};
use core::arch::x86_64::*;

pub(crate) struct Sse2;

impl Isa for Sse2 {
    #[inline(always)]
    unsafe fn block_diff(a: *const u8, b: *const u8) -> u16 {
        // SAFETY: the caller guarantees 64 readable bytes at `a` and `b` and
        // SSE2 support; loadu has no alignment requirement.
        unsafe {
            let mut eq = 0u32;
            for k in 0..4 {
                let x = _mm_loadu_si128(a.add(16 * k) as *const __m128i);
                let y = _mm_loadu_si128(b.add(16 * k) as *const __m128i);
                let m = _mm_movemask_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(x, y))) as u32;
                eq |= m << (4 * k);
            }
            !eq as u16
        }
    }
}

entry_points!(Sse2, "sse2");
crate::generic::generic_change_map_fingerprint!(Sse2, "sse2");
crate::fingerprint::generic_fingerprint!("sse2");
