//! The drop-in driven from C over every golden vector, as Xen's sender drove
//! libxc, at many output buffer sizes: byte-exact output, every page decoded
//! with `xc_compression_uncompress_page` (tests/c/xc_vectors.c says what the
//! program checks); and a C file that sees libxc's own declarations of the
//! API beside ckpt.h compiles, links and runs. Both link the static library.

mod common;

use common::{compile, run_ok, Link};
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;

/// Output buffer sizes: one that holds a whole batch, one page's worst case
/// and the bytes around it, around two and three worst cases, around
/// FULL-page multiples, powers of two, and a spread of others.
fn sizes() -> Vec<u64> {
    let worst = 4105u64;
    let full = 4097u64;
    let mut s = vec![
        64 << 20,
        worst,
        worst + 1,
        worst + 7,
        2 * worst - 1,
        2 * worst,
        2 * worst + 1,
        2 * full + worst - 1,
        3 * worst,
        16 << 10,
        64 << 10,
        1 << 20,
    ];
    // A fixed spread of sizes from 4105 to about 300 KB.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..6 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push(worst + x % 300_000);
    }
    s
}

fn vector_files() -> Vec<PathBuf> {
    let dir = common::crate_dir().join("../tests/vectors");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/vectors is readable")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".vec.zst"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 11, "all eleven vector files are present");
    files
}

#[test]
fn c_sender_loop_reproduces_every_vector_at_every_buffer_size() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let exe = compile("tests/c/xc_vectors.c", Link::Static, tmp.path());
    let sizes: Vec<String> = sizes().iter().map(u64::to_string).collect();
    let args: Vec<&str> = sizes.iter().map(String::as_str).collect();
    for file in vector_files() {
        // The C program reads the plain layout.
        let plain = tmp.path().join("vector");
        {
            let src = BufReader::new(std::fs::File::open(&file).expect("vector opens"));
            let mut dec = zstd::stream::read::Decoder::new(src).expect("zstd frame");
            dec.window_log_max(27).expect("window size");
            let mut out = BufWriter::new(std::fs::File::create(&plain).expect("temp file"));
            std::io::copy(&mut dec, &mut out).expect("vector decompresses");
        }
        let mut run_args = vec![plain.to_str().expect("utf-8 path")];
        run_args.extend(&args);
        let out = run_ok(&exe, &run_args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            stdout
                .lines()
                .filter(|l| l.ends_with("byte-exact and decoded"))
                .count(),
            sizes.len(),
            "{}: one report per size:\n{stdout}",
            file.display()
        );
        eprintln!("{}:\n{stdout}", file.display());
    }
}

#[test]
fn header_agrees_with_libxc_declarations() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let exe = compile("tests/c/libxc_decls.c", Link::Static, tmp.path());
    run_ok(&exe, &[]);
}
