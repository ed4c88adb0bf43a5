//! timerfd: clock, remaining time and interval, absolute/cancel-on-set flags, and the
//! expirations counted but not yet read (`ticks`, put back with TFD_IOC_SET_TICKS).
//! `vsec`/`vnsec` hold the time left for a relative timer (the time between dump and
//! restore does not count, as in CRIU) and the absolute expiry for a
//! TFD_TIMER_ABSTIME one (CRIU stores the time left there too, shifting the expiry by
//! the downtime).

use super::{Fd, FileIds};
use crate::error::{Error, Result};
use crate::sys::fd as sysfd;
use cryo_proto::criu::{FdTypes, FileEntry, TimerfdEntry};
use std::os::fd::{AsFd, OwnedFd};

/// "(sec, nsec)" as fdinfo prints it_value / it_interval.
fn pair(v: &str) -> Option<(u64, u64)> {
    let (a, b) = v
        .trim()
        .strip_prefix('(')?
        .strip_suffix(')')?
        .split_once(',')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

pub fn dump(f: &Fd, ids: &mut FileIds) -> Result<u32> {
    let bad = || f.unsupported("unexpected timerfd fdinfo");
    let clockid = f
        .info("clockid")
        .and_then(|v| v.parse().ok())
        .ok_or_else(bad)?;
    let ticks = f
        .info("ticks")
        .and_then(|v| v.parse().ok())
        .ok_or_else(bad)?;
    let settime_flags = f
        .info("settime flags")
        .and_then(|v| u32::from_str_radix(v, 8).ok())
        .ok_or_else(bad)?;
    let (mut vsec, mut vnsec) = f.info("it_value").and_then(pair).ok_or_else(bad)?;
    // An absolute timer keeps its absolute expiry: stored as now + left on its clock
    // (a relative one keeps the time left, the downtime not counting).
    if settime_flags & libc::TFD_TIMER_ABSTIME as u32 != 0 && (vsec, vnsec) != (0, 0) {
        let now = nix::time::clock_gettime(nix::time::ClockId::from_raw(clockid as i32))
            .map_err(Error::sys("clock_gettime", f.pid))?;
        let ns = now.tv_nsec() as u64 + vnsec;
        vsec += now.tv_sec() as u64 + ns / 1_000_000_000;
        vnsec = ns % 1_000_000_000;
    }
    let (isec, insec) = f.info("it_interval").and_then(pair).ok_or_else(bad)?;
    Ok(ids.add(FileEntry {
        r#type: FdTypes::Timerfd as i32,
        tfd: Some(TimerfdEntry {
            id: 0,
            flags: f.flags,
            fown: Default::default(),
            clockid,
            ticks,
            settime_flags,
            vsec,
            vnsec,
            isec,
            insec,
        }),
        ..Default::default()
    }))
}

pub fn restore(e: &TimerfdEntry) -> Result<OwnedFd> {
    let flags = (e.flags & libc::O_NONBLOCK as u32) as i32;
    let fd =
        sysfd::timerfd_create(e.clockid as i32, flags).map_err(Error::sys("timerfd_create", 0))?;
    let mut value = (e.vsec as i64, e.vnsec as i64);
    let interval = (e.isec as i64, e.insec as i64);
    let mut sflags = if e.settime_flags & libc::TFD_TIMER_ABSTIME as u32 != 0 {
        e.settime_flags as i32
    } else {
        0
    };
    if value == (0, 0) && interval != (0, 0) {
        // A periodic timer that expired and was not read yet: the kernel re-arms it only
        // when it is read, so it shows no time left. Its next expiry is one interval on
        // (its unread expirations are the ticks set below).
        (value, sflags) = (interval, 0);
    }
    if value != (0, 0) {
        sysfd::timerfd_settime(fd.as_fd(), sflags, value, interval)
            .map_err(Error::sys("timerfd_settime", 0))?;
    }
    if e.ticks > 0 {
        sysfd::timerfd_set_ticks(fd.as_fd(), e.ticks)
            .map_err(Error::sys("ioctl(TFD_IOC_SET_TICKS)", 0))?;
    }
    Ok(fd)
}
