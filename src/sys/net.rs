//! Socket syscalls: sock_diag netlink queries (shared by the socket kinds) and the
//! AF_UNIX calls the unix-socket dumper and restorer need. Unix addresses are passed as
//! CRIU spells them: the path's bytes, or a NUL followed by an abstract name; empty for
//! an unnamed socket.

use super::check;
use nix::errno::Errno;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::owned_fd as owned;

const SOCK_DIAG_BY_FAMILY: u16 = 20;

/// One sock_diag dump request (`NLM_F_DUMP`): `req` is the family's request struct
/// (e.g. `unix_diag_req`); returns the payload of every reply message.
pub fn sock_diag_dump(req: &[u8]) -> Result<Vec<Vec<u8>>, Errno> {
    // SAFETY: integers only; the result is a new fd we own.
    let sk = owned(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    } as libc::c_long)?;
    let mut msg = Vec::with_capacity(16 + req.len());
    msg.extend_from_slice(&((16 + req.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
    msg.extend_from_slice(req);
    // SAFETY: a zeroed sockaddr_nl is valid; we set the family.
    let mut nl: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    nl.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: `msg` and `nl` are live for the call and their lengths are given.
    let r = unsafe {
        libc::sendto(
            sk.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&nl as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    check(r as libc::c_long)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: `buf` is live and writable for its whole length.
        let n = unsafe { libc::recv(sk.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let n = check(n as libc::c_long)? as usize;
        if n == 0 {
            return Err(Errno::EPROTO);
        }
        let mut off = 0;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap_or_default()) as usize;
            let ty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap_or_default());
            if len < 16 || off + len > n {
                return Err(Errno::EPROTO);
            }
            match ty as i32 {
                libc::NLMSG_DONE => return Ok(out),
                libc::NLMSG_ERROR => {
                    let e = buf
                        .get(off + 16..off + 20)
                        .map(|b| i32::from_ne_bytes(b.try_into().unwrap_or_default()))
                        .unwrap_or(-libc::EPROTO);
                    if e == 0 {
                        return Ok(out);
                    }
                    return Err(Errno::from_raw(-e));
                }
                _ => out.push(buf[off + 16..off + len].to_vec()),
            }
            off += (len + 3) & !3;
        }
    }
}

/// A `sockaddr_un` for `name` (see the module doc) and its length.
fn unix_addr(name: &[u8]) -> Result<(libc::sockaddr_un, libc::socklen_t), Errno> {
    // SAFETY: a zeroed sockaddr_un is valid.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as u16;
    if name.len() >= a.sun_path.len() {
        return Err(Errno::ENAMETOOLONG);
    }
    for (d, s) in a.sun_path.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    let base = std::mem::size_of::<libc::sa_family_t>();
    // A path is NUL-terminated; an abstract name is exactly its bytes.
    let len = if name.first() == Some(&0) {
        base + name.len()
    } else {
        base + name.len() + 1
    };
    Ok((a, len as libc::socklen_t))
}

/// The name in a `sockaddr_un` the kernel filled (`len` bytes of it).
fn unix_name(a: &libc::sockaddr_un, len: libc::socklen_t) -> Vec<u8> {
    let base = std::mem::size_of::<libc::sa_family_t>();
    let n = (len as usize).saturating_sub(base).min(a.sun_path.len());
    let mut v: Vec<u8> = a.sun_path[..n].iter().map(|&c| c as u8).collect();
    if v.first() != Some(&0) {
        while v.last() == Some(&0) {
            v.pop();
        }
    }
    v
}

pub fn socket(domain: i32, ty: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: integers only.
    owned(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, 0) } as libc::c_long)
}

pub fn socketpair(ty: i32) -> Result<(OwnedFd, OwnedFd), Errno> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a live array of two ints the kernel fills.
    let r =
        unsafe { libc::socketpair(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
    check(r as libc::c_long)?;
    // SAFETY: both fds were just returned to us and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub fn unix_bind(fd: BorrowedFd, name: &[u8]) -> Result<(), Errno> {
    let (a, len) = unix_addr(name)?;
    // SAFETY: `a` is a live sockaddr_un of at least `len` bytes.
    let r = unsafe { libc::bind(fd.as_raw_fd(), (&a as *const libc::sockaddr_un).cast(), len) };
    check(r as libc::c_long).map(drop)
}

pub fn unix_connect(fd: BorrowedFd, name: &[u8]) -> Result<(), Errno> {
    let (a, len) = unix_addr(name)?;
    // SAFETY: `a` is a live sockaddr_un of at least `len` bytes.
    let r = unsafe { libc::connect(fd.as_raw_fd(), (&a as *const libc::sockaddr_un).cast(), len) };
    check(r as libc::c_long).map(drop)
}

pub fn listen(fd: BorrowedFd, backlog: i32) -> Result<(), Errno> {
    // SAFETY: integers only.
    check(unsafe { libc::listen(fd.as_raw_fd(), backlog) } as libc::c_long).map(drop)
}

/// `accept4` without waiting (the connection is known to be queued).
pub fn accept(fd: BorrowedFd) -> Result<OwnedFd, Errno> {
    // SAFETY: no address is asked for; the result is a new fd we own.
    owned(unsafe {
        libc::accept4(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        )
    } as libc::c_long)
}

pub fn shutdown(fd: BorrowedFd, how: i32) -> Result<(), Errno> {
    // SAFETY: integers only.
    check(unsafe { libc::shutdown(fd.as_raw_fd(), how) } as libc::c_long).map(drop)
}

/// The unix name of the socket (`peer`: of its peer).
pub fn unix_getname(fd: BorrowedFd, peer: bool) -> Result<Vec<u8>, Errno> {
    // SAFETY: a zeroed sockaddr_un is valid.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    let p = (&mut a as *mut libc::sockaddr_un).cast();
    // SAFETY: `a` and `len` are live; the kernel writes at most `len` bytes.
    let r = unsafe {
        if peer {
            libc::getpeername(fd.as_raw_fd(), p, &mut len)
        } else {
            libc::getsockname(fd.as_raw_fd(), p, &mut len)
        }
    };
    check(r as libc::c_long)?;
    Ok(unix_name(&a, len))
}

pub fn getsockopt_int(fd: BorrowedFd, level: i32, opt: i32) -> Result<i32, Errno> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are live and sized for an int option.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    check(r as libc::c_long).map(|_| v)
}

pub fn setsockopt_int(fd: BorrowedFd, level: i32, opt: i32, v: i32) -> Result<(), Errno> {
    // SAFETY: `v` is a live int and its size is given.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    check(r as libc::c_long).map(drop)
}

/// A `timeval` option (SO_SNDTIMEO, SO_RCVTIMEO) as (sec, usec).
pub fn getsockopt_timeval(fd: BorrowedFd, opt: i32) -> Result<(u64, u64), Errno> {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
    // SAFETY: `tv` and `len` are live and sized for a timeval.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&mut tv as *mut libc::timeval).cast(),
            &mut len,
        )
    };
    check(r as libc::c_long).map(|_| (tv.tv_sec as u64, tv.tv_usec as u64))
}

pub fn setsockopt_timeval(fd: BorrowedFd, opt: i32, sec: u64, usec: u64) -> Result<(), Errno> {
    let tv = libc::timeval {
        tv_sec: sec as libc::time_t,
        tv_usec: usec as libc::suseconds_t,
    };
    // SAFETY: `tv` is a live timeval and its size is given.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    check(r as libc::c_long).map(drop)
}

/// One message read by `recv_peek`.
#[derive(Debug)]
pub struct Peeked {
    /// Bytes copied into the buffer.
    pub len: usize,
    /// The message's full length (datagrams; equal to `len` unless the buffer was short).
    pub full: usize,
    /// The sender's name (datagrams).
    pub from: Vec<u8>,
    /// Descriptors in flight with the message (SCM_RIGHTS), now ours.
    pub fds: Vec<OwnedFd>,
    /// The control data was cut short (more descriptors than room).
    pub ctrunc: bool,
}

const MAX_FDS: usize = 253; // SCM_MAX_FD

/// `recvmsg(MSG_PEEK|MSG_DONTWAIT)`: the next message at the socket's peek offset,
/// without consuming it (`trunc`: MSG_TRUNC, for datagrams' full length).
pub fn recv_peek(fd: BorrowedFd, buf: &mut [u8], trunc: bool) -> Result<Peeked, Errno> {
    // SAFETY: a zeroed sockaddr_un is valid.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    // u64 storage keeps the control buffer aligned for cmsghdr.
    let mut ctl = vec![0u64; (MAX_FDS * 4 + 64) / 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: a zeroed msghdr is valid; its pointers are set below.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_name = (&mut a as *mut libc::sockaddr_un).cast();
    m.msg_namelen = std::mem::size_of::<libc::sockaddr_un>() as u32;
    m.msg_iov = &mut iov;
    m.msg_iovlen = 1;
    m.msg_control = ctl.as_mut_ptr().cast();
    m.msg_controllen = ctl.len() * 8;
    let flags = libc::MSG_PEEK
        | libc::MSG_DONTWAIT
        | libc::MSG_CMSG_CLOEXEC
        | if trunc { libc::MSG_TRUNC } else { 0 };
    // SAFETY: every buffer `m` points to is live and sized as stated.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut m, flags) };
    let n = check(n as libc::c_long)? as usize;
    let mut fds = Vec::new();
    // SAFETY: CMSG_* walk the control buffer the kernel filled, within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&m);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c) as *const RawFd;
                let cnt = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                for i in 0..cnt {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            c = libc::CMSG_NXTHDR(&m, c);
        }
    }
    Ok(Peeked {
        len: n.min(buf.len()),
        full: n,
        from: unix_name(&a, m.msg_namelen),
        fds,
        ctrunc: m.msg_flags & libc::MSG_CTRUNC != 0,
    })
}

/// `sendmsg` of `data` with `fds` attached (SCM_RIGHTS), to `to` if given.
pub fn send_with_fds(
    fd: BorrowedFd,
    data: &[u8],
    fds: &[RawFd],
    to: Option<&[u8]>,
) -> Result<usize, Errno> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut ctl = vec![0u64; (MAX_FDS * 4 + 64) / 8];
    // SAFETY: a zeroed msghdr is valid; its pointers are set below.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_iov = &mut iov;
    m.msg_iovlen = 1;
    let addr = to.map(unix_addr).transpose()?;
    if let Some((a, len)) = &addr {
        m.msg_name = (a as *const libc::sockaddr_un) as *mut libc::c_void;
        m.msg_namelen = *len;
    }
    if !fds.is_empty() {
        if fds.len() > MAX_FDS {
            return Err(Errno::EINVAL);
        }
        m.msg_control = ctl.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE/CMSG_FIRSTHDR/CMSG_DATA address the control buffer, which
        // is large enough for MAX_FDS descriptors; each fd is written within it.
        unsafe {
            m.msg_controllen = libc::CMSG_SPACE((fds.len() * 4) as u32) as usize;
            let c = libc::CMSG_FIRSTHDR(&m);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN((fds.len() * 4) as u32) as usize;
            let d = libc::CMSG_DATA(c) as *mut RawFd;
            for (i, f) in fds.iter().enumerate() {
                d.add(i).write_unaligned(*f);
            }
        }
    }
    // SAFETY: every buffer `m` points to is live for the call.
    let n = unsafe { libc::sendmsg(fd.as_raw_fd(), &m, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    check(n as libc::c_long).map(|n| n as usize)
}
