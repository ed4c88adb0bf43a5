//! Timers of a process.
//!
//! - Interval timers (ITIMER_REAL — also `alarm` —, ITIMER_VIRTUAL, ITIMER_PROF): only
//!   the process can read or arm them, so both halves are injected syscalls.
//! - POSIX timers (`timer_create`): the list, signal, notification and clock come from
//!   `/proc/PID/timers`; value and interval from an injected `timer_gettime`, the
//!   overrun count from `timer_getoverrun`. Restore turns on
//!   `PR_TIMER_CREATE_RESTORE_IDS` (Linux 6.14) so that `timer_create` takes the wanted
//!   id from `*timerid`, creates each timer, arms it with its remaining time (relative:
//!   the time between dump and restore is not charged), and turns the mode off.
//!   The kernel offers no way to set a timer's overrun count: a restored timer's
//!   `timer_getoverrun` starts again at 0. A timer signal pending at dump time is
//!   re-queued by `signals` with its siginfo as PTRACE_PEEKSIGINFO shows it — id and
//!   value right, `si_overrun` 0 (filled in by the kernel only at dequeue) — and no
//!   longer coalesces with the timer's next expiry.
//! - Timer slack (per thread): injected PR_GET/SET_TIMERSLACK.
//!
//! Restore arms the timers last, so the time spent restoring is not charged twice.

use crate::error::{Error, Result};
use crate::proc;
use crate::ptrace::Injector;
use cryo_proto::criu::{ItimerEntry, PosixTimerEntry, TaskTimersEntry};

const WHICH: [u64; 3] = [0, 1, 2]; // ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF
/// prctl PR_TIMER_CREATE_RESTORE_IDS and its arguments (include/uapi/linux/prctl.h).
const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;
const RESTORE_IDS_OFF: u64 = 0;
const RESTORE_IDS_ON: u64 = 1;
const SIGEV_THREAD_ID: u32 = 4;
/// CPU clock encoding (include/linux/posix-timers_types.h): `~pid << 3 | per-thread
/// bit (4) | clock kind (0..2)`.
const CPUCLOCK_PERTHREAD: i32 = 4;

fn u64s(b: &[u8]) -> Vec<u64> {
    b.chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or_default()))
        .collect()
}

fn entry(b: &[u8]) -> ItimerEntry {
    let w = u64s(b);
    ItimerEntry {
        isec: w[0],
        iusec: w[1],
        vsec: w[2],
        vusec: w[3],
    }
}

/// Whether a timer on `clock` can be recreated in the leader of `pid` with the same
/// clock id: CPU clocks naming another process, or the creating thread's own clock
/// (`CLOCK_THREAD_CPUTIME_ID`) in a process with several threads (the kernel does not
/// tell which thread created it), are refused.
fn check_clock(pid: i32, tids: &[i32], id: i32, clock: i32) -> Result<()> {
    if clock >= 0 {
        return Ok(());
    }
    let owner = !(clock >> 3);
    let per_thread = clock & CPUCLOCK_PERTHREAD != 0;
    let why = match (owner, per_thread) {
        (0, false) => return Ok(()),
        (0, true) if tids.len() == 1 => return Ok(()),
        (0, true) => "a CLOCK_THREAD_CPUTIME_ID timer in a multi-threaded process: the thread whose CPU time it counts cannot be found".to_string(),
        (t, true) if tids.contains(&t) => return Ok(()),
        (t, true) => format!("it counts the CPU time of thread {t}, outside the process"),
        (p, false) if p == pid => return Ok(()),
        (p, false) => format!("it counts the CPU time of another process ({p})"),
    };
    Err(Error::Unsupported {
        pid,
        what: format!("POSIX timer {id} on clock {clock}"),
        why,
    })
}

/// Interval and POSIX timers of the process; `inj` runs in the leader, `tids` lists
/// every thread.
pub fn dump(inj: &Injector, tids: &[i32]) -> Result<TaskTimersEntry> {
    let pid = inj.pid.as_raw();
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
    let mut posix = Vec::new();
    for pt in proc::timers::parse_timers(&proc::read(pid, "timers")?)? {
        check_clock(pid, tids, pt.id, pt.clock)?;
        let id = pt.id as u64;
        inj.call("timer_gettime", libc::SYS_timer_gettime, &[id, scratch])?;
        // struct itimerspec { it_interval, it_value }
        let w = u64s(&inj.get(0, 32)?);
        let overrun = inj.call("timer_getoverrun", libc::SYS_timer_getoverrun, &[id])?;
        log::debug!(pid = pid, id = pt.id, clock = pt.clock, notify = pt.notify, signo = pt.signo, value_s = w[2], overrun = overrun; "POSIX timer");
        posix.push(PosixTimerEntry {
            it_id: pt.id as u32,
            clock_id: pt.clock as u32,
            si_signo: pt.signo,
            it_sigev_notify: pt.notify,
            sival_ptr: pt.sival,
            overrun: overrun as u32,
            isec: w[0],
            insec: w[1],
            vsec: w[2],
            vnsec: w[3],
            notify_thread_id: (pt.notify & SIGEV_THREAD_ID != 0).then_some(pt.target),
        });
    }
    posix.sort_by_key(|p| p.it_id);
    Ok(TaskTimersEntry {
        real,
        virt,
        prof,
        posix,
    })
}

pub fn restore(inj: &Injector, t: &TaskTimersEntry) -> Result<()> {
    for (which, e) in WHICH.iter().zip([&t.real, &t.virt, &t.prof]) {
        let (mut vsec, mut vusec) = (e.vsec, e.vusec);
        if vsec == 0 && vusec == 0 {
            if e.isec == 0 && e.iusec == 0 {
                continue; // disarmed (a fresh process has every timer off)
            }
            // Expired with its signal still pending: the kernel re-arms ITIMER_REAL when
            // that signal is taken, which it can only do for an armed timer. Arm it to
            // fire at once; its signal merges with the pending one.
            vusec = 1;
        }
        if *which != libc::ITIMER_REAL as u64 {
            // setitimer adds a tick to CPU-time timers: take it off, or each restore
            // would push the expiry one tick later.
            let tick = crate::sys::process::cpu_itimer_tick_us();
            let us = (vsec * 1_000_000 + vusec).saturating_sub(tick).max(1);
            (vsec, vusec) = (us / 1_000_000, us % 1_000_000);
        }
        let b: Vec<u8> = [e.isec, e.iusec, vsec, vusec]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        let addr = inj.put(0, &b)?;
        inj.call("setitimer", libc::SYS_setitimer, &[*which, addr, 0])?;
    }
    if t.posix.is_empty() {
        return Ok(());
    }
    let pid = inj.pid.as_raw();
    inj.call(
        "prctl(PR_TIMER_CREATE_RESTORE_IDS)",
        libc::SYS_prctl,
        &[PR_TIMER_CREATE_RESTORE_IDS, RESTORE_IDS_ON],
    )
    .map_err(|e| match e {
        Error::Remote {
            errno: nix::errno::Errno::EINVAL,
            ..
        } => Error::Restore {
            pid,
            msg: "POSIX timers need PR_TIMER_CREATE_RESTORE_IDS (Linux 6.14 or later)".into(),
        },
        e => e,
    })?;
    for p in &t.posix {
        create_timer(inj, p)?;
    }
    inj.call(
        "prctl(PR_TIMER_CREATE_RESTORE_IDS)",
        libc::SYS_prctl,
        &[PR_TIMER_CREATE_RESTORE_IDS, RESTORE_IDS_OFF],
    )?;
    Ok(())
}

/// `timer_create` with the dumped id (restore-ids mode is on), then `timer_settime`.
fn create_timer(inj: &Injector, p: &PosixTimerEntry) -> Result<()> {
    let pid = inj.pid.as_raw();
    // struct sigevent (64 bytes): sigev_value, sigev_signo, sigev_notify, then the
    // union whose first int is the target thread id.
    let mut sev = [0u8; 64];
    sev[0..8].copy_from_slice(&p.sival_ptr.to_ne_bytes());
    sev[8..12].copy_from_slice(&p.si_signo.to_ne_bytes());
    sev[12..16].copy_from_slice(&p.it_sigev_notify.to_ne_bytes());
    sev[16..20].copy_from_slice(&p.notify_thread_id.unwrap_or(0).to_ne_bytes());
    let sev_addr = inj.put(0, &sev)?;
    let id_addr = inj.put(64, &p.it_id.to_ne_bytes())?;
    let clock = p.clock_id as i32 as i64 as u64;
    inj.call(
        "timer_create",
        libc::SYS_timer_create,
        &[clock, sev_addr, id_addr],
    )?;
    let got = u32::from_ne_bytes(inj.get(64, 4)?.try_into().unwrap_or_default());
    if got != p.it_id {
        return Err(Error::Restore {
            pid,
            msg: format!("POSIX timer {} was created as {got}", p.it_id),
        });
    }
    if p.vsec == 0 && p.vnsec == 0 {
        return Ok(()); // disarmed
    }
    let spec: Vec<u8> = [p.isec, p.insec, p.vsec, p.vnsec]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect();
    let spec_addr = inj.put(128, &spec)?;
    inj.call(
        "timer_settime",
        libc::SYS_timer_settime,
        &[p.it_id as u64, 0, spec_addr, 0],
    )?;
    log::debug!(pid = pid, id = p.it_id, clock = p.clock_id as i32, value_s = p.vsec, interval_s = p.isec; "POSIX timer restored");
    Ok(())
}

/// The thread's timer slack (ns), by an injected PR_GET_TIMERSLACK in that thread.
pub fn dump_slack(inj: &Injector) -> Result<u64> {
    inj.call(
        "prctl(PR_GET_TIMERSLACK)",
        libc::SYS_prctl,
        &[libc::PR_GET_TIMERSLACK as u64],
    )
}

/// Sets the thread's timer slack; 0 (a real-time thread's) is left to the scheduler.
pub fn restore_slack(inj: &Injector, ns: Option<u64>) -> Result<()> {
    match ns {
        Some(ns) if ns != 0 => inj
            .call(
                "prctl(PR_SET_TIMERSLACK)",
                libc::SYS_prctl,
                &[libc::PR_SET_TIMERSLACK as u64, ns],
            )
            .map(drop),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks() {
        let me = 100;
        let one = [100];
        let two = [100, 101];
        for c in [0, 1, 7, 11, -6, -2] {
            assert!(check_clock(me, &one, 0, c).is_ok(), "{c}");
        }
        assert!(check_clock(me, &two, 0, -2).is_err());
        assert!(check_clock(me, &two, 0, -6).is_ok());
        // thread 101's sched clock: ~101 << 3 | 4 | 2
        let t101 = (!101 << 3) | 6;
        assert!(check_clock(me, &two, 0, t101).is_ok());
        assert!(check_clock(me, &one, 0, t101).is_err());
        // process 100's clock named explicitly, and another process's
        assert!(check_clock(me, &one, 0, (!100 << 3) | 2).is_ok());
        assert!(check_clock(me, &one, 0, (!55 << 3) | 2).is_err());
    }
}
