//! `ckpt demo`: a built-in run of a synthetic guest, primary to backup over
//! a loopback TCP connection: the send pipeline compresses each checkpoint,
//! the receiver verifies and applies it, and at the end every page of the
//! backup is compared with the primary's.

use crate::Result;
use ckpt_engine::config::ReceiverConfig;
use ckpt_engine::memory::{GuestMemory, SparseMemory};
use ckpt_engine::pipeline::{Latencies, SendStats, Sender, SenderOptions};
use ckpt_engine::receiver::Receiver;
use ckpt_engine::synth::{Scenario, SyntheticCheckpoint};
use ckpt_simd::Codec;
use std::io::BufWriter;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Guest size of the built-in run, in pages (128 MiB).
pub const GUEST_PAGES: u64 = 32 * 1024;

/// Dirty-set sizes after the first full send: ordinary checkpoints, one that
/// overflows the staging ring, and an empty one.
pub const SEQUENCE: [usize; 12] = [
    800, 1500, 300, 2600, 9000, 1200, 0, 700, 2000, 450, 3000, 6000,
];

/// Summary of a demo run.
pub struct DemoReport {
    /// What the sender wrote.
    pub sent: SendStats,
    /// Sender latencies.
    pub latencies: Latencies,
    /// Checkpoints the backup applied.
    pub applied: u64,
    /// Time the backup spent receiving and applying.
    pub receive: Duration,
    /// Wall time of the whole run.
    pub wall: Duration,
    /// Every page of the backup equals the primary's.
    pub verified: bool,
}

/// Sends one scripted checkpoint through `sender`.
pub fn send_checkpoint<W: std::io::Write + Send + 'static>(
    sender: &mut Sender<W>,
    cp: &SyntheticCheckpoint,
) -> Result<()> {
    sender.begin_checkpoint()?;
    for (pfn, ty, page) in &cp.pages {
        sender.page(*pfn, *ty, page.as_deref())?;
    }
    for (id, payload) in &cp.foreign {
        sender.foreign_chunk(*id, payload)?;
    }
    if cp.enable_compression {
        sender.enable_compression()?;
    }
    sender.end_checkpoint()?;
    Ok(())
}

/// Runs the built-in sequence.
pub fn run(codec: Codec, opts: &SenderOptions) -> Result<DemoReport> {
    let wall = Instant::now();
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let limits = ReceiverConfig::default();
    let backup = std::thread::spawn(move || -> std::io::Result<(SparseMemory, u64, Duration)> {
        let (socket, _) = listener.accept()?;
        let t = Instant::now();
        let mut rx = Receiver::new(socket, limits, codec)?;
        let mut memory = SparseMemory::new(rx.guest_pages());
        let mut applied = 0;
        while rx.next_checkpoint(&mut memory)?.is_some() {
            applied += 1;
        }
        Ok((memory, applied, t.elapsed()))
    });
    let socket = TcpStream::connect(addr)?;
    socket.set_nodelay(true)?;
    let mut sender = Sender::new(BufWriter::with_capacity(1 << 20, socket), codec, opts)?;
    let mut scenario = Scenario::new(opts.guest_pages, 0xDE70, &SEQUENCE);
    for cp in scenario.by_ref() {
        send_checkpoint(&mut sender, &cp)?;
    }
    let (_, sent, latencies) = sender.finish()?;
    let (memory, applied, receive) = backup
        .join()
        .map_err(|_| crate::Error::Other("backup thread panicked".into()))??;
    let guest = scenario.guest();
    let verified = (0..guest.pages()).all(|p| memory.page(p) == guest.page(p));
    Ok(DemoReport {
        sent,
        latencies,
        applied,
        receive,
        wall: wall.elapsed(),
        verified,
    })
}
