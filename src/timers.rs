//! Interval timers (ITIMER_REAL — also `alarm` —, ITIMER_VIRTUAL, ITIMER_PROF). Only
//! the process can read or arm them, so both halves are injected syscalls. Restore arms
//! them last, so the time spent restoring is not charged to the real timer twice.

use crate::error::Result;
use crate::ptrace::Injector;
use cryo_proto::criu::{ItimerEntry, TaskTimersEntry};

const WHICH: [u64; 3] = [0, 1, 2]; // ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF

fn entry(b: &[u8]) -> ItimerEntry {
    let w = |i: usize| u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default());
    ItimerEntry {
        isec: w(0),
        iusec: w(1),
        vsec: w(2),
        vusec: w(3),
    }
}

pub fn dump(inj: &Injector) -> Result<TaskTimersEntry> {
    let (scratch, _) = inj.scratch()?;
    let mut t = [
        ItimerEntry::default(),
        ItimerEntry::default(),
        ItimerEntry::default(),
    ];
    for (i, which) in WHICH.iter().enumerate() {
        inj.call("getitimer", libc::SYS_getitimer, &[*which, scratch])?;
        t[i] = entry(&inj.get(0, 32)?);
    }
    let [real, virt, prof] = t;
    Ok(TaskTimersEntry {
        real,
        virt,
        prof,
        posix: Vec::new(),
    })
}

pub fn restore(inj: &Injector, t: &TaskTimersEntry) -> Result<()> {
    for (which, e) in WHICH.iter().zip([&t.real, &t.virt, &t.prof]) {
        if e.vsec == 0 && e.vusec == 0 {
            continue; // disarmed (a fresh process has every timer off)
        }
        let b: Vec<u8> = [e.isec, e.iusec, e.vsec, e.vusec]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        let addr = inj.put(0, &b)?;
        inj.call("setitimer", libc::SYS_setitimer, &[*which, addr, 0])?;
    }
    Ok(())
}
