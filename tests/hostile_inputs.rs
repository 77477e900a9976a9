//! The hostile inputs of SECURITY.md through the `ckpt` binary, each in a
//! child process of its own: every one ends with exit status 0, 1 or 2 and
//! a message (no panic, abort or signal), within a time limit (no hang),
//! and with a peak resident memory within SECURITY.md's bound: the
//! configured limits it may use, plus 64 MiB.
//!
//! The peak is the child's own (`getrusage(RUSAGE_CHILDREN)` in a process
//! that runs nothing else: this test binary, run again as a wrapper).
#![cfg(target_os = "linux")]

use ckpt_lab::hostile::*;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
/// What the bound allows over the configured limits.
const SLACK: u64 = 64 * MIB;
/// The configured limits: `max_checkpoint_bytes`, and the guest.
const CHECKPOINT: u64 = 8 * MIB;
const GUEST_PAGES: u64 = 4096;
const CONFIG: &str = "\
[engine]
threads = 1
cache_pages = 256
ring_pages = 256
[receiver]
max_chunk_bytes = 4194304
max_checkpoint_bytes = 8388608
max_checkpoint_entries = 16384
max_toolstack_chunks = 1024
max_guest_pages = 4096
";
/// Longest a probe may run: none needs more than a few seconds.
const TIME_LIMIT: Duration = Duration::from_secs(120);

/// How a child ended.
struct Outcome {
    status: String,
    code: Option<i32>,
    peak: u64,
    stderr: String,
}

/// The wrapper: runs the command in `CKPT_MEASURE` (arguments separated by
/// 0x1f), feeding it the endless toolstack flood on standard input when
/// `CKPT_MEASURE_FLOOD` is set, and prints its status and peak memory.
#[test]
fn measure_helper() {
    let Ok(spec) = std::env::var("CKPT_MEASURE") else {
        return; // only meaningful as the wrapper of `measure`
    };
    let args: Vec<&str> = spec.split('\u{1f}').collect();
    let flood = std::env::var_os("CKPT_MEASURE_FLOOD").is_some();
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(if flood { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let feeder = child.stdin.take().map(|mut stdin| {
        std::thread::spawn(move || {
            // Ends when the child closes the pipe (or after 1 GiB).
            let _ = std::io::copy(&mut ToolstackFlood::new().take(1 << 30), &mut stdin);
        })
    });
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if started.elapsed() > TIME_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if let Some(f) = feeder {
        let _ = f.join();
    }
    let peak = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage")
        .max_rss() as u64
        * 1024;
    println!("CKPT_MEASURE {} {peak}", describe(status));
}

fn describe(status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        None => "hang".into(),
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit:{c}"),
            (None, Some(sig)) => format!("signal:{sig}"),
            _ => "unknown".into(),
        },
    }
}

/// Runs `ckpt` with the test configuration and `args` in a wrapper.
fn measure(dir: &Path, args: &[&str], flood: bool) -> Outcome {
    let config = dir.join("probe.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let mut spec = vec![env!("CARGO_BIN_EXE_ckpt").to_string()];
    if !args.contains(&"--config") {
        spec.extend(["--config".into(), config.display().to_string()]);
    }
    spec.extend(args.iter().map(|a| a.to_string()));
    let mut wrapper = Command::new(std::env::current_exe().unwrap());
    wrapper
        .args([
            "--exact",
            "measure_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CKPT_MEASURE", spec.join("\u{1f}"));
    if flood {
        wrapper.env("CKPT_MEASURE_FLOOD", "1");
    }
    let out = wrapper.output().expect("wrapper runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("CKPT_MEASURE ").map(|x| x.1))
        .unwrap_or_else(|| panic!("no measurement from the wrapper: {stdout}"));
    let (status, peak) = line.split_once(' ').unwrap();
    Outcome {
        code: status.strip_prefix("exit:").and_then(|c| c.parse().ok()),
        status: status.to_string(),
        peak: peak.parse().unwrap(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// One probe: the expected exit status, the text its message holds, and
/// the memory bound.
fn probe(dir: &Path, name: &str, args: &[&str], code: i32, says: &str, bound: u64) {
    probe_with(dir, name, args, false, code, says, bound)
}

fn probe_with(
    dir: &Path,
    name: &str,
    args: &[&str],
    flood: bool,
    code: i32,
    says: &str,
    bound: u64,
) {
    let o = measure(dir, args, flood);
    eprintln!(
        "{name}: {}, peak {} MiB (bound {} MiB)",
        o.status,
        o.peak / MIB,
        bound / MIB
    );
    assert_eq!(o.code, Some(code), "{name}: {}\n{}", o.status, o.stderr);
    assert!(o.stderr.contains(says), "{name}: says\n{}", o.stderr);
    assert!(
        o.peak <= bound,
        "{name}: peak {} bytes, over the bound of {bound}",
        o.peak
    );
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn hostile_streams() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let image = d.join("image");
    let huge = write(d, "huge.stream", &stream_huge_guest());
    probe(
        d,
        "restore of an 80-byte stream claiming 1 TiB",
        &["restore", s(&huge), "--image", s(&image)],
        1,
        "max_guest_pages",
        SLACK,
    );
    assert!(!image.exists(), "no image is created for a refused stream");
    probe(
        d,
        "the same with --guest-pages 16",
        &[
            "restore",
            s(&huge),
            "--image",
            s(&image),
            "--guest-pages",
            "16",
        ],
        1,
        "more than the 16 pages",
        SLACK,
    );
    assert!(!image.exists());

    let mut flood = Vec::new();
    ToolstackFlood::new()
        .take(16 << 20)
        .read_to_end(&mut flood)
        .unwrap();
    let flood = write(d, "flood.stream", &flood);
    probe(
        d,
        "inspect of 16 MB of toolstack chunks",
        &["inspect", s(&flood)],
        1,
        "toolstack chunks",
        CHECKPOINT + SLACK,
    );
    probe_with(
        d,
        "restore of an endless stream of toolstack chunks",
        &["restore", "/dev/stdin", "--image", s(&image)],
        true,
        1,
        "toolstack chunks",
        CHECKPOINT + SLACK,
    );

    let empty = d.join("empty.stream");
    let f = BufWriter::new(std::fs::File::create(&empty).unwrap());
    write_empty_checkpoints(f, 200_000)
        .unwrap()
        .flush()
        .unwrap();
    probe(
        d,
        "inspect of 200,000 empty checkpoints",
        &["inspect", s(&empty)],
        0,
        "",
        SLACK,
    );
    std::fs::remove_file(&image).unwrap();
    probe(
        d,
        "restore of 200,000 empty checkpoints",
        &["restore", s(&empty), "--image", s(&image)],
        0,
        "",
        SLACK,
    );
    std::fs::remove_file(&image).unwrap();

    // Checkpoints exactly at max_checkpoint_bytes are read; the receiver
    // holds one checkpoint and the guest (in memory, or the mapped image).
    let pages = CHECKPOINT / 4096;
    let full = d.join("full.stream");
    let f = BufWriter::new(std::fs::File::create(&full).unwrap());
    write_full_checkpoints(f, pages, 3)
        .unwrap()
        .flush()
        .unwrap();
    probe(
        d,
        "inspect of checkpoints at the limit",
        &["inspect", s(&full)],
        0,
        "",
        CHECKPOINT + pages * 4096 + SLACK,
    );
    probe(
        d,
        "restore of checkpoints at the limit",
        &["restore", s(&full), "--image", s(&image)],
        0,
        "",
        CHECKPOINT + pages * 4096 + SLACK,
    );
    std::fs::remove_file(&image).unwrap();
    let over = d.join("over.stream");
    let f = BufWriter::new(std::fs::File::create(&over).unwrap());
    write_full_checkpoints(f, 2 * pages, 1)
        .unwrap()
        .flush()
        .unwrap();
    probe(
        d,
        "inspect of a checkpoint twice the limit",
        &["inspect", s(&over)],
        1,
        "exceeds 8388608 bytes",
        CHECKPOINT + 2 * pages * 4096 + SLACK,
    );
    let chunk = write(d, "chunk.stream", &stream_claimed_chunk(4 << 20));
    probe(
        d,
        "restore of a stream claiming a 4 MiB chunk and sending 3 bytes",
        &["restore", s(&chunk), "--image", s(&image)],
        1,
        "truncated",
        SLACK,
    );
}

#[test]
fn hostile_traces_vectors_and_configs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out.stream");
    // The guest a trace may claim and the pages an epoch may carry follow
    // the receiver limits: 4096 pages, 2048 pages.
    for (name, bytes, says) in [
        (
            "a trace whose epoch claims 2^32 - 1 pages",
            trace_claimed_epoch(),
            "4294967295 pages in one epoch",
        ),
        (
            "a trace of 4096 distinct pages in one epoch",
            trace_wide_epoch(GUEST_PAGES),
            "4096 pages in one epoch",
        ),
        (
            "a trace of a 2^28-page guest",
            trace_wide_guest(1 << 28, 4, 1024),
            "max_guest_pages",
        ),
        (
            "a trace listing one PFN 1000 times",
            trace_duplicates(1000),
            "twice in one epoch",
        ),
    ] {
        let t = write(d, "t.trace", &bytes);
        probe(
            d,
            name,
            &["compress", "--trace", s(&t), "-o", s(&out)],
            1,
            says,
            SLACK,
        );
    }

    // conformance keeps the original's 8192-page cache and ring (64 MiB).
    let vectors = d.join("vectors");
    std::fs::create_dir(&vectors).unwrap();
    let v = write(&vectors, "x.vec.zst", &vector_many_records(1 << 18));
    probe(
        d,
        "a vector file of 2^18 pages (1 GiB)",
        &["conformance", s(&vectors)],
        1,
        "records 262144 exceeds the limit",
        64 * MIB + SLACK,
    );
    std::fs::write(&v, vector_big_outputs(1, 100 << 20)).unwrap();
    probe(
        d,
        "a vector file with a 100 MiB output",
        &["conformance", s(&vectors)],
        1,
        "output bytes",
        64 * MIB + SLACK,
    );

    let big = write(d, "big.toml", "#".repeat(2 << 20).as_bytes());
    for config in ["/dev/zero", s(&big)] {
        let o = measure(d, &["--config", config, "kernels"], false);
        assert_eq!(o.code, Some(2), "{config}: {}", o.stderr);
        assert!(
            o.stderr.contains("larger than 1048576 bytes"),
            "{}",
            o.stderr
        );
        assert!(o.peak <= SLACK, "{config}: peak {}", o.peak);
    }
}

/// A full disk during `restore` is an I/O error naming the image, not a
/// SIGBUS: a 4 MiB checkpoint onto a 1 MiB tmpfs, mounted in a user and
/// mount namespace of its own (skipped where those are not allowed).
#[test]
fn a_full_disk_is_an_error_naming_the_image() {
    let allowed = Command::new("unshare")
        .args(["-Urm", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !allowed {
        eprintln!("SKIPPED: no user namespaces to mount a small tmpfs in");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = write(d, "probe.toml", CONFIG.as_bytes());
    let stream = d.join("four-mib.stream");
    let f = BufWriter::new(std::fs::File::create(&stream).unwrap());
    write_full_checkpoints(f, 1024, 1).unwrap().flush().unwrap();
    let small = d.join("small");
    std::fs::create_dir(&small).unwrap();
    let out = Command::new("unshare")
        .args([
            "-Urm",
            "sh",
            "-c",
            r#"mount -t tmpfs -o size=1M tmpfs "$0" && exec "$1" --config "$2" restore "$3" --image "$0/img""#,
        ])
        .args([&small, Path::new(env!("CARGO_BIN_EXE_ckpt")), &config, &stream])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{:?}: {stderr}", out.status);
    let expected = format!("{}: No space left on device", small.join("img").display());
    assert!(stderr.contains(&expected), "{stderr}");
}
