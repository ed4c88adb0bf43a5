//! File descriptors. One submodule per fd kind, each with its dump and restore halves:
//! `reg` (regular files, directories, devices, deleted files), `pipe` (pipes and
//! FIFOs), `eventfd`, `signalfd`, `timerfd`, `memfd`, `epoll`, `inotify`, `unix` (unix
//! sockets; whole-tree peer checks in `FileIds::finish`).
//!
//! Dump: every fd of the tree is classified by its `/proc/PID/fd/N` link; fds sharing
//! one open file description (dup, fork) are found with `kcmp` and share one file id.
//! A kind that must look inside the file takes its own copy with `pidfd_getfd`. Anything
//! that cannot be dumped becomes a blocker; the dump collects every blocker of the tree
//! before refusing (see `dump::dump`).
//!
//! Restore: the restorer opens (creates) every open file description before the first
//! fork (`Opener`); every new process inherits them and puts its own at their numbers.
//! What must happen after that, in the process itself (epoll registrations, which the
//! kernel keys on the fd number), is returned as `Late` steps.

use crate::error::{or_blocker, Error, Result};
use crate::image::ImageDir;
use crate::proc;
use cryo_proto::criu::{FdTypes, FdinfoEntry, FileEntry, FownEntry, RegFileEntry};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

pub mod epoll;
pub mod eventfd;
pub mod inet;
pub mod inotify;
pub mod locks;
pub mod memfd;
pub mod mqueue;
pub mod pipe;
pub mod reg;
pub mod signalfd;
pub mod timerfd;
pub mod tty;
pub mod unix;

pub use reg::{is_tty_path, open_dir, open_for_map, shell_job_tty};

/// What the user allows for fds that reach outside the dumped tree (CRIU's flags).
#[derive(Debug, Clone, Copy, Default)]
pub struct FdOpts {
    /// `--ext-unix-sk`: a unix socket whose peer is outside the tree is kept (dump) and
    /// reconnected (restore) instead of refused.
    pub ext_unix_sk: bool,
    /// `--tcp-established`: established TCP connections are dumped and restored with
    /// TCP_REPAIR instead of refused.
    pub tcp_established: bool,
    /// `--tcp-close` (restore): established connections come back closed.
    pub tcp_close: bool,
}

/// The tree-wide file table of one dump: file entries (files.img) and the data images
/// some kinds add (pipe contents, deleted files' contents).
#[derive(Debug, Default)]
pub struct FileIds {
    next: u32,
    pub files: Vec<FileEntry>,
    /// One (pid, fd, file id) per open file description seen so far, across the tree,
    /// kept in the kernel's order of those descriptions (kcmp orders them): a new fd is
    /// placed by binary search, so finding fds that share a description (dup, or
    /// inherited over fork) costs O(log n) kcmp calls, not one per earlier fd.
    descs: Vec<(i32, i32, u32)>,
    pub pipes: pipe::DumpState,
    pub ghosts: reg::Ghosts,
    pub memfds: memfd::DumpState,
    pub mqueues: mqueue::DumpState,
    pub unix: unix::DumpState,
    pub inet: inet::DumpState,
    pub locks: locks::DumpState,
    pub ttys: tty::DumpState,
    pub opts: FdOpts,
}

impl FileIds {
    pub fn new(opts: FdOpts) -> Self {
        FileIds {
            opts,
            ..Default::default()
        }
    }

    /// A fresh file id.
    pub fn next_id(&mut self) -> u32 {
        self.next += 1;
        self.next
    }

    /// Registers a regular file and returns its id.
    pub fn add_reg(&mut self, path: &str, flags: u32, pos: u64) -> u32 {
        let id = self.next_id();
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

    /// A deleted file a process maps: one entry per (path, mode), without a size (its
    /// contents are saved whole, see `reg::dump_deleted_mapping`).
    pub fn add_mapped_deleted(&mut self, path: &str, flags: u32) -> u32 {
        let same = |f: &&FileEntry| {
            f.reg
                .as_ref()
                .is_some_and(|r| r.name == path && r.flags == flags && r.size.is_none())
                && self.ghosts.is_remapped(f.id)
        };
        if let Some(f) = self.files.iter().find(same) {
            return f.id;
        }
        self.add_reg(path, flags, 0)
    }

    /// Adds a complete entry of any kind, giving it a fresh id.
    pub fn add(&mut self, mut f: FileEntry) -> u32 {
        let id = self.next_id();
        f.id = id;
        self.files.push(f);
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

    /// Checks that need the whole tree (peers of sockets), once every fd was seen;
    /// what cannot be dumped is added to `blockers`.
    pub fn finish(&mut self, blockers: &mut Vec<String>) {
        unix::finish(self, blockers);
    }

    /// Writes the data images the fd kinds collected (files.img is written by the caller).
    pub fn write_data(&self, dir: &ImageDir) -> Result<()> {
        self.pipes.write(dir)?;
        self.ghosts.write(dir)?;
        self.memfds.write(dir)?;
        self.mqueues.write(dir)?;
        self.unix.write(dir)?;
        self.inet.write(dir)?;
        self.locks.write(dir)?;
        self.ttys.write(dir)?;
        Ok(())
    }
}

/// The file entry a file mapping of `pid` at `start..end` is restored from: the file
/// by path, or the saved contents of a memfd or deleted file.
pub fn dump_mapped(
    pid: i32,
    start: u64,
    end: u64,
    f: &crate::mm::MappedFile,
    ids: &mut FileIds,
) -> Result<u32> {
    if f.memfd {
        memfd::dump_mapping(pid, start, end, &f.path, f.writable, ids)
    } else if f.deleted {
        reg::dump_deleted_mapping(pid, start, end, &f.path, f.writable, ids)
    } else {
        let flags = if f.writable {
            libc::O_RDWR
        } else {
            libc::O_RDONLY
        } as u32;
        Ok(ids.add_mapped(&f.path, flags))
    }
}

/// The object behind a mapping of `pid` at `start..end` (a memfd, a deleted file),
/// opened through `/proc/PID/map_files`, with its stat and the path used.
pub fn open_mapped(
    pid: i32,
    start: u64,
    end: u64,
) -> Result<(std::fs::File, nix::sys::stat::FileStat, String)> {
    let p = format!("/proc/{pid}/map_files/{start:x}-{end:x}");
    let file = std::fs::File::open(&p).map_err(Error::io("open", &p))?;
    let st = nix::sys::stat::fstat(&file).map_err(Error::sys("fstat", pid))?;
    Ok((file, st, p))
}

/// The whole contents of an open file (`path` names it in errors).
pub fn read_all(mut file: &std::fs::File, path: &str) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut data).map_err(Error::io("read", path))?;
    Ok(data)
}

/// One fd of a seized process, as the kind dumpers see it.
pub struct Fd<'a> {
    pub pid: i32,
    pub fd: i32,
    /// The `/proc/PID/fd/N` link: a path, `pipe:[ino]`, `anon_inode:[eventfd]`, …
    pub target: &'a str,
    /// `/proc/PID/fdinfo/N`, raw (kinds parse their own lines).
    pub fdinfo: &'a str,
    /// File status flags (without O_CLOEXEC) and position.
    pub flags: u32,
    pub pos: u64,
    pidfd: BorrowedFd<'a>,
}

impl Fd<'_> {
    /// cryo's own copy of this fd (same open file description), to look inside it.
    pub fn copy(&self) -> Result<OwnedFd> {
        crate::sys::pidfd::pidfd_getfd(self.pidfd, self.fd)
            .map_err(Error::sys("pidfd_getfd", self.pid))
    }

    /// `stat` of the open file (through /proc, so it works for any kind).
    pub fn stat(&self) -> Result<nix::sys::stat::FileStat> {
        let p = format!("/proc/{}/fd/{}", self.pid, self.fd);
        nix::sys::stat::stat(p.as_str()).map_err(Error::sys("stat", self.pid))
    }

    /// A "cannot dump this fd" error; `why` says why and what would help.
    pub fn unsupported(&self, why: impl Into<String>) -> Error {
        Error::Unsupported {
            pid: self.pid,
            what: format!("fd {} ({})", self.fd, self.target),
            why: why.into(),
        }
    }

    /// A `key:` line of the fdinfo text, trimmed.
    pub fn info(&self, key: &str) -> Option<&str> {
        fdinfo_field(self.fdinfo, key)
    }
}

/// The value of the first `key:` line of an fdinfo text.
pub fn fdinfo_field<'s>(fdinfo: &'s str, key: &str) -> Option<&'s str> {
    fdinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim())
    })
}

/// What an fd is, from its /proc link.
fn dump_one(f: &Fd, ids: &mut FileIds) -> Result<u32> {
    let t = f.target;
    if let Some(rest) = t.strip_prefix("pipe:[") {
        let ino = rest.trim_end_matches(']').parse().unwrap_or(0);
        return pipe::dump_pipe(f, ino, ids);
    }
    match t {
        "anon_inode:[eventfd]" => return eventfd::dump(f, ids),
        "anon_inode:[signalfd]" => return signalfd::dump(f, ids),
        "anon_inode:[timerfd]" => return timerfd::dump(f, ids),
        "anon_inode:[eventpoll]" => return epoll::dump(f, ids),
        "anon_inode:inotify" => return inotify::dump(f, ids),
        _ => {}
    }
    if tty::is_master_path(t) {
        return tty::dump_master(f, ids);
    }
    if t.starts_with("/memfd:") {
        return memfd::dump(f, ids);
    }
    if let Some(rest) = t.strip_prefix("socket:[") {
        let ino = rest.trim_end_matches(']').parse().unwrap_or(0);
        // The dumper's copy of the socket, handed on to the family's dumper.
        let copy = f.copy()?;
        let domain = crate::sys::fd::socket_domain(std::os::fd::AsFd::as_fd(&copy))
            .map_err(Error::sys("getsockopt(SO_DOMAIN)", f.pid))?;
        return match domain {
            libc::AF_UNIX => unix::dump(f, copy, ino, ids),
            libc::AF_INET | libc::AF_INET6 => inet::dump(f, copy, domain, ino, ids),
            d => Err(f.unsupported(format!("socket family {d} is not supported"))),
        };
    }
    if !t.starts_with('/') {
        return Err(f.unsupported("this kind of fd is not supported yet"));
    }
    if mqueue::is_mqueue(f) {
        return mqueue::dump(f, ids);
    }
    reg::dump(f, ids)
}

/// Collects every fd of `pid` into fdinfo entries (and file entries in `ids`); an fd
/// cryo cannot dump is added to `blockers` and skipped, so one pass reports them all.
pub fn dump_fds(
    pid: i32,
    pidfd: BorrowedFd,
    ids: &mut FileIds,
    blockers: &mut Vec<String>,
) -> Result<Vec<FdinfoEntry>> {
    let dir = format!("/proc/{pid}/fd");
    let mut fds: Vec<i32> = std::fs::read_dir(&dir)
        .map_err(|e| Error::proc_io(pid, &dir, e))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    let mut out: Vec<FdinfoEntry> = Vec::new();
    for fd in fds {
        let target = match proc::read_link(pid, &format!("fd/{fd}")) {
            Ok(t) => t,
            Err(_) => continue, // closed meanwhile (cannot happen while frozen)
        };
        let raw = proc::read(pid, &format!("fdinfo/{fd}"))?;
        let info = proc::parse_fdinfo(&raw)?;
        let cloexec = info.flags & libc::O_CLOEXEC as u32 != 0;
        let f = Fd {
            pid,
            fd,
            target: &target,
            fdinfo: &raw,
            flags: info.flags & !(libc::O_CLOEXEC as u32),
            pos: info.pos,
            pidfd,
        };
        // An earlier fd with the same open file description shares its id.
        let id = match ids.find_desc(pid, fd)? {
            Ok(i) => ids.descs[i].2,
            Err(at) => match or_blocker(dump_one(&f, ids), blockers)? {
                Some(id) => {
                    ids.descs.insert(at, (pid, fd, id));
                    id
                }
                None => continue,
            },
        };
        or_blocker(ids.locks.collect(&f, id), blockers)?;
        let kind = ids.get(id).map(|e| e.r#type).unwrap_or(FdTypes::Reg as i32);
        log::debug!(pid = pid, fd = fd, target = target.as_str(), id = id, kind = kind; "fd");
        out.push(FdinfoEntry {
            id,
            flags: if cloexec { libc::FD_CLOEXEC as u32 } else { 0 },
            r#type: kind,
            fd: fd as u32,
            ..Default::default()
        });
    }
    Ok(out)
}

/// A step a restored process does itself once its fds are in place.
#[derive(Debug, Clone, Copy)]
pub enum Late {
    /// `epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, {events, data})`.
    EpollAdd {
        epfd: i32,
        tfd: i32,
        events: u32,
        data: u64,
    },
    /// Takes a file lock again (`kind`: locks::FL_*; `typ`: LOCK_SH/EX or F_RDLCK/WRLCK).
    Lock {
        fd: i32,
        kind: u32,
        typ: i32,
        start: i64,
        len: i64,
    },
}

impl Late {
    /// Runs in the new process (async-signal-safe: raw syscalls only).
    pub fn run(&self) -> std::result::Result<(), (&'static str, nix::errno::Errno)> {
        match *self {
            Late::EpollAdd {
                epfd,
                tfd,
                events,
                data,
            } => crate::sys::fd::epoll_add(epfd, tfd, events, data).map_err(|e| ("epoll_ctl", e)),
            Late::Lock {
                fd,
                kind,
                typ,
                start,
                len,
            } => match kind {
                locks::FL_FLOCK => crate::sys::fd::flock(fd, typ).map_err(|e| ("flock", e)),
                locks::FL_OFD => crate::sys::fd::set_lock(fd, libc::F_OFD_SETLK, typ, start, len)
                    .map_err(|e| ("fcntl(F_OFD_SETLK)", e)),
                _ => crate::sys::fd::set_lock(fd, libc::F_SETLK, typ, start, len)
                    .map_err(|e| ("fcntl(F_SETLK)", e)),
            },
        }
    }
}

/// Creates the open file descriptions of a restore, once each, in the restorer.
pub struct Opener<'a> {
    pub dir: &'a ImageDir,
    pub opts: FdOpts,
    by_id: HashMap<u32, &'a FileEntry>,
    shell_job: bool,
    /// Open file descriptions made so far, by file id.
    opened: HashMap<u32, OwnedFd>,
    pipes: pipe::Restorer,
    ghosts: reg::GhostRestorer,
    memfds: memfd::Restorer,
    /// POSIX queues: created in the tree's ipc namespace, opened by each process.
    pub mqueues: mqueue::Restorer,
    pub unix: unix::Restorer,
    pub inet: inet::Restorer,
    locks: locks::Restorer,
    pub ttys: tty::Restorer,
    /// Epoll files already given their registrations (by the first process holding them).
    epolls_done: std::collections::HashSet<u32>,
}

impl<'a> Opener<'a> {
    pub fn new(
        dir: &'a ImageDir,
        files: &'a [FileEntry],
        shell_job: bool,
        opts: FdOpts,
    ) -> Result<Self> {
        Ok(Opener {
            dir,
            opts,
            by_id: files.iter().map(|f| (f.id, f)).collect(),
            shell_job,
            opened: HashMap::new(),
            pipes: pipe::Restorer::load(dir)?,
            ghosts: reg::GhostRestorer::load(dir, files)?,
            memfds: memfd::Restorer::load(dir)?,
            mqueues: mqueue::Restorer::load(dir)?,
            unix: unix::Restorer::load(dir)?,
            inet: inet::Restorer::load(dir, files)?,
            locks: locks::Restorer::load(dir)?,
            ttys: tty::Restorer::load(dir, files)?,
            epolls_done: Default::default(),
        })
    }

    pub fn entry(&self, id: u32) -> Result<&'a FileEntry> {
        self.by_id
            .get(&id)
            .copied()
            .ok_or_else(|| crate::image::ImageError::Invalid {
                path: self.dir.file("files.img"),
                msg: format!("no file with id {id}"),
            })
            .map_err(Error::from)
    }

    /// The open file description of file `id` (created on first use), as a raw fd that
    /// stays open as long as this Opener.
    pub fn open(&mut self, id: u32) -> Result<RawFd> {
        if let Some(f) = self.opened.get(&id) {
            return Ok(f.as_raw_fd());
        }
        let fe = self.entry(id)?;
        let fd = self.create(fe)?;
        let raw = fd.as_raw_fd();
        self.opened.insert(id, fd);
        Ok(raw)
    }

    /// An fd of its own to map file `id` from (a service fd of the restored process):
    /// a recreated memfd or deleted file through a duplicate of its description, any
    /// other file opened anew by path (refused if its size changed since the dump).
    pub fn open_for_mapping(&mut self, id: u32) -> Result<OwnedFd> {
        let fe = self.entry(id)?;
        if fe.memfd.is_some() || self.ghosts.is_ghost(id) {
            self.open(id)?;
            return self.opened[&id]
                .try_clone()
                .map_err(Error::io("dup", format!("file {id}")));
        }
        let r = fe.reg.as_ref().ok_or_else(|| Error::Restore {
            pid: 0,
            msg: format!("mapped file {id} has no path"),
        })?;
        let w = r.flags & libc::O_ACCMODE as u32 == libc::O_RDWR as u32;
        open_for_map(&r.name, w, r.size)
    }

    fn create(&mut self, fe: &'a FileEntry) -> Result<OwnedFd> {
        let bad = |what: &str| Error::Restore {
            pid: 0,
            msg: format!("file {}: {what} entry missing", fe.id),
        };
        match FdTypes::try_from(fe.r#type).unwrap_or(FdTypes::Und) {
            FdTypes::Reg => {
                let r = fe.reg.as_ref().ok_or_else(|| bad("reg"))?;
                // A slave of a pty recreated here: its master first.
                if let Some(&m) = tty::slave_index(&r.name).and_then(|i| self.ttys.masters.get(&i))
                {
                    self.open(m)?;
                } else if self.shell_job && is_tty_path(&r.name) {
                    if let Some(t) = shell_job_tty() {
                        return Ok(t);
                    }
                }
                if let Some(fd) = self.ghosts.open(self.dir, fe.id, r)? {
                    return Ok(fd);
                }
                reg::open_reg(fe)
            }
            FdTypes::Pipe => self
                .pipes
                .open_pipe(fe.pipe.as_ref().ok_or_else(|| bad("pipe"))?),
            FdTypes::Fifo => {
                let fifo = fe.fifo.as_ref().ok_or_else(|| bad("fifo"))?;
                let reg = self.entry(fifo.regf_id.unwrap_or(0))?;
                let r = reg.reg.as_ref().ok_or_else(|| bad("fifo's reg"))?;
                self.pipes.open_fifo(fifo, r)
            }
            FdTypes::Eventfd => eventfd::restore(fe.efd.as_ref().ok_or_else(|| bad("eventfd"))?),
            FdTypes::Signalfd => {
                signalfd::restore(fe.sgfd.as_ref().ok_or_else(|| bad("signalfd"))?)
            }
            FdTypes::Timerfd => timerfd::restore(fe.tfd.as_ref().ok_or_else(|| bad("timerfd"))?),
            FdTypes::Memfd => {
                let m = fe.memfd.as_ref().ok_or_else(|| bad("memfd"))?;
                self.memfds.open(m)
            }
            FdTypes::Eventpoll => epoll::create(fe.epfd.as_ref().ok_or_else(|| bad("eventpoll"))?),
            FdTypes::Inotify => inotify::restore(fe.ify.as_ref().ok_or_else(|| bad("inotify"))?),
            FdTypes::Tty => self
                .ttys
                .open_master(fe.tty.as_ref().ok_or_else(|| bad("tty"))?),
            FdTypes::Unixsk => unix::restore(self, fe),
            FdTypes::Inetsk => inet::restore(self, fe),
            other => Err(Error::Restore {
                pid: 0,
                msg: format!("file {}: kind {other:?} is not supported", fe.id),
            }),
        }
    }

    /// The controlling terminal process `pid` must take again, if it leads a session
    /// that had one of the ptys recreated here: (its fd on the slave, foreground group).
    pub fn ctty_duty(&self, pid: u32, fdinfo: &[FdinfoEntry]) -> Option<(i32, i32)> {
        let (index, pgrp) = self.ttys.ctty_of(pid)?;
        let want = format!("/dev/pts/{index}");
        let fd = fdinfo.iter().find(|fi| {
            self.by_id
                .get(&fi.id)
                .and_then(|e| e.reg.as_ref())
                .is_some_and(|r| r.name == want)
        })?;
        Some((fd.fd as i32, pgrp as i32))
    }

    /// The steps process `pid` must run once its fds are at their numbers: registrations
    /// of the epoll files it is the first to hold, then its file locks.
    pub fn late_steps(&mut self, pid: i32, fdinfo: &[FdinfoEntry]) -> Result<Vec<Late>> {
        let mut out = Vec::new();
        for fi in fdinfo {
            let fe = self.entry(fi.id)?;
            if let Some(ep) = &fe.epfd {
                if self.epolls_done.insert(fe.id) {
                    out.extend(epoll::late_steps(fi.fd as i32, ep));
                }
            }
        }
        out.extend(self.locks.late_steps(pid));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    /// The fdinfo line parsers never panic on damaged input (a small deterministic
    /// mutation fuzz run in every test pass; `fuzz/` has the coverage-guided one).
    #[test]
    fn fdinfo_parsers_survive_garbage() {
        let samples = [
            "tfd:        5 events:       19 data:               2a  pos:0 ino:2b sdev:e",
            "inotify wd:3 ino:1a2b sdev:800001 mask:fff ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:2b1a000001000000",
            "\t1: POSIX  ADVISORY  WRITE 6186 fe:00:10010748 0 99",
            "\t2: OFDLCK ADVISORY  READ -1 fe:00:1 200 EOF",
        ];
        let mut seed = 0x2545f4914f6cdd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for s in samples {
            for _ in 0..2000 {
                let mut b = s.as_bytes().to_vec();
                for _ in 0..(1 + next() % 4) {
                    let at = (next() as usize) % b.len();
                    match next() % 3 {
                        0 => b[at] = next() as u8,
                        1 => b.truncate(at),
                        _ => b.insert(at, b":0 x"[(next() % 4) as usize]),
                    }
                    if b.is_empty() {
                        break;
                    }
                }
                let line = String::from_utf8_lossy(&b);
                let _ = super::epoll::parse_tfd(&line);
                let _ = super::inotify::parse_watch(&line);
                let _ = super::locks::parse_line(&line);
            }
        }
    }
}
