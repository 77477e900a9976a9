//! The record stream (`docs/RECORDS.md`): Xen's migration stream version 3
//! (image header, domain header, records of `type, body_length`, bodies
//! padded to 8 octets) carrying ckpt's checkpoints, with the project's own
//! records for what Xen left unspecified: compressed page data, an optional
//! zstd stage over it, and an integrity check over every byte.
//!
//! ```text
//! image header (24, big-endian)     marker, "XENF", version 3, options
//! domain header (16)                type, page shift 12, Xen version 0.0
//! CKPT_STREAM_INFO (optional)       guest pages, stream id, stage, check
//! STATIC_DATA_END
//! per checkpoint:
//!   PAGE_DATA ...                   Format A: PFNs and raw pages (Xen's own)
//!   CKPT_COMPRESSED_PAGE_DATA ...   Format B: PFNs and page encodings,
//!                                   through the zstd stage or not (mandatory)
//!   CKPT_TOOLSTACK ...              the toolstack's chunks (optional)
//!   CKPT_ENABLE_COMPRESSION         once, in the last Format A checkpoint
//!   CKPT_INTEGRITY (optional)       seq, data pages, page digest, CRC-32C
//!   CHECKPOINT                      the checkpoint is complete
//! END
//! ```
//!
//! Every part is a type that writes and reads itself ([`ImageHeader`],
//! [`DomainHeader`], [`StreamInfo`], [`RecordHeader`], [`PagesHead`],
//! [`Integrity`]); [`RecordWriter`] writes a stream and [`RecordReader`]
//! reads one checkpoint at a time into the same [`super::Body`] the legacy
//! reader fills, under the same [`super::Limits`], so the receiver verifies
//! and commits either format the same way.

mod error;
mod header;
mod pages;
mod reader;
mod writer;
mod zstd_stage;

pub use error::RecordError;
pub use header::{
    DomainHeader, ImageHeader, Integrity, RecordHeader, StreamInfo, DOMAIN_HEADER_LEN,
    IMAGE_HEADER_LEN, IMAGE_ID, IMAGE_MARKER, IMAGE_VERSION, INTEGRITY_LEN, RECORD_HEADER_LEN,
    STREAM_INFO_LEN,
};
pub use pages::{from_xen_entry, to_xen_entry, PagesHead, PAGES_HEAD_LEN, PAGE_DATA_HEAD_LEN};
pub use reader::{RecordInfo, RecordReader};
pub use writer::RecordWriter;
pub use zstd_stage::{compress_frame, decompress_into};

/// Record type bit that makes a record optional: a restorer that does not
/// know it may skip it.
pub const OPTIONAL: u32 = 0x8000_0000;

/// END: the last record of the stream (Xen).
pub const REC_END: u32 = 0x0000_0000;
/// PAGE_DATA: PFNs and uncompressed pages (Xen).
pub const REC_PAGE_DATA: u32 = 0x0000_0001;
/// CHECKPOINT: the records before it form a consistent state (Xen).
pub const REC_CHECKPOINT: u32 = 0x0000_000E;
/// STATIC_DATA_END: the end of the static state, before any page (Xen v3).
pub const REC_STATIC_DATA_END: u32 = 0x0000_0010;
/// The highest record type Xen's specification (revision 3) defines.
pub const REC_XEN_LAST: u32 = 0x0000_0012;

/// ckpt's records share the low bits 0x434B_00xx ("CK"), so that they do
/// not collide with the types Xen assigns from 0x13 up.
const CKPT_BASE: u32 = 0x434B_0000;
/// CKPT_STREAM_INFO (optional): what the stream is for and how its pages
/// are compressed; its check covers both headers.
pub const REC_CKPT_STREAM_INFO: u32 = OPTIONAL | CKPT_BASE | 0x01;
/// CKPT_COMPRESSED_PAGE_DATA (mandatory): PFNs and their page encodings,
/// which a plain restorer cannot apply.
pub const REC_CKPT_COMPRESSED_PAGE_DATA: u32 = CKPT_BASE | 0x02;
/// CKPT_ENABLE_COMPRESSION (optional): later checkpoints are compressed.
pub const REC_CKPT_ENABLE_COMPRESSION: u32 = OPTIONAL | CKPT_BASE | 0x03;
/// CKPT_TOOLSTACK (optional): a toolstack chunk carried through.
pub const REC_CKPT_TOOLSTACK: u32 = OPTIONAL | CKPT_BASE | 0x04;
/// CKPT_INTEGRITY (optional): the checkpoint's digest and the check over
/// every byte of its records.
pub const REC_CKPT_INTEGRITY: u32 = OPTIONAL | CKPT_BASE | 0x05;

/// Most PFN entries in one PAGE_DATA record (Xen's own savers send at most
/// 1024, as the legacy body's batches hold).
pub const MAX_PAGE_DATA: usize = 1024;

/// Stage code of a compressed page record: the encodings as they are.
pub const STAGE_NONE: u32 = 0;
/// Stage code: one or more zstd frames that decompress to the encodings.
pub const STAGE_ZSTD: u32 = 1;

/// Domain type: x86 PV (the legacy body's page-table types are PV's).
pub const DOMAIN_X86_PV: u32 = 1;
/// Domain type: x86 HVM.
pub const DOMAIN_X86_HVM: u32 = 2;

/// The name of a record type, as `ckpt inspect` and the documents give it.
pub fn record_name(ty: u32) -> &'static str {
    match ty {
        REC_END => "END",
        REC_PAGE_DATA => "PAGE_DATA",
        0x02 => "X86_PV_INFO",
        0x03 => "X86_PV_P2M_FRAMES",
        0x04 => "X86_PV_VCPU_BASIC",
        0x05 => "X86_PV_VCPU_EXTENDED",
        0x06 => "X86_PV_VCPU_XSAVE",
        0x07 => "SHARED_INFO",
        0x08 => "X86_TSC_INFO",
        0x09 => "HVM_CONTEXT",
        0x0A => "HVM_PARAMS",
        0x0B => "TOOLSTACK",
        0x0C => "X86_PV_VCPU_MSRS",
        0x0D => "VERIFY",
        REC_CHECKPOINT => "CHECKPOINT",
        0x0F => "CHECKPOINT_DIRTY_PFN_LIST",
        REC_STATIC_DATA_END => "STATIC_DATA_END",
        0x11 => "X86_CPUID_POLICY",
        0x12 => "X86_MSR_POLICY",
        REC_CKPT_STREAM_INFO => "CKPT_STREAM_INFO",
        REC_CKPT_COMPRESSED_PAGE_DATA => "CKPT_COMPRESSED_PAGE_DATA",
        REC_CKPT_ENABLE_COMPRESSION => "CKPT_ENABLE_COMPRESSION",
        REC_CKPT_TOOLSTACK => "CKPT_TOOLSTACK",
        REC_CKPT_INTEGRITY => "CKPT_INTEGRITY",
        t if t & OPTIONAL != 0 => "unknown optional record",
        _ => "unknown mandatory record",
    }
}

/// Zero bytes that pad a body of `len` bytes to a multiple of 8.
pub fn padding(len: u64) -> usize {
    ((8 - len % 8) % 8) as usize
}
