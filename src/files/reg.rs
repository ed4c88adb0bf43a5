//! Regular files, directories and devices opened by path, and deleted-but-open files.
//!
//! A deleted file ("ghost", as CRIU calls it) has no path to reopen: its contents are
//! saved in `ghost-file-<id>.img` and `remap-fpath.img` links its file entry to them. On
//! restore the file is recreated at its old path (or next to it, if that name is taken
//! again), opened, and unlinked once every fd on it is open.

use super::{Fd, FileIds};
use crate::error::{Error, Result};
use crate::image::{self, ImageDir, Kind};
use cryo_proto::criu::{
    FileEntry, GhostFileEntry, RegFileEntry, RemapFilePathEntry, RemapType, Timeval,
};
use cryo_proto::magic;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

const GHOST: Kind = Kind {
    name: "ghost-file",
    magic: magic::GHOST_FILE_MAGIC,
    common: true,
};
const REMAP: Kind = Kind {
    name: "remap-fpath",
    magic: magic::REMAP_FPATH_MAGIC,
    common: true,
};

/// Deleted files larger than this are refused (their contents go into the image).
pub const GHOST_LIMIT: u64 = 64 << 20;

pub fn dump(f: &Fd, ids: &mut FileIds) -> Result<u32> {
    let st = f.stat()?;
    let fmt = st.st_mode & libc::S_IFMT;
    if fmt == libc::S_IFIFO {
        return super::pipe::dump_fifo(f, st.st_ino, ids);
    }
    if let Some(path) = f.target.strip_suffix(" (deleted)") {
        if st.st_nlink == 0 {
            if fmt != libc::S_IFREG {
                return Err(f.unsupported("a deleted directory or device cannot be recreated"));
            }
            let id = ids.add_reg(path, f.flags, f.pos);
            ids.ghosts.add(f, &st, id)?;
            return Ok(id);
        }
    }
    Ok(ids.add_reg(f.target, f.flags, f.pos))
}

/// A deleted regular file mapped by `pid` at `start..end` (found through map_files):
/// its contents are saved as a ghost and the mapping is restored from the recreated
/// file. One file entry per (path, access mode).
pub fn dump_deleted_mapping(
    pid: i32,
    start: u64,
    end: u64,
    path: &str,
    writable: bool,
    ids: &mut FileIds,
) -> Result<u32> {
    let (file, st, p) = super::open_mapped(pid, start, end)?;
    let unsupported = |why: String| Error::Unsupported {
        pid,
        what: format!("mapping {start:x}-{end:x} {path} (deleted)"),
        why,
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(unsupported(
            "a deleted non-regular file cannot be recreated".into(),
        ));
    }
    if st.st_size as u64 > GHOST_LIMIT {
        return Err(unsupported(format!(
            "deleted file of {} bytes; cryo saves deleted files up to {GHOST_LIMIT} bytes",
            st.st_size
        )));
    }
    let flags = if writable {
        libc::O_RDWR
    } else {
        libc::O_RDONLY
    } as u32;
    let id = ids.add_mapped_deleted(path, flags);
    ids.ghosts
        .add_inode(&st, id, || super::read_all(&file, &p))?;
    Ok(id)
}

/// Reads the whole contents of the file behind a target's fd (opened anew read-only
/// through /proc, so a write-only fd can be read too).
pub fn read_contents(f: &Fd, size: u64) -> Result<Vec<u8>> {
    let p = format!("/proc/{}/fd/{}", f.pid, f.fd);
    let mut file = std::fs::File::open(&p).map_err(Error::io("open", &p))?;
    let mut buf = Vec::with_capacity(size as usize);
    file.read_to_end(&mut buf).map_err(Error::io("read", &p))?;
    Ok(buf)
}

/// Deleted files' contents collected during a dump.
#[derive(Debug, Default)]
pub struct Ghosts {
    /// (dev, ino) → ghost id, so two fds on one deleted file share its contents.
    by_inode: HashMap<(u64, u64), u32>,
    remaps: Vec<RemapFilePathEntry>,
    files: Vec<(u32, GhostFileEntry, Vec<u8>)>,
}

impl Ghosts {
    fn add(&mut self, f: &Fd, st: &nix::sys::stat::FileStat, file_id: u32) -> Result<()> {
        let size = st.st_size as u64;
        if size > GHOST_LIMIT && !self.by_inode.contains_key(&(st.st_dev, st.st_ino)) {
            return Err(f.unsupported(format!(
                "deleted file of {size} bytes; cryo saves deleted files up to {GHOST_LIMIT} bytes"
            )));
        }
        self.add_inode(st, file_id, || read_contents(f, size))
    }

    pub fn is_remapped(&self, file_id: u32) -> bool {
        self.remaps.iter().any(|r| r.orig_id == file_id)
    }

    /// Links file `file_id` to the saved contents of the deleted inode `st`, reading them
    /// (`read`) the first time that inode is seen.
    fn add_inode(
        &mut self,
        st: &nix::sys::stat::FileStat,
        file_id: u32,
        read: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<()> {
        let key = (st.st_dev, st.st_ino);
        let gid = match self.by_inode.get(&key) {
            Some(&g) => g,
            None => {
                let data = read()?;
                let g = self.files.len() as u32 + 1;
                let tv = |s: i64, ns: i64| Timeval {
                    tv_sec: s as u64,
                    tv_usec: (ns / 1000) as u64,
                };
                self.files.push((
                    g,
                    GhostFileEntry {
                        uid: st.st_uid,
                        gid: st.st_gid,
                        mode: st.st_mode,
                        size: Some(data.len() as u64),
                        atim: Some(tv(st.st_atime, st.st_atime_nsec)),
                        mtim: Some(tv(st.st_mtime, st.st_mtime_nsec)),
                        ..Default::default()
                    },
                    data,
                ));
                self.by_inode.insert(key, g);
                g
            }
        };
        if !self.remaps.iter().any(|r| r.orig_id == file_id) {
            self.remaps.push(RemapFilePathEntry {
                orig_id: file_id,
                remap_id: gid,
                remap_type: Some(RemapType::Ghost as i32),
            });
        }
        Ok(())
    }

    pub fn write(&self, dir: &ImageDir) -> Result<()> {
        if self.remaps.is_empty() {
            return Ok(());
        }
        let mut w = dir.writer("remap-fpath.img", REMAP)?;
        for r in &self.remaps {
            w.entry(r)?;
        }
        w.finish()?;
        for (g, e, data) in &self.files {
            write_blob(dir, &format!("ghost-file-{g}.img"), e, data)?;
        }
        Ok(())
    }
}

/// A ghost-file image: the entry, then the raw bytes (CRIU's unchunked layout).
pub fn write_blob(dir: &ImageDir, name: &str, e: &GhostFileEntry, data: &[u8]) -> Result<()> {
    let mut w = dir.writer(name, GHOST)?;
    w.entry(e)?;
    w.put(data)?;
    w.finish()?;
    Ok(())
}

/// Reads a ghost-file image back: its entry and its bytes (checked against `size`).
pub fn read_blob(dir: &ImageDir, name: &str) -> Result<(GhostFileEntry, Vec<u8>)> {
    let path = dir.file(name);
    let file = std::fs::File::open(&path)
        .map_err(|_| image::ImageError::Missing { path: path.clone() })?;
    let mut r = image::ImgReader::new(std::io::BufReader::new(file), path.clone(), GHOST)?;
    let e: GhostFileEntry = r.next_entry()?.ok_or_else(|| image::ImageError::Invalid {
        path: path.clone(),
        msg: "no ghost file entry".into(),
    })?;
    let want = e.size.unwrap_or(0);
    let mut data = Vec::new();
    r.read_rest(&mut data)?;
    if data.len() as u64 != want {
        return Err(image::ImageError::Invalid {
            path,
            msg: format!("{} bytes of contents, expected {want}", data.len()),
        }
        .into());
    }
    Ok((e, data))
}

/// Recreates deleted files for a restore; unlinks them again when dropped (by then every
/// fd on them is open).
#[derive(Debug, Default)]
pub struct GhostRestorer {
    /// File id → ghost id.
    remap: HashMap<u32, u32>,
    /// Ghost id → path it was recreated at.
    made: HashMap<u32, String>,
}

impl GhostRestorer {
    pub fn load(dir: &ImageDir, _files: &[FileEntry]) -> Result<Self> {
        let mut g = GhostRestorer::default();
        if !dir.file("remap-fpath.img").exists() {
            return Ok(g);
        }
        for r in dir
            .reader("remap-fpath.img", REMAP)?
            .all::<RemapFilePathEntry>()?
        {
            if r.remap_type == Some(RemapType::Ghost as i32) {
                g.remap.insert(r.orig_id, r.remap_id);
            }
        }
        Ok(g)
    }

    pub fn is_ghost(&self, id: u32) -> bool {
        self.remap.contains_key(&id)
    }

    /// Opens file `id` if it is a deleted one (recreating it on first use).
    pub fn open(&mut self, dir: &ImageDir, id: u32, r: &RegFileEntry) -> Result<Option<OwnedFd>> {
        let Some(&gid) = self.remap.get(&id) else {
            return Ok(None);
        };
        let path = match self.made.entry(gid) {
            std::collections::hash_map::Entry::Occupied(o) => o.get().clone(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let (e, data) = read_blob(dir, &format!("ghost-file-{gid}.img"))?;
                v.insert(create_ghost(&r.name, gid, &e, &data)?).clone()
            }
        };
        let mut fe = FileEntry {
            reg: Some(r.clone()),
            ..Default::default()
        };
        if let Some(reg) = fe.reg.as_mut() {
            reg.name = path;
        }
        open_reg(&fe).map(Some)
    }
}

impl Drop for GhostRestorer {
    fn drop(&mut self) {
        for p in self.made.values() {
            if let Err(e) = std::fs::remove_file(p) {
                log::warn!(path = p.as_str(), err:% = e; "cannot unlink recreated deleted file");
            }
        }
    }
}

/// Writes a deleted file's contents at its old path (or `path.cryo-ghost-N` if that
/// name exists again), with its mode, owner and times.
fn create_ghost(path: &str, gid: u32, e: &GhostFileEntry, data: &[u8]) -> Result<String> {
    let open = |p: &str| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(p)
    };
    let (p, mut file) = match open(path) {
        Ok(f) => (path.to_string(), f),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let alt = format!("{path}.cryo-ghost-{gid}");
            let f = open(&alt).map_err(Error::io("create", &alt))?;
            (alt, f)
        }
        Err(e) => return Err(Error::io("create", path)(e)),
    };
    file.write_all(data).map_err(Error::io("write", &p))?;
    file.set_permissions(std::fs::Permissions::from_mode(e.mode & 0o7777))
        .map_err(Error::io("chmod", &p))?;
    let _ = nix::unistd::fchown(&file, Some(e.uid.into()), Some(e.gid.into()));
    let ts = |t: &Option<Timeval>| {
        t.as_ref()
            .map(|t| nix::sys::time::TimeSpec::new(t.tv_sec as i64, (t.tv_usec * 1000) as i64))
            .unwrap_or(nix::sys::time::TimeSpec::UTIME_OMIT)
    };
    let _ = nix::sys::stat::futimens(&file, &ts(&e.atim), &ts(&e.mtim));
    log::debug!(path = p.as_str(), bytes = data.len(); "recreated deleted file");
    Ok(p)
}

/// Whether a path names a terminal device (pseudo-terminal slave or tty).
pub fn is_tty_path(p: &str) -> bool {
    p.starts_with("/dev/pts/") || p.starts_with("/dev/tty") || p == "/dev/console"
}

/// `--shell-job`: the job's terminal fds are attached to the terminal cryo runs on (its
/// stdin), as a shell would do with a resumed job; `None` if cryo has no terminal.
pub fn shell_job_tty() -> Option<OwnedFd> {
    let stdin = std::io::stdin();
    if !nix::unistd::isatty(&stdin).unwrap_or(false) {
        return None;
    }
    let dup = nix::unistd::dup(&stdin).ok()?;
    Some(dup)
}

/// Opens a file entry for a restored fd, at its offset, in this process.
pub fn open_reg(f: &FileEntry) -> Result<OwnedFd> {
    let r = f.reg.as_ref().ok_or_else(|| Error::Restore {
        pid: 0,
        msg: format!("file {} has no reg entry", f.id),
    })?;
    let acc = r.flags & libc::O_ACCMODE as u32;
    let mut o = std::fs::OpenOptions::new();
    o.read(acc == libc::O_RDONLY as u32 || acc == libc::O_RDWR as u32)
        .write(acc == libc::O_WRONLY as u32 || acc == libc::O_RDWR as u32)
        .custom_flags(
            // O_NOCTTY: a terminal opened here must not become the restorer's.
            (r.flags
                & !(libc::O_ACCMODE as u32
                    | libc::O_CREAT as u32
                    | libc::O_TRUNC as u32
                    | libc::O_EXCL as u32)) as i32
                | libc::O_NOCTTY,
        );
    let file = o.open(&r.name).map_err(Error::io("open", &r.name))?;
    if r.pos != 0 {
        use std::io::{Seek, SeekFrom};
        (&file)
            .seek(SeekFrom::Start(r.pos))
            .map_err(Error::io("seek", &r.name))?;
    }
    let fd: OwnedFd = file.into();
    log::debug!(path = r.name.as_str(), fd = fd.as_raw_fd(), pos = r.pos; "opened file for restore");
    Ok(fd)
}

/// Opens a file for mapping (read-only unless a shared writable mapping needs write),
/// refusing one whose size differs from the dump's: its unsaved pages would be wrong.
pub fn open_for_map(path: &str, write: bool, size: Option<u64>) -> Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .open(path)
        .map_err(Error::io("open", path))?;
    if let Some(want) = size {
        let got = f.metadata().map_err(Error::io("stat", path))?.len();
        if got != want {
            return Err(Error::Restore {
                pid: 0,
                msg: format!("{path} changed since the dump (size {want} -> {got}); restore needs the same file"),
            });
        }
    }
    Ok(f.into())
}

/// Opens a directory (for cwd/root).
pub fn open_dir(path: &str) -> Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path)
        .map_err(Error::io("open directory", path))?;
    Ok(f.into())
}
