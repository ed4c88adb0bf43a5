//! Tracing a task and running single syscalls inside it ("injection"): save registers,
//! point the thread at a `syscall` instruction with the arguments loaded, step to the
//! syscall's exit, read the result, put the registers back. No code is loaded into the
//! target.

use crate::error::{Error, Result};
use crate::sys::ptrace as raw;
use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

pub use raw::Regs;

/// `-ERESTART*` codes a syscall interrupted by a stop leaves in `rax` (kernel-internal).
const ERESTARTSYS: i64 = 512;
const ERESTARTNOINTR: i64 = 513;
const ERESTARTNOHAND: i64 = 514;
const ERESTART_RESTARTBLOCK: i64 = 516;

/// A stop we waited for.
#[derive(Debug)]
pub enum Stop {
    /// PTRACE_EVENT_STOP (after PTRACE_INTERRUPT, or a group stop).
    Event,
    /// Syscall entry or exit (with PTRACE_O_TRACESYSGOOD).
    Syscall,
    /// PTRACE_EVENT_CLONE: the traced thread just created a thread (PTRACE_O_TRACECLONE).
    Clone,
    /// A signal is about to be delivered.
    Signal(i32),
}

/// Waits for the next ptrace stop of `pid`; an exit is an error naming the status.
pub fn wait_stop(pid: Pid) -> Result<Stop> {
    loop {
        let st =
            waitpid(pid, Some(WaitPidFlag::__WALL)).map_err(Error::sys("waitpid", pid.as_raw()))?;
        return match st {
            WaitStatus::PtraceEvent(_, _, ev) if ev == libc::PTRACE_EVENT_STOP => Ok(Stop::Event),
            WaitStatus::PtraceEvent(_, _, ev) if ev == libc::PTRACE_EVENT_CLONE => Ok(Stop::Clone),
            WaitStatus::PtraceEvent(_, sig, ev) => Err(Error::Trace {
                pid: pid.as_raw(),
                what: format!("unexpected ptrace event {ev} (signal {sig})"),
            }),
            WaitStatus::PtraceSyscall(_) => Ok(Stop::Syscall),
            WaitStatus::Stopped(_, sig) => Ok(Stop::Signal(sig as i32)),
            WaitStatus::Exited(_, code) => Err(Error::Trace {
                pid: pid.as_raw(),
                what: format!("exited with status {code} while traced"),
            }),
            WaitStatus::Signaled(_, sig, _) => Err(Error::Trace {
                pid: pid.as_raw(),
                what: format!("killed by {sig} while traced"),
            }),
            WaitStatus::Continued(_) | WaitStatus::StillAlive => continue,
        };
    }
}

/// Registers as a dumped image and a resumed process must see them: a syscall that the
/// stop interrupted is turned into a restart (`ip -= 2`, `ax = nr`) the way the kernel's
/// own restart logic would, because that logic does not run after a syscall-exit stop.
/// Returns (registers for the image, registers to resume the live process with).
pub fn restart_adjusted(regs: &Regs) -> (Regs, Regs) {
    let mut img = *regs;
    let mut live = *regs;
    if (regs.orig_rax as i64) >= 0 {
        match -(regs.rax as i64) {
            ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => {
                for r in [&mut img, &mut live] {
                    r.rax = regs.orig_rax;
                    r.rip -= 2;
                }
            }
            ERESTART_RESTARTBLOCK => {
                // The live task still has its restart block; a restored one does not, so
                // the image gets EINTR (as CRIU does) and the live task restart_syscall.
                img.rax = (-(libc::EINTR as i64)) as u64;
                live.rax = libc::SYS_restart_syscall as u64;
                live.rip -= 2;
            }
            _ => {}
        }
    }
    (img, live)
}

/// Runs syscalls inside a stopped tracee at a known `syscall` instruction.
pub struct Injector {
    pub pid: Pid,
    /// Address of a `syscall` (0f 05) instruction in the tracee.
    pub syscall_ip: u64,
    /// Register template: the injected call runs with these regs except ip/ax/args.
    pub base: Regs,
    /// A scratch area in the tracee for syscall arguments passed by pointer.
    pub scratch: Option<(u64, u64)>,
}

impl Injector {
    /// Executes syscall `nr` with `args`; returns the raw result or the errno.
    pub fn call(&self, name: &'static str, nr: i64, args: &[u64]) -> Result<u64> {
        let mut r = self.base;
        r.rip = self.syscall_ip;
        r.rax = nr as u64;
        r.orig_rax = u64::MAX;
        let a = |i: usize| args.get(i).copied().unwrap_or(0);
        r.rdi = a(0);
        r.rsi = a(1);
        r.rdx = a(2);
        r.r10 = a(3);
        r.r8 = a(4);
        r.r9 = a(5);
        let pid = self.pid.as_raw();
        raw::set_regs(self.pid, &r).map_err(Error::sys("PTRACE_SETREGS", pid))?;
        // Entry stop, then exit stop (a clone event may come between them).
        for phase in ["entry", "exit"] {
            loop {
                raw::syscall(self.pid, 0).map_err(Error::sys("PTRACE_SYSCALL", pid))?;
                match wait_stop(self.pid)? {
                    Stop::Syscall => break,
                    Stop::Clone if phase == "exit" => continue,
                    other => {
                        return Err(Error::Trace {
                            pid,
                            what: format!(
                                "injected {name}: expected syscall {phase} stop, got {other:?}"
                            ),
                        })
                    }
                }
            }
        }
        let out = raw::get_regs(self.pid).map_err(Error::sys("PTRACE_GETREGS", pid))?;
        let ret = out.rax as i64;
        log::trace!(pid = pid, name = name, ret = ret; "injected syscall");
        if (-4095..0).contains(&ret) {
            return Err(Error::Remote {
                pid,
                name,
                errno: Errno::from_raw(-ret as i32),
            });
        }
        Ok(out.rax)
    }

    /// The scratch area, or an error if none was set up.
    pub fn scratch(&self) -> Result<(u64, u64)> {
        self.scratch.ok_or_else(|| Error::Trace {
            pid: self.pid.as_raw(),
            what: "no scratch memory".into(),
        })
    }

    /// Copies `bytes` into the scratch area at `off`; returns the remote address.
    pub fn put(&self, off: u64, bytes: &[u8]) -> Result<u64> {
        let (addr, len) = self.scratch()?;
        if off + bytes.len() as u64 > len {
            return Err(Error::Trace {
                pid: self.pid.as_raw(),
                what: "scratch overflow".into(),
            });
        }
        write_mem(self.pid, addr + off, bytes)?;
        Ok(addr + off)
    }

    /// Reads `len` bytes of the scratch area at `off`.
    pub fn get(&self, off: u64, len: usize) -> Result<Vec<u8>> {
        let (addr, _) = self.scratch()?;
        let mut b = vec![0u8; len];
        read_mem(self.pid, addr + off, &mut b)?;
        Ok(b)
    }
}

/// Reads tracee memory exactly (process_vm_readv, `/proc/PID/mem` for unreadable pages).
pub fn read_mem(pid: Pid, addr: u64, buf: &mut [u8]) -> Result<()> {
    match crate::sys::mem::read_remote(pid, addr, buf) {
        Ok(n) if n == buf.len() => Ok(()),
        _ => {
            use std::os::unix::fs::FileExt;
            let path = format!("/proc/{pid}/mem");
            let f = std::fs::File::open(&path).map_err(Error::io("open", &path))?;
            f.read_exact_at(buf, addr).map_err(Error::io("read", &path))
        }
    }
}

/// Writes tracee memory; `/proc/PID/mem` also writes read-only mappings.
pub fn write_mem(pid: Pid, addr: u64, buf: &[u8]) -> Result<()> {
    match crate::sys::mem::write_remote(pid, addr, buf) {
        Ok(n) if n == buf.len() => Ok(()),
        _ => {
            use std::os::unix::fs::FileExt;
            let path = format!("/proc/{pid}/mem");
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(Error::io("open", &path))?;
            f.write_all_at(buf, addr).map_err(Error::io("write", &path))
        }
    }
}

/// Finds a `syscall` instruction (0f 05) inside `[start, end)` of the tracee.
pub fn find_syscall_insn(pid: Pid, start: u64, end: u64) -> Result<Option<u64>> {
    let mut buf = vec![0u8; (end - start) as usize];
    read_mem(pid, start, &mut buf)?;
    Ok(buf
        .windows(2)
        .position(|w| w == [0x0f, 0x05])
        .map(|i| start + i as u64))
}
