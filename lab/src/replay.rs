//! Checkpoints as a Remus sender hands them to the engine, from a trace or
//! a synthetic guest, and the one loop that feeds them to a [`Sender`].

use crate::trace::{TraceError, TraceLimits, TraceReader};
use crate::LabError;
use ckpt_engine::{PageBuf, PageType, SendError, Sender};
use ckpt_simd::Page;
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
    /// Every non-zero page of the guest as it is now, as one checkpoint
    /// (what a replicating primary sends first on a new stream); before
    /// the first checkpoint, the first. `None` once nothing can be had.
    fn full_checkpoint(&mut self) -> Result<Option<Checkpoint>, LabError> {
        Err(LabError::Invalid(
            "this source cannot give a full checkpoint".into(),
        ))
    }
}

/// A checkpoint of every non-zero page `page(pfn)` gives for PFNs below
/// `guest_pages`, sent as normal pages; it enables compression.
pub fn full_from<'a>(guest_pages: u64, page: impl Fn(u64) -> Option<&'a Page>) -> Checkpoint {
    static ZERO: Page = [0u8; ckpt_simd::PAGE_SIZE];
    let pfns: Vec<u64> = (0..guest_pages)
        .filter(|&p| page(p).is_some_and(|c| c != &ZERO))
        .collect();
    let mut pages = PageBuf::arena(pfns.len());
    for (slot, &pfn) in pages.iter_mut().zip(&pfns) {
        slot.0 = *page(pfn).expect("filtered above");
    }
    Checkpoint {
        entries: pfns.iter().map(|&p| (p, PageType::Normal)).collect(),
        pages,
        previous: None,
        toolstack: Vec::new(),
        enable_compression: true,
    }
}

/// A trace's epochs as checkpoints: the first (the initial image) goes
/// uncompressed and enables compression.
pub struct TraceSource<R: Read> {
    reader: TraceReader<R>,
    first: bool,
    /// The file, named in errors (empty for a reader of no file).
    path: String,
}

impl<R: Read> TraceSource<R> {
    /// Checkpoints of `reader`'s epochs.
    pub fn new(reader: TraceReader<R>) -> TraceSource<R> {
        TraceSource {
            reader,
            first: true,
            path: String::new(),
        }
    }

    /// The trace reader (metadata, recorded memory).
    pub fn reader(&self) -> &TraceReader<R> {
        &self.reader
    }

    /// The epoch the trace was recorded at (its metadata's `epoch_ms`).
    pub fn epoch(&self) -> Option<std::time::Duration> {
        let meta: serde_json::Value = serde_json::from_str(self.reader.meta()).ok()?;
        let ms = meta.get("epoch_ms")?.as_f64()?;
        (ms.is_finite() && ms > 0.0 && ms < 3.6e6)
            .then(|| std::time::Duration::from_secs_f64(ms / 1e3))
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

    fn full_checkpoint(&mut self) -> Result<Option<Checkpoint>, LabError> {
        if self.first {
            return self.next_checkpoint();
        }
        let memory = self.reader.memory();
        Ok(Some(full_from(self.reader.guest_pages(), |p| {
            memory.get(p)
        })))
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
    each: impl FnMut(&Checkpoint, &mut Sender<W>) -> Result<(), LabError>,
) -> Result<u64, LabError> {
    replay_observed(source, sender, each, |_, _| Ok(()))
}

/// [`replay`], calling `after` too, with each checkpoint once it is handed
/// to the sender (`send_checkpoint` returned: staging done).
pub fn replay_observed<W: Write + Send + 'static, S: Source + ?Sized>(
    source: &mut S,
    sender: &mut Sender<W>,
    mut before: impl FnMut(&Checkpoint, &mut Sender<W>) -> Result<(), LabError>,
    mut after: impl FnMut(&Checkpoint, &mut Sender<W>) -> Result<(), LabError>,
) -> Result<u64, LabError> {
    let mut n = 0;
    while let Some(cp) = source.next_checkpoint()? {
        before(&cp, sender)?;
        send_checkpoint(sender, &cp)?;
        after(&cp, sender)?;
        n += 1;
    }
    Ok(n)
}
