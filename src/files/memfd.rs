//! memfd: name, contents, size, mode and seals. An inode (`memfd.img`, one
//! `memfd_inode_entry` each) may be open through several descriptions; its contents are
//! stored like a deleted file's (`ghost-file`-format image `memfd-data-<inode_id>.img`;
//! CRIU keeps them as shmem pages instead).
//! A memfd mapped by a process (shared or private) is mapped again from a description
//! of the recreated memfd (`dump_mapping`; one file entry per inode and access mode).

use super::reg::{read_blob, read_contents, write_blob, GHOST_LIMIT};
use super::{Fd, FileIds};
use crate::error::{Error, Result};
use crate::image::{ImageDir, Kind};
use crate::sys::fd as sysfd;
use cryo_proto::criu::{FdTypes, FileEntry, GhostFileEntry, MemfdFileEntry, MemfdInodeEntry};
use cryo_proto::magic;
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

const MEMFD_INODE: Kind = Kind {
    name: "memfd",
    magic: magic::MEMFD_INODE_MAGIC,
    common: true,
};

#[derive(Debug, Default)]
pub struct DumpState {
    by_ino: HashMap<u64, u32>,
    inodes: Vec<(MemfdInodeEntry, Vec<u8>)>,
    /// (inode id, access mode) → file id of the entry mappings are restored from.
    mappings: HashMap<(u32, u32), u32>,
}

impl DumpState {
    pub fn write(&self, dir: &ImageDir) -> Result<()> {
        if self.inodes.is_empty() {
            return Ok(());
        }
        let mut w = dir.writer("memfd.img", MEMFD_INODE)?;
        for (e, data) in &self.inodes {
            w.entry(e)?;
            let g = GhostFileEntry {
                mode: e.mode.unwrap_or(0o600),
                uid: e.uid,
                gid: e.gid,
                size: Some(data.len() as u64),
                ..Default::default()
            };
            write_blob(dir, &format!("memfd-data-{}.img", e.inode_id), &g, data)?;
        }
        w.finish()?;
        Ok(())
    }
}

/// The memfd's name from a /proc link or maps name ("/memfd:NAME (deleted)").
fn name_of(link: &str) -> String {
    link.strip_prefix("/memfd:")
        .and_then(|s| s.strip_suffix(" (deleted)"))
        .unwrap_or("")
        .to_string()
}

impl DumpState {
    /// The inode id of a memfd, saving its contents the first time it is seen.
    fn inode(
        &mut self,
        st: &nix::sys::stat::FileStat,
        name: String,
        seals: u32,
        read: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<u32> {
        if let Some(&i) = self.by_ino.get(&st.st_ino) {
            return Ok(i);
        }
        let data = read()?;
        let i = self.inodes.len() as u32 + 1;
        self.inodes.push((
            MemfdInodeEntry {
                name,
                uid: st.st_uid,
                gid: st.st_gid,
                size: st.st_size as u64,
                shmid: 0,
                seals,
                inode_id: i as u64,
                hugetlb_flag: None,
                mode: Some(st.st_mode & 0o7777),
            },
            data,
        ));
        self.by_ino.insert(st.st_ino, i);
        Ok(i)
    }
}

fn entry(flags: u32, pos: u64, inode_id: u32) -> FileEntry {
    FileEntry {
        r#type: FdTypes::Memfd as i32,
        memfd: Some(MemfdFileEntry {
            id: 0,
            flags,
            pos,
            fown: Default::default(),
            inode_id,
        }),
        ..Default::default()
    }
}

pub fn dump(f: &Fd, ids: &mut FileIds) -> Result<u32> {
    let st = f.stat()?;
    let size = st.st_size as u64;
    if size > GHOST_LIMIT {
        return Err(f.unsupported(format!(
            "memfd of {size} bytes; cryo saves memfds up to {GHOST_LIMIT} bytes"
        )));
    }
    let copy = f.copy()?;
    let seals = sysfd::fcntl_int(copy.as_fd(), libc::F_GET_SEALS, 0).unwrap_or(0) as u32;
    let inode_id = ids
        .memfds
        .inode(&st, name_of(f.target), seals, || read_contents(f, size))?;
    Ok(ids.add(entry(f.flags, f.pos, inode_id)))
}

/// A memfd mapped by `pid` at `start..end` (found through map_files): the file id to
/// map it from on restore, one per (inode, access mode).
pub fn dump_mapping(
    pid: i32,
    start: u64,
    end: u64,
    name: &str,
    writable: bool,
    ids: &mut FileIds,
) -> Result<u32> {
    let (file, st, p) = super::open_mapped(pid, start, end)?;
    if st.st_size as u64 > GHOST_LIMIT {
        return Err(Error::Unsupported {
            pid,
            what: format!("mapping {start:x}-{end:x} {name}"),
            why: format!(
                "memfd of {} bytes; cryo saves memfds up to {GHOST_LIMIT} bytes",
                st.st_size
            ),
        });
    }
    let seals = sysfd::fcntl_int(file.as_fd(), libc::F_GET_SEALS, 0).unwrap_or(0) as u32;
    let inode_id = ids
        .memfds
        .inode(&st, name_of(name), seals, || super::read_all(&file, &p))?;
    let flags = if writable {
        libc::O_RDWR
    } else {
        libc::O_RDONLY
    } as u32;
    if let Some(&id) = ids.memfds.mappings.get(&(inode_id, flags)) {
        return Ok(id);
    }
    let id = ids.add(entry(flags, 0, inode_id));
    ids.memfds.mappings.insert((inode_id, flags), id);
    Ok(id)
}

#[derive(Debug, Default)]
pub struct Restorer {
    inodes: HashMap<u32, MemfdInodeEntry>,
    /// inode id → the memfd made for it.
    made: HashMap<u32, OwnedFd>,
    dir: Option<ImageDir>,
}

impl Restorer {
    pub fn load(dir: &ImageDir) -> Result<Self> {
        let mut r = Restorer {
            dir: Some(dir.clone()),
            ..Default::default()
        };
        if dir.file("memfd.img").exists() {
            for e in dir
                .reader("memfd.img", MEMFD_INODE)?
                .all::<MemfdInodeEntry>()?
            {
                r.inodes.insert(e.inode_id as u32, e);
            }
        }
        Ok(r)
    }

    fn make(&self, e: &MemfdInodeEntry) -> Result<OwnedFd> {
        let dir = self
            .dir
            .as_ref()
            .ok_or_else(|| Error::Usage("no image dir".into()))?;
        let (_, data) = read_blob(dir, &format!("memfd-data-{}.img", e.inode_id))?;
        let name = std::ffi::CString::new(e.name.clone()).unwrap_or_default();
        let fd = sysfd::memfd_create(&name, libc::MFD_ALLOW_SEALING)
            .map_err(Error::sys("memfd_create", 0))?;
        let file = std::fs::File::from(fd);
        std::os::unix::fs::FileExt::write_all_at(&file, &data, 0)
            .map_err(Error::io("write", format!("memfd:{}", e.name)))?;
        file.set_len(e.size)
            .map_err(Error::io("truncate", format!("memfd:{}", e.name)))?;
        if let Some(m) = e.mode {
            use std::os::unix::fs::PermissionsExt;
            let _ = file.set_permissions(std::fs::Permissions::from_mode(m));
        }
        let _ = nix::unistd::fchown(&file, Some(e.uid.into()), Some(e.gid.into()));
        let fd = OwnedFd::from(file);
        if e.seals != 0 {
            sysfd::fcntl_int(fd.as_fd(), libc::F_ADD_SEALS, e.seals as i32)
                .map_err(Error::sys("fcntl(F_ADD_SEALS)", 0))?;
        }
        Ok(fd)
    }

    /// A new description of the memfd (its access mode, flags and offset).
    pub fn open(&mut self, m: &MemfdFileEntry) -> Result<OwnedFd> {
        if !self.made.contains_key(&m.inode_id) {
            let e = self.inodes.get(&m.inode_id).ok_or_else(|| Error::Restore {
                pid: 0,
                msg: format!("memfd inode {} missing from memfd.img", m.inode_id),
            })?;
            let fd = self.make(e)?;
            self.made.insert(m.inode_id, fd);
        }
        let p = format!("/proc/self/fd/{}", self.made[&m.inode_id].as_raw_fd());
        let acc = m.flags & libc::O_ACCMODE as u32;
        let settable = (libc::O_NONBLOCK | libc::O_APPEND) as u32;
        let file = std::fs::OpenOptions::new()
            .read(acc != libc::O_WRONLY as u32)
            .write(acc != libc::O_RDONLY as u32)
            .custom_flags((m.flags & settable) as i32)
            .open(&p)
            .map_err(Error::io("reopen memfd", &p))?;
        if m.pos != 0 {
            use std::io::{Seek, SeekFrom};
            (&file)
                .seek(SeekFrom::Start(m.pos))
                .map_err(Error::io("seek", &p))?;
        }
        Ok(file.into())
    }
}
