//! The image file a backup commits to: created at the size asked for with
//! every block allocated (so a full disk shows when it is created, not as a
//! SIGBUS in a commit), opened at its own size, and every error naming it.
#![cfg(unix)]

use ckpt_engine::{Commit, GuestMemory, ImageFile};
use std::os::unix::fs::MetadataExt;

#[test]
fn a_new_image_is_allocated_and_an_existing_one_keeps_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("img");
    let commit = Commit {
        stream_id: 1,
        guest_pages: 256,
        seq: 0,
        digest: 0,
    };
    {
        let mut img = ImageFile::create(&path, 256).unwrap();
        assert_eq!(img.pages(), 256);
        img.begin_commit(&commit).unwrap();
        img.page_mut(255).fill(7);
        img.end_commit(&commit).unwrap();
    }
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), 256 * 4096);
    #[cfg(any(target_os = "linux", target_os = "freebsd"))]
    assert!(
        meta.blocks() * 512 >= 256 * 4096,
        "{} bytes allocated for a 1 MiB image",
        meta.blocks() * 512
    );
    let e = ImageFile::create(&path, 16).err().unwrap();
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    let img = ImageFile::open_existing(&path).unwrap();
    assert_eq!(img.pages(), 256);
    assert_eq!(img.page(255), &[7u8; 4096]);
    assert_eq!(img.page(0), &[0u8; 4096]);
    drop(img);

    // Not a whole number of pages, empty, missing: errors naming the file.
    let odd = dir.path().join("odd");
    std::fs::write(&odd, [0u8; 5000]).unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, []).unwrap();
    for p in [&odd, &empty, &dir.path().join("missing")] {
        let e = ImageFile::open_existing(p).err().unwrap();
        assert!(e.to_string().contains(&p.display().to_string()), "{e}");
    }
    for pages in [0, (1 << 28) + 1] {
        let e = ImageFile::create(&dir.path().join("bad"), pages)
            .err()
            .unwrap();
        assert!(e.to_string().contains("1 to 2^28 pages"), "{e}");
        assert!(
            !dir.path().join("bad").exists(),
            "a refused image is removed"
        );
    }
}
