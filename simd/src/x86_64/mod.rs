//! x86_64 instantiations of the generic algorithm.
pub(crate) mod avx2;
pub(crate) mod avx512;
pub(crate) mod sse2;
