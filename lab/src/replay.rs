//! Checkpoints as a Remus sender hands them to the engine, from a trace or
//! a synthetic guest, and the one loop that feeds them to a [`Sender`].

use crate::synth::Scenario;
use crate::trace::{TraceError, TraceLimits, TraceReader};
use crate::LabError;
use ckpt_engine::{PageBuf, PageType, SendError, Sender};
use std::io::{Read, Write};

/// One checkpoint.
pub struct Checkpoint {
    /// PFN entries in send order.
    pub entries: Vec<(u64, PageType)>,
    /// Contents of the entries that carry data, in order.
    pub pages: Box<[PageBuf]>,
    /// What those pages held before this checkpoint (zero when first seen),
    /// when the source knows it (traces do).
    pub previous: Option<Box<[PageBuf]>>,
    /// Toolstack chunks sent with it.
    pub toolstack: Vec<(i32, Vec<u8>)>,
    /// Whether this checkpoint goes uncompressed and switches compression on
    /// (the initial image).
    pub enable_compression: bool,
}

impl Checkpoint {
    /// Pages with data.
    pub fn data_pages(&self) -> usize {
        self.pages.len()
    }
}

/// Where checkpoints come from.
pub trait Source {
    /// Pages of the guest.
    fn guest_pages(&self) -> u64;
    /// The next checkpoint, or `None` after the last.
    fn next_checkpoint(&mut self) -> Result<Option<Checkpoint>, LabError>;
}

/// A trace's epochs as checkpoints: the first (the initial image) goes
/// uncompressed and enables compression.
pub struct TraceSource<R: Read> {
    reader: TraceReader<R>,
    first: bool,
    /// The file, for error messages.
    path: String,
}

impl<R: Read> TraceSource<R> {
    /// Checkpoints of `reader`'s epochs.
    pub fn new(reader: TraceReader<R>) -> TraceSource<R> {
        TraceSource {
            reader,
            first: true,
            path: "trace".into(),
        }
    }

    /// The trace reader (metadata, recorded memory).
    pub fn reader(&self) -> &TraceReader<R> {
        &self.reader
    }
}

impl TraceSource<std::fs::File> {
    /// Opens a trace file, with the default limits.
    pub fn open(path: &std::path::Path) -> Result<Self, LabError> {
        TraceSource::open_with_limits(path, TraceLimits::default())
    }

    /// Opens a trace file whose epochs go to a backup with `limits`.
    pub fn open_with_limits(path: &std::path::Path, limits: TraceLimits) -> Result<Self, LabError> {
        let reader =
            TraceReader::open_with_limits(path, limits).map_err(|e| LabError::trace(path, e))?;
        Ok(TraceSource {
            path: path.display().to_string(),
            ..TraceSource::new(reader)
        })
    }
}

impl<R: Read> Source for TraceSource<R> {
    fn guest_pages(&self) -> u64 {
        self.reader.guest_pages()
    }

    fn next_checkpoint(&mut self) -> Result<Option<Checkpoint>, LabError> {
        let Some(epoch) = self
            .reader
            .next_epoch()
            .map_err(|e: TraceError| LabError::Trace {
                path: self.path.clone(),
                source: e,
            })?
        else {
            return Ok(None);
        };
        Ok(Some(Checkpoint {
            entries: epoch.entries,
            pages: epoch.new,
            previous: Some(epoch.old),
            toolstack: Vec::new(),
            enable_compression: std::mem::take(&mut self.first),
        }))
    }
}

impl Source for Scenario {
    fn guest_pages(&self) -> u64 {
        self.guest().pages()
    }

    fn next_checkpoint(&mut self) -> Result<Option<Checkpoint>, LabError> {
        Ok(self.next())
    }
}

/// Sends one checkpoint through `sender`, entry by entry in send order.
pub fn send_checkpoint<W: Write + Send + 'static>(
    sender: &mut Sender<W>,
    cp: &Checkpoint,
) -> Result<(), SendError> {
    sender.begin_checkpoint()?;
    let mut data = cp.pages.iter();
    for &(pfn, ty) in &cp.entries {
        let page = if ty.carries_data() {
            Some(&data.next().expect("one page per data entry").0)
        } else {
            None
        };
        sender.page(pfn, ty, page)?;
    }
    for (id, payload) in &cp.toolstack {
        sender.toolstack_chunk(*id, payload)?;
    }
    if cp.enable_compression {
        sender.enable_compression()?;
    }
    sender.end_checkpoint()
}

/// Sends every checkpoint of `source` through `sender`, calling `each`
/// with each checkpoint before it is sent (to measure, pace or wait).
/// Returns the checkpoints sent.
pub fn replay<W: Write + Send + 'static, S: Source + ?Sized>(
    source: &mut S,
    sender: &mut Sender<W>,
    mut each: impl FnMut(&Checkpoint, &mut Sender<W>) -> Result<(), LabError>,
) -> Result<u64, LabError> {
    let mut n = 0;
    while let Some(cp) = source.next_checkpoint()? {
        each(&cp, sender)?;
        send_checkpoint(sender, &cp)?;
        n += 1;
    }
    Ok(n)
}
