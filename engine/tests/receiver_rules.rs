//! Each rule of the stream violated once: each gets its own typed error and
//! leaves guest memory exactly as the last complete checkpoint left it.

use ckpt_engine::page::{entry, PageType};
use ckpt_engine::stream::{Digest, EndFrame, Event, Heartbeat, StreamError, StreamHeader, Trailer};
use ckpt_engine::{GuestMemory, Limits as ReceiverConfig, ReceiveError, Receiver, SparseMemory};
use ckpt_simd::{encode_full, scalar, Codec, Page, MAX_ENCODED_LEN};

const GUEST: u64 = 2048;

fn page(fill: u8) -> Box<Page> {
    let mut p = Box::new([fill; 4096]);
    p[7] = fill.wrapping_mul(3);
    p
}

const HEADER: StreamHeader = StreamHeader {
    guest_pages: GUEST,
    stream_id: 0x5eed,
};

/// Builds streams chunk by chunk; `.1` is where the current frame starts.
#[derive(Clone, Default)]
struct S(Vec<u8>, usize);

impl S {
    fn header() -> S {
        S(HEADER.to_bytes().to_vec(), 0)
    }
    fn i32(mut self, v: i32) -> S {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> S {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(mut self, b: &[u8]) -> S {
        self.0.extend_from_slice(b);
        self
    }
    fn frame(mut self, seq: u64) -> S {
        self.1 = self.0.len();
        self.bytes(b"CKPT").i32(0).u64(seq)
    }
    fn batch(self, entries: &[u64]) -> S {
        let mut s = self.i32(entries.len() as i32);
        for &e in entries {
            s = s.u64(e);
        }
        s
    }
    fn chunk(self, payload: &[u8]) -> S {
        self.i32(-12).u64(payload.len() as u64).bytes(payload)
    }
    fn end(self) -> S {
        self.i32(0)
    }
    fn trailer(self, seq: u64, pages: &[(u64, &Page)]) -> S {
        let mut d = Digest::new();
        for (pfn, p) in pages {
            d.add_page(&Codec::best(), *pfn, p);
        }
        let t = Trailer {
            seq,
            data_pages: d.pages(),
            digest: d.finish(),
        };
        let frame_crc = crc32c::crc32c_append(HEADER.check(), &self.0[self.1..]);
        self.bytes(&t.to_bytes(frame_crc))
    }
    fn heartbeat(self, next_seq: u64, number: u64) -> S {
        let h = Heartbeat { next_seq, number }.to_bytes(HEADER.check());
        self.bytes(&h)
    }
    fn stream_end(self, n: u64) -> S {
        let end = EndFrame { checkpoints: n }.to_bytes(HEADER.check());
        self.bytes(&end)
    }
}

fn normal(pfn: u64) -> u64 {
    entry(pfn, PageType::Normal)
}

/// Checkpoint 0: pfns 0..4 uncompressed (Format A), then ENABLE_COMPRESSION.
fn checkpoint0() -> S {
    checkpoint0_on(S::header())
}

/// Checkpoint 0 after what `s` holds.
fn checkpoint0_on(s: S) -> S {
    let mut s = s
        .frame(0)
        .batch(&[normal(0), normal(1), normal(2), normal(3)]);
    for k in 0..4u8 {
        s = s.bytes(&page(k)[..]);
    }
    let pages: Vec<(u64, Box<Page>)> = (0..4u8).map(|k| (k as u64, page(k))).collect();
    let refs: Vec<(u64, &Page)> = pages.iter().map(|(p, b)| (*p, &**b)).collect();
    s.i32(-13).end().trailer(0, &refs)
}

/// Compressed encodings for checkpoint 1: pfn 0 FULL, pfn 1 delta, pfn 2 EMPTY.
fn payload1() -> (Vec<u8>, Vec<(u64, Box<Page>)>) {
    let mut out = vec![0u8; 3 * MAX_ENCODED_LEN];
    let new0 = page(9);
    let mut o = encode_full(&new0, &mut out).unwrap();
    let mut reference = page(1);
    let mut new1 = page(1);
    new1[100] ^= 0xFF;
    o += scalar::encode(&new1, &mut reference, &mut out[o..]).unwrap();
    let mut same = page(2);
    o += scalar::encode(&page(2), &mut same, &mut out[o..]).unwrap();
    out.truncate(o);
    (out, vec![(0, new0), (1, new1), (2, page(2))])
}

fn valid_checkpoint1(s: S) -> S {
    let (payload, pages) = payload1();
    let refs: Vec<(u64, &Page)> = pages.iter().map(|(p, b)| (*p, &**b)).collect();
    s.frame(1)
        .batch(&[normal(0), normal(1), entry(40, PageType::XTab), normal(2)])
        .chunk(&payload)
        .end()
        .trailer(1, &refs)
}

fn state(mem: &SparseMemory) -> Vec<u64> {
    (0..GUEST)
        .map(|p| xxhash_rust::xxh3::xxh3_64(mem.page(p)))
        .collect()
}

fn limits() -> ReceiverConfig {
    ReceiverConfig::default()
}

/// Applies checkpoint 0 then expects checkpoint 1 to fail; returns the error.
fn reject(bytes: &[u8], limits: ReceiverConfig) -> ReceiveError {
    let mut rx = Receiver::new(bytes, limits, Codec::best()).unwrap();
    let mut mem = SparseMemory::new(GUEST);
    rx.next_checkpoint(&mut mem)
        .unwrap()
        .expect("checkpoint 0 is valid");
    let before = state(&mem);
    let err = rx
        .next_checkpoint(&mut mem)
        .expect_err("checkpoint 1 must be rejected");
    assert_eq!(
        state(&mem),
        before,
        "a rejected checkpoint changed memory ({err})"
    );
    err
}

#[test]
fn the_valid_stream_applies() {
    let bytes = valid_checkpoint1(checkpoint0()).stream_end(2).0;
    let mut rx = Receiver::new(&bytes[..], limits(), Codec::best()).unwrap();
    let mut mem = SparseMemory::new(GUEST);
    let a = rx.next_checkpoint(&mut mem).unwrap().unwrap();
    assert_eq!((a.full, a.data_pages), (4, 4));
    let b = rx.next_checkpoint(&mut mem).unwrap().unwrap();
    assert_eq!((b.full, b.delta, b.empty, b.entries), (1, 1, 1, 4));
    let (_, pages) = payload1();
    for (pfn, p) in pages {
        assert_eq!(mem.page(pfn)[..], p[..]);
    }
    assert!(rx.next_checkpoint(&mut mem).unwrap().is_none());
}

#[test]
fn each_rule_broken_once() {
    let (payload, pages) = payload1();
    let refs: Vec<(u64, &Page)> = pages.iter().map(|(p, b)| (*p, &**b)).collect();
    let page3 = page(3);
    let mut refs4 = refs.clone();
    refs4.push((3, &page3));
    let base = checkpoint0;
    let three = [normal(0), normal(1), normal(2)];
    let mut big_batch = vec![normal(5); 1025];
    big_batch
        .iter_mut()
        .enumerate()
        .for_each(|(i, e)| *e = normal(i as u64 % GUEST));
    let mut corrupt = payload.clone();
    corrupt[20] ^= 1; // inside pfn 0's FULL data
    let split = 4097 + 3;
    let five: Vec<u64> = (10..15).map(normal).collect();
    let mut fulls = vec![0u8; 5 * 4097];
    for k in 0..5 {
        encode_full(&page(k as u8), &mut fulls[k * 4097..]).unwrap();
    }

    type Case = (&'static str, S, ReceiverConfig, fn(&ReceiveError) -> bool);
    let cases: Vec<Case> = vec![
        (
            "batch of 1025 entries",
            base().frame(1).i32(1025),
            limits(),
            |e| {
                matches!(
                    e,
                    ReceiveError::Stream(StreamError::BatchTooLarge { count: 1025, .. })
                )
            },
        ),
        (
            "unknown page type 0x5",
            base().frame(1).batch(&[5 << 28]),
            limits(),
            |e| {
                matches!(
                    e,
                    ReceiveError::Stream(StreamError::BadEntry {
                        reason: "unknown page type",
                        ..
                    })
                )
            },
        ),
        (
            "reserved entry bits",
            base().frame(1).batch(&[1 << 40]),
            limits(),
            |e| {
                matches!(
                    e,
                    ReceiveError::Stream(StreamError::BadEntry {
                        reason: "bits 32..63 are set",
                        ..
                    })
                )
            },
        ),
        (
            "pfn equal to guest size",
            base().frame(1).batch(&[normal(GUEST)]),
            limits(),
            |e| {
                matches!(
                    e,
                    ReceiveError::Stream(StreamError::PfnOutOfRange { pfn: GUEST, .. })
                )
            },
        ),
        (
            "duplicate pfn",
            base().frame(1).batch(&[normal(3), normal(3)]),
            limits(),
            |e| {
                matches!(
                    e,
                    ReceiveError::Stream(StreamError::DuplicatePfn { pfn: 3, .. })
                )
            },
        ),
        (
            "pages before their entries",
            base()
                .frame(1)
                .batch(&three[..2])
                .chunk(&payload)
                .batch(&three[2..])
                .end()
                .trailer(1, &refs),
            limits(),
            |e| {
                matches!(
                    e,
                    ReceiveError::Stream(StreamError::PagesBeforeEntries {
                        page: 2,
                        entries: 2,
                        ..
                    })
                )
            },
        ),
        (
            "fewer pages than entries",
            base()
                .frame(1)
                .batch(&[normal(0), normal(1), normal(2), normal(3)])
                .chunk(&payload)
                .end()
                .trailer(1, &refs4),
            limits(),
            |e| {
                matches!(
                    e,
                    ReceiveError::Stream(StreamError::MissingPages {
                        entries: 4,
                        pages: 3,
                        ..
                    })
                )
            },
        ),
        (
            "page split across chunks",
            base()
                .frame(1)
                .batch(&three)
                .chunk(&payload[..split])
                .chunk(&payload[split..])
                .end()
                .trailer(1, &refs),
            limits(),
            |e| {
                matches!(
                    e,
                    ReceiveError::Stream(StreamError::BadPage { page: 1, .. })
                )
            },
        ),
        (
            "zero-length marker",
            base()
                .frame(1)
                .batch(&three)
                .i32(-12)
                .u64(4098)
                .bytes(&payload[..4097])
                .bytes(&[0x81])
                .end()
                .trailer(1, &refs),
            limits(),
            |e| matches!(e, ReceiveError::Stream(StreamError::BadPage { .. })),
        ),
        (
            "chunk over the limit",
            base().frame(1).batch(&three).i32(-12).u64(1 << 40),
            limits(),
            |e| matches!(e, ReceiveError::Stream(StreamError::ChunkTooLarge { .. })),
        ),
        (
            "checkpoint over the limit",
            base()
                .frame(1)
                .batch(&five)
                .chunk(&fulls[..3 * 4097])
                .chunk(&fulls[3 * 4097..]),
            ReceiverConfig {
                max_checkpoint_bytes: 4 * 4096,
                ..limits()
            },
            |e| {
                matches!(
                    e,
                    ReceiveError::Stream(StreamError::CheckpointTooLarge { limit: 16384, .. })
                )
            },
        ),
        (
            "too many entries",
            base()
                .frame(1)
                .batch(&big_batch[..600])
                .batch(&big_batch[600..1000]),
            ReceiverConfig {
                max_checkpoint_entries: 900,
                ..limits()
            },
            |e| {
                matches!(
                    e,
                    ReceiveError::Stream(StreamError::TooManyEntries { limit: 900, .. })
                )
            },
        ),
        (
            "compression enabled twice",
            base().frame(1).i32(-13),
            limits(),
            |e| matches!(e, ReceiveError::Stream(StreamError::EnableTwice { .. })),
        ),
        (
            "unknown chunk type",
            base().frame(1).i32(-20),
            limits(),
            |e| {
                matches!(
                    e,
                    ReceiveError::Stream(StreamError::UnknownChunk { ty: -20, .. })
                )
            },
        ),
        ("TMEM chunk", base().frame(1).i32(-5), limits(), |e| {
            matches!(
                e,
                ReceiveError::Stream(StreamError::UnsupportedChunk { ty: -5, .. })
            )
        }),
        (
            "trailer of another checkpoint",
            base()
                .frame(1)
                .batch(&three)
                .chunk(&payload)
                .end()
                .trailer(7, &refs),
            limits(),
            |e| matches!(e, ReceiveError::Stream(StreamError::BadFrame { .. })),
        ),
        (
            "trailer page count",
            base()
                .frame(1)
                .batch(&three)
                .chunk(&payload)
                .end()
                .trailer(1, &refs[..2]),
            limits(),
            |e| matches!(e, ReceiveError::Stream(StreamError::BadFrame { .. })),
        ),
        (
            "trailer magic",
            base()
                .frame(1)
                .batch(&three)
                .chunk(&payload)
                .end()
                .bytes(&[0u8; 48]),
            limits(),
            |e| {
                matches!(
                    e,
                    ReceiveError::Stream(StreamError::BadFrame {
                        field: "trailer magic",
                        ..
                    })
                )
            },
        ),
        (
            "corrupt page data",
            base()
                .frame(1)
                .batch(&three)
                .chunk(&corrupt)
                .end()
                .trailer(1, &refs),
            limits(),
            |e| matches!(e, ReceiveError::DigestMismatch { seq: 1, .. }),
        ),
        ("sequence gap", base().frame(2), limits(), |e| {
            matches!(
                e,
                ReceiveError::Stream(StreamError::Sequence {
                    expected: 1,
                    found: 2,
                    ..
                })
            )
        }),
        (
            "heartbeat with the wrong next sequence number",
            valid_checkpoint1(base().heartbeat(2, 0)),
            limits(),
            |e| matches!(e, ReceiveError::Stream(StreamError::BadFrame { .. })),
        ),
        (
            "heartbeat numbers with a gap",
            valid_checkpoint1(base().heartbeat(1, 0).heartbeat(1, 2)),
            limits(),
            |e| matches!(e, ReceiveError::Stream(StreamError::BadFrame { .. })),
        ),
        (
            "heartbeat of another stream",
            valid_checkpoint1(
                base().bytes(
                    &Heartbeat {
                        next_seq: 1,
                        number: 0,
                    }
                    .to_bytes(HEADER.check() ^ 1),
                ),
            ),
            limits(),
            |e| matches!(e, ReceiveError::Stream(StreamError::BadFrame { .. })),
        ),
        (
            "heartbeat inside a checkpoint frame",
            base().frame(1).heartbeat(1, 0),
            limits(),
            |e| matches!(e, ReceiveError::Stream(StreamError::BatchTooLarge { .. })),
        ),
        (
            "heartbeat cut short",
            S(
                base().heartbeat(1, 0).0[..checkpoint0().0.len() + 20].to_vec(),
                0,
            ),
            limits(),
            |e| matches!(e, ReceiveError::Stream(StreamError::Truncated { .. })),
        ),
        ("unknown frame", base().bytes(b"XXXX"), limits(), |e| {
            matches!(e, ReceiveError::Stream(StreamError::UnknownFrame { .. }))
        }),
        (
            "end frame with the wrong count",
            base().stream_end(9),
            limits(),
            |e| matches!(e, ReceiveError::Stream(StreamError::BadFrame { .. })),
        ),
        (
            "truncated inside a claimed chunk",
            base()
                .frame(1)
                .batch(&three)
                .i32(-12)
                .u64(1 << 20)
                .bytes(&[1, 2, 3]),
            limits(),
            |e| matches!(e, ReceiveError::Stream(StreamError::Truncated { .. })),
        ),
    ];
    let mut kinds = std::collections::HashSet::new();
    for (name, stream, lim, check) in cases {
        let err = reject(&stream.0, lim);
        assert!(check(&err), "{name}: got {err:?}");
        kinds.insert(match &err {
            ReceiveError::Stream(s) => format!("{:?}", std::mem::discriminant(s)),
            other => format!("receive {:?}", std::mem::discriminant(other)),
        });
    }
    assert!(kinds.len() >= 18, "{} distinct errors", kinds.len());
}

#[test]
fn heartbeats_between_checkpoints_are_checked_and_reported() {
    let bytes = valid_checkpoint1(checkpoint0().heartbeat(1, 0).heartbeat(1, 1))
        .heartbeat(2, 2)
        .stream_end(2)
        .0;
    // Heartbeats before the first checkpoint too.
    let shifted = valid_checkpoint1(
        checkpoint0_on(S::header().heartbeat(0, 0))
            .heartbeat(1, 1)
            .heartbeat(1, 2),
    )
    .heartbeat(2, 3)
    .stream_end(2)
    .0;
    for (stream, beats) in [
        (bytes, vec![(1, 0), (1, 1), (2, 2)]),
        (shifted, vec![(0, 0), (1, 1), (1, 2), (2, 3)]),
    ] {
        let mut rx = Receiver::new(&stream[..], limits(), Codec::best()).unwrap();
        let mut mem = SparseMemory::new(GUEST);
        let mut seen = Vec::new();
        let mut observe = |e: &Event| {
            if let Event::Heartbeat { heartbeat, .. } = e {
                seen.push((heartbeat.next_seq, heartbeat.number));
            }
        };
        let mut n = 0;
        while rx
            .next_checkpoint_observed(&mut mem, &mut observe)
            .unwrap()
            .is_some()
        {
            n += 1;
        }
        assert_eq!(n, 2);
        assert_eq!(seen, beats);
        let (_, pages) = payload1();
        for (pfn, p) in pages {
            assert_eq!(mem.page(pfn)[..], p[..]);
        }
    }
}

#[test]
fn format_a_rules() {
    // Compressed data before ENABLE_COMPRESSION.
    let s = S::header()
        .frame(0)
        .batch(&[entry(0, PageType::XTab)])
        .chunk(&[0x00]);
    let mut rx = Receiver::new(&s.0[..], limits(), Codec::best()).unwrap();
    let mut mem = SparseMemory::new(GUEST);
    let e = rx.next_checkpoint(&mut mem).unwrap_err();
    assert!(
        matches!(
            e,
            ReceiveError::Stream(StreamError::CompressedBeforeEnable { .. })
        ),
        "{e:?}"
    );
    assert_eq!(mem.resident(), 0);
}

#[test]
fn bad_headers_and_small_memory() {
    let mut bad = S::header().0;
    bad[0] = b'X';
    assert!(matches!(
        Receiver::new(&bad[..], limits(), Codec::best())
            .err()
            .unwrap(),
        ReceiveError::Stream(StreamError::NotAStream { .. })
    ));
    let mut bad = S::header().0;
    bad[20] ^= 1; // the guest size, caught by the header's check
    assert!(matches!(
        Receiver::new(&bad[..], limits(), Codec::best())
            .err()
            .unwrap(),
        ReceiveError::Stream(StreamError::BadHeader { .. })
    ));
    let mut old = S::header().0;
    old[8] = 1; // version 1
    assert!(matches!(
        Receiver::new(&old[..], limits(), Codec::best())
            .err()
            .unwrap(),
        ReceiveError::Stream(StreamError::UnsupportedVersion { found: 1 })
    ));
    let s = checkpoint0();
    let mut rx = Receiver::new(&s.0[..], limits(), Codec::best()).unwrap();
    let mut small = SparseMemory::new(GUEST - 1);
    assert!(matches!(
        rx.next_checkpoint(&mut small).unwrap_err(),
        ReceiveError::GuestTooLarge { .. }
    ));
    assert!(matches!(
        Receiver::new(&[0u8; 5][..], limits(), Codec::best())
            .err()
            .unwrap(),
        ReceiveError::Stream(StreamError::Truncated { .. })
    ));
}

#[test]
fn a_guest_larger_than_the_backup_accepts_is_refused_at_the_header() {
    let s = checkpoint0();
    let small = ReceiverConfig {
        max_guest_pages: GUEST - 1,
        ..limits()
    };
    assert!(matches!(
        Receiver::new(&s.0[..], small, Codec::best()).err().unwrap(),
        ReceiveError::Stream(StreamError::GuestTooLarge {
            guest_pages: GUEST,
            limit
        }) if limit == GUEST - 1
    ));
    let exact = ReceiverConfig {
        max_guest_pages: GUEST,
        ..limits()
    };
    assert!(Receiver::new(&s.0[..], exact, Codec::best()).is_ok());
}
