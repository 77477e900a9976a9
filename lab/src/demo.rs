//! `ckpt demo`: a recorded trace replicated primary to backup over a
//! loopback TCP connection, through the same code as `ckpt send` and
//! `ckpt recv`: a [`Primary`] fed by [`drive`], paced at the trace's
//! epoch, and a [`Backup`] committing to a crash-consistent image file
//! (or to memory). At the end every page of the backup is compared with
//! the trace's memory.

use crate::replay::{Source, TraceSource};
use crate::replicate::{drive, DriveOptions, DriveReport};
use crate::trace::TraceLimits;
use crate::LabError;
use ckpt_engine::replicate::{
    Backup, BackupEnd, BackupEvent, BackupOptions, Primary, PrimaryOptions,
};
use ckpt_engine::{
    Codec, Commit, CommitStats, Durability, DurableImage, GuestMemory, Latency, Replica,
    SenderOptions, SparseMemory,
};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the demo's backup commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupMemory {
    /// An image file in a temporary folder, with this durability.
    Image(Durability),
    /// Memory only.
    Memory,
}

/// How the demo runs.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// The sender's settings (the guest size is the trace's).
    pub sender: SenderOptions,
    /// Checkpoint at the trace's recorded epoch (else as fast as the
    /// backup acknowledges).
    pub paced: bool,
    /// Most unacknowledged checkpoints.
    pub window: usize,
    /// Where the backup commits.
    pub memory: BackupMemory,
}

/// Summary of a demo run.
pub struct DemoReport {
    /// What the primary did.
    pub drive: DriveReport,
    /// The trace's epoch.
    pub epoch: Option<Duration>,
    /// Pages of the guest.
    pub guest_pages: u64,
    /// Checkpoints the backup committed.
    pub committed: u64,
    /// What the backup's image holds at the end.
    pub holds: Option<Commit>,
    /// Per checkpoint on the backup: receive, verify and commit.
    pub backup: Latency,
    /// The image's commit costs (an image file only).
    pub commit: Option<CommitStats>,
    /// Wall time of the whole run.
    pub wall: Duration,
    /// Every page of the backup equals the trace's.
    pub verified: bool,
}

/// A folder removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let p = std::env::temp_dir().join(format!("ckpt-demo-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

type BackupRun<M> = (Option<M>, u64, Latency, BackupEnd);

/// Runs a backup on `listener` until the stream ends.
fn run_backup<M: Replica>(
    listener: TcpListener,
    codec: Codec,
    opts: BackupOptions,
    create: ckpt_engine::replicate::CreateImage<M>,
) -> Result<BackupRun<M>, LabError> {
    let mut backup = Backup::new(listener, codec, opts, None, create);
    let mut committed = 0;
    let mut took = Latency::default();
    let end = backup.run(&mut |e| {
        if let BackupEvent::Committed { took: t, .. } = e {
            committed += 1;
            took.record(*t);
        }
    })?;
    Ok((backup.into_image(), committed, took, end))
}

fn same_as_trace(memory: &dyn GuestMemory, source: &TraceSource<std::fs::File>) -> bool {
    let store = source.reader().memory();
    let zero = [0u8; ckpt_simd::PAGE_SIZE];
    (0..memory.pages()).all(|p| memory.page(p) == store.get(p).unwrap_or(&zero))
}

/// Replicates `trace` over loopback TCP.
pub fn run(trace: &Path, codec: Codec, opts: &DemoOptions) -> Result<DemoReport, LabError> {
    let wall = Instant::now();
    let mut source =
        TraceSource::open_with_limits(trace, TraceLimits::for_receiver(&opts.sender.limits))?;
    let guest_pages = source.guest_pages();
    let epoch = source.epoch();
    let sender = SenderOptions {
        guest_pages,
        ..opts.sender.clone()
    };
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let backup_opts = BackupOptions {
        limits: sender.limits.clone(),
        timeout: Duration::from_secs(10),
        first_within: Some(Duration::from_secs(15)),
        start_over: false,
    };
    let dir = TempDir::new()?;
    let image_path = dir.0.join("guest.img");
    let memory = opts.memory;
    enum Image {
        File(Box<DurableImage>),
        Memory(SparseMemory),
    }
    let backup = std::thread::spawn(move || -> Result<(Image, u64, Latency), LabError> {
        match memory {
            BackupMemory::Image(durability) => {
                let create = Box::new(move |pages| {
                    DurableImage::create(&image_path, pages, durability)
                        .map_err(std::io::Error::other)
                });
                let (image, n, took, _) = run_backup(listener, codec, backup_opts, create)?;
                let mut image =
                    image.ok_or_else(|| LabError::Invalid("no stream arrived".into()))?;
                image.sync_all()?;
                Ok((Image::File(Box::new(image)), n, took))
            }
            BackupMemory::Memory => {
                let create = Box::new(|pages| Ok(SparseMemory::new(pages)));
                let (image, n, took, _) = run_backup(listener, codec, backup_opts, create)?;
                let image = image.ok_or_else(|| LabError::Invalid("no stream arrived".into()))?;
                Ok((Image::Memory(image), n, took))
            }
        }
    });
    let primary_opts = PrimaryOptions {
        sender,
        window: opts.window,
        // A slow disk under the backup is not a lost backup.
        timeout: Duration::from_secs(10),
        ..PrimaryOptions::new(guest_pages)
    };
    let pace = if opts.paced { epoch } else { None };
    let drove = Primary::connect(addr, codec, primary_opts)
        .map_err(LabError::from)
        .and_then(|primary| {
            let drive_opts = DriveOptions {
                pace,
                ..DriveOptions::default()
            };
            drive(&mut source, primary, &drive_opts, |_, _| {})
        });
    let backed = backup
        .join()
        .map_err(|_| LabError::Invalid("the backup thread panicked".into()))?;
    let drive = drove?;
    let (image, committed, backup) = backed?;
    let (holds, commit, verified) = match &image {
        Image::File(m) => (
            m.holds(),
            Some(m.stats().clone()),
            same_as_trace(&**m, &source),
        ),
        Image::Memory(m) => (m.holds(), None, same_as_trace(m, &source)),
    };
    drop(image);
    Ok(DemoReport {
        drive,
        epoch,
        guest_pages,
        committed,
        holds,
        backup,
        commit,
        wall: wall.elapsed(),
        verified,
    })
}
