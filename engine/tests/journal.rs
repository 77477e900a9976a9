//! The crash-consistent image (`docs/REPLICATION.md`, "The backup's
//! image"): every state a crash can leave on disk recovers to exactly one
//! whole checkpoint. A crash is simulated by dropping the image without
//! its settle step, then putting the files into the state the crash left
//! (a journal cut at any byte, an image half applied).

#![cfg(unix)]

use ckpt_engine::{
    journal_path, state_path, Commit, Durability, DurableImage, GuestMemory, ImageError, Replica,
};
use ckpt_simd::{Page, PAGE_SIZE};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const GUEST: u64 = 64;

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("ckpt-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn image(&self) -> PathBuf {
        self.0.join("guest.img")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn page(seed: u64) -> Box<Page> {
    let mut p = Box::new([0u8; PAGE_SIZE]);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for c in p.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes());
    }
    p
}

/// The whole guest as the test expects it.
type Model = BTreeMap<u64, Box<Page>>;

fn commit(stream: u128, seq: u64) -> Commit {
    Commit {
        stream_id: stream,
        guest_pages: GUEST,
        seq,
        digest: (stream << 8) ^ seq as u128,
    }
}

/// Commits `pages` as checkpoint `c` (without settling) and updates the
/// model the way the replica's rules say.
fn put(img: &mut DurableImage, model: &mut Model, c: Commit, pages: &[(u64, u64)]) {
    img.begin_commit(&c).unwrap();
    for &(pfn, seed) in pages {
        img.page_mut(pfn).copy_from_slice(&page(seed)[..]);
    }
    img.end_commit(&c).unwrap();
    if c.seq == 0 {
        model.clear();
    }
    for &(pfn, seed) in pages {
        model.insert(pfn, page(seed));
    }
}

fn check(img: &DurableImage, model: &Model, what: &str) {
    let zero = [0u8; PAGE_SIZE];
    for pfn in 0..GUEST {
        let want: &Page = model.get(&pfn).map_or(&zero, |p| p);
        assert!(img.page(pfn) == want, "{what}: pfn {pfn} differs");
    }
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn commits_survive_reopening_and_report_what_they_hold() {
    let dir = Dir::new("reopen");
    let mut model = Model::new();
    {
        let mut img = DurableImage::create(&dir.image(), GUEST, Durability::Journal).unwrap();
        assert_eq!(img.holds(), None);
        put(
            &mut img,
            &mut model,
            commit(7, 0),
            &[(0, 1), (5, 2), (63, 3)],
        );
        img.settle().unwrap();
        put(&mut img, &mut model, commit(7, 1), &[(5, 4), (6, 5)]);
        img.settle().unwrap();
        let s = img.stats();
        assert_eq!((s.commits, s.pages), (2, 5));
        // Header, pages with their PFNs, commit record.
        assert_eq!(s.journal_bytes, 2 * (88 + 24) + 5 * (8 + 4096));
        assert_eq!(s.syncs, 2 * 4);
    }
    let (img, rec) = DurableImage::open(&dir.image(), Durability::Journal).unwrap();
    assert!(rec.clean(), "{rec:?}");
    assert_eq!(img.holds(), Some(commit(7, 1)));
    check(&img, &model, "reopened");
}

/// Commits checkpoint 1 and "crashes" before settling; returns the files
/// as the crash left them, and the models before and after.
fn crashed_commit(dir: &Dir, durability: Durability) -> (Vec<u8>, Vec<u8>, Model, Model) {
    let mut model = Model::new();
    let mut img = DurableImage::create(&dir.image(), GUEST, durability).unwrap();
    put(
        &mut img,
        &mut model,
        commit(9, 0),
        &[(1, 10), (2, 11), (3, 12)],
    );
    img.sync_all().unwrap();
    let before = model.clone();
    let old_image = read(&dir.image());
    put(
        &mut img,
        &mut model,
        commit(9, 1),
        &[(2, 20), (3, 21), (40, 22)],
    );
    drop(img); // no settle: the journal holds checkpoint 1, not retired
    (old_image, read(&journal_path(&dir.image())), before, model)
}

#[test]
fn a_journal_cut_at_any_byte_recovers_to_one_whole_checkpoint() {
    let dir = Dir::new("cut");
    let (old_image, journal, before, after) = crashed_commit(&dir, Durability::Journal);
    let state = read(&state_path(&dir.image()));
    assert_eq!(journal.len(), 88 + 3 * 4104 + 24);
    let mut replayed = 0;
    let mut discarded = 0;
    // Every byte of the header, the first page entry and the commit
    // record, and a stride through the rest.
    let mut cuts: Vec<usize> = (0..=200).collect();
    cuts.extend((200..journal.len() - 40).step_by(97));
    cuts.extend(journal.len() - 40..=journal.len());
    for cut in cuts {
        // The image was not touched before the commit record was durable.
        std::fs::write(dir.image(), &old_image).unwrap();
        std::fs::write(state_path(&dir.image()), &state).unwrap();
        std::fs::write(journal_path(&dir.image()), &journal[..cut]).unwrap();
        let (img, rec) = DurableImage::open(&dir.image(), Durability::Journal).unwrap();
        if cut == journal.len() {
            assert_eq!(rec.replayed, vec![commit(9, 1)], "cut {cut}");
            assert_eq!(rec.replayed_pages, 3);
            assert_eq!(img.holds(), Some(commit(9, 1)));
            check(&img, &after, "whole journal");
            replayed += 1;
        } else {
            assert!(rec.replayed.is_empty(), "cut {cut}: {rec:?}");
            if let Some(d) = rec.discarded {
                assert_eq!((d.seq, d.stream_id, d.bytes), (1, 9, cut as u64));
                discarded += 1;
            }
            assert_eq!(img.holds(), Some(commit(9, 0)), "cut {cut}");
            check(&img, &before, &format!("cut {cut}"));
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
    assert_eq!(replayed, 1);
    // Once the header is whole, the record is reported as dropped.
    assert!(discarded > 100, "{discarded}");
}

#[test]
fn a_half_applied_checkpoint_is_applied_again() {
    let dir = Dir::new("half");
    let (old_image, journal, _, after) = crashed_commit(&dir, Durability::Journal);
    let state = read(&state_path(&dir.image()));
    let applied = read(&dir.image());
    // Killed in the middle of the apply: each prefix of the changed pages
    // reached the image, the rest still old, and one page torn in half.
    for reached in 0..=3usize {
        let mut image = old_image.clone();
        for (k, pfn) in [2usize, 3, 40].into_iter().enumerate() {
            let at = pfn * PAGE_SIZE;
            let len = if k < reached {
                PAGE_SIZE
            } else if k == reached {
                PAGE_SIZE / 2
            } else {
                0
            };
            image[at..at + len].copy_from_slice(&applied[at..at + len]);
        }
        std::fs::write(dir.image(), &image).unwrap();
        std::fs::write(state_path(&dir.image()), &state).unwrap();
        std::fs::write(journal_path(&dir.image()), &journal).unwrap();
        let (img, rec) = DurableImage::open(&dir.image(), Durability::Journal).unwrap();
        assert_eq!(rec.replayed, vec![commit(9, 1)]);
        assert_eq!(img.holds(), Some(commit(9, 1)));
        check(&img, &after, &format!("{reached} pages applied"));
    }
}

#[test]
fn a_damaged_record_is_dropped_whole() {
    let dir = Dir::new("flip");
    let (old_image, journal, before, _) = crashed_commit(&dir, Durability::Journal);
    let state = read(&state_path(&dir.image()));
    for at in [
        0,
        9,
        40,
        87,
        88,
        95,
        96,
        4000,
        88 + 4104 + 3,
        journal.len() - 24,
        journal.len() - 5,
    ] {
        let mut j = journal.clone();
        j[at] ^= 0x40;
        std::fs::write(dir.image(), &old_image).unwrap();
        std::fs::write(state_path(&dir.image()), &state).unwrap();
        std::fs::write(journal_path(&dir.image()), &j).unwrap();
        let (img, rec) = DurableImage::open(&dir.image(), Durability::Journal).unwrap();
        assert!(rec.replayed.is_empty(), "byte {at}");
        assert_eq!(img.holds(), Some(commit(9, 0)), "byte {at}");
        check(&img, &before, &format!("byte {at} flipped"));
    }
}

#[test]
fn grouped_records_are_applied_again_in_order() {
    let dir = Dir::new("grouped");
    let grouped = Durability::Grouped {
        retire_bytes: 1 << 30,
    };
    let mut model = Model::new();
    let mut img = DurableImage::create(&dir.image(), GUEST, grouped).unwrap();
    put(&mut img, &mut model, commit(3, 0), &[(0, 1), (1, 2)]);
    img.settle().unwrap(); // not retired: far below retire_bytes
    put(&mut img, &mut model, commit(3, 1), &[(1, 3)]);
    img.settle().unwrap();
    put(&mut img, &mut model, commit(3, 2), &[(1, 4), (2, 5)]);
    assert_eq!(img.stats().syncs, 3, "one fsync per checkpoint");
    let applied = read(&dir.image());
    drop(img);
    // None of it reached the image file before the crash.
    std::fs::write(dir.image(), vec![0u8; applied.len()]).unwrap();
    let (img, rec) = DurableImage::open(&dir.image(), grouped).unwrap();
    assert_eq!(rec.replayed, vec![commit(3, 0), commit(3, 1), commit(3, 2)]);
    assert_eq!(img.holds(), Some(commit(3, 2)));
    check(&img, &model, "grouped");
}

#[test]
fn checkpoint_zero_of_a_new_stream_replaces_the_whole_image() {
    let dir = Dir::new("reset");
    let mut model = Model::new();
    let mut img = DurableImage::create(&dir.image(), GUEST, Durability::Journal).unwrap();
    put(
        &mut img,
        &mut model,
        commit(1, 0),
        &[(0, 1), (10, 2), (20, 3)],
    );
    put(&mut img, &mut model, commit(1, 1), &[(30, 4)]);
    img.settle().unwrap();
    // A new stream: pages 0, 20 and 30 are not in its checkpoint 0.
    let before = img.stats().journal_bytes;
    put(&mut img, &mut model, commit(2, 0), &[(10, 5), (11, 6)]);
    assert_eq!(img.stats().zeroed, 3);
    // The zeroed pages cost their PFNs only.
    assert_eq!(
        img.stats().journal_bytes - before,
        88 + 2 * 4104 + 3 * 8 + 24
    );
    check(&img, &model, "after the new stream's checkpoint 0");
    drop(img);
    // Crash before the image saw any of it: recovery zeroes them again.
    let (img, rec) = DurableImage::open(&dir.image(), Durability::Journal).unwrap();
    assert_eq!(rec.replayed_pages, 2 + 3);
    check(&img, &model, "recovered");
}

#[test]
fn in_place_writes_no_journal() {
    let dir = Dir::new("inplace");
    let mut model = Model::new();
    let mut img = DurableImage::create(&dir.image(), GUEST, Durability::InPlace).unwrap();
    put(&mut img, &mut model, commit(4, 0), &[(3, 1)]);
    put(&mut img, &mut model, commit(4, 1), &[(3, 2), (4, 3)]);
    assert_eq!(img.stats().journal_bytes, 0);
    drop(img);
    let (img, rec) = DurableImage::open(&dir.image(), Durability::InPlace).unwrap();
    assert!(rec.clean());
    assert_eq!(img.holds(), Some(commit(4, 1)));
    check(&img, &model, "in place");
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
    // A checkpoint for another guest size is refused before anything is written.
    let other = Commit {
        guest_pages: GUEST + 1,
        ..commit(1, 0)
    };
    assert!(img.begin_commit(&other).is_err());
    let mut model = Model::new();
    put(&mut img, &mut model, commit(1, 0), &[(1, 1)]);
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
    assert_eq!(img.holds(), Some(commit(1, 0)));
    check(&img, &model, "one slot left");
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
