//! Pipes and FIFOs, with the data in flight.
//!
//! Dump: a pipe is known by its inode (`pipe_id`); its contents are read once, without
//! consuming them: the dumper opens the pipe anew for reading (through /proc, non-
//! blocking) and `tee`s everything into a pipe of its own of the same capacity, then
//! reads that copy. Contents go to `pipes-data.img` (`fifo-data.img` for FIFOs) as a
//! `pipe_data_entry` followed by the bytes, as CRIU writes them.
//!
//! Restore: the first end opened creates the pipe (both ends), sets its capacity and
//! writes the data back; each end is then handed to the file description that had it.
//! A FIFO is opened by path, with a read-write holder fd opened first so that neither
//! end blocks and the data can be written.

use super::reg::is_tty_path;
use super::{Fd, FileIds};
use crate::error::{Error, Result};
use crate::image::{ImageDir, Kind};
use crate::sys::fd as sysfd;
use cryo_proto::criu::{FdTypes, FifoEntry, FileEntry, PipeDataEntry, PipeEntry, RegFileEntry};
use cryo_proto::magic;
use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

const PIPES_DATA: Kind = Kind {
    name: "pipes-data",
    magic: magic::PIPES_DATA_MAGIC,
    common: true,
};
const FIFO_DATA: Kind = Kind {
    name: "fifo-data",
    magic: magic::FIFO_DATA_MAGIC,
    common: true,
};
/// A pipe's capacity unless resized (16 pages).
const DEFAULT_SIZE: u32 = 65536;

/// Pipes seen so far in a dump, and their contents.
#[derive(Debug, Default)]
pub struct DumpState {
    seen: std::collections::HashSet<u64>,
    pipes: Vec<(PipeDataEntry, Vec<u8>)>,
    fifos: Vec<(PipeDataEntry, Vec<u8>)>,
}

impl DumpState {
    pub fn write(&self, dir: &ImageDir) -> Result<()> {
        for (name, kind, list) in [
            ("pipes-data.img", PIPES_DATA, &self.pipes),
            ("fifo-data.img", FIFO_DATA, &self.fifos),
        ] {
            if list.is_empty() {
                continue;
            }
            let mut w = dir.writer(name, kind)?;
            for (e, data) in list {
                w.entry(e)?;
                w.put(data)?;
            }
            w.finish()?;
        }
        Ok(())
    }

    /// Records the pipe's contents the first time one of its ends is seen.
    fn peek_once(&mut self, f: &Fd, ino: u64, fifo: bool) -> Result<()> {
        if !self.seen.insert(ino) {
            return Ok(());
        }
        let (size, data) = peek(f)?;
        if data.is_empty() && size == DEFAULT_SIZE {
            return Ok(());
        }
        let e = PipeDataEntry {
            pipe_id: ino as u32,
            bytes: data.len() as u32,
            size: Some(size),
        };
        if fifo {
            &mut self.fifos
        } else {
            &mut self.pipes
        }
        .push((e, data));
        Ok(())
    }
}

/// The capacity of a pipe and the bytes in it, left in place.
fn peek(f: &Fd) -> Result<(u32, Vec<u8>)> {
    let p = format!("/proc/{}/fd/{}", f.pid, f.fd);
    // A new read-side description of the same pipe; O_NONBLOCK so a FIFO without
    // writers does not block the open.
    let rd: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&p)
        .map_err(Error::io("open", &p))?
        .into();
    let size = sysfd::fcntl_int(rd.as_fd(), libc::F_GETPIPE_SZ, 0)
        .map_err(Error::sys("fcntl(F_GETPIPE_SZ)", f.pid))? as u32;
    let queued = sysfd::fionread(rd.as_fd()).map_err(Error::sys("ioctl(FIONREAD)", f.pid))?;
    if queued == 0 {
        return Ok((size, Vec::new()));
    }
    let (tr, tw) = sysfd::pipe2(libc::O_CLOEXEC).map_err(Error::sys("pipe2", 0))?;
    // Same capacity, so the copy has as many slots as the original has buffers.
    if size != DEFAULT_SIZE {
        sysfd::fcntl_int(tw.as_fd(), libc::F_SETPIPE_SZ, size as i32).map_err(|e| {
            f.unsupported(format!(
                "pipe of {size} bytes capacity; cryo cannot make a copy that large ({e})"
            ))
        })?;
    }
    let n = sysfd::tee(rd.as_fd(), tw.as_fd(), queued).map_err(Error::sys("tee", f.pid))?;
    if n != queued {
        return Err(f.unsupported(format!(
            "only {n} of the {queued} bytes queued in the pipe could be copied"
        )));
    }
    drop(tw);
    let mut data = Vec::with_capacity(n);
    std::fs::File::from(tr)
        .read_to_end(&mut data)
        .map_err(Error::io("read", "pipe copy"))?;
    log::debug!(pid = f.pid, fd = f.fd, bytes = data.len(), size = size; "pipe contents");
    Ok((size, data))
}

pub fn dump_pipe(f: &Fd, ino: u64, ids: &mut FileIds) -> Result<u32> {
    ids.pipes.peek_once(f, ino, false)?;
    Ok(ids.add(FileEntry {
        r#type: FdTypes::Pipe as i32,
        pipe: Some(PipeEntry {
            id: 0,
            pipe_id: ino as u32,
            flags: f.flags,
            fown: Default::default(),
        }),
        ..Default::default()
    }))
}

pub fn dump_fifo(f: &Fd, ino: u64, ids: &mut FileIds) -> Result<u32> {
    if f.target.ends_with(" (deleted)") {
        return Err(f.unsupported("a deleted FIFO cannot be reopened"));
    }
    ids.pipes.peek_once(f, ino, true)?;
    let reg = ids.add_reg(f.target, f.flags, 0);
    Ok(ids.add(FileEntry {
        r#type: FdTypes::Fifo as i32,
        fifo: Some(FifoEntry {
            id: 0,
            pipe_id: ino as u32,
            regf_id: Some(reg),
        }),
        ..Default::default()
    }))
}

/// Pipes being recreated by a restore.
#[derive(Debug, Default)]
pub struct Restorer {
    data: HashMap<u32, (PipeDataEntry, Vec<u8>)>,
    fifo_data: HashMap<u32, (PipeDataEntry, Vec<u8>)>,
    /// pipe_id → (read end, write end) not yet handed out.
    fresh: HashMap<u32, (Option<OwnedFd>, Option<OwnedFd>)>,
    /// pipe_id → raw fds of ends already handed out (still open in the Opener), for a
    /// second description of the same end (reopened through /proc).
    given: HashMap<u32, [Option<RawFd>; 2]>,
    /// FIFO pipe_id → read-write holder.
    holders: HashMap<u32, OwnedFd>,
}

fn load_data(
    dir: &ImageDir,
    name: &str,
    kind: Kind,
) -> Result<HashMap<u32, (PipeDataEntry, Vec<u8>)>> {
    let mut out = HashMap::new();
    if !dir.file(name).exists() {
        return Ok(out);
    }
    let mut r = dir.reader(name, kind)?;
    while let Some(e) = r.next_entry::<PipeDataEntry>()? {
        let data = r.read_raw(e.bytes as u64)?;
        out.insert(e.pipe_id, (e, data));
    }
    Ok(out)
}

/// Sets the status flags (O_NONBLOCK, O_DIRECT…) a description had.
fn set_status_flags(fd: &OwnedFd, flags: u32) -> Result<()> {
    let settable = (libc::O_NONBLOCK | libc::O_APPEND | libc::O_DIRECT | libc::O_ASYNC) as u32;
    sysfd::fcntl_int(fd.as_fd(), libc::F_SETFL, (flags & settable) as i32)
        .map_err(Error::sys("fcntl(F_SETFL)", 0))
        .map(drop)
}

/// Writes saved contents into a pipe (fits: at most its capacity, which is set first).
fn fill(w: &OwnedFd, e: &PipeDataEntry, data: &[u8]) -> Result<()> {
    if let Some(size) = e.size.filter(|&s| s != DEFAULT_SIZE) {
        sysfd::fcntl_int(w.as_fd(), libc::F_SETPIPE_SZ, size as i32).map_err(|err| {
            Error::Restore {
                pid: 0,
                msg: format!(
                    "pipe {}: cannot set its capacity to {size}: {err}",
                    e.pipe_id
                ),
            }
        })?;
    }
    let mut off = 0;
    while off < data.len() {
        off += nix::unistd::write(w, &data[off..]).map_err(Error::sys("write(pipe)", 0))?;
    }
    Ok(())
}

impl Restorer {
    pub fn load(dir: &ImageDir) -> Result<Self> {
        Ok(Restorer {
            data: load_data(dir, "pipes-data.img", PIPES_DATA)?,
            fifo_data: load_data(dir, "fifo-data.img", FIFO_DATA)?,
            ..Default::default()
        })
    }

    pub fn open_pipe(&mut self, pe: &PipeEntry) -> Result<OwnedFd> {
        let id = pe.pipe_id;
        if !self.fresh.contains_key(&id) && !self.given.contains_key(&id) {
            let (r, w) = sysfd::pipe2(0).map_err(Error::sys("pipe2", 0))?;
            if let Some((e, data)) = self.data.get(&id) {
                fill(&w, e, data)?;
            }
            self.fresh.insert(id, (Some(r), Some(w)));
        }
        let end = usize::from(pe.flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32);
        let slot = self
            .fresh
            .get_mut(&id)
            .and_then(|(r, w)| if end == 0 { r.take() } else { w.take() });
        let fd = match slot {
            Some(fd) => fd,
            None => {
                let raw =
                    self.given
                        .get(&id)
                        .and_then(|g| g[end])
                        .ok_or_else(|| Error::Restore {
                            pid: 0,
                            msg: format!("pipe {id}: end {end} is gone"),
                        })?;
                let p = format!("/proc/self/fd/{raw}");
                let mut o = std::fs::OpenOptions::new();
                if end == 0 {
                    o.read(true)
                } else {
                    o.write(true)
                };
                o.custom_flags(libc::O_NONBLOCK)
                    .open(&p)
                    .map_err(Error::io("reopen", &p))?
                    .into()
            }
        };
        self.given.entry(id).or_default()[end].get_or_insert(fd.as_raw_fd());
        set_status_flags(&fd, pe.flags)?;
        Ok(fd)
    }

    pub fn open_fifo(&mut self, fifo: &FifoEntry, r: &RegFileEntry) -> Result<OwnedFd> {
        let path = &r.name;
        if is_tty_path(path) {
            return Err(Error::Restore {
                pid: 0,
                msg: format!("{path} is not a FIFO"),
            });
        }
        if !self.holders.contains_key(&fifo.pipe_id) {
            let h: OwnedFd = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
                .map_err(Error::io("open FIFO", path))?
                .into();
            if let Some((e, data)) = self.fifo_data.get(&fifo.pipe_id) {
                fill(&h, e, data)?;
            }
            self.holders.insert(fifo.pipe_id, h);
        }
        let acc = r.flags & libc::O_ACCMODE as u32;
        let fd: OwnedFd = std::fs::OpenOptions::new()
            .read(acc != libc::O_WRONLY as u32)
            .write(acc != libc::O_RDONLY as u32)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(Error::io("open FIFO", path))?
            .into();
        set_status_flags(&fd, r.flags)?;
        Ok(fd)
    }
}
