//! Pseudo-terminals whose master is inside the tree. The master is dumped as CRIU's
//! `tty_file_entry` + `tty_info_entry` (tty-info.img): pty index, lock, packet and
//! exclusive modes, termios and window size (read through the master, which the kernel
//! answers for the slave side), and the session and foreground group it is the
//! controlling terminal of. Slaves stay path entries (`/dev/pts/N`), reopened once their
//! master exists again.
//!
//! Restore: `/dev/ptmx` is opened until the kernel hands out the same index (the
//! indices below it are held meanwhile, then closed), then the slave side gets its
//! termios, window size and owner back. The session leader makes it its controlling
//! terminal again and sets the foreground group (injected at the end of its rebuild,
//! when every process of the session exists). Bytes queued in the pty are not saved.

use super::{Fd, FileIds};
use crate::error::{Error, Result};
use crate::image::{ImageDir, Kind};
use crate::sys::fd as sysfd;
use cryo_proto::criu::{
    FdTypes, FileEntry, TermiosEntry, TtyFileEntry, TtyInfoEntry, TtyPtyEntry, TtyType,
    WinsizeEntry,
};
use cryo_proto::magic;
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

const TTY_INFO: Kind = Kind {
    name: "tty-info",
    magic: magic::TTY_INFO_MAGIC,
    common: true,
};

/// Whether a /proc fd link names a pty master.
pub fn is_master_path(p: &str) -> bool {
    p == "/dev/ptmx" || p == "/dev/pts/ptmx"
}

/// The pty index of a slave path (`/dev/pts/N`).
pub fn slave_index(p: &str) -> Option<u32> {
    p.strip_prefix("/dev/pts/")?.parse().ok()
}

#[derive(Debug, Default)]
pub struct DumpState {
    infos: Vec<TtyInfoEntry>,
}

impl DumpState {
    pub fn write(&self, dir: &ImageDir) -> Result<()> {
        if self.infos.is_empty() {
            return Ok(());
        }
        let mut w = dir.writer("tty-info.img", TTY_INFO)?;
        for i in &self.infos {
            w.entry(i)?;
        }
        w.finish()?;
        Ok(())
    }
}

fn termios_entry(t: &nix::sys::termios::Termios) -> TermiosEntry {
    let raw: libc::termios = t.clone().into();
    TermiosEntry {
        c_iflag: raw.c_iflag,
        c_oflag: raw.c_oflag,
        c_cflag: raw.c_cflag,
        c_lflag: raw.c_lflag,
        c_line: raw.c_line as u32,
        c_ispeed: raw.c_ispeed,
        c_ospeed: raw.c_ospeed,
        c_cc: raw.c_cc.iter().map(|&c| c as u32).collect(),
    }
}

fn termios_raw(e: &TermiosEntry) -> libc::termios {
    let mut t = crate::sys::fd::zeroed_termios();
    t.c_iflag = e.c_iflag;
    t.c_oflag = e.c_oflag;
    t.c_cflag = e.c_cflag;
    t.c_lflag = e.c_lflag;
    t.c_line = e.c_line as u8;
    t.c_ispeed = e.c_ispeed;
    t.c_ospeed = e.c_ospeed;
    for (d, s) in t.c_cc.iter_mut().zip(&e.c_cc) {
        *d = *s as u8;
    }
    t
}

pub fn dump_master(f: &Fd, ids: &mut FileIds) -> Result<u32> {
    let copy = f.copy()?;
    let m = copy.as_fd();
    let sys = |call: &'static str| Error::sys(call, f.pid);
    let index = sysfd::ioctl_int(m, libc::TIOCGPTN, 0).map_err(sys("ioctl(TIOCGPTN)"))? as u32;
    let locked = sysfd::ioctl_int(m, libc::TIOCGPTLCK, 0).map_err(sys("ioctl(TIOCGPTLCK)"))? != 0;
    let packet = sysfd::ioctl_int(m, libc::TIOCGPKT, 0).map_err(sys("ioctl(TIOCGPKT)"))? != 0;
    // The slave side's session and foreground group (0: not a controlling terminal).
    let sid = sysfd::ioctl_int(m, libc::TIOCGSID, 0).unwrap_or(0).max(0) as u32;
    let pgrp = if sid != 0 {
        sysfd::ioctl_int(m, libc::TIOCGPGRP, 0).unwrap_or(0).max(0) as u32
    } else {
        0
    };
    let termios = nix::sys::termios::tcgetattr(m).map_err(sys("tcgetattr"))?;
    let ws = sysfd::get_winsize(m).map_err(sys("ioctl(TIOCGWINSZ)"))?;
    let slave = format!("/dev/pts/{index}");
    let sst = nix::sys::stat::stat(slave.as_str()).ok();
    let exclusive = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(&slave)
        .ok()
        .and_then(|s| sysfd::ioctl_int(s.as_fd(), libc::TIOCGEXCL, 0).ok())
        .is_some_and(|v| v != 0);
    let info_id = ids.next_id();
    ids.ttys.infos.push(TtyInfoEntry {
        id: info_id,
        r#type: TtyType::Pty as i32,
        locked,
        exclusive,
        packet_mode: packet,
        sid,
        pgrp,
        rdev: sst.map(|s| s.st_rdev as u32).unwrap_or(0),
        termios: Some(termios_entry(&termios)),
        termios_locked: None,
        winsize: Some(WinsizeEntry {
            ws_row: ws.ws_row as u32,
            ws_col: ws.ws_col as u32,
            ws_xpixel: ws.ws_xpixel as u32,
            ws_ypixel: ws.ws_ypixel as u32,
        }),
        pty: Some(TtyPtyEntry { index }),
        dev: None,
        uid: sst.map(|s| s.st_uid),
        gid: sst.map(|s| s.st_gid),
    });
    log::debug!(pid = f.pid, fd = f.fd, index = index, sid = sid, pgrp = pgrp; "pty master");
    Ok(ids.add(FileEntry {
        r#type: FdTypes::Tty as i32,
        tty: Some(TtyFileEntry {
            id: 0,
            tty_info_id: info_id,
            flags: f.flags,
            fown: Default::default(),
            regf_id: None,
        }),
        ..Default::default()
    }))
}

/// Ptys being recreated by a restore.
#[derive(Debug, Default)]
pub struct Restorer {
    infos: HashMap<u32, TtyInfoEntry>,
    /// pty index → file id of its master (to open a master before its slaves).
    pub masters: HashMap<u32, u32>,
}

impl Restorer {
    pub fn load(dir: &ImageDir, files: &[FileEntry]) -> Result<Self> {
        let mut r = Restorer::default();
        if dir.file("tty-info.img").exists() {
            for i in dir
                .reader("tty-info.img", TTY_INFO)?
                .all::<TtyInfoEntry>()?
            {
                r.infos.insert(i.id, i);
            }
        }
        for f in files {
            if let Some(t) = &f.tty {
                if let Some(idx) = r.infos.get(&t.tty_info_id).and_then(|i| i.pty.as_ref()) {
                    r.masters.insert(idx.index, f.id);
                }
            }
        }
        Ok(r)
    }

    /// The controlling-terminal duty of session `sid`: (pty index, foreground group).
    pub fn ctty_of(&self, sid: u32) -> Option<(u32, u32)> {
        self.infos
            .values()
            .find(|i| i.sid == sid && sid != 0)
            .and_then(|i| Some((i.pty.as_ref()?.index, i.pgrp)))
    }

    pub fn open_master(&self, t: &TtyFileEntry) -> Result<OwnedFd> {
        let info = self
            .infos
            .get(&t.tty_info_id)
            .ok_or_else(|| Error::Restore {
                pid: 0,
                msg: format!("tty info {} missing from tty-info.img", t.tty_info_id),
            })?;
        let want = info.pty.as_ref().map(|p| p.index).unwrap_or(0);
        let open = || -> Result<OwnedFd> {
            Ok(std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOCTTY)
                .open("/dev/ptmx")
                .map_err(Error::io("open", "/dev/ptmx"))?
                .into())
        };
        // The kernel hands out the lowest free index: hold the ones below ours.
        let mut held = Vec::new();
        let master = loop {
            let m = open()?;
            let got = sysfd::ioctl_int(m.as_fd(), libc::TIOCGPTN, 0)
                .map_err(Error::sys("ioctl(TIOCGPTN)", 0))? as u32;
            if got == want {
                break m;
            }
            if got > want || held.len() > 4096 {
                return Err(Error::Restore {
                    pid: 0,
                    msg: format!("pty {want} is in use (the kernel gave pty {got})"),
                });
            }
            held.push(m);
        };
        drop(held);
        let m = master.as_fd();
        sysfd::ioctl_int(m, libc::TIOCSPTLCK, 0).map_err(Error::sys("ioctl(TIOCSPTLCK)", 0))?;
        self.set_slave_side(info, want)?;
        if info.locked {
            sysfd::ioctl_int(m, libc::TIOCSPTLCK, 1).map_err(Error::sys("ioctl(TIOCSPTLCK)", 0))?;
        }
        if info.packet_mode {
            sysfd::ioctl_int(m, libc::TIOCPKT, 1).map_err(Error::sys("ioctl(TIOCPKT)", 0))?;
        }
        let settable = libc::O_NONBLOCK | libc::O_ASYNC;
        sysfd::fcntl_int(m, libc::F_SETFL, t.flags as i32 & settable)
            .map_err(Error::sys("fcntl(F_SETFL)", 0))?;
        log::debug!(index = want; "pty master recreated");
        Ok(master)
    }

    /// termios, window size, owner and exclusive mode, set through the slave.
    fn set_slave_side(&self, info: &TtyInfoEntry, index: u32) -> Result<()> {
        let path = format!("/dev/pts/{index}");
        let s: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(&path)
            .map_err(Error::io("open", &path))?
            .into();
        if let Some(t) = &info.termios {
            let raw = termios_raw(t);
            nix::sys::termios::tcsetattr(
                s.as_fd(),
                nix::sys::termios::SetArg::TCSANOW,
                &nix::sys::termios::Termios::from(raw),
            )
            .map_err(Error::sys("tcsetattr", 0))?;
        }
        if let Some(w) = &info.winsize {
            let ws = libc::winsize {
                ws_row: w.ws_row as u16,
                ws_col: w.ws_col as u16,
                ws_xpixel: w.ws_xpixel as u16,
                ws_ypixel: w.ws_ypixel as u16,
            };
            sysfd::set_winsize(s.as_fd(), &ws).map_err(Error::sys("ioctl(TIOCSWINSZ)", 0))?;
        }
        if let (Some(uid), Some(gid)) = (info.uid, info.gid) {
            let _ = nix::unistd::fchown(&s, Some(uid.into()), Some(gid.into()));
        }
        if info.exclusive {
            sysfd::ioctl_none(s.as_fd(), libc::TIOCEXCL)
                .map_err(Error::sys("ioctl(TIOCEXCL)", 0))?;
        }
        Ok(())
    }
}
