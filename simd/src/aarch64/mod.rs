//! aarch64 instantiations of the generic algorithm.
pub(crate) mod neon;
