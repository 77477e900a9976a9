//! The target's writable mappings: from the `PROCMAP_QUERY` ioctl where the
//! kernel has it, else from `/proc/PID/maps`, each with the file and offset
//! that key a shared mapping's pages.

use super::*;

/// A writable mapping of one process.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Region {
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) shared: bool,
    pub(super) offset: u64,
    /// Device of a file mapping: major << 32 | minor.
    pub(super) dev: u64,
    pub(super) inode: u64,
}

/// `struct procmap_query` of `linux/fs.h` (Linux 6.11 and later).
#[repr(C)]
#[derive(Default)]
pub(super) struct ProcmapQuery {
    size: u64,
    query_flags: u64,
    query_addr: u64,
    vma_start: u64,
    vma_end: u64,
    vma_flags: u64,
    vma_page_size: u64,
    vma_offset: u64,
    inode: u64,
    dev_major: u32,
    dev_minor: u32,
    vma_name_size: u32,
    build_id_size: u32,
    vma_name_addr: u64,
    build_id_addr: u64,
}

/// `_IOWR('f', 17, struct procmap_query)`.
pub(super) const PROCMAP_QUERY: u64 = 0xC068_6611;
pub(super) const PROCMAP_QUERY_VMA_WRITABLE: u64 = 0x02;
pub(super) const PROCMAP_QUERY_VMA_SHARED: u64 = 0x08;
pub(super) const PROCMAP_QUERY_COVERING_OR_NEXT_VMA: u64 = 0x10;

/// The writable mappings of `pid`, asked of the kernel one by one with the
/// `PROCMAP_QUERY` ioctl, which skips the others and formats no text: a
/// quarter of the time of reading `/proc/PID/maps` for a process with a
/// few hundred mappings, inside the pause. `None` when the kernel lacks it.
pub(super) fn writable_regions_by_query(pid: i32) -> Option<Result<Vec<Region>, RecordError>> {
    use std::os::fd::AsRawFd;
    let path = format!("/proc/{pid}/maps");
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) => return Some(Err(proc_err(&path, e))),
    };
    let mut out = Vec::new();
    let mut addr = 0u64;
    loop {
        let mut q = ProcmapQuery {
            size: std::mem::size_of::<ProcmapQuery>() as u64,
            query_flags: PROCMAP_QUERY_COVERING_OR_NEXT_VMA | PROCMAP_QUERY_VMA_WRITABLE,
            query_addr: addr,
            ..ProcmapQuery::default()
        };
        // SAFETY: `q` is a live, writable `struct procmap_query` whose
        // `size` field gives its size; with no name or build-id buffer
        // (sizes and addresses zero) the kernel writes only into `q`.
        let rc = unsafe {
            nix::libc::ioctl(
                file.as_raw_fd(),
                PROCMAP_QUERY as _,
                &mut q as *mut ProcmapQuery,
            )
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(nix::libc::ENOENT) => Some(Ok(out)), // no mapping past addr
                Some(nix::libc::ENOTTY) | Some(nix::libc::EINVAL) if addr == 0 => None,
                _ => Some(Err(proc_err(&path, err))),
            };
        }
        out.push(Region {
            start: q.vma_start,
            end: q.vma_end,
            shared: q.vma_flags & PROCMAP_QUERY_VMA_SHARED != 0,
            offset: q.vma_offset,
            dev: (q.dev_major as u64) << 32 | q.dev_minor as u64,
            inode: q.inode,
        });
        if q.vma_end <= addr {
            return Some(Ok(out)); // never loop on a kernel that does not advance
        }
        addr = q.vma_end;
    }
}

pub(super) fn writable_regions(pid: i32) -> Result<Vec<Region>, RecordError> {
    if let Some(r) = writable_regions_by_query(pid) {
        return r;
    }
    writable_regions_from_text(pid)
}

/// `MAJOR:MINOR` in hex, as `/proc/PID/maps` writes a device.
pub(super) fn parse_dev(text: &str) -> u64 {
    let (major, minor) = text.split_once(':').unwrap_or((text, "0"));
    let hex = |v: &str| u64::from_str_radix(v, 16).unwrap_or(0);
    hex(major) << 32 | hex(minor)
}

pub(super) fn writable_regions_from_text(pid: i32) -> Result<Vec<Region>, RecordError> {
    let path = format!("/proc/{pid}/maps");
    let text = std::fs::read_to_string(&path).map_err(|e| proc_err(&path, e))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms), Some(offset), Some(dev), Some(inode)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let name = f.next().unwrap_or("");
        if perms.as_bytes().get(1) != Some(&b'w') || name.starts_with("[v") {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        out.push(Region {
            start,
            end,
            shared: perms.as_bytes().get(3) == Some(&b's'),
            offset: u64::from_str_radix(offset, 16).unwrap_or(0),
            dev: parse_dev(dev),
            inode: inode.parse().unwrap_or(0),
        });
    }
    Ok(out)
}
