//! `ckpt demo`: a recorded trace replicated primary to backup over a
//! loopback TCP connection: the send pipeline compresses each checkpoint,
//! the receiver verifies and commits it, and at the end every page of the
//! backup is compared with the trace's memory.

use crate::replay::{replay, Source, TraceSource};
use crate::trace::TraceLimits;
use crate::LabError;
use ckpt_engine::{
    Codec, GuestMemory, Latencies, Limits, Receiver, SendStats, Sender, SenderOptions, SparseMemory,
};
use std::io::BufWriter;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// Summary of a demo run.
pub struct DemoReport {
    /// What the sender wrote.
    pub sent: SendStats,
    /// Sender latencies.
    pub latencies: Latencies,
    /// Checkpoints the backup committed.
    pub committed: u64,
    /// Time the backup spent receiving and committing.
    pub receive: Duration,
    /// Wall time of the whole run.
    pub wall: Duration,
    /// Every page of the backup equals the trace's.
    pub verified: bool,
}

/// Replicates `trace` over loopback TCP.
pub fn run(trace: &Path, codec: Codec, opts: &SenderOptions) -> Result<DemoReport, LabError> {
    let wall = Instant::now();
    let mut source = TraceSource::open_with_limits(trace, TraceLimits::for_receiver(&opts.limits))?;
    let opts = SenderOptions {
        guest_pages: source.guest_pages(),
        ..opts.clone()
    };
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let limits: Limits = opts.limits.clone();
    let backup = std::thread::spawn(move || -> Result<(SparseMemory, u64, Duration), LabError> {
        let (socket, _) = listener.accept()?;
        let t = Instant::now();
        let mut rx = Receiver::new(socket, limits, codec)?;
        let mut memory = SparseMemory::new(rx.guest_pages());
        let mut committed = 0;
        while rx.next_checkpoint(&mut memory)?.is_some() {
            committed += 1;
        }
        Ok((memory, committed, t.elapsed()))
    });
    let socket = TcpStream::connect(addr)?;
    socket.set_nodelay(true)?;
    let mut sender = Sender::new(BufWriter::with_capacity(1 << 20, socket), codec, &opts)?;
    replay(&mut source, &mut sender, |_, _| Ok(()))?;
    let (_, sent, latencies) = sender.finish()?;
    let (memory, committed, receive) = backup
        .join()
        .map_err(|_| LabError::Invalid("the backup thread panicked".into()))??;
    let store = source.reader().memory();
    let verified = (0..opts.guest_pages)
        .all(|p| memory.page(p) == store.get(p).unwrap_or(&[0; ckpt_simd::PAGE_SIZE]));
    Ok(DemoReport {
        sent,
        latencies,
        committed,
        receive,
        wall: wall.elapsed(),
        verified,
    })
}
