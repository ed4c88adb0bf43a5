//! Raw ptrace requests. Higher layers (`crate::ptrace`) add state and error context.

use super::check;
use nix::errno::Errno;
use nix::unistd::Pid;

pub use libc::user_regs_struct as Regs;

const NT_PRSTATUS: libc::c_int = 1;
const NT_X86_XSTATE: libc::c_int = 0x202;
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
/// Upper bound of an XSAVE area (AMX tile data makes it ~11 KiB).
const XSAVE_MAX: usize = 16 * 1024;

/// `struct ptrace_rseq_configuration` (include/uapi/linux/ptrace.h).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct RseqConfig {
    pub rseq_abi_pointer: u64,
    pub rseq_abi_size: u32,
    pub signature: u32,
    pub flags: u32,
    pub pad: u32,
}

fn req(request: libc::c_uint, pid: Pid, addr: usize, data: usize) -> Result<libc::c_long, Errno> {
    // SAFETY: every caller passes either integers or pointers to live, correctly sized
    // buffers owned by the caller for the duration of the call.
    let r = unsafe {
        libc::ptrace(
            request,
            pid.as_raw(),
            addr as *mut libc::c_void,
            data as *mut libc::c_void,
        )
    };
    check(r)
}

pub fn seize(pid: Pid, options: usize) -> Result<(), Errno> {
    req(libc::PTRACE_SEIZE, pid, 0, options).map(drop)
}

pub fn interrupt(pid: Pid) -> Result<(), Errno> {
    req(libc::PTRACE_INTERRUPT, pid, 0, 0).map(drop)
}

pub fn detach(pid: Pid, sig: i32) -> Result<(), Errno> {
    req(libc::PTRACE_DETACH, pid, 0, sig as usize).map(drop)
}

pub fn cont(pid: Pid, sig: i32) -> Result<(), Errno> {
    req(libc::PTRACE_CONT, pid, 0, sig as usize).map(drop)
}

/// Resumes until the next syscall entry or exit.
pub fn syscall(pid: Pid, sig: i32) -> Result<(), Errno> {
    req(libc::PTRACE_SYSCALL, pid, 0, sig as usize).map(drop)
}

/// An all-zero register set (to fill field by field).
pub fn zeroed_regs() -> Regs {
    // SAFETY: user_regs_struct is plain old data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

pub fn get_regs(pid: Pid) -> Result<Regs, Errno> {
    let mut regs: Regs = zeroed_regs();
    let mut iov = libc::iovec {
        iov_base: &mut regs as *mut Regs as *mut libc::c_void,
        iov_len: std::mem::size_of::<Regs>(),
    };
    req(
        libc::PTRACE_GETREGSET,
        pid,
        NT_PRSTATUS as usize,
        &mut iov as *mut _ as usize,
    )?;
    Ok(regs)
}

pub fn set_regs(pid: Pid, regs: &Regs) -> Result<(), Errno> {
    let mut iov = libc::iovec {
        iov_base: regs as *const Regs as *mut libc::c_void,
        iov_len: std::mem::size_of::<Regs>(),
    };
    req(
        libc::PTRACE_SETREGSET,
        pid,
        NT_PRSTATUS as usize,
        &mut iov as *mut _ as usize,
    )
    .map(drop)
}

/// The raw XSAVE area (standard format) of a stopped thread.
pub fn get_xstate(pid: Pid) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; XSAVE_MAX];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    req(
        libc::PTRACE_GETREGSET,
        pid,
        NT_X86_XSTATE as usize,
        &mut iov as *mut _ as usize,
    )?;
    buf.truncate(iov.iov_len);
    Ok(buf)
}

pub fn set_xstate(pid: Pid, xsave: &[u8]) -> Result<(), Errno> {
    let mut iov = libc::iovec {
        iov_base: xsave.as_ptr() as *mut libc::c_void,
        iov_len: xsave.len(),
    };
    req(
        libc::PTRACE_SETREGSET,
        pid,
        NT_X86_XSTATE as usize,
        &mut iov as *mut _ as usize,
    )
    .map(drop)
}

pub fn get_sigmask(pid: Pid) -> Result<u64, Errno> {
    let mut mask: u64 = 0;
    req(
        libc::PTRACE_GETSIGMASK,
        pid,
        8,
        &mut mask as *mut u64 as usize,
    )?;
    Ok(mask)
}

pub fn set_sigmask(pid: Pid, mask: u64) -> Result<(), Errno> {
    req(
        libc::PTRACE_SETSIGMASK,
        pid,
        8,
        &mask as *const u64 as usize,
    )
    .map(drop)
}

/// Raw `siginfo_t` as the kernel lays it out (128 bytes).
pub type RawSiginfo = [u8; 128];

/// Reads queued signals without dequeuing them; `shared` selects the process-wide queue.
pub fn peek_siginfo(
    pid: Pid,
    shared: bool,
    off: u64,
    out: &mut [RawSiginfo],
) -> Result<usize, Errno> {
    #[repr(C)]
    struct PeekArgs {
        off: u64,
        flags: u32,
        nr: i32,
    }
    let args = PeekArgs {
        off,
        flags: if shared { 1 } else { 0 },
        nr: out.len() as i32,
    };
    let n = req(
        libc::PTRACE_PEEKSIGINFO,
        pid,
        &args as *const _ as usize,
        out.as_mut_ptr() as usize,
    )?;
    Ok(n as usize)
}

/// The siginfo of the signal that caused the current signal-delivery stop.
pub fn get_siginfo(pid: Pid) -> Result<RawSiginfo, Errno> {
    let mut si: RawSiginfo = [0; 128];
    req(libc::PTRACE_GETSIGINFO, pid, 0, si.as_mut_ptr() as usize)?;
    Ok(si)
}

pub fn get_rseq_config(pid: Pid) -> Result<RseqConfig, Errno> {
    let mut conf = RseqConfig::default();
    req(
        PTRACE_GET_RSEQ_CONFIGURATION,
        pid,
        std::mem::size_of::<RseqConfig>(),
        &mut conf as *mut RseqConfig as usize,
    )?;
    Ok(conf)
}

/// Reads one word of the tracee's memory (works on any mapping, even PROT_NONE).
pub fn peek(pid: Pid, addr: u64) -> Result<u64, Errno> {
    Errno::clear();
    // SAFETY: PTRACE_PEEKDATA takes no pointer from us; the kernel reads the tracee.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_PEEKDATA,
            pid.as_raw(),
            addr as *mut libc::c_void,
            0usize,
        )
    };
    if r == -1 && Errno::last() != Errno::UnknownErrno {
        return Err(Errno::last());
    }
    Ok(r as u64)
}

pub fn poke(pid: Pid, addr: u64, word: u64) -> Result<(), Errno> {
    req(libc::PTRACE_POKEDATA, pid, addr as usize, word as usize).map(drop)
}

const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
const PTRACE_SECCOMP_GET_METADATA: libc::c_uint = 0x420d;
/// PTRACE_O_SUSPEND_SECCOMP: the tracee's seccomp filters do not apply while traced.
pub const O_SUSPEND_SECCOMP: usize = 1 << 21;

/// Replaces the ptrace options of a traced thread.
pub fn set_options(pid: Pid, options: usize) -> Result<(), Errno> {
    req(libc::PTRACE_SETOPTIONS, pid, 0, options).map(drop)
}

/// The BPF program (raw `struct sock_filter` array) of seccomp filter `index` of the
/// thread, 0 being the first installed (the kernel counts from the oldest, unlike what
/// ptrace(2) says); `ENOENT` past the newest.
pub fn seccomp_get_filter(pid: Pid, index: u64) -> Result<Vec<u8>, Errno> {
    let n = req(PTRACE_SECCOMP_GET_FILTER, pid, index as usize, 0)? as usize;
    let mut buf = vec![0u8; n * 8];
    let got = req(
        PTRACE_SECCOMP_GET_FILTER,
        pid,
        index as usize,
        buf.as_mut_ptr() as usize,
    )? as usize;
    buf.truncate(got.min(n) * 8);
    Ok(buf)
}

/// The flags (SECCOMP_FILTER_FLAG_LOG) of seccomp filter `index` of the thread.
pub fn seccomp_get_metadata(pid: Pid, index: u64) -> Result<u64, Errno> {
    // struct seccomp_metadata { __u64 filter_off; __u64 flags; }
    let mut meta = [index, 0u64];
    req(
        PTRACE_SECCOMP_GET_METADATA,
        pid,
        std::mem::size_of_val(&meta),
        meta.as_mut_ptr() as usize,
    )?;
    Ok(meta[1])
}

/// Probes PTRACE_GET_RSEQ_CONFIGURATION on a short-lived child of ours.
pub fn probe_rseq_config() -> bool {
    // SAFETY: the child only calls pause() in a loop until killed (async-signal-safe).
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => loop {
            nix::unistd::pause();
        },
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            let ok = seize(child, 0).is_ok()
                && interrupt(child).is_ok()
                && nix::sys::wait::waitpid(child, Some(nix::sys::wait::WaitPidFlag::__WALL))
                    .is_ok()
                && get_rseq_config(child).is_ok();
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(child, Some(nix::sys::wait::WaitPidFlag::__WALL));
            let _ = nix::sys::wait::waitpid(child, None);
            ok
        }
        Err(_) => false,
    }
}
