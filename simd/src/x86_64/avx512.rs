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
