//! Address space: which VMAs a process has and the mm fields (brk, code/data/stack,
//! args/env, auxv, exe). Dump reads `/proc/PID/smaps`; restore recreates each VMA with an
//! injected `mmap(MAP_FIXED)` and sets the mm fields with one `PR_SET_MM_MAP`.

use crate::error::{Error, Result};
use crate::proc::Vma;
use cryo_proto::criu::{MmEntry, VmaEntry};

// VMA status bits as CRIU writes them (criu/include/image.h).
pub const VMA_AREA_REGULAR: u32 = 1 << 0;
pub const VMA_AREA_STACK: u32 = 1 << 1;
pub const VMA_AREA_VSYSCALL: u32 = 1 << 2;
pub const VMA_AREA_VDSO: u32 = 1 << 3;
pub const VMA_AREA_HEAP: u32 = 1 << 5;
pub const VMA_FILE_PRIVATE: u32 = 1 << 6;
pub const VMA_FILE_SHARED: u32 = 1 << 7;
pub const VMA_ANON_SHARED: u32 = 1 << 8;
pub const VMA_ANON_PRIVATE: u32 = 1 << 9;
/// A SysV shared memory attachment (`shmid` = segment id; see `ipc`).
pub const VMA_AREA_SYSVIPC: u32 = 1 << 10;
pub const VMA_AREA_VVAR: u32 = 1 << 12;

pub const PAGE_SIZE: u64 = 4096;

/// VmFlags codes that map to an `madvise` advice we re-apply on restore.
const MADV_FLAGS: &[(&str, i32)] = &[
    ("dd", libc::MADV_DONTDUMP),
    ("dc", libc::MADV_DONTFORK),
    ("hg", libc::MADV_HUGEPAGE),
    ("nh", libc::MADV_NOHUGEPAGE),
    ("mg", libc::MADV_MERGEABLE),
    ("wf", libc::MADV_WIPEONFORK),
    ("sr", libc::MADV_SEQUENTIAL),
    ("rr", libc::MADV_RANDOM),
];

/// Whether the kernel owns the mapping (vDSO, vvar, vsyscall): never dumped or mapped.
pub fn is_special(status: u32) -> bool {
    status & (VMA_AREA_VDSO | VMA_AREA_VVAR | VMA_AREA_VSYSCALL) != 0
}

/// A mapped file the VMA entry refers to (by `shmid` = file id).
#[derive(Debug, Clone, PartialEq)]
pub struct MappedFile {
    pub path: String,
    pub writable: bool,
    /// A memfd ("/memfd:NAME (deleted)"): restored from its saved contents.
    pub memfd: bool,
    /// A deleted file ("PATH (deleted)"; `path` is without the suffix): restored from
    /// its saved contents.
    pub deleted: bool,
}

/// Classifies one VMA; `Err` names why cryo cannot restore it.
pub fn vma_entry(
    pid: i32,
    v: &Vma,
    stack_top: u64,
    brk: (u64, u64),
) -> Result<(VmaEntry, Option<MappedFile>)> {
    let unsupported = |why: &str| Error::Unsupported {
        pid,
        what: format!("mapping {:x}-{:x} {}", v.start, v.end, v.name),
        why: why.to_string(),
    };
    let mut status = VMA_AREA_REGULAR;
    let mut flags = if v.shared {
        libc::MAP_SHARED
    } else {
        libc::MAP_PRIVATE
    } as u32;
    let mut file = None;
    match v.name.as_str() {
        "[vdso]" => status = VMA_AREA_VDSO,
        "[vvar]" | "[vvar_vclock]" => status = VMA_AREA_VVAR,
        "[vsyscall]" => status = VMA_AREA_VSYSCALL,
        _ => {}
    }
    if status == VMA_AREA_REGULAR {
        if v.has_flag("io") || v.has_flag("pf") {
            return Err(unsupported("I/O or PFN mapping of a device"));
        }
        if v.has_flag("ht") {
            return Err(unsupported("hugetlbfs mappings are not supported yet"));
        }
        let memfd = v.name.starts_with("/memfd:") && v.name.ends_with(" (deleted)");
        let deleted = !memfd
            && v.inode != 0
            && v.name.starts_with('/')
            && v.name.ends_with(" (deleted)")
            && v.name != "/dev/zero (deleted)"
            && !v.name.starts_with("/SYSV");
        if (v.is_file() && !v.name.ends_with(" (deleted)")) || memfd || deleted {
            status |= if v.shared {
                VMA_FILE_SHARED
            } else {
                VMA_FILE_PRIVATE
            };
            let path = if deleted {
                v.name.trim_end_matches(" (deleted)").to_string()
            } else {
                v.name.clone()
            };
            file = Some(MappedFile {
                path,
                writable: v.shared && v.has_flag("mw"),
                memfd,
                deleted,
            });
        } else if v.shared && v.name.starts_with("/SYSV") {
            // The inode number of a SysV segment's file is its id (ipc/shm.c).
            status |= VMA_AREA_SYSVIPC;
        } else if v.name == "/dev/zero (deleted)" {
            status |= VMA_ANON_SHARED;
            flags |= libc::MAP_ANONYMOUS as u32;
        } else if v.name.ends_with(" (deleted)") {
            return Err(unsupported(
                "the mapped file was deleted (not supported yet)",
            ));
        } else if v.inode != 0 || v.name.starts_with('/') {
            return Err(unsupported("unknown kind of file mapping"));
        } else {
            status |= VMA_ANON_PRIVATE;
            flags |= libc::MAP_ANONYMOUS as u32;
            if v.name == "[heap]" || (v.start < brk.1 && v.end > brk.0) {
                status |= VMA_AREA_HEAP;
            }
        }
        if v.name == "[stack]" || (v.start <= stack_top && stack_top < v.end) {
            status |= VMA_AREA_STACK;
        }
        if v.has_flag("gd") {
            flags |= libc::MAP_GROWSDOWN as u32;
        }
        if v.has_flag("nr") {
            flags |= libc::MAP_NORESERVE as u32;
        }
    }
    let madv = MADV_FLAGS
        .iter()
        .filter(|(f, _)| v.has_flag(f))
        .fold(0u64, |m, (_, a)| m | (1u64 << a));
    let entry = VmaEntry {
        start: v.start,
        end: v.end,
        pgoff: if file.is_some() || status & (VMA_ANON_SHARED | VMA_AREA_SYSVIPC) != 0 {
            v.pgoff
        } else {
            0
        },
        shmid: if status & VMA_AREA_SYSVIPC != 0 {
            v.inode
        } else {
            0
        },
        prot: v.prot,
        flags,
        status,
        fd: -1,
        madv: (madv != 0).then_some(madv),
        // SysV attachments: O_RDONLY if attached with SHM_RDONLY (it may never write).
        fdflags: (status & VMA_AREA_SYSVIPC != 0).then(|| {
            if v.has_flag("mw") {
                libc::O_RDWR as u32
            } else {
                libc::O_RDONLY as u32
            }
        }),
    };
    Ok((entry, file))
}

/// Checks what restore relies on: VMAs page-aligned, non-empty, sorted and disjoint;
/// page runs inside VMAs. A corrupt or hostile image fails here, before any process exists.
pub fn validate(
    mm: &MmEntry,
    pagemap: &[cryo_proto::criu::PagemapEntry],
) -> std::result::Result<(), String> {
    const VSYSCALL: u64 = 0xffff_ffff_ff60_0000;
    let mut prev_end = 0u64;
    for v in &mm.vmas {
        if v.start % PAGE_SIZE != 0 || v.end % PAGE_SIZE != 0 || v.start >= v.end {
            return Err(format!("bad VMA {:#x}-{:#x}", v.start, v.end));
        }
        if v.start < prev_end {
            return Err(format!(
                "VMA {:#x}-{:#x} overlaps the previous one",
                v.start, v.end
            ));
        }
        if v.end > 1 << 47 && v.start != VSYSCALL {
            return Err(format!(
                "VMA {:#x}-{:#x} is outside the user address space",
                v.start, v.end
            ));
        }
        prev_end = v.end;
    }
    for e in pagemap {
        let n = e.nr_pages.unwrap_or(e.compat_nr_pages as u64);
        let end = n
            .checked_mul(PAGE_SIZE)
            .and_then(|l| l.checked_add(e.vaddr));
        let inside = end.is_some_and(|end| {
            mm.vmas
                .iter()
                .any(|v| v.start <= e.vaddr && end <= v.end && !is_special(v.status))
        });
        if e.vaddr % PAGE_SIZE != 0 || n == 0 || !inside {
            return Err(format!(
                "page run at {:#x} ({n} pages) is not inside one mapping",
                e.vaddr
            ));
        }
    }
    Ok(())
}

/// The `madvise` advices recorded for a VMA.
pub fn madvices(e: &VmaEntry) -> impl Iterator<Item = i32> + '_ {
    let m = e.madv.unwrap_or(0);
    MADV_FLAGS
        .iter()
        .map(|(_, a)| *a)
        .filter(move |a| m & (1u64 << a) != 0)
}

/// `struct prctl_mm_map` (include/uapi/linux/prctl.h) as bytes, with the auxv pointer
/// given by the caller (it lives in the target's scratch memory).
pub fn prctl_mm_map(mm: &MmEntry, auxv_addr: u64, exe_fd: i32) -> Vec<u8> {
    let mut b = Vec::with_capacity(104);
    for v in [
        mm.mm_start_code,
        mm.mm_end_code,
        mm.mm_start_data,
        mm.mm_end_data,
        mm.mm_start_brk,
        mm.mm_brk,
        mm.mm_start_stack,
        mm.mm_arg_start,
        mm.mm_arg_end,
        mm.mm_env_start,
        mm.mm_env_end,
        auxv_addr,
    ] {
        b.extend_from_slice(&v.to_ne_bytes());
    }
    b.extend_from_slice(&((mm.mm_saved_auxv.len() * 8) as u32).to_ne_bytes());
    b.extend_from_slice(&(exe_fd as u32).to_ne_bytes());
    b
}

pub fn auxv_bytes(mm: &MmEntry) -> Vec<u8> {
    mm.mm_saved_auxv
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vma(name: &str, shared: bool, inode: u64, flags: &[&str]) -> Vma {
        Vma {
            start: 0x1000,
            end: 0x3000,
            prot: 3,
            shared,
            inode,
            name: name.into(),
            vmflags: flags.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn classifies() {
        let (e, f) =
            vma_entry(1, &vma("/usr/lib/libc.so.6", false, 5, &["rd"]), 0, (0, 0)).unwrap();
        assert_eq!(e.status, VMA_AREA_REGULAR | VMA_FILE_PRIVATE);
        assert_eq!(f.unwrap().path, "/usr/lib/libc.so.6");
        let (e, _) = vma_entry(1, &vma("[stack]", false, 0, &["gd", "dd"]), 0, (0, 0)).unwrap();
        assert!(e.status & VMA_AREA_STACK != 0 && e.status & VMA_ANON_PRIVATE != 0);
        assert!(e.flags & libc::MAP_GROWSDOWN as u32 != 0);
        assert_eq!(madvices(&e).collect::<Vec<_>>(), vec![libc::MADV_DONTDUMP]);
        let (e, _) = vma_entry(1, &vma("/dev/zero (deleted)", true, 7, &[]), 0, (0, 0)).unwrap();
        assert!(e.status & VMA_ANON_SHARED != 0);
        // A deleted file and a memfd: restored from saved contents, by path.
        let (e, f) = vma_entry(1, &vma("/tmp/x (deleted)", false, 7, &[]), 0, (0, 0)).unwrap();
        let f = f.unwrap();
        assert_eq!(
            (e.status & VMA_FILE_PRIVATE, f.path.as_str(), f.deleted),
            (VMA_FILE_PRIVATE, "/tmp/x", true)
        );
        let (_, f) = vma_entry(1, &vma("/memfd:m (deleted)", true, 9, &[]), 0, (0, 0)).unwrap();
        assert!(f.unwrap().memfd);
        let (e, f) =
            vma_entry(1, &vma("/SYSV00000001 (deleted)", true, 9, &[]), 0, (0, 0)).unwrap();
        assert!(e.status & VMA_AREA_SYSVIPC != 0 && f.is_none());
        let (e, _) = vma_entry(1, &vma("[vdso]", false, 0, &[]), 0, (0, 0)).unwrap();
        assert!(is_special(e.status));
    }

    #[test]
    fn mm_map_layout() {
        let mm = MmEntry {
            mm_saved_auxv: vec![1, 2, 3, 4],
            ..Default::default()
        };
        let b = prctl_mm_map(&mm, 0x1000, 7);
        assert_eq!(b.len(), 104);
        assert_eq!(&b[96..100], &32u32.to_ne_bytes());
        assert_eq!(&b[100..104], &7u32.to_ne_bytes());
    }
}
