//! Replication under failure (`docs/REPLICATION.md`, "What happens on each
//! failure"): a connection cut after any number of bytes in either
//! direction, a byte damaged on the way, the primary killed, the backup
//! killed with SIGKILL at random moments and restarted, and streams the
//! backup must refuse. After each, the backup's image is compared, page by
//! page or by a digest of every page, with the state of the checkpoint it
//! says it holds, as the source had it when that checkpoint was sent.

#![cfg(target_os = "linux")]

use ckpt_engine::replicate::{
    Backup, BackupEnd, BackupOptions, Delivery, Primary, PrimaryOptions, Refusal, ReplicateError,
};
use ckpt_engine::stream::{Digest, Event};
use ckpt_engine::{
    Codec, Durability, DurableImage, GuestMemory, Limits, PageType, Receiver, Replica,
    SenderOptions, SparseMemory,
};
use ckpt_lab::replay::{full_from, Checkpoint, Source};
use ckpt_lab::replicate::{drive, DriveOptions, Sent};
use ckpt_lab::synth::SyntheticGuest;
use ckpt_lab::trace::{TraceReader, TraceWriter};
use ckpt_lab::LabError;
use ckpt_simd::{Page, PAGE_SIZE};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CKPT: &str = env!("CARGO_BIN_EXE_ckpt");

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("ckpt-repl-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A synthetic guest as an endless checkpoint source: the first
/// checkpoint fills it, each later one dirties `size` pages.
struct Guest {
    g: SyntheticGuest,
    size: usize,
    started: bool,
}

impl Guest {
    fn new(pages: u64, seed: u64, size: usize) -> Guest {
        Guest {
            g: SyntheticGuest::new(pages, seed),
            size,
            started: false,
        }
    }

    /// Digest of every page of the guest as it is now.
    fn digest(&self) -> u128 {
        memory_digest(self.g.pages(), |p| self.g.page(p))
    }
}

impl Source for Guest {
    fn guest_pages(&self) -> u64 {
        self.g.pages()
    }

    fn next_checkpoint(&mut self) -> Result<Option<Checkpoint>, LabError> {
        if !self.started {
            self.started = true;
            self.g.checkpoint(self.g.pages() as usize);
            return self.full_checkpoint();
        }
        let dirty = self.g.checkpoint(self.size);
        let mut pages = ckpt_engine::PageBuf::arena(dirty.len());
        for (slot, d) in pages.iter_mut().zip(&dirty) {
            slot.0 = *self.g.page(d.pfn);
        }
        Ok(Some(Checkpoint {
            entries: dirty.iter().map(|d| (d.pfn, d.ty)).collect(),
            pages,
            previous: None,
            toolstack: Vec::new(),
            enable_compression: false,
        }))
    }

    fn full_checkpoint(&mut self) -> Result<Option<Checkpoint>, LabError> {
        if !self.started {
            return self.next_checkpoint();
        }
        let g = &self.g;
        Ok(Some(full_from(g.pages(), |p| Some(g.page(p)))))
    }
}

fn memory_digest<'a>(pages: u64, page: impl Fn(u64) -> &'a Page) -> u128 {
    let codec = Codec::best();
    let mut d = Digest::new();
    for pfn in 0..pages {
        d.add_page(&codec, pfn, page(pfn));
    }
    d.finish()
}

fn image_digest(m: &dyn GuestMemory) -> u128 {
    memory_digest(m.pages(), |p| m.page(p))
}

/// What each checkpoint sent brought the guest to: (stream, seq) -> the
/// digest of every page.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<HashMap<(u128, u64), u128>>>);

impl Log {
    fn record(&self) -> impl FnMut(&Sent, &Guest) + '_ {
        move |sent, guest| {
            if let Delivery::Sent { stream_id, seq } = sent.delivery {
                self.0
                    .lock()
                    .unwrap()
                    .insert((stream_id, seq), guest.digest());
            }
        }
    }

    /// The digest for a checkpoint, waiting briefly for the primary's
    /// thread to note it.
    fn get(&self, stream: u128, seq: u64) -> Option<u128> {
        let until = Instant::now() + Duration::from_secs(2);
        loop {
            if let Some(d) = self.0.lock().unwrap().get(&(stream, seq)) {
                return Some(*d);
            }
            if Instant::now() > until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn primary_options(guest_pages: u64) -> PrimaryOptions {
    PrimaryOptions {
        sender: SenderOptions {
            ring_pages: 512,
            ..SenderOptions::new(guest_pages)
        },
        ..PrimaryOptions::new(guest_pages)
    }
}

/// What the proxy does to the first connection.
#[derive(Clone, Copy, Debug, Default)]
struct Fault {
    /// Cut both directions once this many bytes went primary -> backup.
    forward: Option<u64>,
    /// ... or once this many went backup -> primary.
    back: Option<u64>,
    /// Flip a bit of the byte at this offset of the stream.
    flip: Option<u64>,
}

/// The bytes of a proxied connection: (primary -> backup, backup -> primary).
type Seen = Arc<Mutex<(Vec<u8>, Vec<u8>)>>;

/// A loopback proxy between primary and backup; the first connection
/// suffers `fault`, later ones pass untouched.
struct Proxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Bytes of the first connection, each way.
    seen: Seen,
    connections: Arc<Mutex<u64>>,
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    budget: Option<u64>,
    flip: Option<u64>,
    both: [TcpStream; 2],
    record: Option<(Seen, bool)>,
) {
    let mut sent = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let room = budget.map_or(buf.len() as u64, |b| (b - sent).min(buf.len() as u64));
        if room == 0 {
            break;
        }
        let n = match from.read(&mut buf[..room as usize]) {
            Ok(0) | Err(_) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
        };
        if let Some(at) = flip {
            if at >= sent && at < sent + n as u64 {
                buf[(at - sent) as usize] ^= 0x10;
            }
        }
        if let Some((r, forward)) = &record {
            let mut g = r.lock().unwrap();
            let v = if *forward { &mut g.0 } else { &mut g.1 };
            v.extend_from_slice(&buf[..n]);
        }
        if to.write_all(&buf[..n]).is_err() {
            return;
        }
        sent += n as u64;
    }
    // The budget is spent: cut the connection, both ways, both ends.
    for s in &both {
        let _ = s.shutdown(Shutdown::Both);
    }
}

impl Proxy {
    fn start(backend: SocketAddr, fault: Fault) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new((Vec::new(), Vec::new())));
        let connections = Arc::new(Mutex::new(0));
        let (s, r, c) = (stop.clone(), seen.clone(), connections.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(backend) else {
                    continue;
                };
                let first = {
                    let mut n = c.lock().unwrap();
                    *n += 1;
                    *n == 1
                };
                let f = if first { fault } else { Fault::default() };
                let both = || [client.try_clone().unwrap(), server.try_clone().unwrap()];
                let rec = first.then(|| r.clone());
                let (c1, s1, b1, r1) = (
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    both(),
                    rec.clone(),
                );
                std::thread::spawn(move || {
                    pump(c1, s1, f.forward, f.flip, b1, r1.map(|r| (r, true)))
                });
                let b2 = both();
                std::thread::spawn(move || {
                    pump(server, client, f.back, None, b2, rec.map(|r| (r, false)))
                });
            }
        });
        Proxy {
            addr,
            stop,
            seen,
            connections,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

const CUT_GUEST: u64 = 256;
const CUT_CHECKPOINTS: u64 = 6;

/// One replication through a faulty proxy into an in-memory backup.
/// Returns what the backup ended with, the log, the primary's outcome and
/// the proxy.
fn faulty_run(
    fault: Fault,
    reconnect: bool,
    backup_timeout: Duration,
) -> (
    BackupEnd,
    SparseMemory,
    Log,
    Result<ckpt_lab::replicate::DriveReport, LabError>,
    Proxy,
    u128,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = listener.local_addr().unwrap();
    let backup = std::thread::spawn(move || {
        let opts = BackupOptions {
            timeout: backup_timeout,
            first_within: Some(backup_timeout),
            ..BackupOptions::new()
        };
        let mut b = Backup::new(
            listener,
            Codec::best(),
            opts,
            None,
            Box::new(|p| Ok(SparseMemory::new(p))),
        );
        let end = b.run(&mut |_| {}).unwrap();
        (
            end,
            b.into_image()
                .unwrap_or_else(|| SparseMemory::new(CUT_GUEST)),
        )
    });
    let proxy = Proxy::start(backend, fault);
    let log = Log::default();
    let mut guest = Guest::new(CUT_GUEST, 11, 40);
    let opts = PrimaryOptions {
        heartbeat: Duration::from_secs(60),
        timeout: Duration::from_secs(1),
        reconnect_for: if reconnect {
            Duration::from_secs(5)
        } else {
            Duration::ZERO
        },
        ..primary_options(CUT_GUEST)
    };
    let drove = Primary::connect(proxy.addr, Codec::best(), opts)
        .map_err(LabError::from)
        .and_then(|p| {
            let o = DriveOptions {
                max_checkpoints: Some(CUT_CHECKPOINTS),
                ..DriveOptions::default()
            };
            drive(&mut guest, p, &o, log.record())
        });
    let (end, image) = backup.join().unwrap();
    let final_digest = guest.digest();
    (end, image, log, drove, proxy, final_digest)
}

/// Offsets inside every part of the first connection's checkpoints, in
/// both directions, from an undisturbed run; and where each checkpoint's
/// frame ends.
fn cut_points() -> (Vec<(&'static str, Fault)>, Vec<u64>) {
    let (end, image, _, drove, proxy, last) =
        faulty_run(Fault::default(), false, Duration::from_secs(10));
    assert!(matches!(end, BackupEnd::Ended { .. }));
    let p = drove.unwrap().primary;
    assert!(p.in_sync);
    // On the wire: exactly the stream and the back channel's messages.
    assert_eq!(p.wire_out, p.sent.output_bytes + 32 * p.heartbeats);
    assert_eq!(p.wire_in, 40 * (p.acknowledged + p.heartbeat_replies));
    assert_eq!(image_digest(&image), last);
    let (stream, back) = proxy.seen.lock().unwrap().clone();
    assert_eq!(stream.len() as u64, p.wire_out);
    assert_eq!(back.len() as u64, p.wire_in);
    let mut events = Vec::new();
    let mut rx = Receiver::new(&stream[..], Limits::default(), Codec::best()).unwrap();
    let mut mem = SparseMemory::new(CUT_GUEST);
    while rx
        .next_checkpoint_observed(&mut mem, &mut |e| events.push(e.clone()))
        .unwrap()
        .is_some()
    {}
    let mut points: Vec<(&'static str, u64)> =
        vec![("header", 0), ("header", 1), ("header", 30), ("header", 55)];
    let checkpoints = events
        .iter()
        .filter(|e| matches!(e, Event::Checkpoint { .. }))
        .count() as u64;
    let mut seq = 0;
    let mut frame_ends = Vec::new();
    let mut first_batch = true;
    let mut first_chunk = true;
    for e in &events {
        let interesting = seq <= 1 || seq + 1 == checkpoints;
        match *e {
            Event::Checkpoint { offset, seq: s, .. } => {
                seq = s;
                first_batch = true;
                first_chunk = true;
                if s <= 1 || s + 1 == checkpoints {
                    points.extend([("frame head", offset), ("frame head", offset + 9)]);
                }
            }
            Event::Batch { offset, .. } if interesting && first_batch => {
                first_batch = false;
                points.extend([("PFN batch", offset + 2), ("PFN batch", offset + 12)]);
            }
            Event::Compressed { offset, len } if interesting && first_chunk => {
                first_chunk = false;
                points.extend([
                    ("chunk", offset + 5),
                    ("chunk", offset + 12 + len / 2),
                    ("chunk", offset + 12 + len - 1),
                ]);
            }
            Event::Trailer { offset, .. } => {
                frame_ends.push(offset + 48);
                if !interesting {
                    continue;
                }
                points.extend([
                    ("trailer", offset),
                    ("trailer", offset + 24),
                    ("trailer", offset + 47),
                    ("after the trailer", offset + 48),
                ]);
            }
            Event::End { offset, .. } => {
                points.extend([("end frame", offset), ("end frame", offset + 23)]);
            }
            _ => {}
        }
    }
    let mut faults: Vec<(&'static str, Fault)> = points
        .into_iter()
        .map(|(what, n)| {
            (
                what,
                Fault {
                    forward: Some(n),
                    ..Fault::default()
                },
            )
        })
        .collect();
    assert_eq!(
        back.len() as u64,
        checkpoints * 40,
        "one acknowledgement each"
    );
    let acks = back.len() as u64;
    for n in [0, 1, 39, 40, 41, 79, 80, acks - 41, acks - 40, acks - 1] {
        faults.push((
            "acknowledgement",
            Fault {
                back: Some(n),
                ..Fault::default()
            },
        ));
    }
    (faults, frame_ends)
}

#[test]
fn a_connection_cut_anywhere_leaves_a_whole_checkpoint() {
    let (faults, frame_ends) = cut_points();
    assert!(faults.len() >= 40, "{}", faults.len());
    let work = Arc::new(Mutex::new(faults));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let frame_ends = Arc::new(frame_ends);
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (work, failures, frame_ends) = (work.clone(), failures.clone(), frame_ends.clone());
            std::thread::spawn(move || loop {
                let Some((what, fault)) = work.lock().unwrap().pop() else {
                    return;
                };
                // The primary gives up at once: the backup fails over
                // holding a checkpoint whose frame arrived whole.
                let (end, image, log, drove, _, last) =
                    faulty_run(fault, false, Duration::from_millis(500));
                let check = || -> Result<(), String> {
                    let holds = match end {
                        BackupEnd::PrimaryLost { holds, .. } | BackupEnd::Ended { holds } => holds,
                    };
                    let got = image_digest(&image);
                    let Some(c) = holds else {
                        return (image.resident() == 0)
                            .then_some(())
                            .ok_or("pages written without a commit".to_string());
                    };
                    let want = log
                        .get(c.stream_id, c.seq)
                        .ok_or(format!("holds unknown checkpoint {}", c.seq))?;
                    if got != want {
                        return Err(format!("the image is not checkpoint {}", c.seq));
                    }
                    if let Some(n) = fault.forward {
                        let whole = frame_ends.iter().filter(|&&e| e <= n).count() as u64;
                        if c.seq + 1 > whole {
                            return Err(format!(
                                "checkpoint {} committed, only {whole} frames arrived whole",
                                c.seq
                            ));
                        }
                    }
                    if let Ok(r) = &drove {
                        if r.primary.in_sync && got != last {
                            return Err(
                                "the primary believes the backup holds its last checkpoint".into(),
                            );
                        }
                    }
                    Ok(())
                };
                if let Err(e) = check() {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("{what} {fault:?}: {e}"));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_primary_that_reconnects_brings_the_backup_up_to_date() {
    // Cuts in every part of checkpoint 1 and of its acknowledgement, and
    // a damaged byte the backup rejects.
    let faults = [
        Fault {
            forward: Some(10),
            ..Fault::default()
        },
        Fault {
            back: Some(20),
            ..Fault::default()
        },
        Fault {
            back: Some(40),
            ..Fault::default()
        },
        Fault {
            back: Some(60),
            ..Fault::default()
        },
        Fault {
            flip: Some(600),
            ..Fault::default()
        },
    ];
    let (_, _, _, _, proxy, _) = faulty_run(Fault::default(), false, Duration::from_secs(10));
    let stream_len = proxy.seen.lock().unwrap().0.len() as u64;
    let mut all = faults.to_vec();
    for at in [stream_len / 3, stream_len / 2, stream_len - 100] {
        all.push(Fault {
            forward: Some(at),
            ..Fault::default()
        });
        all.push(Fault {
            flip: Some(at),
            ..Fault::default()
        });
    }
    for fault in all {
        let (end, image, _, drove, proxy, last) = faulty_run(fault, true, Duration::from_secs(10));
        let report = drove.unwrap_or_else(|e| panic!("{fault:?}: {e}")).primary;
        assert!(report.in_sync, "{fault:?}: {report:?}");
        assert_eq!(report.connections, 2, "{fault:?}: {:?}", report.breaks);
        assert_eq!(*proxy.connections.lock().unwrap(), 2);
        assert!(matches!(end, BackupEnd::Ended { .. }), "{fault:?}");
        assert_eq!(image_digest(&image), last, "{fault:?}");
        if fault.flip.is_some() {
            // Rejected, or (a damaged length) waited for until the primary
            // gave up on an acknowledgement.
            assert!(
                report.breaks[0].contains("rejected checkpoint")
                    || report.breaks[0].contains("answered nothing"),
                "{fault:?}: {:?}",
                report.breaks
            );
        }
    }
}

/// A `ckpt recv` child; its stdout lines arrive on a channel.
struct Recv {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Recv {
    fn start(port: u16, image: &Path, extra: &[&str]) -> Recv {
        let mut child = Command::new(CKPT)
            .args(["recv", "--listen", &format!("127.0.0.1:{port}"), "--image"])
            .arg(image)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut r = Recv {
            child,
            lines,
            seen: Vec::new(),
        };
        r.wait_for("listening on");
        r
    }

    fn wait_for(&mut self, what: &str) -> String {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(what) {
                        return l;
                    }
                }
                Err(_) => panic!("no line with {what:?}; saw {:#?}", self.seen),
            }
        }
    }

    /// Waits for the child to exit; its status code and its stdout.
    fn wait(mut self) -> (Option<i32>, String, String) {
        let until = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < until, "ckpt recv did not exit");
            std::thread::sleep(Duration::from_millis(10));
        };
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.seen.push(l);
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status.code(), self.seen.join("\n"), err)
    }

    fn kill(mut self) -> Vec<String> {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(l);
        }
        self.seen
    }
}

/// A tiny random generator for the kill times (fixed seed: reproducible).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn copy_image(from: &Path, to: &Path) {
    for (a, b) in [
        (from.to_path_buf(), to.to_path_buf()),
        (ckpt_engine::state_path(from), ckpt_engine::state_path(to)),
        (
            ckpt_engine::journal_path(from),
            ckpt_engine::journal_path(to),
        ),
    ] {
        if a.exists() {
            std::fs::copy(a, b).unwrap();
        }
    }
}

#[test]
fn a_backup_killed_at_random_moments_comes_back_with_a_whole_checkpoint() {
    const GUEST: u64 = 2048;
    let dir = TempDir::new("kill");
    let image = dir.0.join("guest.img");
    let copy = dir.0.join("copy.img");
    let port = free_port();
    let mut recv = Recv::start(port, &image, &["--timeout-ms", "60000"]);
    let stop = Arc::new(AtomicBool::new(false));
    let log = Log::default();
    let primary = {
        let (stop, log) = (stop.clone(), log.clone());
        std::thread::spawn(move || {
            let opts = PrimaryOptions {
                heartbeat: Duration::from_millis(50),
                timeout: Duration::from_secs(5),
                reconnect_for: Duration::from_secs(30),
                ..primary_options(GUEST)
            };
            let mut guest = Guest::new(GUEST, 5, 400);
            let p = Primary::connect(("127.0.0.1", port), Codec::best(), opts).unwrap();
            let o = DriveOptions {
                stop: Some(stop),
                ..DriveOptions::default()
            };
            let r = drive(&mut guest, p, &o, log.record());
            (r, guest.digest())
        })
    };
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let (mut replayed, mut discarded, mut clean, mut empty) = (0, 0, 0, 0);
    let mut trial = 0;
    let mut expect_recovery = false;
    while trial < 50 || replayed == 0 || discarded == 0 {
        assert!(
            trial < 200,
            "after {trial} kills: {replayed} replayed, {discarded} dropped"
        );
        trial += 1;
        std::thread::sleep(Duration::from_millis(20 + rng.below(300)));
        let out = recv.kill();
        if expect_recovery {
            // The last kill left work for recovery, which this start did.
            assert!(
                out.iter().any(|l| l.contains("recovered:")),
                "trial {trial}: {out:#?}"
            );
        }
        expect_recovery = false;
        if !DurableImage::exists(&image) {
            empty += 1;
        } else {
            // Every other trial recovers a copy, leaving the image itself
            // to the restarted backup's own recovery.
            let own = trial % 2 == 0;
            let path = if own {
                &image
            } else {
                copy_image(&image, &copy);
                &copy
            };
            let (img, rec) = DurableImage::open(path, Durability::Journal)
                .unwrap_or_else(|e| panic!("trial {trial}: {e}"));
            if !rec.replayed.is_empty() {
                replayed += 1;
            } else if rec.discarded.is_some() {
                discarded += 1;
            } else {
                clean += 1;
            }
            expect_recovery = !own && !rec.clean();
            match img.holds() {
                None => assert_eq!(
                    image_digest(&img),
                    memory_digest(GUEST, |_| &[0u8; PAGE_SIZE])
                ),
                Some(c) => {
                    let want = log
                        .get(c.stream_id, c.seq)
                        .unwrap_or_else(|| panic!("trial {trial}: unknown checkpoint {c:?}"));
                    assert_eq!(
                        image_digest(&img),
                        want,
                        "trial {trial}: the image is not checkpoint {} ({rec:?})",
                        c.seq
                    );
                }
            }
        }
        recv = Recv::start(port, &image, &["--timeout-ms", "60000"]);
    }
    eprintln!(
        "{trial} kills: {replayed} recovered by replaying the journal, {discarded} by dropping an uncommitted record, {clean} clean, {empty} before the image existed"
    );
    stop.store(true, Ordering::SeqCst);
    let (report, last) = primary.join().unwrap();
    let report = report.unwrap().primary;
    assert!(report.in_sync, "{report:?}");
    let (code, out, err) = recv.wait();
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("the primary ended the stream"), "{out}");
    let (img, rec) = DurableImage::open(&image, Durability::Journal).unwrap();
    assert!(rec.clean());
    assert_eq!(image_digest(&img), last);
}

/// Writes a trace of a synthetic guest: `epochs` epochs of `size` pages.
fn write_trace(path: &Path, pages: u64, epochs: usize, size: usize, epoch_ms: u64) {
    let meta = format!("{{\"workload\":\"test\",\"epoch_ms\":{epoch_ms}}}");
    let mut w = TraceWriter::create(path, &meta, Codec::best()).unwrap();
    let mut g = SyntheticGuest::new(pages, 77);
    for e in 0..epochs {
        let dirty = g.checkpoint(if e == 0 { pages as usize } else { size });
        let copies: Vec<(u64, PageType, Box<Page>)> = dirty
            .iter()
            .map(|d| (d.pfn, d.ty, Box::new(*g.page(d.pfn))))
            .collect();
        let refs: Vec<(u64, PageType, &Page)> =
            copies.iter().map(|(p, t, c)| (*p, *t, &**c)).collect();
        w.epoch(&refs, 0, 0).unwrap();
    }
    w.finish().unwrap();
}

/// The trace's memory after its first `n` epochs.
fn trace_state(path: &Path, n: u64) -> Vec<Box<Page>> {
    let mut r = TraceReader::open(path).unwrap();
    for _ in 0..n {
        r.next_epoch().unwrap().unwrap();
    }
    let zero = [0u8; PAGE_SIZE];
    (0..r.guest_pages())
        .map(|p| Box::new(*r.memory().get(p).unwrap_or(&zero)))
        .collect()
}

fn same_pages(img: &dyn GuestMemory, want: &[Box<Page>]) {
    assert_eq!(img.pages(), want.len() as u64);
    for (pfn, w) in want.iter().enumerate() {
        assert!(img.page(pfn as u64) == &**w, "pfn {pfn} differs");
    }
}

fn holds_line(out: &str) -> (u64, u128) {
    let at = out.rfind("holds checkpoint ").expect("a holds line");
    let mut words = out[at..].split_whitespace();
    let seq = words.nth(2).unwrap().parse().unwrap();
    let stream = u128::from_str_radix(words.nth(2).unwrap(), 16).unwrap();
    (seq, stream)
}

#[test]
fn a_killed_primary_leaves_the_backup_failing_over_with_a_whole_checkpoint() {
    let dir = TempDir::new("primary");
    let trace = dir.0.join("t.trace");
    write_trace(&trace, 512, 80, 120, 10);
    let image = dir.0.join("guest.img");
    let port = free_port();
    let mut recv = Recv::start(port, &image, &["--timeout-ms", "500", "--verbose"]);
    let mut send = Command::new(CKPT)
        .args(["send", "--to", &format!("127.0.0.1:{port}"), "--trace"])
        .arg(&trace)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    recv.wait_for("committed checkpoint 5 ");
    send.kill().unwrap(); // SIGKILL, mid-run (80 epochs of 10 ms)
    let _ = send.wait();
    let (code, out, err) = recv.wait();
    assert_eq!(code, Some(3), "{out}\n{err}");
    assert!(out.contains("primary lost"), "{out}");
    assert!(err.contains("primary lost"), "{err}");
    let (seq, stream) = holds_line(&out);
    assert!((5..79).contains(&seq), "{out}");
    let (img, rec) = DurableImage::open(&image, Durability::Journal).unwrap();
    assert!(rec.clean());
    let c = img.holds().unwrap();
    assert_eq!((c.seq, c.stream_id), (seq, stream));
    same_pages(&img, &trace_state(&trace, seq + 1));
}

#[test]
fn a_primary_whose_backup_is_gone_says_so_and_fails() {
    let dir = TempDir::new("gone");
    let trace = dir.0.join("t.trace");
    write_trace(&trace, 256, 200, 50, 10);
    let image = dir.0.join("guest.img");
    let port = free_port();
    let recv = Recv::start(port, &image, &[]);
    let send = Command::new(CKPT)
        .args([
            "send",
            "--to",
            &format!("127.0.0.1:{port}"),
            "--reconnect-ms",
            "300",
            "--trace",
        ])
        .arg(&trace)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    recv.kill();
    let out = send.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("backup 127.0.0.1:") && err.contains("lost"),
        "{err}"
    );
    assert!(err.contains("last acknowledged checkpoint"), "{err}");
}

#[test]
fn the_backup_refuses_what_is_not_its_primarys_stream_and_keeps_its_image() {
    const PAGES: u64 = 512;
    let dir = TempDir::new("refuse");
    let trace = dir.0.join("t.trace");
    write_trace(&trace, PAGES, 12, 60, 5);
    let image = dir.0.join("guest.img");
    let port = free_port();
    // A whole replication first: the image holds the trace's last epoch.
    let recv = Recv::start(port, &image, &[]);
    let send = Command::new(CKPT)
        .args(["send", "--to", &format!("127.0.0.1:{port}"), "--trace"])
        .arg(&trace)
        .output()
        .unwrap();
    let sent = String::from_utf8_lossy(&send.stdout);
    assert_eq!(send.status.code(), Some(0), "{sent}");
    assert!(sent.contains("12 acknowledged"), "{sent}");
    let (code, out, _) = recv.wait();
    assert_eq!(code, Some(0), "{out}");
    let final_state = trace_state(&trace, 12);
    let held = {
        let (img, _) = DurableImage::open(&image, Durability::Journal).unwrap();
        same_pages(&img, &final_state);
        img.holds().unwrap()
    };

    let mut recv = Recv::start(port, &image, &[]);
    // Garbage.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(&[0x42; 100]).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(recv.wait_for("refused").contains("not a stream"));
    // A stream for a guest of another size.
    let run = |pages: u64, lineage: Option<u64>| {
        let opts = PrimaryOptions {
            lineage,
            reconnect_for: Duration::ZERO,
            ..primary_options(pages)
        };
        let p = Primary::connect(("127.0.0.1", port), Codec::best(), opts).unwrap();
        let mut g = Guest::new(pages, 3, 30);
        let o = DriveOptions {
            max_checkpoints: Some(3),
            ..DriveOptions::default()
        };
        drive(&mut g, p, &o, |_, _| {}).map(|r| r.primary)
    };
    match run(PAGES + 1, None) {
        Err(LabError::Replicate(ReplicateError::Refused(Refusal::GuestSize { image_pages }))) => {
            assert_eq!(image_pages, PAGES)
        }
        other => panic!("{other:?}"),
    }
    assert!(recv.wait_for("refused").contains("512 pages"));
    // Another primary (another lineage).
    match run(PAGES, Some(0x0ddba11)) {
        Err(LabError::Replicate(ReplicateError::Refused(Refusal::OtherPrimary))) => {}
        other => panic!("{other:?}"),
    }
    assert!(recv.wait_for("refused").contains("another primary"));
    recv.kill();
    {
        let (img, rec) = DurableImage::open(&image, Durability::Journal).unwrap();
        assert!(rec.clean());
        assert_eq!(img.holds(), Some(held));
        same_pages(&img, &final_state);
    }

    // Told to start over, the backup takes the other primary's stream,
    // whose first checkpoint replaces the whole image.
    let recv = Recv::start(port, &image, &["--new"]);
    let opts = PrimaryOptions {
        lineage: Some(0x0ddba11),
        ..primary_options(PAGES)
    };
    let p = Primary::connect(("127.0.0.1", port), Codec::best(), opts).unwrap();
    let mut g = Guest::new(PAGES, 3, 30);
    let o = DriveOptions {
        max_checkpoints: Some(3),
        ..DriveOptions::default()
    };
    let r = drive(&mut g, p, &o, |_, _| {}).unwrap();
    assert!(r.primary.in_sync);
    let (code, out, _) = recv.wait();
    assert_eq!(code, Some(0), "{out}");
    let (img, _) = DurableImage::open(&image, Durability::Journal).unwrap();
    assert_eq!(image_digest(&img), g.digest());
    assert_eq!(img.holds().unwrap().stream_id >> 64, 0x0ddba11);
}

#[test]
fn a_live_process_is_replicated_until_it_exits() {
    let dir = TempDir::new("live");
    let image = dir.0.join("guest.img");
    let port = free_port();
    let recv = Recv::start(port, &image, &[]);
    let send = Command::new(CKPT)
        .args(["send", "--to", &format!("127.0.0.1:{port}")])
        .args([
            "--epoch-ms",
            "20",
            "--guest-mib",
            "64",
            "--",
            "sleep",
            "0.4",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&send.stdout);
    assert_eq!(send.status.code(), Some(0), "{out}");
    assert!(
        out.contains("the backup holds the last checkpoint"),
        "{out}"
    );
    assert!(out.contains("capture"), "{out}");
    let (code, recv_out, _) = recv.wait();
    assert_eq!(code, Some(0), "{recv_out}");
    let (seq, _) = holds_line(&recv_out);
    assert!(seq >= 3, "{recv_out}");
    let (img, _) = DurableImage::open(&image, Durability::Journal).unwrap();
    assert_eq!(img.pages(), 64 * 256);
    // The process's pages: not all zero.
    assert_ne!(
        image_digest(&img),
        memory_digest(64 * 256, |_| &[0u8; PAGE_SIZE])
    );
}
