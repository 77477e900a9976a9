//! The crash-consistent image (`docs/REPLICATION.md`, "The backup's
//! image") given what a crash does not leave: damaged or forged records,
//! records of the earlier whole-page format, state files that are not
//! whole, files that are not an image. Each is refused with a typed error
//! or recovered to one whole checkpoint; none panics.

#![cfg(unix)]

#[allow(dead_code, unused_imports)]
mod journal_support;

use journal_support::*;

#[test]
fn after_a_replay_the_digest_is_checked() {
    let dir = Dir::new("digest");
    let run = three_checkpoints(12);
    let crash = crashed_commit(&dir, &run, 2, Durability::Journal);
    let (e, _) = entries(&crash.journal);
    // A DELTA page of the record (its encoding is more than one byte),
    // and a word the DELTA skips: the same before and after.
    let delta = e.iter().find(|e| e.len > 1 && e.len < PAGE_SIZE).unwrap();
    let base = delta.pfn as usize * PAGE_SIZE;
    let skipped = (0..PAGE_SIZE / 4)
        .map(|w| base + 4 * w)
        .find(|&b| crash.old_image[b..b + 4] == crash.new_image[b..b + 4])
        .unwrap();
    let copied = (0..PAGE_SIZE / 4)
        .map(|w| base + 4 * w)
        .find(|&b| crash.old_image[b..b + 4] != crash.new_image[b..b + 4])
        .unwrap();
    // A word the DELTA writes is rebuilt, whatever the image held.
    let mut image = crash.old_image.clone();
    image[copied] ^= 0x5a;
    crash.restore(&dir, &image, &crash.journal);
    let (img, rec) = DurableImage::open(&dir.image(), Durability::Journal).unwrap();
    assert_eq!(rec.digest_pages, crash.info.data_pages);
    check(&img, &run.states[2], "a copied word damaged");
    drop(img);
    // A word it skips is not: the image is not the checkpoint, and says so.
    for _ in 0..2 {
        let mut image = crash.old_image.clone();
        image[skipped] ^= 0x5a;
        crash.restore(&dir, &image, &crash.journal);
        match DurableImage::open(&dir.image(), Durability::Journal) {
            Err(ImageError::DigestMismatch { seq, expected, .. }) => {
                assert_eq!((seq, expected), (2, crash.info.digest));
            }
            other => panic!("{:?}", other.map(|(_, r)| r)),
        }
        // Nothing was retired: opening again finds the same.
        assert_eq!(read(&state_path(&dir.image())), crash.state);
    }
}

#[test]
fn a_damaged_record_is_dropped_whole() {
    let dir = Dir::new("flip");
    let run = three_checkpoints(13);
    let crash = crashed_commit(&dir, &run, 2, Durability::Journal);
    // Every byte of the record, one bit flipped.
    for at in 0..crash.journal.len() {
        let mut j = crash.journal.clone();
        j[at] ^= 0x40;
        crash.restore(&dir, &crash.old_image, &j);
        let (img, rec) = DurableImage::open(&dir.image(), Durability::Journal).unwrap();
        assert!(rec.replayed.is_empty(), "byte {at}");
        assert_eq!(img.holds().map(|c| c.seq), Some(1), "byte {at}");
        check(&img, &run.states[1], &format!("byte {at} flipped"));
    }
}

/// Damage done to a journal.
type Damage = Box<dyn Fn(&mut Vec<u8>)>;

#[test]
fn a_committed_record_that_cannot_be_applied_is_refused_untouched() {
    let dir = Dir::new("bad");
    let run = three_checkpoints(14);
    let crash = crashed_commit(&dir, &run, 2, Durability::Journal);
    let (e, _) = entries(&crash.journal);
    let delta = *e.iter().find(|e| e.len > 1).unwrap();
    let cases: [(&str, Damage); 3] = [
        (
            "a PFN outside the guest",
            Box::new(move |j| j[delta.at..delta.at + 8].copy_from_slice(&GUEST.to_le_bytes())),
        ),
        (
            "a zero-length run inside a DELTA",
            Box::new(move |j| {
                // Its last marker becomes COPY 0.
                j[delta.at + ENTRY_HEAD + delta.len - 1] = 0x00;
            }),
        ),
        (
            "an entry longer than the encodings",
            Box::new(move |j| {
                j[delta.at + 8..delta.at + 12].copy_from_slice(&100_000u32.to_le_bytes())
            }),
        ),
    ];
    for (what, damage) in cases {
        let mut j = crash.journal.clone();
        damage(&mut j);
        recommit(&mut j);
        crash.restore(&dir, &crash.old_image, &j);
        match DurableImage::open(&dir.image(), Durability::Journal) {
            Err(ImageError::BadRecord {
                record,
                offset,
                fault,
                ..
            }) => {
                assert_eq!((record, offset), (0, delta.at as u64), "{what}");
                let expected = match fault {
                    RecordFault::PfnOutsideGuest { pfn, guest_pages } => {
                        (pfn, guest_pages) == (GUEST, GUEST)
                    }
                    RecordFault::Encoding { .. } => what.contains("zero-length"),
                    RecordFault::EncodingLength { len, .. } => len == 100_000,
                    _ => false,
                };
                assert!(expected, "{what}: {fault:?}");
            }
            other => panic!("{what}: {:?}", other.map(|(_, r)| r)),
        }
        // Nothing of it was written.
        assert_eq!(read(&dir.image()), crash.old_image, "{what}");
    }
}

#[test]
fn a_record_of_the_whole_page_format_is_refused() {
    let dir = Dir::new("legacy");
    let run = three_checkpoints(15);
    let crash = crashed_commit(&dir, &run, 2, Durability::Journal);
    // The earlier format's header: magic, generation, guest pages, pages,
    // zeroed, stream id, sequence, digest, CRC-32C of bytes 0..80.
    let legacy = |generation: u64| {
        let mut h = vec![0u8; 88 + 4104 + 24];
        h[..8].copy_from_slice(b"CKPTJRNL");
        h[8..16].copy_from_slice(&generation.to_le_bytes());
        h[16..24].copy_from_slice(&GUEST.to_le_bytes());
        h[24..32].copy_from_slice(&1u64.to_le_bytes());
        let crc = crc32c::crc32c(&h[..80]);
        h[80..84].copy_from_slice(&crc.to_le_bytes());
        h
    };
    // Of the next generation (3: checkpoints 0 and 1 are generations 1
    // and 2): a committed checkpoint this version cannot apply.
    crash.restore(&dir, &crash.old_image, &legacy(3));
    assert!(matches!(
        DurableImage::open(&dir.image(), Durability::Journal),
        Err(ImageError::BadRecord {
            fault: RecordFault::WholePages,
            ..
        })
    ));
    assert_eq!(read(&dir.image()), crash.old_image);
    // Retired already, followed by this format's record: skipped.
    let mut j = legacy(2);
    j.extend_from_slice(&crash.journal);
    crash.restore(&dir, &crash.old_image, &j);
    let (img, rec) = DurableImage::open(&dir.image(), Durability::Journal).unwrap();
    assert_eq!(rec.replayed, vec![run.commit(&crash.info)]);
    check(
        &img,
        &run.states[2],
        "after a retired record of the earlier format",
    );
}

#[test]
fn what_is_not_an_image_is_refused() {
    let dir = Dir::new("refuse");
    let path = dir.image();
    assert!(matches!(
        DurableImage::open(&path, Durability::Journal),
        Err(ImageError::Missing { .. })
    ));
    std::fs::write(&path, b"someone's file").unwrap();
    assert!(matches!(
        DurableImage::open(&path, Durability::Journal),
        Err(ImageError::NotAnImage { .. })
    ));
    assert!(matches!(
        DurableImage::create(&path, GUEST, Durability::Journal),
        Err(ImageError::NotAnImage { .. })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), b"someone's file");
    std::fs::remove_file(&path).unwrap();
    let mut img = DurableImage::create(&path, GUEST, Durability::Journal).unwrap();
    assert!(matches!(
        DurableImage::create(&path, GUEST, Durability::Journal),
        Err(ImageError::Exists { .. })
    ));
    // A checkpoint for a smaller guest is refused before anything is
    // written, and so is a commit page by page.
    let image = read(&path);
    let smaller = {
        let opts = SenderOptions {
            stream_id: Some(5),
            ..SenderOptions::new(GUEST - 1)
        };
        let mut s = Sender::new(Vec::new(), Codec::best(), &opts).unwrap();
        s.begin_checkpoint().unwrap();
        s.page(0, PageType::Normal, Some(&page(1))).unwrap();
        s.end_checkpoint().unwrap();
        s.finish().unwrap().0
    };
    let mut rx = Receiver::new(&smaller[..], Limits::default(), Codec::best()).unwrap();
    assert!(matches!(
        rx.next_checkpoint(&mut img),
        Err(ReceiveError::Commit { seq: 0, .. })
    ));
    let page_by_page = Commit {
        stream_id: 1,
        guest_pages: GUEST,
        seq: 0,
        digest: 0,
    };
    assert!(img.begin_commit(&page_by_page).is_err());
    assert_eq!(img.holds(), None);
    assert_eq!(read(&path), image);
    let one = run(1, &[(0, 1)], &[]);
    next(&mut one.receiver(), &mut img);
    img.settle().unwrap();
    drop(img);
    // Both state slots damaged: refused, not guessed.
    let sp = state_path(&path);
    let mut s = read(&sp);
    s[20] ^= 1;
    s[4096 + 20] ^= 1;
    std::fs::write(&sp, &s).unwrap();
    assert!(matches!(
        DurableImage::open(&path, Durability::Journal),
        Err(ImageError::Damaged { .. })
    ));
    // One damaged slot: the other one holds the newest valid record.
    s[4096 + 20] ^= 1;
    std::fs::write(&sp, &s).unwrap();
    let (img, _) = DurableImage::open(&path, Durability::Journal).unwrap();
    assert_eq!(img.holds().map(|c| (c.stream_id, c.seq)), Some((1, 0)));
    check(&img, &one.states[0], "one slot left");
    drop(img);
    // An image file cut short under a state that holds a checkpoint.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(PAGE_SIZE as u64)
        .unwrap();
    assert!(matches!(
        DurableImage::open(&path, Durability::Journal),
        Err(ImageError::Damaged { .. })
    ));
}

#[test]
fn hostile_journals_and_states_give_typed_errors() {
    let dir = Dir::new("hostile");
    let run = three_checkpoints(19);
    let crash = crashed_commit(&dir, &run, 3, Durability::Journal);
    let mut rng = Rng(0x0bad_5eed);
    // Bytes of the record rewritten at random and the commit record made
    // to check again: what a writer with another idea of the format, or a
    // forger, leaves. Recovery applies a checkpoint whole or names what is
    // wrong; it never panics.
    for trial in 0..300 {
        let mut j = crash.journal.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(j.len() as u64 - COMMIT as u64) as usize;
            j[at] = rng.next() as u8;
        }
        recommit(&mut j);
        crash.restore(&dir, &crash.old_image, &j);
        match DurableImage::open(&dir.image(), Durability::Journal) {
            Ok((img, _)) => {
                let seq = img.holds().map(|c| c.seq).unwrap();
                assert!(seq == 2 || seq == 3, "trial {trial}: {seq}");
                check(&img, &run.states[seq as usize], &format!("trial {trial}"));
            }
            Err(ImageError::BadRecord { .. } | ImageError::DigestMismatch { .. }) => {}
            Err(e) => panic!("trial {trial}: {e}"),
        }
    }
    // A state file of random bytes, or random bytes in it.
    let mut fresh = None;
    for trial in 0..100 {
        let mut s = crash.state.clone();
        if trial % 2 == 0 {
            for b in s.iter_mut() {
                *b = rng.next() as u8;
            }
        } else {
            let at = rng.below(s.len() as u64) as usize;
            s[at] = rng.next() as u8;
        }
        std::fs::write(dir.image(), &crash.old_image).unwrap();
        std::fs::write(state_path(&dir.image()), &s).unwrap();
        std::fs::write(journal_path(&dir.image()), &crash.journal).unwrap();
        match DurableImage::open(&dir.image(), Durability::Journal) {
            Ok((img, _)) => {
                // One slot left whole: its checkpoint, then the record.
                assert_eq!(img.holds().map(|c| c.seq), Some(3), "trial {trial}");
                check(&img, &run.states[3], &format!("state trial {trial}"));
                fresh.get_or_insert(trial);
            }
            Err(ImageError::Damaged { .. }) => {}
            Err(e) => panic!("state trial {trial}: {e}"),
        }
    }
    assert!(fresh.is_some(), "a state with one slot whole opens");
}
