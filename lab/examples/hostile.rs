//! Writes the hostile inputs of `ckpt_lab::hostile` into a folder, at the
//! sizes of the hardening probes, for `scripts/probe-hardening.sh`; with
//! `flood`, writes the endless toolstack stream to standard output.
//!
//! ```text
//! cargo run --release -p ckpt-lab --example hostile -- DIR
//! cargo run --release -p ckpt-lab --example hostile -- flood | ckpt restore /dev/stdin ...
//! cargo run --release -p ckpt-lab --example hostile -- flip IN OUT OFFSET
//! cargo run --release -p ckpt-lab --example hostile -- seeds fuzz/seeds
//! ```

use ckpt_lab::hostile::*;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

fn main() -> io::Result<()> {
    let arg = std::env::args().nth(1).unwrap_or_default();
    if arg == "flood" {
        // Ends when the reader closes the pipe.
        let _ = io::copy(&mut ToolstackFlood::new(), &mut io::stdout().lock());
        return Ok(());
    }
    if arg == "flip" {
        // flip IN OUT OFFSET: a copy of IN with the byte at OFFSET inverted.
        let a: Vec<String> = std::env::args().skip(2).collect();
        let mut b = std::fs::read(&a[0])?;
        let at: usize = a[2].parse().expect("an offset");
        b[at] ^= 0xff;
        return std::fs::write(&a[1], b);
    }
    if arg == "seeds" {
        let dir = std::env::args().nth(2).expect("a folder");
        return seeds(Path::new(&dir));
    }
    if arg.is_empty() {
        eprintln!("usage: hostile DIR | flood | flip IN OUT OFFSET | seeds DIR");
        std::process::exit(2);
    }
    let dir = Path::new(&arg);
    std::fs::create_dir_all(dir)?;
    let put = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes);
    put("sample.stream", &sample_stream())?;
    // 1024 pages (4 MiB) in one checkpoint, for a disk too small for them.
    let f = BufWriter::new(File::create(dir.join("four-mib.stream"))?);
    write_full_checkpoints(f, 1024, 1)?.flush()?;
    put("huge-guest.stream", &stream_huge_guest())?;
    put("trailing-byte.stream", &stream_trailing_byte(16))?;
    put("version1.stream", &stream_version1())?;
    put("claimed-chunk.stream", &stream_claimed_chunk(64 << 20))?;
    let mut flood = Vec::new();
    ToolstackFlood::new()
        .take(100_000_000)
        .read_to_end(&mut flood)?;
    put("toolstack-flood.stream", &flood)?;
    drop(flood);
    let f = BufWriter::new(File::create(dir.join("empty-checkpoints.stream"))?);
    write_empty_checkpoints(f, 1_000_000)?.flush()?;
    // 64 MiB checkpoints: at a configured max_checkpoint_bytes of 32 MiB,
    // refused; at 64 MiB, accepted.
    let f = BufWriter::new(File::create(dir.join("full-checkpoints.stream"))?);
    write_full_checkpoints(f, 16384, 3)?.flush()?;
    put("claimed-epoch.trace", &trace_claimed_epoch())?;
    put("duplicates.trace", &trace_duplicates(262_144))?;
    put("wide-epoch.trace", &trace_wide_epoch(262_144))?;
    put("wide-guest.trace", &trace_wide_guest(1 << 28, 64, 16384))?;
    put("many-records.vec.zst", &vector_many_records(1 << 18))?;
    put("big-outputs.vec.zst", &vector_big_outputs(64, 64 << 20))?;
    Ok(())
}

/// Seed inputs for the fuzz targets (`fuzz/seeds/<target>/`), each in the
/// shape its harness expects: the hostile inputs above, made small, and a
/// valid input of each kind for the fuzzer to mutate.
fn seeds(dir: &Path) -> io::Result<()> {
    use ckpt_engine::page::entry;
    use ckpt_engine::PageType;
    let put = |target: &str, name: &str, bytes: &[u8]| -> io::Result<()> {
        std::fs::create_dir_all(dir.join(target))?;
        std::fs::write(dir.join(target).join(name), bytes)
    };
    let le32 = |v: i32| v.to_le_bytes();
    let le64 = |v: u64| v.to_le_bytes();

    // stream_reader: what follows its header (guest 256, id 1), also used
    // as the body of one checkpoint frame.
    let sample = sample_stream_for(256, 1);
    put("stream_reader", "sample", &sample[56..])?;
    put("stream_reader", "toolstack-flood", &[0xff; 4096])?;
    let dup = [&le32(2)[..], &le64(3), &le64(3)].concat();
    put("stream_reader", "duplicate-pfn", &dup)?;
    let claim = [&le32(-12)[..], &le64(64 << 20), &[1, 2, 3]].concat();
    put("stream_reader", "claimed-chunk", &claim)?;

    // trace_reader: the guest size less one, then the zstd frame's contents.
    let with_guest = |g: u8, contents: Vec<u8>| [vec![g], contents].concat();
    let claimed = RawTrace::new()
        .epoch_claiming(u32::MAX, &[], &[])
        .contents(16);
    put("trace_reader", "claimed-epoch", &with_guest(15, claimed))?;
    let entries = vec![entry(0, PageType::Normal); 16];
    let dups = RawTrace::new().epoch(&entries, &[0; 16]).contents(1);
    put("trace_reader", "duplicates", &with_guest(0, dups))?;
    let mut t = RawTrace::new();
    let mut page = Box::new([0u8; 4096]);
    let mut reference = Box::new([0u8; 4096]);
    let mut payload = Vec::new();
    let mut out = vec![0u8; ckpt_simd::MAX_ENCODED_LEN];
    let mut entries = Vec::new();
    for pfn in 0..4u64 {
        page[pfn as usize * 8] = pfn as u8 + 1;
        reference.fill(0);
        let n = ckpt_simd::scalar::encode(&page, &mut reference, &mut out).expect("room");
        payload.extend_from_slice(&out[..n]);
        entries.push(entry(pfn, PageType::Normal));
    }
    t.epoch(&entries, &payload);
    t.epoch(&[], &[]);
    put("trace_reader", "valid", &with_guest(7, t.contents(8)))?;

    // vector_reader: the file after its magic.
    let mut valid = Vec::new();
    valid.extend_from_slice(&1u32.to_le_bytes());
    valid.extend_from_slice(&1u32.to_le_bytes());
    valid.extend_from_slice(&le64(5));
    valid.push(0);
    valid.extend_from_slice(&page[..]);
    valid.extend_from_slice(&1u32.to_le_bytes());
    let mut full = vec![0u8; ckpt_simd::FULL_ENCODED_LEN];
    ckpt_simd::encode_full(&page, &mut full).expect("room");
    valid.extend_from_slice(&le64(full.len() as u64));
    valid.extend_from_slice(&full);
    put("vector_reader", "valid", &valid)?;
    let many = [&1u32.to_le_bytes()[..], &(1u32 << 18).to_le_bytes()].concat();
    put("vector_reader", "many-records", &many)?;
    let big = [
        &1u32.to_le_bytes()[..],
        &0u32.to_le_bytes(),
        &1u32.to_le_bytes(),
        &le64(100 << 20),
    ]
    .concat();
    put("vector_reader", "big-output", &big)?;

    // config_parser: TOML text.
    put(
        "config_parser",
        "example",
        &std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../ckpt.example.toml"))?,
    )?;
    for (name, text) in [
        ("cache-pages", "[engine]\ncache_pages = 5000000000\n"),
        ("ring-pages", "[engine]\nring_pages = 4294967296000\n"),
        ("threads", "[engine]\nthreads = 100000\n"),
        ("epoch-ms", "[record]\nepoch_ms = 18446744073709551615\n"),
        (
            "guest-pages",
            "[receiver]\nmax_guest_pages = 1099511627776\n",
        ),
    ] {
        put("config_parser", name, text.as_bytes())?;
    }
    Ok(())
}
