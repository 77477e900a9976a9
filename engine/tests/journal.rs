//! The crash-consistent image (`docs/REPLICATION.md`, "The backup's
//! image"): every state a crash can leave on disk recovers to exactly one
//! whole checkpoint. Checkpoints are real ones, written by a `Sender` and
//! committed by a `Receiver`, so the journal holds the encodings a stream
//! carries (FULL, DELTA, EMPTY). A crash is simulated by dropping the image
//! without its settle step, then putting the files into the state the
//! crash left: a journal cut at any byte or damaged, an image torn in the
//! middle of an apply, down to single words.

#![cfg(unix)]

#[allow(dead_code, unused_imports)]
mod journal_support;

use journal_support::*;

#[test]
fn commits_survive_reopening_and_journal_the_encodings() {
    let dir = Dir::new("reopen");
    let run = three_checkpoints(7);
    {
        let mut img = DurableImage::create(&dir.image(), GUEST, Durability::Journal).unwrap();
        assert_eq!(img.holds(), None);
        let mut rx = run.receiver();
        let mut want_bytes = 0;
        let mut want_pages = 0;
        for k in 0..4 {
            let info = next(&mut rx, &mut img);
            assert_eq!(img.holds(), Some(run.commit(&info)));
            check(&img, &run.states[k], &format!("checkpoint {k}"));
            // The record: header, per page its PFN, length and encoding
            // (a Format A page as FULL), commit record.
            let encoded = if info.compressed {
                info.payload_bytes
            } else {
                info.data_pages * (1 + PAGE_SIZE as u64)
            };
            let record = (HEAD + COMMIT) as u64 + info.data_pages * ENTRY_HEAD as u64 + encoded;
            want_bytes += record;
            want_pages += info.data_pages;
            let journal = read(&journal_path(&dir.image()));
            let (e, end) = entries(&journal);
            assert_eq!(end + COMMIT, record as usize);
            assert_eq!(
                e.iter().map(|e| e.pfn).collect::<Vec<_>>(),
                rx.entries()
                    .iter()
                    .map(|e| e & 0x0fff_ffff)
                    .collect::<Vec<_>>(),
                "the entries in body order"
            );
            img.settle().unwrap();
        }
        let s = img.stats();
        assert_eq!((s.commits, s.pages), (4, want_pages));
        assert_eq!(s.journal_bytes, want_bytes);
        assert_eq!(s.syncs, 4 * 4);
        assert!(img.stats().journal.count() == 4 && img.stats().apply.count() == 4);
    }
    let (img, rec) = DurableImage::open(&dir.image(), Durability::Journal).unwrap();
    assert!(rec.clean(), "{rec:?}");
    assert_eq!(img.holds().map(|c| c.seq), Some(3));
    check(&img, &run.states[3], "reopened");
}

#[test]
fn the_records_hold_every_form() {
    let dir = Dir::new("forms");
    let run = three_checkpoints(8);
    let mut img = DurableImage::create(&dir.image(), GUEST, Durability::Journal).unwrap();
    let mut rx = run.receiver();
    let forms: Vec<(u64, u64, u64)> = (0..4)
        .map(|_| {
            let i = next(&mut rx, &mut img);
            img.settle().unwrap();
            (i.full, i.delta, i.empty)
        })
        .collect();
    // What the tests below rely on: checkpoint 2 is DELTAs and an EMPTY,
    // checkpoint 3 has FULL pages too.
    assert_eq!(forms[2], (0, 5, 1));
    assert_eq!(forms[3], (2, 2, 1));
}

#[test]
fn a_journal_cut_at_any_byte_recovers_to_one_whole_checkpoint() {
    let dir = Dir::new("cut");
    let run = three_checkpoints(9);
    for at in [2, 3] {
        let crash = crashed_commit(&dir, &run, at, Durability::Journal);
        let journal = &crash.journal;
        let (e, zeroed_at) = entries(journal);
        let len = zeroed_at + COMMIT;
        assert_eq!(journal.len(), len);
        // Every byte of checkpoint 2's record; of checkpoint 3's, every
        // byte but those inside its FULL pages' data, which a stride
        // crosses.
        let cuts: Vec<usize> = (0..=len)
            .filter(|&c| {
                at == 2
                    || !e.iter().any(|e| {
                        e.len > PAGE_SIZE
                            && c > e.at + ENTRY_HEAD + 1
                            && c < e.at + ENTRY_HEAD + e.len - 1
                            && (c - e.at) % 257 != 0
                    })
            })
            .collect();
        let mut discarded = 0;
        for &cut in &cuts {
            // The image was not touched before the commit record was durable.
            crash.restore(&dir, &crash.old_image, &journal[..cut]);
            let (img, rec) = DurableImage::open(&dir.image(), Durability::Journal).unwrap();
            if cut == len {
                assert_eq!(rec.replayed, vec![run.commit(&crash.info)], "cut {cut}");
                assert_eq!(rec.replayed_pages, crash.info.data_pages);
                assert_eq!(rec.digest_pages, crash.info.data_pages);
                check(&img, &run.states[at], "whole journal");
            } else {
                assert!(rec.replayed.is_empty(), "cut {cut}: {rec:?}");
                if let Some(d) = rec.discarded {
                    assert_eq!((d.seq, d.stream_id, d.bytes), (at as u64, 9, cut as u64));
                    discarded += 1;
                } else {
                    assert!(cut < HEAD, "cut {cut}: a whole header is reported");
                }
                assert_eq!(img.holds().map(|c| c.seq), Some(at as u64 - 1), "cut {cut}");
                check(&img, &run.states[at - 1], &format!("cut {cut}"));
            }
            // Recovery leaves a clean image.
            drop(img);
            let (_, again) = DurableImage::open(&dir.image(), Durability::Journal).unwrap();
            assert!(again.clean(), "cut {cut}: {again:?}");
            assert_eq!(
                std::fs::metadata(journal_path(&dir.image())).unwrap().len(),
                0
            );
        }
        let whole_header_cuts = cuts.iter().filter(|&&c| (HEAD..len).contains(&c)).count();
        assert_eq!(discarded, whole_header_cuts);
        std::fs::remove_dir_all(&dir.0).unwrap();
        std::fs::create_dir_all(&dir.0).unwrap();
    }
}

#[test]
fn what_earlier_records_left_past_the_record_is_not_read_as_one() {
    let dir = Dir::new("stale");
    let run = three_checkpoints(18);
    let crash = crashed_commit(&dir, &run, 2, Durability::Journal);
    let len = crash.journal.len();
    // Checkpoint 0's record (every page FULL) was longer.
    assert!(crash.earlier.len() > len);
    assert_eq!(crash.whole.len(), crash.earlier.len());
    assert_eq!(crash.whole[len..], crash.earlier[len..]);
    crash.restore(&dir, &crash.old_image, &crash.whole);
    let (img, rec) = DurableImage::open(&dir.image(), Durability::Journal).unwrap();
    assert_eq!(rec.replayed, vec![run.commit(&crash.info)]);
    assert!(rec.discarded.is_none(), "{rec:?}");
    check(&img, &run.states[2], "the record, then older bytes");
    drop(img);
    // Killed while writing the record over the older one: its first
    // `cut` bytes are new, the rest still the older record's.
    for cut in (0..len).step_by(7).chain([HEAD - 1, HEAD, len - 1]) {
        let mut j = crash.whole[..cut].to_vec();
        j.extend_from_slice(&crash.earlier[cut..]);
        crash.restore(&dir, &crash.old_image, &j);
        let (img, rec) = DurableImage::open(&dir.image(), Durability::Journal).unwrap();
        assert!(rec.replayed.is_empty(), "cut {cut}: {rec:?}");
        assert_eq!(img.holds().map(|c| c.seq), Some(1), "cut {cut}");
        check(
            &img,
            &run.states[1],
            &format!("cut {cut} over the older record"),
        );
    }
}

#[test]
fn a_half_applied_checkpoint_of_encodings_recovers_exactly() {
    let dir = Dir::new("half");
    let run = three_checkpoints(10);
    let crash = crashed_commit(&dir, &run, 3, Durability::Journal);
    let (e, _) = entries(&crash.journal);
    // Killed in the middle of the apply: the first `decoded` pages of the
    // record (body order) reached the image, the next one half, the rest
    // not at all.
    for decoded in 0..=e.len() {
        let mut image = crash.old_image.clone();
        for (k, entry) in e.iter().enumerate() {
            let at = entry.pfn as usize * PAGE_SIZE;
            let n = match k.cmp(&decoded) {
                std::cmp::Ordering::Less => PAGE_SIZE,
                std::cmp::Ordering::Equal => PAGE_SIZE / 2,
                std::cmp::Ordering::Greater => 0,
            };
            image[at..at + n].copy_from_slice(&crash.new_image[at..at + n]);
        }
        crash.restore(&dir, &image, &crash.journal);
        let (img, rec) = DurableImage::open(&dir.image(), Durability::Journal).unwrap();
        assert_eq!(rec.replayed, vec![run.commit(&crash.info)]);
        assert_eq!(rec.digest_pages, e.len() as u64);
        assert_eq!(img.holds().map(|c| c.seq), Some(3));
        check(&img, &run.states[3], &format!("{decoded} pages decoded"));
    }
}

#[test]
fn torn_applies_are_applied_again_exactly() {
    let dir = Dir::new("torn");
    let run = three_checkpoints(11);
    let mut rng = Rng(0x7e57_0001);
    for at in [2, 3] {
        let crash = crashed_commit(&dir, &run, at, Durability::Journal);
        // The old and new images differ in the record's pages only.
        let changed = (0..GUEST as usize)
            .filter(|p| {
                let r = p * PAGE_SIZE..(p + 1) * PAGE_SIZE;
                crash.old_image[r.clone()] != crash.new_image[r]
            })
            .count();
        assert!(changed > 0 && changed as u64 <= crash.info.data_pages);
        // Any word of the record's pages old or new: the decoder stopped
        // mid-page, or the disk kept some blocks and not others.
        for trial in 0..40 {
            let image = tear(&crash.old_image, &crash.new_image, &mut rng);
            crash.restore(&dir, &image, &crash.journal);
            let (img, rec) = DurableImage::open(&dir.image(), Durability::Journal).unwrap();
            assert_eq!(rec.replayed, vec![run.commit(&crash.info)], "trial {trial}");
            assert_eq!(rec.digest_pages, crash.info.data_pages);
            check(
                &img,
                &run.states[at],
                &format!("checkpoint {at}, trial {trial}"),
            );
        }
        std::fs::remove_dir_all(&dir.0).unwrap();
        std::fs::create_dir_all(&dir.0).unwrap();
    }
}

#[test]
fn grouped_records_are_applied_again_in_order_over_any_mixture() {
    let dir = Dir::new("grouped");
    let grouped = Durability::Grouped {
        retire_bytes: 1 << 30,
    };
    let run = three_checkpoints(16);
    let mut img = DurableImage::create(&dir.image(), GUEST, grouped).unwrap();
    let state = read(&state_path(&dir.image()));
    // The image as each commit left it, from the zero image on.
    let mut images = vec![read(&dir.image())];
    let mut rx = run.receiver();
    let mut commits = Vec::new();
    let mut last = None;
    for _ in 0..4 {
        let info = next(&mut rx, &mut img);
        commits.push(run.commit(&info));
        img.settle().unwrap(); // not retired: far below retire_bytes
        images.push(read(&dir.image()));
        last = Some(info);
    }
    assert_eq!(img.stats().syncs, 4, "one fsync per checkpoint");
    let last_pages = last.unwrap().data_pages;
    let journal = read(&journal_path(&dir.image()));
    drop(img);
    // Nothing retired since the image was made: the disk may hold any
    // word of any of the images, older or newer than each other.
    let mut rng = Rng(0x6e0_0ed);
    for trial in 0..40 {
        let image: Vec<u8> = (0..images[0].len() / 4)
            .flat_map(|w| {
                let k = rng.below(images.len() as u64) as usize;
                images[k][4 * w..4 * w + 4].to_vec()
            })
            .collect();
        std::fs::write(dir.image(), &image).unwrap();
        std::fs::write(state_path(&dir.image()), &state).unwrap();
        std::fs::write(journal_path(&dir.image()), &journal).unwrap();
        let (img, rec) = DurableImage::open(&dir.image(), grouped).unwrap();
        assert_eq!(rec.replayed, commits, "trial {trial}");
        assert_eq!(rec.digest_pages, last_pages);
        assert_eq!(img.holds(), commits.last().copied());
        check(&img, &run.states[3], &format!("grouped, trial {trial}"));
    }
}

#[test]
fn checkpoint_zero_of_a_new_stream_replaces_the_whole_image() {
    let dir = Dir::new("reset");
    let first = run(1, &[(0, 1), (10, 2), (20, 3)], &[&[(30, Change::Raw(4))]]);
    let second = run(2, &[(10, 5), (11, 6)], &[]);
    let mut img = DurableImage::create(&dir.image(), GUEST, Durability::Journal).unwrap();
    let mut rx = first.receiver();
    next(&mut rx, &mut img);
    next(&mut rx, &mut img);
    img.sync_all().unwrap();
    let old_image = read(&dir.image());
    // The new stream's checkpoint 0 carries pages 10 and 11: pages 0, 20
    // and 30 are zeroed.
    let before = img.stats().journal_bytes;
    let mut rx = second.receiver();
    let info = next(&mut rx, &mut img);
    assert_eq!(img.stats().zeroed, 3);
    // Two FULL pages, and the zeroed pages cost their PFNs only.
    assert_eq!(
        img.stats().journal_bytes - before,
        (HEAD + 2 * (ENTRY_HEAD + 1 + PAGE_SIZE) + 3 * 8 + COMMIT) as u64
    );
    check(
        &img,
        &second.states[0],
        "after the new stream's checkpoint 0",
    );
    drop(img);
    // Crash before the image saw any of it: recovery zeroes them again.
    std::fs::write(dir.image(), &old_image).unwrap();
    let (img, rec) = DurableImage::open(&dir.image(), Durability::Journal).unwrap();
    assert_eq!(rec.replayed, vec![second.commit(&info)]);
    assert_eq!(rec.replayed_pages, 2 + 3);
    check(&img, &second.states[0], "recovered");
}

#[test]
fn in_place_writes_no_journal() {
    let dir = Dir::new("inplace");
    let run = three_checkpoints(17);
    let mut img = DurableImage::create(&dir.image(), GUEST, Durability::InPlace).unwrap();
    let mut rx = run.receiver();
    for _ in 0..4 {
        next(&mut rx, &mut img);
    }
    assert_eq!(img.stats().journal_bytes, 0);
    assert_eq!(img.stats().syncs, 4 * 2);
    drop(img);
    let (img, rec) = DurableImage::open(&dir.image(), Durability::InPlace).unwrap();
    assert!(rec.clean());
    assert_eq!(img.holds().map(|c| c.seq), Some(3));
    check(&img, &run.states[3], "in place");
}
