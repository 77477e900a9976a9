//! NEON: four 16-byte compares per 64-byte block, narrowed to one byte per
//! word and folded into a 16-bit mask (NEON has no movemask).
use crate::generic::{entry_points, Isa};
use core::arch::aarch64::*;

pub(crate) struct Neon;

impl Isa for Neon {
    #[inline(always)]
    unsafe fn block_diff(a: *const u8, b: *const u8) -> u16 {
        // SAFETY: the caller guarantees 64 readable bytes at `a` and `b` and
        // NEON support; vld1q has no alignment requirement.
        unsafe {
            let eq = |k: usize| {
                vceqq_u32(
                    vld1q_u32(a.add(16 * k) as *const u32),
                    vld1q_u32(b.add(16 * k) as *const u32),
                )
            };
            // 0xFFFFFFFF per equal word -> 0xFF per equal word, 16 lanes.
            let lo = vcombine_u16(vmovn_u32(eq(0)), vmovn_u32(eq(1)));
            let hi = vcombine_u16(vmovn_u32(eq(2)), vmovn_u32(eq(3)));
            let bytes = vcombine_u8(vmovn_u16(lo), vmovn_u16(hi));
            const BITS: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
            let weighted = vandq_u8(bytes, vld1q_u8(BITS.as_ptr()));
            let low = vaddv_u8(vget_low_u8(weighted)) as u16;
            let high = vaddv_u8(vget_high_u8(weighted)) as u16;
            !(low | high << 8)
        }
    }
}

entry_points!(Neon, "neon");
crate::generic::generic_change_map_fingerprint!(Neon, "neon");
crate::fingerprint::generic_fingerprint!("neon");
