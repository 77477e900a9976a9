//! The fixed-size parts of a record stream (`docs/RECORDS.md`, "Image
//! header", "Domain header", "Record header", "CKPT_STREAM_INFO",
//! "CKPT_INTEGRITY").
//!
//! ```text
//! image header (big-endian)   domain header          record header
//!  0 marker u64 = all ones     0 type u32             0 type u32
//!  8 id u32 = "XENF"           4 page_shift u16 = 12  4 body_length u32
//! 12 version u32 = 3           6 reserved u16
//! 16 options u16 (bit 0: BE)   8 xen_major u32
//! 18 reserved u16             12 xen_minor u32
//! 20 reserved u32
//!
//! CKPT_STREAM_INFO body (40)  CKPT_INTEGRITY body (40)
//!  0 guest_pages u64           0 seq u64
//!  8 stream_id, 16 bytes       8 data_pages u64
//! 24 stage u32                16 digest, 16 bytes
//! 28 zstd level i32           32 check u32
//! 32 check u32                36 reserved u32
//! 36 reserved u32
//! ```

use super::{RecordError, DOMAIN_X86_HVM, DOMAIN_X86_PV, STAGE_NONE, STAGE_ZSTD};
use crate::page::PFN_LIMIT;
use crate::stream::{crc, le};

/// Bytes of the image header.
pub const IMAGE_HEADER_LEN: usize = 24;
/// Bytes of the domain header.
pub const DOMAIN_HEADER_LEN: usize = 16;
/// Bytes of a record header.
pub const RECORD_HEADER_LEN: usize = 8;
/// Body bytes of CKPT_STREAM_INFO.
pub const STREAM_INFO_LEN: usize = 40;
/// Body bytes of CKPT_INTEGRITY.
pub const INTEGRITY_LEN: usize = 40;
/// The image header's marker: no legacy image starts with eight 0xFF.
pub const IMAGE_MARKER: u64 = u64::MAX;
/// The image header's id, "XENF".
pub const IMAGE_ID: u32 = 0x5845_4E46;
/// The version of Xen's specification the stream follows.
pub const IMAGE_VERSION: u32 = 3;
/// Options bit 0: the stream's integers are big-endian.
const OPTION_BIG_ENDIAN: u16 = 1;
/// log2 of the page size.
const PAGE_SHIFT: u16 = 12;

/// The image header: what the stream is. Its integers are big-endian
/// whatever the stream's byte order, as Xen specifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageHeader {
    /// Specification version (3).
    pub version: u32,
    /// Options; bit 0 set means a big-endian stream.
    pub options: u16,
}

impl Default for ImageHeader {
    fn default() -> Self {
        ImageHeader {
            version: IMAGE_VERSION,
            options: 0,
        }
    }
}

impl ImageHeader {
    /// The header's bytes.
    pub fn to_bytes(&self) -> [u8; IMAGE_HEADER_LEN] {
        let mut b = [0u8; IMAGE_HEADER_LEN];
        b[..8].copy_from_slice(&IMAGE_MARKER.to_be_bytes());
        b[8..12].copy_from_slice(&IMAGE_ID.to_be_bytes());
        b[12..16].copy_from_slice(&self.version.to_be_bytes());
        b[16..18].copy_from_slice(&self.options.to_be_bytes());
        b
    }

    /// Whether the first eight bytes of an input are a record stream's.
    pub fn is_marker(first: &[u8]) -> bool {
        first.len() >= 8 && first[..8] == IMAGE_MARKER.to_be_bytes()
    }

    /// Parses a header this build reads: version 3, little-endian.
    pub fn from_bytes(b: &[u8; IMAGE_HEADER_LEN]) -> Result<ImageHeader, RecordError> {
        let marker = u64::from_be_bytes(le(b, 0));
        if marker != IMAGE_MARKER {
            return Err(RecordError::NotARecordStream { marker });
        }
        let bad = |field, found: u64| Err(RecordError::BadImageHeader { field, found });
        let id = u32::from_be_bytes(le(b, 8));
        if id != IMAGE_ID {
            return bad("id", id as u64);
        }
        let version = u32::from_be_bytes(le(b, 12));
        if version != IMAGE_VERSION {
            return Err(RecordError::UnsupportedVersion { found: version });
        }
        let options = u16::from_be_bytes(le(b, 16));
        if options & OPTION_BIG_ENDIAN != 0 {
            return Err(RecordError::BigEndian);
        }
        if options != 0 {
            return bad("options (reserved bits)", options as u64);
        }
        if b[18..24] != [0; 6] {
            return bad("reserved", u64::from_be_bytes(le(b, 16)) & 0xFFFF_FFFF_FFFF);
        }
        Ok(ImageHeader { version, options })
    }
}

/// The domain header: the guest's architecture and page size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainHeader {
    /// 1 x86 PV, 2 x86 HVM.
    pub domain_type: u32,
    /// Xen major version of the saver; 0 for a stream not made by Xen.
    pub xen_major: u32,
    /// Xen minor version of the saver.
    pub xen_minor: u32,
}

impl Default for DomainHeader {
    /// What ckpt writes: x86 PV (the legacy body's page types are PV's),
    /// not made by Xen (0.0).
    fn default() -> Self {
        DomainHeader {
            domain_type: DOMAIN_X86_PV,
            xen_major: 0,
            xen_minor: 0,
        }
    }
}

impl DomainHeader {
    /// The header's bytes (little-endian).
    pub fn to_bytes(&self) -> [u8; DOMAIN_HEADER_LEN] {
        let mut b = [0u8; DOMAIN_HEADER_LEN];
        b[..4].copy_from_slice(&self.domain_type.to_le_bytes());
        b[4..6].copy_from_slice(&PAGE_SHIFT.to_le_bytes());
        b[8..12].copy_from_slice(&self.xen_major.to_le_bytes());
        b[12..16].copy_from_slice(&self.xen_minor.to_le_bytes());
        b
    }

    /// Parses a domain header: x86 PV or HVM, 4 KiB pages.
    pub fn from_bytes(b: &[u8; DOMAIN_HEADER_LEN]) -> Result<DomainHeader, RecordError> {
        let bad = |field, found: u64| Err(RecordError::BadDomainHeader { field, found });
        let domain_type = u32::from_le_bytes(le(b, 0));
        if domain_type != DOMAIN_X86_PV && domain_type != DOMAIN_X86_HVM {
            return bad("type", domain_type as u64);
        }
        let shift = u16::from_le_bytes(le(b, 4));
        if shift != PAGE_SHIFT {
            return bad("page_shift", shift as u64);
        }
        let reserved = u16::from_le_bytes(le(b, 6));
        if reserved != 0 {
            return bad("reserved", reserved as u64);
        }
        Ok(DomainHeader {
            domain_type,
            xen_major: u32::from_le_bytes(le(b, 8)),
            xen_minor: u32::from_le_bytes(le(b, 12)),
        })
    }
}

/// A record's header: its type and the length of its body (without the
/// padding to 8 octets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// Record type; bit 31 marks an optional record.
    pub ty: u32,
    /// Body bytes.
    pub len: u32,
}

impl RecordHeader {
    /// The header's bytes.
    pub fn to_bytes(&self) -> [u8; RECORD_HEADER_LEN] {
        let mut b = [0u8; RECORD_HEADER_LEN];
        b[..4].copy_from_slice(&self.ty.to_le_bytes());
        b[4..].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    /// Reads a header.
    pub fn from_bytes(b: &[u8; RECORD_HEADER_LEN]) -> RecordHeader {
        RecordHeader {
            ty: u32::from_le_bytes(le(b, 0)),
            len: u32::from_le_bytes(le(b, 4)),
        }
    }

    /// Whether a restorer that does not know the record may skip it.
    pub fn is_optional(&self) -> bool {
        self.ty & super::OPTIONAL != 0
    }
}

/// CKPT_STREAM_INFO: the guest's size, the stream's identity and its page
/// stage. Its check covers the image header, the domain header and the
/// record up to the check, and seeds every checkpoint's check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// Pages of the guest; every PFN is below it (1 to 2^28).
    pub guest_pages: u64,
    /// 128 random bits chosen by the sender.
    pub stream_id: u128,
    /// The zstd level of the stage compressed page records may use, or
    /// `None` when they carry the encodings as they are.
    pub zstd_level: Option<i32>,
}

impl StreamInfo {
    /// The record's body; `prefix` is the CRC-32C of the image header, the
    /// domain header and this record's header.
    pub fn body(&self, prefix: u32) -> [u8; STREAM_INFO_LEN] {
        let mut b = [0u8; STREAM_INFO_LEN];
        b[..8].copy_from_slice(&self.guest_pages.to_le_bytes());
        b[8..24].copy_from_slice(&self.stream_id.to_le_bytes());
        let (stage, level) = match self.zstd_level {
            Some(l) => (STAGE_ZSTD, l),
            None => (STAGE_NONE, 0),
        };
        b[24..28].copy_from_slice(&stage.to_le_bytes());
        b[28..32].copy_from_slice(&level.to_le_bytes());
        let check = crc(prefix, &b[..32]);
        b[32..36].copy_from_slice(&check.to_le_bytes());
        b
    }

    /// Parses the body; `prefix` as for [`StreamInfo::body`]. Returns the
    /// info and its check (the seed of every checkpoint's check).
    pub fn from_body(
        b: &[u8; STREAM_INFO_LEN],
        prefix: u32,
    ) -> Result<(StreamInfo, u32), RecordError> {
        let bad = |field, found: u64| Err(RecordError::BadStreamInfo { field, found });
        let check = u32::from_le_bytes(le(b, 32));
        let computed = crc(prefix, &b[..32]);
        if check != computed {
            return Err(RecordError::HeaderCheck {
                stored: check,
                computed,
            });
        }
        let guest_pages = u64::from_le_bytes(le(b, 0));
        if guest_pages == 0 || guest_pages > PFN_LIMIT {
            return bad("guest pages", guest_pages);
        }
        let stage = u32::from_le_bytes(le(b, 24));
        let level = i32::from_le_bytes(le(b, 28));
        let zstd_level = match stage {
            STAGE_NONE if level == 0 => None,
            STAGE_NONE => return bad("zstd level without a stage", level as u64),
            STAGE_ZSTD => Some(level),
            other => return bad("stage", other as u64),
        };
        let reserved = u32::from_le_bytes(le(b, 36));
        if reserved != 0 {
            return bad("reserved", reserved as u64);
        }
        Ok((
            StreamInfo {
                guest_pages,
                stream_id: u128::from_le_bytes(le(b, 8)),
                zstd_level,
            },
            check,
        ))
    }
}

/// CKPT_INTEGRITY: closes a checkpoint with its sequence number, its data
/// pages and page digest, and a CRC-32C over every byte of its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Integrity {
    /// Checkpoint sequence number: 0, 1, 2, ... without a gap.
    pub seq: u64,
    /// Data-carrying PFN entries of the checkpoint.
    pub data_pages: u64,
    /// The checkpoint's page digest (`docs/STREAM.md`, "Page digest").
    pub digest: u128,
}

impl Integrity {
    /// The record's body; `chain` is the checkpoint's check so far: from
    /// the stream's seed over every byte of its records, this record's
    /// header included.
    pub fn body(&self, chain: u32) -> [u8; INTEGRITY_LEN] {
        let mut b = [0u8; INTEGRITY_LEN];
        b[..8].copy_from_slice(&self.seq.to_le_bytes());
        b[8..16].copy_from_slice(&self.data_pages.to_le_bytes());
        b[16..32].copy_from_slice(&self.digest.to_le_bytes());
        let check = crc(chain, &b[..32]);
        b[32..36].copy_from_slice(&check.to_le_bytes());
        b
    }

    /// Parses the body of a record at `offset`; `chain` as for
    /// [`Integrity::body`].
    pub fn from_body(
        b: &[u8; INTEGRITY_LEN],
        chain: u32,
        offset: u64,
    ) -> Result<Integrity, RecordError> {
        let stored = u32::from_le_bytes(le(b, 32));
        let computed = crc(chain, &b[..32]);
        if stored != computed {
            return Err(RecordError::IntegrityMismatch {
                offset,
                stored,
                computed,
            });
        }
        if b[36..40] != [0; 4] {
            return Err(RecordError::BadRecord {
                offset,
                ty: super::REC_CKPT_INTEGRITY,
                field: "reserved",
            });
        }
        Ok(Integrity {
            seq: u64::from_le_bytes(le(b, 0)),
            data_pages: u64::from_le_bytes(le(b, 8)),
            digest: u128::from_le_bytes(le(b, 16)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_header_bytes_are_xens() {
        let b = ImageHeader::default().to_bytes();
        assert_eq!(
            b,
            [
                0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, b'X', b'E', b'N', b'F', 0, 0, 0, 3,
                0, 0, 0, 0, 0, 0, 0, 0
            ]
        );
        assert_eq!(ImageHeader::from_bytes(&b).unwrap(), ImageHeader::default());
        let mut be = b;
        be[17] = 1;
        assert!(matches!(
            ImageHeader::from_bytes(&be),
            Err(RecordError::BigEndian)
        ));
        let mut v2 = b;
        v2[15] = 2;
        assert!(matches!(
            ImageHeader::from_bytes(&v2),
            Err(RecordError::UnsupportedVersion { found: 2 })
        ));
    }

    #[test]
    fn domain_header_bytes() {
        let b = DomainHeader::default().to_bytes();
        assert_eq!(b, [1, 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            DomainHeader::from_bytes(&b).unwrap(),
            DomainHeader::default()
        );
        let mut bad = b;
        bad[0] = 3;
        assert!(DomainHeader::from_bytes(&bad).is_err());
    }

    #[test]
    fn stream_info_and_integrity_catch_every_bit_flip() {
        let info = StreamInfo {
            guest_pages: 4096,
            stream_id: 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
            zstd_level: Some(-3),
        };
        let b = info.body(0x1234_5678);
        assert_eq!(StreamInfo::from_body(&b, 0x1234_5678).unwrap().0, info);
        let i = Integrity {
            seq: 7,
            data_pages: 99,
            digest: 0xdead_beef << 64 | 0x55,
        };
        let ib = i.body(42);
        assert_eq!(Integrity::from_body(&ib, 42, 0).unwrap(), i);
        for byte in 0..40 {
            for bit in 0..8 {
                let mut c = b;
                c[byte] ^= 1 << bit;
                assert!(StreamInfo::from_body(&c, 0x1234_5678).is_err());
                let mut c = ib;
                c[byte] ^= 1 << bit;
                assert!(Integrity::from_body(&c, 42, 0).is_err());
            }
        }
    }
}
