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
//! Not handled (refused at dump): TCP sockets in other states (SYN_SENT, FIN_WAIT,
//! CLOSE_WAIT…), listeners with connections not yet accepted, raw/SCTP sockets.
//! Datagrams queued on a UDP socket are dropped (logged). No network lock: a packet a
//! peer outside the tree sends while the process is checkpointed is lost.

use super::{Fd, FileIds, Opener};
use crate::error::{Error, Result};
use crate::image::{ImageDir, Kind};
use crate::sys::inet as net;
use cryo_proto::criu::{
    FdTypes, FileEntry, InetSkEntry, IpOptsEntry, SkOptsEntry, TcpOptsEntry, TcpStreamEntry,
};
use cryo_proto::magic;
use nix::errno::Errno;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

const TCP_STREAM: Kind = Kind {
    name: "tcp-stream",
    magic: magic::TCP_STREAM_MAGIC,
    common: true,
};

// <netinet/tcp.h> states.
const TCP_ESTABLISHED: u32 = 1;
const TCP_CLOSE: u32 = 7;
const TCP_LISTEN: u32 = 10;
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
        if u32::from(ti.state) != TCP_ESTABLISHED {
            return Err(Error::Unsupported {
                pid: self.pid,
                what: format!("TCP connection {}", self.desc),
                why: format!(
                    "it went to state {} during the dump",
                    state_name(ti.state.into())
                ),
            });
        }
        let inq_len = net::ioctl_int(sk, net::SIOCINQ).map_err(self.sys("ioctl(SIOCINQ)"))? as u32;
        let outq_len =
            net::ioctl_int(sk, net::SIOCOUTQ).map_err(self.sys("ioctl(SIOCOUTQ)"))? as u32;
        let unsq_len =
            net::ioctl_int(sk, net::SIOCOUTQNSD).map_err(self.sys("ioctl(SIOCOUTQNSD)"))? as u32;
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

fn fmt_addr(a: Option<SocketAddr>) -> String {
    a.map(|a| a.to_string())
        .unwrap_or_else(|| "(unbound)".into())
}

pub fn dump(f: &Fd, ino: u64, ids: &mut FileIds) -> Result<u32> {
    let sys = |call: &'static str| Error::sys(call, f.pid);
    let copy = f.copy()?;
    let sk = copy.as_fd();
    let family = net::getsockopt_int(sk, libc::SOL_SOCKET, libc::SO_DOMAIN)
        .map_err(sys("getsockopt(SO_DOMAIN)"))?;
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
            TCP_ESTABLISHED => {
                if !ids.opts.tcp_established {
                    return Err(f.unsupported(format!(
                        "established TCP connection {desc}; dump with --tcp-established \
                         to keep it (and restore with --tcp-established, or --tcp-close \
                         to get it back closed)"
                    )));
                }
            }
            TCP_CLOSE => {}
            s => {
                return Err(f.unsupported(format!(
                    "TCP connection {desc} in state {}: only listening, established and \
                     unconnected TCP sockets can be dumped; retry when it has closed",
                    state_name(s)
                )))
            }
        }
        // For a listener, tcpi_sacked is the backlog given to listen().
        (if state == TCP_LISTEN { ti.sacked } else { 0 }, state)
    } else {
        let queued = net::ioctl_int(sk, net::SIOCINQ).unwrap_or(0);
        if queued > 0 {
            log::warn!(pid = f.pid, fd = f.fd, sock = desc.as_str(); "datagrams queued on a UDP socket are not dumped (dropped)");
        }
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
    if tcp && state == TCP_ESTABLISHED {
        ids.inet.streams.push(Stream {
            pid: f.pid,
            ino: ino as u32,
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
}

/// Restored connections waiting to leave repair mode. Dropped without `finish` (a
/// failed restore), they close silently: still in repair mode, they send nothing.
#[derive(Debug, Default)]
pub struct Pending(Vec<Repaired>);

impl Pending {
    /// Takes every connection out of repair mode (the kernel sends a window probe to
    /// the peer), puts SO_REUSEADDR back and sends the data that was never sent.
    pub fn finish(self) -> Result<()> {
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
            log::debug!(conn = r.desc.as_str(), unsent = r.unsent.len(); "TCP connection released");
        }
        Ok(())
    }
}

/// Restore-side state: connections in repair mode.
#[derive(Debug, Default)]
pub struct Restorer {
    pending: Pending,
}

impl Restorer {
    pub fn load(_dir: &ImageDir) -> Result<Self> {
        Ok(Restorer::default())
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
    let established = tcp && isk.state == TCP_ESTABLISHED;
    if established && !op.opts.tcp_established && !op.opts.tcp_close {
        return Err(Error::Restore {
            pid: 0,
            msg: format!(
                "established TCP connection {desc}: restore with --tcp-established \
                 (or --tcp-close to get it back closed)"
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
        let unsent = restore_stream(op.dir, sk, isk, &local, &peer)?;
        file_flags(sk)?;
        let dup = sock
            .try_clone()
            .map_err(|e| fail("dup", Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
        op.inet.pending.0.push(Repaired {
            sk: dup,
            desc,
            reuseaddr: reuseaddr != 0,
            unsent,
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
        if let Some(p) = &peer {
            net::connect(sk, p).map_err(|e| fail("connect", e))?;
        }
    }
    net::setsockopt_int(sk, libc::SOL_SOCKET, libc::SO_REUSEADDR, reuseaddr)
        .map_err(|e| fail("setsockopt(SO_REUSEADDR)", e))?;
    file_flags(sk)?;
    Ok(sock)
}

/// Rebuilds an established connection in repair mode from its tcp-stream image;
/// returns the part of the send queue that was never sent.
fn restore_stream(
    dir: &ImageDir,
    sk: BorrowedFd,
    isk: &InetSkEntry,
    local: &SocketAddr,
    peer: &SocketAddr,
) -> Result<Vec<u8>> {
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
    for (queue, seq) in [
        (net::TCP_RECV_QUEUE, e.inq_seq.wrapping_sub(e.inq_len)),
        (net::TCP_SEND_QUEUE, e.outq_seq.wrapping_sub(e.outq_len)),
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
    log::debug!(conn = desc.as_str(), inq = e.inq_len, outq = e.outq_len, unsent = unsq; "TCP connection rebuilt in repair mode");
    Ok(outq[sent..].to_vec())
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
    fn state_names() {
        assert_eq!(state_name(TCP_LISTEN), "LISTEN");
        assert_eq!(state_name(8), "CLOSE_WAIT");
        assert_eq!(state_name(200), "?");
    }
}
