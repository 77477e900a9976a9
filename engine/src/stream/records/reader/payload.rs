//! The page-carrying records of a checkpoint (`docs/RECORDS.md`, "Reader
//! rules"): PFN lists, PAGE_DATA and the compressed page data (with the zstd
//! stage), toolstack records, and the checks every entry and every charged
//! byte pass before anything is appended to the [`Body`].

use super::*;

impl<R: Read> RecordReader<R> {
    /// Reads `count` PFN entries (Xen's layout), checks each and appends
    /// it (engine layout) to the body; returns how many carry data.
    pub(super) fn pfns(&mut self, body: &mut Body, count: usize) -> Result<u32, StreamError> {
        let mut data = 0u32;
        let mut left = count;
        while left > 0 {
            let n = left.min(MAX_PAGE_DATA);
            let at = self.pos;
            let mut raw = std::mem::take(&mut self.batch);
            raw.resize(n * 8, 0);
            let read = self.exact(&mut raw, "PFN entries");
            let checked = read.and_then(|()| {
                for (i, b) in raw.chunks_exact(8).enumerate() {
                    let offset = at + 8 * i as u64;
                    let x = u64::from_le_bytes(b.try_into().expect("8 bytes"));
                    let e = self.check_entry(x, offset)?;
                    body.entries.push(e);
                    if PageType::from_code((e >> TYPE_SHIFT) as u8 & 0xF)
                        .is_some_and(|t| t.carries_data())
                    {
                        data += 1;
                        body.data_pfns.push(e & PFN_MASK);
                    }
                }
                Ok(())
            });
            self.batch = raw;
            checked?;
            left -= n;
        }
        if data > 0 {
            // The record's PFN list is one batch for the memory's sake
            // (`GuestMemory::begin_batch`).
            body.batch_ends.push(body.data_pfns.len());
        }
        Ok(data)
    }

    pub(super) fn entries_fit(
        &self,
        body: &Body,
        count: u64,
        offset: u64,
    ) -> Result<(), StreamError> {
        if body.entries.len() as u64 + count > self.limits.max_checkpoint_entries {
            return Err(StreamError::TooManyEntries {
                offset,
                limit: self.limits.max_checkpoint_entries,
            });
        }
        Ok(())
    }

    pub(super) fn page_data(
        &mut self,
        body: &mut Body,
        h: RecordHeader,
        offset: u64,
        charged: &mut u64,
    ) -> Result<RecordInfo, StreamError> {
        if self.compressed {
            return Err(misplaced(
                offset,
                h,
                "PAGE_DATA after compression was enabled (pages come as CKPT_COMPRESSED_PAGE_DATA)",
            ));
        }
        let bad = |field| {
            rec(RecordError::BadRecord {
                offset,
                ty: h.ty,
                field,
            })
        };
        let len = h.len as u64;
        if len < PAGE_DATA_HEAD_LEN as u64 {
            return Err(bad("shorter than its head"));
        }
        let mut head = [0u8; PAGE_DATA_HEAD_LEN];
        self.exact(&mut head, "PAGE_DATA head")?;
        let count = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        if head[4..] != [0; 4] {
            return Err(bad("reserved"));
        }
        if count == 0 {
            return Err(bad("count is 0"));
        }
        if count as usize > MAX_PAGE_DATA {
            return Err(StreamError::BatchTooLarge {
                offset,
                count: count.min(i32::MAX as u32) as i32,
            });
        }
        if len < PAGE_DATA_HEAD_LEN as u64 + 8 * count as u64 {
            return Err(bad("count does not fit the body"));
        }
        self.entries_fit(body, count as u64, offset)?;
        let data = self.pfns(body, count as usize)?;
        let pages = data as u64 * PAGE_SIZE as u64;
        if len != PAGE_DATA_HEAD_LEN as u64 + 8 * count as u64 + pages {
            return Err(bad(
                "body length is not its entries and one page per data entry",
            ));
        }
        self.charge(charged, offset, pages)?;
        self.append(&mut body.payload, pages, "page data")?;
        body.batches.push(count);
        Ok(RecordInfo::PageData {
            entries: count,
            data,
        })
    }

    pub(super) fn compressed_page_data(
        &mut self,
        body: &mut Body,
        h: RecordHeader,
        offset: u64,
        charged: &mut u64,
    ) -> Result<RecordInfo, StreamError> {
        if !self.compressed {
            return Err(StreamError::CompressedBeforeEnable { offset });
        }
        let bad = |field| {
            rec(RecordError::BadRecord {
                offset,
                ty: h.ty,
                field,
            })
        };
        let len = h.len as u64;
        if len < PAGES_HEAD_LEN as u64 {
            return Err(bad("shorter than its head"));
        }
        let mut b = [0u8; PAGES_HEAD_LEN];
        self.exact(&mut b, "compressed page record head")?;
        let head = PagesHead::from_bytes(&b).map_err(bad)?;
        let zstd = match head.stage {
            STAGE_NONE => false,
            STAGE_ZSTD if self.info.zstd_level.is_some() => true,
            stage => return Err(rec(RecordError::StageNotNegotiated { offset, stage })),
        };
        let count = head.count as u64;
        if len - (PAGES_HEAD_LEN as u64) < 8 * count {
            return Err(bad("count does not fit the body"));
        }
        self.entries_fit(body, count, offset)?;
        let payload_len = len - PAGES_HEAD_LEN as u64 - 8 * count;
        let encoded_len = head.encoded_len as u64;
        let limit = self.limits.max_chunk_bytes;
        for n in [encoded_len, payload_len] {
            if n > limit {
                return Err(StreamError::ChunkTooLarge {
                    offset,
                    len: n,
                    limit,
                });
            }
        }
        let data = self.pfns(body, count as usize)? as u64;
        if data == 0 && (encoded_len != 0 || payload_len != 0) {
            return Err(bad("page data without a data-carrying entry"));
        }
        if data > 0 && !(data..=data * MAX_ENCODED_LEN as u64).contains(&encoded_len) {
            return Err(bad("encoded length impossible for its data entries"));
        }
        if !zstd && payload_len != encoded_len {
            return Err(bad("payload length differs from the encoded length"));
        }
        if zstd && payload_len == 0 {
            return Err(bad("empty zstd payload"));
        }
        self.charge(charged, offset, encoded_len + CHUNK_COST)?;
        let payload_at = self.pos;
        let start = body.payload.len();
        if zstd {
            let mut input = std::mem::take(&mut self.stage_in);
            input.clear();
            let read = self.append(&mut input, payload_len, "zstd payload");
            let r = read.and_then(|()| {
                decompress_into(
                    &input,
                    encoded_len as usize,
                    &mut self.stage_out,
                    &mut body.payload,
                    payload_at,
                )
                .map_err(rec)
            });
            self.stage_in = input;
            r?;
        } else {
            self.append(&mut body.payload, payload_len, "page encodings")?;
        }
        if data > 0 {
            body.chunks.push(ChunkSpan {
                offset: payload_at,
                start,
                end: body.payload.len(),
                data_entries: body.data_pfns.len() as u64,
                entries: body.entries.len() as u64,
                whole: true,
            });
        }
        self.padding(h, offset)?;
        Ok(RecordInfo::CompressedPageData {
            entries: head.count,
            data: data as u32,
            encoded_len: head.encoded_len,
            zstd,
            payload_len,
        })
    }

    pub(super) fn toolstack(
        &mut self,
        body: &mut Body,
        h: RecordHeader,
        offset: u64,
        charged: &mut u64,
    ) -> Result<RecordInfo, StreamError> {
        let bad = |field| {
            rec(RecordError::BadRecord {
                offset,
                ty: h.ty,
                field,
            })
        };
        if (h.len as usize) < 8 {
            return Err(bad("shorter than its head"));
        }
        let mut head = [0u8; 8];
        self.exact(&mut head, "CKPT_TOOLSTACK head")?;
        let id = i32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        if head[4..] != [0; 4] {
            return Err(bad("reserved"));
        }
        if id == -5 || id == -6 {
            return Err(StreamError::UnsupportedChunk { offset, ty: id });
        }
        let plen = match toolstack_payload_len(id) {
            Some(n) if id < 0 => n,
            _ => return Err(StreamError::UnknownChunk { offset, ty: id }),
        };
        if h.len as usize != 8 + plen {
            return Err(bad("body length is not its chunk's payload size"));
        }
        if body.toolstack.len() as u64 >= self.limits.max_toolstack_chunks {
            return Err(StreamError::TooManyToolstackChunks {
                offset,
                limit: self.limits.max_toolstack_chunks,
            });
        }
        self.charge(charged, offset, plen as u64 + TOOLSTACK_COST)?;
        let mut payload = vec![0u8; plen];
        self.exact(&mut payload, "toolstack payload")?;
        body.toolstack.push(ToolstackChunk { id, payload });
        self.padding(h, offset)?;
        Ok(RecordInfo::Toolstack { id })
    }

    /// Checks one PFN entry (Xen's layout) and marks its PFN seen; returns
    /// the entry in the engine's layout.
    pub(super) fn check_entry(&mut self, x: u64, offset: u64) -> Result<u64, StreamError> {
        let e = from_xen_entry(x).map_err(|reason| StreamError::BadEntry {
            offset,
            entry: x,
            reason,
        })?;
        if PageType::from_code((e >> TYPE_SHIFT) as u8 & 0xF).is_none() {
            return Err(StreamError::BadEntry {
                offset,
                entry: x,
                reason: "unknown page type",
            });
        }
        let pfn = e & PFN_MASK;
        if pfn >= self.header.guest_pages {
            return Err(StreamError::PfnOutOfRange {
                offset,
                pfn,
                guest_pages: self.header.guest_pages,
            });
        }
        let (w, bit) = ((pfn / 64) as usize, 1u64 << (pfn % 64));
        if self.seen[w] & bit != 0 {
            return Err(StreamError::DuplicatePfn { offset, pfn });
        }
        self.seen[w] |= bit;
        Ok(e)
    }

    /// Charges `len` more buffered bytes to the checkpoint's limit.
    pub(super) fn charge(
        &self,
        charged: &mut u64,
        offset: u64,
        len: u64,
    ) -> Result<(), StreamError> {
        *charged = charged.saturating_add(len);
        if *charged > self.limits.max_checkpoint_bytes {
            return Err(StreamError::CheckpointTooLarge {
                offset,
                limit: self.limits.max_checkpoint_bytes,
            });
        }
        Ok(())
    }
}
