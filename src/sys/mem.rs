//! Reading and writing another process's memory, and asking the kernel which of its
//! pages exist (PAGEMAP_SCAN).

use super::check;
use nix::errno::Errno;
use nix::unistd::Pid;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Copies `buf.len()` bytes at `addr` of `pid` into `buf` with one `process_vm_readv`.
/// Returns the number of bytes read (short at the first unreadable page).
pub fn read_remote(pid: Pid, addr: u64, buf: &mut [u8]) -> Result<usize, Errno> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes `buf`, which we exclusively borrow; `remote` is only
    // interpreted by the kernel in the target's address space.
    let r = unsafe { libc::process_vm_readv(pid.as_raw(), &local, 1, &remote, 1, 0) };
    check(r as libc::c_long).map(|n| n as usize)
}

/// Copies `buf` to `addr` of `pid` with `process_vm_writev` (writable mappings only).
pub fn write_remote(pid: Pid, addr: u64, buf: &[u8]) -> Result<usize, Errno> {
    let local = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes `buf`, which outlives the call and is only read.
    let r = unsafe { libc::process_vm_writev(pid.as_raw(), &local, 1, &remote, 1, 0) };
    check(r as libc::c_long).map(|n| n as usize)
}

/// Whether a buffer (a page) is all zero bytes, compared a word at a time.
pub fn is_zero(page: &[u8]) -> bool {
    // SAFETY: u64 has no invalid bit patterns; align_to only reinterprets the aligned
    // middle of the byte slice.
    let (pre, words, post) = unsafe { page.align_to::<u64>() };
    pre.iter().all(|&b| b == 0) && words.iter().all(|&w| w == 0) && post.iter().all(|&b| b == 0)
}

// PAGEMAP_SCAN (linux/fs.h, 6.7+); Debian's headers predate it.
pub const PAGE_IS_WPALLOWED: u64 = 1 << 0;
pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
pub const PAGE_IS_FILE: u64 = 1 << 2;
pub const PAGE_IS_PRESENT: u64 = 1 << 3;
pub const PAGE_IS_SWAPPED: u64 = 1 << 4;
pub const PAGE_IS_PFNZERO: u64 = 1 << 5;

/// `_IOWR('f', 16, struct pm_scan_arg)`.
pub const PAGEMAP_SCAN: u64 = ioc(3, b'f', 16, std::mem::size_of::<PmScanArg>());

pub const fn ioc(dir: u64, ty: u8, nr: u8, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64
}

/// `struct pm_scan_arg`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct PmScanArg {
    pub size: u64,
    pub flags: u64,
    pub start: u64,
    pub end: u64,
    pub walk_end: u64,
    pub vec: u64,
    pub vec_len: u64,
    pub max_pages: u64,
    pub category_inverted: u64,
    pub category_mask: u64,
    pub category_anyof_mask: u64,
    pub return_mask: u64,
}

/// `struct page_region`: a run of pages sharing the categories in `categories`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct PageRegion {
    pub start: u64,
    pub end: u64,
    pub categories: u64,
}

/// One PAGEMAP_SCAN call over `[start, end)` of the process whose `/proc/PID/pagemap` is
/// `pagemap`. Fills `out` and returns (regions filled, address where the walk stopped).
pub fn pagemap_scan(
    pagemap: BorrowedFd<'_>,
    start: u64,
    end: u64,
    anyof: u64,
    ret_mask: u64,
    out: &mut [PageRegion],
) -> Result<(usize, u64), Errno> {
    let mut arg = PmScanArg {
        size: std::mem::size_of::<PmScanArg>() as u64,
        start,
        end,
        vec: out.as_mut_ptr() as u64,
        vec_len: out.len() as u64,
        category_anyof_mask: anyof,
        return_mask: ret_mask,
        ..Default::default()
    };
    // SAFETY: `arg` is a correctly sized pm_scan_arg whose `vec` points at `out`, which
    // we exclusively borrow and whose length is `vec_len`.
    let r = unsafe {
        libc::ioctl(
            pagemap.as_raw_fd(),
            PAGEMAP_SCAN as _,
            &mut arg as *mut PmScanArg,
        )
    };
    let n = check(r as libc::c_long)?;
    Ok((n as usize, arg.walk_end))
}

/// A new shared anonymous memory object of `len` bytes (what `mmap(MAP_SHARED |
/// MAP_ANONYMOUS)` creates, shown as "/dev/zero (deleted)"), as an fd: mapped here for
/// a moment, reopened through /proc/self/map_files (needs CAP_SYS_ADMIN or
/// CAP_CHECKPOINT_RESTORE), unmapped.
pub fn shared_anon_fd(len: usize) -> Result<std::os::fd::OwnedFd, Errno> {
    // SAFETY: a new mapping at an address the kernel chooses; nothing else refers to it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Errno::last());
    }
    let start = p as u64;
    let path = format!("/proc/self/map_files/{:x}-{:x}", start, start + len as u64);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)));
    // SAFETY: unmaps exactly the mapping made above, which no Rust object refers to.
    unsafe { libc::munmap(p, len) };
    Ok(f?.into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn pagemap_scan_number() {
        assert_eq!(std::mem::size_of::<super::PmScanArg>(), 96);
        assert_eq!(super::PAGEMAP_SCAN, 0xC060_6610);
    }
}
