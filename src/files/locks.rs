//! File locks: flock and OFD locks (owned by an open file description) and POSIX record
//! locks (owned by a process). fdinfo lists the locks of each fd (`lock:` lines); they
//! go to `file-locks.img` as CRIU's `file_lock_entry` (pid, fd, kind, type, range). On
//! restore each lock is taken again by the process and fd recorded, once its fds are at
//! their numbers (`Late::Lock`): the processes holding them at dump time are gone, so the
//! locks are free and cannot conflict with one another.

use super::{Fd, Late};
use crate::error::Result;
use crate::image::{ImageDir, Kind};
use cryo_proto::criu::FileLockEntry;
use cryo_proto::magic;

const FILE_LOCKS: Kind = Kind {
    name: "file-locks",
    magic: magic::FILE_LOCKS_MAGIC,
    common: true,
};

/// CRIU's `fl_kind` values (`flag`).
pub const FL_POSIX: u32 = 1;
pub const FL_FLOCK: u32 = 2;
pub const FL_OFD: u32 = 1024;

/// One parsed `lock:` line: kind, write?, start, end (None = EOF).
#[derive(Debug, PartialEq)]
pub struct Line {
    pub kind: u32,
    pub write: bool,
    pub start: i64,
    pub end: Option<i64>,
}

/// `lock:\t1: POSIX  ADVISORY  WRITE 6186 fe:00:10010748 0 99`; `Err` names a lock cryo
/// cannot take again (leases, delegations, mandatory locks).
pub fn parse_line(v: &str) -> std::result::Result<Option<Line>, String> {
    let f: Vec<&str> = v.split_whitespace().collect();
    // A blocked request ("1: -> POSIX ...") is not a lock held.
    if f.get(1) == Some(&"->") {
        return Ok(None);
    }
    let (kind, mode, rw, start, end) = match f.as_slice() {
        [_, k, m, rw, _pid, _dev, s, e, ..] => (*k, *m, *rw, *s, *e),
        _ => return Err(format!("cannot parse lock '{v}'")),
    };
    let kind = match kind {
        "POSIX" => FL_POSIX,
        "FLOCK" => FL_FLOCK,
        "OFDLCK" => FL_OFD,
        other => return Err(format!("{other} locks are not supported")),
    };
    if mode != "ADVISORY" {
        return Err(format!("{mode} locks are not supported"));
    }
    let write = match rw {
        "WRITE" => true,
        "READ" => false,
        other => return Err(format!("lock type {other} is not supported")),
    };
    let start = start
        .parse()
        .map_err(|_| format!("bad lock start in '{v}'"))?;
    let end = match end {
        "EOF" => None,
        e => Some(e.parse().map_err(|_| format!("bad lock end in '{v}'"))?),
    };
    Ok(Some(Line {
        kind,
        write,
        start,
        end,
    }))
}

#[derive(Debug, Default)]
pub struct DumpState {
    locks: Vec<FileLockEntry>,
    /// flock/OFD locks belong to a description: (file id, start, end) seen already.
    seen_desc: std::collections::HashSet<(u32, i64, Option<i64>)>,
    /// POSIX locks belong to a process and show on each of its fds on the file.
    seen_posix: std::collections::HashSet<(i32, u64, i64, Option<i64>)>,
}

impl DumpState {
    /// Records the locks fdinfo lists for `f` (whose description has file id `id`).
    pub fn collect(&mut self, f: &Fd, id: u32) -> Result<()> {
        for v in f.fdinfo.lines().filter_map(|l| l.strip_prefix("lock:")) {
            let Some(l) = parse_line(v).map_err(|why| f.unsupported(why))? else {
                continue;
            };
            let fresh = if l.kind == FL_POSIX {
                let ino = f.stat()?.st_ino;
                self.seen_posix.insert((f.pid, ino, l.start, l.end))
            } else {
                self.seen_desc.insert((id, l.start, l.end))
            };
            if !fresh {
                continue;
            }
            let typ = match (l.kind, l.write) {
                (FL_FLOCK, true) => libc::LOCK_EX,
                (FL_FLOCK, false) => libc::LOCK_SH,
                (_, true) => libc::F_WRLCK,
                (_, false) => libc::F_RDLCK,
            };
            self.locks.push(FileLockEntry {
                flag: l.kind,
                r#type: typ as u32,
                pid: f.pid,
                fd: f.fd,
                start: l.start,
                // CRIU: len 0 = to EOF.
                len: l.end.map(|e| e - l.start + 1).unwrap_or(0),
            });
        }
        Ok(())
    }

    pub fn write(&self, dir: &ImageDir) -> Result<()> {
        if self.locks.is_empty() {
            return Ok(());
        }
        let mut w = dir.writer("file-locks.img", FILE_LOCKS)?;
        for l in &self.locks {
            w.entry(l)?;
        }
        w.finish()?;
        Ok(())
    }
}

/// The locks of a restore, by owning pid.
#[derive(Debug, Default)]
pub struct Restorer {
    by_pid: std::collections::HashMap<i32, Vec<FileLockEntry>>,
}

impl Restorer {
    pub fn load(dir: &ImageDir) -> Result<Self> {
        let mut r = Restorer::default();
        if dir.file("file-locks.img").exists() {
            for l in dir
                .reader("file-locks.img", FILE_LOCKS)?
                .all::<FileLockEntry>()?
            {
                r.by_pid.entry(l.pid).or_default().push(l);
            }
        }
        Ok(r)
    }

    /// The lock steps of process `pid`.
    pub fn late_steps(&self, pid: i32) -> Vec<Late> {
        self.by_pid
            .get(&pid)
            .into_iter()
            .flatten()
            .map(|l| Late::Lock {
                fd: l.fd,
                kind: l.flag,
                typ: l.r#type as i32,
                start: l.start,
                len: l.len,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lock_lines() {
        assert_eq!(
            parse_line("\t1: POSIX  ADVISORY  WRITE 6186 fe:00:10010748 0 99"),
            Ok(Some(Line {
                kind: FL_POSIX,
                write: true,
                start: 0,
                end: Some(99)
            }))
        );
        assert_eq!(
            parse_line("\t2: OFDLCK ADVISORY  READ -1 fe:00:1 200 EOF"),
            Ok(Some(Line {
                kind: FL_OFD,
                write: false,
                start: 200,
                end: None
            }))
        );
        assert_eq!(
            parse_line("\t1: -> FLOCK  ADVISORY  WRITE 1 0:0:1 0 EOF"),
            Ok(None)
        );
        assert!(parse_line("\t1: LEASE  ACTIVE    READ 1 0:0:1 0 EOF").is_err());
        assert!(parse_line("garbage").is_err());
    }
}
