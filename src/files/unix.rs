//! unix sockets: not supported yet (placeholder for the dump and restore halves).

use super::{Fd, FileIds, Opener};
use crate::error::{Error, Result};
use crate::image::ImageDir;
use cryo_proto::criu::FileEntry;
use std::os::fd::OwnedFd;

/// What a dump collects besides the file entries (queued data and the like).
#[derive(Debug, Default)]
pub struct DumpState {}

impl DumpState {
    pub fn write(&self, _dir: &ImageDir) -> Result<()> {
        Ok(())
    }
}

pub fn dump(f: &Fd, _ino: u64, _ids: &mut FileIds) -> Result<u32> {
    Err(f.unsupported("unix sockets are not supported yet"))
}

/// Restore-side state (sockets made so far, loaded queues).
#[derive(Debug, Default)]
pub struct Restorer {}

impl Restorer {
    pub fn load(_dir: &ImageDir) -> Result<Self> {
        Ok(Restorer::default())
    }
}

pub fn restore(_op: &mut Opener, fe: &FileEntry) -> Result<OwnedFd> {
    Err(Error::Restore {
        pid: 0,
        msg: format!("file {}: unix sockets are not supported yet", fe.id),
    })
}
