//! epoll: every registered fd with its events and data. The kernel keys a registration
//! on (file, fd number) of the process that made it, so the restored process registers
//! its own fds itself once they are at their numbers (`Late::EpollAdd`), in the first
//! process (in tree order) that holds the epoll file, as at dump time.

use super::{Fd, FileIds, Late};
use crate::error::{Error, Result};
use cryo_proto::criu::{EventpollFileEntry, EventpollTfdEntry, FdTypes, FileEntry};
use std::os::fd::OwnedFd;

/// One `tfd:` line of an epoll fdinfo:
/// `tfd:        5 events:       19 data:                5  pos:0 ino:2b sdev:e`.
pub fn parse_tfd(line: &str) -> Option<EventpollTfdEntry> {
    let rest = line.strip_prefix("tfd:")?;
    let mut e = EventpollTfdEntry::default();
    let mut it = rest.split_whitespace();
    e.tfd = it.next()?.parse().ok()?;
    while let Some(tok) = it.next() {
        let (k, v) = match tok.split_once(':') {
            Some((k, v)) if !v.is_empty() => (k, v.to_string()),
            Some((k, _)) => (k, it.next()?.to_string()),
            None => continue,
        };
        match k {
            "events" => e.events = u32::from_str_radix(&v, 16).ok()?,
            "data" => e.data = u64::from_str_radix(&v, 16).ok()?,
            "pos" => e.pos = Some(v.parse().ok()?),
            "ino" => e.inode = Some(u64::from_str_radix(&v, 16).ok()?),
            "sdev" => e.dev = Some(u32::from_str_radix(&v, 16).ok()?),
            _ => {}
        }
    }
    Some(e)
}

pub fn dump(f: &Fd, ids: &mut FileIds) -> Result<u32> {
    let mut tfds = Vec::new();
    for line in f.fdinfo.lines() {
        if !line.starts_with("tfd:") {
            continue;
        }
        let e = parse_tfd(line).ok_or_else(|| f.unsupported(format!("cannot parse '{line}'")))?;
        // The registration must still name the file it was made for in this process.
        let p = format!("/proc/{}/fd/{}", f.pid, e.tfd);
        let same = nix::sys::stat::stat(p.as_str()).is_ok_and(|st| Some(st.st_ino) == e.inode);
        if !same {
            return Err(f.unsupported(format!(
                "registered fd {} was closed or replaced since (the registration outlives it)",
                e.tfd
            )));
        }
        tfds.push(e);
    }
    Ok(ids.add(FileEntry {
        r#type: FdTypes::Eventpoll as i32,
        epfd: Some(EventpollFileEntry {
            id: 0,
            flags: f.flags,
            fown: Default::default(),
            tfd: tfds,
        }),
        ..Default::default()
    }))
}

pub fn create(e: &EventpollFileEntry) -> Result<OwnedFd> {
    let fd = crate::sys::fd::epoll_create(0).map_err(Error::sys("epoll_create1", 0))?;
    if e.flags & libc::O_NONBLOCK as u32 != 0 {
        use std::os::fd::AsFd;
        crate::sys::fd::fcntl_int(fd.as_fd(), libc::F_SETFL, libc::O_NONBLOCK)
            .map_err(Error::sys("fcntl(F_SETFL)", 0))?;
    }
    Ok(fd)
}

pub fn late_steps(epfd: i32, e: &EventpollFileEntry) -> Vec<Late> {
    e.tfd
        .iter()
        .map(|t| Late::EpollAdd {
            epfd,
            tfd: t.tfd as i32,
            events: t.events,
            data: t.data,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fdinfo_line() {
        let e =
            parse_tfd("tfd:        5 events:       19 data:               2a  pos:0 ino:2b sdev:e")
                .unwrap();
        assert_eq!((e.tfd, e.events, e.data), (5, 0x19, 0x2a));
        assert_eq!((e.pos, e.inode, e.dev), (Some(0), Some(0x2b), Some(0xe)));
        assert!(parse_tfd("tfd: x").is_none());
    }
}
