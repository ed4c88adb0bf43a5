//! Signal state: handlers (`rt_sigaction`), the alternate stack, the blocked mask and
//! queued signals. Handlers and the altstack are only known to the task, so both dump
//! and restore run those syscalls inside it; queued signals are read with
//! PTRACE_PEEKSIGINFO and re-queued by the task itself (`rt_sigqueueinfo` to self is
//! allowed with any si_code).

use crate::error::{Error, Result};
use crate::ptrace::Injector;
use crate::sys::ptrace::{self as raw, RawSiginfo};
use cryo_proto::criu::{SaEntry, SiginfoEntry, SignalQueueEntry, ThreadSasEntry};
use nix::unistd::Pid;

const SA_RESTORER: u64 = 0x0400_0000;
const SS_DISABLE: u32 = 2;
const SS_ONSTACK: u32 = 1;
const NSIG: i32 = 64;

fn is_unblockable(sig: i32) -> bool {
    sig == libc::SIGKILL || sig == libc::SIGSTOP
}

fn u64s(b: &[u8]) -> Vec<u64> {
    b.chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or_default()))
        .collect()
}

/// Reads all handlers (index = signal - 1; SIGKILL/SIGSTOP get default entries).
pub fn dump_sigactions(inj: &Injector) -> Result<Vec<SaEntry>> {
    let (scratch, _) = inj.scratch()?;
    let mut out = Vec::with_capacity(NSIG as usize);
    for sig in 1..=NSIG {
        if is_unblockable(sig) {
            out.push(SaEntry::default());
            continue;
        }
        inj.call(
            "rt_sigaction",
            libc::SYS_rt_sigaction,
            &[sig as u64, 0, scratch, 8],
        )?;
        let w = u64s(&inj.get(0, 32)?);
        out.push(SaEntry {
            sigaction: w[0],
            flags: w[1],
            restorer: w[2],
            mask: w[3],
            ..Default::default()
        });
    }
    Ok(out)
}

pub fn restore_sigactions(inj: &Injector, sas: &[SaEntry]) -> Result<()> {
    for (i, sa) in sas.iter().enumerate() {
        let sig = i as i32 + 1;
        if is_unblockable(sig) || (sa.sigaction == 0 && sa.flags == 0 && sa.mask == 0) {
            continue;
        }
        let mut b = Vec::with_capacity(32);
        for v in [sa.sigaction, sa.flags, sa.restorer, sa.mask] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        let addr = inj.put(0, &b)?;
        inj.call(
            "rt_sigaction",
            libc::SYS_rt_sigaction,
            &[sig as u64, addr, 0, 8],
        )?;
    }
    let _ = SA_RESTORER;
    Ok(())
}

pub fn dump_altstack(inj: &Injector) -> Result<ThreadSasEntry> {
    let (scratch, _) = inj.scratch()?;
    inj.call("sigaltstack", libc::SYS_sigaltstack, &[0, scratch])?;
    let w = u64s(&inj.get(0, 24)?);
    Ok(ThreadSasEntry {
        ss_sp: w[0],
        ss_flags: w[1] as u32,
        ss_size: w[2],
    })
}

/// Sets the altstack as dumped, including "disabled" (the new task inherited cryo's).
pub fn restore_altstack(inj: &Injector, sas: &ThreadSasEntry) -> Result<()> {
    let flags = if sas.ss_flags & SS_DISABLE != 0 {
        SS_DISABLE
    } else {
        sas.ss_flags & !SS_ONSTACK
    };
    let mut b = Vec::with_capacity(24);
    b.extend_from_slice(&sas.ss_sp.to_ne_bytes());
    b.extend_from_slice(&(flags as u64).to_ne_bytes());
    b.extend_from_slice(&sas.ss_size.to_ne_bytes());
    let addr = inj.put(0, &b)?;
    inj.call("sigaltstack", libc::SYS_sigaltstack, &[addr, 0])?;
    Ok(())
}

/// Queued signals of one thread (`shared = false`) or of the whole process.
pub fn dump_pending(tid: Pid, shared: bool) -> Result<SignalQueueEntry> {
    let mut out = Vec::new();
    let mut buf: Vec<RawSiginfo> = vec![[0u8; 128]; 32];
    loop {
        let n = raw::peek_siginfo(tid, shared, out.len() as u64, &mut buf)
            .map_err(Error::sys("PTRACE_PEEKSIGINFO", tid.as_raw()))?;
        out.extend(buf[..n].iter().map(|si| SiginfoEntry {
            siginfo: si.to_vec(),
        }));
        if n < buf.len() {
            break;
        }
    }
    Ok(SignalQueueEntry { signals: out })
}

/// Re-queues signals in the target (run with every signal blocked).
pub fn restore_pending(
    inj: &Injector,
    pid: i32,
    tid: i32,
    q: &SignalQueueEntry,
    shared: bool,
) -> Result<()> {
    let (pid, tid) = (pid as u64, tid as u64);
    for s in &q.signals {
        if s.siginfo.len() != 128 {
            return Err(Error::Restore {
                pid: inj.pid.as_raw(),
                msg: "bad siginfo size in image".into(),
            });
        }
        let signo = u32::from_ne_bytes(s.siginfo[0..4].try_into().unwrap_or_default()) as u64;
        let addr = inj.put(0, &s.siginfo)?;
        if shared {
            inj.call(
                "rt_sigqueueinfo",
                libc::SYS_rt_sigqueueinfo,
                &[pid, signo, addr],
            )?;
        } else {
            inj.call(
                "rt_tgsigqueueinfo",
                libc::SYS_rt_tgsigqueueinfo,
                &[pid, tid, signo, addr],
            )?;
        }
    }
    Ok(())
}
