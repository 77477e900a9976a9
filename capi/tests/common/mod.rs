//! Compiling and running the C programs of the tests against the library
//! cargo built for them: `libckpt.a` or `libckpt.so`, which cargo places in
//! the directory above the test executable's `deps/`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// How a C program links the library.
#[derive(Clone, Copy, Debug)]
pub enum Link {
    /// `libckpt.a` and the system libraries the Rust standard library needs.
    Static,
    /// `libckpt.so`, found at run time through the executable's rpath.
    Shared,
}

/// The directory holding `libckpt.a` and `libckpt.so`, built for these
/// tests. `cargo test` builds only the rlib of a library it tests, so the
/// first call builds the library's C artifacts with the profile and target
/// directory of the running test (`<target>/<profile dir>/deps/<test>`);
/// cargo only relinks what changed.
pub fn lib_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test knows its path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("tests run from <target>/<profile>/deps")
            .to_path_buf();
        let target_dir = profile_dir.parent().expect("a target directory");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "ckpt-capi",
            "--lib",
            "--target-dir",
        ])
        .arg(target_dir)
        .current_dir(crate_dir());
        match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("release") => cmd.arg("--release"),
            _ => cmd.args(["--profile", "test"]),
        };
        let status = cmd.status().expect("cargo runs");
        assert!(status.success(), "building libckpt failed: {status}");
        for lib in ["libckpt.a", "libckpt.so"] {
            assert!(
                profile_dir.join(lib).exists(),
                "{} is missing after the build",
                profile_dir.join(lib).display()
            );
        }
        profile_dir
    })
    .clone()
}

/// The crate's directory.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Compiles the C file `source` (relative to the crate) into an executable
/// in `out_dir`, linked as `link` says, with every warning an error.
pub fn compile(source: &str, link: Link, out_dir: &Path) -> PathBuf {
    let target = env!("CKPT_CAPI_TARGET");
    let compiler = cc::Build::new()
        .target(target)
        .host(target)
        .opt_level(2)
        .debug(false)
        .cargo_metadata(false)
        .try_get_compiler()
        .expect("a C compiler for the target");
    let src = crate_dir().join(source);
    let name = Path::new(source)
        .file_stem()
        .expect("a file name")
        .to_string_lossy()
        .into_owned();
    let exe = out_dir.join(format!("{name}-{link:?}").to_lowercase());
    let lib = lib_dir();
    let mut cmd = compiler.to_command();
    cmd.args([
        "-std=c11",
        "-D_POSIX_C_SOURCE=200809L",
        "-Wall",
        "-Wextra",
        "-Werror",
    ])
    .arg("-I")
    .arg(crate_dir().join("include"))
    .arg(&src)
    .arg("-o")
    .arg(&exe);
    match link {
        Link::Static => {
            // What `rustc --print native-static-libs` lists for a staticlib
            // on Linux with glibc.
            cmd.arg(lib.join("libckpt.a")).args([
                "-lgcc_s",
                "-lutil",
                "-lrt",
                "-lpthread",
                "-lm",
                "-ldl",
            ]);
        }
        Link::Shared => {
            cmd.arg("-L")
                .arg(&lib)
                .arg("-lckpt")
                .arg(format!("-Wl,-rpath,{}", lib.display()))
                .arg("-lpthread");
        }
    }
    let out = cmd.output().expect("the C compiler runs");
    assert!(
        out.status.success(),
        "compiling {} failed:\n{}{}",
        src.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// Runs `exe` with `args`; panics with its output unless it exits with 0.
pub fn run_ok(exe: &Path, args: &[&str]) -> Output {
    let out = Command::new(exe)
        .args(args)
        .output()
        .expect("the program starts");
    assert!(
        out.status.success(),
        "{} {:?} failed ({}):\n{}{}",
        exe.display(),
        args,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
