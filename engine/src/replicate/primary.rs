//! The primary's side of replication (`docs/REPLICATION.md`): a
//! [`Sender`] whose stream goes over a TCP connection to the backup, with
//! acknowledgements coming back on the same connection.
//!
//! The primary keeps at most `window` checkpoints unacknowledged: the next
//! one waits in [`Primary::begin_checkpoint`] (or [`Primary::wait_ready`])
//! until an acknowledgement makes room. While it has nothing to send it
//! sends heartbeats. A connection that fails, or a backup that answers
//! nothing within the timeout, is dropped; the checkpoints it carried
//! unacknowledged are lost, and the next checkpoint goes on a new
//! connection with a new stream (same lineage, new id) and must be a full
//! one, since the delta cache no longer matches what the backup holds.

use super::link::{monitor, Broken, Inflight, Link, LinkShared, Timing};
use super::{Refusal, ReplicateError};
use crate::page::PageType;
use crate::stream::StreamHeader;
use crate::{Latencies, Latency, SendError, SendStats, Sender, SenderOptions};
use ckpt_simd::{Codec, Page};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Settings of a [`Primary`].
#[derive(Clone, Debug)]
pub struct PrimaryOptions {
    /// The sender's settings (guest size, cache, threads, the backup's
    /// limits); its `stream_id` is ignored: the primary draws one per
    /// connection.
    pub sender: SenderOptions,
    /// Most checkpoints unacknowledged at once (at least 1).
    pub window: usize,
    /// A heartbeat goes after this long without anything sent.
    pub heartbeat: Duration,
    /// The backup is lost when a checkpoint or heartbeat goes unanswered,
    /// or a write blocks, this long.
    pub timeout: Duration,
    /// How long the primary goes on trying to reach the backup before it
    /// gives up, counted from when it last had a connection with an
    /// acknowledgement (a connection that fails before its first
    /// acknowledgement does not restart the count). Zero: it never
    /// reconnects.
    pub reconnect_for: Duration,
    /// The high 64 bits of every stream id, kept across reconnects so the
    /// backup knows this primary; `None` draws a random one.
    pub lineage: Option<u64>,
}

impl PrimaryOptions {
    /// Defaults for a guest of `guest_pages` pages: window 1, a heartbeat
    /// every 100 ms, a 2 s timeout, 10 s of reconnecting.
    pub fn new(guest_pages: u64) -> PrimaryOptions {
        PrimaryOptions {
            sender: SenderOptions::new(guest_pages),
            window: 1,
            heartbeat: Duration::from_millis(100),
            timeout: Duration::from_secs(2),
            reconnect_for: Duration::from_secs(10),
            lineage: None,
        }
    }
}

/// What the next checkpoint must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointKind {
    /// Every non-zero page of the guest: the first checkpoint of a stream,
    /// which describes the whole guest (pages it leaves out are zero).
    Full,
    /// The pages dirtied since the last checkpoint.
    Incremental,
}

/// What became of a checkpoint once it was ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Handed to the connection as checkpoint `seq` of stream `stream_id`;
    /// its acknowledgement is counted in the [`PrimaryReport`].
    Sent {
        /// The stream.
        stream_id: u128,
        /// Its sequence number there.
        seq: u64,
    },
    /// The connection failed while it was being sent: the next checkpoint
    /// will be a full one on a new connection.
    Lost,
}

/// Latencies per checkpoint, over every connection.
#[derive(Clone, Debug, Default)]
pub struct ReplicationLatencies {
    /// From `begin_checkpoint` to the return of `end_checkpoint`: what the
    /// guest is paused for.
    pub pause: Latency,
    /// Compressing the checkpoint's pages.
    pub compress: Latency,
    /// Writing its frame to the connection.
    pub send: Latency,
    /// From `begin_checkpoint` to the backup's acknowledgement.
    pub ack: Latency,
    /// From the trailer's write to the acknowledgement: the backup's
    /// receive, verify and commit, and the network.
    pub sent_to_ack: Latency,
}

/// What a primary did.
#[derive(Clone, Debug, Default)]
pub struct PrimaryReport {
    /// Checkpoints begun.
    pub checkpoints: u64,
    /// Checkpoints the backup acknowledged.
    pub acknowledged: u64,
    /// Checkpoints begun on a connection that failed before the backup
    /// acknowledged them.
    pub lost: u64,
    /// Connections made (streams started).
    pub connections: u64,
    /// Why each connection but a cleanly ended one ended.
    pub breaks: Vec<String>,
    /// The last acknowledgement: (stream id, sequence number, digest).
    pub last_acknowledged: Option<(u128, u64, u128)>,
    /// The stream ended cleanly with every checkpoint acknowledged.
    pub in_sync: bool,
    /// What the senders wrote, summed over streams (`input_bytes` is the
    /// raw page bytes, `output_bytes` the streams' bytes).
    pub sent: SendStats,
    /// Bytes written to the connections: the streams and heartbeats.
    pub wire_out: u64,
    /// Heartbeats sent.
    pub heartbeats: u64,
    /// Bytes read from the back channel: acknowledgements and replies.
    pub wire_in: u64,
    /// Heartbeat replies received.
    pub heartbeat_replies: u64,
    /// Latencies per checkpoint.
    pub latencies: ReplicationLatencies,
    /// Time since the primary started.
    pub elapsed: Duration,
}

fn add_stats(into: &mut SendStats, s: &SendStats) {
    into.checkpoints += s.checkpoints;
    into.entries += s.entries;
    into.pages += s.pages;
    into.input_bytes += s.input_bytes;
    into.output_bytes += s.output_bytes;
    into.payload_bytes += s.payload_bytes;
    into.counts.add(&s.counts);
    into.uncompressed += s.uncompressed;
    into.uncompressed_output_bytes += s.uncompressed_output_bytes;
    into.compress_time += s.compress_time;
}

/// Adds one connection's figures into `r`.
fn absorb(r: &mut PrimaryReport, link: &LinkShared, stats: &SendStats, lat: &Latencies) {
    add_stats(&mut r.sent, stats);
    r.latencies.pause.merge(&lat.stage);
    r.latencies.compress.merge(&lat.compress);
    r.latencies.send.merge(&lat.write);
    let (bytes, heartbeats) = link.written();
    r.wire_out += bytes;
    r.heartbeats += heartbeats;
    let st = link.track.lock();
    r.acknowledged += st.acked;
    r.wire_in += st.reply_bytes;
    r.heartbeat_replies += st.heartbeat_replies;
    r.latencies.ack.merge(&st.ack);
    r.latencies.sent_to_ack.merge(&st.sent_to_ack);
}

fn connection_error(e: &SendError) -> bool {
    matches!(e, SendError::Write(_) | SendError::Finished)
}

struct Conn {
    sender: Sender<Link>,
    link: Arc<LinkShared>,
    monitor: Option<JoinHandle<()>>,
    stream_id: u128,
    /// The stream's full checkpoint has been sent.
    full_done: bool,
    next_seq: u64,
}

struct Open {
    kind: CheckpointKind,
    /// The connection failed: the rest of the checkpoint goes nowhere.
    lost: bool,
}

/// The primary: replicates checkpoints to a backup over TCP.
pub struct Primary {
    addrs: Vec<SocketAddr>,
    addr_text: String,
    codec: Codec,
    opts: PrimaryOptions,
    lineage: u64,
    conn: Option<Conn>,
    open: Option<Open>,
    refused: Option<Refusal>,
    /// Figures of the connections already closed.
    done: PrimaryReport,
    started: Instant,
    /// Since when no connection has had an acknowledgement: the
    /// reconnect time counts from here, so that a backup that accepts
    /// connections and drops them does not hold the primary for ever.
    down_since: Option<Instant>,
    /// When the last connection was made.
    last_start: Option<Instant>,
}

impl Primary {
    /// Connects to the backup at `addr` (retrying for
    /// `opts.reconnect_for`) and starts the first stream.
    pub fn connect(
        addr: impl ToSocketAddrs,
        codec: Codec,
        opts: PrimaryOptions,
    ) -> Result<Primary, ReplicateError> {
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
        if addrs.is_empty() {
            return Err(ReplicateError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the address names no host",
            )));
        }
        if opts.window == 0 {
            return Err(ReplicateError::Send(SendError::Options(
                "a window of 0 checkpoints".into(),
            )));
        }
        let lineage = opts
            .lineage
            .unwrap_or_else(|| (StreamHeader::new(1).stream_id >> 64) as u64);
        let mut p = Primary {
            addr_text: addrs[0].to_string(),
            addrs,
            codec,
            opts,
            lineage,
            conn: None,
            open: None,
            refused: None,
            done: PrimaryReport::default(),
            started: Instant::now(),
            down_since: None,
            last_start: None,
        };
        p.ensure_connected()?;
        Ok(p)
    }

    /// The lineage: the high half of every stream id this primary uses.
    pub fn lineage(&self) -> u64 {
        self.lineage
    }

    /// The current stream's id, while connected.
    pub fn stream_id(&self) -> Option<u128> {
        self.conn.as_ref().map(|c| c.stream_id)
    }

    /// Closes the current connection: whatever it carried unacknowledged
    /// is lost.
    fn drop_connection(&mut self) {
        let Some(mut c) = self.conn.take() else {
            return;
        };
        c.link.shutdown();
        let stats = c.sender.stats();
        let lat = c.sender.latencies();
        drop(c.sender);
        if let Some(m) = c.monitor.take() {
            let _ = m.join();
        }
        absorb(&mut self.done, &c.link, &stats, &lat);
        let st = c.link.track.lock();
        self.done.lost += st.inflight.len() as u64;
        if let Some((seq, digest)) = st.last_ack {
            self.done.last_acknowledged = Some((c.stream_id, seq, digest));
        }
        let why = st.broken.clone().unwrap_or(Broken::Closed);
        if let Broken::Refused(r) = &why {
            if !r.retryable() {
                self.refused = Some(*r);
            }
        }
        self.done.breaks.push(why.to_string());
    }

    /// Makes sure a healthy connection is up, reconnecting if needed.
    fn ensure_connected(&mut self) -> Result<(), ReplicateError> {
        if let Some(c) = &self.conn {
            let st = c.link.track.lock();
            if st.broken.is_none() {
                if st.acked > 0 {
                    self.down_since = None;
                }
                return Ok(());
            }
        }
        let first = self.conn.is_none() && self.done.connections == 0;
        self.drop_connection();
        if let Some(r) = self.refused {
            return Err(ReplicateError::Refused(r));
        }
        let started = *self.down_since.get_or_insert_with(Instant::now);
        let deadline = started + self.opts.reconnect_for;
        let mut last_error = String::from("the connection failed before an acknowledgement");
        let mut tries = 0;
        loop {
            let now = Instant::now();
            if (tries > 0 || !first) && now >= deadline {
                return Err(ReplicateError::BackupLost {
                    addr: self.addr_text.clone(),
                    waited: now - started,
                    last_error,
                    last_acknowledged: match self.done.last_acknowledged {
                        Some((stream, seq, digest)) => {
                            format!("{seq} of stream {stream:032x} (digest {digest:032x})")
                        }
                        None => "none".into(),
                    },
                });
            }
            // A connection that just failed is not retried at once.
            if let Some(t) = self.last_start {
                let pause = Duration::from_millis(50).saturating_sub(t.elapsed());
                std::thread::sleep(pause.min(deadline.saturating_duration_since(now)));
            }
            tries += 1;
            self.last_start = Some(Instant::now());
            for addr in self.addrs.clone() {
                let left = deadline.saturating_duration_since(Instant::now());
                let wait = self.opts.timeout.min(left).max(Duration::from_millis(10));
                match TcpStream::connect_timeout(&addr, wait) {
                    Ok(sock) => match self.start(sock) {
                        Ok(()) => return Ok(()),
                        Err(e) => last_error = e.to_string(),
                    },
                    Err(e) => last_error = e.to_string(),
                }
            }
        }
    }

    /// Starts a stream on a new connection.
    fn start(&mut self, sock: TcpStream) -> Result<(), ReplicateError> {
        sock.set_nodelay(true)?;
        sock.set_write_timeout(Some(self.opts.timeout))?;
        let low = StreamHeader::new(1).stream_id as u64;
        let stream_id = (self.lineage as u128) << 64 | low as u128;
        let guest_pages = self.opts.sender.guest_pages;
        let header = StreamHeader {
            guest_pages,
            stream_id,
        };
        let link = LinkShared::new(sock.try_clone()?, &header)?;
        let opts = SenderOptions {
            stream_id: Some(stream_id),
            ..self.opts.sender.clone()
        };
        let sender = Sender::new(Link(link.clone()), self.codec, &opts)?;
        let timing = Timing {
            heartbeat: self.opts.heartbeat,
            timeout: self.opts.timeout,
        };
        let l = link.clone();
        let monitor = std::thread::Builder::new()
            .name("ckpt-backchannel".into())
            .spawn(move || monitor(sock, l, timing))?;
        self.conn = Some(Conn {
            sender,
            link,
            monitor: Some(monitor),
            stream_id,
            full_done: false,
            next_seq: 0,
        });
        self.done.connections += 1;
        Ok(())
    }

    /// Waits until a checkpoint may begin: a connection is up (reconnecting
    /// if the last one failed) and fewer than `window` checkpoints are
    /// unacknowledged. Says what the next checkpoint must hold; a caller
    /// that captures its pages before [`Primary::begin_checkpoint`] calls
    /// this first.
    pub fn wait_ready(&mut self) -> Result<CheckpointKind, ReplicateError> {
        loop {
            self.ensure_connected()?;
            let conn = self.conn.as_ref().expect("connected");
            let kind = if conn.full_done {
                CheckpointKind::Incremental
            } else {
                CheckpointKind::Full
            };
            let st = conn.link.track.lock();
            if st.broken.is_some() {
                continue;
            }
            if st.inflight.len() < self.opts.window {
                return Ok(kind);
            }
            let _ = conn
                .link
                .track
                .cond
                .wait_timeout(st, Duration::from_millis(20));
        }
    }

    /// Starts a checkpoint (the guest has just been paused), after
    /// [`Primary::wait_ready`]'s wait. Returns what it must hold: on
    /// [`CheckpointKind::Full`] the caller sends every non-zero page.
    pub fn begin_checkpoint(&mut self) -> Result<CheckpointKind, ReplicateError> {
        if self.open.is_some() {
            return Err(ReplicateError::Sequence(
                "begin_checkpoint inside a checkpoint",
            ));
        }
        let kind = self.wait_ready()?;
        let conn = self.conn.as_mut().expect("connected");
        conn.link.track.lock().inflight.push_back(Inflight {
            seq: conn.next_seq,
            begun: Instant::now(),
            written: None,
        });
        let lost = match conn.sender.begin_checkpoint() {
            Ok(()) => false,
            Err(e) if connection_error(&e) => true,
            Err(e) => {
                conn.link.track.lock().inflight.pop_back();
                return Err(e.into());
            }
        };
        self.done.checkpoints += 1;
        self.open = Some(Open { kind, lost });
        Ok(kind)
    }

    fn with_sender(
        &mut self,
        what: &'static str,
        f: impl FnOnce(&mut Sender<Link>) -> Result<(), SendError>,
    ) -> Result<(), ReplicateError> {
        let open = self.open.as_mut().ok_or(ReplicateError::Sequence(what))?;
        if open.lost {
            return Ok(());
        }
        let conn = self.conn.as_mut().expect("a checkpoint is open");
        match f(&mut conn.sender) {
            Ok(()) => Ok(()),
            Err(e) if connection_error(&e) => {
                open.lost = true;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Adds one PFN entry (see [`Sender::page`]).
    pub fn page(
        &mut self,
        pfn: u64,
        ty: PageType,
        page: Option<&Page>,
    ) -> Result<(), ReplicateError> {
        self.with_sender("page outside a checkpoint", |s| s.page(pfn, ty, page))
    }

    /// Queues a toolstack chunk (see [`Sender::toolstack_chunk`]).
    pub fn toolstack_chunk(&mut self, id: i32, payload: &[u8]) -> Result<(), ReplicateError> {
        self.with_sender("toolstack chunk outside a checkpoint", |s| {
            s.toolstack_chunk(id, payload)
        })
    }

    /// Ends the checkpoint: the guest may resume. A full checkpoint
    /// switches the stream to compression.
    pub fn end_checkpoint(&mut self) -> Result<Delivery, ReplicateError> {
        let kind = match &self.open {
            Some(o) => o.kind,
            None => {
                return Err(ReplicateError::Sequence(
                    "end_checkpoint outside a checkpoint",
                ))
            }
        };
        if kind == CheckpointKind::Full {
            self.with_sender("", |s| s.enable_compression())?;
        }
        self.with_sender("", |s| s.end_checkpoint())?;
        let open = self.open.take().expect("checked above");
        if open.lost {
            return Ok(Delivery::Lost);
        }
        let conn = self.conn.as_mut().expect("a checkpoint was open");
        let seq = conn.next_seq;
        conn.next_seq += 1;
        if kind == CheckpointKind::Full {
            conn.full_done = true;
        }
        Ok(Delivery::Sent {
            stream_id: conn.stream_id,
            seq,
        })
    }

    /// Waits until every checkpoint sent has been acknowledged (`true`) or
    /// the connection has failed (`false`: the next checkpoint goes on a
    /// new connection, full).
    pub fn wait_acknowledged(&mut self) -> bool {
        let Some(conn) = &self.conn else {
            return false;
        };
        let mut st = conn.link.track.lock();
        loop {
            if st.broken.is_some() {
                return false;
            }
            if st.inflight.is_empty() {
                return conn.full_done;
            }
            st = conn
                .link
                .track
                .cond
                .wait_timeout(st, Duration::from_millis(20))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// What the primary has done so far.
    pub fn report(&self) -> PrimaryReport {
        let mut r = self.done.clone();
        if let Some(c) = &self.conn {
            absorb(&mut r, &c.link, &c.sender.stats(), &c.sender.latencies());
            if let Some((seq, digest)) = c.link.track.lock().last_ack {
                r.last_acknowledged = Some((c.stream_id, seq, digest));
            }
        }
        r.elapsed = self.started.elapsed();
        r
    }

    /// Waits for the outstanding acknowledgements, ends the stream and
    /// closes the connection. The report says whether the backup holds
    /// the last checkpoint ([`PrimaryReport::in_sync`]).
    pub fn finish(mut self) -> Result<PrimaryReport, ReplicateError> {
        if self.open.is_some() {
            return Err(ReplicateError::Sequence("finish inside a checkpoint"));
        }
        if !self.wait_acknowledged() {
            self.drop_connection();
            return Ok(self.report());
        }
        let mut c = self.conn.take().expect("connected");
        c.link.track.lock().closing = true;
        let (stats, lat) = match c.sender.finish() {
            Ok((_, stats, lat)) => (stats, lat),
            Err(e) => {
                c.link.track.fail(Broken::Io(e.to_string()));
                (SendStats::default(), Latencies::default())
            }
        };
        c.link.shutdown_write();
        // The backup closes once it has read the end of the stream.
        let deadline = Instant::now() + self.opts.timeout;
        let mut st = c.link.track.lock();
        while !st.ended && st.broken.is_none() && Instant::now() < deadline {
            st = c
                .link
                .track
                .cond
                .wait_timeout(st, Duration::from_millis(20))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        let ended = st.ended && st.broken.is_none();
        let last = st.last_ack;
        drop(st);
        c.link.shutdown();
        if let Some(m) = c.monitor.take() {
            let _ = m.join();
        }
        absorb(&mut self.done, &c.link, &stats, &lat);
        if let Some((seq, digest)) = last {
            self.done.last_acknowledged = Some((c.stream_id, seq, digest));
        }
        if !ended {
            self.done
                .breaks
                .push("the backup did not close after the end of the stream".into());
        }
        self.done.in_sync = ended;
        self.done.elapsed = self.started.elapsed();
        Ok(self.done.clone())
    }
}

impl Drop for Primary {
    fn drop(&mut self) {
        if let Some(c) = &self.conn {
            c.link.shutdown();
        }
    }
}
