//! inotify: every watch with its mask and watch descriptor. fdinfo names the watched
//! inode by file handle; the dumper opens it (`open_by_handle_at`, on the mount with
//! that device) to learn its path. On restore the watches are added again in wd order;
//! the kernel hands out wds cyclically, so a watch that comes out with a lower wd than
//! it had is removed and re-added until the numbers line up (the IN_IGNORED events that
//! produces are drained before the fd is handed over). Queued events are not saved.

use super::{Fd, FileIds};
use crate::error::{Error, Result};
use crate::sys::fd as sysfd;
use cryo_proto::criu::{FdTypes, FhEntry, FileEntry, InotifyFileEntry, InotifyWdEntry};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// The fields of one `inotify wd:…` fdinfo line.
#[derive(Debug, Default, PartialEq)]
pub struct Watch {
    pub wd: u32,
    pub ino: u64,
    pub sdev: u32,
    pub mask: u32,
    pub ignored_mask: u32,
    pub htype: i32,
    pub handle: Vec<u8>,
}

pub fn parse_watch(line: &str) -> Option<Watch> {
    let rest = line.strip_prefix("inotify ")?;
    let mut w = Watch::default();
    for tok in rest.split_whitespace() {
        let (k, v) = tok.split_once(':')?;
        let hex = || u64::from_str_radix(v, 16).ok();
        match k {
            "wd" => w.wd = hex()? as u32,
            "ino" => w.ino = hex()?,
            "sdev" => w.sdev = hex()? as u32,
            "mask" => w.mask = hex()? as u32,
            "ignored_mask" => w.ignored_mask = hex()? as u32,
            "fhandle-type" => w.htype = hex()? as i32,
            "f_handle" => {
                w.handle = v
                    .as_bytes()
                    .chunks(2)
                    .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
                    .collect::<Option<Vec<u8>>>()?
            }
            _ => {}
        }
    }
    Some(w)
}

/// The mount point of a mount whose device is `sdev` (the kernel's internal dev_t:
/// major << 20 | minor), from our own mountinfo.
fn mount_of(sdev: u32) -> Option<String> {
    let (major, minor) = (sdev >> 20, sdev & 0xfffff);
    let mi = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mi.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2)? == &format!("{major}:{minor}").as_str())
            .then(|| f.get(4).map(|s| s.to_string()))?
    })
}

/// The path of the watched inode.
fn watch_path(w: &Watch) -> std::result::Result<String, String> {
    let mnt = mount_of(w.sdev).ok_or_else(|| format!("no mount for device {:x}", w.sdev))?;
    let m = std::fs::File::open(&mnt).map_err(|e| format!("open {mnt}: {e}"))?;
    let fd = sysfd::open_by_handle(m.as_fd(), w.htype, &w.handle)
        .map_err(|e| format!("open_by_handle_at: {e}"))?;
    let p = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| format!("readlink: {e}"))?;
    let p = p.to_string_lossy().into_owned();
    if p.ends_with(" (deleted)") {
        return Err("the watched file was deleted".into());
    }
    Ok(p)
}

pub fn dump(f: &Fd, ids: &mut FileIds) -> Result<u32> {
    let mut wds = Vec::new();
    for line in f.fdinfo.lines().filter(|l| l.starts_with("inotify ")) {
        let w = parse_watch(line).ok_or_else(|| f.unsupported(format!("cannot parse '{line}'")))?;
        let path = watch_path(&w).map_err(|why| f.unsupported(format!("watch {}: {why}", w.wd)))?;
        let mut handle: Vec<u64> = w
            .handle
            .chunks(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b[..c.len()].copy_from_slice(c);
                u64::from_ne_bytes(b)
            })
            .collect();
        handle.resize(handle.len().max(16), 0);
        wds.push(InotifyWdEntry {
            id: 0,
            i_ino: w.ino,
            mask: w.mask,
            ignored_mask: w.ignored_mask,
            s_dev: w.sdev,
            wd: w.wd,
            f_handle: FhEntry {
                bytes: w.handle.len() as u32,
                r#type: w.htype as u32,
                handle,
                path: Some(path),
                mnt_id: None,
            },
        });
    }
    Ok(ids.add(FileEntry {
        r#type: FdTypes::Inotify as i32,
        ify: Some(InotifyFileEntry {
            id: 0,
            flags: f.flags,
            fown: Default::default(),
            wd: wds,
        }),
        ..Default::default()
    }))
}

/// Largest number of re-adds spent to reach a watch's wd.
const MAX_WD_STEPS: u32 = 1 << 16;

pub fn restore(e: &InotifyFileEntry) -> Result<OwnedFd> {
    let fd = sysfd::inotify_init(libc::IN_NONBLOCK).map_err(Error::sys("inotify_init1", 0))?;
    let mut wds: Vec<&InotifyWdEntry> = e.wd.iter().collect();
    wds.sort_by_key(|w| w.wd);
    for w in wds {
        let path = w.f_handle.path.clone().unwrap_or_default();
        let c = std::ffi::CString::new(path.clone()).unwrap_or_default();
        // Only the user-visible bits go back in (plus IN_MASK_ADD-free semantics).
        let mask = w.mask
            & (libc::IN_ALL_EVENTS
                | libc::IN_DONT_FOLLOW
                | libc::IN_EXCL_UNLINK
                | libc::IN_ONESHOT
                | libc::IN_ONLYDIR);
        let mut steps = 0;
        loop {
            let got =
                sysfd::inotify_add_watch(fd.as_fd(), &c, mask).map_err(|err| Error::Restore {
                    pid: 0,
                    msg: format!("inotify watch on {path}: {err}"),
                })?;
            if got as u32 == w.wd {
                break;
            }
            if got as u32 > w.wd || steps > MAX_WD_STEPS {
                return Err(Error::Restore {
                    pid: 0,
                    msg: format!("inotify watch on {path} got wd {got}, wanted {}", w.wd),
                });
            }
            sysfd::inotify_rm_watch(fd.as_fd(), got).map_err(Error::sys("inotify_rm_watch", 0))?;
            steps += 1;
        }
    }
    // Drain the IN_IGNORED events the re-adds produced.
    let mut buf = [0u8; 4096];
    while nix::unistd::read(&fd, &mut buf).is_ok_and(|n| n > 0) {}
    if e.flags & libc::O_NONBLOCK as u32 == 0 {
        sysfd::fcntl_int(fd.as_fd(), libc::F_SETFL, 0).map_err(Error::sys("fcntl(F_SETFL)", 0))?;
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_watch_line() {
        let w = parse_watch("inotify wd:3 ino:1a2b sdev:800001 mask:fff ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:2b1a000001000000").unwrap();
        assert_eq!(
            (w.wd, w.ino, w.sdev, w.mask, w.htype),
            (3, 0x1a2b, 0x800001, 0xfff, 1)
        );
        assert_eq!(w.handle, vec![0x2b, 0x1a, 0, 0, 1, 0, 0, 0]);
        assert!(parse_watch("inotify wd:zz").is_none());
    }
}
