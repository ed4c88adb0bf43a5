//! Unix sockets: stream, datagram and seqpacket; socketpairs, sockets bound to a path
//! or an abstract name, listeners with connections not yet accepted, queued data in
//! both directions and descriptors in flight (SCM_RIGHTS).
//!
//! Dump: the kernel's view of every unix socket of the network namespace comes from
//! one sock_diag query (type, state, name, bound inode, peer inode, pending
//! connections, queue lengths, shutdown); sockets are matched across the tree by
//! inode. Each socket's receive queue is read with `MSG_PEEK` at a moving `SO_PEEK_OFF`
//! (put back as it was), so nothing is consumed; descriptors in flight arrive as our
//! own fds and are dumped as files of their own (kept open until the dump ends so
//! `kcmp` can match them with the tree's). Once the whole tree is seen (`finish`), a
//! peer outside it is a blocker unless `--ext-unix-sk`, which records it as an
//! external entry (`uflags` USK_EXTERN) to reconnect to by name.
//!
//! Restore: the first unix socket asked for builds all of them at once, in an order
//! that reproduces names and peers: connected stream pairs through a temporary
//! listener bound to the accepting side's name (or `socketpair` when both are
//! unnamed); then binds, listens, pending connections in queue order, queued data
//! (sent from the peer, datagrams from their sender), datagram connects, unlinks of
//! deleted names, shutdowns and options. Socket files created are removed again if
//! the restore fails.

use super::{Fd, FileIds, Opener};
use crate::error::{Error, Result};
use crate::image::{ImageDir, Kind};
use crate::sys::net;
use cryo_proto::criu::{
    FdTypes, FileEntry, FownEntry, ScmEntry, SkOptsEntry, SkPacketEntry, UnixSkEntry,
};
use cryo_proto::magic;
use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;

pub(crate) const SK_QUEUES: Kind = Kind {
    name: "sk-queues",
    magic: magic::SK_QUEUES_MAGIC,
    common: true,
};

/// `unix_sk_entry.uflags`: the socket is outside the tree (CRIU's USK_EXTERN).
pub const USK_EXTERN: u32 = 1;

const TCP_ESTABLISHED: u32 = 1;
const TCP_CLOSE: u32 = 7;
const TCP_LISTEN: u32 = 10;

/// One unix socket as sock_diag reports it.
#[derive(Debug, Clone, Default)]
struct Diag {
    ty: u32,
    state: u32,
    name: Vec<u8>,
    /// Inode of the socket file it is bound to.
    vfs_ino: Option<u32>,
    peer: u32,
    /// Listeners: the inodes of the clients waiting to be accepted, in queue order.
    icons: Vec<u32>,
    /// (receive queue, send queue): bytes, or for a listener (pending, backlog).
    rq: (u32, u32),
    shutdown: u32,
}

/// Every unix socket of our network namespace, by inode.
fn diag_all() -> std::result::Result<HashMap<u32, Diag>, nix::errno::Errno> {
    const UDIAG_SHOW_ALL: u32 = 0x1 | 0x2 | 0x4 | 0x8 | 0x10; // NAME VFS PEER ICONS RQLEN
    let mut req = vec![libc::AF_UNIX as u8, 0, 0, 0];
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    req.extend_from_slice(&0u32.to_ne_bytes()); // ino
    req.extend_from_slice(&UDIAG_SHOW_ALL.to_ne_bytes());
    req.extend_from_slice(&[0xff; 8]); // cookie: none
    let mut out = HashMap::new();
    for m in net::sock_diag_dump(&req)? {
        if let Some((ino, d)) = parse_diag(&m) {
            out.insert(ino, d);
        }
    }
    Ok(out)
}

/// One `unix_diag_msg` with its attributes; None if it is too short to be one.
fn parse_diag(m: &[u8]) -> Option<(u32, Diag)> {
    if m.len() < 16 {
        return None;
    }
    let u32_at = |b: &[u8], o: usize| -> u32 {
        b.get(o..o + 4)
            .map(|s| u32::from_ne_bytes(s.try_into().unwrap_or_default()))
            .unwrap_or(0)
    };
    let mut d = Diag {
        ty: m[1] as u32,
        state: m[2] as u32,
        ..Default::default()
    };
    let ino = u32_at(m, 4);
    let mut off = 16;
    while off + 4 <= m.len() {
        let len = u16::from_ne_bytes([m[off], m[off + 1]]) as usize;
        let ty = u16::from_ne_bytes([m[off + 2], m[off + 3]]);
        if len < 4 || off + len > m.len() {
            break;
        }
        let v = &m[off + 4..off + len];
        match ty {
            0 => {
                d.name = v.to_vec();
                if d.name.first() != Some(&0) {
                    while d.name.last() == Some(&0) {
                        d.name.pop();
                    }
                }
            }
            1 => d.vfs_ino = Some(u32_at(v, 0)),
            2 => d.peer = u32_at(v, 0),
            3 => d.icons = v.chunks_exact(4).map(|c| u32_at(c, 0)).collect(),
            4 => d.rq = (u32_at(v, 0), u32_at(v, 4)),
            6 => d.shutdown = v.first().copied().unwrap_or(0) as u32,
            _ => {}
        }
        off += (len + 3) & !3;
    }
    Some((ino, d))
}

/// A socket of the dump, for the whole-tree checks of `finish`.
#[derive(Debug)]
struct Dumped {
    ino: u32,
    id: u32,
    /// Where it was found: "pid P fd N (socket:[I])", or in flight on which socket.
    at: String,
}

/// What a dump collects besides the file entries: queued packets, and what the
/// whole-tree checks need.
#[derive(Debug, Default)]
pub struct DumpState {
    diag: Option<HashMap<u32, Diag>>,
    /// Client inode → the listener whose accept queue it waits in.
    pending_in: HashMap<u32, u32>,
    socks: Vec<Dumped>,
    by_ino: HashMap<u32, u32>,
    packets: Vec<(SkPacketEntry, Vec<u8>)>,
    /// Descriptors taken out of queues (in flight): kept open so that `kcmp` can
    /// match them against the tree's fds until the dump ends.
    inflight: Vec<OwnedFd>,
    /// Sockets whose queue is being read (a socket in flight in its own queue).
    busy: HashSet<u32>,
}

impl DumpState {
    /// A queued packet of another socket kind (UDP), for sk-queues.img.
    pub fn add_packet(&mut self, e: SkPacketEntry, data: Vec<u8>) {
        self.packets.push((e, data));
    }

    pub fn write(&self, dir: &ImageDir) -> Result<()> {
        if self.packets.is_empty() {
            return Ok(());
        }
        let mut w = dir.writer("sk-queues.img", SK_QUEUES)?;
        for (e, data) in &self.packets {
            w.entry(e)?;
            w.put(data)?;
        }
        w.finish()?;
        Ok(())
    }

    fn diag(&mut self, f: &Fd) -> Result<&HashMap<u32, Diag>> {
        if self.diag.is_none() {
            let all = diag_all().map_err(|e| {
                f.unsupported(format!(
                    "sock_diag netlink query for unix sockets failed ({e}); \
                     is CONFIG_UNIX_DIAG enabled?"
                ))
            })?;
            for (&l, d) in &all {
                if d.state == TCP_LISTEN {
                    for &c in &d.icons {
                        self.pending_in.insert(c, l);
                    }
                }
            }
            self.diag = Some(all);
        }
        Ok(self.diag.get_or_insert_with(HashMap::new))
    }

    /// The whole-tree checks, once every fd was seen: peers outside the tree are
    /// blockers, or with `--ext-unix-sk` external entries to reconnect to.
    fn finish(&mut self, ids: &mut FileIds, blockers: &mut Vec<String>) {
        let Some(diag) = self.diag.take() else {
            return;
        };
        let ext = ids.opts.ext_unix_sk;
        let mut externs: HashMap<u32, u32> = HashMap::new();
        let show = |ino: u32| -> String {
            match diag.get(&ino) {
                Some(d) if !d.name.is_empty() => {
                    format!("socket:[{ino}] ({})", name_str(&d.name))
                }
                _ => format!("socket:[{ino}]"),
            }
        };
        let mut add_extern = |ids: &mut FileIds, ino: u32, peer: u32, pos: u32| {
            if externs.contains_key(&ino) {
                return;
            }
            let d = diag.get(&ino).cloned().unwrap_or_default();
            let id = ids.next_id();
            externs.insert(ino, id);
            ids.files.push(FileEntry {
                r#type: FdTypes::Unixsk as i32,
                id,
                usk: Some(UnixSkEntry {
                    id,
                    ino,
                    r#type: d.ty,
                    state: d.state,
                    uflags: USK_EXTERN,
                    backlog: pos,
                    peer,
                    name: d.name.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            });
        };
        let ext_hint = "dump the process holding it too, or use --ext-unix-sk to reconnect to it by name on restore";
        for s in &self.socks {
            let Some(d) = diag.get(&s.ino) else { continue };
            let mut usk_peer = None;
            if d.state == TCP_LISTEN {
                for (pos, &c) in d.icons.iter().enumerate() {
                    if let Some(cd) = diag.get(&c) {
                        if cd.rq.1 > 0 {
                            blockers.push(format!(
                                "{}: the connection from {} not yet accepted has {} bytes queued, which cannot be read before accept(); accept it before dumping",
                                s.at, show(c), cd.rq.1
                            ));
                        }
                    }
                    if self.by_ino.contains_key(&c) {
                        continue;
                    }
                    if !ext {
                        blockers.push(format!(
                            "{}: a connection waiting to be accepted comes from {}, outside the dumped tree; {ext_hint}",
                            s.at, show(c)
                        ));
                    } else {
                        add_extern(ids, c, s.ino, pos as u32);
                    }
                }
                continue;
            }
            if d.peer == 0 {
                // A client waiting in a listener's queue (its peer, the not yet accepted
                // socket, has no inode), or a peer that was closed.
                if let Some(&l) = self.pending_in.get(&s.ino) {
                    let pos = diag
                        .get(&l)
                        .and_then(|ld| ld.icons.iter().position(|&c| c == s.ino))
                        .unwrap_or(0);
                    usk_peer = Some((l, pos as u32));
                    if !self.by_ino.contains_key(&l) {
                        if !ext {
                            blockers.push(format!(
                                "{}: its connection waits to be accepted by {}, outside the dumped tree; {ext_hint}",
                                s.at, show(l)
                            ));
                        } else if diag.get(&l).is_none_or(|ld| ld.name.is_empty()) {
                            blockers.push(format!(
                                "{}: the listener it connects to has no name to reconnect to",
                                s.at
                            ));
                        } else {
                            add_extern(ids, l, 0, 0);
                        }
                    }
                }
                if let Some((l, pos)) = usk_peer {
                    if let Some(u) = ids
                        .files
                        .iter_mut()
                        .find(|f| f.id == s.id)
                        .and_then(|f| f.usk.as_mut())
                    {
                        u.peer = l;
                        u.backlog = pos;
                    }
                }
                continue;
            }
            if self.by_ino.contains_key(&d.peer) {
                let pd = &diag[&d.peer];
                if d.ty == libc::SOCK_DGRAM as u32 && pd.name.is_empty() && pd.peer != s.ino {
                    blockers.push(format!(
                        "{}: datagram socket connected to the unnamed {} which is not connected back; cryo cannot reconnect it",
                        s.at, show(d.peer)
                    ));
                }
                continue;
            }
            if !ext {
                blockers.push(format!(
                    "{}: its peer {} is outside the dumped tree; {ext_hint}",
                    s.at,
                    show(d.peer)
                ));
                continue;
            }
            let pname = diag
                .get(&d.peer)
                .map(|p| p.name.clone())
                .unwrap_or_default();
            if pname.is_empty() {
                blockers.push(format!(
                    "{}: its peer {} is outside the dumped tree and has no name to reconnect to",
                    s.at,
                    show(d.peer)
                ));
                continue;
            }
            if d.ty != libc::SOCK_DGRAM as u32 && d.rq.0 > 0 {
                blockers.push(format!(
                    "{}: {} bytes queued from its external peer {} would be lost; read them before dumping",
                    s.at,
                    d.rq.0,
                    show(d.peer)
                ));
                continue;
            }
            add_extern(ids, d.peer, 0, 0);
        }
    }
}

/// The whole-tree checks of the unix sockets, once every fd of the tree was seen.
pub fn finish(ids: &mut FileIds, blockers: &mut Vec<String>) {
    let mut st = std::mem::take(&mut ids.unix);
    st.finish(ids, blockers);
    ids.unix = st;
}

/// A unix name for messages: the path, or `@name` for an abstract one.
pub fn name_str(n: &[u8]) -> String {
    match n.split_first() {
        Some((0, rest)) => format!("@{}", String::from_utf8_lossy(rest)),
        _ => String::from_utf8_lossy(n).into_owned(),
    }
}

fn opts_of(fd: BorrowedFd) -> std::result::Result<SkOptsEntry, nix::errno::Errno> {
    let int = |o| net::getsockopt_int(fd, libc::SOL_SOCKET, o);
    let (ss, su) = net::getsockopt_timeval(fd, libc::SO_SNDTIMEO)?;
    let (rs, ru) = net::getsockopt_timeval(fd, libc::SO_RCVTIMEO)?;
    Ok(SkOptsEntry {
        so_sndbuf: int(libc::SO_SNDBUF)? as u32,
        so_rcvbuf: int(libc::SO_RCVBUF)? as u32,
        so_snd_tmo_sec: ss,
        so_snd_tmo_usec: su,
        so_rcv_tmo_sec: rs,
        so_rcv_tmo_usec: ru,
        so_passcred: Some(int(libc::SO_PASSCRED)? != 0),
        so_passsec: Some(int(libc::SO_PASSSEC)? != 0),
        ..Default::default()
    })
}

/// `copy` is cryo's own copy of the socket (pidfd_getfd).
pub fn dump(f: &Fd, copy: OwnedFd, ino: u64, ids: &mut FileIds) -> Result<u32> {
    let ino = ino as u32;
    let at = format!("pid {} fd {} (socket:[{ino}])", f.pid, f.fd);
    dump_sock(f, copy.as_fd(), ino, at, ids)
}

fn dump_sock(f: &Fd, sk: BorrowedFd, ino: u32, at: String, ids: &mut FileIds) -> Result<u32> {
    let d = match ids.unix.diag(f)?.get(&ino) {
        Some(d) => d.clone(),
        None => {
            return Err(f.unsupported(
                "sock_diag does not know this unix socket: it belongs to another network namespace, which cryo does not dump yet",
            ))
        }
    };
    if !matches!(
        d.ty as i32,
        libc::SOCK_STREAM | libc::SOCK_DGRAM | libc::SOCK_SEQPACKET
    ) {
        return Err(f.unsupported(format!("unix socket of type {}", d.ty)));
    }
    if !matches!(d.state, TCP_ESTABLISHED | TCP_CLOSE | TCP_LISTEN) {
        return Err(f.unsupported(format!("unix socket in state {}", d.state)));
    }
    if !d.name.is_empty() && d.name[0] != 0 && d.name[0] != b'/' {
        return Err(f.unsupported(format!(
            "bound to the relative path {:?}; cryo restores only absolute socket paths (bind to an absolute path)",
            name_str(&d.name)
        )));
    }
    let opts = opts_of(sk).map_err(Error::sys("getsockopt", f.pid))?;
    // Bound to a path that is no longer there (or is another file now)?
    let deleted = match (&d.name.first(), d.vfs_ino) {
        (Some(b'/'), Some(vino)) => {
            let p = path_of(&d.name);
            Some(
                std::fs::metadata(p)
                    .map(|m| std::os::unix::fs::MetadataExt::ino(&m) != vino as u64)
                    .unwrap_or(true),
            )
        }
        _ => None,
    };
    let id = ids.next_id();
    ids.unix.by_ino.insert(ino, id);
    if d.state != TCP_LISTEN {
        ids.unix.busy.insert(ino);
        let r = dump_queue(f, sk, ino, id, &d, &at, ids);
        ids.unix.busy.remove(&ino);
        if let Err(e) = r {
            ids.unix.by_ino.remove(&ino);
            return Err(e);
        }
    }
    let backlog = if d.state == TCP_LISTEN { d.rq.1 } else { 0 };
    ids.files.push(FileEntry {
        r#type: FdTypes::Unixsk as i32,
        id,
        usk: Some(UnixSkEntry {
            id,
            ino,
            r#type: d.ty,
            state: d.state,
            flags: f.flags,
            uflags: 0,
            backlog,
            peer: d.peer,
            fown: FownEntry::default(),
            opts,
            name: d.name.clone(),
            shutdown: Some(d.shutdown as i32),
            deleted,
            ..Default::default()
        }),
        ..Default::default()
    });
    ids.unix.socks.push(Dumped { ino, id, at });
    Ok(id)
}

/// The path a socket name stands for.
fn path_of(name: &[u8]) -> &std::path::Path {
    std::path::Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name))
}

/// Restores a socket's peek offset when the queue has been read (or reading failed).
struct PeekOff<'a> {
    sk: BorrowedFd<'a>,
    orig: i32,
}
impl Drop for PeekOff<'_> {
    fn drop(&mut self) {
        let _ = net::setsockopt_int(self.sk, libc::SOL_SOCKET, libc::SO_PEEK_OFF, self.orig);
    }
}

/// Reads the receive queue of `sk` without consuming it; packets go to `ids.unix`.
fn dump_queue(
    f: &Fd,
    sk: BorrowedFd,
    ino: u32,
    id: u32,
    d: &Diag,
    at: &str,
    ids: &mut FileIds,
) -> Result<()> {
    let dgram = d.ty == libc::SOCK_DGRAM as u32;
    let orig = net::getsockopt_int(sk, libc::SOL_SOCKET, libc::SO_PEEK_OFF)
        .map_err(Error::sys("getsockopt(SO_PEEK_OFF)", f.pid))?;
    let _guard = PeekOff { sk, orig };
    let mut buf = vec![0u8; 256 * 1024];
    let mut off: usize = 0;
    let mut first_len = None;
    loop {
        net::setsockopt_int(sk, libc::SOL_SOCKET, libc::SO_PEEK_OFF, off as i32)
            .map_err(Error::sys("setsockopt(SO_PEEK_OFF)", f.pid))?;
        let p = match net::recv_peek(sk, &mut buf, dgram) {
            Ok(p) => p,
            Err(nix::errno::Errno::EAGAIN) => break,
            Err(e) => return Err(Error::sys("recvmsg(MSG_PEEK)", f.pid)(e)),
        };
        if dgram && p.full > p.len {
            buf.resize(p.full, 0);
            continue;
        }
        if p.ctrunc {
            return Err(f.unsupported("too many descriptors in flight in one message"));
        }
        if p.len == 0 && p.fds.is_empty() {
            if dgram {
                return Err(f.unsupported(
                    "a zero-length datagram is queued; cryo cannot read past it without consuming it",
                ));
            }
            break; // end of stream
        }
        first_len.get_or_insert(p.len);
        let mut rights = Vec::new();
        for fd in p.fds {
            rights.push(dump_inflight(f, fd, at, ids)?);
        }
        let e = SkPacketEntry {
            id_for: id,
            length: p.len as u32,
            addr: (dgram && !p.from.is_empty()).then(|| p.from.clone()),
            scm: if rights.is_empty() {
                Vec::new()
            } else {
                vec![ScmEntry {
                    r#type: libc::SCM_RIGHTS as u32,
                    rights,
                }]
            },
        };
        log::debug!(ino = ino, bytes = p.len; "unix socket: queued packet");
        ids.unix.packets.push((e, buf[..p.len].to_vec()));
        off += p.len;
        if ids.unix.packets.len() > 1_000_000 {
            return Err(f.unsupported("more than a million packets queued"));
        }
    }
    // Everything the kernel counts must have been read (out-of-band data is not).
    let counted = if dgram { first_len.unwrap_or(0) } else { off };
    if counted != d.rq.0 as usize {
        return Err(f.unsupported(format!(
            "{} bytes are queued but only {counted} could be read without consuming them (out-of-band data?)",
            d.rq.0
        )));
    }
    Ok(())
}

/// A descriptor in flight (our own copy, from MSG_PEEK): dumped as a file of its own,
/// or matched with the tree's description of it.
fn dump_inflight(f: &Fd, fd: OwnedFd, at: &str, ids: &mut FileIds) -> Result<u32> {
    let me = std::process::id() as i32;
    let raw = fd.as_raw_fd();
    ids.unix.inflight.push(fd);
    if let Ok(Ok(i)) = ids.find_desc(me, raw) {
        return Ok(ids.descs[i].2);
    }
    let target = crate::proc::read_link(me, &format!("fd/{raw}"))?;
    if let Some(rest) = target.strip_prefix("socket:[") {
        let ino: u32 = rest.trim_end_matches(']').parse().unwrap_or(0);
        if ids.unix.busy.contains(&ino) || ids.unix.by_ino.contains_key(&ino) {
            if let Some(&id) = ids.unix.by_ino.get(&ino) {
                if !ids.unix.busy.contains(&ino) {
                    return Ok(id);
                }
            }
            return Err(f.unsupported(format!(
                "socket:[{ino}] is in flight in its own queue (or one it is reading); cryo cannot dump such a cycle"
            )));
        }
    }
    let raw_info = crate::proc::read(me, &format!("fdinfo/{raw}"))?;
    let info = crate::proc::parse_fdinfo(&raw_info)?;
    let pidfd = crate::sys::pidfd::pidfd_open(nix::unistd::Pid::from_raw(me))
        .map_err(Error::sys("pidfd_open", me))?;
    let inner = Fd {
        pid: me,
        fd: raw,
        target: &target,
        fdinfo: &raw_info,
        flags: info.flags & !(libc::O_CLOEXEC as u32),
        pos: info.pos,
        pidfd: pidfd.as_fd(),
    };
    let id = match super::dump_one(&inner, ids) {
        Ok(id) => id,
        Err(Error::Unsupported { why, .. }) => {
            return Err(f.unsupported(format!("{target} in flight on this socket: {why}")))
        }
        Err(e) => return Err(e),
    };
    if let Ok(Err(pos)) = ids.find_desc(me, raw) {
        ids.descs.insert(pos, (me, raw, id));
    }
    // In-flight sockets are named by where they travel.
    if let Some(s) = ids.unix.socks.iter_mut().find(|s| s.id == id) {
        s.at = format!("{} in flight on {at}", target);
    }
    Ok(id)
}

// ---------------------------------------------------------------------------------
// Restore

/// Socket files a restore created: removed if the restore fails.
#[derive(Debug, Default)]
pub struct CreatedPaths {
    paths: Vec<PathBuf>,
}

impl CreatedPaths {
    /// The restore succeeded: the files stay.
    pub fn disarm(mut self) {
        self.paths.clear();
    }
}

impl Drop for CreatedPaths {
    fn drop(&mut self) {
        for p in &self.paths {
            log::debug!(path = p.display().to_string(); "removing socket file of a failed restore");
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Restore-side state: queued packets, and every socket once built.
#[derive(Debug, Default)]
pub struct Restorer {
    packets: HashMap<u32, Vec<(SkPacketEntry, Vec<u8>)>>,
    built: bool,
    /// Sockets made, by inode, until handed out.
    made: HashMap<u32, OwnedFd>,
    created: CreatedPaths,
}

impl Restorer {
    pub fn load(dir: &ImageDir) -> Result<Self> {
        let mut packets: HashMap<u32, Vec<_>> = HashMap::new();
        if dir.file("sk-queues.img").exists() {
            let mut r = dir.reader("sk-queues.img", SK_QUEUES)?;
            while let Some(e) = r.next_entry::<SkPacketEntry>()? {
                let data = r.read_raw(e.length as u64)?;
                packets.entry(e.id_for).or_default().push((e, data));
            }
        }
        Ok(Restorer {
            packets,
            ..Default::default()
        })
    }

    /// The socket files made so far; they are removed when the returned guard drops
    /// unless it is disarmed (the caller does that once the restore succeeded).
    pub fn take_created(&mut self) -> CreatedPaths {
        std::mem::take(&mut self.created)
    }
}

fn rerr(msg: String) -> Error {
    Error::Restore { pid: 0, msg }
}

fn sys<'a>(what: &'static str, e: &'a UnixSkEntry) -> impl FnOnce(nix::errno::Errno) -> Error + 'a {
    move |err| {
        rerr(format!(
            "unix socket {} ({}): {what}: {err}",
            e.ino,
            if e.name.is_empty() {
                "unnamed".into()
            } else {
                name_str(&e.name)
            }
        ))
    }
}

pub fn restore(op: &mut Opener, fe: &FileEntry) -> Result<OwnedFd> {
    let e = fe
        .usk
        .as_ref()
        .ok_or_else(|| rerr(format!("file {}: unix socket entry missing", fe.id)))?;
    if e.uflags & USK_EXTERN != 0 {
        return Err(rerr(format!(
            "file {}: socket {} is outside the tree and is not opened",
            fe.id, e.ino
        )));
    }
    if !op.unix.built {
        let mut r = std::mem::take(&mut op.unix);
        r.built = true;
        let res = build(&mut r, op);
        // Keep what was made (and the files to remove on failure) either way.
        op.unix = r;
        res?;
    }
    op.unix.made.remove(&e.ino).ok_or_else(|| {
        rerr(format!(
            "file {}: unix socket {} opened twice",
            fe.id, e.ino
        ))
    })
}

/// What `build` works with.
struct Plan<'a> {
    /// Sockets of the tree, by inode.
    socks: HashMap<u32, &'a UnixSkEntry>,
    /// Sockets outside the tree (--ext-unix-sk), by inode.
    externs: HashMap<u32, &'a UnixSkEntry>,
    order: Vec<u32>,
}

fn is_path(name: &[u8]) -> bool {
    name.first().is_some_and(|&c| c != 0)
}

/// Removes a stale socket file left at `name` (only a socket: anything else is an
/// error, never removed).
fn clear_stale(e: &UnixSkEntry, name: &[u8]) -> Result<()> {
    if !is_path(name) {
        return Ok(());
    }
    let p = path_of(name);
    match std::fs::symlink_metadata(p) {
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            // Stale only if nobody is bound to it: a connect is refused.
            let probe = net::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK)
                .map_err(sys("socket", e))?;
            match net::unix_connect(probe.as_fd(), name) {
                Err(nix::errno::Errno::ECONNREFUSED) => {
                    std::fs::remove_file(p).map_err(Error::io("unlink stale socket", p))
                }
                _ => Err(rerr(format!(
                    "unix socket {}: {} is in use by a live socket",
                    e.ino,
                    p.display()
                ))),
            }
        }
        Ok(_) => Err(rerr(format!(
            "unix socket {}: {} exists and is not a socket",
            e.ino,
            p.display()
        ))),
        Err(_) => Ok(()),
    }
}

impl Restorer {
    fn bind(&mut self, fd: BorrowedFd, e: &UnixSkEntry, name: &[u8]) -> Result<()> {
        clear_stale(e, name)?;
        net::unix_bind(fd, name).map_err(sys("bind", e))?;
        if is_path(name) {
            self.created.paths.push(path_of(name).to_path_buf());
        }
        Ok(())
    }

    /// Removes a socket file this restore made (and only such a file).
    fn unlink(&mut self, name: &[u8]) {
        let p = path_of(name);
        if is_path(name) && self.created.paths.iter().any(|x| x == p) {
            let _ = std::fs::remove_file(p);
            self.created.paths.retain(|x| x != p);
        }
    }

    /// A connected pair whose `server` end carries `server.name` (it was accepted from
    /// a listener of that name) and whose client is `client` (None: a peer that was
    /// closed, or is outside the tree). Returns (client end, server end).
    fn connected_pair(
        &mut self,
        ty: i32,
        client: Option<&UnixSkEntry>,
        server: &UnixSkEntry,
    ) -> Result<(OwnedFd, OwnedFd)> {
        let cname: &[u8] = client.map(|c| &c.name[..]).unwrap_or(&[]);
        if server.name.is_empty() && cname.is_empty() {
            return net::socketpair(ty).map_err(sys("socketpair", server));
        }
        if server.name.is_empty() {
            // Only the client is named: it must be the accepting side.
            let (s, c) = self.connected_pair(ty, Some(server), client.unwrap_or(server))?;
            return Ok((c, s));
        }
        let tmp = net::socket(libc::AF_UNIX, ty).map_err(sys("socket", server))?;
        self.bind(tmp.as_fd(), server, &server.name)?;
        let res = (|| {
            net::listen(tmp.as_fd(), 1).map_err(sys("listen", server))?;
            let c = net::socket(libc::AF_UNIX, ty).map_err(sys("socket", server))?;
            if let Some(ce) = client.filter(|c| !c.name.is_empty()) {
                self.bind(c.as_fd(), ce, &ce.name)?;
            }
            net::unix_connect(c.as_fd(), &server.name).map_err(sys("connect", server))?;
            let s = net::accept(tmp.as_fd()).map_err(sys("accept", server))?;
            Ok((c, s))
        })();
        drop(tmp);
        self.unlink(&server.name);
        res
    }
}

/// Builds every unix socket of the image (see the module doc for the order).
fn build(r: &mut Restorer, op: &mut Opener) -> Result<()> {
    let mut plan = Plan {
        socks: HashMap::new(),
        externs: HashMap::new(),
        order: Vec::new(),
    };
    let mut all: Vec<&FileEntry> = op
        .by_id
        .values()
        .copied()
        .filter(|f| f.usk.is_some())
        .collect();
    all.sort_by_key(|f| f.id);
    for f in all {
        let Some(u) = f.usk.as_ref() else { continue };
        if u.uflags & USK_EXTERN != 0 {
            plan.externs.insert(u.ino, u);
        } else {
            plan.socks.insert(u.ino, u);
            plan.order.push(u.ino);
        }
    }
    let ty_of = |e: &UnixSkEntry| e.r#type as i32;
    let stream = |e: &UnixSkEntry| e.r#type != libc::SOCK_DGRAM as u32;
    let is_listener = |ino: u32, plan: &Plan| {
        plan.socks
            .get(&ino)
            .or(plan.externs.get(&ino))
            .is_some_and(|p| p.state == TCP_LISTEN)
    };
    // The other end of pairs whose peer is gone (or outside), to send queued data
    // from and close at the end.
    let mut spare: HashMap<u32, OwnedFd> = HashMap::new();
    let mut named_done: HashSet<u32> = HashSet::new();

    // 1. Connected stream/seqpacket sockets, pairwise; datagram socketpairs.
    for &ino in &plan.order {
        let e = plan.socks[&ino];
        if r.made.contains_key(&ino) || e.state != TCP_ESTABLISHED {
            continue;
        }
        let peer = plan.socks.get(&e.peer).copied();
        if stream(e) {
            if is_listener(e.peer, &plan) {
                continue; // waiting to be accepted: step 4
            }
            match peer {
                Some(p) if p.peer == ino => {
                    // The accepted side carries a listener's name; if both are named,
                    // the one whose name is a listener's (or the peer's name) is it.
                    let e_is_server = !e.name.is_empty()
                        && (p.name.is_empty()
                            || plan
                                .socks
                                .values()
                                .any(|l| l.state == TCP_LISTEN && l.name == e.name));
                    let (c, s) = if e_is_server {
                        let (c, s) = r.connected_pair(ty_of(e), Some(p), e)?;
                        (s, c)
                    } else {
                        r.connected_pair(ty_of(e), Some(e), p)?
                    };
                    r.made.insert(ino, c);
                    r.made.insert(p.ino, s);
                    named_done.extend([ino, p.ino]);
                }
                Some(_) => {
                    return Err(rerr(format!(
                        "unix socket {ino}: its peer {} is connected elsewhere",
                        e.peer
                    )))
                }
                None if plan.externs.contains_key(&e.peer) => {} // step 4
                None => {
                    // The peer was closed: a pair whose other end closes at the end.
                    let (other, mine) = r.connected_pair(ty_of(e), None, e)?;
                    r.made.insert(ino, mine);
                    spare.insert(ino, other);
                    named_done.insert(ino);
                }
            }
        } else if let Some(p) = peer {
            if p.peer == ino && (e.name.is_empty() || p.name.is_empty()) {
                let (a, b) = net::socketpair(ty_of(e)).map_err(sys("socketpair", e))?;
                r.made.insert(ino, a);
                r.made.insert(p.ino, b);
            }
        }
    }
    // 2. Everything else is a fresh socket; names are bound, listeners listen.
    for &ino in &plan.order {
        let e = plan.socks[&ino];
        if let std::collections::hash_map::Entry::Vacant(v) = r.made.entry(ino) {
            v.insert(
                net::socket(libc::AF_UNIX, ty_of(e) | libc::SOCK_NONBLOCK)
                    .map_err(sys("socket", e))?,
            );
        }
        if !named_done.contains(&ino) && !e.name.is_empty() {
            let fd = r.made[&ino]
                .try_clone()
                .map_err(Error::io("dup", "socket"))?;
            r.bind(fd.as_fd(), e, &e.name)?;
        }
        if e.state == TCP_LISTEN {
            net::listen(r.made[&ino].as_fd(), e.backlog as i32).map_err(sys("listen", e))?;
        }
    }
    // 3. Connections waiting to be accepted, in each listener's queue order; sockets
    // connected to a listener outside the tree connect again.
    let mut pending: Vec<(u32, u32, u32, bool)> = Vec::new(); // (listener, pos, ino, ours)
    for &ino in &plan.order {
        let e = plan.socks[&ino];
        if stream(e) && e.state == TCP_ESTABLISHED && is_listener(e.peer, &plan) {
            pending.push((e.peer, e.backlog, ino, true));
        } else if stream(e) && e.state == TCP_ESTABLISHED && plan.externs.contains_key(&e.peer) {
            let x = plan.externs[&e.peer];
            let fd = r.made[&ino].as_fd();
            net::unix_connect(fd, &x.name).map_err(sys("connect to the external peer", e))?;
        }
    }
    for x in plan.externs.values() {
        if plan
            .socks
            .get(&x.peer)
            .is_some_and(|l| l.state == TCP_LISTEN)
        {
            pending.push((x.peer, x.backlog, x.ino, false));
        }
    }
    pending.sort();
    for (l, _, ino, ours) in pending {
        let lname = plan
            .socks
            .get(&l)
            .or(plan.externs.get(&l))
            .map(|x| x.name.clone())
            .unwrap_or_default();
        let e = plan.socks.get(&ino).or(plan.externs.get(&ino)).copied();
        let Some(e) = e else { continue };
        if ours {
            net::unix_connect(r.made[&ino].as_fd(), &lname).map_err(sys("connect", e))?;
        } else {
            // A client outside the tree: a stand-in that connects and goes away.
            let c = net::socket(libc::AF_UNIX, ty_of(e) | libc::SOCK_NONBLOCK)
                .map_err(sys("socket", e))?;
            net::unix_connect(c.as_fd(), &lname).map_err(sys("connect", e))?;
        }
    }
    // 4. Queued data, sent from the peer (datagrams: from their sender).
    let big = 64 << 20;
    for fd in r.made.values().chain(spare.values()) {
        let _ = net::setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, big);
    }
    let mut tmp_sender: Option<OwnedFd> = None;
    for &ino in &plan.order {
        let e = plan.socks[&ino];
        let Some(pkts) = r.packets.get(&e.id) else {
            continue;
        };
        for (pe, data) in pkts {
            let mut fds: Vec<RawFd> = Vec::new();
            for scm in &pe.scm {
                if scm.r#type != libc::SCM_RIGHTS as u32 {
                    return Err(rerr(format!(
                        "unix socket {ino}: control message of type {} not supported",
                        scm.r#type
                    )));
                }
                for &id in &scm.rights {
                    let inner = op.entry(id)?;
                    let raw = match inner.usk.as_ref().and_then(|u| r.made.get(&u.ino)) {
                        Some(fd) => fd.as_raw_fd(),
                        None if inner.usk.is_some() => {
                            return Err(rerr(format!(
                                "unix socket {ino}: socket file {id} in flight is unknown"
                            )))
                        }
                        None => op.open(id)?,
                    };
                    fds.push(raw);
                }
            }
            let (sender, to): (BorrowedFd, Option<&[u8]>) = if stream(e) {
                let s = plan
                    .socks
                    .get(&e.peer)
                    .and_then(|p| r.made.get(&p.ino))
                    .or(spare.get(&ino))
                    .ok_or_else(|| {
                        rerr(format!(
                            "unix socket {ino}: no peer to send its queued data from"
                        ))
                    })?;
                (s.as_fd(), None)
            } else {
                let from: &[u8] = pe.addr.as_deref().unwrap_or(&[]);
                let peer = plan.socks.get(&e.peer).copied();
                let by_name = (!from.is_empty())
                    .then(|| plan.socks.values().find(|s| s.name == from && s.ino != ino))
                    .flatten()
                    .copied();
                let to = (!e.name.is_empty()).then_some(&e.name[..]);
                let pair = peer.filter(|p| p.peer == ino && p.name == from);
                if let Some(p) = pair {
                    // Connected back to us (a socketpair when either is unnamed).
                    let to = if e.name.is_empty() || p.name.is_empty() {
                        None
                    } else {
                        to
                    };
                    (r.made[&p.ino].as_fd(), to)
                } else if e.name.is_empty() {
                    return Err(rerr(format!(
                        "unix socket {ino}: unnamed datagram socket with data from a sender that cannot reach it"
                    )));
                } else if let Some(s) = by_name.or(peer.filter(|p| p.name == from)) {
                    (r.made[&s.ino].as_fd(), Some(&e.name[..]))
                } else {
                    if tmp_sender.is_none() {
                        tmp_sender = Some(
                            net::socket(libc::AF_UNIX, libc::SOCK_DGRAM)
                                .map_err(sys("socket", e))?,
                        );
                    }
                    let t = tmp_sender.as_ref().map(|t| t.as_fd());
                    (
                        t.ok_or_else(|| rerr("no sender".into()))?,
                        Some(&e.name[..]),
                    )
                }
            };
            let mut sent = 0;
            let mut first = true;
            while first || sent < data.len() {
                let f: &[RawFd] = if first { &fds } else { &[] };
                let n = net::send_with_fds(sender, &data[sent..], f, to)
                    .map_err(sys("send queued data", e))?;
                if !stream(e) || e.r#type == libc::SOCK_SEQPACKET as u32 {
                    if n != data.len() {
                        return Err(rerr(format!(
                            "unix socket {ino}: a message of {} bytes was cut to {n}",
                            data.len()
                        )));
                    }
                    break;
                }
                sent += n;
                first = false;
            }
        }
    }
    drop(tmp_sender);
    // 5. Datagram sockets connect to their peers (after the data: a connected socket
    // accepts data from its peer only).
    for &ino in &plan.order {
        let e = plan.socks[&ino];
        if stream(e) || e.peer == 0 {
            continue;
        }
        let target = plan.socks.get(&e.peer).or(plan.externs.get(&e.peer));
        let Some(p) = target else { continue };
        if p.name.is_empty() || (p.peer == ino && e.name.is_empty()) {
            continue; // a socketpair, made connected
        }
        net::unix_connect(r.made[&ino].as_fd(), &p.name).map_err(sys("connect", e))?;
    }
    // 6. Names that were unlinked; shutdowns; options and status flags.
    for &ino in &plan.order {
        let e = plan.socks[&ino];
        if e.deleted == Some(true) {
            r.unlink(&e.name);
        }
    }
    drop(spare);
    for &ino in &plan.order {
        let e = plan.socks[&ino];
        let fd = r.made[&ino].as_fd();
        let how = e.shutdown.unwrap_or(0);
        let how = match how & 3 {
            1 => Some(libc::SHUT_RD),
            2 => Some(libc::SHUT_WR),
            3 => Some(libc::SHUT_RDWR),
            _ => None,
        };
        if let Some(h) = how {
            // A socket whose peer closed is shut down already.
            if let Err(err) = net::shutdown(fd, h) {
                if err != nix::errno::Errno::ENOTCONN {
                    return Err(sys("shutdown", e)(err));
                }
            }
        }
        set_opts(fd, e)?;
        crate::sys::fd::fcntl_int(
            fd,
            libc::F_SETFL,
            (e.flags & (libc::O_NONBLOCK | libc::O_ASYNC) as u32) as i32,
        )
        .map_err(sys("fcntl(F_SETFL)", e))?;
    }
    Ok(())
}

fn set_opts(fd: BorrowedFd, e: &UnixSkEntry) -> Result<()> {
    let o = &e.opts;
    let int = |opt, v: i32| net::setsockopt_int(fd, libc::SOL_SOCKET, opt, v);
    // The kernel doubles what is set; what was read is the doubled value.
    if o.so_sndbuf > 0 {
        int(libc::SO_SNDBUFFORCE, (o.so_sndbuf / 2) as i32)
            .or_else(|_| int(libc::SO_SNDBUF, (o.so_sndbuf / 2) as i32))
            .map_err(sys("setsockopt(SO_SNDBUF)", e))?;
    }
    if o.so_rcvbuf > 0 {
        int(libc::SO_RCVBUFFORCE, (o.so_rcvbuf / 2) as i32)
            .or_else(|_| int(libc::SO_RCVBUF, (o.so_rcvbuf / 2) as i32))
            .map_err(sys("setsockopt(SO_RCVBUF)", e))?;
    }
    if o.so_passcred == Some(true) {
        int(libc::SO_PASSCRED, 1).map_err(sys("setsockopt(SO_PASSCRED)", e))?;
    }
    if o.so_passsec == Some(true) {
        int(libc::SO_PASSSEC, 1).map_err(sys("setsockopt(SO_PASSSEC)", e))?;
    }
    if o.so_snd_tmo_sec != 0 || o.so_snd_tmo_usec != 0 {
        net::setsockopt_timeval(fd, libc::SO_SNDTIMEO, o.so_snd_tmo_sec, o.so_snd_tmo_usec)
            .map_err(sys("setsockopt(SO_SNDTIMEO)", e))?;
    }
    if o.so_rcv_tmo_sec != 0 || o.so_rcv_tmo_usec != 0 {
        net::setsockopt_timeval(fd, libc::SO_RCVTIMEO, o.so_rcv_tmo_sec, o.so_rcv_tmo_usec)
            .map_err(sys("setsockopt(SO_RCVTIMEO)", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, v: &[u8]) -> Vec<u8> {
        let mut a = ((4 + v.len()) as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(v);
        while !a.len().is_multiple_of(4) {
            a.push(0);
        }
        a
    }

    #[test]
    fn parses_a_listener_with_pending_clients() {
        let mut m = vec![libc::AF_UNIX as u8, 1, 10, 0];
        m.extend_from_slice(&77u32.to_ne_bytes());
        m.extend_from_slice(&[0; 8]);
        m.extend(attr(0, b"/tmp/l.sock\0"));
        m.extend(attr(1, &[5, 0, 0, 0, 9, 0, 0, 0]));
        m.extend(attr(2, &0u32.to_ne_bytes()));
        m.extend(attr(3, &[10, 0, 0, 0, 11, 0, 0, 0]));
        m.extend(attr(4, &[2, 0, 0, 0, 8, 0, 0, 0]));
        m.extend(attr(6, &[3]));
        let (ino, d) = parse_diag(&m).unwrap();
        assert_eq!(ino, 77);
        assert_eq!((d.ty, d.state), (1, TCP_LISTEN));
        assert_eq!(d.name, b"/tmp/l.sock");
        assert_eq!(d.vfs_ino, Some(5));
        assert_eq!(d.icons, vec![10, 11]);
        assert_eq!(d.rq, (2, 8));
        assert_eq!(d.shutdown, 3);
        assert_eq!(name_str(&d.name), "/tmp/l.sock");
    }

    #[test]
    fn abstract_names_keep_their_bytes() {
        let mut m = vec![libc::AF_UNIX as u8, 2, 7, 0, 1, 0, 0, 0];
        m.extend_from_slice(&[0; 8]);
        m.extend(attr(0, b"\0ab\0"));
        let (_, d) = parse_diag(&m).unwrap();
        assert_eq!(d.name, b"\0ab\0");
        assert_eq!(name_str(&d.name), "@ab\u{0}");
    }

    #[test]
    fn garbage_does_not_panic() {
        assert!(parse_diag(&[1, 2, 3]).is_none());
        let mut m = vec![0u8; 16];
        m.extend_from_slice(&[0xff, 0xff, 0, 0, 1]);
        assert!(parse_diag(&m).is_some());
        for n in 0..40 {
            let junk: Vec<u8> = (0..n).map(|i| (i * 37 + 5) as u8).collect();
            let _ = parse_diag(&junk);
        }
    }
}
