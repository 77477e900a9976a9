//! Trace files: exact round trip, and a clear error for damaged or foreign
//! files.

use ckpt_engine::page::PageType;
use ckpt_engine::Limits;
use ckpt_lab::hostile;
use ckpt_lab::synth::{fill_page, mutate, Rng};
use ckpt_lab::trace::{TraceError, TraceLimits, TraceReader, TraceWriter};
use ckpt_simd::{Codec, Page};

/// Pages written per epoch: (pfn, content).
type Epochs = Vec<Vec<(u64, Box<Page>)>>;

fn sample() -> (Vec<u8>, Epochs) {
    let mut rng = Rng::new(11);
    let mut memory: Vec<Box<Page>> = (0..40).map(|_| Box::new([0u8; 4096])).collect();
    let mut w = TraceWriter::new(
        std::io::Cursor::new(Vec::new()),
        r#"{"workload":"test"}"#,
        Codec::best(),
    )
    .unwrap();
    let mut epochs = Vec::new();
    for e in 0..6 {
        let mut pages = Vec::new();
        for pfn in (0..40u64).filter(|p| (p + e) % 3 != 0) {
            let page = &mut memory[pfn as usize];
            if e == 0 {
                fill_page(&mut rng, page);
            } else {
                mutate(&mut rng, page, 0.05 * e as f64, e % 2 == 0);
            }
            pages.push((pfn, page.clone()));
        }
        let refs: Vec<(u64, PageType, &Page)> = pages
            .iter()
            .map(|(p, b)| (*p, PageType::Normal, &**b))
            .collect();
        w.epoch(&refs, 1000 + e, 25_000_000).unwrap();
        epochs.push(pages);
    }
    (w.finish().unwrap().into_inner(), epochs)
}

#[test]
fn round_trip_is_exact() {
    let (bytes, epochs) = sample();
    let mut r = TraceReader::new(&bytes[..]).unwrap();
    assert!(r.meta().contains("test"));
    assert_eq!(r.guest_pages(), 40);
    for (k, expected) in epochs.iter().enumerate() {
        let e = r.next_epoch().unwrap().expect("an epoch");
        assert_eq!(e.pause_ns, 1000 + k as u64);
        assert_eq!(e.entries.len(), expected.len());
        for (i, (pfn, page)) in expected.iter().enumerate() {
            assert_eq!(e.entries[i].0, *pfn);
            assert_eq!(e.new[i].0[..], page[..]);
            assert_eq!(r.memory().get(*pfn).unwrap()[..], page[..]);
        }
    }
    assert!(r.next_epoch().unwrap().is_none());
}

#[test]
fn foreign_and_damaged_files_are_refused_clearly() {
    let (bytes, _) = sample();
    assert!(matches!(
        TraceReader::new(&b"GIF89a.........."[..]).err().unwrap(),
        TraceError::NotATrace(_)
    ));
    assert!(matches!(
        TraceReader::new(&b"CKP"[..]).err().unwrap(),
        TraceError::NotATrace(_)
    ));
    let mut v1 = bytes.clone();
    v1[7] = b'1';
    assert!(matches!(
        TraceReader::new(&v1[..]).err().unwrap(),
        TraceError::UnsupportedVersion(1)
    ));
    let mut unfinished = bytes.clone();
    unfinished[8..16].fill(0);
    let check = crc32c::crc32c(&unfinished[..16]);
    unfinished[16..20].copy_from_slice(&check.to_le_bytes());
    assert!(matches!(
        TraceReader::new(&unfinished[..]).err().unwrap(),
        TraceError::Unfinished
    ));
    // Cut short: every cut past the header ends in a Damaged error, never a panic.
    for cut in [30, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
        let result = (|| -> Result<(), TraceError> {
            let mut r = TraceReader::new(&bytes[..cut])?;
            while r.next_epoch()?.is_some() {}
            Ok(())
        })();
        assert!(
            matches!(result, Err(TraceError::Damaged { .. })),
            "cut at {cut}: {result:?}"
        );
    }
    // A flipped byte inside the compressed body: zstd's checksum or ours.
    for at in [10, 30, bytes.len() / 2, bytes.len() - 10] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x40;
        let result = (|| -> Result<(), TraceError> {
            let mut r = TraceReader::new(&bad[..])?;
            while r.next_epoch()?.is_some() {}
            Ok(())
        })();
        assert!(result.is_err(), "flip at {at} went unnoticed");
    }
}

/// Reads every epoch of `bytes` under `limits`.
fn read_all(bytes: &[u8], limits: TraceLimits) -> Result<u64, TraceError> {
    let mut r = TraceReader::with_limits(bytes, limits)?;
    let mut n = 0;
    while r.next_epoch()?.is_some() {
        n += 1;
    }
    Ok(n)
}

#[test]
fn counts_and_sizes_are_checked_against_the_limits_before_use() {
    let roomy = TraceLimits {
        max_epoch_pages: 1 << 18,
        max_guest_pages: 1 << 28,
    };
    // An epoch claiming 2^32 - 1 pages, and nothing behind the claim.
    let e = read_all(&hostile::trace_claimed_epoch(), roomy).unwrap_err();
    assert!(
        e.to_string().contains("4294967295 pages in one epoch"),
        "{e}"
    );
    // One PFN 1000 times.
    let e = read_all(&hostile::trace_duplicates(1000), roomy).unwrap_err();
    assert!(e.to_string().contains("twice in one epoch"), "{e}");
    // 4096 pages in an epoch: read under a roomy limit, refused under 4095.
    let wide = hostile::trace_wide_epoch(4096);
    assert_eq!(read_all(&wide, roomy).unwrap(), 1);
    let tight = TraceLimits {
        max_epoch_pages: 4095,
        ..roomy
    };
    let e = read_all(&wide, tight).unwrap_err();
    assert!(
        e.to_string()
            .contains("4096 pages in one epoch (the limit is 4095)"),
        "{e}"
    );
    // A guest over the limit is refused before an epoch is read.
    let guest = hostile::trace_wide_guest(1 << 28, 2, 16);
    assert_eq!(read_all(&guest, roomy).unwrap(), 2);
    let small = TraceLimits {
        max_guest_pages: 1 << 20,
        ..roomy
    };
    assert!(matches!(
        TraceReader::with_limits(&guest[..], small).err().unwrap(),
        TraceError::GuestTooLarge {
            guest_pages: 268435456,
            limit: 1048576
        }
    ));
}

#[test]
fn the_limits_follow_the_receivers() {
    let l = TraceLimits::for_receiver(&Limits {
        max_checkpoint_bytes: 8 << 20,
        max_checkpoint_entries: 100_000,
        max_guest_pages: 4096,
        ..Limits::default()
    });
    assert_eq!((l.max_epoch_pages, l.max_guest_pages), (2048, 4096));
    let l = TraceLimits::for_receiver(&Limits {
        max_checkpoint_entries: 1000,
        ..Limits::default()
    });
    assert_eq!(l.max_epoch_pages, 1000);
    assert_eq!(
        TraceLimits::default(),
        TraceLimits::for_receiver(&Limits::default())
    );
}

#[cfg(target_os = "linux")]
#[test]
fn records_a_live_process() {
    use std::time::Duration;
    // A shell loop that keeps rewriting a variable: a few dirty pages.
    let mut child = std::process::Command::new("sh")
        .args(["-c", "i=0; while [ $i -lt 100000000 ]; do i=$((i+1)); done"])
        .spawn()
        .unwrap();
    let (dir, path, epochs) = record_epochs(child.id(), false, 4, Duration::from_millis(20), "sh");
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        epochs[0].dirty_pages > 0,
        "the initial image holds the shell's pages"
    );
    assert!(epochs.iter().all(|e| e.scanned_bytes > 0));
    let mut r = TraceReader::open(&path).unwrap();
    let mut n = 0;
    while r.next_epoch().unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 4);
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(target_os = "linux")]
#[test]
fn a_sleeping_process_has_almost_no_dirty_pages_after_its_image() {
    use std::time::Duration;
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    // Let it reach its sleep: its memory is then still.
    std::thread::sleep(Duration::from_millis(200));
    let (dir, path, epochs) =
        record_epochs(child.id(), false, 4, Duration::from_millis(10), "still");
    let _ = child.kill();
    let _ = child.wait();
    assert!(epochs[0].dirty_pages > 0);
    for e in &epochs[1..] {
        // Each stop and resume interrupts the sleep, and the kernel writes
        // the time left to the sleeper's stack: that page, nothing else.
        assert!(e.dirty_pages <= 2, "{} pages recorded", e.dirty_pages);
        assert_eq!(e.scanned_bytes, epochs[1].scanned_bytes);
    }
    // The trace's image holds exactly the pages the first epoch found.
    let mut r = TraceReader::open(&path).unwrap();
    let first = r.next_epoch().unwrap().unwrap();
    assert_eq!(first.entries.len() as u64, epochs[0].dirty_pages);
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(target_os = "linux")]
#[test]
fn shared_pages_written_only_by_a_child_are_recorded() {
    use std::time::Duration;
    // The parent maps 600 shared pages (three pieces) and forks; only the child writes them
    // (0xAB everywhere), so they are present in the child's page tables
    // and not in the parent's.
    let script = "import mmap, os, sys, time\n\
                  m = mmap.mmap(-1, 600 * 4096)\n\
                  if os.fork() == 0:\n\
                  \x20   m[:] = b'\\xab' * (600 * 4096)\n\
                  \x20   print('written', flush=True)\n\
                  \x20   time.sleep(30)\n\
                  else:\n\
                  \x20   time.sleep(30)\n";
    let Ok(mut child) = std::process::Command::new("python3")
        .args(["-c", script])
        .stdout(std::process::Stdio::piped())
        .spawn()
    else {
        eprintln!("SKIPPED: no python3 to build the process tree");
        return;
    };
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "written");
    let (dir, path, stats) = record_epochs(child.id(), true, 1, Duration::from_millis(1), "shared");
    let stats = stats[0];
    let tree = ckpt_lab::record::process_tree(child.id() as i32, true);
    for p in tree.iter().rev() {
        let _ = std::process::Command::new("kill")
            .arg(p.to_string())
            .status();
    }
    let _ = child.wait();
    assert_eq!(stats.processes, 2);
    let mut r = TraceReader::open(&path).unwrap();
    let image = r.next_epoch().unwrap().unwrap();
    let written = image
        .new
        .iter()
        .filter(|p| p.0.iter().all(|&b| b == 0xAB))
        .count();
    assert_eq!(written, 600, "every shared page the child wrote, once");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Records `epochs` epochs of `pid` (with its children when asked), each
/// after `every` of run time, into a trace in a fresh directory. Returns the
/// directory, the trace's path and each epoch's figures.
#[cfg(target_os = "linux")]
fn record_epochs(
    pid: u32,
    children: bool,
    epochs: usize,
    every: std::time::Duration,
    name: &str,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    Vec<ckpt_lab::record::EpochStats>,
) {
    use ckpt_lab::record::Recorder;
    let dir = std::env::temp_dir().join(format!("ckpt-rec-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.trace"));
    let writer = TraceWriter::create(&path, "{}", Codec::best()).unwrap();
    let mut rec = Recorder::new(writer, Codec::best(), 2);
    let mut stats = Vec::new();
    for _ in 0..epochs {
        std::thread::sleep(every);
        stats.push(rec.epoch(pid as i32, children, every).unwrap().unwrap());
    }
    rec.finish().unwrap();
    (dir, path, stats)
}
