//! Page contents. Dump: PAGEMAP_SCAN says which pages exist; `process_vm_readv` copies
//! them through one fixed window (the dumper's memory stays flat whatever the target's
//! size, and no target page is pinned); all-zero anonymous pages are dropped; the rest is
//! streamed to `pages-N.img`, indexed by `pagemap-PID.img`. Restore: the target reads its
//! own pages from the image with injected `pread64` (one kernel copy, no buffer here).

use crate::error::{Error, Result};
use crate::image::{ImageDir, PAGEMAP};
use crate::mm::{self, PAGE_SIZE};
use crate::ptrace::{read_mem, Injector};
use crate::sys::mem::{self as sysmem, PageRegion};
use cryo_proto::criu::{PagemapEntry, PagemapHead, VmaEntry};
use nix::unistd::Pid;
use std::os::fd::AsFd;

/// `PE_PRESENT`: the entry's pages are in the pages image.
pub const PE_PRESENT: u32 = 1 << 2;
/// The copy window: bounded memory for any target size.
const WINDOW: usize = 4 << 20;
/// Largest single injected `pread64` (the kernel caps one read near 2 GiB).
const MAX_PREAD: u64 = 1 << 30;

/// Counters for the dump statistics.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub pages_scanned: u64,
    pub pages_zero: u64,
    pub pages_written: u64,
    /// Time spent copying from the target, checking for zero pages, and writing.
    pub read_ns: u64,
    pub zero_ns: u64,
    pub write_ns: u64,
}

/// The page runs of one VMA that must be saved.
pub fn runs_to_dump(
    pid: Pid,
    pagemap: &std::fs::File,
    vma: &VmaEntry,
    stats: &mut Stats,
) -> Result<Vec<(u64, u64)>> {
    // Shared memory is dumped once per object (shmem), not per process.
    if mm::is_special(vma.status)
        || vma.status & (mm::VMA_FILE_SHARED | mm::VMA_ANON_SHARED | mm::VMA_AREA_SYSVIPC) != 0
    {
        return Ok(Vec::new());
    }
    let file_private = vma.status & mm::VMA_FILE_PRIVATE != 0;
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut regions = vec![PageRegion::default(); 512];
    let mut start = vma.start;
    let want = sysmem::PAGE_IS_PRESENT | sysmem::PAGE_IS_SWAPPED;
    let ret = want | sysmem::PAGE_IS_FILE | sysmem::PAGE_IS_PFNZERO;
    while start < vma.end {
        let (n, walk_end) =
            sysmem::pagemap_scan(pagemap.as_fd(), start, vma.end, want, ret, &mut regions)
                .map_err(Error::sys("ioctl(PAGEMAP_SCAN)", pid.as_raw()))?;
        for r in &regions[..n] {
            stats.pages_scanned += (r.end - r.start) / PAGE_SIZE;
            let c = r.categories;
            let keep = if c & sysmem::PAGE_IS_PFNZERO != 0 {
                false
            } else if file_private {
                // File pages not copied-on-write come back from the file itself.
                c & sysmem::PAGE_IS_FILE == 0
            } else {
                true
            };
            if !keep {
                continue;
            }
            match out.last_mut() {
                Some(last) if last.1 == r.start => last.1 = r.end,
                _ => out.push((r.start, r.end)),
            }
        }
        if n < regions.len() || walk_end >= vma.end {
            break;
        }
        start = walk_end;
    }
    Ok(out)
}

/// Streams page runs of one process into `pages-<id>.img` and `pagemap-<pid>.img`.
pub struct PageDumper {
    pages: crate::image::ImgWriter,
    entries: Vec<PagemapEntry>,
    buf: Vec<u8>,
    /// Start of the VMA being dumped: entries never span two VMAs (as in CRIU).
    vma_start: u64,
    pub stats: Stats,
}

impl PageDumper {
    pub fn new(dir: &ImageDir, pages_id: u32) -> Result<Self> {
        Ok(PageDumper {
            pages: dir.raw_writer(&format!("pages-{pages_id}.img"))?,
            entries: Vec::new(),
            buf: vec![0u8; WINDOW],
            vma_start: 0,
            stats: Stats::default(),
        })
    }

    fn push(&mut self, vaddr: u64, len: u64) {
        let nr = len / PAGE_SIZE;
        if let Some(last) = self.entries.last_mut() {
            let n = last.nr_pages.unwrap_or(0);
            if last.vaddr >= self.vma_start
                && last.vaddr + n * PAGE_SIZE == vaddr
                && n + nr <= u32::MAX as u64
            {
                last.nr_pages = Some(n + nr);
                last.compat_nr_pages = (n + nr) as u32;
                return;
            }
        }
        self.entries.push(PagemapEntry {
            vaddr,
            nr_pages: Some(nr),
            compat_nr_pages: nr as u32,
            flags: Some(PE_PRESENT),
            ..Default::default()
        });
    }

    /// Starts the runs of a new VMA.
    pub fn start_vma(&mut self, start: u64) {
        self.vma_start = start;
    }

    /// Copies `[start, end)` of `pid`; `skip_zero` drops all-zero pages (anonymous
    /// memory only: a zero page of a private file mapping must still be written).
    pub fn dump_run(&mut self, pid: Pid, start: u64, end: u64, skip_zero: bool) -> Result<()> {
        let mut addr = start;
        while addr < end {
            let len = ((end - addr) as usize).min(WINDOW);
            let mut buf = std::mem::take(&mut self.buf);
            let chunk = &mut buf[..len];
            let t = std::time::Instant::now();
            read_mem(pid, addr, chunk)?;
            self.stats.read_ns += t.elapsed().as_nanos() as u64;
            let t = std::time::Instant::now();
            let written_before = self.stats.write_ns;
            // Write maximal runs of non-zero pages.
            let mut run_start: Option<usize> = None;
            for (i, page) in chunk.chunks(PAGE_SIZE as usize).enumerate() {
                let off = i * PAGE_SIZE as usize;
                let zero = skip_zero && sysmem::is_zero(page);
                if zero {
                    self.stats.pages_zero += 1;
                    if let Some(s) = run_start.take() {
                        self.write(addr, chunk, s, off)?;
                    }
                } else if run_start.is_none() {
                    run_start = Some(off);
                }
            }
            if let Some(s) = run_start {
                self.write(addr, chunk, s, len)?;
            }
            let writing = self.stats.write_ns - written_before;
            self.stats.zero_ns += (t.elapsed().as_nanos() as u64).saturating_sub(writing);
            self.buf = buf;
            addr += len as u64;
        }
        Ok(())
    }

    fn write(&mut self, base: u64, chunk: &[u8], s: usize, e: usize) -> Result<()> {
        let t = std::time::Instant::now();
        self.pages.put(&chunk[s..e])?;
        self.stats.write_ns += t.elapsed().as_nanos() as u64;
        self.stats.pages_written += ((e - s) as u64) / PAGE_SIZE;
        self.push(base + s as u64, (e - s) as u64);
        Ok(())
    }

    /// Writes the pagemap index and syncs both files.
    pub fn finish(self, dir: &ImageDir, pid: i32, pages_id: u32) -> Result<Stats> {
        crate::error::fault_point("dump-before-pagemap")?;
        self.pages.finish()?;
        let mut w = dir.writer(&format!("pagemap-{pid}.img"), PAGEMAP)?;
        w.entry(&PagemapHead { pages_id })?;
        for e in &self.entries {
            w.entry(e)?;
        }
        w.finish()?;
        Ok(self.stats)
    }
}

/// Reads `pagemap-<pid>.img`: the pages image id and the entries.
pub fn read_pagemap(dir: &ImageDir, pid: i32) -> Result<(u32, Vec<PagemapEntry>)> {
    let mut r = dir.reader(&format!("pagemap-{pid}.img"), PAGEMAP)?;
    let head: PagemapHead = r
        .next_entry()?
        .ok_or_else(|| crate::image::ImageError::Invalid {
            path: r.path.clone(),
            msg: "no pagemap head".into(),
        })?;
    Ok((head.pages_id, r.all()?))
}

/// Makes the target read its pages from the pages image (open in it as `pages_fd`).
/// Page runs follow each other in the file, so one injected `preadv` fills up to
/// `IOV_BATCH` runs: a few syscalls restore any number of runs.
pub fn restore_pages(
    inj: &Injector,
    entries: &[PagemapEntry],
    pages_fd: i32,
    iov_off: u64,
) -> Result<u64> {
    let pid = inj.pid.as_raw();
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for e in entries
        .iter()
        .filter(|e| e.flags.unwrap_or(PE_PRESENT) & PE_PRESENT != 0)
    {
        let mut len = e.nr_pages.unwrap_or(e.compat_nr_pages as u64) * PAGE_SIZE;
        let mut vaddr = e.vaddr;
        while len > 0 {
            let n = len.min(MAX_PREAD);
            runs.push((vaddr, n));
            vaddr += n;
            len -= n;
        }
    }
    let mut off = 0u64;
    for batch in batches(&runs) {
        let want: u64 = batch.iter().map(|r| r.1).sum();
        let iov: Vec<u8> = batch
            .iter()
            .flat_map(|(a, l)| a.to_ne_bytes().into_iter().chain(l.to_ne_bytes()))
            .collect();
        let iov_addr = inj.put(iov_off, &iov)?;
        let got = inj.call(
            "preadv",
            libc::SYS_preadv,
            &[pages_fd as u64, iov_addr, batch.len() as u64, off, 0],
        )?;
        if got != want {
            return Err(Error::Restore {
                pid,
                msg: format!("pages image truncated: {got} of {want} bytes at offset {off}"),
            });
        }
        off += want;
    }
    Ok(off)
}

/// Runs one `preadv` takes (IOV_MAX).
pub const IOV_BATCH: usize = 1024;

/// Splits runs into `preadv` batches of at most IOV_BATCH runs and MAX_PREAD bytes.
fn batches(runs: &[(u64, u64)]) -> Vec<&[(u64, u64)]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for (i, r) in runs.iter().enumerate() {
        if i - start == IOV_BATCH || bytes + r.1 > MAX_PREAD {
            out.push(&runs[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += r.1;
    }
    if start < runs.len() {
        out.push(&runs[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn batching_respects_iov_max_and_byte_cap() {
        let runs: Vec<(u64, u64)> = (0..2500).map(|i| (i * 8192, 4096)).collect();
        let b = super::batches(&runs);
        assert_eq!(
            b.iter().map(|x| x.len()).collect::<Vec<_>>(),
            vec![1024, 1024, 452]
        );
        let big = vec![(0, 1 << 29); 5];
        assert!(super::batches(&big)
            .iter()
            .all(|x| x.iter().map(|r| r.1).sum::<u64>() <= super::MAX_PREAD));
    }

    #[test]
    fn zero_detection() {
        let mut p = vec![0u8; 4096];
        assert!(super::sysmem::is_zero(&p));
        p[4095] = 1;
        assert!(!super::sysmem::is_zero(&p));
    }
}
