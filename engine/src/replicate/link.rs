//! The primary's end of one connection (`docs/REPLICATION.md`,
//! "Connection"): [`Link`] is what the sender pipeline writes the stream
//! to; it knows where frames end (the stream writer flushes after each
//! trailer), so heartbeats go only between frames, and it notes each
//! checkpoint's digest from its trailer. [`monitor`] reads the back
//! channel, matches acknowledgements to checkpoints, sends heartbeats
//! while the stream is idle, and declares the connection broken when the
//! backup stays silent too long.

use super::wire::{Refusal, Reply, REPLY_LEN};
use crate::stream::{Heartbeat, StreamHeader, END_LEN, HEADER_LEN, TRAILER_LEN};
use crate::Latency;
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Bytes buffered before they are written to the socket.
const BUFFER: usize = 256 << 10;

/// Why a connection broke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Broken {
    /// Writing or reading the socket failed.
    Io(String),
    /// The backup closed the connection.
    Closed,
    /// The backup answered nothing for this long.
    Silent(Duration),
    /// The backup refused the stream or a checkpoint.
    Refused(Refusal),
    /// The backup sent something that breaks the back channel's rules.
    BadReply {
        /// Offset in the back channel.
        offset: u64,
        /// What is wrong.
        field: &'static str,
    },
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Broken::Io(e) => write!(f, "connection failed: {e}"),
            Broken::Closed => write!(f, "the backup closed the connection"),
            Broken::Silent(d) => write!(f, "the backup answered nothing for {d:?}"),
            Broken::Refused(r) => write!(f, "{r}"),
            Broken::BadReply { offset, field } => {
                write!(f, "bad reply from the backup at offset {offset}: {field}")
            }
        }
    }
}

/// A checkpoint begun and not yet acknowledged.
pub(super) struct Inflight {
    pub seq: u64,
    pub begun: Instant,
    /// When its trailer was handed to the socket, and its digest.
    pub written: Option<(Instant, u128)>,
}

/// What the back channel has told, shared by the primary and the monitor.
#[derive(Default)]
pub(super) struct TrackState {
    pub inflight: VecDeque<Inflight>,
    /// Heartbeats sent and not yet answered: (number, when).
    pub heartbeats: VecDeque<(u64, Instant)>,
    pub broken: Option<Broken>,
    /// The primary has ended the stream: the backup closing is expected.
    pub closing: bool,
    /// The backup closed after the stream's end.
    pub ended: bool,
    pub acked: u64,
    /// The last acknowledgement: (sequence number, digest).
    pub last_ack: Option<(u64, u128)>,
    /// From `begin_checkpoint` to the acknowledgement.
    pub ack: Latency,
    /// From the trailer's write to the acknowledgement.
    pub sent_to_ack: Latency,
    pub reply_bytes: u64,
    pub heartbeat_replies: u64,
}

/// [`TrackState`] with the condition the primary waits on.
#[derive(Default)]
pub(super) struct Track {
    state: Mutex<TrackState>,
    pub cond: Condvar,
}

impl Track {
    pub fn lock(&self) -> MutexGuard<'_, TrackState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the connection broken (the first reason stays).
    pub fn fail(&self, why: Broken) {
        let mut st = self.lock();
        if st.broken.is_none() {
            st.broken = Some(why);
        }
        drop(st);
        self.cond.notify_all();
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Header bytes still to come.
    Header(usize),
    /// Between frames: a heartbeat may go.
    Idle,
    /// Inside a checkpoint frame.
    Frame,
    /// After the end frame.
    Ended,
}

struct Out {
    sock: TcpStream,
    buf: Vec<u8>,
    phase: Phase,
    /// The bytes of the last write, when short: the stream writer writes
    /// a trailer, and the end frame, in one write just before it flushes.
    last: Vec<u8>,
    next_seq: u64,
    heartbeats: u64,
    /// Bytes handed to the socket.
    bytes: u64,
    last_write: Instant,
    failed: bool,
}

/// One connection's shared state: the writing side and the back channel.
pub(super) struct LinkShared {
    out: Mutex<Out>,
    pub track: Track,
    /// The stream header's check, which seeds heartbeats and replies.
    pub seed: u32,
    /// A handle to shut the connection down from any thread.
    sock: TcpStream,
}

impl LinkShared {
    pub fn new(sock: TcpStream, header: &StreamHeader) -> io::Result<Arc<LinkShared>> {
        Ok(Arc::new(LinkShared {
            out: Mutex::new(Out {
                sock: sock.try_clone()?,
                buf: Vec::with_capacity(BUFFER),
                phase: Phase::Header(HEADER_LEN),
                last: Vec::with_capacity(TRAILER_LEN),
                next_seq: 0,
                heartbeats: 0,
                bytes: 0,
                last_write: Instant::now(),
                failed: false,
            }),
            track: Track::default(),
            seed: header.check(),
            sock,
        }))
    }

    fn out(&self) -> MutexGuard<'_, Out> {
        self.out.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes both directions: a writer blocked on the socket returns.
    pub fn shutdown(&self) {
        let _ = self.sock.shutdown(Shutdown::Both);
    }

    /// Closes the writing direction once the stream has ended.
    pub fn shutdown_write(&self) {
        let _ = self.sock.shutdown(Shutdown::Write);
    }

    /// (Bytes written to the socket, heartbeats among them.)
    pub fn written(&self) -> (u64, u64) {
        let o = self.out();
        (o.bytes, o.heartbeats)
    }

    /// Writes `out.buf` to the socket.
    fn drain(&self, o: &mut Out) -> io::Result<()> {
        if o.failed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the connection has failed",
            ));
        }
        if o.buf.is_empty() {
            return Ok(());
        }
        let Out { sock, buf, .. } = &mut *o;
        match sock.write_all(buf) {
            Ok(()) => {
                o.bytes += o.buf.len() as u64;
                o.buf.clear();
                o.last_write = Instant::now();
                Ok(())
            }
            Err(e) => {
                o.failed = true;
                self.track.fail(Broken::Io(e.to_string()));
                Err(e)
            }
        }
    }

    /// Sends a heartbeat if the stream has been idle, between frames, for
    /// `every`.
    fn heartbeat_if_idle(&self, every: Duration) {
        let Ok(mut o) = self.out.try_lock() else {
            return; // a frame is being written
        };
        if o.phase != Phase::Idle || o.failed || o.last_write.elapsed() < every {
            return;
        }
        let h = Heartbeat {
            next_seq: o.next_seq,
            number: o.heartbeats,
        };
        o.buf.extend_from_slice(&h.to_bytes(self.seed));
        self.track
            .lock()
            .heartbeats
            .push_back((h.number, Instant::now()));
        if self.drain(&mut o).is_ok() {
            o.heartbeats += 1;
        }
    }
}

/// What the sender pipeline writes the stream to.
pub(super) struct Link(pub Arc<LinkShared>);

impl Write for Link {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let shared = &*self.0;
        let mut o = shared.out();
        if o.failed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the connection has failed",
            ));
        }
        let mut rest = data.len();
        if let Phase::Header(left) = o.phase {
            let n = left.min(rest);
            rest -= n;
            o.phase = if n == left {
                Phase::Idle
            } else {
                Phase::Header(left - n)
            };
        }
        if rest > 0 && o.phase == Phase::Idle {
            o.phase = Phase::Frame;
        }
        o.buf.extend_from_slice(data);
        o.last.clear();
        if data.len() <= TRAILER_LEN {
            o.last.extend_from_slice(data);
        }
        if o.buf.len() >= BUFFER {
            shared.drain(&mut o)?;
        }
        Ok(data.len())
    }

    /// The stream writer flushes after each trailer and after the end
    /// frame: the frame is complete.
    fn flush(&mut self) -> io::Result<()> {
        let shared = &*self.0;
        let mut o = shared.out();
        if o.phase == Phase::Frame && o.last.len() == TRAILER_LEN && o.last[..4] == *b"CKTR" {
            let seq = u64::from_le_bytes(o.last[8..16].try_into().expect("8 bytes"));
            let digest = u128::from_le_bytes(o.last[24..40].try_into().expect("16 bytes"));
            // Noted before the bytes leave, so an acknowledgement always
            // finds it.
            let mut st = shared.track.lock();
            if let Some(c) = st.inflight.iter_mut().find(|c| c.seq == seq) {
                c.written = Some((Instant::now(), digest));
            }
            drop(st);
            o.next_seq = seq + 1;
            o.phase = Phase::Idle;
        } else if o.phase == Phase::Frame && o.last.len() == END_LEN && o.last[..4] == *b"CKND" {
            o.phase = Phase::Ended;
        }
        shared.drain(&mut o)
    }
}

/// Timing of a connection.
#[derive(Clone, Copy, Debug)]
pub(super) struct Timing {
    pub heartbeat: Duration,
    pub timeout: Duration,
}

/// Reads the back channel until the connection ends or breaks, sending
/// heartbeats while the stream is idle.
pub(super) fn monitor(mut read: TcpStream, link: Arc<LinkShared>, timing: Timing) {
    let tick = (timing.heartbeat.min(timing.timeout) / 4)
        .clamp(Duration::from_millis(1), Duration::from_millis(20));
    if let Err(e) = read.set_read_timeout(Some(tick)) {
        link.track.fail(Broken::Io(e.to_string()));
    }
    let mut buf = [0u8; REPLY_LEN * 32];
    let mut have = 0;
    let mut offset = 0u64;
    loop {
        if link.track.lock().broken.is_some() {
            break;
        }
        match read.read(&mut buf[have..]) {
            Ok(0) => {
                let mut st = link.track.lock();
                if st.closing {
                    st.ended = true;
                    drop(st);
                    link.track.cond.notify_all();
                } else {
                    drop(st);
                    link.track.fail(Broken::Closed);
                }
                break;
            }
            Ok(n) => {
                have += n;
                let whole = have / REPLY_LEN * REPLY_LEN;
                for m in buf[..whole].chunks_exact(REPLY_LEN) {
                    let m: &[u8; REPLY_LEN] = m.try_into().expect("one message");
                    if let Err(why) = handle(&link, m, offset) {
                        link.track.fail(why);
                        break;
                    }
                    offset += REPLY_LEN as u64;
                }
                buf.copy_within(whole..have, 0);
                have -= whole;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                link.track.fail(Broken::Io(e.to_string()));
                break;
            }
        }
        let closing = link.track.lock().closing;
        if !closing {
            link.heartbeat_if_idle(timing.heartbeat);
        }
        let st = link.track.lock();
        let oldest = [
            st.inflight.front().and_then(|c| c.written.map(|(t, _)| t)),
            st.heartbeats.front().map(|h| h.1),
        ]
        .into_iter()
        .flatten()
        .min();
        drop(st);
        if let Some(t) = oldest {
            if t.elapsed() > timing.timeout {
                link.track.fail(Broken::Silent(t.elapsed()));
            }
        }
    }
    let st = link.track.lock();
    if st.broken.is_some() {
        drop(st);
        link.shutdown();
    }
}

/// Applies one back-channel message.
fn handle(link: &LinkShared, m: &[u8; REPLY_LEN], offset: u64) -> Result<(), Broken> {
    let bad = |field| Broken::BadReply { offset, field };
    let reply = Reply::from_bytes(m, link.seed).map_err(bad)?;
    let mut st = link.track.lock();
    st.reply_bytes += REPLY_LEN as u64;
    match reply {
        Reply::Ack { seq, digest } => {
            let Some(front) = st.inflight.front() else {
                return Err(bad("acknowledgement of no checkpoint in flight"));
            };
            if front.seq != seq {
                return Err(bad("acknowledgement out of order"));
            }
            match front.written {
                Some((_, d)) if d != digest => {
                    return Err(bad("acknowledged digest differs from the one sent"))
                }
                None => return Err(bad("acknowledgement before the checkpoint was sent")),
                _ => {}
            }
            let c = st.inflight.pop_front().expect("checked above");
            let now = Instant::now();
            st.ack.record(now - c.begun);
            if let Some((t, _)) = c.written {
                st.sent_to_ack.record(now - t);
            }
            st.acked += 1;
            st.last_ack = Some((seq, digest));
        }
        Reply::HeartbeatReply { number } => {
            match st.heartbeats.front() {
                Some(&(n, _)) if n == number => {}
                _ => return Err(bad("heartbeat reply out of order")),
            }
            st.heartbeats.pop_front();
            st.heartbeat_replies += 1;
        }
        Reply::Refusal(r) => return Err(Broken::Refused(r)),
    }
    drop(st);
    link.track.cond.notify_all();
    Ok(())
}
