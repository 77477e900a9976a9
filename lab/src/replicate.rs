//! Replication from the lab's checkpoint sources (`ckpt send`, `ckpt
//! demo`): [`drive`] feeds a [`Source`] to a [`Primary`], paced at an epoch
//! or as fast as the backup acknowledges, sending a full checkpoint
//! whenever the primary starts a new stream; [`LiveSource`] checkpoints a
//! live process the way `ckpt record` does, its pages going to the
//! primary instead of a trace.

use crate::replay::{Checkpoint, Source};
use crate::LabError;
use ckpt_engine::replicate::{CheckpointKind, Delivery, Primary, PrimaryReport};
use ckpt_engine::Latency;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How [`drive`] paces and stops.
#[derive(Clone, Debug, Default)]
pub struct DriveOptions {
    /// One checkpoint every `pace` (the epoch); `None`: each as soon as the
    /// window allows.
    pub pace: Option<Duration>,
    /// Stop after this many checkpoints from the source.
    pub max_checkpoints: Option<u64>,
    /// Stop once this is set.
    pub stop: Option<Arc<AtomicBool>>,
}

/// One checkpoint handed to the primary.
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    /// Full or incremental.
    pub kind: CheckpointKind,
    /// What became of it.
    pub delivery: Delivery,
    /// Pages with data it carried.
    pub data_pages: usize,
    /// Checkpoints taken from the source so far, this one included.
    pub taken: u64,
}

/// What [`drive`] did.
#[derive(Clone, Debug)]
pub struct DriveReport {
    /// The primary's figures.
    pub primary: PrimaryReport,
    /// Checkpoints taken from the source.
    pub taken: u64,
    /// Time the source took to give each checkpoint (for a live process,
    /// its pause: stop, scan, resume).
    pub capture: Latency,
    /// Checkpoints that started more than an epoch after their time,
    /// waiting for an acknowledgement (paced runs only).
    pub late: u64,
}

/// Sends one checkpoint's entries and toolstack chunks through a begun
/// checkpoint and ends it.
pub fn send_to_primary(primary: &mut Primary, cp: &Checkpoint) -> Result<Delivery, LabError> {
    let mut data = cp.pages.iter();
    for &(pfn, ty) in &cp.entries {
        let page = if ty.carries_data() {
            Some(&data.next().expect("one page per data entry").0)
        } else {
            None
        };
        primary.page(pfn, ty, page)?;
    }
    for (id, payload) in &cp.toolstack {
        primary.toolstack_chunk(*id, payload)?;
    }
    Ok(primary.end_checkpoint()?)
}

fn capture<S: Source + ?Sized>(
    source: &mut S,
    kind: CheckpointKind,
    timing: &mut Latency,
) -> Result<Option<Checkpoint>, LabError> {
    let t = Instant::now();
    let cp = match kind {
        CheckpointKind::Full => source.full_checkpoint()?,
        CheckpointKind::Incremental => source.next_checkpoint()?,
    };
    timing.record(t.elapsed());
    Ok(cp)
}

/// Replicates `source` through `primary` until the source ends (or the
/// options stop it), then makes sure the backup holds the last state
/// (resending it whole on a new connection if the last one failed) and
/// ends the stream. `each` sees every checkpoint handed to the primary,
/// with the source as it is right after it.
pub fn drive<S: Source + ?Sized>(
    source: &mut S,
    mut primary: Primary,
    opts: &DriveOptions,
    mut each: impl FnMut(&Sent, &S),
) -> Result<DriveReport, LabError> {
    let mut timing = Latency::default();
    let mut taken = 0u64;
    let mut late = 0u64;
    let mut next = Instant::now();
    let stopped = |taken: u64| {
        opts.max_checkpoints.is_some_and(|n| taken >= n)
            || opts.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst))
    };
    while !stopped(taken) {
        let scheduled = next;
        if let Some(pace) = opts.pace {
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            next = next.max(Instant::now()) + pace;
        }
        let kind = primary.wait_ready()?;
        if opts.pace.is_some_and(|p| Instant::now() > scheduled + p) {
            late += 1;
        }
        let Some(mut cp) = capture(source, kind, &mut timing)? else {
            break;
        };
        taken += 1;
        let now = primary.begin_checkpoint()?;
        if now == CheckpointKind::Full && kind != CheckpointKind::Full {
            // The connection failed between the two calls: the new stream
            // starts with the whole guest as it is now.
            match capture(source, now, &mut timing)? {
                Some(full) => cp = full,
                None => return Err(LabError::Invalid("the source ended mid-resend".into())),
            }
        }
        let delivery = send_to_primary(&mut primary, &cp)?;
        each(
            &Sent {
                kind: now,
                delivery,
                data_pages: cp.data_pages(),
                taken,
            },
            source,
        );
    }
    // The backup must end holding the last state sent.
    while !primary.wait_acknowledged() {
        let kind = primary.wait_ready()?;
        let cp = capture(source, CheckpointKind::Full, &mut timing)?.ok_or_else(|| {
            LabError::Invalid(
                "the connection failed at the end and the source cannot be sent again".into(),
            )
        })?;
        let now = primary.begin_checkpoint()?;
        debug_assert_eq!((kind, now), (CheckpointKind::Full, CheckpointKind::Full));
        let delivery = send_to_primary(&mut primary, &cp)?;
        each(
            &Sent {
                kind: now,
                delivery,
                data_pages: cp.data_pages(),
                taken,
            },
            source,
        );
    }
    let primary = primary.finish()?;
    Ok(DriveReport {
        primary,
        taken,
        capture: timing,
        late,
    })
}

#[cfg(target_os = "linux")]
pub use live::LiveSource;

#[cfg(target_os = "linux")]
mod live {
    use crate::record::{EpochSink, RecordError, Recorder};
    use crate::record_session::Target;
    use crate::replay::{Checkpoint, Source};
    use crate::LabError;
    use ckpt_engine::{PageBuf, PageType};
    use ckpt_simd::{Codec, Page};
    use std::time::Duration;

    /// Pages of one epoch, copied out of the recorder.
    #[derive(Default)]
    struct Capture {
        entries: Vec<(u64, PageType)>,
        pages: Option<Box<[PageBuf]>>,
    }

    impl EpochSink for Capture {
        fn epoch(
            &mut self,
            pages: &[(u64, PageType, &Page)],
            _pause_ns: u64,
            _run_ns: u64,
        ) -> Result<(), RecordError> {
            self.entries = pages.iter().map(|&(pfn, ty, _)| (pfn, ty)).collect();
            let mut data = PageBuf::arena(pages.len());
            for (slot, (_, _, p)) in data.iter_mut().zip(pages) {
                slot.0 = **p;
            }
            self.pages = Some(data);
            Ok(())
        }
    }

    /// A live process (and, on request, its descendants) checkpointed
    /// every epoch as `ckpt record` does; its pages (PFNs given in the
    /// order pages are first seen) make checkpoints of a guest of a fixed
    /// size.
    pub struct LiveSource {
        recorder: Recorder<Capture>,
        target: Target,
        children: bool,
        epoch: Duration,
        guest_pages: u64,
        first: bool,
    }

    impl LiveSource {
        /// Checkpoints `target` as a guest of `guest_pages` pages.
        pub fn new(
            target: Target,
            children: bool,
            epoch: Duration,
            guest_pages: u64,
            codec: Codec,
        ) -> LiveSource {
            LiveSource {
                recorder: Recorder::new(Capture::default(), codec, 2),
                target,
                children,
                epoch,
                guest_pages,
                first: true,
            }
        }

        /// The process.
        pub fn pid(&self) -> i32 {
            self.target.pid()
        }
    }

    impl Source for LiveSource {
        fn guest_pages(&self) -> u64 {
            self.guest_pages
        }

        fn next_checkpoint(&mut self) -> Result<Option<Checkpoint>, LabError> {
            let pid = self.target.pid();
            if self
                .recorder
                .epoch(pid, self.children, self.epoch)?
                .is_none()
            {
                return Ok(None); // the process exited
            }
            let sink = self.recorder.sink();
            let entries = std::mem::take(&mut sink.entries);
            let pages = sink.pages.take().unwrap_or_else(|| PageBuf::arena(0));
            if let Some(&(pfn, _)) = entries.iter().find(|e| e.0 >= self.guest_pages) {
                return Err(LabError::Invalid(format!(
                    "process {pid} has more memory than the guest's {} pages (page {pfn}): give a larger guest size",
                    self.guest_pages
                )));
            }
            Ok(Some(Checkpoint {
                entries,
                pages,
                previous: None,
                toolstack: Vec::new(),
                enable_compression: std::mem::take(&mut self.first),
            }))
        }

        fn full_checkpoint(&mut self) -> Result<Option<Checkpoint>, LabError> {
            self.recorder.restart();
            self.first = true;
            self.next_checkpoint()
        }
    }
}
