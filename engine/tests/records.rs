//! The record stream end to end (docs/RECORDS.md): sender pipeline ->
//! record stream -> receiver -> memory, for each placement of the zstd
//! stage; every single-byte corruption and every truncation detected
//! before anything is applied; the reader's rules broken one at a time.

use ckpt_engine::stream::records::{
    to_xen_entry, Integrity, RecordError, RecordInfo, RecordWriter, StreamInfo, REC_CHECKPOINT,
    REC_CKPT_INTEGRITY, REC_END,
};
use ckpt_engine::stream::{Digest, StreamError};
use ckpt_engine::{
    CompressOptions, Event, Format, GuestMemory, Limits, ReceiveError, Receiver, Sender,
    SenderOptions, SparseMemory, ZstdPlacement, ZstdStage,
};
use ckpt_lab::replay::send_checkpoint;
use ckpt_lab::synth::Scenario;
use ckpt_simd::{Codec, Page};

/// One checkpoint's data pages as sent: (pfn, content).
type Sent = Vec<Vec<(u64, Box<Page>)>>;

fn options(guest: u64, threads: usize, ring: usize, zstd: Option<ZstdStage>) -> SenderOptions {
    SenderOptions {
        compress: CompressOptions {
            cache_pages: 600,
            threads,
            pin_threads: false,
            ..CompressOptions::default()
        },
        ring_pages: ring,
        stream_id: Some(7),
        format: Format::Records,
        zstd,
        ..SenderOptions::new(guest)
    }
}

fn send(opts: &SenderOptions, seed: u64, sizes: &[usize]) -> (Vec<u8>, Sent) {
    let mut sender = Sender::new(Vec::new(), Codec::best(), opts).unwrap();
    let mut sent = Vec::new();
    for cp in Scenario::new(opts.guest_pages, seed, sizes) {
        send_checkpoint(&mut sender, &cp).unwrap();
        let data = cp.entries.iter().filter(|(_, ty)| ty.carries_data());
        sent.push(
            data.zip(cp.pages.iter())
                .map(|(&(pfn, _), p)| (pfn, Box::new(p.0)))
                .collect(),
        );
    }
    let (bytes, stats, _) = sender.finish().unwrap();
    assert_eq!(stats.checkpoints as usize, sizes.len() + 1);
    assert_eq!(stats.output_bytes, bytes.len() as u64);
    (bytes, sent)
}

/// Receives a whole stream, checking every page of every checkpoint.
fn receive_all(bytes: &[u8], guest: u64, sent: &Sent) {
    let mut rx = Receiver::new(bytes, Limits::default(), Codec::best()).unwrap();
    assert_eq!(rx.format(), Format::Records);
    let mut mem = SparseMemory::new(guest);
    for cp in sent {
        let info = rx.next_checkpoint(&mut mem).unwrap().expect("a checkpoint");
        assert_eq!(info.data_pages as usize, cp.len());
        for (pfn, page) in cp {
            assert_eq!(
                mem.page(*pfn)[..],
                page[..],
                "pfn {pfn}, checkpoint {}",
                info.seq
            );
        }
    }
    assert!(rx.next_checkpoint(&mut mem).unwrap().is_none());
}

const SIZES: [usize; 8] = [300, 1100, 0, 700, 1024, 50, 2500, 9];

#[test]
fn round_trip_for_every_stage_and_placement() {
    let stages = [
        None,
        Some(ZstdStage {
            level: 1,
            placement: ZstdPlacement::Segments,
        }),
        Some(ZstdStage {
            level: -5,
            placement: ZstdPlacement::Thread,
        }),
    ];
    for zstd in stages {
        for threads in [1, 2] {
            let opts = options(3000, threads, 1024, zstd);
            let (bytes, sent) = send(&opts, 11, &SIZES);
            receive_all(&bytes, 3000, &sent);
        }
    }
}

#[test]
fn output_is_identical_for_every_thread_count_with_one_frame_per_record() {
    for zstd in [
        None,
        Some(ZstdStage {
            level: 1,
            placement: ZstdPlacement::Thread,
        }),
    ] {
        let one = send(&options(3000, 1, 1024, zstd), 5, &SIZES).0;
        for threads in [2, 3] {
            assert!(one == send(&options(3000, threads, 1024, zstd), 5, &SIZES).0);
        }
    }
}

#[test]
fn the_stage_makes_page_records_smaller_and_says_so() {
    let plain = send(&options(3000, 1, 1024, None), 3, &SIZES).0;
    let staged = send(
        &options(3000, 1, 1024, Some(ZstdStage::default())),
        3,
        &SIZES,
    )
    .0;
    assert!(staged.len() < plain.len());
    // Every compressed page record of the staged stream went through zstd,
    // and states the same encoded length as the plain stream's.
    let records = |bytes: &[u8]| {
        let mut rx = Receiver::new(bytes, Limits::default(), Codec::best()).unwrap();
        let mut mem = SparseMemory::new(3000);
        let mut seen = Vec::new();
        while rx
            .next_checkpoint_observed(&mut mem, &mut |e| {
                if let Event::Record {
                    info:
                        RecordInfo::CompressedPageData {
                            encoded_len, zstd, ..
                        },
                    ..
                } = e
                {
                    seen.push((*encoded_len, *zstd));
                }
            })
            .unwrap()
            .is_some()
        {}
        seen
    };
    let (p, s) = (records(&plain), records(&staged));
    assert_eq!(p.len(), s.len());
    assert!(!p.is_empty());
    for ((pe, pz), (se, sz)) in p.iter().zip(&s) {
        assert_eq!(pe, se);
        assert!(!pz);
        // A record with no page data has nothing to compress.
        assert_eq!(*sz, *se > 0);
    }
}

/// A stream as a receiver saw it.
struct Reference {
    /// Memory (a hash per page) before the first checkpoint and after each.
    states: Vec<Vec<u64>>,
    /// Where each checkpoint's records end (after its CHECKPOINT record).
    ends: Vec<u64>,
    /// Every record: offset and body length.
    records: Vec<(u64, u64)>,
}

fn reference(bytes: &[u8], guest: u64) -> Reference {
    let mut rx = Receiver::new(bytes, Limits::default(), Codec::best()).unwrap();
    let mut mem = SparseMemory::new(guest);
    let mut states = vec![snapshot(&mem)];
    let mut ends = Vec::new();
    let mut records = Vec::new();
    loop {
        let mut end = 0;
        let r = rx
            .next_checkpoint_observed(&mut mem, &mut |e| {
                if let Event::Record {
                    offset, ty, len, ..
                } = e
                {
                    records.push((*offset, *len as u64));
                    if *ty == REC_CHECKPOINT {
                        end = offset + 8;
                    }
                    if *ty == REC_END {
                        end = offset + 8;
                    }
                }
            })
            .unwrap();
        match r {
            Some(_) => {
                states.push(snapshot(&mem));
                ends.push(end);
            }
            None => break,
        }
    }
    Reference {
        states,
        ends,
        records,
    }
}

fn snapshot(mem: &SparseMemory) -> Vec<u64> {
    (0..mem.pages())
        .map(|p| xxhash_rust::xxh3::xxh3_64(mem.page(p)))
        .collect()
}

/// How a stream was refused: checkpoints committed, memory then, and the
/// error's kind.
struct Refused {
    committed: usize,
    memory: Vec<u64>,
    kind: String,
}

/// The name of an error's variant (and of the record error inside).
fn kind(e: &ReceiveError) -> String {
    let debug = format!("{e:?}");
    let name = debug
        .trim_start_matches("Stream(")
        .trim_start_matches("Record(");
    name.split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("")
        .to_string()
}

/// Receives `bytes` until the first error, or `None` if the stream was
/// accepted whole.
fn receive_until_error(bytes: &[u8], guest: u64) -> Option<Refused> {
    let mut rx = match Receiver::new(bytes, Limits::default(), Codec::best()) {
        Ok(rx) => rx,
        Err(e) => {
            return Some(Refused {
                committed: 0,
                memory: snapshot(&SparseMemory::new(guest)),
                kind: kind(&e),
            })
        }
    };
    let mut mem = SparseMemory::new(guest);
    let mut n = 0;
    loop {
        match rx.next_checkpoint(&mut mem) {
            Ok(Some(_)) => n += 1,
            Ok(None) => return None,
            Err(e) => {
                return Some(Refused {
                    committed: n,
                    memory: snapshot(&mem),
                    kind: kind(&e),
                })
            }
        }
    }
}

/// A small record stream with every kind of record: the initial image
/// (PAGE_DATA), compressed pages through zstd, entries without data,
/// raw page-table pages, toolstack chunks, an empty checkpoint.
fn small_stream() -> (Vec<u8>, u64) {
    let guest = 6;
    let opts = options(guest, 1, 4, Some(ZstdStage::default()));
    (send(&opts, 21, &[3, 5, 0, 2, 6, 1]).0, guest)
}

#[test]
fn every_single_byte_corruption_is_detected_before_anything_is_applied() {
    let (bytes, guest) = small_stream();
    let r = reference(&bytes, guest);
    let mut detected = 0;
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for at in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[at] ^= 0x5A;
        let refused = receive_until_error(&bad, guest)
            .unwrap_or_else(|| panic!("the flip at byte {at} went undetected"));
        // Exactly the checkpoints that end before the flipped byte are
        // committed; the one holding it, and every later one, are not.
        let whole = r.ends.iter().filter(|&&end| end <= at as u64).count();
        assert_eq!(refused.committed, whole, "flip at byte {at}");
        assert!(
            refused.memory == r.states[whole],
            "flip at byte {at}: memory changed"
        );
        *kinds.entry(refused.kind).or_default() += 1;
        detected += 1;
    }
    assert_eq!(detected, bytes.len());
    println!(
        "{} of {} single-byte corruptions detected before anything of their checkpoint was applied ({} checkpoints, {} records)",
        detected,
        bytes.len(),
        r.ends.len(),
        r.records.len()
    );
    for (k, n) in kinds {
        println!("  {n:>6} {k}");
    }
}

#[test]
fn truncation_at_every_record_boundary_and_inside_every_record() {
    let (bytes, guest) = small_stream();
    let r = reference(&bytes, guest);
    // Every octet of the headers, then each record's start, inside its
    // header, its body's start and middle, and its last octet.
    let mut cuts: Vec<u64> = (0..104).collect();
    for &(offset, len) in &r.records {
        let end = offset + 8 + len + (8 - len % 8) % 8;
        cuts.extend([
            offset,
            offset + 4,
            offset + 8,
            offset + 8 + len / 2,
            end - 1,
        ]);
    }
    cuts.sort_unstable();
    cuts.dedup();
    cuts.retain(|&c| c < bytes.len() as u64);
    for &cut in &cuts {
        let refused = receive_until_error(&bytes[..cut as usize], guest)
            .unwrap_or_else(|| panic!("a stream cut at {cut} was accepted"));
        let whole = r.ends.iter().filter(|&&end| end <= cut).count();
        assert_eq!(refused.committed, whole, "cut at {cut}");
        assert!(refused.memory == r.states[whole], "cut at {cut}");
        assert!(
            refused.kind.contains("Truncated"),
            "cut at {cut}: {}",
            refused.kind
        );
    }
    println!(
        "{} cuts, each refused as truncated with nothing of the cut checkpoint applied",
        cuts.len()
    );
}

/// A hand-made record stream: the headers from the writer, then records
/// with their checks kept by the builder.
struct Build {
    bytes: Vec<u8>,
    seed: u32,
    crc: u32,
}

impl Build {
    fn new(guest: u64) -> Build {
        let info = StreamInfo {
            guest_pages: guest,
            stream_id: 9,
            zstd_level: Some(1),
        };
        let bytes = RecordWriter::new(Vec::new(), &info)
            .unwrap()
            .finish()
            .unwrap();
        let bytes = bytes[..bytes.len() - 8].to_vec(); // without END
                                                       // The seed is CKPT_STREAM_INFO's check (bytes 80..84 of its body).
        let seed = u32::from_le_bytes(bytes[80..84].try_into().unwrap());
        Build {
            bytes,
            seed,
            crc: seed,
        }
    }

    fn put(&mut self, b: &[u8]) -> &mut Build {
        self.crc = crc32c::crc32c_append(self.crc, b);
        self.bytes.extend_from_slice(b);
        self
    }

    fn record(&mut self, ty: u32, body: &[u8]) -> &mut Build {
        let mut h = ty.to_le_bytes().to_vec();
        h.extend_from_slice(&(body.len() as u32).to_le_bytes());
        self.put(&h).put(body);
        let pad = (8 - body.len() % 8) % 8;
        self.put(&vec![0u8; pad])
    }

    fn page_data(&mut self, pfns: &[u64], fill: u8) -> &mut Build {
        let xen: Vec<u64> = pfns.iter().map(|&p| to_xen_entry(p)).collect();
        self.page_data_xen(&xen, fill)
    }

    /// PAGE_DATA of normal pages given as Xen's entries, as they are.
    fn page_data_xen(&mut self, entries: &[u64], fill: u8) -> &mut Build {
        let mut body = (entries.len() as u32).to_le_bytes().to_vec();
        body.extend_from_slice(&[0; 4]);
        for &x in entries {
            body.extend_from_slice(&x.to_le_bytes());
        }
        for _ in entries {
            body.extend_from_slice(&[fill; 4096]);
        }
        self.record(1, &body)
    }

    fn close(&mut self, seq: u64, pfns: &[u64], fill: u8) -> &mut Build {
        let mut d = Digest::new();
        for &p in pfns {
            d.add_page(&Codec::best(), p, &[fill; 4096]);
        }
        self.put(&REC_CKPT_INTEGRITY.to_le_bytes())
            .put(&40u32.to_le_bytes());
        let body = Integrity {
            seq,
            data_pages: pfns.len() as u64,
            digest: d.finish(),
        }
        .body(self.crc);
        self.put(&body);
        self.bytes.extend_from_slice(&[0x0E, 0, 0, 0, 0, 0, 0, 0]);
        self.crc = self.seed;
        self
    }

    fn end(&mut self) -> Vec<u8> {
        let mut b = self.bytes.clone();
        b.extend_from_slice(&[0; 8]);
        b
    }
}

fn reject(bytes: &[u8]) -> (StreamError, usize) {
    let mut rx = match Receiver::new(bytes, Limits::default(), Codec::best()) {
        Ok(rx) => rx,
        Err(ReceiveError::Stream(e)) => return (e, 0),
        Err(e) => panic!("{e}"),
    };
    let mut mem = SparseMemory::new(rx.guest_pages());
    let mut n = 0;
    loop {
        match rx.next_checkpoint(&mut mem) {
            Ok(Some(_)) => n += 1,
            Ok(None) => panic!("accepted"),
            Err(ReceiveError::Stream(e)) => return (e, n),
            Err(e) => panic!("not a stream error: {e}"),
        }
    }
}

#[test]
fn a_hand_made_stream_applies() {
    let bytes = Build::new(8)
        .page_data(&[1, 5], 0xAB)
        .close(0, &[1, 5], 0xAB)
        .end();
    let mut rx = Receiver::new(&bytes[..], Limits::default(), Codec::best()).unwrap();
    let mut mem = SparseMemory::new(8);
    assert_eq!(rx.next_checkpoint(&mut mem).unwrap().unwrap().data_pages, 2);
    assert_eq!(mem.page(5), &[0xAB; 4096]);
    assert_eq!(rx.entries(), &[1, 5]);
    assert!(rx.next_checkpoint(&mut mem).unwrap().is_none());
}

#[test]
fn unknown_optional_records_are_skipped_unknown_mandatory_ones_fail() {
    // An optional record the reader does not know, inside a checkpoint
    // (covered by its check) and with a body that needs padding.
    let bytes = Build::new(8)
        .record(0x8765_4321, &[1, 2, 3])
        .page_data(&[2], 7)
        .close(0, &[2], 7)
        .end();
    let mut rx = Receiver::new(&bytes[..], Limits::default(), Codec::best()).unwrap();
    let mut mem = SparseMemory::new(8);
    let mut skipped = 0;
    rx.next_checkpoint_observed(&mut mem, &mut |e| {
        if let Event::Record {
            info: RecordInfo::Skipped,
            ..
        } = e
        {
            skipped += 1;
        }
    })
    .unwrap()
    .unwrap();
    assert_eq!(skipped, 1);
    assert_eq!(mem.page(2), &[7; 4096]);

    let bytes = Build::new(8)
        .record(0x0765_4321, &[])
        .page_data(&[2], 7)
        .close(0, &[2], 7)
        .end();
    let (e, n) = reject(&bytes);
    assert_eq!(n, 0);
    assert!(
        matches!(
            e,
            StreamError::Record(RecordError::UnknownRecord {
                offset: 96,
                ty: 0x0765_4321
            })
        ),
        "{e}"
    );
    // A record Xen defines but a ckpt stream does not carry.
    let bytes = Build::new(8).record(0x09, &[0; 8]).close(0, &[], 0).end();
    assert!(matches!(
        reject(&bytes).0,
        StreamError::Record(RecordError::UnsupportedRecord { ty: 9, .. })
    ));
}

#[test]
fn each_rule_broken_once() {
    let ok = |b: &mut Build| {
        b.page_data(&[1], 3).close(0, &[1], 3);
    };
    // Nonzero padding in an optional record.
    let mut b = Build::new(8);
    b.put(&0x8000_0001u32.to_le_bytes())
        .put(&1u32.to_le_bytes())
        .put(&[0, 0, 0, 0, 0, 0, 0, 1]);
    ok(&mut b);
    assert!(matches!(
        reject(&b.end()).0,
        StreamError::Record(RecordError::BadRecord {
            field: "padding is not zero",
            ..
        })
    ));
    // CHECKPOINT without integrity.
    let mut b = Build::new(8);
    b.page_data(&[1], 3).record(REC_CHECKPOINT, &[]);
    assert!(matches!(
        reject(&b.end()).0,
        StreamError::Record(RecordError::Misplaced { .. })
    ));
    // Compressed pages before ENABLE_COMPRESSION.
    let mut b = Build::new(8);
    let mut body = vec![1, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x10, 0, 0, 0, 0, 0, 0];
    body.extend_from_slice(&to_xen_entry(1).to_le_bytes());
    body.push(0x80);
    body.extend_from_slice(&[9; 4096]);
    b.record(0x434B_0002, &body);
    ok(&mut b);
    assert!(matches!(
        reject(&b.end()).0,
        StreamError::CompressedBeforeEnable { offset: 96 }
    ));
    // A PFN past the guest, twice the same PFN, a reserved entry bit, a
    // page type with no meaning.
    let mut b = Build::new(8);
    b.page_data(&[8], 1);
    assert!(matches!(
        reject(&b.end()).0,
        StreamError::PfnOutOfRange {
            pfn: 8,
            offset: 112,
            ..
        }
    ));
    let mut b = Build::new(8);
    b.page_data(&[3, 3], 1);
    assert!(matches!(
        reject(&b.end()).0,
        StreamError::DuplicatePfn {
            pfn: 3,
            offset: 120
        }
    ));
    let mut b = Build::new(8);
    b.page_data_xen(&[1 | 1 << 55], 1);
    assert!(matches!(
        reject(&b.end()).0,
        StreamError::BadEntry {
            reason: "bits 52..59 are set",
            ..
        }
    ));
    let mut b = Build::new(8);
    b.page_data_xen(&[1 | 6 << 60], 1);
    assert!(matches!(
        reject(&b.end()).0,
        StreamError::BadEntry {
            reason: "unknown page type",
            ..
        }
    ));
    // Wrong sequence number in the integrity record.
    let mut b = Build::new(8);
    b.page_data(&[1], 3).close(1, &[1], 3);
    assert!(matches!(
        reject(&b.end()).0,
        StreamError::Sequence {
            expected: 0,
            found: 1,
            ..
        }
    ));
    // The digest does not match what committing would give.
    let mut b = Build::new(8);
    b.page_data(&[1], 3).close(0, &[1], 4);
    let bytes = b.end();
    let mut rx = Receiver::new(&bytes[..], Limits::default(), Codec::best()).unwrap();
    let mut mem = SparseMemory::new(8);
    assert!(matches!(
        rx.next_checkpoint(&mut mem),
        Err(ReceiveError::DigestMismatch { seq: 0, .. })
    ));
    assert_eq!(mem.page(1), &[0; 4096]);
    // END in the middle of a checkpoint; bytes after END.
    let mut b = Build::new(8);
    b.page_data(&[1], 3);
    assert!(matches!(
        reject(&b.end()).0,
        StreamError::Record(RecordError::Misplaced { .. })
    ));
    let mut b = Build::new(8);
    ok(&mut b);
    let mut bytes = b.end();
    bytes.push(0);
    assert!(matches!(
        reject(&bytes),
        (StreamError::TrailingBytes { .. }, 1)
    ));
}

#[test]
fn limits_are_checked_before_anything_is_read() {
    let limits = Limits {
        max_chunk_bytes: 1 << 16,
        max_checkpoint_bytes: 1 << 20,
        max_checkpoint_entries: 4,
        max_toolstack_chunks: 1,
    };
    let run = |bytes: &[u8]| -> StreamError {
        let mut rx = Receiver::new(bytes, limits.clone(), Codec::best()).unwrap();
        let mut mem = SparseMemory::new(8);
        match rx.next_checkpoint(&mut mem) {
            Err(ReceiveError::Stream(e)) => e,
            other => panic!("{other:?}"),
        }
    };
    // Five entries where four are allowed.
    let mut b = Build::new(8);
    b.page_data(&[0, 1, 2, 3, 4], 1);
    assert!(matches!(
        run(&b.end()),
        StreamError::TooManyEntries { limit: 4, .. }
    ));
    // An optional record claiming more than a chunk may hold, with only
    // its header sent: refused before its body is awaited.
    let mut b = Build::new(8);
    b.put(&0x8000_0042u32.to_le_bytes())
        .put(&(1u32 << 20).to_le_bytes());
    assert!(matches!(
        run(&b.bytes),
        StreamError::Record(RecordError::RecordTooLarge { .. })
    ));
    // A toolstack chunk over the count.
    let mut b = Build::new(8);
    let mut t = (-9i32).to_le_bytes().to_vec();
    t.extend_from_slice(&[0; 4]);
    b.record(0xC34B_0004, &t).record(0xC34B_0004, &t);
    assert!(matches!(
        run(&b.end()),
        StreamError::TooManyToolstackChunks { limit: 1, .. }
    ));
}
