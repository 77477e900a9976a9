//! The configuration as a user meets it: flag over environment over file
//! over default, `config show --json` saying where each value came from,
//! errors naming the key, the value, the range and the origin, the default
//! file locations, and `ckpt tune` writing a file `--config` accepts.

use serde_json::Value;
use std::path::{Path, PathBuf};

mod common;
use common::write_trace;
use std::process::{Command, Output};

const CKPT: &str = env!("CARGO_BIN_EXE_ckpt");

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ckpt-config-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs ckpt with no CKPT_* variables but those given, and with the
/// default file looked for under `xdg` only.
fn ckpt(xdg: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(CKPT);
    for (k, _) in std::env::vars() {
        if k.starts_with("CKPT_") {
            c.env_remove(k);
        }
    }
    c.env("XDG_CONFIG_HOME", xdg).envs(env.iter().copied());
    c.args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `ckpt GLOBAL config show --json FLAGS`, as (key, value, origin kind,
/// origin name).
fn show(
    xdg: &Path,
    env: &[(&str, &str)],
    global: &[&str],
    flags: &[&str],
) -> Vec<(String, Value, String, String)> {
    let mut all = global.to_vec();
    all.extend(["config", "show", "--json"]);
    all.extend(flags);
    let o = ckpt(xdg, env, &all);
    assert!(o.status.success(), "{all:?}: {}", stderr(&o));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    doc["settings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["key"].as_str().unwrap().to_string(),
                s["value"].clone(),
                s["origin"]["kind"].as_str().unwrap().to_string(),
                s["origin"]["name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn get<'a>(
    s: &'a [(String, Value, String, String)],
    key: &str,
) -> &'a (String, Value, String, String) {
    s.iter()
        .find(|e| e.0 == key)
        .unwrap_or_else(|| panic!("no {key}"))
}

#[test]
fn flag_over_env_over_file_over_default_each_says_where_it_came_from() {
    let dir = temp_dir("precedence");
    let file = dir.join("c.toml");
    std::fs::write(
        &file,
        "[engine]\nthreads = 1\nring_pages = 100\ncache_pages = 4096\n[replication]\nwindow = 3\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let env = [
        ("CKPT_ENGINE_RING_PAGES", "200"),
        ("CKPT_ENGINE_CACHE_PAGES", "1000"),
        ("CKPT_STREAM_FORMAT", "records"),
    ];
    // ring_pages: file and env, env wins; cache_pages: file, env and flag,
    // the flag wins; threads: file only; window: file; the rest default.
    let s = show(
        &dir,
        &env,
        &["--config", f],
        &["--cache-pages", "auto", "--zstd-level", "3"],
    );
    let want = [
        ("engine.threads", Value::from(1), "file", f),
        (
            "engine.ring_pages",
            Value::from(200),
            "env",
            "CKPT_ENGINE_RING_PAGES",
        ),
        (
            "engine.cache_pages",
            Value::from("auto"),
            "flag",
            "--cache-pages",
        ),
        (
            "stream.format",
            Value::from("records"),
            "env",
            "CKPT_STREAM_FORMAT",
        ),
        ("stream.zstd_level", Value::from(3), "flag", "--zstd-level"),
        ("replication.window", Value::from(3), "file", f),
        ("engine.pin_threads", Value::from(true), "default", ""),
        ("record.epoch_ms", Value::from(25), "default", ""),
    ];
    for (key, value, kind, name) in want {
        let got = get(&s, key);
        assert_eq!(
            (&got.1, got.2.as_str(), got.3.as_str()),
            (&value, kind, name),
            "{key}"
        );
    }
    // Every key of every section is listed, none twice.
    assert_eq!(s.len(), 8 + 3 + 6 + 6 + 1);

    // Without the flag the environment decides, without it the file.
    let s = show(&dir, &env[..2], &["--config", f], &[]);
    assert_eq!(get(&s, "engine.cache_pages").1, Value::from(1000));
    let s = show(&dir, &[], &["--config", f], &[]);
    assert_eq!(get(&s, "engine.cache_pages").1, Value::from(4096));
    assert_eq!(get(&s, "engine.cache_pages").2, "file");
}

#[test]
fn a_command_runs_with_the_layered_values() {
    let dir = temp_dir("command");
    let trace = dir.join("tiny.trace");
    write_trace(&trace, 64, 6, 10);
    let file = dir.join("c.toml");
    std::fs::write(&file, "[engine]\nthreads = 2\nkernel = \"scalar\"\n").unwrap();
    let bench = |env: &[(&str, &str)], extra: &[&str]| {
        let mut args = vec!["--config", file.to_str().unwrap(), "bench", "--json"];
        args.extend(["--trace", trace.to_str().unwrap()]);
        args.extend(extra);
        let o = ckpt(&dir, env, &args);
        assert!(o.status.success(), "{}", stderr(&o));
        let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
        let t = &doc["traces"][0];
        (
            t["threads"].as_u64().unwrap(),
            t["kernel"].as_str().unwrap().to_string(),
        )
    };
    assert_eq!(bench(&[], &[]), (2, "scalar".into()));
    assert_eq!(bench(&[("CKPT_ENGINE_THREADS", "1")], &[]).0, 1);
    assert_eq!(
        bench(&[("CKPT_ENGINE_THREADS", "1")], &["--threads", "3"]).0,
        3
    );
}

#[test]
fn bad_values_name_the_key_the_value_the_range_and_the_origin() {
    let dir = temp_dir("errors");
    let file = dir.join("bad.toml");
    let f = file.to_str().unwrap().to_string();
    /// File text, environment, flags, and what the error must say.
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<&'a str>, String);
    let cases: Vec<Case> = vec![
        (
            "[engine]\ncache_page = 1\n",
            vec![],
            vec![],
            format!("engine.cache_page (from file {f}): unknown key"),
        ),
        (
            "[engine]\nthreads = \"many\"\n",
            vec![],
            vec![],
            format!("engine.threads (from file {f}): found string \"many\""),
        ),
        (
            "[record]\nepoch_ms = 0\n",
            vec![],
            vec![],
            format!("record.epoch_ms = 0 is outside 1..=60000 (from file {f})"),
        ),
        (
            "",
            vec![("CKPT_REPLICATION_WINDOW", "0")],
            vec![],
            "replication.window = 0 is outside 1..=1024 (from env CKPT_REPLICATION_WINDOW)".into(),
        ),
        (
            "",
            vec![("CKPT_ENGINE_THREADZ", "1")],
            vec![],
            "engine.threadz (from env CKPT_ENGINE_THREADZ): unknown key".into(),
        ),
        (
            "",
            vec![("CKPT_ENGINE_PIN_THREADS", "sometimes")],
            vec![],
            "engine.pin_threads (from env CKPT_ENGINE_PIN_THREADS): found string \"sometimes\""
                .into(),
        ),
        (
            "[engine]\ncache_pages = 4096\n",
            vec![],
            vec!["--cache-budget-mib", "64"],
            "--cache-budget-mib bounds the adaptive size".into(),
        ),
    ];
    for (text, env, flags, want) in cases {
        std::fs::write(&file, text).unwrap();
        let mut args = vec!["--config", f.as_str(), "config", "show"];
        args.extend(flags);
        let o = ckpt(&dir, &env, &args);
        assert_eq!(o.status.code(), Some(2), "{text} {env:?}");
        assert!(stderr(&o).contains(&want), "{text} {env:?}: {}", stderr(&o));
    }
}

#[test]
fn a_missing_file_is_an_error_only_when_named() {
    let dir = temp_dir("missing");
    let missing = dir.join("nope.toml");
    let o = ckpt(
        &dir,
        &[],
        &["--config", missing.to_str().unwrap(), "config", "show"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains(&format!("cannot read config {}", missing.display())));
    let o = ckpt(
        &dir,
        &[("CKPT_CONFIG", missing.to_str().unwrap())],
        &["config", "show"],
    );
    assert_eq!(o.status.code(), Some(2));

    // No file at the default location: the defaults, and no error.
    let o = ckpt(&dir, &[], &["config", "show", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    if !Path::new("/etc/ckpt/ckpt.toml").exists() {
        assert_eq!(doc["file"], Value::Null);
    }
    // A file at the default location is read.
    std::fs::create_dir_all(dir.join("ckpt")).unwrap();
    let default = dir.join("ckpt/ckpt.toml");
    std::fs::write(&default, "[record]\nepoch_ms = 40\n").unwrap();
    let s = show(&dir, &[], &[], &[]);
    let e = get(&s, "record.epoch_ms");
    assert_eq!((&e.1, e.2.as_str()), (&Value::from(40), "file"));
    assert_eq!(e.3, default.to_str().unwrap());
}

#[test]
fn tune_writes_a_config_that_config_accepts() {
    let dir = temp_dir("tune");
    let trace = dir.join("tiny.trace");
    write_trace(&trace, 256, 12, 40);
    let out = dir.join("tuned.toml");
    let o = ckpt(
        &dir,
        &[],
        &[
            "--quiet",
            "tune",
            "--trace",
            trace.to_str().unwrap(),
            "--reps",
            "3",
            "--budget-s",
            "20",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("about"), "no estimate: {}", stderr(&o));
    let text = std::fs::read_to_string(&out).unwrap();
    // Every measured key, each with the figures behind it.
    for key in [
        "kernel",
        "threads",
        "pin_threads",
        "ring_pages",
        "cache_pages",
        "cache_policy",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no {key} in\n{text}"));
        assert!(line.contains("  # "), "{line}");
    }
    // `--config` accepts it, and every value is the file's and in range
    // (`config show` checks them).
    let s = show(&dir, &[], &["--config", out.to_str().unwrap()], &[]);
    for key in ["engine.kernel", "engine.threads", "engine.cache_policy"] {
        assert_eq!(get(&s, key).2, "file", "{key}");
    }
    let threads = get(&s, "engine.threads").1.as_u64().unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    assert!(threads <= cores, "{threads}");
    let o = ckpt(
        &dir,
        &[],
        &[
            "--config",
            out.to_str().unwrap(),
            "bench",
            "--trace",
            trace.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}
