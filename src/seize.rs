//! Freezing a task with ptrace, and the guard that guarantees it is resumed: whatever
//! happens during the dump (error, fault injection, panic), dropping `Seized` puts the
//! registers and signal mask back, removes cryo's scratch page and detaches.

use crate::error::{Error, Result};
use crate::ptrace::{self as tr, Injector, Regs, Stop};
use crate::sys::ptrace as raw;
use nix::errno::Errno;
use nix::unistd::Pid;

pub struct Seized {
    pub pid: Pid,
    /// Registers at the stop, with an interrupted syscall turned into a restart.
    pub image_regs: Regs,
    live_regs: Regs,
    pub sigmask: u64,
    scratch: Option<(u64, u64)>,
    syscall_ip: Option<u64>,
    /// Set once the task is killed or detached: nothing left for Drop to undo.
    released: bool,
}

impl Seized {
    /// PTRACE_SEIZE + PTRACE_INTERRUPT, waiting for the interrupt stop.
    pub fn new(pid: Pid) -> Result<Self> {
        let p = pid.as_raw();
        raw::seize(pid, libc::PTRACE_O_TRACESYSGOOD as usize).map_err(|e| match e {
            Errno::ESRCH => Error::NoProcess { pid: p },
            Errno::EPERM => Error::Trace {
                pid: p,
                what:
                    "permission denied to trace it (already traced, or cryo lacks CAP_SYS_PTRACE)"
                        .into(),
            },
            e => Error::Sys {
                call: "PTRACE_SEIZE",
                pid: p,
                source: e,
            },
        })?;
        let stop = || -> Result<(Regs, u64)> {
            raw::interrupt(pid).map_err(Error::sys("PTRACE_INTERRUPT", p))?;
            loop {
                match tr::wait_stop(pid)? {
                    Stop::Event => break,
                    // A signal was being delivered as we stopped it: let it through; the
                    // interrupt is still pending and stops the task right after.
                    Stop::Signal(sig) => {
                        raw::cont(pid, sig).map_err(Error::sys("PTRACE_CONT", p))?
                    }
                    Stop::Syscall => raw::cont(pid, 0).map_err(Error::sys("PTRACE_CONT", p))?,
                }
            }
            let regs = raw::get_regs(pid).map_err(Error::sys("PTRACE_GETREGS", p))?;
            let mask = raw::get_sigmask(pid).map_err(Error::sys("PTRACE_GETSIGMASK", p))?;
            // Injected syscalls run with every signal blocked, so none interrupts them.
            raw::set_sigmask(pid, !0).map_err(Error::sys("PTRACE_SETSIGMASK", p))?;
            Ok((regs, mask))
        };
        let (regs, sigmask) = stop().inspect_err(|_| {
            let _ = raw::detach(pid, 0);
        })?;
        let (image_regs, live_regs) = tr::restart_adjusted(&regs);
        let s = Seized {
            pid,
            image_regs,
            live_regs,
            sigmask,
            scratch: None,
            syscall_ip: None,
            released: false,
        };
        log::info!(pid = p, ip = s.image_regs.rip, orig_ax = s.image_regs.orig_rax as i64; "seized");
        Ok(s)
    }

    /// Prepares syscall injection: a `syscall` instruction (found in the vDSO) and a
    /// scratch page mapped in the target for pointer arguments.
    pub fn injector(&mut self, vdso: Option<(u64, u64)>) -> Result<Injector> {
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
        let mut inj = Injector {
            pid: self.pid,
            syscall_ip: ip,
            base: self.live_regs,
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

    /// Undoes cryo's changes to the task: scratch page, registers, signal mask.
    fn tidy(&mut self) -> Result<()> {
        let p = self.pid.as_raw();
        if let (Some((addr, len)), Some(ip)) = (self.scratch, self.syscall_ip) {
            let inj = Injector {
                pid: self.pid,
                syscall_ip: ip,
                base: self.live_regs,
                scratch: None,
            };
            inj.call("munmap", libc::SYS_munmap, &[addr, len])?;
            self.scratch = None;
        }
        raw::set_regs(self.pid, &self.live_regs).map_err(Error::sys("PTRACE_SETREGS", p))?;
        raw::set_sigmask(self.pid, self.sigmask).map_err(Error::sys("PTRACE_SETSIGMASK", p))?;
        Ok(())
    }

    /// Lets the task run on exactly as before the dump.
    pub fn resume(mut self) -> Result<()> {
        self.tidy()?;
        self.released = true;
        raw::detach(self.pid, 0).map_err(Error::sys("PTRACE_DETACH", self.pid.as_raw()))?;
        log::info!(pid = self.pid.as_raw(); "resumed");
        Ok(())
    }

    /// Ends the task after a successful dump (the images now hold it).
    pub fn kill(mut self) -> Result<()> {
        self.released = true;
        let p = self.pid.as_raw();
        nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL)
            .map_err(Error::sys("kill", p))?;
        // Consume the tracer's exit notification so the real parent can reap it.
        let _ = nix::sys::wait::waitpid(self.pid, Some(nix::sys::wait::WaitPidFlag::__WALL));
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
            log::error!(pid = p, err:% = e; "could not tidy the task before resuming it");
        }
        match raw::detach(self.pid, 0) {
            Ok(()) => log::warn!(pid = p; "dump failed; task resumed"),
            Err(e) => log::error!(pid = p, err:% = e; "could not detach"),
        }
    }
}
