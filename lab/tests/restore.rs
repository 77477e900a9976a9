//! `ckpt restore`'s image: the backup decides its size, never the stream.
//! An existing image keeps its size; a new one gets the size asked for, or
//! the stream's if within `max_guest_pages`; a stream for a larger guest is
//! refused before anything is created or written.

use ckpt_engine::{Codec, Limits, StreamError};
use ckpt_lab::hostile::{sample_stream_for, stream_huge_guest};
use ckpt_lab::streams::{restore, ImageSize, RestoreReport};
use ckpt_lab::LabError;
use std::path::Path;

fn run(
    stream: &Path,
    image: &Path,
    size: ImageSize,
    max_guest_pages: u64,
) -> Result<RestoreReport, LabError> {
    let limits = Limits {
        max_guest_pages,
        ..Limits::default()
    };
    let mut seen = 0;
    let r = restore(
        stream,
        image,
        size,
        limits,
        Codec::best(),
        None,
        &mut |_| {
            seen += 1;
            Ok(())
        },
    );
    if let Ok(r) = &r {
        assert_eq!(
            r.checkpoints, seen,
            "each checkpoint is reported as it commits"
        );
    }
    r
}

#[test]
fn the_image_size_is_the_backups() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let stream = d.join("s");
    std::fs::write(&stream, sample_stream_for(64, 9)).unwrap();
    let huge = d.join("huge");
    std::fs::write(&huge, stream_huge_guest()).unwrap();
    let image = d.join("image");

    // A stream claiming 2^28 pages creates nothing.
    let e = run(&huge, &image, ImageSize::Configured, 1 << 20)
        .err()
        .unwrap();
    assert!(
        matches!(
            e,
            LabError::Receive(ckpt_engine::ReceiveError::Stream(
                StreamError::GuestTooLarge {
                    guest_pages: 268435456,
                    limit: 1048576
                }
            ))
        ),
        "{e}"
    );
    assert!(!image.exists());
    let e = run(&huge, &image, ImageSize::Pages(16), 1 << 20)
        .err()
        .unwrap();
    assert!(e.to_string().contains("more than the 16 pages"), "{e}");
    assert!(!image.exists());

    // Within the limit: created at the stream's size.
    let r = run(&stream, &image, ImageSize::Configured, 64).unwrap();
    assert!(r.complete && r.error.is_none() && r.checkpoints == 6);
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 64 * 4096);
    let written = std::fs::read(&image).unwrap();

    // An existing image keeps its size, whatever the limit says; asking for
    // another size is an error that leaves it alone.
    let r = run(&stream, &image, ImageSize::Configured, 1).unwrap();
    assert!(r.complete);
    let e = run(&stream, &image, ImageSize::Pages(65), 1 << 20)
        .err()
        .unwrap();
    assert!(e.to_string().contains("holds 64 pages, not the 65"), "{e}");
    assert_eq!(std::fs::read(&image).unwrap(), written);

    // A stream for a larger guest than the existing image is refused.
    let bigger = d.join("bigger");
    std::fs::write(&bigger, sample_stream_for(128, 9)).unwrap();
    let e = run(&bigger, &image, ImageSize::Configured, 1 << 20)
        .err()
        .unwrap();
    assert!(
        e.to_string()
            .contains("holds 64 pages; the stream is for a guest of 128"),
        "{e}"
    );
    assert_eq!(std::fs::read(&image).unwrap(), written);

    // Asked for a larger image than the stream's guest: created at that size.
    let roomy = d.join("roomy");
    let r = run(&stream, &roomy, ImageSize::Pages(100), 1).unwrap();
    assert!(r.complete);
    assert_eq!(std::fs::metadata(&roomy).unwrap().len(), 100 * 4096);
    assert_eq!(std::fs::read(&roomy).unwrap()[..64 * 4096], written[..]);

    // An existing file that is not a whole number of pages is not an image.
    let odd = d.join("odd");
    std::fs::write(&odd, [0u8; 5000]).unwrap();
    let e = run(&stream, &odd, ImageSize::Configured, 1 << 20)
        .err()
        .unwrap();
    assert!(e.to_string().contains("not a whole number of pages"), "{e}");
}
