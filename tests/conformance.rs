//! The golden vectors, byte for byte, through every kernel this CPU runs and
//! through the parallel path.

use ckpt_lab::conformance::{run_case, vector_files};
use ckpt_simd::{Codec, Kernel};
use std::path::Path;

fn vectors() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let files = vector_files(&dir).expect("tests/vectors is readable");
    assert_eq!(files.len(), 11, "all eleven vector files are present");
    files
}

fn check_all(codec: Codec, threads: usize) {
    for f in vectors() {
        let r = run_case(&f, codec, threads).expect("vector file reads");
        assert!(
            r.failure.is_none(),
            "{} with {} on {threads} thread(s): {}",
            r.name,
            codec.kernel(),
            r.failure.unwrap()
        );
    }
}

#[test]
fn every_supported_kernel_reproduces_the_vectors() {
    for kernel in Kernel::ALL {
        match Codec::new(kernel) {
            Ok(codec) => check_all(codec, 1),
            Err(_) => eprintln!("kernel {kernel}: SKIPPED (not supported by this CPU)"),
        }
    }
}

#[test]
fn parallel_compression_reproduces_the_vectors() {
    check_all(Codec::best(), 2);
    check_all(Codec::best(), 5);
}
