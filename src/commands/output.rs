//! How every subcommand writes, so that all follow one convention:
//!
//! - [`Out`]: standard output, checked. A full device is an error that
//!   names standard output; a closed pipe ends the command quietly
//!   ([`super::report_error`]). Never `println!`, which panics on both.
//! - [`json`]: exactly one JSON document per run, numbers as numbers.
//! - [`progress`]: a bar or spinner on standard error, shown only on a
//!   terminal and without `--quiet`.
//! - [`quantiles`] and [`goal_line`]: a latency distribution with its
//!   sample count, and a goal as pass or fail.

use ckpt_lab::figures::{Goal, Quantiles};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::io::{self, IsTerminal, Write};
use std::time::Duration;

/// Standard output that reports failures as errors naming it (the error's
/// kind kept, so a closed pipe is still recognised as one).
pub struct Out {
    inner: io::Stdout,
}

impl Out {
    /// The process's standard output.
    pub fn new() -> Out {
        Out {
            inner: io::stdout(),
        }
    }
}

impl Default for Out {
    fn default() -> Self {
        Out::new()
    }
}

fn named(e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("cannot write to standard output: {e}"))
}

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).map_err(named)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf).map_err(named)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().map_err(named)
    }
}

/// Writes `value` as one JSON document (indented, ending with a newline)
/// and flushes it.
pub fn json<T: Serialize>(out: &mut Out, value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// A progress indicator on standard error: a bar of `len` steps, or a
/// spinner when the length is not known. Hidden when standard error is not
/// a terminal or `quiet` is set, so logs and pipes stay clean.
pub fn progress(quiet: bool, len: Option<u64>, what: &str) -> ProgressBar {
    if quiet || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match len {
        Some(n) => (
            ProgressBar::new(n),
            "{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{prefix} {spinner} [{elapsed_precise}] {msg}",
        ),
    };
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// One latency distribution on one line: the percentiles its samples
/// support, the maximum, and the sample count.
pub fn quantiles(name: &str, q: &Quantiles, unit: &str) -> String {
    let mut s = format!("  {name:<10} p50 {:>8.3} ms", q.p50_ms);
    for (label, v) in [("p90", q.p90_ms), ("p99", q.p99_ms), ("p99.9", q.p999_ms)] {
        if let Some(v) = v {
            s += &format!("  {label} {v:>8.3} ms");
        }
    }
    s += &format!("  max {:>8.3} ms  ({} {unit})", q.max_ms, q.samples);
    s
}

/// A goal as one line: what, the value, the target, and met or NOT MET.
pub fn goal_line(g: &Goal) -> String {
    format!(
        "  {:<44} {:>8.2} (goal {} {:.2})  {}",
        g.what,
        g.value,
        g.op,
        g.target,
        if g.met { "met" } else { "NOT MET" }
    )
}

/// Mebibytes, for printing.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

/// A byte count in the unit that shows it best (bytes, KiB, MiB, GiB).
pub fn size(bytes: u64) -> String {
    match bytes {
        b if b < 1 << 10 => format!("{b} bytes"),
        b if b < 1 << 20 => format!("{:.1} KiB", b as f64 / 1024.0),
        b if b < 1 << 30 => format!("{:.1} MiB", mib(b)),
        b => format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64),
    }
}

/// A rate that may be absent (too short a time to measure), for printing.
pub fn gbps(v: Option<f64>) -> String {
    match v {
        Some(v) => format!("{v:.2} GB/s"),
        None => "n/a (too short to time)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_shows_only_the_percentiles_its_samples_support() {
        let q = Quantiles::of_ms(&(1..=40).map(f64::from).collect::<Vec<_>>());
        let row = quantiles("stage", &q, "checkpoints");
        assert!(row.contains("p50"), "{row}");
        assert!(row.contains("p90"), "{row}");
        assert!(!row.contains("p99"), "{row}");
        assert!(row.ends_with("(40 checkpoints)"), "{row}");
    }

    #[test]
    fn sizes_take_their_unit() {
        assert_eq!(size(512), "512 bytes");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(25 << 20), "25.0 MiB");
        assert_eq!(size(3 << 30), "3.00 GiB");
    }

    #[test]
    fn a_goal_says_met_or_not() {
        assert!(goal_line(&Goal::at_least("speedup", 1.7, 1.8)).ends_with("NOT MET"));
        assert!(goal_line(&Goal::at_most("stage / memcpy", 1.0, 1.1)).ends_with("met"));
    }
}
