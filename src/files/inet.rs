//! TCP and UDP sockets (IPv4 and IPv6).
//!
//! Dump: each socket's kind, state, addresses and options come from cryo's own copy of
//! the fd (`pidfd_getfd`): getsockopt, getsockname/getpeername, `TCP_INFO` (state; for
//! a listener, the accept queue and backlog). Listening, unconnected and UDP sockets are
//! plain `inet_sk_entry`s in files.img. An established TCP connection is refused unless
//! `--tcp-established`; then, once the whole tree is known to be dumpable
//! (`DumpState::read_streams`, called after the blockers check), it is put in repair
//! mode (`TCP_REPAIR`) and its sequence numbers, queues (peeked, left in place),
//! options and window are read into `tcp-stream-<ino>.img`, as CRIU does. The repair
//! mode is left again if the dump fails or the tree runs on (`--leave-running`); when
//! the tree is killed the sockets stay in repair mode until closed, so their close is
//! silent (no FIN, no RST: a peer outside the tree keeps its connection).
//!
//! Restore: listeners are bound (with SO_REUSEADDR during bind, so they can share the
//! port with restored connections) and listen again; UDP sockets are bound and
//! connected. An established connection is rebuilt in repair mode: bind to its local
//! address, queue sequence numbers, connect (no SYN in repair mode), TCP options and
//! timestamp, receive queue and the sent-but-unacked part of the send queue, window.
//! It leaves repair mode only when every socket of the tree exists
//! (`Pending::finish`, called by the restorer before any process runs), so a window
//! probe or the not-yet-sent part of the send queue (written then, as an ordinary
//! send) never reaches a peer that is not there yet. With `--tcp-close` the connection
//! comes back as a socket that is shut down: reads see EOF, writes fail.
//!
//! Half-closed connections (FIN_WAIT1/2, CLOSE_WAIT, LAST_ACK, CLOSING) are dumped like
//! established ones (their FINs left out of the queue lengths, as in CRIU), rebuilt as
//! ESTABLISHED, and their FINs replayed by `Pending::finish`: the peer's as a raw
//! FIN|ACK packet, ours by shutdown(SHUT_WR). UDP datagrams not yet read are peeked
//! into sk-queues.img with their senders and sent again as raw packets from the
//! sender's address.
//!
//! Not handled (refused at dump): TCP sockets in SYN_SENT, SYN_RECV, TIME_WAIT,
//! listeners with connections not yet accepted, raw/SCTP sockets, a zero-length
//! datagram at the head of a UDP queue. No network lock: a packet a peer outside the
//! tree sends while the process is checkpointed is lost.

use super::{Fd, FileIds, Opener};
use crate::error::{Error, Result};
use crate::image::{ImageDir, Kind};
use crate::sys::inet as net;
use cryo_proto::criu::{
    FdTypes, FileEntry, InetSkEntry, IpOptsEntry, SkOptsEntry, SkPacketEntry, TcpOptsEntry,
    TcpStreamEntry,
};
use cryo_proto::magic;
use nix::errno::Errno;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

const TCP_STREAM: Kind = Kind {
    name: "tcp-stream",
    magic: magic::TCP_STREAM_MAGIC,
    common: true,
};

// <netinet/tcp.h> states.
const TCP_ESTABLISHED: u32 = 1;
const TCP_FIN_WAIT1: u32 = 4;
const TCP_FIN_WAIT2: u32 = 5;
const TCP_CLOSE: u32 = 7;
const TCP_CLOSE_WAIT: u32 = 8;
const TCP_LAST_ACK: u32 = 9;
const TCP_LISTEN: u32 = 10;
const TCP_CLOSING: u32 = 11;
const STATE_NAMES: [&str; 13] = [
    "?",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
];
// tcpi_options bits.
const TCPI_OPT_TIMESTAMPS: u32 = 1;
const TCPI_OPT_SACK: u32 = 2;
const TCPI_OPT_WSCALE: u32 = 4;
// TCP option codes for TCP_REPAIR_OPTIONS.
const TCPOPT_MAXSEG: u32 = 2;
const TCPOPT_WINDOW: u32 = 3;
const TCPOPT_SACK_PERM: u32 = 4;
const TCPOPT_TIMESTAMP: u32 = 8;

/// A connection cryo dumps with its stream: established or half-closed.
fn is_stream(state: u32) -> bool {
    matches!(
        state,
        TCP_ESTABLISHED
            | TCP_FIN_WAIT1
            | TCP_FIN_WAIT2
            | TCP_CLOSE_WAIT
            | TCP_LAST_ACK
            | TCP_CLOSING
    )
}

/// This end sent its FIN (it takes one sequence number of the send queue).
fn fin_sent(state: u32) -> bool {
    matches!(
        state,
        TCP_FIN_WAIT1 | TCP_FIN_WAIT2 | TCP_LAST_ACK | TCP_CLOSING
    )
}

/// The peer's FIN arrived (it takes one sequence number of the receive queue).
fn fin_received(state: u32) -> bool {
    matches!(state, TCP_CLOSE_WAIT | TCP_LAST_ACK | TCP_CLOSING)
}

fn stream_name(ino: u32) -> String {
    format!("tcp-stream-{ino}.img")
}

fn state_name(s: u32) -> &'static str {
    STATE_NAMES.get(s as usize).copied().unwrap_or("?")
}

/// Addresses as CRIU stores them: the address bytes as native-endian u32 words.
fn addr_words(a: &SocketAddr) -> Vec<u32> {
    let bytes: Vec<u8> = match a.ip() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    bytes
        .chunks(4)
        .map(|c| u32::from_ne_bytes(c.try_into().unwrap_or_default()))
        .collect()
}

fn words_addr(family: u32, words: &[u32], port: u32) -> Option<SocketAddr> {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let port = u16::try_from(port).ok()?;
    match family as i32 {
        libc::AF_INET => {
            let b: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(b), port)))
        }
        libc::AF_INET6 => {
            let b: [u8; 16] = bytes.get(..16)?.try_into().ok()?;
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(b),
                port,
                0,
                0,
            )))
        }
        _ => None,
    }
}

/// An established connection being dumped: cryo's copy of the socket and, once read,
/// its stream state.
#[derive(Debug)]
struct Stream {
    pid: i32,
    ino: u32,
    /// The TCP state seen when the fd was dumped (in files.img).
    state: u32,
    sk: OwnedFd,
    /// "127.0.0.1:6379 <-> 127.0.0.1:40000", for messages.
    desc: String,
    /// SO_REUSEADDR as it was (leaving repair mode clears it).
    reuseaddr: bool,
    in_repair: bool,
    entry: TcpStreamEntry,
    inq: Vec<u8>,
    outq: Vec<u8>,
}

impl Stream {
    fn sys(&self, call: &'static str) -> impl FnOnce(Errno) -> Error {
        let pid = self.pid;
        move |source| Error::Sys { call, pid, source }
    }

    /// Leaves repair mode (the connection works on) and puts SO_REUSEADDR back.
    fn leave_repair(&mut self) {
        if !self.in_repair {
            return;
        }
        let sk = self.sk.as_fd();
        let _ = net::setsockopt_int(sk, libc::SOL_TCP, net::TCP_REPAIR_QUEUE, net::TCP_NO_QUEUE);
        match net::setsockopt_int(sk, libc::SOL_TCP, net::TCP_REPAIR, net::TCP_REPAIR_OFF) {
            Ok(()) => self.in_repair = false,
            Err(e) => {
                log::warn!(pid = self.pid, conn = self.desc.as_str(), err:% = e; "cannot leave TCP repair mode")
            }
        }
        if self.reuseaddr {
            let _ = net::setsockopt_int(sk, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
        }
        log::debug!(pid = self.pid, conn = self.desc.as_str(); "TCP repair mode left");
    }

    /// Repair mode on, then everything needed to rebuild the connection.
    fn read(&mut self) -> Result<()> {
        let sk = self.sk.as_fd();
        net::setsockopt_int(sk, libc::SOL_TCP, net::TCP_REPAIR, net::TCP_REPAIR_ON)
            .map_err(self.sys("setsockopt(TCP_REPAIR)"))?;
        self.in_repair = true;
        let ti = net::tcp_info(sk).map_err(self.sys("getsockopt(TCP_INFO)"))?;
        if u32::from(ti.state) != self.state {
            return Err(Error::Unsupported {
                pid: self.pid,
                what: format!("TCP connection {}", self.desc),
                why: format!(
                    "it went from state {} to {} during the dump; retry",
                    state_name(self.state),
                    state_name(ti.state.into())
                ),
            });
        }
        // SIOCINQ already leaves a received FIN out.
        let inq_len = net::ioctl_int(sk, net::SIOCINQ).map_err(self.sys("ioctl(SIOCINQ)"))? as u32;
        let mut outq_len =
            net::ioctl_int(sk, net::SIOCOUTQ).map_err(self.sys("ioctl(SIOCOUTQ)"))? as u32;
        let mut unsq_len =
            net::ioctl_int(sk, net::SIOCOUTQNSD).map_err(self.sys("ioctl(SIOCOUTQNSD)"))? as u32;
        if fin_sent(self.state) {
            // As CRIU: the lengths leave out the FIN (no data; not yet acked, it is
            // counted in SIOCOUTQ, and in SIOCOUTQNSD if not yet sent); the queue's
            // sequence number keeps it (adjusted on restore, from the state).
            outq_len = outq_len.saturating_sub(1);
            unsq_len = unsq_len.saturating_sub(1);
        }
        let mss = net::getsockopt_int(sk, libc::SOL_TCP, libc::TCP_MAXSEG)
            .map_err(self.sys("getsockopt(TCP_MAXSEG)"))? as u32;
        let opt_mask = u32::from(ti.options);
        let timestamp = if opt_mask & TCPI_OPT_TIMESTAMPS != 0 {
            Some(
                net::getsockopt_int(sk, libc::SOL_TCP, net::TCP_TIMESTAMP)
                    .map_err(self.sys("getsockopt(TCP_TIMESTAMP)"))? as u32,
            )
        } else {
            None
        };
        let w = net::get_repair_window(sk).map_err(self.sys("getsockopt(TCP_REPAIR_WINDOW)"))?;
        let (inq_seq, inq) = self.peek_queue(net::TCP_RECV_QUEUE, inq_len)?;
        let (outq_seq, outq) = self.peek_queue(net::TCP_SEND_QUEUE, outq_len)?;
        self.entry = TcpStreamEntry {
            inq_len,
            inq_seq,
            outq_len,
            outq_seq,
            opt_mask,
            snd_wscale: u32::from(ti.snd_wscale),
            mss_clamp: mss,
            rcv_wscale: Some(u32::from(ti.rcv_wscale)),
            timestamp,
            cork: None,
            nodelay: None,
            unsq_len: Some(unsq_len),
            snd_wl1: Some(w.snd_wl1),
            snd_wnd: Some(w.snd_wnd),
            max_window: Some(w.max_window),
            rcv_wnd: Some(w.rcv_wnd),
            rcv_wup: Some(w.rcv_wup),
        };
        self.inq = inq;
        self.outq = outq;
        log::debug!(pid = self.pid, conn = self.desc.as_str(), inq = inq_len, outq = outq_len, unsent = unsq_len; "TCP connection read");
        Ok(())
    }

    /// A queue's sequence number and contents, peeked in repair mode.
    fn peek_queue(&self, queue: i32, len: u32) -> Result<(u32, Vec<u8>)> {
        let sk = self.sk.as_fd();
        net::setsockopt_int(sk, libc::SOL_TCP, net::TCP_REPAIR_QUEUE, queue)
            .map_err(self.sys("setsockopt(TCP_REPAIR_QUEUE)"))?;
        let seq = net::getsockopt_int(sk, libc::SOL_TCP, net::TCP_QUEUE_SEQ)
            .map_err(self.sys("getsockopt(TCP_QUEUE_SEQ)"))? as u32;
        let mut buf = vec![0u8; len as usize];
        if len > 0 {
            let n = net::recv(sk, &mut buf, libc::MSG_PEEK | libc::MSG_DONTWAIT)
                .map_err(self.sys("recv(MSG_PEEK) in repair mode"))?;
            if n != len as usize {
                return Err(Error::Unsupported {
                    pid: self.pid,
                    what: format!("TCP connection {}", self.desc),
                    why: format!("only {n} of the {len} bytes queued could be read"),
                });
            }
        }
        net::setsockopt_int(sk, libc::SOL_TCP, net::TCP_REPAIR_QUEUE, net::TCP_NO_QUEUE)
            .map_err(self.sys("setsockopt(TCP_REPAIR_QUEUE)"))?;
        Ok((seq, buf))
    }
}

/// Established connections of a dump. Dropped without `keep_repair` (a failed dump),
/// every socket leaves repair mode so the target's connections keep working.
#[derive(Debug, Default)]
pub struct DumpState {
    streams: Vec<Stream>,
    keep_repair: bool,
}

impl DumpState {
    /// Puts every established connection in repair mode and reads its state. Call only
    /// once the dump is known to proceed (no blocker anywhere in the tree).
    pub fn read_streams(&mut self) -> Result<()> {
        for s in &mut self.streams {
            s.read()?;
        }
        Ok(())
    }

    /// The dump succeeded. If the tree runs on, its connections leave repair mode now
    /// (before it is resumed); if it is killed, they stay in repair mode until closed,
    /// so no FIN or RST reaches their peers.
    pub fn done(&mut self, leave_running: bool) {
        if leave_running {
            for s in &mut self.streams {
                s.leave_repair();
            }
        } else {
            self.keep_repair = true;
        }
    }

    pub fn write(&self, dir: &ImageDir) -> Result<()> {
        for s in &self.streams {
            let mut w = dir.writer(&stream_name(s.ino), TCP_STREAM)?;
            w.entry(&s.entry)?;
            w.put(&s.inq)?;
            w.put(&s.outq)?;
            w.finish()?;
        }
        Ok(())
    }
}

impl Drop for DumpState {
    fn drop(&mut self) {
        if !self.keep_repair {
            for s in &mut self.streams {
                s.leave_repair();
            }
        }
    }
}

fn get_bool(sk: BorrowedFd, level: i32, opt: i32) -> std::result::Result<bool, Errno> {
    net::getsockopt_int(sk, level, opt).map(|v| v != 0)
}

fn get_timeval(sk: BorrowedFd, opt: i32) -> std::result::Result<(u64, u64), Errno> {
    let mut b = [0u8; 16];
    net::getsockopt_raw(sk, libc::SOL_SOCKET, opt, &mut b)?;
    let sec = i64::from_ne_bytes(b[..8].try_into().unwrap_or_default());
    let usec = i64::from_ne_bytes(b[8..].try_into().unwrap_or_default());
    Ok((sec.max(0) as u64, usec.max(0) as u64))
}

/// The socket options cryo restores.
fn dump_opts(
    sk: BorrowedFd,
    tcp: bool,
) -> std::result::Result<(SkOptsEntry, Option<TcpOptsEntry>), Errno> {
    let sol = libc::SOL_SOCKET;
    let (snd_s, snd_us) = get_timeval(sk, libc::SO_SNDTIMEO)?;
    let (rcv_s, rcv_us) = get_timeval(sk, libc::SO_RCVTIMEO)?;
    let mut linger = [0u8; 8];
    net::getsockopt_raw(sk, sol, libc::SO_LINGER, &mut linger)?;
    let l_onoff = i32::from_ne_bytes(linger[..4].try_into().unwrap_or_default());
    let l_linger = i32::from_ne_bytes(linger[4..].try_into().unwrap_or_default());
    let mut dev = [0u8; 16];
    let n = net::getsockopt_raw(sk, sol, libc::SO_BINDTODEVICE, &mut dev)?;
    let dev = String::from_utf8_lossy(&dev[..n])
        .trim_end_matches('\0')
        .to_string();
    let opts = SkOptsEntry {
        so_sndbuf: net::getsockopt_int(sk, sol, libc::SO_SNDBUF)? as u32,
        so_rcvbuf: net::getsockopt_int(sk, sol, libc::SO_RCVBUF)? as u32,
        so_snd_tmo_sec: snd_s,
        so_snd_tmo_usec: snd_us,
        so_rcv_tmo_sec: rcv_s,
        so_rcv_tmo_usec: rcv_us,
        reuseaddr: Some(get_bool(sk, sol, libc::SO_REUSEADDR)?),
        so_priority: Some(net::getsockopt_int(sk, sol, libc::SO_PRIORITY)? as u32),
        so_rcvlowat: Some(net::getsockopt_int(sk, sol, libc::SO_RCVLOWAT)? as u32),
        so_mark: Some(net::getsockopt_int(sk, sol, libc::SO_MARK)? as u32),
        so_bound_dev: (!dev.is_empty()).then_some(dev),
        so_reuseport: Some(get_bool(sk, sol, libc::SO_REUSEPORT)?),
        so_broadcast: Some(get_bool(sk, sol, libc::SO_BROADCAST)?),
        so_keepalive: Some(get_bool(sk, sol, libc::SO_KEEPALIVE)?),
        so_oobinline: Some(net::getsockopt_int(sk, sol, libc::SO_OOBINLINE)? as u32),
        so_linger: (l_onoff != 0).then_some(l_linger as u32),
        so_buf_lock: net::getsockopt_int(sk, sol, net::SO_BUF_LOCK)
            .ok()
            .map(|v| v as u32),
        ..Default::default()
    };
    let tcp_opts = if tcp {
        let t = libc::SOL_TCP;
        Some(TcpOptsEntry {
            cork: Some(get_bool(sk, t, libc::TCP_CORK)?),
            nodelay: Some(get_bool(sk, t, libc::TCP_NODELAY)?),
            keepcnt: Some(net::getsockopt_int(sk, t, libc::TCP_KEEPCNT)? as u32),
            keepidle: Some(net::getsockopt_int(sk, t, libc::TCP_KEEPIDLE)? as u32),
            keepintvl: Some(net::getsockopt_int(sk, t, libc::TCP_KEEPINTVL)? as u32),
        })
    } else {
        None
    };
    Ok((opts, tcp_opts))
}

/// A sender's address in `sk_packet_entry.addr`: the `sockaddr_in` / `sockaddr_in6`
/// bytes (family in host order, port and address in network order).
fn sockaddr_bytes(a: &SocketAddr) -> Vec<u8> {
    let mut b = Vec::with_capacity(28);
    match a {
        SocketAddr::V4(v4) => {
            b.extend((libc::AF_INET as u16).to_ne_bytes());
            b.extend(v4.port().to_be_bytes());
            b.extend(v4.ip().octets());
            b.extend([0u8; 8]);
        }
        SocketAddr::V6(v6) => {
            b.extend((libc::AF_INET6 as u16).to_ne_bytes());
            b.extend(v6.port().to_be_bytes());
            b.extend(v6.flowinfo().to_be_bytes());
            b.extend(v6.ip().octets());
            b.extend(v6.scope_id().to_ne_bytes());
        }
    }
    b
}

fn sockaddr_parse(b: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(b.get(..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(b.get(2..4)?.try_into().ok()?);
    match i32::from(family) {
        libc::AF_INET => {
            let ip: [u8; 4] = b.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::V4(SocketAddrV4::new(ip.into(), port)))
        }
        libc::AF_INET6 => {
            let flow = u32::from_be_bytes(b.get(4..8)?.try_into().ok()?);
            let ip: [u8; 16] = b.get(8..24)?.try_into().ok()?;
            let scope = u32::from_ne_bytes(b.get(24..28)?.try_into().ok()?);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip.into(),
                port,
                flow,
                scope,
            )))
        }
        _ => None,
    }
}

/// The datagrams queued on a UDP socket, read without consuming them: `MSG_PEEK` at a
/// moving `SO_PEEK_OFF` (put back as it was), each with its sender.
fn peek_datagrams(f: &Fd, sk: BorrowedFd) -> Result<Vec<(SocketAddr, Vec<u8>)>> {
    let sys = |call: &'static str| Error::sys(call, f.pid);
    let orig = net::getsockopt_int(sk, libc::SOL_SOCKET, libc::SO_PEEK_OFF)
        .map_err(sys("getsockopt(SO_PEEK_OFF)"))?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut off = 0usize;
    let r = loop {
        if let Err(e) = net::setsockopt_int(sk, libc::SOL_SOCKET, libc::SO_PEEK_OFF, off as i32) {
            break Err(sys("setsockopt(SO_PEEK_OFF)")(e));
        }
        match net::peek_from(sk, &mut buf) {
            Ok((_, 0, _)) => {
                break Err(f.unsupported(
                    "a zero-length datagram is queued on a UDP socket; cryo cannot read \
                     past it without consuming it",
                ))
            }
            Ok((n, full, from)) if n == full => {
                let Some(from) = from else {
                    break Err(f.unsupported("a queued datagram has no sender address"));
                };
                out.push((from, buf[..n].to_vec()));
                off += n;
            }
            Ok((_, full, _)) => {
                break Err(f.unsupported(format!("a {full}-byte datagram is queued")))
            }
            Err(Errno::EAGAIN) => break Ok(()),
            Err(e) => break Err(sys("recvfrom(MSG_PEEK)")(e)),
        }
    };
    let _ = net::setsockopt_int(sk, libc::SOL_SOCKET, libc::SO_PEEK_OFF, orig);
    r.map(|()| out)
}

fn fmt_addr(a: Option<SocketAddr>) -> String {
    a.map(|a| a.to_string())
        .unwrap_or_else(|| "(unbound)".into())
}

/// `copy` is cryo's own copy of the socket (pidfd_getfd), `family` its SO_DOMAIN.
pub fn dump(f: &Fd, copy: OwnedFd, family: i32, ino: u64, ids: &mut FileIds) -> Result<u32> {
    let sys = |call: &'static str| Error::sys(call, f.pid);
    let sk = copy.as_fd();
    let ty = net::getsockopt_int(sk, libc::SOL_SOCKET, libc::SO_TYPE)
        .map_err(sys("getsockopt(SO_TYPE)"))?;
    let proto = net::getsockopt_int(sk, libc::SOL_SOCKET, libc::SO_PROTOCOL)
        .map_err(sys("getsockopt(SO_PROTOCOL)"))?;
    let tcp = match (ty, proto) {
        (libc::SOCK_STREAM, libc::IPPROTO_TCP) => true,
        (libc::SOCK_DGRAM, libc::IPPROTO_UDP) => false,
        _ => {
            return Err(f.unsupported(format!(
                "only TCP and UDP sockets can be dumped (this one has type {ty}, protocol {proto})"
            )))
        }
    };
    let local = net::local_addr(sk).map_err(sys("getsockname"))?;
    let peer = net::peer_addr(sk).map_err(sys("getpeername"))?;
    let desc = format!("{} <-> {}", fmt_addr(local), fmt_addr(peer));
    let (backlog, state) = if tcp {
        let ti = net::tcp_info(sk).map_err(sys("getsockopt(TCP_INFO)"))?;
        let state = u32::from(ti.state);
        match state {
            TCP_LISTEN => {
                if ti.unacked > 0 {
                    return Err(f.unsupported(format!(
                        "listening TCP socket {} has {} connection(s) not yet accepted; \
                         dump when the program has accepted them",
                        fmt_addr(local),
                        ti.unacked
                    )));
                }
            }
            s if is_stream(s) => {
                if !ids.opts.tcp_established {
                    let what = if s == TCP_ESTABLISHED {
                        "established TCP connection".to_string()
                    } else {
                        format!("half-closed TCP connection ({})", state_name(s))
                    };
                    return Err(f.unsupported(format!(
                        "{what} {desc}; dump with --tcp-established \
                         to keep it (and restore with --tcp-established, or --tcp-close \
                         to get it back closed)"
                    )));
                }
            }
            TCP_CLOSE => {}
            s => {
                return Err(f.unsupported(format!(
                    "TCP connection {desc} in state {}: only listening, established, \
                     half-closed (FIN_WAIT1/2, CLOSE_WAIT, LAST_ACK, CLOSING) and \
                     unconnected TCP sockets can be dumped; retry when it has closed",
                    state_name(s)
                )))
            }
        }
        // For a listener, tcpi_sacked is the backlog given to listen().
        (if state == TCP_LISTEN { ti.sacked } else { 0 }, state)
    } else {
        (
            0,
            if peer.is_some() {
                TCP_ESTABLISHED
            } else {
                TCP_CLOSE
            },
        )
    };
    let (opts, tcp_opts) = dump_opts(sk, tcp).map_err(sys("getsockopt"))?;
    let v6only = if family == libc::AF_INET6 {
        Some(
            get_bool(sk, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)
                .map_err(sys("getsockopt(IPV6_V6ONLY)"))?,
        )
    } else {
        None
    };
    let freebind = if family == libc::AF_INET {
        get_bool(sk, libc::IPPROTO_IP, libc::IP_FREEBIND).unwrap_or(false)
    } else {
        get_bool(sk, libc::IPPROTO_IPV6, libc::IPV6_FREEBIND).unwrap_or(false)
    };
    let ifname = opts.so_bound_dev.clone();
    let reuseaddr = opts.reuseaddr.unwrap_or(false);
    let isk = InetSkEntry {
        id: 0,
        ino: ino as u32,
        family: family as u32,
        r#type: ty as u32,
        proto: proto as u32,
        state,
        src_port: local.map(|a| a.port() as u32).unwrap_or(0),
        dst_port: peer.map(|a| a.port() as u32).unwrap_or(0),
        flags: f.flags,
        backlog,
        src_addr: local.as_ref().map(addr_words).unwrap_or_default(),
        dst_addr: peer.as_ref().map(addr_words).unwrap_or_default(),
        fown: Default::default(),
        opts,
        v6only,
        ip_opts: Some(IpOptsEntry {
            freebind: Some(freebind),
            ..Default::default()
        }),
        ifname,
        ns_id: None,
        shutdown: None,
        tcp_opts,
    };
    let id = ids.add(FileEntry {
        r#type: FdTypes::Inetsk as i32,
        isk: Some(isk),
        ..Default::default()
    });
    if let Some(isk) = ids.files.last_mut().and_then(|e| e.isk.as_mut()) {
        isk.id = id;
    }
    if !tcp {
        for (from, data) in peek_datagrams(f, sk)? {
            log::debug!(pid = f.pid, fd = f.fd, sock = desc.as_str(), from:% = from, bytes = data.len(); "UDP: queued datagram");
            ids.unix.add_packet(
                SkPacketEntry {
                    id_for: id,
                    length: data.len() as u32,
                    addr: Some(sockaddr_bytes(&from)),
                    scm: Vec::new(),
                },
                data,
            );
        }
    }
    if tcp && is_stream(state) {
        ids.inet.streams.push(Stream {
            pid: f.pid,
            ino: ino as u32,
            state,
            sk: copy,
            desc: desc.clone(),
            reuseaddr,
            in_repair: false,
            entry: TcpStreamEntry::default(),
            inq: Vec::new(),
            outq: Vec::new(),
        });
    }
    log::debug!(pid = f.pid, fd = f.fd, tcp = tcp, state = state_name(state), sock = desc.as_str(); "inet socket");
    Ok(id)
}

/// A restored connection still in repair mode, to be released once every socket of
/// the tree exists.
#[derive(Debug)]
struct Repaired {
    sk: OwnedFd,
    desc: String,
    reuseaddr: bool,
    /// The part of the send queue never sent: written after repair mode is left.
    unsent: Vec<u8>,
    /// The peer's FIN had arrived: replayed into the socket before it leaves repair
    /// mode.
    fin_in: Option<FinIn>,
    /// This end had sent its FIN: shutdown(SHUT_WR) once the unsent data is queued.
    shut_wr: bool,
}

/// The peer's FIN, as a packet to inject (see `fin_packet`).
#[derive(Debug, Clone, Copy)]
struct FinIn {
    peer: SocketAddr,
    local: SocketAddr,
    seq: u32,
    ack: u32,
    win: u16,
}

/// What a rebuilt connection still needs once every socket exists.
struct Rebuilt {
    unsent: Vec<u8>,
    fin_in: Option<FinIn>,
}

/// One's-complement sum of 16-bit big-endian words (odd tail padded).
fn csum_add(mut sum: u32, b: &[u8]) -> u32 {
    for c in b.chunks(2) {
        let w = u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]);
        sum += u32::from(w);
    }
    sum
}

fn csum_fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The IPv4 address behind a v4 (or v4-mapped v6) socket address.
fn v4_of(a: &SocketAddr) -> Option<Ipv4Addr> {
    match a.ip() {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    }
}

/// An IP packet from `src` to `dst` carrying `l4` (a TCP or UDP header and payload,
/// its checksum at `csum_at` computed here), for a raw `IPPROTO_RAW` socket, which
/// takes the IP header from us: IPv4 when both addresses are v4 (or v4-mapped), IPv6
/// otherwise. Returns the packet and whether it is IPv4.
fn ip_packet(
    src: &SocketAddr,
    dst: &SocketAddr,
    proto: u8,
    mut l4: Vec<u8>,
    csum_at: usize,
) -> (Vec<u8>, bool) {
    let len = l4.len() as u32;
    let finish = |sum: u32, l4: &mut Vec<u8>| {
        let mut c = csum_fold(csum_add(sum, l4));
        if c == 0 && proto == libc::IPPROTO_UDP as u8 {
            c = 0xffff; // 0 means "no checksum" for UDP
        }
        l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    };
    match (v4_of(src), v4_of(dst)) {
        (Some(s4), Some(d4)) => {
            let mut sum = csum_add(0, &s4.octets());
            sum = csum_add(sum, &d4.octets());
            sum = csum_add(sum, &[0, proto]);
            sum = csum_add(sum, &(len as u16).to_be_bytes());
            finish(sum, &mut l4);
            let mut ip = vec![0x45, 0];
            ip.extend((20 + len as u16).to_be_bytes());
            ip.extend([0, 0, 0x40, 0, 64, proto, 0, 0]);
            ip.extend(s4.octets());
            ip.extend(d4.octets());
            let c = csum_fold(csum_add(0, &ip));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            ip.extend(l4);
            (ip, true)
        }
        _ => {
            let v6 = |a: &SocketAddr| match a.ip() {
                IpAddr::V6(v6) => v6.octets(),
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            };
            let (s6, d6) = (v6(src), v6(dst));
            let mut sum = csum_add(0, &s6);
            sum = csum_add(sum, &d6);
            sum = csum_add(sum, &len.to_be_bytes());
            sum = csum_add(sum, &[0, 0, 0, proto]);
            finish(sum, &mut l4);
            let mut ip = vec![0x60, 0, 0, 0];
            ip.extend((len as u16).to_be_bytes());
            ip.extend([proto, 64]);
            ip.extend(s6);
            ip.extend(d6);
            ip.extend(l4);
            (ip, false)
        }
    }
}

/// A bare FIN|ACK from `f.peer` to `f.local`, as an IP packet (see `ip_packet`).
fn fin_packet(f: &FinIn) -> (Vec<u8>, bool) {
    let mut tcp = Vec::with_capacity(20);
    tcp.extend(f.peer.port().to_be_bytes());
    tcp.extend(f.local.port().to_be_bytes());
    tcp.extend(f.seq.to_be_bytes());
    tcp.extend(f.ack.to_be_bytes());
    tcp.push(5 << 4); // data offset: 5 words, no options
    tcp.push(0x11); // FIN | ACK
    tcp.extend(f.win.to_be_bytes());
    tcp.extend([0, 0, 0, 0]); // checksum, urgent pointer
    ip_packet(&f.peer, &f.local, libc::IPPROTO_TCP as u8, tcp, 16)
}

/// A UDP datagram from `src` to `dst`, as an IP packet (see `ip_packet`).
fn udp_packet(src: &SocketAddr, dst: &SocketAddr, data: &[u8]) -> (Vec<u8>, bool) {
    let mut udp = Vec::with_capacity(8 + data.len());
    udp.extend(src.port().to_be_bytes());
    udp.extend(dst.port().to_be_bytes());
    udp.extend(((8 + data.len()) as u16).to_be_bytes());
    udp.extend([0, 0]);
    udp.extend(data);
    ip_packet(src, dst, libc::IPPROTO_UDP as u8, udp, 6)
}

/// Sends a packet made by `ip_packet` to `to` (a local address) through a raw socket.
fn raw_send(
    pkt: &[u8],
    v4: bool,
    to: &SocketAddr,
) -> std::result::Result<(), (&'static str, Errno)> {
    let (family, dst) = if v4 {
        let ip = v4_of(to).unwrap_or(Ipv4Addr::LOCALHOST);
        (libc::AF_INET, SocketAddr::V4(SocketAddrV4::new(ip, 0)))
    } else {
        let ip = match to.ip() {
            IpAddr::V6(v6) => v6,
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        };
        (
            libc::AF_INET6,
            SocketAddr::V6(SocketAddrV6::new(ip, 0, 0, 0)),
        )
    };
    let raw = net::socket(family, libc::SOCK_RAW, libc::IPPROTO_RAW)
        .map_err(|e| ("socket(SOCK_RAW)", e))?;
    let n = net::send_to(raw.as_fd(), pkt, 0, &dst).map_err(|e| ("sendto (raw)", e))?;
    if n != pkt.len() {
        return Err(("sendto (raw)", Errno::EIO));
    }
    Ok(())
}

/// Replays the peer's FIN into a connection in repair mode, as CRIU does: a bare
/// FIN|ACK at the FIN's sequence number, through a raw socket. The kernel takes it as
/// it took the original (the state moves to CLOSE_WAIT, the FIN is queued after the
/// data, so the program reads the data then EOF) and acks it again: a duplicate the
/// peer ignores. Waits (bounded) until the socket has taken it.
fn replay_fin(sk: BorrowedFd, f: &FinIn) -> std::result::Result<(), (&'static str, Errno)> {
    let (pkt, v4) = fin_packet(f);
    raw_send(&pkt, v4, &f.local)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let st = net::tcp_info(sk)
            .map_err(|e| ("getsockopt(TCP_INFO)", e))?
            .state;
        if fin_received(st.into()) {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err((
                "the replayed FIN was not taken (state stays ESTABLISHED)",
                Errno::ETIMEDOUT,
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Restored connections waiting to leave repair mode. Dropped without `finish` (a
/// failed restore), they close silently: still in repair mode, they send nothing.
#[derive(Debug, Default)]
pub struct Pending(Vec<Repaired>);

impl Pending {
    /// Replays the FINs the connections had received (every socket of the tree exists
    /// now, so the ACK this triggers reaches a socket), then takes every connection out
    /// of repair mode (the kernel sends a window probe to the peer), puts SO_REUSEADDR
    /// back, sends the data that was never sent and, for a connection whose FIN was
    /// sent, shuts down its write side: the FIN goes out again after that data (the
    /// peer acks it, or drops it as a duplicate and acks its sequence), and writes fail
    /// with EPIPE as they did.
    pub fn finish(self) -> Result<()> {
        let skip = crate::error::fault_point("skip-fin-replay").is_err();
        for r in &self.0 {
            let Some(f) = &r.fin_in else { continue };
            if skip {
                continue;
            }
            replay_fin(r.sk.as_fd(), f).map_err(|(what, e)| Error::Restore {
                pid: 0,
                msg: format!(
                    "TCP connection {}: replaying the peer's FIN: {what}: {e}",
                    r.desc
                ),
            })?;
            log::debug!(conn = r.desc.as_str(), seq = f.seq; "TCP: peer's FIN replayed");
        }
        for r in &self.0 {
            let sk = r.sk.as_fd();
            let err = |call: &'static str| {
                let desc = r.desc.clone();
                move |e: Errno| Error::Restore {
                    pid: 0,
                    msg: format!("TCP connection {desc}: {call}: {e}"),
                }
            };
            net::setsockopt_int(sk, libc::SOL_TCP, net::TCP_REPAIR, net::TCP_REPAIR_OFF)
                .map_err(err("setsockopt(TCP_REPAIR, off)"))?;
            if r.reuseaddr {
                net::setsockopt_int(sk, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)
                    .map_err(err("setsockopt(SO_REUSEADDR)"))?;
            }
            let mut off = 0;
            while off < r.unsent.len() {
                off += net::send(
                    sk,
                    &r.unsent[off..],
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
                .map_err(err("send (unsent data)"))?;
            }
            if r.shut_wr && !skip {
                net::shutdown(sk, libc::SHUT_WR).map_err(err("shutdown(SHUT_WR)"))?;
            }
            log::debug!(conn = r.desc.as_str(), unsent = r.unsent.len(); "TCP connection released");
        }
        Ok(())
    }
}

/// Restore-side state: connections in repair mode.
#[derive(Debug, Default)]
pub struct Restorer {
    pending: Pending,
    /// Datagrams queued on UDP sockets, by file id, in queue order.
    datagrams: HashMap<u32, Vec<(SkPacketEntry, Vec<u8>)>>,
}

impl Restorer {
    /// Loads the datagrams of the image's UDP sockets from sk-queues.img (which the
    /// unix sockets share).
    pub fn load(dir: &ImageDir, files: &[FileEntry]) -> Result<Self> {
        let udp: std::collections::HashSet<u32> = files
            .iter()
            .filter(|f| {
                f.isk
                    .as_ref()
                    .is_some_and(|i| i.proto as i32 == libc::IPPROTO_UDP)
            })
            .map(|f| f.id)
            .collect();
        let mut datagrams: HashMap<u32, Vec<_>> = HashMap::new();
        if !udp.is_empty() && dir.file("sk-queues.img").exists() {
            let mut r = dir.reader("sk-queues.img", super::unix::SK_QUEUES)?;
            while let Some(e) = r.next_entry::<SkPacketEntry>()? {
                let data = r.read_raw(e.length as u64)?;
                if udp.contains(&e.id_for) {
                    datagrams.entry(e.id_for).or_default().push((e, data));
                }
            }
        }
        Ok(Restorer {
            datagrams,
            ..Default::default()
        })
    }

    /// The restored connections still in repair mode (see `Pending::finish`).
    pub fn take_pending(&mut self) -> Pending {
        std::mem::take(&mut self.pending)
    }
}

fn set_timeval(sk: BorrowedFd, opt: i32, sec: u64, usec: u64) -> std::result::Result<(), Errno> {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&(sec as i64).to_ne_bytes());
    b[8..].copy_from_slice(&(usec as i64).to_ne_bytes());
    net::setsockopt_raw(sk, libc::SOL_SOCKET, opt, &b)
}

/// Socket options but SO_REUSEADDR (set by the caller around bind).
fn restore_opts(
    sk: BorrowedFd,
    isk: &InetSkEntry,
) -> std::result::Result<(), (&'static str, Errno)> {
    let o = &isk.opts;
    let sol = libc::SOL_SOCKET;
    let set =
        |level, opt, v: i32, name| net::setsockopt_int(sk, level, opt, v).map_err(|e| (name, e));
    // getsockopt reports the doubled value the kernel keeps; setsockopt doubles again.
    for (force, plain, v, name) in [
        (
            libc::SO_SNDBUFFORCE,
            libc::SO_SNDBUF,
            o.so_sndbuf,
            "setsockopt(SO_SNDBUF)",
        ),
        (
            libc::SO_RCVBUFFORCE,
            libc::SO_RCVBUF,
            o.so_rcvbuf,
            "setsockopt(SO_RCVBUF)",
        ),
    ] {
        let half = (v / 2).min(i32::MAX as u32) as i32;
        if net::setsockopt_int(sk, sol, force, half).is_err() {
            set(sol, plain, half, name)?;
        }
    }
    // Setting the sizes locked them; keep them locked only if the program had.
    let _ = net::setsockopt_int(sk, sol, net::SO_BUF_LOCK, o.so_buf_lock.unwrap_or(0) as i32);
    set_timeval(sk, libc::SO_SNDTIMEO, o.so_snd_tmo_sec, o.so_snd_tmo_usec)
        .map_err(|e| ("setsockopt(SO_SNDTIMEO)", e))?;
    set_timeval(sk, libc::SO_RCVTIMEO, o.so_rcv_tmo_sec, o.so_rcv_tmo_usec)
        .map_err(|e| ("setsockopt(SO_RCVTIMEO)", e))?;
    let flag = |b: Option<bool>| i32::from(b.unwrap_or(false));
    set(
        sol,
        libc::SO_REUSEPORT,
        flag(o.so_reuseport),
        "setsockopt(SO_REUSEPORT)",
    )?;
    set(
        sol,
        libc::SO_BROADCAST,
        flag(o.so_broadcast),
        "setsockopt(SO_BROADCAST)",
    )?;
    set(
        sol,
        libc::SO_KEEPALIVE,
        flag(o.so_keepalive),
        "setsockopt(SO_KEEPALIVE)",
    )?;
    if let Some(p) = o.so_priority.filter(|&p| p != 0) {
        set(sol, libc::SO_PRIORITY, p as i32, "setsockopt(SO_PRIORITY)")?;
    }
    if let Some(m) = o.so_mark.filter(|&m| m != 0) {
        set(sol, libc::SO_MARK, m as i32, "setsockopt(SO_MARK)")?;
    }
    if let Some(l) = o.so_rcvlowat.filter(|&l| l > 1) {
        set(sol, libc::SO_RCVLOWAT, l as i32, "setsockopt(SO_RCVLOWAT)")?;
    }
    if let Some(v) = o.so_oobinline.filter(|&v| v != 0) {
        set(
            sol,
            libc::SO_OOBINLINE,
            v as i32,
            "setsockopt(SO_OOBINLINE)",
        )?;
    }
    if let Some(l) = o.so_linger {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&1i32.to_ne_bytes());
        b[4..].copy_from_slice(&(l as i32).to_ne_bytes());
        net::setsockopt_raw(sk, sol, libc::SO_LINGER, &b)
            .map_err(|e| ("setsockopt(SO_LINGER)", e))?;
    }
    if let Some(dev) = o.so_bound_dev.as_deref().filter(|d| !d.is_empty()) {
        net::setsockopt_raw(sk, sol, libc::SO_BINDTODEVICE, dev.as_bytes())
            .map_err(|e| ("setsockopt(SO_BINDTODEVICE)", e))?;
    }
    if let Some(v6only) = isk.v6only {
        set(
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            i32::from(v6only),
            "setsockopt(IPV6_V6ONLY)",
        )?;
    }
    if isk.ip_opts.as_ref().and_then(|i| i.freebind) == Some(true) {
        let (level, opt) = if isk.family as i32 == libc::AF_INET {
            (libc::IPPROTO_IP, libc::IP_FREEBIND)
        } else {
            (libc::IPPROTO_IPV6, libc::IPV6_FREEBIND)
        };
        set(level, opt, 1, "setsockopt(IP_FREEBIND)")?;
    }
    if let Some(t) = &isk.tcp_opts {
        let tl = libc::SOL_TCP;
        set(
            tl,
            libc::TCP_NODELAY,
            flag(t.nodelay),
            "setsockopt(TCP_NODELAY)",
        )?;
        set(tl, libc::TCP_CORK, flag(t.cork), "setsockopt(TCP_CORK)")?;
        for (opt, v, name) in [
            (libc::TCP_KEEPCNT, t.keepcnt, "setsockopt(TCP_KEEPCNT)"),
            (libc::TCP_KEEPIDLE, t.keepidle, "setsockopt(TCP_KEEPIDLE)"),
            (
                libc::TCP_KEEPINTVL,
                t.keepintvl,
                "setsockopt(TCP_KEEPINTVL)",
            ),
        ] {
            if let Some(v) = v.filter(|&v| v > 0) {
                set(tl, opt, v as i32, name)?;
            }
        }
    }
    Ok(())
}

/// Writes `data` into a queue in repair mode, in chunks that shrink if the kernel
/// cannot allocate one that large.
fn send_queue(
    sk: BorrowedFd,
    queue: i32,
    data: &[u8],
) -> std::result::Result<(), (&'static str, Errno)> {
    net::setsockopt_int(sk, libc::SOL_TCP, net::TCP_REPAIR_QUEUE, queue)
        .map_err(|e| ("setsockopt(TCP_REPAIR_QUEUE)", e))?;
    let (mut off, mut chunk) = (0, data.len());
    while off < data.len() {
        let end = (off + chunk).min(data.len());
        match net::send(sk, &data[off..end], 0) {
            Ok(n) if n > 0 => off += n,
            Ok(_) | Err(Errno::ENOMEM | Errno::EAGAIN) if chunk > 1024 => chunk /= 2,
            Ok(_) => return Err(("send (queue in repair mode)", Errno::EIO)),
            Err(e) => return Err(("send (queue in repair mode)", e)),
        }
    }
    Ok(())
}

pub fn restore(op: &mut Opener, fe: &FileEntry) -> Result<OwnedFd> {
    let isk = fe.isk.as_ref().ok_or_else(|| Error::Restore {
        pid: 0,
        msg: format!("file {}: inet socket entry missing", fe.id),
    })?;
    let local = words_addr(isk.family, &isk.src_addr, isk.src_port);
    let peer = words_addr(isk.family, &isk.dst_addr, isk.dst_port);
    let desc = format!("{} <-> {}", fmt_addr(local), fmt_addr(peer));
    let fail = |what: &str, e: Errno| Error::Restore {
        pid: 0,
        msg: format!("socket {desc} (file {}): {what}: {e}", fe.id),
    };
    let tcp = isk.proto as i32 == libc::IPPROTO_TCP;
    let established = tcp && is_stream(isk.state);
    if established && !op.opts.tcp_established && !op.opts.tcp_close {
        return Err(Error::Restore {
            pid: 0,
            msg: format!(
                "{} TCP connection {desc}: restore with --tcp-established \
                 (or --tcp-close to get it back closed)",
                if isk.state == TCP_ESTABLISHED {
                    "established"
                } else {
                    state_name(isk.state)
                }
            ),
        });
    }
    let ty = if tcp {
        libc::SOCK_STREAM
    } else {
        libc::SOCK_DGRAM
    };
    let sock =
        net::socket(isk.family as i32, ty, isk.proto as i32).map_err(|e| fail("socket", e))?;
    let sk = sock.as_fd();
    let file_flags = |sk: BorrowedFd| {
        let nb = (isk.flags & libc::O_NONBLOCK as u32) as i32;
        crate::sys::fd::fcntl_int(sk, libc::F_SETFL, nb)
            .map(drop)
            .map_err(|e| fail("fcntl(F_SETFL)", e))
    };
    let reuseaddr = i32::from(isk.opts.reuseaddr.unwrap_or(false));
    if established && op.opts.tcp_close {
        // A socket that never connects again: reads see EOF, writes EPIPE.
        let _ = net::shutdown(sk, libc::SHUT_RDWR);
        file_flags(sk)?;
        log::debug!(conn = desc.as_str(); "TCP connection restored closed (--tcp-close)");
        return Ok(sock);
    }
    if established {
        net::setsockopt_int(sk, libc::SOL_TCP, net::TCP_REPAIR, net::TCP_REPAIR_ON)
            .map_err(|e| fail("setsockopt(TCP_REPAIR)", e))?;
    }
    restore_opts(sk, isk).map_err(|(what, e)| fail(what, e))?;
    if established {
        let (Some(local), Some(peer)) = (local, peer) else {
            return Err(fail("connection without addresses", Errno::EINVAL));
        };
        let Rebuilt { unsent, fin_in } = restore_stream(op.dir, sk, isk, &local, &peer)?;
        file_flags(sk)?;
        let dup = sock
            .try_clone()
            .map_err(|e| fail("dup", Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
        op.inet.pending.0.push(Repaired {
            sk: dup,
            desc,
            reuseaddr: reuseaddr != 0,
            unsent,
            fin_in,
            shut_wr: fin_sent(isk.state),
        });
        return Ok(sock);
    }
    let bound = local.filter(|a| a.port() != 0 || !a.ip().is_unspecified());
    if let Some(a) = &bound {
        // Reuse during bind: a restored connection may already hold the port.
        net::setsockopt_int(sk, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)
            .map_err(|e| fail("setsockopt(SO_REUSEADDR)", e))?;
        net::bind(sk, a).map_err(|e| fail("bind", e))?;
    }
    if tcp && isk.state == TCP_LISTEN {
        net::listen(sk, isk.backlog as i32).map_err(|e| fail("listen", e))?;
    }
    if !tcp {
        // Queued datagrams: sent again from their senders' addresses (raw IP packets:
        // a sender's address need not be free, or even local), before connect, which
        // would filter out those from another address.
        let queued = op.inet.datagrams.remove(&fe.id).unwrap_or_default();
        if !queued.is_empty() {
            let to = bound
                .ok_or_else(|| fail("datagrams queued on an unbound socket", Errno::EINVAL))?;
            let to = if to.ip().is_unspecified() {
                match to {
                    SocketAddr::V4(_) => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), to.port()),
                    SocketAddr::V6(_) => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), to.port()),
                }
            } else {
                to
            };
            for (e, data) in &queued {
                let from = e.addr.as_deref().and_then(sockaddr_parse).ok_or_else(|| {
                    fail("a queued datagram without a sender address", Errno::EINVAL)
                })?;
                let (pkt, v4) = udp_packet(&from, &to, data);
                raw_send(&pkt, v4, &to).map_err(|(what, e)| fail(what, e))?;
            }
            log::debug!(sock = desc.as_str(), n = queued.len(); "UDP: queued datagrams sent again");
        }
        if let Some(p) = &peer {
            net::connect(sk, p).map_err(|e| fail("connect", e))?;
        }
    }
    net::setsockopt_int(sk, libc::SOL_SOCKET, libc::SO_REUSEADDR, reuseaddr)
        .map_err(|e| fail("setsockopt(SO_REUSEADDR)", e))?;
    file_flags(sk)?;
    Ok(sock)
}

/// Rebuilds a connection in repair mode from its tcp-stream image, as ESTABLISHED:
/// a half-closed one without its FINs, which `Pending::finish` replays. Returns the
/// part of the send queue that was never sent and the received FIN to replay.
fn restore_stream(
    dir: &ImageDir,
    sk: BorrowedFd,
    isk: &InetSkEntry,
    local: &SocketAddr,
    peer: &SocketAddr,
) -> Result<Rebuilt> {
    let name = stream_name(isk.ino);
    let mut r = dir.reader(&name, TCP_STREAM)?;
    let bad = |msg: String| {
        Error::from(crate::image::ImageError::Invalid {
            path: dir.file(&name),
            msg,
        })
    };
    let e: TcpStreamEntry = r
        .next_entry()?
        .ok_or_else(|| bad("no tcp_stream_entry".into()))?;
    let unsq = e.unsq_len.unwrap_or(0);
    if unsq > e.outq_len {
        return Err(bad(format!(
            "{unsq} unsent bytes of a {}-byte send queue",
            e.outq_len
        )));
    }
    let inq = r.read_raw(e.inq_len as u64)?;
    let outq = r.read_raw(e.outq_len as u64)?;
    let desc = format!("{local} <-> {peer}");
    let fail = |what: &str| {
        let desc = desc.clone();
        let what = what.to_string();
        move |err: Errno| Error::Restore {
            pid: 0,
            msg: format!("TCP connection {desc}: {what}: {err}"),
        }
    };
    let sol = libc::SOL_TCP;
    net::bind(sk, local).map_err(fail("bind"))?;
    // The images' sequence numbers count the FINs; the queues are rebuilt without.
    let rcv_nxt = e.inq_seq.wrapping_sub(u32::from(fin_received(isk.state)));
    let snd_end = e.outq_seq.wrapping_sub(u32::from(fin_sent(isk.state)));
    let snd_una = snd_end.wrapping_sub(e.outq_len);
    for (queue, seq) in [
        (net::TCP_RECV_QUEUE, rcv_nxt.wrapping_sub(e.inq_len)),
        (net::TCP_SEND_QUEUE, snd_una),
    ] {
        net::setsockopt_int(sk, sol, net::TCP_REPAIR_QUEUE, queue)
            .map_err(fail("setsockopt(TCP_REPAIR_QUEUE)"))?;
        net::setsockopt_int(sk, sol, net::TCP_QUEUE_SEQ, seq as i32)
            .map_err(fail("setsockopt(TCP_QUEUE_SEQ)"))?;
    }
    // In repair mode connect sends no SYN: the socket is established at once.
    net::connect(sk, peer).map_err(fail("connect (repair mode)"))?;
    let mut opts = Vec::new();
    if e.opt_mask & TCPI_OPT_SACK != 0 {
        opts.push((TCPOPT_SACK_PERM, 0));
    }
    if e.opt_mask & TCPI_OPT_WSCALE != 0 {
        opts.push((
            TCPOPT_WINDOW,
            e.snd_wscale | (e.rcv_wscale.unwrap_or(0) << 16),
        ));
    }
    if e.opt_mask & TCPI_OPT_TIMESTAMPS != 0 {
        opts.push((TCPOPT_TIMESTAMP, 0));
    }
    opts.push((TCPOPT_MAXSEG, e.mss_clamp));
    net::set_repair_options(sk, &opts).map_err(fail("setsockopt(TCP_REPAIR_OPTIONS)"))?;
    if let Some(ts) = e
        .timestamp
        .filter(|_| e.opt_mask & TCPI_OPT_TIMESTAMPS != 0)
    {
        net::setsockopt_int(sk, sol, net::TCP_TIMESTAMP, ts as i32)
            .map_err(fail("setsockopt(TCP_TIMESTAMP)"))?;
    }
    let sent = (e.outq_len - unsq) as usize;
    for (queue, data) in [
        (net::TCP_RECV_QUEUE, &inq[..]),
        (net::TCP_SEND_QUEUE, &outq[..sent]),
    ] {
        if !data.is_empty() {
            send_queue(sk, queue, data).map_err(|(what, err)| fail(what)(err))?;
        }
    }
    net::setsockopt_int(sk, sol, net::TCP_REPAIR_QUEUE, net::TCP_NO_QUEUE)
        .map_err(fail("setsockopt(TCP_REPAIR_QUEUE)"))?;
    if let (Some(snd_wl1), Some(snd_wnd), Some(max_window), Some(rcv_wnd), Some(rcv_wup)) =
        (e.snd_wl1, e.snd_wnd, e.max_window, e.rcv_wnd, e.rcv_wup)
    {
        // The window was last advertised past the FIN, one beyond rcv_nxt now.
        let (rcv_wup, rcv_wnd) = if fin_received(isk.state) {
            (rcv_wup.wrapping_sub(1), rcv_wnd.wrapping_add(1))
        } else {
            (rcv_wup, rcv_wnd)
        };
        net::set_repair_window(
            sk,
            net::RepairWindow {
                snd_wl1,
                snd_wnd,
                max_window,
                rcv_wnd,
                rcv_wup,
            },
        )
        .map_err(fail("setsockopt(TCP_REPAIR_WINDOW)"))?;
    }
    log::debug!(conn = desc.as_str(), inq = e.inq_len, outq = e.outq_len, unsent = unsq, state = state_name(isk.state); "TCP connection rebuilt in repair mode");
    // The peer's FIN, acking what the peer had acked, advertising its window.
    let fin_in = fin_received(isk.state).then(|| {
        let scale = if e.opt_mask & TCPI_OPT_WSCALE != 0 {
            e.snd_wscale.min(14)
        } else {
            0
        };
        FinIn {
            peer: *peer,
            local: *local,
            seq: rcv_nxt,
            ack: snd_una,
            win: (e.snd_wnd.unwrap_or(65535) >> scale).min(65535) as u16,
        }
    });
    Ok(Rebuilt {
        unsent: outq[sent..].to_vec(),
        fin_in,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_as_criu_words() {
        for a in [
            "127.0.0.1:6379",
            "[::1]:80",
            "[::ffff:10.1.2.3]:65535",
            "0.0.0.0:0",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            let family = if a.is_ipv4() {
                libc::AF_INET
            } else {
                libc::AF_INET6
            } as u32;
            let w = addr_words(&a);
            assert_eq!(w.len(), if a.is_ipv4() { 1 } else { 4 });
            assert_eq!(words_addr(family, &w, a.port() as u32), Some(a));
        }
        // CRIU's layout: the in_addr bytes read as a native u32.
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(addr_words(&a), vec![u32::from_ne_bytes([127, 0, 0, 1])]);
        // Bad input: no panic.
        assert_eq!(words_addr(libc::AF_INET as u32, &[], 1), None);
        assert_eq!(words_addr(libc::AF_INET as u32, &[1], 70000), None);
        assert_eq!(words_addr(99, &[1], 1), None);
    }

    #[test]
    fn raw_packets_check_out() {
        let a: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "127.0.0.2:6000".parse().unwrap();
        let (p, v4) = udp_packet(&a, &b, b"hello");
        assert!(v4);
        assert_eq!(p.len(), 20 + 8 + 5);
        assert_eq!(csum_fold(csum_add(0, &p[..20])), 0, "IP header checksum");
        let mut sum = csum_add(0, &p[12..20]);
        sum = csum_add(sum, &[0, 17, 0, 13]);
        assert_eq!(csum_fold(csum_add(sum, &p[20..])), 0, "UDP checksum");
        let f = FinIn {
            peer: "[::1]:80".parse().unwrap(),
            local: "[::1]:40000".parse().unwrap(),
            seq: 7,
            ack: 9,
            win: 100,
        };
        let (p, v4) = fin_packet(&f);
        assert!(!v4);
        assert_eq!(p.len(), 40 + 20);
        assert_eq!(p[6], 6);
        assert_eq!(p[40 + 13], 0x11);
        let mut sum = csum_add(0, &p[8..40]);
        sum = csum_add(sum, &[0, 0, 0, 20, 0, 0, 0, 6]);
        assert_eq!(csum_fold(csum_add(sum, &p[40..])), 0, "TCP checksum");
        // v4-mapped addresses go out as IPv4.
        let f = FinIn {
            peer: "[::ffff:127.0.0.1]:80".parse().unwrap(),
            local: "[::ffff:127.0.0.1]:81".parse().unwrap(),
            ..f
        };
        assert!(fin_packet(&f).1);
    }

    #[test]
    fn sender_addresses_round_trip() {
        for a in ["127.0.0.1:53", "[::1]:65535", "[fe80::1%2]:9"] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(sockaddr_parse(&sockaddr_bytes(&a)), Some(a));
        }
        assert_eq!(sockaddr_parse(&[]), None);
        assert_eq!(sockaddr_parse(&[1, 0, 0, 0]), None);
    }

    #[test]
    fn half_closed_states() {
        for s in [TCP_FIN_WAIT1, TCP_FIN_WAIT2, TCP_LAST_ACK, TCP_CLOSING] {
            assert!(fin_sent(s) && is_stream(s));
        }
        for s in [TCP_CLOSE_WAIT, TCP_LAST_ACK, TCP_CLOSING] {
            assert!(fin_received(s) && is_stream(s));
        }
        assert!(!fin_sent(TCP_ESTABLISHED) && !fin_received(TCP_ESTABLISHED));
        assert!(!is_stream(TCP_LISTEN) && !is_stream(6) && !is_stream(2));
    }

    #[test]
    fn state_names() {
        assert_eq!(state_name(TCP_LISTEN), "LISTEN");
        assert_eq!(state_name(8), "CLOSE_WAIT");
        assert_eq!(state_name(200), "?");
    }
}
