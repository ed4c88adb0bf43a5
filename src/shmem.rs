//! Shared anonymous memory (`mmap(MAP_SHARED | MAP_ANONYMOUS)`, inherited over fork):
//! one shmem object, however many processes map it.
//!
//! Dump: each such VMA is identified by the inode of its object (`stat` of
//! `/proc/PID/map_files/START-END`), stored as the VMA's `shmid` as CRIU does. The
//! object's pages are read once, through that map_files fd (`SEEK_DATA`/`SEEK_HOLE` find
//! what it holds, whichever process touched it; all-zero pages are dropped), into
//! `pagemap-shmem-SHMID.img` (CRIU's name and format: `pagemap_head`, then entries whose
//! `vaddr` is the offset in the object) and its own `pages-N.img`. Processes' own
//! pagemaps skip these VMAs.
//!
//! Restore: before the first process exists, the restorer creates one object per shmid
//! with `mmap(MAP_SHARED | MAP_ANONYMOUS)`, reopens it through /proc/self/map_files (so
//! it is a real shmem "/dev/zero (deleted)" object, as the original, rather than a
//! memfd), unmaps it, and fills it from the image with `pwrite`. The fd is inherited by
//! every process as a service fd, and each maps its VMAs `MAP_SHARED` from it at their
//! offsets: one copy, writes visible across, same name in /proc/PID/maps.

use crate::error::{Error, Result};
use crate::image::{ImageDir, ImageError, PAGEMAP};
use crate::mm::{self, PAGE_SIZE};
use crate::pages::PE_PRESENT;
use cryo_proto::criu::{MmEntry, PagemapEntry, PagemapHead, VmaEntry};
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileExt, MetadataExt};

/// Bounded copy buffer.
const WINDOW: usize = 4 << 20;

pub fn image_name(shmid: u64) -> String {
    format!("pagemap-shmem-{shmid}.img")
}

fn is_shared_anon(v: &VmaEntry) -> bool {
    v.status & mm::VMA_ANON_SHARED != 0 && !mm::is_special(v.status)
}

/// Where a shared object was first seen at dump: a process and one of its VMAs.
struct Seen {
    pid: i32,
    start: u64,
    end: u64,
}

/// The shared objects of a tree, by shmid.
#[derive(Default)]
pub struct Registry {
    objs: BTreeMap<u64, Seen>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub objects: u64,
    pub pages_written: u64,
    pub pages_zero: u64,
}

impl Registry {
    /// Sets `shmid` (the object's inode) on every shared anonymous VMA of `pid`.
    pub fn tag(&mut self, pid: i32, vmas: &mut [VmaEntry]) -> Result<()> {
        for v in vmas.iter_mut().filter(|v| is_shared_anon(v)) {
            let path = format!("/proc/{pid}/map_files/{:x}-{:x}", v.start, v.end);
            let md = std::fs::metadata(&path).map_err(|e| Error::proc_io(pid, &path, e))?;
            v.shmid = md.ino();
            self.objs.entry(v.shmid).or_insert(Seen {
                pid,
                start: v.start,
                end: v.end,
            });
        }
        Ok(())
    }

    /// Writes each object's pages once; `first_id` numbers their pages images.
    pub fn dump(&self, dir: &ImageDir, first_id: u32) -> Result<Stats> {
        let mut st = Stats::default();
        let mut buf = vec![0u8; WINDOW];
        for (n, (&shmid, seen)) in self.objs.iter().enumerate() {
            let pages_id = first_id + n as u32;
            let path = format!(
                "/proc/{}/map_files/{:x}-{:x}",
                seen.pid, seen.start, seen.end
            );
            let f = std::fs::File::open(&path).map_err(|e| Error::proc_io(seen.pid, &path, e))?;
            let size = f
                .metadata()
                .map_err(|e| Error::proc_io(seen.pid, &path, e))?
                .len()
                .next_multiple_of(PAGE_SIZE);
            let mut pages = dir.raw_writer(&format!("pages-{pages_id}.img"))?;
            let mut entries: Vec<PagemapEntry> = Vec::new();
            for (s, e) in data_runs(&f, size).map_err(|e| Error::proc_io(seen.pid, &path, e))? {
                let mut off = s;
                while off < e {
                    let len = ((e - off) as usize).min(WINDOW);
                    let chunk = &mut buf[..len];
                    f.read_exact_at(chunk, off)
                        .map_err(|e| Error::proc_io(seen.pid, &path, e))?;
                    for (i, page) in chunk.chunks(PAGE_SIZE as usize).enumerate() {
                        if crate::sys::mem::is_zero(page) {
                            st.pages_zero += 1;
                            continue;
                        }
                        pages.put(page)?;
                        st.pages_written += 1;
                        let vaddr = off + (i as u64) * PAGE_SIZE;
                        match entries.last_mut() {
                            Some(l) if l.vaddr + l.nr_pages.unwrap_or(0) * PAGE_SIZE == vaddr => {
                                let nr = l.nr_pages.unwrap_or(0) + 1;
                                l.nr_pages = Some(nr);
                                l.compat_nr_pages = nr as u32;
                            }
                            _ => entries.push(PagemapEntry {
                                vaddr,
                                compat_nr_pages: 1,
                                nr_pages: Some(1),
                                flags: Some(PE_PRESENT),
                                ..Default::default()
                            }),
                        }
                    }
                    off += len as u64;
                }
            }
            pages.finish()?;
            let mut w = dir.writer(&image_name(shmid), PAGEMAP)?;
            w.entry(&PagemapHead { pages_id })?;
            for e in &entries {
                w.entry(e)?;
            }
            w.finish()?;
            st.objects += 1;
            log::debug!(shmid = shmid, pid = seen.pid, pages_id = pages_id, size = size; "shared anonymous memory dumped");
        }
        Ok(st)
    }
}

/// The runs of `[0, size)` the object holds data for (SEEK_DATA / SEEK_HOLE), page-aligned.
fn data_runs(f: &std::fs::File, size: u64) -> std::io::Result<Vec<(u64, u64)>> {
    use nix::unistd::{lseek, Whence};
    let mut out = Vec::new();
    let mut pos = 0i64;
    while (pos as u64) < size {
        let s = match lseek(f, pos, Whence::SeekData) {
            Ok(s) => s,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let e = lseek(f, s, Whence::SeekHole)?;
        let s = (s as u64) & !(PAGE_SIZE - 1);
        let e = (e as u64).next_multiple_of(PAGE_SIZE).min(size);
        if e > s {
            out.push((s, e));
        }
        pos = e as i64;
    }
    Ok(out)
}

/// Creates and fills every shared object the processes map; returns shmid → fd.
pub fn restore_objects<'a>(
    dir: &ImageDir,
    mms: impl Iterator<Item = &'a MmEntry>,
) -> Result<BTreeMap<u64, OwnedFd>> {
    // Object size: the furthest any VMA reaches into it.
    let mut sizes: BTreeMap<u64, u64> = BTreeMap::new();
    for v in mms
        .flat_map(|m| m.vmas.iter())
        .filter(|v| is_shared_anon(v) && v.shmid != 0)
    {
        let end = v.pgoff.checked_add(v.end - v.start).ok_or_else(|| {
            Error::from(ImageError::Invalid {
                path: dir.file("mm"),
                msg: format!("shared mapping offset {:#x} overflows", v.pgoff),
            })
        })?;
        let s = sizes.entry(v.shmid).or_default();
        *s = (*s).max(end);
    }
    let mut out = BTreeMap::new();
    for (shmid, size) in sizes {
        let name = image_name(shmid);
        let bad = |msg: String| -> Error {
            ImageError::Invalid {
                path: dir.file(&name),
                msg,
            }
            .into()
        };
        let mut r = dir.reader(&name, PAGEMAP)?;
        let head: PagemapHead = r
            .next_entry()?
            .ok_or_else(|| bad("no pagemap head".into()))?;
        let entries: Vec<PagemapEntry> = r.all()?;
        // Runs: page-aligned, inside the address space; the object may be larger than
        // any VMA reaches (the dump reads it to its size).
        let mut runs = Vec::with_capacity(entries.len());
        let mut size = size;
        for e in entries
            .iter()
            .filter(|e| e.flags.unwrap_or(PE_PRESENT) & PE_PRESENT != 0)
        {
            let len = e
                .nr_pages
                .unwrap_or(e.compat_nr_pages as u64)
                .checked_mul(PAGE_SIZE)
                .filter(|l| {
                    e.vaddr % PAGE_SIZE == 0
                        && e.vaddr.checked_add(*l).is_some_and(|end| end <= 1 << 47)
                })
                .ok_or_else(|| bad(format!("bad page run at offset {:#x}", e.vaddr)))?;
            size = size.max(e.vaddr + len);
            runs.push((e.vaddr, len));
        }
        let fd = crate::sys::mem::shared_anon_fd(size as usize).map_err(Error::sys(
            "mmap(MAP_SHARED|MAP_ANONYMOUS) + open(map_files)",
            0,
        ))?;
        let obj = std::fs::File::from(fd);
        let pages_path = dir.file(&format!("pages-{}.img", head.pages_id));
        let pages = std::fs::File::open(&pages_path).map_err(|_| ImageError::Missing {
            path: pages_path.clone(),
        })?;
        let mut buf = vec![0u8; WINDOW];
        let mut src = 0u64;
        for (vaddr, len) in runs {
            let mut done = 0u64;
            while done < len {
                let n = ((len - done) as usize).min(buf.len());
                pages.read_exact_at(&mut buf[..n], src).map_err(|_| {
                    bad(format!(
                        "pages-{}.img truncated at offset {src}",
                        head.pages_id
                    ))
                })?;
                obj.write_all_at(&buf[..n], vaddr + done)
                    .map_err(Error::io("pwrite", "shared anonymous memory"))?;
                src += n as u64;
                done += n as u64;
            }
        }
        log::debug!(shmid = shmid, size = size, bytes = src; "shared anonymous memory created");
        out.insert(shmid, OwnedFd::from(obj));
    }
    Ok(out)
}

/// How to map VMA `v` from a shared object: `(service index, offset, flags)`, given the
/// process's shmid → service index table. `None` for other VMAs (and for images of
/// older cryo, without shmid, mapped anonymous per process as they were).
pub fn map_source(
    v: &VmaEntry,
    idx: &std::collections::HashMap<u64, usize>,
) -> Option<(usize, u64, u64)> {
    if !is_shared_anon(v) {
        return None;
    }
    let &i = idx.get(&v.shmid)?;
    Some((i, v.pgoff, (v.flags & !(libc::MAP_ANONYMOUS as u32)) as u64))
}

/// The shmids a process maps.
pub fn shmids(mm: &MmEntry) -> impl Iterator<Item = u64> + '_ {
    mm.vmas
        .iter()
        .filter(|v| is_shared_anon(v) && v.shmid != 0)
        .map(|v| v.shmid)
}
