//! SysV IPC (shm, sem, msg) and POSIX message queue syscalls. Each acts on the IPC
//! namespace of the calling thread.

use super::check;
use nix::errno::Errno;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

/// `MSG_COPY` (include/uapi/linux/msg.h): msgrcv copies message number `msgtyp`.
pub const MSG_COPY: i32 = 0o40000;
/// `SHM_DEST` mode bit: the segment is removed once the last process detaches.
pub const SHM_DEST: u32 = 0o1000;

/// Owner and permissions of an IPC object (`ipc_perm` fields cryo restores).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Perm {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

fn perm_of(p: &libc::ipc_perm) -> Perm {
    Perm {
        uid: p.uid,
        gid: p.gid,
        mode: p.mode as u32,
    }
}

fn set_perm(p: &mut libc::ipc_perm, v: Perm) {
    p.uid = v.uid;
    p.gid = v.gid;
    p.mode = (v.mode & 0o777) as libc::c_ushort;
}

pub fn shmget(key: i32, size: usize, flags: i32) -> Result<i32, Errno> {
    // SAFETY: plain integer arguments.
    check(unsafe { libc::shmget(key, size, flags) } as libc::c_long).map(|v| v as i32)
}

/// `shmctl(IPC_STAT)`: (perm, size).
pub fn shm_stat(id: i32) -> Result<(Perm, u64), Errno> {
    // SAFETY: shmid_ds is plain data; all-zero is a valid value.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: `ds` is a live shmid_ds the kernel fills.
    check(unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) } as libc::c_long)?;
    Ok((perm_of(&ds.shm_perm), ds.shm_segsz as u64))
}

/// `shmctl(IPC_SET)`: owner and mode.
pub fn shm_set(id: i32, p: Perm) -> Result<(), Errno> {
    // SAFETY: shmid_ds is plain data; all-zero is a valid value.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    set_perm(&mut ds.shm_perm, p);
    // SAFETY: `ds` is a live shmid_ds the kernel reads.
    check(unsafe { libc::shmctl(id, libc::IPC_SET, &mut ds) } as libc::c_long).map(drop)
}

/// An fd on segment `id`'s memory: attaches it (read-only unless `write`), opens the
/// attachment through /proc/self/map_files and detaches again. Reads and writes through
/// the fd (pread/pwrite) reach the segment without mapping it, and holes stay holes.
pub fn shm_fd(id: i32, size: u64, write: bool) -> Result<OwnedFd, Errno> {
    let flags = if write { 0 } else { libc::SHM_RDONLY };
    // SAFETY: attaches at an address the kernel chooses; no Rust object refers to it.
    let p = unsafe { libc::shmat(id, std::ptr::null(), flags) };
    if p as isize == -1 {
        return Err(Errno::last());
    }
    let start = p as u64;
    let len = size.max(1).next_multiple_of(4096);
    let path = format!("/proc/self/map_files/{:x}-{:x}", start, start + len);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .open(&path)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)));
    // SAFETY: detaches exactly the attachment made above, which nothing refers to.
    unsafe { libc::shmdt(p) };
    Ok(f?.into())
}

pub fn semget(key: i32, nsems: i32, flags: i32) -> Result<i32, Errno> {
    // SAFETY: plain integer arguments.
    check(unsafe { libc::semget(key, nsems, flags) } as libc::c_long).map(|v| v as i32)
}

/// `struct semid64_ds` of x86_64 (the kernel's and glibc's are the same).
#[repr(C)]
struct SemidDs {
    perm: libc::ipc_perm,
    otime: i64,
    unused1: u64,
    ctime: i64,
    unused2: u64,
    nsems: u64,
    unused3: u64,
    unused4: u64,
}

/// `semctl(IPC_STAT)`: (perm, number of semaphores).
pub fn sem_stat(id: i32) -> Result<(Perm, u32), Errno> {
    // SAFETY: SemidDs is plain data; all-zero is a valid value.
    let mut ds: SemidDs = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT writes one semid64_ds to the pointer passed as semun.buf.
    check(unsafe { libc::semctl(id, 0, libc::IPC_STAT, &mut ds as *mut SemidDs) } as libc::c_long)?;
    Ok((perm_of(&ds.perm), ds.nsems as u32))
}

pub fn sem_set(id: i32, p: Perm) -> Result<(), Errno> {
    // SAFETY: SemidDs is plain data; all-zero is a valid value.
    let mut ds: SemidDs = unsafe { std::mem::zeroed() };
    set_perm(&mut ds.perm, p);
    // SAFETY: IPC_SET reads one semid64_ds from the pointer passed as semun.buf.
    check(unsafe { libc::semctl(id, 0, libc::IPC_SET, &mut ds as *mut SemidDs) } as libc::c_long)
        .map(drop)
}

/// `semctl(GETALL)`: every value of a set of `n` semaphores.
pub fn sem_getall(id: i32, n: u32) -> Result<Vec<u16>, Errno> {
    let mut v = vec![0u16; n as usize];
    // SAFETY: GETALL writes nsems u16 values to semun.array; `v` has `n` = nsems of them
    // (the caller read n from IPC_STAT of this set).
    check(unsafe { libc::semctl(id, 0, libc::GETALL, v.as_mut_ptr()) } as libc::c_long)?;
    Ok(v)
}

/// `semctl(SETALL)`: `v` must have one value per semaphore of the set.
pub fn sem_setall(id: i32, v: &[u16]) -> Result<(), Errno> {
    let (_, n) = sem_stat(id)?;
    if n as usize != v.len() {
        return Err(Errno::EINVAL);
    }
    // SAFETY: SETALL reads nsems u16 values from semun.array; `v` has exactly nsems.
    check(unsafe { libc::semctl(id, 0, libc::SETALL, v.as_ptr()) } as libc::c_long).map(drop)
}

pub fn msgget(key: i32, flags: i32) -> Result<i32, Errno> {
    // SAFETY: plain integer arguments.
    check(unsafe { libc::msgget(key, flags) } as libc::c_long).map(|v| v as i32)
}

/// `msgctl(IPC_STAT)`: (perm, qbytes, qnum).
pub fn msg_stat(id: i32) -> Result<(Perm, u64, u64), Errno> {
    // SAFETY: msqid_ds is plain data; all-zero is a valid value.
    let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: `ds` is a live msqid_ds the kernel fills.
    check(unsafe { libc::msgctl(id, libc::IPC_STAT, &mut ds) } as libc::c_long)?;
    Ok((
        perm_of(&ds.msg_perm),
        ds.msg_qbytes as u64,
        ds.msg_qnum as u64,
    ))
}

/// `msgctl(IPC_SET)`: owner, mode and the queue's byte limit.
pub fn msg_set(id: i32, p: Perm, qbytes: u64) -> Result<(), Errno> {
    // SAFETY: msqid_ds is plain data; all-zero is a valid value.
    let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
    set_perm(&mut ds.msg_perm, p);
    ds.msg_qbytes = qbytes as _;
    // SAFETY: `ds` is a live msqid_ds the kernel reads.
    check(unsafe { libc::msgctl(id, libc::IPC_SET, &mut ds) } as libc::c_long).map(drop)
}

/// Copies message number `n` (0 = oldest) of queue `id` without removing it
/// (`msgrcv(IPC_NOWAIT | MSG_COPY)`); `max` bounds its size. Returns (type, bytes).
pub fn msg_copy(id: i32, n: u64, max: usize) -> Result<(i64, Vec<u8>), Errno> {
    let mut buf = vec![0u8; 8 + max];
    // SAFETY: the kernel writes a long and at most `max` bytes after it into `buf`,
    // which holds 8 + max bytes.
    let r = check(unsafe {
        libc::msgrcv(
            id,
            buf.as_mut_ptr().cast(),
            max,
            n as libc::c_long,
            libc::IPC_NOWAIT | MSG_COPY,
        )
    } as libc::c_long)? as usize;
    let mtype = i64::from_ne_bytes(buf[..8].try_into().unwrap_or_default());
    buf.drain(..8);
    buf.truncate(r);
    Ok((mtype, buf))
}

/// `msgsnd(IPC_NOWAIT)` of one message.
pub fn msg_send(id: i32, mtype: i64, data: &[u8]) -> Result<(), Errno> {
    let mut buf = Vec::with_capacity(8 + data.len());
    buf.extend_from_slice(&mtype.to_ne_bytes());
    buf.extend_from_slice(data);
    // SAFETY: `buf` holds a long and `data.len()` bytes after it, as msgsnd reads.
    check(
        unsafe { libc::msgsnd(id, buf.as_ptr().cast(), data.len(), libc::IPC_NOWAIT) }
            as libc::c_long,
    )
    .map(drop)
}

/// `IPC_RMID` of a segment, set or queue (`kind`: 0 shm, 1 sem, 2 msg).
pub fn rmid(kind: u8, id: i32) -> Result<(), Errno> {
    // SAFETY: IPC_RMID takes no buffer (a null pointer is allowed).
    let r = unsafe {
        match kind {
            0 => libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()),
            1 => libc::semctl(id, 0, libc::IPC_RMID),
            _ => libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()),
        }
    };
    check(r as libc::c_long).map(drop)
}

/// Attributes of a POSIX message queue (`struct mq_attr`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MqAttr {
    pub flags: i64,
    pub maxmsg: i64,
    pub msgsize: i64,
    pub curmsgs: i64,
}

fn to_raw(a: &MqAttr) -> [i64; 8] {
    [a.flags, a.maxmsg, a.msgsize, a.curmsgs, 0, 0, 0, 0]
}

/// `mq_open` (the raw syscall: `name` without the leading '/').
pub fn mq_open(
    name: &std::ffi::CStr,
    flags: i32,
    mode: u32,
    attr: Option<MqAttr>,
) -> Result<OwnedFd, Errno> {
    let raw = attr.as_ref().map(to_raw);
    let ap = raw.as_ref().map_or(std::ptr::null(), |r| r.as_ptr());
    // SAFETY: `name` is NUL-terminated; `ap` is null or a live struct mq_attr.
    super::owned_fd(unsafe { libc::syscall(libc::SYS_mq_open, name.as_ptr(), flags, mode, ap) })
}

pub fn mq_unlink(name: &std::ffi::CStr) -> Result<(), Errno> {
    // SAFETY: `name` is NUL-terminated.
    check(unsafe { libc::syscall(libc::SYS_mq_unlink, name.as_ptr()) }).map(drop)
}

pub fn mq_getattr(fd: BorrowedFd) -> Result<MqAttr, Errno> {
    let mut r = [0i64; 8];
    // SAFETY: `r` is a live struct mq_attr the kernel fills.
    check(unsafe {
        libc::syscall(
            libc::SYS_mq_getsetattr,
            fd.as_raw_fd(),
            std::ptr::null::<i64>(),
            r.as_mut_ptr(),
        )
    })?;
    Ok(MqAttr {
        flags: r[0],
        maxmsg: r[1],
        msgsize: r[2],
        curmsgs: r[3],
    })
}

/// Receives the next message (`msgsize` bounds it); `None` when the queue is empty
/// (the fd must be O_NONBLOCK, or this blocks).
pub fn mq_receive(fd: BorrowedFd, msgsize: usize) -> Result<Option<(u32, Vec<u8>)>, Errno> {
    let mut buf = vec![0u8; msgsize];
    let mut prio: u32 = 0;
    // SAFETY: `buf` holds `msgsize` bytes; `prio` is a live u32; no timeout.
    let r = check(unsafe {
        libc::syscall(
            libc::SYS_mq_timedreceive,
            fd.as_raw_fd(),
            buf.as_mut_ptr(),
            msgsize,
            &mut prio as *mut u32,
            std::ptr::null::<libc::timespec>(),
        )
    });
    match r {
        Ok(n) => {
            buf.truncate(n as usize);
            Ok(Some((prio, buf)))
        }
        Err(Errno::EAGAIN) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn mq_send(fd: BorrowedFd, prio: u32, data: &[u8]) -> Result<(), Errno> {
    // SAFETY: `data` is a live byte slice; no timeout.
    check(unsafe {
        libc::syscall(
            libc::SYS_mq_timedsend,
            fd.as_raw_fd(),
            data.as_ptr(),
            data.len(),
            prio,
            std::ptr::null::<libc::timespec>(),
        )
    })
    .map(drop)
}
