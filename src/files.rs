//! File descriptors. This first cut handles what a plain program holds: regular files
//! and character devices opened by path (with offset, access mode, O_APPEND and the
//! other status flags, FD_CLOEXEC), and fds sharing one open file description (`2>&1`),
//! found with `kcmp`. Other kinds are refused at dump time, naming the fd.

use crate::error::{Error, Result};
use crate::proc;
use cryo_proto::criu::{FdTypes, FdinfoEntry, FileEntry, FownEntry, RegFileEntry};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

/// File ids of mapped files and fds come from one counter per dump.
#[derive(Debug, Default)]
pub struct FileIds {
    next: u32,
    pub files: Vec<FileEntry>,
    /// One (pid, fd, file id) per open file description seen so far, across the tree,
    /// kept in the kernel's order of those descriptions (kcmp orders them): a new fd is
    /// placed by binary search, so finding fds that share a description (dup, or
    /// inherited over fork) costs O(log n) kcmp calls, not one per earlier fd.
    descs: Vec<(i32, i32, u32)>,
}

impl FileIds {
    /// Registers a regular file and returns its id.
    pub fn add_reg(&mut self, path: &str, flags: u32, pos: u64) -> u32 {
        self.next += 1;
        let id = self.next;
        self.files.push(FileEntry {
            r#type: FdTypes::Reg as i32,
            id,
            reg: Some(RegFileEntry {
                id,
                flags,
                pos,
                fown: FownEntry::default(),
                name: path.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        });
        id
    }

    /// A file the process maps (or runs): one entry per (path, mode), with its size so a
    /// restore can tell that the file changed since the dump (pages not dumped are read
    /// back from it).
    pub fn add_mapped(&mut self, path: &str, flags: u32) -> u32 {
        let same = |f: &&FileEntry| {
            f.reg
                .as_ref()
                .is_some_and(|r| r.name == path && r.flags == flags && r.size.is_some())
        };
        if let Some(f) = self.files.iter().find(same) {
            return f.id;
        }
        let id = self.add_reg(path, flags, 0);
        let size = std::fs::metadata(path).map(|m| m.len()).ok();
        if let Some(r) = self.files.last_mut().and_then(|f| f.reg.as_mut()) {
            r.size = Some(size.unwrap_or(0));
        }
        id
    }

    /// Binary search of `descs` for the open file description of `fd` in `pid`:
    /// `Ok(index)` if already there, `Err(insert_at)` if new.
    fn find_desc(&self, pid: i32, fd: i32) -> Result<std::result::Result<usize, usize>> {
        let (mut lo, mut hi) = (0, self.descs.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            let (p, f, _) = self.descs[mid];
            match crate::sys::process::kcmp_order(p, f, pid, fd).map_err(Error::sys("kcmp", pid))? {
                std::cmp::Ordering::Equal => return Ok(Ok(mid)),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        Ok(Err(lo))
    }

    pub fn get(&self, id: u32) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.id == id)
    }
}

/// Collects every fd of `pid` into fdinfo entries (and file entries in `ids`).
pub fn dump_fds(pid: i32, ids: &mut FileIds) -> Result<Vec<FdinfoEntry>> {
    let dir = format!("/proc/{pid}/fd");
    let mut fds: Vec<i32> = std::fs::read_dir(&dir)
        .map_err(|e| Error::proc_io(pid, &dir, e))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    let mut out: Vec<FdinfoEntry> = Vec::new();
    let mut blockers = Vec::new();
    for fd in fds {
        let target = match proc::read_link(pid, &format!("fd/{fd}")) {
            Ok(t) => t,
            Err(_) => continue, // closed meanwhile (cannot happen while frozen)
        };
        let info = proc::parse_fdinfo(&proc::read(pid, &format!("fdinfo/{fd}"))?)?;
        let cloexec = info.flags & libc::O_CLOEXEC as u32 != 0;
        let flags = info.flags & !(libc::O_CLOEXEC as u32);
        if !target.starts_with('/') {
            blockers.push(format!(
                "fd {fd} ({target}): only regular files and devices are supported yet"
            ));
            continue;
        }
        if target.ends_with(" (deleted)") {
            blockers.push(format!(
                "fd {fd} ({target}): deleted files are not supported yet"
            ));
            continue;
        }
        // An earlier fd with the same open file description shares its id.
        let id = match ids.find_desc(pid, fd)? {
            Ok(i) => ids.descs[i].2,
            Err(at) => {
                let id = ids.add_reg(&target, flags, info.pos);
                ids.descs.insert(at, (pid, fd, id));
                id
            }
        };
        log::debug!(pid = pid, fd = fd, path = target.as_str(), pos = info.pos, flags = flags; "fd");
        out.push(FdinfoEntry {
            id,
            flags: if cloexec { libc::FD_CLOEXEC as u32 } else { 0 },
            r#type: FdTypes::Reg as i32,
            fd: fd as u32,
            ..Default::default()
        });
    }
    if !blockers.is_empty() {
        return Err(Error::Unsupported {
            pid,
            what: "file descriptors".into(),
            why: blockers.join("; "),
        });
    }
    Ok(out)
}

/// Whether a path names a terminal device (pseudo-terminal slave or tty).
pub fn is_tty_path(p: &str) -> bool {
    p.starts_with("/dev/pts/") || p.starts_with("/dev/tty") || p == "/dev/console"
}

/// `--shell-job`: the job's terminal fds are attached to the terminal cryo runs on (its
/// stdin), as a shell would do with a resumed job; `None` if cryo has no terminal.
pub fn shell_job_tty() -> Option<OwnedFd> {
    let stdin = std::io::stdin();
    if !nix::unistd::isatty(&stdin).unwrap_or(false) {
        return None;
    }
    let dup = nix::unistd::dup(&stdin).ok()?;
    Some(dup)
}

/// Opens a file entry for a restored fd, at its offset, in this process.
pub fn open_reg(f: &FileEntry) -> Result<OwnedFd> {
    let r = f.reg.as_ref().ok_or_else(|| Error::Restore {
        pid: 0,
        msg: format!("file {} has no reg entry", f.id),
    })?;
    let acc = r.flags & libc::O_ACCMODE as u32;
    let mut o = std::fs::OpenOptions::new();
    o.read(acc == libc::O_RDONLY as u32 || acc == libc::O_RDWR as u32)
        .write(acc == libc::O_WRONLY as u32 || acc == libc::O_RDWR as u32)
        .custom_flags(
            (r.flags
                & !(libc::O_ACCMODE as u32
                    | libc::O_CREAT as u32
                    | libc::O_TRUNC as u32
                    | libc::O_EXCL as u32)) as i32,
        );
    let file = o.open(&r.name).map_err(Error::io("open", &r.name))?;
    if r.pos != 0 {
        use std::io::{Seek, SeekFrom};
        (&file)
            .seek(SeekFrom::Start(r.pos))
            .map_err(Error::io("seek", &r.name))?;
    }
    let fd: OwnedFd = file.into();
    log::debug!(path = r.name.as_str(), fd = fd.as_raw_fd(), pos = r.pos; "opened file for restore");
    Ok(fd)
}

/// Opens a file for mapping (read-only unless a shared writable mapping needs write),
/// refusing one whose size differs from the dump's: its unsaved pages would be wrong.
pub fn open_for_map(path: &str, write: bool, size: Option<u64>) -> Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .open(path)
        .map_err(Error::io("open", path))?;
    if let Some(want) = size {
        let got = f.metadata().map_err(Error::io("stat", path))?.len();
        if got != want {
            return Err(Error::Restore {
                pid: 0,
                msg: format!("{path} changed since the dump (size {want} -> {got}); restore needs the same file"),
            });
        }
    }
    Ok(f.into())
}

/// Opens a directory as an O_PATH fd (for cwd/root).
pub fn open_dir(path: &str) -> Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path)
        .map_err(Error::io("open directory", path))?;
    Ok(f.into())
}
