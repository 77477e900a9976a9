//! The tool's conventions, run as a user runs it: exit statuses (0 done, 1
//! the job failed, 2 bad usage), errors that name the file and the
//! operation, a closed pipe that ends quietly, a full device that is an
//! error, one JSON document per `--json`, and the bundled data found by an
//! executable with no source tree beside it.

use std::path::PathBuf;

mod common;
use common::write_trace;
use std::process::{Command, Output, Stdio};

const CKPT: &str = env!("CARGO_BIN_EXE_ckpt");

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ckpt-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn ckpt(args: &[&str]) -> Output {
    Command::new(CKPT).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bad_usage_exits_2_and_says_what_is_allowed() {
    let o = ckpt(&["bench", "--kernel", "nosuch"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("possible values: scalar, sse2"),
        "{}",
        stderr(&o)
    );

    let o = ckpt(&["kernels", "--bench", "--density", "150"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("0..=100"), "{}", stderr(&o));

    let o = ckpt(&["kernels", "--mib", "8"]);
    assert_eq!(o.status.code(), Some(2), "--mib without --bench");

    let dir = temp_dir("usage");
    let config = dir.join("c.toml");
    std::fs::write(&config, "[engine]\ncache_pages = 0\n").unwrap();
    let o = ckpt(&["--config", config.to_str().unwrap(), "kernels"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("engine.cache_pages = 0 is outside 1..="), "{e}");
    assert!(e.contains(config.to_str().unwrap()), "{e}");

    let help = ckpt(&["restore", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("[possible values: scalar, sse2"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn errors_name_the_file_and_the_operation_and_exit_1() {
    let dir = temp_dir("errors");
    let missing = dir.join("missing");
    let m = missing.to_str().unwrap();
    let image = dir.join("img");
    for (args, says) in [
        (
            vec!["inspect", m],
            format!("cannot inspect stream {m}: No such file"),
        ),
        (
            vec!["restore", m, "--image", image.to_str().unwrap()],
            format!("cannot restore stream {m}"),
        ),
        (
            vec!["compress", "--trace", m, "-o", image.to_str().unwrap()],
            format!("cannot open trace {m}: No such file"),
        ),
        (
            vec!["conformance", m],
            format!("cannot list vector folder {m}: No such file"),
        ),
        (
            vec!["bench", "--trace", m],
            format!("cannot benchmark {m}: No such file"),
        ),
    ] {
        let o = ckpt(&args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {e}");
        assert!(e.starts_with("ckpt: "), "{e}");
        assert!(e.contains(&says), "{args:?}: {e}");
        // The cause is said once, the file named once.
        assert_eq!(e.matches("No such file").count(), 1, "{e}");
        assert_eq!(e.matches(m).count(), 1, "{e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_refuses_a_trace_with_nothing_to_measure() {
    let dir = temp_dir("empty");
    let trace = dir.join("image-only.trace");
    write_trace(&trace, 8, 0, 0);
    let o = ckpt(&["bench", "--trace", trace.to_str().unwrap()]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("nothing to measure"), "{e}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!out.contains("NaN") && !out.contains("verified"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn json_is_one_document_with_numbers() {
    let dir = temp_dir("json");
    let trace = dir.join("tiny.trace");
    write_trace(&trace, 64, 6, 10);
    let o = ckpt(&["bench", "--json", "--trace", trace.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON document");
    let t = &doc["traces"][0];
    assert_eq!(t["checkpoints"], 6);
    assert_eq!(t["verified"], true);
    assert!(t["ratio"].as_f64().unwrap() > 1.0);
    assert!(t["ratio_with_initial_image"].as_f64().unwrap() < t["ratio"].as_f64().unwrap());
    let series = t["series"].as_array().unwrap();
    assert_eq!(series.len(), 7, "the initial image and six checkpoints");
    assert_eq!(series[0]["full_pages"], 64);
    let sent: u64 = series[1..]
        .iter()
        .map(|c| c["output_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(sent, t["output_bytes"].as_u64().unwrap());
    // Six samples: a median and a maximum, no p90 or p99.
    assert_eq!(t["stage_ms"]["samples"], 6);
    assert!(t["stage_ms"].get("p99_ms").is_none());

    let stream = dir.join("s.ckpt");
    let o = ckpt(&[
        "compress",
        "--json",
        "--trace",
        trace.to_str().unwrap(),
        "-o",
        stream.to_str().unwrap(),
    ]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON document");
    assert_eq!(doc["checkpoints"], 7);
    assert_eq!(
        doc["ratios"]["total_output_bytes"].as_u64().unwrap(),
        std::fs::metadata(&stream).unwrap().len()
    );
    for args in [
        vec!["inspect", "--json", stream.to_str().unwrap()],
        vec!["kernels", "--json"],
    ] {
        let o = ckpt(&args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).expect("one JSON document");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_closed_pipe_ends_quietly_and_a_full_device_is_an_error() {
    let dir = temp_dir("pipe");
    let trace = dir.join("long.trace");
    // Enough checkpoints that the listing outgrows a pipe's buffer.
    write_trace(&trace, 16, 3000, 2);
    let stream = dir.join("long.ckpt");
    let o = ckpt(&[
        "compress",
        "--trace",
        trace.to_str().unwrap(),
        "-o",
        stream.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    let mut child = Command::new(CKPT)
        .args(["inspect", stream.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 64];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    drop(child.stdout.take()); // the reader goes away, as `head` does
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stderr(&o), "");

    let full = std::fs::OpenOptions::new().write(true).open("/dev/full");
    if let Ok(full) = full {
        let o = Command::new(CKPT)
            .args(["inspect", stream.to_str().unwrap()])
            .stdout(full)
            .output()
            .unwrap();
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{e}");
        assert!(
            e.contains("cannot write to standard output: No space left"),
            "{e}"
        );
        assert!(!e.contains("panicked"), "{e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `cargo install` puts the executable alone in a folder; a clone may be
/// deleted. A copy of the executable in a fresh folder, with no trace
/// folder near it, still runs `demo` and `bench` on the redis trace it
/// carries; with a `traces/` folder beside it, that folder is used.
#[test]
fn an_executable_without_its_source_tree_runs_demo_and_bench() {
    let dir = temp_dir("installed");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let exe = bin.join("ckpt");
    std::fs::copy(CKPT, &exe).unwrap();
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let run = |args: &[&str]| {
        Command::new(&exe)
            .args(args)
            .current_dir(&dir)
            .env_remove("CKPT_TRACES")
            .env_remove("CKPT_CONFIG")
            .env("TMPDIR", &tmp)
            .output()
            .unwrap()
    };
    let o = run(&["demo"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.contains("redis.trace replicated"), "{out}");
    assert!(
        out.contains(tmp.to_str().unwrap()),
        "the built-in trace: {out}"
    );
    assert!(out.contains("verified: every page of the backup equals the trace's"));

    let o = run(&["bench", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["traces"][0]["verified"], true);
    assert!(doc["traces"][0]["workload"]
        .as_str()
        .unwrap()
        .starts_with("redis-server"));

    // A traces/ folder beside the executable comes first.
    std::fs::create_dir_all(bin.join("traces")).unwrap();
    write_trace(&bin.join("traces/tiny.trace"), 32, 3, 4);
    let o = run(&["bench", "--all", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let traces = doc["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 1);
    assert!(traces[0]["trace"]
        .as_str()
        .unwrap()
        .ends_with("bin/traces/tiny.trace"));
    let _ = std::fs::remove_dir_all(&dir);
}
