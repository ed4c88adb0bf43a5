//! File-descriptor syscalls the fd kinds need (pipes, eventfd, signalfd, timerfd, memfd,
//! epoll, inotify). Raw and async-signal-safe where `child_main` calls them.

use super::check;
use nix::errno::Errno;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::owned_fd as owned;

/// `tee(2)`: copies up to `len` bytes from pipe `from` into pipe `to` without consuming
/// them, so the dumper can read a pipe's contents and leave them in place.
pub fn tee(from: BorrowedFd, to: BorrowedFd, len: usize) -> Result<usize, Errno> {
    // SAFETY: integers only.
    let r = unsafe {
        libc::tee(
            from.as_raw_fd(),
            to.as_raw_fd(),
            len,
            libc::SPLICE_F_NONBLOCK,
        )
    };
    check(r as libc::c_long).map(|n| n as usize)
}

/// `fcntl(fd, cmd, arg)` for the integer commands (F_GETPIPE_SZ, F_SETPIPE_SZ,
/// F_GET_SEALS, F_ADD_SEALS, F_GETFL, F_SETFL).
pub fn fcntl_int(fd: BorrowedFd, cmd: i32, arg: i32) -> Result<i32, Errno> {
    // SAFETY: the commands used take an int argument and return an int.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), cmd, arg) };
    check(r as libc::c_long).map(|n| n as i32)
}

pub fn pipe2(flags: i32) -> Result<(OwnedFd, OwnedFd), Errno> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a live array of two ints the kernel fills.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), flags) } as libc::c_long)?;
    // SAFETY: both fds were just returned to us and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub fn eventfd(initval: u32, flags: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: integers only.
    owned(unsafe { libc::eventfd(initval, flags) } as libc::c_long)
}

/// A new signalfd for the signals in `mask` (bit n-1 = signal n).
pub fn signalfd(mask: u64, flags: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: the kernel reads `size` (8) bytes of the mask we pass.
    owned(unsafe { libc::syscall(libc::SYS_signalfd4, -1, &mask as *const u64, 8usize, flags) })
}

pub fn timerfd_create(clockid: i32, flags: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: integers only.
    owned(unsafe { libc::timerfd_create(clockid, flags) } as libc::c_long)
}

/// `timerfd_settime` with (value, interval) as (sec, nsec) pairs.
pub fn timerfd_settime(
    fd: BorrowedFd,
    flags: i32,
    value: (i64, i64),
    interval: (i64, i64),
) -> Result<(), Errno> {
    let its = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: interval.0,
            tv_nsec: interval.1,
        },
        it_value: libc::timespec {
            tv_sec: value.0,
            tv_nsec: value.1,
        },
    };
    // SAFETY: `its` is a live itimerspec; no old value is asked for.
    let r = unsafe { libc::timerfd_settime(fd.as_raw_fd(), flags, &its, std::ptr::null_mut()) };
    check(r as libc::c_long).map(drop)
}

/// `TFD_IOC_SET_TICKS`: the expirations a timerfd has counted but nobody has read.
pub fn timerfd_set_ticks(fd: BorrowedFd, ticks: u64) -> Result<(), Errno> {
    const TFD_IOC_SET_TICKS: u64 = super::mem::ioc(1, b'T', 0, 8);
    // SAFETY: the ioctl reads one u64 from the pointer.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), TFD_IOC_SET_TICKS as _, &ticks as *const u64) };
    check(r as libc::c_long).map(drop)
}

pub fn memfd_create(name: &std::ffi::CStr, flags: u32) -> Result<OwnedFd, Errno> {
    // SAFETY: `name` is a NUL-terminated string that outlives the call.
    owned(unsafe { libc::syscall(libc::SYS_memfd_create, name.as_ptr(), flags) })
}

pub fn epoll_create(flags: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: integers only.
    owned(unsafe { libc::epoll_create1(flags) } as libc::c_long)
}

/// `epoll_ctl(EPOLL_CTL_ADD)`; raw fds because the restored process registers its own
/// fd numbers (the kernel keys an epoll item on the fd number too).
pub fn epoll_add(epfd: RawFd, fd: RawFd, events: u32, data: u64) -> Result<(), Errno> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: `ev` is a live epoll_event; the fds are integers to the kernel.
    let r = unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) };
    check(r as libc::c_long).map(drop)
}

pub fn inotify_init(flags: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: integers only.
    owned(unsafe { libc::inotify_init1(flags) } as libc::c_long)
}

pub fn inotify_add_watch(fd: BorrowedFd, path: &std::ffi::CStr, mask: u32) -> Result<i32, Errno> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    let r = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) };
    check(r as libc::c_long).map(|n| n as i32)
}

pub fn inotify_rm_watch(fd: BorrowedFd, wd: i32) -> Result<(), Errno> {
    // SAFETY: integers only.
    let r = unsafe { libc::inotify_rm_watch(fd.as_raw_fd(), wd) };
    check(r as libc::c_long).map(drop)
}

/// `open_by_handle_at(AT_FDCWD… mount_fd, handle)`: opens the file an inotify watch is on
/// (fdinfo gives its handle); needs CAP_DAC_READ_SEARCH.
pub fn open_by_handle(mount_fd: BorrowedFd, htype: i32, handle: &[u8]) -> Result<OwnedFd, Errno> {
    let mut buf = Vec::with_capacity(8 + handle.len());
    buf.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
    buf.extend_from_slice(&htype.to_ne_bytes());
    buf.extend_from_slice(handle);
    // SAFETY: `buf` is a struct file_handle (u32 size, i32 type, bytes) that outlives
    // the call.
    owned(unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount_fd.as_raw_fd(),
            buf.as_ptr(),
            libc::O_PATH,
        )
    })
}

/// `ioctl(FIONREAD)`: bytes waiting to be read (pipes).
pub fn fionread(fd: BorrowedFd) -> Result<usize, Errno> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to the pointer.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n as *mut libc::c_int) };
    check(r as libc::c_long).map(|_| n as usize)
}

/// `getsockopt(SO_DOMAIN)`: the address family of a socket.
pub fn socket_domain(fd: BorrowedFd) -> Result<i32, Errno> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are live and sized for an int option.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            &mut v as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    check(r as libc::c_long).map(|_| v)
}

/// `flock(fd, op | LOCK_NB)`.
pub fn flock(fd: RawFd, op: i32) -> Result<(), Errno> {
    // SAFETY: integers only.
    check(unsafe { libc::flock(fd, op | libc::LOCK_NB) } as libc::c_long).map(drop)
}

/// `fcntl(fd, F_SETLK or F_OFD_SETLK, {typ, SEEK_SET, start, len})` (non-blocking).
pub fn set_lock(fd: RawFd, cmd: i32, typ: i32, start: i64, len: i64) -> Result<(), Errno> {
    // SAFETY: an all-zero struct flock is valid; the fields are set below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = typ as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start;
    fl.l_len = len;
    // SAFETY: `fl` is a live struct flock for the duration of the call.
    check(unsafe { libc::fcntl(fd, cmd, &fl as *const libc::flock) } as libc::c_long).map(drop)
}

/// An ioctl that reads or writes one int through a pointer (TIOCGPTN, TIOCSPTLCK,
/// TIOCGPKT, TIOCPKT, TIOCGEXCL, TIOCGSID, TIOCGPGRP, TIOCSPGRP…).
pub fn ioctl_int(fd: BorrowedFd, req: libc::Ioctl, val: i32) -> Result<i32, Errno> {
    let mut v: libc::c_int = val;
    // SAFETY: the requests used read or write exactly one int at the pointer.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, &mut v as *mut libc::c_int) };
    check(r as libc::c_long).map(|_| v)
}

/// `ioctl(fd, req, 0)` for requests that take no pointer (TIOCEXCL, TIOCSCTTY).
pub fn ioctl_none(fd: BorrowedFd, req: libc::Ioctl) -> Result<(), Errno> {
    // SAFETY: these requests take an integer argument, not a pointer.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, 0) };
    check(r as libc::c_long).map(drop)
}

/// `TIOCGWINSZ` / `TIOCSWINSZ`.
pub fn get_winsize(fd: BorrowedFd) -> Result<libc::winsize, Errno> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one struct winsize to the pointer.
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TIOCGWINSZ,
            &mut ws as *mut libc::winsize,
        )
    };
    check(r as libc::c_long).map(|_| ws)
}

pub fn set_winsize(fd: BorrowedFd, ws: &libc::winsize) -> Result<(), Errno> {
    // SAFETY: TIOCSWINSZ reads one struct winsize from the pointer.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, ws as *const libc::winsize) };
    check(r as libc::c_long).map(drop)
}

/// `ioctl(fd, TIOCSCTTY, 0)`: the calling session leader takes the terminal `fd` as its
/// controlling terminal (raw fd: runs in the restore child).
pub fn set_ctty(fd: RawFd) -> Result<(), Errno> {
    // SAFETY: TIOCSCTTY takes an integer argument; `fd` is an integer to the kernel.
    check(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) } as libc::c_long).map(drop)
}

/// An all-zero `termios`, to be filled field by field.
pub fn zeroed_termios() -> libc::termios {
    // SAFETY: termios is plain integers and arrays; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}
