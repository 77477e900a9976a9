//! Run-time kernel selection. All CPU-feature logic lives in
//! [`Kernel::is_available`]; a [`Codec`] value is proof that its kernel runs
//! on this CPU, so calling it needs no further check.

use crate::{scalar, ChangeMap, DecodeError, EncodeError, FingerprintKey, Page};
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;
use thiserror::Error;

/// A page-codec implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// The portable reference ([`crate::scalar`]).
    Scalar,
    /// x86_64 SSE2.
    Sse2,
    /// x86_64 AVX2.
    Avx2,
    /// x86_64 AVX-512 (F and BW).
    Avx512,
    /// aarch64 NEON.
    Neon,
}

/// The named kernel does not run on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("kernel {kernel} is not supported by this CPU")]
pub struct KernelUnavailable {
    /// The kernel that was asked for.
    pub kernel: Kernel,
}

/// A kernel name that names no kernel.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown kernel {name:?} (known: scalar, sse2, avx2, avx512, neon)")]
pub struct UnknownKernel {
    /// The name that was given.
    pub name: String,
}

impl Kernel {
    /// Every kernel, in order of preference (best last).
    pub const ALL: [Kernel; 5] = [
        Kernel::Scalar,
        Kernel::Sse2,
        Kernel::Neon,
        Kernel::Avx2,
        Kernel::Avx512,
    ];

    /// The name used on the command line and in the config.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Sse2 => "sse2",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512 => "avx512",
            Kernel::Neon => "neon",
        }
    }

    /// Whether this CPU runs the kernel. The one place that asks the CPU.
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Sse2 => std::arch::is_x86_feature_detected!("sse2"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
            }
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The best kernel this CPU runs.
    pub fn best() -> Kernel {
        *Kernel::ALL
            .iter()
            .rev()
            .find(|k| k.is_available())
            .unwrap_or(&Kernel::Scalar)
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kernel {
    type Err = UnknownKernel;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kernel::ALL
            .iter()
            .copied()
            .find(|k| k.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownKernel { name: s.into() })
    }
}

type EncodeFn = unsafe fn(&Page, &mut Page, &mut [u8]) -> Result<usize, EncodeError>;
type DecodeFn = unsafe fn(&[u8], &mut Page) -> Result<usize, DecodeError>;
type EqualFn = unsafe fn(&Page, &Page) -> bool;
type FloorFn = unsafe fn(&Page, &Page) -> u64;
type FingerprintFn = unsafe fn(&Page, &FingerprintKey) -> u128;
type ChangeMapFn = unsafe fn(&Page, &Page) -> ChangeMap;
type ChangeMapFingerprintFn = unsafe fn(&Page, &Page, &FingerprintKey) -> (ChangeMap, u128);
type EncodeChangesFn =
    unsafe fn(&ChangeMap, &Page, &mut Page, &mut [u8]) -> Result<usize, EncodeError>;

/// A page codec bound to one kernel that this CPU supports.
#[derive(Clone, Copy)]
pub struct Codec {
    kernel: Kernel,
    encode: EncodeFn,
    decode: DecodeFn,
    equal: EqualFn,
    floor: FloorFn,
    fingerprint: FingerprintFn,
    change_map: ChangeMapFn,
    change_map_fingerprint: ChangeMapFingerprintFn,
    encode_changes: EncodeChangesFn,
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Codec")
            .field("kernel", &self.kernel)
            .finish()
    }
}

fn scalar_equal(a: &Page, b: &Page) -> bool {
    a == b
}

fn scalar_floor(a: &Page, b: &Page) -> u64 {
    a.chunks_exact(8)
        .zip(b.chunks_exact(8))
        .fold(0, |acc, (x, y)| {
            let x = u64::from_ne_bytes(x.try_into().unwrap_or_default());
            let y = u64::from_ne_bytes(y.try_into().unwrap_or_default());
            acc | (x ^ y)
        })
}

impl Codec {
    /// A codec for `kernel`, or an error when this CPU lacks it.
    pub fn new(kernel: Kernel) -> Result<Codec, KernelUnavailable> {
        if !kernel.is_available() {
            return Err(KernelUnavailable { kernel });
        }
        #[allow(unused_macros)]
        macro_rules! table {
            ($m:path) => {{
                use $m as m;
                Codec {
                    kernel,
                    encode: m::encode,
                    decode: m::decode,
                    equal: m::pages_equal,
                    floor: m::read_floor,
                    fingerprint: m::fingerprint,
                    change_map: m::change_map,
                    change_map_fingerprint: m::change_map_fingerprint,
                    encode_changes: m::encode_changes,
                }
            }};
        }
        let codec = match kernel {
            Kernel::Scalar => Codec {
                kernel,
                encode: scalar::encode,
                decode: scalar::decode,
                equal: scalar_equal,
                floor: scalar_floor,
                fingerprint: crate::fingerprint::fingerprint,
                change_map: scalar::change_map,
                change_map_fingerprint: scalar::change_map_fingerprint,
                encode_changes: scalar::encode_changes,
            },
            #[cfg(target_arch = "x86_64")]
            Kernel::Sse2 => table!(crate::x86_64::sse2),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => table!(crate::x86_64::avx2),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => table!(crate::x86_64::avx512),
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => table!(crate::aarch64::neon),
            #[allow(unreachable_patterns)]
            _ => return Err(KernelUnavailable { kernel }),
        };
        Ok(codec)
    }

    /// The codec of the best kernel this CPU supports, chosen on first call.
    pub fn best() -> Codec {
        static BEST: OnceLock<Codec> = OnceLock::new();
        *BEST.get_or_init(|| Codec::new(Kernel::best()).expect("the best kernel is available"))
    }

    /// The kernel behind this codec.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Encodes `new` against `reference` into `out`; see [`scalar::encode`]
    /// for the contract (the bytes are identical for every kernel).
    #[inline]
    pub fn encode(
        &self,
        new: &Page,
        reference: &mut Page,
        out: &mut [u8],
    ) -> Result<usize, EncodeError> {
        // SAFETY: a Codec is only built by `new`, after is_available()
        // confirmed the CPU supports this kernel's features.
        unsafe { (self.encode)(new, reference, out) }
    }

    /// The encoder's first pass over `new` and `reference`: which words
    /// differ. Followed by [`Codec::encode_changes`] it gives exactly
    /// [`Codec::encode`]'s bytes.
    #[inline]
    pub fn change_map(&self, new: &Page, reference: &Page) -> ChangeMap {
        // SAFETY: as in `encode`.
        unsafe { (self.change_map)(new, reference) }
    }

    /// [`Codec::change_map`] and [`Codec::fingerprint`] of `new` in one
    /// pass over the pages: the fingerprint costs little more than the
    /// compare alone.
    #[inline]
    pub fn change_map_fingerprint(
        &self,
        new: &Page,
        reference: &Page,
        key: &FingerprintKey,
    ) -> (ChangeMap, u128) {
        // SAFETY: as in `encode`.
        unsafe { (self.change_map_fingerprint)(new, reference, key) }
    }

    /// Encodes `new` against `reference` from `map`, which must be
    /// `change_map(new, reference)` for the right bytes (any map gives a
    /// well-formed encoding within `out`). Same contract as `encode`.
    #[inline]
    pub fn encode_changes(
        &self,
        map: &ChangeMap,
        new: &Page,
        reference: &mut Page,
        out: &mut [u8],
    ) -> Result<usize, EncodeError> {
        // SAFETY: as in `encode`.
        unsafe { (self.encode_changes)(map, new, reference, out) }
    }

    /// Applies one page encoding; see [`scalar::decode`].
    #[inline]
    pub fn decode(&self, input: &[u8], page: &mut Page) -> Result<usize, DecodeError> {
        // SAFETY: as in `encode`.
        unsafe { (self.decode)(input, page) }
    }

    /// True when the two pages are byte-for-byte equal.
    #[inline]
    pub fn pages_equal(&self, a: &Page, b: &Page) -> bool {
        // SAFETY: as in `encode`.
        unsafe { (self.equal)(a, b) }
    }

    /// The page's fingerprint under `key` (see [`FingerprintKey`]): equal
    /// for equal pages, equal for different pages with a chance of at most
    /// 2^-64. The same for every kernel.
    #[inline]
    pub fn fingerprint(&self, page: &Page, key: &FingerprintKey) -> u128 {
        // SAFETY: as in `encode`.
        unsafe { (self.fingerprint)(page, key) }
    }

    /// Reads both pages fully and does nothing else: the memory floor that
    /// encoder throughput is measured against.
    #[inline]
    pub fn read_floor(&self, a: &Page, b: &Page) -> u64 {
        // SAFETY: as in `encode`.
        unsafe { (self.floor)(a, b) }
    }
}
