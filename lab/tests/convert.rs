//! `ckpt convert`: legacy -> records -> legacy gives the same pages digest
//! for digest (and, for what the sender wrote, the same bytes); the plain
//! Xen export follows Xen's specification record by record and carries
//! every checkpoint's pages.

use ckpt_engine::stream::records::to_xen_entry;
use ckpt_engine::{
    CheckpointInfo, Codec, CompressOptions, Format, GuestMemory, Limits, Receiver, Sender,
    SenderOptions, SparseMemory, ZstdPlacement, ZstdStage,
};
use ckpt_lab::convert::{convert, Target};
use ckpt_lab::replay::send_checkpoint;
use ckpt_lab::synth::Scenario;
use std::collections::HashMap;

const GUEST: u64 = 2048;
/// Includes checkpoints over the ring (several chunks), an empty one.
const SIZES: [usize; 7] = [300, 700, 0, 1500, 50, 1024, 9];

fn stream(format: Format, zstd: Option<ZstdStage>) -> Vec<u8> {
    let opts = SenderOptions {
        compress: CompressOptions {
            cache_pages: 400,
            threads: 1,
            pin_threads: false,
            ..CompressOptions::default()
        },
        ring_pages: 512,
        format,
        zstd,
        ..SenderOptions::new(GUEST)
    };
    let mut s = Sender::new(Vec::new(), Codec::best(), &opts).unwrap();
    for cp in Scenario::new(GUEST, 77, &SIZES) {
        send_checkpoint(&mut s, &cp).unwrap();
    }
    s.finish().unwrap().0
}

/// Every checkpoint's receiver report, and the memory at the end.
fn receive(bytes: &[u8]) -> (Vec<CheckpointInfo>, SparseMemory) {
    let mut rx = Receiver::new(bytes, Limits::default(), Codec::best()).unwrap();
    let mut mem = SparseMemory::new(GUEST);
    let mut infos = Vec::new();
    while let Some(info) = rx.next_checkpoint(&mut mem).unwrap() {
        infos.push(info);
    }
    (infos, mem)
}

fn conv(bytes: &[u8], target: Target) -> Vec<u8> {
    convert(bytes, Vec::new(), target, Limits::default(), Codec::best())
        .unwrap()
        .0
}

fn same_checkpoints(a: &[u8], b: &[u8]) {
    let ((ia, ma), (ib, mb)) = (receive(a), receive(b));
    assert_eq!(ia.len(), SIZES.len() + 1);
    assert_eq!(ia.len(), ib.len());
    for (x, y) in ia.iter().zip(&ib) {
        assert_eq!(
            (x.seq, x.entries, x.data_pages, x.digest, &x.toolstack),
            (y.seq, y.entries, y.data_pages, y.digest, &y.toolstack)
        );
        assert_eq!((x.full, x.delta, x.empty), (y.full, y.delta, y.empty));
    }
    for p in 0..GUEST {
        assert!(ma.page(p) == mb.page(p), "pfn {p}");
    }
}

#[test]
fn legacy_to_records_and_back_gives_the_same_stream() {
    let legacy = stream(Format::Legacy, None);
    for level in [None, Some(1), Some(-5)] {
        let records = conv(&legacy, Target::Records { zstd_level: level });
        assert_eq!(
            Receiver::new(&records[..], Limits::default(), Codec::best())
                .unwrap()
                .format(),
            Format::Records
        );
        same_checkpoints(&legacy, &records);
        let back = conv(&records, Target::Legacy);
        assert!(back == legacy, "legacy -> records ({level:?}) -> legacy");
    }
}

#[test]
fn records_to_legacy_and_back_gives_the_same_stream() {
    for zstd in [
        None,
        Some(ZstdStage {
            level: 3,
            placement: ZstdPlacement::Thread,
        }),
    ] {
        let records = stream(Format::Records, zstd);
        let legacy = conv(&records, Target::Legacy);
        same_checkpoints(&records, &legacy);
        let back = conv(
            &legacy,
            Target::Records {
                zstd_level: zstd.map(|z| z.level),
            },
        );
        assert!(back == records, "records ({zstd:?}) -> legacy -> records");
    }
}

/// Reads a plain Xen stream by the rules of Xen's specification (revision
/// 3), applying each checkpoint's PAGE_DATA; returns the memory after each
/// CHECKPOINT.
fn read_xen(b: &[u8]) -> Vec<HashMap<u64, Vec<u8>>> {
    let be32 = |at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap());
    let le32 = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    // Image header: big-endian marker, "XENF", version 3, little-endian.
    assert_eq!(&b[..8], &[0xFF; 8]);
    assert_eq!(be32(8), 0x5845_4E46);
    assert_eq!(be32(12), 3);
    assert_eq!(&b[16..24], &[0; 8]);
    // Domain header: x86 PV or HVM, page shift 12, reserved zero.
    assert!(matches!(le32(24), 1 | 2));
    assert_eq!(u16::from_le_bytes([b[28], b[29]]), 12);
    assert_eq!(&b[30..32], &[0, 0]);
    let mut at = 40;
    let mut memory = HashMap::new();
    let mut after = Vec::new();
    let mut first = true;
    loop {
        assert_eq!(at % 8, 0, "records start 8-aligned");
        let (ty, len) = (le32(at), le32(at + 4) as usize);
        let body = &b[at + 8..at + 8 + len];
        let padded = len.div_ceil(8) * 8;
        assert!(b[at + 8 + len..at + 8 + padded].iter().all(|&x| x == 0));
        at += 8 + padded;
        if first {
            assert_eq!((ty, len), (0x10, 0), "STATIC_DATA_END comes first (v3)");
            first = false;
            continue;
        }
        match ty {
            0 => {
                assert_eq!(len, 0);
                assert_eq!(at, b.len(), "END is the last record");
                return after;
            }
            0x0E => {
                assert_eq!(len, 0);
                after.push(memory.clone());
            }
            1 => {
                let count = u32::from_le_bytes(body[..4].try_into().unwrap()) as usize;
                assert!(count > 0);
                assert_eq!(&body[4..8], &[0; 4]);
                let mut data = Vec::new();
                for i in 0..count {
                    let e = u64::from_le_bytes(body[8 + 8 * i..16 + 8 * i].try_into().unwrap());
                    assert_eq!(e & 0x0FF0_0000_0000_0000, 0, "reserved bits 52..59");
                    let ty = e >> 60;
                    assert!(!(5..=8).contains(&ty), "page type");
                    if ty & 7 <= 4 {
                        data.push(e & ((1 << 52) - 1));
                    }
                }
                let pages = &body[8 + 8 * count..];
                assert_eq!(pages.len(), 4096 * data.len());
                for (pfn, page) in data.iter().zip(pages.chunks_exact(4096)) {
                    memory.insert(*pfn, page.to_vec());
                }
            }
            other => panic!("record {other:#x} in a plain export"),
        }
    }
}

#[test]
fn the_xen_export_follows_the_specification_and_carries_every_page() {
    for (format, zstd) in [
        (Format::Legacy, None),
        (Format::Records, Some(ZstdStage::default())),
    ] {
        let input = stream(format, zstd);
        let xen = conv(&input, Target::Xen);
        let states = read_xen(&xen);
        assert_eq!(states.len(), SIZES.len() + 1);
        // After every checkpoint the export's pages are the receiver's.
        let mut rx = Receiver::new(&input[..], Limits::default(), Codec::best()).unwrap();
        let mut mem = SparseMemory::new(GUEST);
        for state in &states {
            rx.next_checkpoint(&mut mem).unwrap().unwrap();
            for p in 0..GUEST {
                let want = state.get(&p).map_or(&[0u8; 4096][..], |v| &v[..]);
                assert!(mem.page(p)[..] == *want, "pfn {p}");
            }
        }
    }
}

#[test]
fn the_xen_export_carries_page_types_in_xens_layout() {
    // A page-table page keeps its type, moved to bits 60..63.
    let e = to_xen_entry(ckpt_engine::page::entry(
        5,
        ckpt_engine::PageType::PageTable {
            level: 2,
            pinned: true,
        },
    ));
    assert_eq!(e, 0xA << 60 | 5);
}

/// Xen's own verifier (`tools/python/scripts/verify-stream-v2` of a Xen
/// tree, pure Python) on the export, when `XEN_TOOLS_PYTHON` names a Xen
/// tree's `tools/python`; reported as skipped otherwise.
#[test]
fn xens_verifier_accepts_the_export() {
    let Some(tools) = std::env::var_os("XEN_TOOLS_PYTHON") else {
        eprintln!("skipped: set XEN_TOOLS_PYTHON to a Xen tree's tools/python");
        return;
    };
    let tools = std::path::PathBuf::from(tools);
    let xen = conv(&stream(Format::Legacy, None), Target::Xen);
    let file = std::env::temp_dir().join(format!("ckpt-export-{}.xen", std::process::id()));
    std::fs::write(&file, &xen).unwrap();
    let out = std::process::Command::new("python3")
        .arg(tools.join("scripts/verify-stream-v2"))
        .arg("-i")
        .arg(&file)
        .arg("-v")
        .env("PYTHONPATH", &tools)
        .output()
        .expect("python3 runs");
    let _ = std::fs::remove_file(&file);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Libxc Record: End"), "{text}");
}
