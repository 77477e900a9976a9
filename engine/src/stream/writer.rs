//! The stream writer (`docs/STREAM.md`): writes the header, checkpoint
//! frames with their legacy bodies (`docs/FORMAT.md` §4) and trailers, and
//! the end frame, keeping each frame's check over every byte it writes.
//! It enforces the body's layout (batches of at most 1024 entries, the
//! order of the parts); what goes in it is the sender's to decide.

use super::{
    crc, EndFrame, FrameHead, Heartbeat, StreamHeader, Trailer, CHUNK_COMPRESSED_DATA,
    CHUNK_ENABLE_COMPRESSION, CHUNK_END, MAX_BATCH,
};
use ckpt_simd::Page;
use std::io::{self, Write};

/// Writes a checkpoint stream to any [`Write`].
pub struct StreamWriter<W: Write> {
    w: W,
    written: u64,
    seed: u32,
    crc: u32,
    checkpoints: u64,
    heartbeats: u64,
    scratch: Vec<u8>,
}

impl<W: Write> StreamWriter<W> {
    /// Writes the stream header.
    pub fn new(mut w: W, header: &StreamHeader) -> io::Result<Self> {
        let b = header.to_bytes();
        w.write_all(&b)?;
        Ok(StreamWriter {
            w,
            written: b.len() as u64,
            seed: header.check(),
            crc: 0,
            checkpoints: 0,
            heartbeats: 0,
            scratch: Vec::with_capacity(MAX_BATCH * 8 + 4),
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Checkpoints completed so far.
    pub fn checkpoints(&self) -> u64 {
        self.checkpoints
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b)?;
        self.crc = crc(self.crc, b);
        self.written += b.len() as u64;
        Ok(())
    }

    /// Opens the frame of checkpoint `seq` (the next in sequence).
    pub fn begin_checkpoint(&mut self) -> io::Result<()> {
        self.crc = self.seed;
        let head = FrameHead {
            seq: self.checkpoints,
        };
        self.put(&head.to_bytes())
    }

    /// Writes PFN entries as batches of at most 1024, without page data
    /// (Format B, or entries that carry none).
    pub fn pfn_batches(&mut self, entries: &[u64]) -> io::Result<()> {
        for batch in entries.chunks(MAX_BATCH) {
            self.batch(batch)?;
        }
        Ok(())
    }

    /// Writes one PFN batch of at most 1024 entries followed by `pages`,
    /// the data of its data-carrying entries in order (Format A).
    pub fn pfn_batch_with_data<'p>(
        &mut self,
        entries: &[u64],
        pages: impl IntoIterator<Item = &'p Page>,
    ) -> io::Result<()> {
        assert!(entries.len() <= MAX_BATCH, "a PFN batch holds at most 1024");
        self.batch(entries)?;
        for p in pages {
            self.put(p)?;
        }
        Ok(())
    }

    fn batch(&mut self, batch: &[u64]) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        buf.extend_from_slice(&(batch.len() as i32).to_le_bytes());
        for e in batch {
            buf.extend_from_slice(&e.to_le_bytes());
        }
        let r = self.put(&buf);
        self.scratch = buf;
        r
    }

    /// Writes a COMPRESSED_DATA chunk of `len` bytes given in `pieces`.
    pub fn compressed_chunk<'p>(
        &mut self,
        len: u64,
        pieces: impl IntoIterator<Item = &'p [u8]>,
    ) -> io::Result<()> {
        let mut head = [0u8; 12];
        head[..4].copy_from_slice(&CHUNK_COMPRESSED_DATA.to_le_bytes());
        head[4..].copy_from_slice(&len.to_le_bytes());
        self.put(&head)?;
        let mut n = 0u64;
        for p in pieces {
            self.put(p)?;
            n += p.len() as u64;
        }
        assert_eq!(n, len, "a chunk's pieces add up to its length");
        Ok(())
    }

    /// Writes a toolstack chunk: its type, then its payload.
    pub fn toolstack_chunk(&mut self, id: i32, payload: &[u8]) -> io::Result<()> {
        self.put(&id.to_le_bytes())?;
        self.put(payload)
    }

    /// Writes ENABLE_COMPRESSION.
    pub fn enable_compression(&mut self) -> io::Result<()> {
        self.put(&CHUNK_ENABLE_COMPRESSION.to_le_bytes())
    }

    /// Ends the body and the frame with its trailer, and flushes.
    pub fn end_checkpoint(&mut self, data_pages: u64, digest: u128) -> io::Result<()> {
        self.put(&CHUNK_END.to_le_bytes())?;
        let t = Trailer {
            seq: self.checkpoints,
            data_pages,
            digest,
        };
        let b = t.to_bytes(self.crc);
        self.put(&b)?;
        self.checkpoints += 1;
        self.w.flush()
    }

    /// Writes a heartbeat frame (between checkpoints only) and flushes.
    pub fn heartbeat(&mut self) -> io::Result<()> {
        let b = Heartbeat {
            next_seq: self.checkpoints,
            number: self.heartbeats,
        }
        .to_bytes(self.seed);
        self.put(&b)?;
        self.heartbeats += 1;
        self.w.flush()
    }

    /// Writes the end frame, flushes and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        let b = EndFrame {
            checkpoints: self.checkpoints,
        }
        .to_bytes(self.seed);
        self.put(&b)?;
        self.w.flush()?;
        Ok(self.w)
    }

    /// The output.
    pub fn get_ref(&self) -> &W {
        &self.w
    }
}
