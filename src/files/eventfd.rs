//! eventfd: the counter (fdinfo `eventfd-count`, hex) and semaphore mode.

use super::{Fd, FileIds};
use crate::error::{Error, Result};
use cryo_proto::criu::{EventfdFileEntry, FdTypes, FileEntry};
use std::os::fd::OwnedFd;

pub fn dump(f: &Fd, ids: &mut FileIds) -> Result<u32> {
    let counter = f
        .info("eventfd-count")
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .ok_or_else(|| f.unsupported("no eventfd-count in fdinfo"))?;
    let semaphore = f.info("eventfd-semaphore").map(|v| v == "1");
    Ok(ids.add(FileEntry {
        r#type: FdTypes::Eventfd as i32,
        efd: Some(EventfdFileEntry {
            id: 0,
            flags: f.flags,
            fown: Default::default(),
            counter,
            cryo_semaphore: semaphore,
        }),
        ..Default::default()
    }))
}

pub fn restore(e: &EventfdFileEntry) -> Result<OwnedFd> {
    let mut flags = (e.flags & libc::O_NONBLOCK as u32) as i32;
    if e.cryo_semaphore == Some(true) {
        flags |= libc::EFD_SEMAPHORE;
    }
    let fd = crate::sys::fd::eventfd(0, flags).map_err(Error::sys("eventfd", 0))?;
    if e.counter > 0 {
        // A write adds to the counter; it takes any value below u64::MAX.
        nix::unistd::write(&fd, &e.counter.to_ne_bytes())
            .map_err(Error::sys("write(eventfd)", 0))?;
    }
    Ok(fd)
}
