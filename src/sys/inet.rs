//! Socket syscalls for TCP/UDP sockets (`files::inet`): options as raw bytes or ints,
//! addresses as `std::net::SocketAddr`, bind/connect/listen, send/recv, queue ioctls.
//! Self-contained (the unix-socket code has its own wrappers).

use super::check;
pub use super::net::{getsockopt_int, listen, setsockopt_int};
use nix::errno::Errno;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

// <linux/tcp.h>; defined here so older libc headers do not matter.
pub const TCP_INFO: i32 = 11;
pub const TCP_REPAIR: i32 = 19;
pub const TCP_REPAIR_QUEUE: i32 = 20;
pub const TCP_QUEUE_SEQ: i32 = 21;
pub const TCP_REPAIR_OPTIONS: i32 = 22;
pub const TCP_TIMESTAMP: i32 = 24;
pub const TCP_REPAIR_WINDOW: i32 = 29;
pub const TCP_NO_QUEUE: i32 = 0;
pub const TCP_RECV_QUEUE: i32 = 1;
pub const TCP_SEND_QUEUE: i32 = 2;
pub const TCP_REPAIR_ON: i32 = 1;
pub const TCP_REPAIR_OFF: i32 = 0;
/// Leaves repair mode without sending a window probe.
pub const TCP_REPAIR_OFF_NO_WP: i32 = -1;
// <linux/sockios.h>
pub const SIOCINQ: u64 = 0x541B;
pub const SIOCOUTQ: u64 = 0x5411;
pub const SIOCOUTQNSD: u64 = 0x894B;
/// `SO_BUF_LOCK` (Linux 5.14): which of SO_SNDBUF/SO_RCVBUF the user fixed.
pub const SO_BUF_LOCK: i32 = 72;

/// `struct tcp_repair_window`.
#[derive(Debug, Default, Clone, Copy)]
pub struct RepairWindow {
    pub snd_wl1: u32,
    pub snd_wnd: u32,
    pub max_window: u32,
    pub rcv_wnd: u32,
    pub rcv_wup: u32,
}

impl RepairWindow {
    fn to_bytes(self) -> [u8; 20] {
        let mut b = [0u8; 20];
        for (i, v) in [
            self.snd_wl1,
            self.snd_wnd,
            self.max_window,
            self.rcv_wnd,
            self.rcv_wup,
        ]
        .iter()
        .enumerate()
        {
            b[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
        }
        b
    }
}

pub fn socket(domain: i32, ty: i32, proto: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: integers only; the returned fd is ours.
    super::owned_fd(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) } as libc::c_long)
}

/// `getsockopt` into `buf`; returns the length the kernel wrote.
pub fn getsockopt_raw(
    fd: BorrowedFd,
    level: i32,
    opt: i32,
    buf: &mut [u8],
) -> Result<usize, Errno> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `buf` is live and `len` bytes long; the kernel writes at most `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    check(r as libc::c_long)?;
    Ok(len as usize)
}

pub fn setsockopt_raw(fd: BorrowedFd, level: i32, opt: i32, val: &[u8]) -> Result<(), Errno> {
    // SAFETY: the kernel reads `val.len()` bytes from a live slice.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            val.as_ptr().cast(),
            val.len() as libc::socklen_t,
        )
    };
    check(r as libc::c_long).map(drop)
}

pub fn set_repair_window(fd: BorrowedFd, w: RepairWindow) -> Result<(), Errno> {
    setsockopt_raw(fd, libc::SOL_TCP, TCP_REPAIR_WINDOW, &w.to_bytes())
}

pub fn get_repair_window(fd: BorrowedFd) -> Result<RepairWindow, Errno> {
    let mut b = [0u8; 20];
    getsockopt_raw(fd, libc::SOL_TCP, TCP_REPAIR_WINDOW, &mut b)?;
    let w = |i: usize| u32::from_ne_bytes(b[i * 4..i * 4 + 4].try_into().unwrap_or_default());
    Ok(RepairWindow {
        snd_wl1: w(0),
        snd_wnd: w(1),
        max_window: w(2),
        rcv_wnd: w(3),
        rcv_wup: w(4),
    })
}

/// `TCP_REPAIR_OPTIONS` with (code, value) pairs (`struct tcp_repair_opt`).
pub fn set_repair_options(fd: BorrowedFd, opts: &[(u32, u32)]) -> Result<(), Errno> {
    let b: Vec<u8> = opts
        .iter()
        .flat_map(|&(c, v)| c.to_ne_bytes().into_iter().chain(v.to_ne_bytes()))
        .collect();
    setsockopt_raw(fd, libc::SOL_TCP, TCP_REPAIR_OPTIONS, &b)
}

/// The parts of `struct tcp_info` cryo uses.
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpInfo {
    pub state: u8,
    pub options: u8,
    pub snd_wscale: u8,
    pub rcv_wscale: u8,
    /// Listening sockets: connections waiting in the accept queue.
    pub unacked: u32,
    /// Listening sockets: the backlog given to listen().
    pub sacked: u32,
}

pub fn tcp_info(fd: BorrowedFd) -> Result<TcpInfo, Errno> {
    let mut b = [0u8; 256];
    let n = getsockopt_raw(fd, libc::SOL_TCP, TCP_INFO, &mut b)?;
    if n < 32 {
        return Err(Errno::EINVAL);
    }
    let u = |i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().unwrap_or_default());
    Ok(TcpInfo {
        state: b[0],
        options: b[5],
        snd_wscale: b[6] & 0xf,
        rcv_wscale: b[6] >> 4,
        unacked: u(24),
        sacked: u(28),
    })
}

fn from_storage(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large
            // enough for and aligned for.
            let sin =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let s6 =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(s6.sin6_addr.s6_addr),
                u16::from_be(s6.sin6_port),
                s6.sin6_flowinfo,
                s6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn to_storage(a: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in.
            let sin = unsafe {
                &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: as above, for sockaddr_in6.
            let s6 = unsafe {
                &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            s6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            s6.sin6_port = v6.port().to_be();
            s6.sin6_addr.s6_addr = v6.ip().octets();
            s6.sin6_flowinfo = v6.flowinfo();
            s6.sin6_scope_id = v6.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

type NameFn = unsafe extern "C" fn(i32, *mut libc::sockaddr, *mut libc::socklen_t) -> i32;

fn name(fd: BorrowedFd, f: NameFn) -> Result<Option<SocketAddr>, Errno> {
    // SAFETY: plain old data; zeroes are valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `ss` is a live sockaddr_storage of `len` bytes.
    let r = unsafe {
        f(
            fd.as_raw_fd(),
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    match check(r as libc::c_long) {
        Ok(_) => Ok(from_storage(&ss)),
        Err(Errno::ENOTCONN) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `getsockname`.
pub fn local_addr(fd: BorrowedFd) -> Result<Option<SocketAddr>, Errno> {
    name(fd, libc::getsockname)
}

/// `getpeername`; `None` if not connected.
pub fn peer_addr(fd: BorrowedFd) -> Result<Option<SocketAddr>, Errno> {
    name(fd, libc::getpeername)
}

pub fn bind(fd: BorrowedFd, a: &SocketAddr) -> Result<(), Errno> {
    let (ss, len) = to_storage(a);
    // SAFETY: `ss` holds a valid sockaddr of `len` bytes.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    check(r as libc::c_long).map(drop)
}

pub fn connect(fd: BorrowedFd, a: &SocketAddr) -> Result<(), Errno> {
    let (ss, len) = to_storage(a);
    // SAFETY: `ss` holds a valid sockaddr of `len` bytes.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    check(r as libc::c_long).map(drop)
}

pub fn shutdown(fd: BorrowedFd, how: i32) -> Result<(), Errno> {
    // SAFETY: integers only.
    check(unsafe { libc::shutdown(fd.as_raw_fd(), how) } as libc::c_long).map(drop)
}

pub fn send(fd: BorrowedFd, buf: &[u8], flags: i32) -> Result<usize, Errno> {
    // SAFETY: the kernel reads `buf.len()` bytes from a live slice.
    let r = unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), flags) };
    check(r as libc::c_long).map(|n| n as usize)
}

pub fn recv(fd: BorrowedFd, buf: &mut [u8], flags: i32) -> Result<usize, Errno> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into a live slice.
    let r = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
    check(r as libc::c_long).map(|n| n as usize)
}

/// An ioctl returning an int through its pointer (SIOCINQ, SIOCOUTQ, SIOCOUTQNSD).
pub fn ioctl_int(fd: BorrowedFd, req: u64) -> Result<i32, Errno> {
    let mut v: libc::c_int = 0;
    // SAFETY: these ioctls write one int to the pointer.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, &mut v as *mut libc::c_int) };
    check(r as libc::c_long)?;
    Ok(v)
}

/// `sendto` (a raw socket's packet to `a`, or a datagram).
pub fn send_to(fd: BorrowedFd, buf: &[u8], flags: i32, a: &SocketAddr) -> Result<usize, Errno> {
    let (ss, len) = to_storage(a);
    // SAFETY: the kernel reads `buf.len()` bytes from a live slice and a valid sockaddr
    // of `len` bytes.
    let r = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            flags,
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    check(r as libc::c_long).map(|n| n as usize)
}

/// A datagram peeked (`MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT`) at the socket's peek
/// offset: the bytes copied, the datagram's full length and its sender.
pub fn peek_from(
    fd: BorrowedFd,
    buf: &mut [u8],
) -> Result<(usize, usize, Option<SocketAddr>), Errno> {
    // SAFETY: plain old data; zeroes are valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `buf.len()` bytes into a live slice and at most
    // `len` bytes of address into `ss`.
    let r = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_TRUNC | libc::MSG_DONTWAIT,
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    let full = check(r as libc::c_long)? as usize;
    Ok((full.min(buf.len()), full, from_storage(&ss)))
}
