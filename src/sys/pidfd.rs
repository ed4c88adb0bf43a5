//! pidfds: a stable handle on a process, and copies of its file descriptors.

use super::owned_fd;
use nix::errno::Errno;
use nix::unistd::Pid;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

pub fn pidfd_open(pid: Pid) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open takes two integers and returns a new fd we take ownership of.
    owned_fd(unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) })
}

/// Our own copy of the target's fd `target_fd` (like dup across processes).
pub fn pidfd_getfd(pidfd: BorrowedFd, target_fd: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: integers only; the result is a new fd we take ownership of.
    owned_fd(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target_fd, 0) })
}
