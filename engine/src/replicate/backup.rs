//! The backup's side of replication (`docs/REPLICATION.md`): listens for
//! its primary, receives each checkpoint with the [`Receiver`], commits it
//! to a [`Replica`] and then acknowledges it, answers heartbeats, and
//! declares the primary lost when neither a checkpoint nor a heartbeat
//! arrives within the timeout.
//!
//! One connection is served at a time. A new connection whose stream the
//! backup accepts takes over from the current one (a primary that
//! reconnects has given the old one up), so a connection that died
//! without a word does not hold the backup until the timeout.

use super::wire::{lineage, Refusal, Reply};
use super::ReplicateError;
use crate::stream::{Event, StreamError, StreamHeader};
use crate::{CheckpointInfo, Commit, Limits, ReceiveError, Receiver, Replica};
use ckpt_simd::Codec;
use crossbeam_channel::{unbounded, Receiver as Rx, RecvTimeoutError, Sender as Tx};
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Settings of a [`Backup`].
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// What a checkpoint may make the backup buffer.
    pub limits: Limits,
    /// The primary is lost when neither a checkpoint nor a heartbeat
    /// arrives for this long (counted from the first connection).
    pub timeout: Duration,
    /// How long to wait for the first connection; `None`: for ever.
    pub first_within: Option<Duration>,
    /// Accept a stream from another primary than the one whose checkpoint
    /// the image holds (its first checkpoint then replaces the image).
    pub start_over: bool,
}

impl BackupOptions {
    /// Default limits, a 2 s timeout, and only the image's own primary.
    pub fn new() -> BackupOptions {
        BackupOptions {
            limits: Limits::default(),
            timeout: Duration::from_secs(2),
            first_within: None,
            start_over: false,
        }
    }
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions::new()
    }
}

/// What happened, as it happens.
#[derive(Debug)]
#[non_exhaustive]
pub enum BackupEvent<'a> {
    /// A primary's stream was accepted.
    Connected {
        /// The primary's address.
        peer: SocketAddr,
        /// The stream's header.
        header: StreamHeader,
        /// The image holds an earlier stream of the same primary.
        reconnect: bool,
    },
    /// A connection was refused (and closed); the image is unchanged.
    Refused {
        /// Who connected.
        peer: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A checkpoint was committed and acknowledged.
    Committed {
        /// The stream.
        stream_id: u128,
        /// What was committed.
        info: &'a CheckpointInfo,
        /// From its first byte to its commit: receiving, verifying and
        /// committing it.
        took: Duration,
    },
    /// A heartbeat arrived and was answered.
    Heartbeat {
        /// Its number.
        number: u64,
    },
    /// The connection ended without the end of the stream; the image holds
    /// its last commit and the backup waits for the primary to reconnect.
    Disconnected {
        /// Why.
        reason: String,
        /// What the image holds.
        holds: Option<Commit>,
    },
}

/// How a backup's run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupEnd {
    /// The primary ended its stream; the image holds its last checkpoint.
    Ended {
        /// What the image holds.
        holds: Option<Commit>,
    },
    /// Neither a checkpoint nor a heartbeat arrived within the timeout:
    /// failover. The image holds the last checkpoint committed.
    PrimaryLost {
        /// What the image holds.
        holds: Option<Commit>,
        /// How long the primary had been silent.
        silent: Duration,
    },
}

/// What a handshake thread knows of the image.
#[derive(Clone, Copy)]
struct Snapshot {
    guest_pages: Option<u64>,
    holds: Option<Commit>,
    start_over: bool,
}

/// A connection whose header has been read.
struct Incoming {
    receiver: Receiver<TcpStream>,
    reply: TcpStream,
    peer: SocketAddr,
    reconnect: bool,
}

enum Arrival {
    Stream(Box<Incoming>),
    Refused(SocketAddr, String),
}

/// Builds the image for the first stream's guest size.
pub type CreateImage<M> = Box<dyn FnMut(u64) -> io::Result<M>>;

/// The backup: serves one primary, connection after connection.
pub struct Backup<M: Replica> {
    listener: TcpListener,
    codec: Codec,
    opts: BackupOptions,
    image: Option<M>,
    create: CreateImage<M>,
}

enum Outcome {
    Ended,
    Lost(String),
}

impl<M: Replica> Backup<M> {
    /// A backup listening on `listener`, committing to `image`, or, when
    /// there is none yet, to the one `create` makes for the first stream's
    /// guest size.
    pub fn new(
        listener: TcpListener,
        codec: Codec,
        opts: BackupOptions,
        image: Option<M>,
        create: CreateImage<M>,
    ) -> Backup<M> {
        Backup {
            listener,
            codec,
            opts,
            image,
            create,
        }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The image, once there is one.
    pub fn image(&self) -> Option<&M> {
        self.image.as_ref()
    }

    /// The image, for a final sync.
    pub fn image_mut(&mut self) -> Option<&mut M> {
        self.image.as_mut()
    }

    /// The image.
    pub fn into_image(self) -> Option<M> {
        self.image
    }

    fn snapshot(&self, start_over: bool) -> Snapshot {
        Snapshot {
            guest_pages: self.image.as_ref().map(|m| m.pages()),
            holds: self.image.as_ref().and_then(|m| m.holds()),
            start_over,
        }
    }

    /// Serves until the primary ends its stream or is lost, telling `on`
    /// what happens. Fails only when the image cannot commit (a disk
    /// error) or the listener fails.
    pub fn run(&mut self, on: &mut dyn FnMut(&BackupEvent)) -> Result<BackupEnd, ReplicateError> {
        self.listener.set_nonblocking(true)?;
        let listener = self.listener.try_clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let snapshot = Arc::new(Mutex::new(self.snapshot(self.opts.start_over)));
        let current: Arc<Mutex<Option<TcpStream>>> = Arc::new(Mutex::new(None));
        let (tx, rx) = unbounded::<Arrival>();
        let acceptor = {
            let (stop, snapshot, current) = (stop.clone(), snapshot.clone(), current.clone());
            let (limits, timeout, codec) =
                (self.opts.limits.clone(), self.opts.timeout, self.codec);
            std::thread::Builder::new()
                .name("ckpt-accept".into())
                .spawn(move || {
                    accept_loop(
                        listener, stop, snapshot, current, tx, limits, timeout, codec,
                    )
                })?
        };
        let result = self.serve_all(&rx, &snapshot, &current, on);
        stop.store(true, Ordering::SeqCst);
        if let Some(s) = current.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = s.shutdown(Shutdown::Both);
        }
        let _ = acceptor.join();
        result
    }

    fn serve_all(
        &mut self,
        rx: &Rx<Arrival>,
        snapshot: &Mutex<Snapshot>,
        current: &Mutex<Option<TcpStream>>,
        on: &mut dyn FnMut(&BackupEvent),
    ) -> Result<BackupEnd, ReplicateError> {
        let timeout = self.opts.timeout;
        let first_by = self.opts.first_within.map(|d| Instant::now() + d);
        let mut last_heard: Option<Instant> = None;
        loop {
            let arrival = match (last_heard, first_by) {
                (None, None) => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                (None, Some(by)) => rx.recv_timeout(by.saturating_duration_since(Instant::now())),
                (Some(t), _) => {
                    rx.recv_timeout((t + timeout).saturating_duration_since(Instant::now()))
                }
            };
            let inc = match arrival {
                Ok(Arrival::Stream(inc)) => inc,
                Ok(Arrival::Refused(peer, reason)) => {
                    on(&BackupEvent::Refused { peer, reason });
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Ok(BackupEnd::PrimaryLost {
                        holds: self.image.as_ref().and_then(|m| m.holds()),
                        silent: last_heard.map_or(timeout, |t| t.elapsed()),
                    })
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(ReplicateError::Io(io::Error::other("the listener stopped")))
                }
            };
            last_heard = Some(Instant::now());
            match self.serve(*inc, &mut last_heard, snapshot, current, on)? {
                Outcome::Ended => {
                    return Ok(BackupEnd::Ended {
                        holds: self.image.as_ref().and_then(|m| m.holds()),
                    })
                }
                Outcome::Lost(reason) => on(&BackupEvent::Disconnected {
                    reason,
                    holds: self.image.as_ref().and_then(|m| m.holds()),
                }),
            }
        }
    }

    /// Serves one connection until it ends.
    fn serve(
        &mut self,
        inc: Incoming,
        last_heard: &mut Option<Instant>,
        snapshot: &Mutex<Snapshot>,
        current: &Mutex<Option<TcpStream>>,
        on: &mut dyn FnMut(&BackupEvent),
    ) -> Result<Outcome, ReplicateError> {
        let Incoming {
            mut receiver,
            mut reply,
            peer,
            reconnect,
        } = inc;
        let header = *receiver.header();
        let seed = header.check();
        if self.image.is_none() {
            let m = (self.create)(header.guest_pages)?;
            self.image = Some(m);
        }
        let image = self.image.as_mut().expect("made above");
        if image.pages() != header.guest_pages {
            // The image was made after the handshake checked it.
            let image_pages = image.pages();
            refuse(&mut reply, Refusal::GuestSize { image_pages }, seed);
            return Ok(Outcome::Lost(format!(
                "{peer}: stream for {} pages refused, the image has {}",
                header.guest_pages,
                image.pages()
            )));
        }
        on(&BackupEvent::Connected {
            peer,
            header,
            reconnect,
        });
        loop {
            let mut started = None;
            let mut reply_error = None;
            let mut heartbeats = Vec::new();
            let result = receiver.next_checkpoint_observed(&mut *image, &mut |e| {
                if let Event::Checkpoint { .. } = e {
                    started = Some(Instant::now());
                }
                if let Event::Heartbeat { heartbeat, .. } = e {
                    *last_heard = Some(Instant::now());
                    heartbeats.push(heartbeat.number);
                    let r = Reply::HeartbeatReply {
                        number: heartbeat.number,
                    };
                    if let Err(e) = reply.write_all(&r.to_bytes(seed)) {
                        reply_error.get_or_insert(e);
                    }
                }
            });
            for number in heartbeats {
                on(&BackupEvent::Heartbeat { number });
            }
            match result {
                Ok(Some(info)) => {
                    *last_heard = Some(Instant::now());
                    let took = started.map_or(Duration::ZERO, |t| t.elapsed());
                    let ack = Reply::Ack {
                        seq: info.seq,
                        digest: info.digest,
                    };
                    let sent = reply.write_all(&ack.to_bytes(seed));
                    image.settle().map_err(|source| {
                        ReplicateError::Commit(ReceiveError::Commit {
                            seq: info.seq,
                            source,
                        })
                    })?;
                    {
                        let mut s = snapshot.lock().unwrap_or_else(|p| p.into_inner());
                        s.holds = image.holds();
                        s.guest_pages = Some(image.pages());
                        s.start_over = false;
                    }
                    on(&BackupEvent::Committed {
                        stream_id: header.stream_id,
                        info: &info,
                        took,
                    });
                    if let Err(e) = sent.and(reply_error.map_or(Ok(()), Err)) {
                        return Ok(Outcome::Lost(format!(
                            "{peer}: the acknowledgement of checkpoint {} could not be sent: {e}",
                            info.seq
                        )));
                    }
                }
                Ok(None) => {
                    current.lock().unwrap_or_else(|p| p.into_inner()).take();
                    return Ok(Outcome::Ended);
                }
                Err(e @ ReceiveError::Commit { .. }) => return Err(ReplicateError::Commit(e)),
                Err(ReceiveError::Stream(StreamError::Io { source, offset }))
                    if matches!(
                        source.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(Outcome::Lost(format!(
                        "{peer}: nothing arrived for {:?} (stream offset {offset})",
                        self.opts.timeout
                    )));
                }
                Err(ReceiveError::Stream(
                    e @ (StreamError::Io { .. } | StreamError::Truncated { .. }),
                )) => {
                    return Ok(Outcome::Lost(format!("{peer}: connection ended: {e}")));
                }
                Err(e) => {
                    let seq = receiver_next_seq(&e, image.holds(), header.stream_id);
                    refuse(&mut reply, Refusal::Rejected { seq }, seed);
                    return Ok(Outcome::Lost(format!(
                        "{peer}: checkpoint {seq} rejected, image kept: {e}"
                    )));
                }
            }
        }
    }
}

/// Sends a refusal and closes the connection so that the primary reads it:
/// the writing side first, then what the primary still sends is read and
/// dropped for a moment, since closing with unread bytes would reset the
/// connection and could lose the refusal on its way.
fn refuse(sock: &mut TcpStream, refusal: Refusal, seed: u32) {
    let _ = sock.write_all(&Reply::Refusal(refusal).to_bytes(seed));
    let _ = sock.shutdown(Shutdown::Write);
    let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
    let until = Instant::now() + Duration::from_millis(500);
    let mut sink = vec![0u8; 64 << 10];
    while Instant::now() < until {
        match std::io::Read::read(sock, &mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = sock.shutdown(Shutdown::Both);
}

/// The sequence number of the checkpoint a receive error concerns: the one
/// after the stream's last commit.
fn receiver_next_seq(e: &ReceiveError, holds: Option<Commit>, stream_id: u128) -> u64 {
    if let ReceiveError::DigestMismatch { seq, .. } = e {
        return *seq;
    }
    match holds {
        Some(c) if c.stream_id == stream_id => c.seq + 1,
        _ => 0,
    }
}

/// Accepts connections, reads and checks their headers, and hands the
/// accepted ones to the serving thread, superseding the current one.
#[allow(clippy::too_many_arguments)]
fn accept_loop(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    snapshot: Arc<Mutex<Snapshot>>,
    current: Arc<Mutex<Option<TcpStream>>>,
    tx: Tx<Arrival>,
    limits: Limits,
    timeout: Duration,
    codec: Codec,
) {
    let pending = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::SeqCst) {
        let Ok((sock, peer)) = listener.accept() else {
            // Nothing to accept yet (or a transient failure): look again.
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        // Connections that send nothing must not pile up threads.
        if pending.load(Ordering::SeqCst) >= MAX_HANDSHAKES {
            let _ = tx.send(Arrival::Refused(
                peer,
                format!("{MAX_HANDSHAKES} connections are already sending their headers"),
            ));
            continue;
        }
        pending.fetch_add(1, Ordering::SeqCst);
        let (snapshot, current, tx, limits, stop, done) = (
            snapshot.clone(),
            current.clone(),
            tx.clone(),
            limits.clone(),
            stop.clone(),
            pending.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name("ckpt-handshake".into())
            .spawn(move || {
                let a = handshake(sock, peer, &snapshot, &current, limits, timeout, codec);
                done.fetch_sub(1, Ordering::SeqCst);
                if !stop.load(Ordering::SeqCst) {
                    let _ = tx.send(a);
                }
            });
        if spawned.is_err() {
            pending.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Most connections reading their header at once.
const MAX_HANDSHAKES: usize = 16;

/// Reads a new connection's header and decides whether to serve it.
fn handshake(
    sock: TcpStream,
    peer: SocketAddr,
    snapshot: &Mutex<Snapshot>,
    current: &Mutex<Option<TcpStream>>,
    limits: Limits,
    timeout: Duration,
    codec: Codec,
) -> Arrival {
    let setup = || -> io::Result<TcpStream> {
        sock.set_nonblocking(false)?;
        sock.set_nodelay(true)?;
        sock.set_read_timeout(Some(timeout))?;
        sock.set_write_timeout(Some(timeout))?;
        sock.try_clone()
    };
    let reply = match setup() {
        Ok(r) => r,
        Err(e) => return Arrival::Refused(peer, e.to_string()),
    };
    let receiver = match Receiver::new(sock, limits, codec) {
        Ok(r) => r,
        Err(e) => {
            let _ = reply.shutdown(Shutdown::Both);
            return Arrival::Refused(peer, format!("not a stream: {e}"));
        }
    };
    let header = *receiver.header();
    let snap = *snapshot.lock().unwrap_or_else(|p| p.into_inner());
    let refusal = match (snap.guest_pages, snap.holds) {
        (Some(p), _) if p != header.guest_pages => Some(Refusal::GuestSize { image_pages: p }),
        (_, Some(h)) if lineage(h.stream_id) != lineage(header.stream_id) && !snap.start_over => {
            Some(Refusal::OtherPrimary)
        }
        _ => None,
    };
    let mut reply = reply;
    if let Some(r) = refusal {
        refuse(&mut reply, r, header.check());
        return Arrival::Refused(peer, r.to_string());
    }
    let reconnect = snap
        .holds
        .is_some_and(|h| lineage(h.stream_id) == lineage(header.stream_id));
    // A primary that connects again has given up its old connection.
    let handle = match reply.try_clone() {
        Ok(h) => h,
        Err(e) => return Arrival::Refused(peer, e.to_string()),
    };
    if let Some(old) = current
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .replace(handle)
    {
        let _ = old.shutdown(Shutdown::Both);
    }
    Arrival::Stream(Box::new(Incoming {
        receiver,
        reply,
        peer,
        reconnect,
    }))
}
