//! The `ckpt` command-line tool's library: everything the subcommands do, so
//! that integration tests and benchmarks call the same code.
#![deny(missing_docs)]

pub mod bench;
pub mod conformance;
pub mod demo;
mod error;
pub mod kernels;
pub mod pipeline_bench;
#[cfg(target_os = "linux")]
pub mod record_cmd;
pub mod stream_cmd;
pub mod vectors;

pub use error::{Error, Result};

use ckpt_engine::config::Config;
use ckpt_simd::{Codec, Kernel};

/// The folder of the bundled traces.
pub fn traces_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("traces")
}

/// The bundled traces, sorted by name.
pub fn bundled_traces() -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(traces_dir())
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "trace"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The codec a run uses: the kernel forced by name (command line first, then
/// the config), or the best this CPU supports. Forcing a kernel the CPU
/// lacks is an error, never a silent fallback.
pub fn select_codec(cli: Option<&str>, config: &Config) -> Result<Codec> {
    let name = cli.unwrap_or(&config.engine.kernel);
    if name.eq_ignore_ascii_case("auto") {
        return Ok(Codec::best());
    }
    let kernel: Kernel = name.parse()?;
    Ok(Codec::new(kernel)?)
}
