//! signalfd: the signal mask (fdinfo `sigmask`, hex).

use super::{Fd, FileIds};
use crate::error::{Error, Result};
use cryo_proto::criu::{FdTypes, FileEntry, SignalfdEntry};
use std::os::fd::OwnedFd;

pub fn dump(f: &Fd, ids: &mut FileIds) -> Result<u32> {
    let sigmask = f
        .info("sigmask")
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .ok_or_else(|| f.unsupported("no sigmask in fdinfo"))?;
    Ok(ids.add(FileEntry {
        r#type: FdTypes::Signalfd as i32,
        sgfd: Some(SignalfdEntry {
            id: 0,
            flags: f.flags,
            fown: Default::default(),
            sigmask,
        }),
        ..Default::default()
    }))
}

pub fn restore(e: &SignalfdEntry) -> Result<OwnedFd> {
    let flags = (e.flags & libc::O_NONBLOCK as u32) as i32;
    crate::sys::fd::signalfd(e.sigmask, flags).map_err(Error::sys("signalfd", 0))
}
