//! The `ckpt` command-line tool's library: everything the subcommands do, so
//! that integration tests and benchmarks call the same code.
#![deny(missing_docs)]

pub mod conformance;
pub mod vectors;
