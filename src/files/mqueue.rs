//! POSIX message queues (`mq_open` fds: a file on the mqueue filesystem of the ipc
//! namespace, found by `statfs` type `MQUEUE_MAGIC`).
//!
//! Dump: a queue is read once per tree from a cryo thread that joined the owner's ipc
//! namespace: `mq_open(name, O_RDWR | O_NONBLOCK)` of its own, the status line
//! (`QSIZE: NOTIFY: SIGNO: NOTIFY_PID:`, read with pread) — a registered `mq_notify` is
//! refused —, `fstat` (mode, owner), `mq_getattr` (maxmsg, msgsize). There is no peek
//! for POSIX queues: every message is received and sent back at once, in the order
//! received (highest priority first, FIFO within one), which rebuilds the same queue.
//! The tree is frozen, so none of its processes reads meanwhile; a process outside
//! the tree using the same queue (only possible when the tree shares cryo's ipc
//! namespace) could. CRIU 3.17 has no fd type for queues: files.img gets an `EXT`
//! `file_entry` per open description, and `cryo-mqueue.img` the name, open flags and
//! the queues with their messages.
//!
//! Restore: queues are namespace objects, so they are created (`O_CREAT | O_EXCL`, same
//! attributes, mode, owner, messages in order) by a restorer thread inside the tree's
//! ipc namespace once every process has prepared itself; a queue that already exists
//! (the tree shares the host's namespace and the queue outlived the dump) is used as
//! it is, like a file. Each fd is then opened by its process: an injected `mq_open`
//! (the process is in the right namespace), `dup3` to its number. Processes that shared
//! one open description get one each (flags per fd are kept).

use super::{Fd, FileIds};
use crate::error::{Error, Result};
use crate::image::{ImageDir, Kind};
use crate::sys::ipc as sys;
use cryo_proto::criu::{ExtFileEntry, FdTypes, FileEntry};
use cryo_proto::cryo::{CryoHeadEntry, MqFileEntry, MqImage, MqMessage, MqQueueEntry};
use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt};

const MQUEUE_MAGIC: i64 = 0x1980_0202;
const IMAGE: &str = "cryo-mqueue.img";
const KIND: Kind = Kind {
    name: "cryo-mqueue",
    magic: cryo_proto::magic::CRYO_MQUEUE,
    common: true,
};

/// Whether fd `f` is a POSIX message queue.
pub fn is_mqueue(f: &Fd) -> bool {
    let p = format!("/proc/{}/fd/{}", f.pid, f.fd);
    nix::sys::statfs::statfs(p.as_str()).is_ok_and(|s| s.filesystem_type().0 == MQUEUE_MAGIC)
}

#[derive(Debug, Default)]
pub struct DumpState {
    image: MqImage,
}

impl DumpState {
    pub fn write(&self, dir: &ImageDir) -> Result<()> {
        if self.image.files.is_empty() {
            return Ok(());
        }
        let mut w = dir.writer(IMAGE, KIND)?;
        w.entry(&CryoHeadEntry {
            format_version: crate::dump::CRYO_FORMAT_VERSION,
            cryo_version: Some(env!("CARGO_PKG_VERSION").into()),
        })?;
        w.entry(&self.image)?;
        w.finish()?;
        Ok(())
    }
}

fn cname(name: &str) -> Result<CString> {
    CString::new(name).map_err(|_| Error::Parse {
        path: "mqueue".into(),
        msg: format!("bad queue name {name:?}"),
    })
}

/// Reads queue `name` of the calling thread's ipc namespace, messages put back.
fn read_queue(f: &Fd, name: &str) -> Result<MqQueueEntry> {
    let pid = f.pid;
    let fd = sys::mq_open(&cname(name)?, libc::O_RDWR | libc::O_NONBLOCK, 0, None)
        .map_err(Error::sys("mq_open", pid))?;
    let file = std::fs::File::from(fd);
    let mut status = [0u8; 128];
    let n = file
        .read_at(&mut status, 0)
        .map_err(Error::io("read", format!("mqueue /{name}")))?;
    let status = String::from_utf8_lossy(&status[..n]).into_owned();
    let notify_pid = status
        .split_whitespace()
        .find_map(|w| w.strip_prefix("NOTIFY_PID:"))
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    if notify_pid != 0 {
        return Err(f.unsupported(format!(
            "POSIX message queue /{name} has an mq_notify registration (pid {notify_pid}); not supported"
        )));
    }
    let md = file
        .metadata()
        .map_err(Error::io("fstat", format!("mqueue /{name}")))?;
    let attr = sys::mq_getattr(file.as_fd()).map_err(Error::sys("mq_getattr", pid))?;
    let mut msgs = Vec::new();
    let mut err = None;
    loop {
        match sys::mq_receive(file.as_fd(), attr.msgsize as usize) {
            Ok(Some((prio, data))) => msgs.push(MqMessage { prio, data }),
            Ok(None) => break,
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    // Back at once, in the same order: the queue is as it was.
    for m in &msgs {
        if let Err(e) = sys::mq_send(file.as_fd(), m.prio, &m.data) {
            log::error!(pid = pid, queue = name, err:% = e; "a POSIX queue message could not be put back");
            err.get_or_insert(e);
        }
    }
    if let Some(e) = err {
        return Err(Error::sys("mq_timedreceive/mq_timedsend", pid)(e));
    }
    log::debug!(pid = pid, queue = name, messages = msgs.len(); "POSIX message queue read");
    Ok(MqQueueEntry {
        name: name.to_string(),
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        maxmsg: attr.maxmsg,
        msgsize: attr.msgsize,
        msgs,
    })
}

pub fn dump(f: &Fd, ids: &mut FileIds) -> Result<u32> {
    let name = f
        .target
        .strip_prefix('/')
        .filter(|n| !n.is_empty() && !n.contains('/'))
        .ok_or_else(|| f.unsupported("unexpected POSIX message queue path"))?;
    if name.ends_with(" (deleted)") {
        return Err(
            f.unsupported("POSIX message queue removed (mq_unlink) while open; not supported")
        );
    }
    if !ids.mqueues.image.queues.iter().any(|q| q.name == name) {
        let q = crate::namespaces::in_ns_of(
            f.pid,
            "ipc",
            nix::sched::CloneFlags::CLONE_NEWIPC,
            || read_queue(f, name),
        )?;
        ids.mqueues.image.queues.push(q);
    }
    let id = ids.add(FileEntry {
        r#type: FdTypes::Ext as i32,
        ext: Some(ExtFileEntry::default()),
        ..Default::default()
    });
    if let Some(e) = ids.files.last_mut().and_then(|e| e.ext.as_mut()) {
        e.id = id;
    }
    let flags = f.flags & (libc::O_ACCMODE | libc::O_NONBLOCK) as u32;
    ids.mqueues.image.files.push(MqFileEntry {
        id,
        name: name.to_string(),
        flags,
    });
    Ok(id)
}

/// The queues of a restore and which file ids are queue fds.
#[derive(Debug, Default)]
pub struct Restorer {
    files: HashMap<u32, MqFileEntry>,
    queues: Vec<MqQueueEntry>,
}

impl Restorer {
    pub fn load(dir: &ImageDir) -> Result<Self> {
        if !dir.file(IMAGE).exists() {
            return Ok(Self::default());
        }
        let bad = |msg: String| -> Error {
            crate::image::ImageError::Invalid {
                path: dir.file(IMAGE),
                msg,
            }
            .into()
        };
        let mut r = dir.reader(IMAGE, KIND)?;
        let head: CryoHeadEntry = r.next_entry()?.ok_or_else(|| bad("empty".into()))?;
        if head.format_version > crate::dump::CRYO_FORMAT_VERSION {
            return Err(bad(format!(
                "written by a newer cryo (format {})",
                head.format_version
            )));
        }
        let img: MqImage = r.next_entry()?.ok_or_else(|| bad("no queues".into()))?;
        for q in &img.queues {
            if q.name.is_empty() || q.name.contains('/') || q.maxmsg <= 0 || q.msgsize <= 0 {
                return Err(bad(format!("bad queue {:?}", q.name)));
            }
        }
        for f in &img.files {
            if !img.queues.iter().any(|q| q.name == f.name) {
                return Err(bad(format!("file {}: no queue {:?}", f.id, f.name)));
            }
        }
        Ok(Restorer {
            files: img.files.into_iter().map(|f| (f.id, f)).collect(),
            queues: img.queues,
        })
    }

    /// (name, open flags) if file `id` is a queue fd.
    pub fn file(&self, id: u32) -> Option<(String, u32)> {
        self.files.get(&id).map(|f| (f.name.clone(), f.flags))
    }

    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Creates every queue in the calling thread's ipc namespace; returns the names it
    /// created (a queue that exists already is left as it is).
    pub fn create(&self) -> Result<Vec<String>> {
        let mut made = Vec::new();
        for q in &self.queues {
            let name = cname(&q.name)?;
            let attr = sys::MqAttr {
                maxmsg: q.maxmsg,
                msgsize: q.msgsize,
                ..Default::default()
            };
            let flags = libc::O_RDWR | libc::O_NONBLOCK | libc::O_CREAT | libc::O_EXCL;
            let fd = match sys::mq_open(&name, flags, q.mode & 0o777, Some(attr)) {
                Ok(fd) => fd,
                Err(nix::errno::Errno::EEXIST) => {
                    log::warn!(queue = q.name.as_str(); "POSIX message queue exists already: used as it is");
                    continue;
                }
                Err(e) => return Err(Error::sys("mq_open(O_CREAT)", 0)(e)),
            };
            made.push(q.name.clone());
            for m in &q.msgs {
                sys::mq_send(fd.as_fd(), m.prio, &m.data).map_err(Error::sys("mq_timedsend", 0))?;
            }
            nix::unistd::fchown(
                &fd,
                Some(nix::unistd::Uid::from_raw(q.uid)),
                Some(nix::unistd::Gid::from_raw(q.gid)),
            )
            .map_err(Error::sys("fchown(mqueue)", 0))?;
            nix::sys::stat::fchmod(&fd, nix::sys::stat::Mode::from_bits_truncate(q.mode))
                .map_err(Error::sys("fchmod(mqueue)", 0))?;
            log::debug!(queue = q.name.as_str(), messages = q.msgs.len(); "POSIX message queue created");
        }
        Ok(made)
    }
}

/// Removes queues a failed restore created (in the calling thread's ipc namespace).
pub fn unlink(names: &[String]) {
    for n in names {
        if let Ok(c) = CString::new(n.as_str()) {
            let _ = sys::mq_unlink(&c);
        }
    }
}
