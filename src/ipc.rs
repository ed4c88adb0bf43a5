//! SysV IPC objects of a tree's own ipc namespace (shared memory segments, semaphore
//! sets, message queues) and the processes' attachments of segments; dump and restore.
//!
//! Dump: a short-lived cryo thread that has joined the tree's ipc namespace
//! (`namespaces::in_ns_of`) lists `/proc/sysvipc/{shm,sem,msg}` (they show the reader's
//! namespace) and reads each object: a segment through an fd on its memory (attached
//! read-only for an instant, reopened through /proc/self/map_files, detached: reads see
//! holes as zeros and allocate nothing), a set with `semctl(GETALL)`, a queue with
//! `msgrcv(IPC_NOWAIT | MSG_COPY)` per message (nothing is consumed). Images, in CRIU's
//! layout so crit decodes them: `ipcns-shm-ID.img` (`ipc_shm_entry` + contents inline,
//! padded to 4), `ipcns-sem-ID.img` (`ipc_sem_entry` + u16 values, padded to 8),
//! `ipcns-msg-ID.img` (`ipc_msg_entry` + per message a length-prefixed `ipc_msg` and its
//! bytes, padded to 8). An attachment is a VMA named `/SYSV<key> (deleted)` whose inode
//! number is the segment id: it is kept as `VMA_AREA_SYSVIPC` with `shmid` = segment id
//! and `fdflags` = O_RDONLY when it was attached with SHM_RDONLY (no "mw" VmFlag).
//! Objects of the host's ipc namespace (the tree shares cryo's) are not the tree's:
//! an attachment of one is refused, naming pid, address and key.
//!
//! Restore: after every process of the tree has prepared itself (and before any is
//! rebuilt), a restorer thread joins the restored root's new ipc namespace and creates
//! each object with its id: `/proc/sys/kernel/{shm,sem,msg}_next_id` = the id, then
//! `shmget/semget/msgget(key, IPC_CREAT | IPC_EXCL)`; then contents (pwrite through an
//! fd on the segment, zero pages skipped), values (`SETALL`), messages (`msgsnd` in
//! order), owner and mode (`IPC_SET`); finally the dumped `*_next_id` values again.
//! Each process's attachments are made by an injected `shmat(id, addr, SHM_RDONLY?)`
//! at the dumped address, then `mprotect` per VMA. A segment removed while attached
//! (`SHM_DEST`) is removed again (`IPC_RMID`) once every process is rebuilt.
//! Not restored (as in CRIU): creator uid/gid, times, last pids, SEM_UNDO adjustments.

use crate::error::{Error, Result};
use crate::image::{ImageDir, ImageError, Kind};
use crate::mm::{self, PAGE_SIZE};
use crate::ptrace::Injector;
use crate::sys::ipc as sys;
use cryo_proto::criu::{IpcDescEntry, IpcMsg, IpcMsgEntry, IpcSemEntry, IpcShmEntry, VmaEntry};
use cryo_proto::magic;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;

const SHM: Kind = Kind {
    name: "ipcns-shm",
    magic: magic::IPCNS_SHM_MAGIC,
    common: true,
};
const SEM: Kind = Kind {
    name: "ipcns-sem",
    magic: magic::IPCNS_SEM_MAGIC,
    common: true,
};
const MSG: Kind = Kind {
    name: "ipcns-msg",
    magic: magic::IPCNS_MSG_MAGIC,
    common: true,
};
/// A message queue and its messages (with their bytes).
type Queue<M> = (IpcMsgEntry, Vec<(M, Vec<u8>)>);

/// Copy window for segment contents.
const WINDOW: usize = 4 << 20;

/// The SysV objects of one ipc namespace, as dumped.
#[derive(Debug, Default)]
pub struct Objects {
    /// Each segment with an fd on its memory (read when the images are written).
    shm: Vec<(IpcShmEntry, OwnedFd)>,
    sem: Vec<(IpcSemEntry, Vec<u16>)>,
    msg: Vec<Queue<IpcMsg>>,
}

/// One table of `/proc/sysvipc/KIND`: rows of (column name → value).
fn table(kind: &str) -> Result<Vec<HashMap<String, i64>>> {
    let path = format!("/proc/sysvipc/{kind}");
    let s = std::fs::read_to_string(&path).map_err(Error::io("read", &path))?;
    parse_table(&s).ok_or_else(|| Error::Parse {
        path,
        msg: "unexpected layout".into(),
    })
}

fn parse_table(s: &str) -> Option<Vec<HashMap<String, i64>>> {
    let mut lines = s.lines();
    let head: Vec<&str> = lines.next()?.split_whitespace().collect();
    let mut out = Vec::new();
    for l in lines.filter(|l| !l.trim().is_empty()) {
        let vals: Vec<&str> = l.split_whitespace().collect();
        if vals.len() < head.len() {
            return None;
        }
        let mut row = HashMap::new();
        for (h, v) in head.iter().zip(vals) {
            // "perms" is octal; everything else decimal.
            let n = if *h == "perms" {
                i64::from_str_radix(v, 8).ok()?
            } else {
                v.parse().ok()?
            };
            row.insert(h.to_string(), n);
        }
        out.push(row);
    }
    Some(out)
}

fn col(row: &HashMap<String, i64>, k: &str) -> Result<i64> {
    row.get(k).copied().ok_or_else(|| Error::Parse {
        path: "/proc/sysvipc".into(),
        msg: format!("no column {k}"),
    })
}

fn desc(row: &HashMap<String, i64>, id_col: &str) -> Result<IpcDescEntry> {
    Ok(IpcDescEntry {
        key: col(row, "key")? as u32,
        id: col(row, id_col)? as u32,
        mode: col(row, "perms")? as u32,
        uid: col(row, "uid")? as u32,
        gid: col(row, "gid")? as u32,
        cuid: col(row, "cuid")? as u32,
        cgid: col(row, "cgid")? as u32,
    })
}

/// Reads every SysV object of the calling thread's ipc namespace (run it in a thread
/// that joined the tree's); `msgmax` bounds one message.
pub fn dump_objects(msgmax: usize) -> Result<Objects> {
    let mut o = Objects::default();
    let err = |call| Error::sys(call, 0);
    for row in table("shm")? {
        let d = desc(&row, "shmid")?;
        let size = col(&row, "size")? as u64;
        let fd = sys::shm_fd(d.id as i32, size, false).map_err(err("shmat + open(map_files)"))?;
        log::debug!(id = d.id, key = d.key, size = size; "SysV shm segment");
        o.shm.push((
            IpcShmEntry {
                desc: d,
                size,
                in_pagemaps: None,
                hugetlb_flag: None,
            },
            fd,
        ));
    }
    for row in table("sem")? {
        let d = desc(&row, "semid")?;
        let (_, nsems) = sys::sem_stat(d.id as i32).map_err(err("semctl(IPC_STAT)"))?;
        let vals = sys::sem_getall(d.id as i32, nsems).map_err(err("semctl(GETALL)"))?;
        log::debug!(id = d.id, key = d.key, nsems = nsems; "SysV semaphore set");
        o.sem.push((IpcSemEntry { desc: d, nsems }, vals));
    }
    for row in table("msg")? {
        let d = desc(&row, "msqid")?;
        let id = d.id as i32;
        let (_, qbytes, qnum) = sys::msg_stat(id).map_err(err("msgctl(IPC_STAT)"))?;
        let mut msgs = Vec::with_capacity(qnum as usize);
        for n in 0..qnum {
            let (mtype, data) = sys::msg_copy(id, n, msgmax).map_err(err("msgrcv(MSG_COPY)"))?;
            msgs.push((
                IpcMsg {
                    mtype: mtype as u64,
                    msize: data.len() as u32,
                },
                data,
            ));
        }
        log::debug!(id = d.id, key = d.key, messages = qnum; "SysV message queue");
        o.msg.push((
            IpcMsgEntry {
                desc: d,
                qbytes: qbytes as u32,
                qnum: qnum as u32,
            },
            msgs,
        ));
    }
    Ok(o)
}

impl Objects {
    /// Segment id → (key, size).
    pub fn segments(&self) -> HashMap<u32, (u32, u64)> {
        self.shm
            .iter()
            .map(|(e, _)| (e.desc.id, (e.desc.key, e.size)))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.shm.is_empty() && self.sem.is_empty() && self.msg.is_empty()
    }

    /// Writes the three images of namespace `ns` (CRIU's names and layout).
    pub fn write(&self, dir: &ImageDir, ns: u32) -> Result<()> {
        let mut w = dir.writer(&format!("ipcns-shm-{ns}.img"), SHM)?;
        let mut buf = vec![0u8; WINDOW];
        for (e, fd) in &self.shm {
            w.entry(e)?;
            let f = std::fs::File::from(fd.try_clone().map_err(Error::io("dup", "shm fd"))?);
            let mut off = 0u64;
            while off < e.size {
                let n = ((e.size - off) as usize).min(WINDOW);
                f.read_exact_at(&mut buf[..n], off)
                    .map_err(Error::io("pread", "SysV shm segment"))?;
                w.put(&buf[..n])?;
                off += n as u64;
            }
            w.put(&[0u8; 4][..(e.size.next_multiple_of(4) - e.size) as usize])?;
        }
        w.finish()?;
        let mut w = dir.writer(&format!("ipcns-sem-{ns}.img"), SEM)?;
        for (e, vals) in &self.sem {
            w.entry(e)?;
            let mut b: Vec<u8> = vals.iter().flat_map(|v| v.to_ne_bytes()).collect();
            b.resize(b.len().next_multiple_of(8), 0);
            w.put(&b)?;
        }
        w.finish()?;
        let mut w = dir.writer(&format!("ipcns-msg-{ns}.img"), MSG)?;
        for (e, msgs) in &self.msg {
            w.entry(e)?;
            for (m, data) in msgs {
                w.entry(m)?;
                let mut b = data.clone();
                b.resize(b.len().next_multiple_of(8), 0);
                w.put(&b)?;
            }
        }
        w.finish()?;
        Ok(())
    }
}

/// Groups the SysV attachments of one process (VMAs of `VMA_AREA_SYSVIPC`, in address
/// order) and checks each covers its whole segment: `segments` is the tree's namespace's
/// (id → (key, size)); `None` when the tree shares cryo's ipc namespace. Problems are
/// added to `blockers`.
pub fn check_attachments(
    pid: i32,
    vmas: &[VmaEntry],
    segments: Option<&HashMap<u32, (u32, u64)>>,
    blockers: &mut Vec<String>,
) {
    let host_keys = || -> HashMap<u32, u32> {
        table("shm")
            .unwrap_or_default()
            .iter()
            .filter_map(|r| Some((col(r, "shmid").ok()? as u32, col(r, "key").ok()? as u32)))
            .collect()
    };
    let mut i = 0;
    let att: Vec<&VmaEntry> = vmas
        .iter()
        .filter(|v| v.status & mm::VMA_AREA_SYSVIPC != 0)
        .collect();
    while i < att.len() {
        let first = att[i];
        let id = first.shmid as u32;
        let Some(segments) = segments else {
            let key = host_keys().get(&id).copied().unwrap_or(0);
            blockers.push(format!(
                "pid {pid} mapping {:x}-{:x}: SysV shared memory segment key {key:#010x} (id {id}) of the host's ipc namespace; cryo dumps SysV objects only of a tree's own ipc namespace: run the tree in its own ipc namespace (unshare --ipc)",
                first.start, first.end
            ));
            i += 1;
            continue;
        };
        // Pieces of one attachment: contiguous, same segment, offsets following on.
        let mut end = first.end;
        let mut j = i + 1;
        while j < att.len()
            && att[j].shmid == first.shmid
            && att[j].start == end
            && att[j].pgoff == first.pgoff + (end - first.start)
        {
            end = att[j].end;
            j += 1;
        }
        match segments.get(&id) {
            None => blockers.push(format!(
                "pid {pid} mapping {:x}-{:x}: SysV segment {id} is not in the tree's ipc namespace",
                first.start, end
            )),
            Some(&(key, size)) => {
                if first.pgoff != 0 || end - first.start != size.next_multiple_of(PAGE_SIZE) {
                    blockers.push(format!(
                        "pid {pid} mapping {:x}-{:x}: attachment of SysV segment key {key:#010x} (id {id}) is partly unmapped (only whole attachments are supported)",
                        first.start, end
                    ));
                }
            }
        }
        i = j;
    }
}

/// The SysV objects to create on restore, read and checked from the images.
#[derive(Debug, Default)]
pub struct Restore {
    dir: Option<ImageDir>,
    ns: u32,
    shm: Vec<IpcShmEntry>,
    sem: Vec<(IpcSemEntry, Vec<u16>)>,
    msg: Vec<Queue<i64>>,
    /// The dumped `*_next_id` sysctls, written again once the objects exist.
    next_ids: Vec<(&'static str, u32)>,
}

fn bad(dir: &ImageDir, name: &str, msg: String) -> Error {
    ImageError::Invalid {
        path: dir.file(name),
        msg,
    }
    .into()
}

/// Reads the images of namespace `ns` (absent: none). `next_ids`: (sysctl, value).
pub fn load(dir: &ImageDir, ns: u32, next_ids: Vec<(&'static str, u32)>) -> Result<Restore> {
    let mut r = Restore {
        dir: Some(dir.clone()),
        ns,
        next_ids,
        ..Default::default()
    };
    let name = format!("ipcns-shm-{ns}.img");
    if dir.file(&name).exists() {
        let mut rd = dir.reader(&name, SHM)?;
        while let Some(e) = rd.next_entry::<IpcShmEntry>()? {
            if e.in_pagemaps == Some(true) || e.size == 0 || e.size > 1 << 46 {
                return Err(bad(
                    dir,
                    &name,
                    format!("segment {}: unsupported layout or size", e.desc.id),
                ));
            }
            // Skip (and check) the contents; they are read again when creating it.
            let mut left = e.size.next_multiple_of(4);
            while left > 0 {
                let n = left.min(WINDOW as u64);
                rd.read_raw(n)?;
                left -= n;
            }
            r.shm.push(e);
        }
    }
    let name = format!("ipcns-sem-{ns}.img");
    if dir.file(&name).exists() {
        let mut rd = dir.reader(&name, SEM)?;
        while let Some(e) = rd.next_entry::<IpcSemEntry>()? {
            if e.nsems == 0 || e.nsems > 65536 {
                return Err(bad(
                    dir,
                    &name,
                    format!("set {}: {} semaphores", e.desc.id, e.nsems),
                ));
            }
            let b = rd.read_raw((e.nsems as u64 * 2).next_multiple_of(8))?;
            let vals = b
                .chunks(2)
                .take(e.nsems as usize)
                .map(|c| u16::from_ne_bytes([c[0], c[1]]))
                .collect();
            r.sem.push((e, vals));
        }
    }
    let name = format!("ipcns-msg-{ns}.img");
    if dir.file(&name).exists() {
        let mut rd = dir.reader(&name, MSG)?;
        while let Some(e) = rd.next_entry::<IpcMsgEntry>()? {
            let mut msgs = Vec::new();
            for _ in 0..e.qnum {
                let m: IpcMsg = rd.next_entry()?.ok_or_else(|| {
                    bad(dir, &name, format!("queue {}: messages missing", e.desc.id))
                })?;
                if m.msize > 1 << 24 {
                    return Err(bad(dir, &name, format!("message of {} bytes", m.msize)));
                }
                let mut b = rd.read_raw((m.msize as u64).next_multiple_of(8))?;
                b.truncate(m.msize as usize);
                msgs.push((m.mtype as i64, b));
            }
            r.msg.push((e, msgs));
        }
    }
    Ok(r)
}

fn set_next_id(kind: &str, id: u32) -> Result<()> {
    let path = format!("/proc/sys/kernel/{kind}_next_id");
    std::fs::write(&path, (id as i32).to_string()).map_err(Error::io("write", path))
}

impl Restore {
    /// Creates every object in the calling thread's ipc namespace (the restored tree's),
    /// with its id, contents, values, messages, owner and mode.
    pub fn create(&self) -> Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let fail = |call: &'static str| Error::sys(call, 0);
        let excl = libc::IPC_CREAT | libc::IPC_EXCL;
        let check_id = |what: &str, want: u32, got: i32| -> Result<()> {
            if got as u32 != want {
                return Err(Error::Restore {
                    pid: 0,
                    msg: format!("{what} created with id {got}, wanted {want}"),
                });
            }
            Ok(())
        };
        if !self.shm.is_empty() {
            let name = format!("ipcns-shm-{}.img", self.ns);
            let mut rd = dir.reader(&name, SHM)?;
            for e in &self.shm {
                let _: Option<IpcShmEntry> = rd.next_entry()?;
                let d = &e.desc;
                set_next_id("shm", d.id)?;
                let id = sys::shmget(d.key as i32, e.size as usize, excl | 0o600)
                    .map_err(fail("shmget"))?;
                check_id("SysV shm segment", d.id, id)?;
                let f = std::fs::File::from(
                    sys::shm_fd(id, e.size, true).map_err(fail("shmat + open(map_files)"))?,
                );
                let mut off = 0u64;
                while off < e.size.next_multiple_of(4) {
                    let n = (e.size.next_multiple_of(4) - off).min(WINDOW as u64);
                    let b = rd.read_raw(n)?;
                    for (i, page) in b.chunks(PAGE_SIZE as usize).enumerate() {
                        let at = off + (i as u64) * PAGE_SIZE;
                        let len = (page.len() as u64).min(e.size.saturating_sub(at)) as usize;
                        if len > 0 && !crate::sys::mem::is_zero(page) {
                            f.write_all_at(&page[..len], at)
                                .map_err(Error::io("pwrite", "SysV shm segment"))?;
                        }
                    }
                    off += n;
                }
                sys::shm_set(id, perm(d)).map_err(fail("shmctl(IPC_SET)"))?;
                log::debug!(id = id, key = d.key, size = e.size; "SysV shm segment created");
            }
        }
        for (e, vals) in &self.sem {
            let d = &e.desc;
            set_next_id("sem", d.id)?;
            let id =
                sys::semget(d.key as i32, e.nsems as i32, excl | 0o600).map_err(fail("semget"))?;
            check_id("SysV semaphore set", d.id, id)?;
            sys::sem_setall(id, vals).map_err(fail("semctl(SETALL)"))?;
            sys::sem_set(id, perm(d)).map_err(fail("semctl(IPC_SET)"))?;
        }
        for (e, msgs) in &self.msg {
            let d = &e.desc;
            set_next_id("msg", d.id)?;
            let id = sys::msgget(d.key as i32, excl | 0o600).map_err(fail("msgget"))?;
            check_id("SysV message queue", d.id, id)?;
            let (_, qbytes, _) = sys::msg_stat(id).map_err(fail("msgctl(IPC_STAT)"))?;
            // Raising qbytes above msgmnb needs CAP_SYS_RESOURCE: keep the default then.
            let q = if sys::msg_set(id, perm(d), e.qbytes as u64).is_ok() {
                e.qbytes as u64
            } else {
                log::warn!(id = id, qbytes = e.qbytes; "SysV message queue size limit not restored");
                sys::msg_set(id, perm(d), qbytes).map_err(fail("msgctl(IPC_SET)"))?;
                qbytes
            };
            for (mtype, data) in msgs {
                sys::msg_send(id, *mtype, data).map_err(fail("msgsnd"))?;
            }
            log::debug!(id = id, key = d.key, messages = msgs.len(), qbytes = q; "SysV message queue created");
        }
        for (k, v) in &self.next_ids {
            if *v != u32::MAX {
                set_next_id(k, *v)?;
            }
        }
        Ok(())
    }

    /// Segments that were removed while attached (`SHM_DEST`): removed again once every
    /// process has attached them.
    pub fn remove_destroyed(&self) -> Result<()> {
        for e in self.shm.iter().filter(|e| e.desc.mode & sys::SHM_DEST != 0) {
            sys::rmid(0, e.desc.id as i32).map_err(Error::sys("shmctl(IPC_RMID)", 0))?;
        }
        Ok(())
    }

    pub fn has_destroyed(&self) -> bool {
        self.shm.iter().any(|e| e.desc.mode & sys::SHM_DEST != 0)
    }
}

fn perm(d: &IpcDescEntry) -> sys::Perm {
    sys::Perm {
        uid: d.uid,
        gid: d.gid,
        mode: d.mode & 0o777,
    }
}

/// Maps one SysV VMA of the process being rebuilt: the first piece of an attachment
/// (offset 0) attaches the whole segment at its address with an injected `shmat`; every
/// piece then gets its protection back.
pub fn attach(inj: &Injector, v: &VmaEntry, all: &[VmaEntry]) -> Result<()> {
    let rdonly = v.fdflags == Some(libc::O_RDONLY as u32);
    let attach_prot = if rdonly {
        libc::PROT_READ
    } else {
        libc::PROT_READ | libc::PROT_WRITE
    } as u32;
    if v.pgoff == 0 {
        let base = v.start;
        // Any executable piece of this attachment needs SHM_EXEC.
        let exec = all.iter().any(|w| {
            w.status & mm::VMA_AREA_SYSVIPC != 0
                && w.shmid == v.shmid
                && w.start >= base
                && w.start - base == w.pgoff
                && w.prot & libc::PROT_EXEC as u32 != 0
        });
        let mut flags = if rdonly { libc::SHM_RDONLY } else { 0 } as u64;
        if exec {
            flags |= 0o100000; // SHM_EXEC
        }
        let got = inj.call("shmat", libc::SYS_shmat, &[v.shmid, base, flags])?;
        if got != base {
            return Err(Error::Restore {
                pid: inj.pid.as_raw(),
                msg: format!(
                    "shmat of SysV segment {} landed at {got:x}, wanted {base:x}",
                    v.shmid
                ),
            });
        }
    }
    if v.prot != attach_prot {
        inj.call(
            "mprotect",
            libc::SYS_mprotect,
            &[v.start, v.end - v.start, v.prot as u64],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysvipc_tables() {
        let shm = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap\n        -1          3  1600                 8192   100   100      1     0     0     0     0          0          0          0                  4096                     0\n";
        let t = parse_table(shm).unwrap();
        assert_eq!(t.len(), 1);
        let d = desc(&t[0], "shmid").unwrap();
        assert_eq!((d.key, d.id, d.mode), (u32::MAX, 3, 0o1600));
        assert_eq!(col(&t[0], "size").unwrap(), 8192);
        assert!(parse_table("key id\n1\n").is_none());
        assert_eq!(parse_table("key id\n").unwrap().len(), 0);
    }
}
