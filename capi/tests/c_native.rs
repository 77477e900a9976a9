//! The native API from C (tests/c/native_stream.c says what it checks),
//! linked against the shared library, and the two C examples, each compiled
//! and run with the output they promise checked.

mod common;

use common::{compile, run_ok, Link};

#[test]
fn native_sender_and_receiver_from_c() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let exe = compile("tests/c/native_stream.c", Link::Shared, tmp.path());
    let out = run_ok(&exe, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(stdout.contains("pipe: 7 checkpoints of a 700-page guest applied and checked"));
    assert_eq!(
        stdout.matches("memory holds the checkpoint before").count(),
        3
    );
    assert!(stdout.contains("file: 8 checkpoints"));
}

#[test]
fn xc_sender_example_runs() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let exe = compile("examples/xc_sender.c", Link::Static, tmp.path());
    let out = run_ok(&exe, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "one line per checkpoint:\n{stdout}");
    assert!(
        lines.iter().all(|l| l.ends_with("backup matches")),
        "{stdout}"
    );
    assert!(
        lines[0].starts_with("checkpoint 0: 64 pages in "),
        "{stdout}"
    );
}

#[test]
fn stream_example_runs() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let exe = compile("examples/stream.c", Link::Shared, tmp.path());
    let file = tmp.path().join("guest.ckpt");
    let out = run_ok(&exe, &[file.to_str().expect("utf-8 path")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert_eq!(stdout.matches("checkpoint ").count(), 5, "{stdout}");
    assert!(
        stdout.contains("checkpoint 0: 256 pages (256 whole"),
        "{stdout}"
    );
    let last = stdout
        .lines()
        .find(|l| l.starts_with("checkpoint 4:"))
        .expect("checkpoint 4");
    assert!(
        !last.contains(" 0 deltas"),
        "pages sent again go as deltas: {last}"
    );
    assert!(stdout.ends_with("backup matches the primary\n"), "{stdout}");
}
