//! Freezing a process with ptrace, and the guard that guarantees it is resumed: whatever
//! happens during the dump (error, fault injection, panic), dropping `Seized` puts every
//! thread's registers and signal mask back, removes cryo's scratch page and detaches.

use crate::error::{Error, Result};
use crate::ptrace::{self as tr, Injector, Regs, Stop};
use crate::sys::ptrace as raw;
use nix::errno::Errno;
use nix::unistd::Pid;

/// One stopped thread.
pub struct Thread {
    pub tid: Pid,
    /// Registers at the stop, with an interrupted syscall turned into a restart.
    pub image_regs: Regs,
    live_regs: Regs,
    pub sigmask: u64,
}

pub struct Seized {
    pub pid: Pid,
    /// The thread group leader first.
    pub threads: Vec<Thread>,
    scratch: Option<(u64, u64)>,
    syscall_ip: Option<u64>,
    /// Set once the process is killed or detached: nothing left for Drop to undo.
    released: bool,
}

fn list_tids(pid: Pid) -> Result<Vec<Pid>> {
    let dir = format!("/proc/{pid}/task");
    let mut v: Vec<i32> = std::fs::read_dir(&dir)
        .map_err(|e| Error::proc_io(pid.as_raw(), &dir, e))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    v.sort_unstable();
    // Leader first.
    v.sort_by_key(|&t| t != pid.as_raw());
    Ok(v.into_iter().map(Pid::from_raw).collect())
}

impl Seized {
    /// Seizes and interrupts every thread, re-reading the thread list until no new
    /// thread appears (a running thread may create one while others are being stopped).
    pub fn new(pid: Pid) -> Result<Self> {
        let mut s = Seized {
            pid,
            threads: Vec::new(),
            scratch: None,
            syscall_ip: None,
            released: false,
        };
        loop {
            let new: Vec<Pid> = list_tids(pid)?
                .into_iter()
                .filter(|t| !s.threads.iter().any(|x| x.tid == *t))
                .collect();
            if new.is_empty() {
                break;
            }
            s.seize_batch(&new)?;
        }
        log::info!(pid = pid.as_raw(), threads = s.threads.len(); "seized");
        Ok(s)
    }

    /// Seizes a batch of threads, then interrupts them all, then waits for each: the
    /// stop latencies overlap instead of adding up (a busy process may take a while to
    /// schedule each thread into its stop).
    fn seize_batch(&mut self, tids: &[Pid]) -> Result<()> {
        let mut seized = Vec::with_capacity(tids.len());
        for &tid in tids {
            let t = tid.as_raw();
            match raw::seize(tid, libc::PTRACE_O_TRACESYSGOOD as usize) {
                Ok(()) => seized.push(tid),
                // A thread that exited meanwhile is simply not part of the dump.
                Err(Errno::ESRCH) if tid != self.pid => {}
                Err(Errno::ESRCH) => return Err(Error::NoProcess { pid: t }),
                Err(Errno::EPERM) => {
                    return Err(Error::Trace {
                        pid: t,
                        what: "permission denied to trace it (already traced, or cryo lacks CAP_SYS_PTRACE)".into(),
                    })
                }
                Err(e) => return Err(Error::Sys { call: "PTRACE_SEIZE", pid: t, source: e }),
            }
        }
        for &tid in &seized {
            // ESRCH: the thread exited; its wait below reports it.
            let _ = raw::interrupt(tid);
        }
        for (i, &tid) in seized.iter().enumerate() {
            match self.wait_interrupted(tid) {
                Ok(th) => self.threads.push(th),
                Err(e) => {
                    // Threads seized but not yet recorded: let them go before failing.
                    for &rest in &seized[i..] {
                        let _ = raw::detach(rest, 0);
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn wait_interrupted(&self, tid: Pid) -> Result<Thread> {
        let t = tid.as_raw();
        let t0 = std::time::Instant::now();
        loop {
            let st = tr::wait_stop(tid)?;
            log::trace!(tid = t, stop:? = st; "stop while seizing");
            match st {
                Stop::Event => break,
                // A signal was being delivered as we stopped it: let it through; the
                // interrupt is still pending and stops the thread right after.
                Stop::Signal(sig) => raw::cont(tid, sig).map_err(Error::sys("PTRACE_CONT", t))?,
                Stop::Syscall | Stop::Clone => {
                    raw::cont(tid, 0).map_err(Error::sys("PTRACE_CONT", t))?
                }
            }
        }
        let regs = raw::get_regs(tid).map_err(Error::sys("PTRACE_GETREGS", t))?;
        let sigmask = raw::get_sigmask(tid).map_err(Error::sys("PTRACE_GETSIGMASK", t))?;
        // Injected syscalls run with every signal blocked, so none interrupts them.
        raw::set_sigmask(tid, !0).map_err(Error::sys("PTRACE_SETSIGMASK", t))?;
        let (image_regs, live_regs) = tr::restart_adjusted(&regs);
        log::debug!(tid = t, ip = image_regs.rip, orig_ax = image_regs.orig_rax as i64, wait_us = t0.elapsed().as_micros() as u64; "thread stopped");
        Ok(Thread {
            tid,
            image_regs,
            live_regs,
            sigmask,
        })
    }

    /// Prepares syscall injection in thread `idx`: a `syscall` instruction (found in the
    /// vDSO) and a scratch page in the target for pointer arguments (shared by threads).
    pub fn injector(&mut self, idx: usize, vdso: Option<(u64, u64)>) -> Result<Injector> {
        let p = self.pid.as_raw();
        let ip = match self.syscall_ip {
            Some(ip) => ip,
            None => {
                let (s, e) = vdso.ok_or_else(|| Error::Unsupported {
                    pid: p,
                    what: "address space".into(),
                    why: "no vDSO mapping to run syscalls from".into(),
                })?;
                let ip = tr::find_syscall_insn(self.pid, s, e)?.ok_or_else(|| Error::Trace {
                    pid: p,
                    what: "no syscall instruction in the vDSO".into(),
                })?;
                self.syscall_ip = Some(ip);
                ip
            }
        };
        let th = &self.threads[idx];
        let mut inj = Injector {
            pid: th.tid,
            syscall_ip: ip,
            base: th.live_regs,
            scratch: None,
        };
        if self.scratch.is_none() {
            let len = 4096u64;
            let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
            let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
            let addr = inj.call("mmap", libc::SYS_mmap, &[0, len, prot, flags, u64::MAX, 0])?;
            self.scratch = Some((addr, len));
        }
        inj.scratch = self.scratch;
        Ok(inj)
    }

    /// Undoes cryo's changes: scratch page, every thread's registers and signal mask.
    fn tidy(&mut self) -> Result<()> {
        if let (Some((addr, len)), Some(ip), Some(th)) =
            (self.scratch, self.syscall_ip, self.threads.first())
        {
            let inj = Injector {
                pid: th.tid,
                syscall_ip: ip,
                base: th.live_regs,
                scratch: None,
            };
            inj.call("munmap", libc::SYS_munmap, &[addr, len])?;
            self.scratch = None;
        }
        for th in &self.threads {
            let t = th.tid.as_raw();
            raw::set_regs(th.tid, &th.live_regs).map_err(Error::sys("PTRACE_SETREGS", t))?;
            raw::set_sigmask(th.tid, th.sigmask).map_err(Error::sys("PTRACE_SETSIGMASK", t))?;
        }
        Ok(())
    }

    fn detach_all(&self) {
        for th in &self.threads {
            if let Err(e) = raw::detach(th.tid, 0) {
                log::error!(tid = th.tid.as_raw(), err:% = e; "could not detach");
            }
        }
    }

    /// Lets the process run on exactly as before the dump.
    pub fn resume(mut self) -> Result<()> {
        self.tidy()?;
        self.released = true;
        self.detach_all();
        log::info!(pid = self.pid.as_raw(); "resumed");
        Ok(())
    }

    /// Ends the process after a successful dump (the images now hold it).
    pub fn kill(mut self) -> Result<()> {
        self.released = true;
        let p = self.pid.as_raw();
        nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL)
            .map_err(Error::sys("kill", p))?;
        // Consume the tracer's exit notifications so the real parent can reap it; the
        // leader's comes only after every other thread's, so it is waited for last.
        for th in self.threads.iter().rev() {
            let _ = nix::sys::wait::waitpid(th.tid, Some(nix::sys::wait::WaitPidFlag::__WALL));
        }
        log::info!(pid = p; "killed after dump");
        Ok(())
    }
}

impl Drop for Seized {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let p = self.pid.as_raw();
        if let Err(e) = self.tidy() {
            log::error!(pid = p, err:% = e; "could not tidy the process before resuming it");
        }
        self.detach_all();
        log::warn!(pid = p; "dump failed; process resumed");
    }
}
