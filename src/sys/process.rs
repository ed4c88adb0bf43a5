//! Process creation with a chosen PID, and process attributes the tracer can read or set
//! from outside (rlimits, robust futex list).

use super::check;
use nix::errno::Errno;
use nix::unistd::Pid;

/// `struct clone_args` (include/uapi/linux/sched.h).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `clone3` with `set_tid`: a fork whose child gets exactly `pid` (in the innermost pid
/// namespace). Returns `Ok(None)` in the child, `Ok(Some(pid))` in the parent.
///
/// # Safety
/// Same contract as `fork`: the caller must be single-threaded, and the child may only
/// do async-signal-safe work until it execs, exits or is taken over by the tracer.
pub unsafe fn clone3_with_pid(pid: i32, flags: u64) -> Result<Option<Pid>, Errno> {
    // SAFETY: the caller upholds fork's contract.
    unsafe { clone3_set_tid(&[pid], flags) }
}

/// `clone3` with a `set_tid` array: `tids[0]` is the pid in the child's innermost pid
/// namespace (1 with `CLONE_NEWPID`), `tids[1]` in its parent namespace, and so on.
/// `flags` may add `CLONE_NEW*` namespace flags. Returns `Ok(None)` in the child and
/// the child's pid as the caller sees it in the parent.
///
/// # Safety
/// Same contract as `fork`: the caller must be single-threaded, and the child may only
/// do async-signal-safe work until it execs, exits or is taken over by the tracer.
pub unsafe fn clone3_set_tid(tids: &[i32], flags: u64) -> Result<Option<Pid>, Errno> {
    let args = CloneArgs {
        flags,
        exit_signal: libc::SIGCHLD as u64,
        set_tid: tids.as_ptr() as u64,
        set_tid_size: tids.len() as u64,
        ..Default::default()
    };
    // SAFETY: `args` is a valid clone_args whose set_tid array (`tids`) outlives the
    // call; no CLONE_VM, so the child runs on a copy of our stack (the caller upholds
    // fork's contract).
    let r = check(unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    })?;
    Ok(if r == 0 {
        None
    } else {
        Some(Pid::from_raw(r as i32))
    })
}

/// Probes `clone3` with `set_tid` support without creating a process: the kernel
/// validates `set_tid` before it forks and rejects a PID of -1 with EINVAL.
pub fn probe_clone3_set_tid() -> bool {
    let tid = [-1i32];
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: tid.as_ptr() as u64,
        set_tid_size: 1,
        ..Default::default()
    };
    // SAFETY: the kernel rejects set_tid = -1 before creating any process, so no child
    // can ever return from this call; `args` outlives it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    r == -1 && Errno::last() == Errno::EINVAL
}

/// One resource limit of any process (`prlimit64`); `new` sets it.
pub fn prlimit(pid: Pid, resource: u32, new: Option<(u64, u64)>) -> Result<(u64, u64), Errno> {
    let newlim = new.map(|(cur, max)| libc::rlimit64 {
        rlim_cur: cur,
        rlim_max: max,
    });
    let mut old = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let newp = newlim
        .as_ref()
        .map_or(std::ptr::null(), |l| l as *const libc::rlimit64);
    // SAFETY: `newp` is null or points at a live rlimit64; `old` is a live out-parameter.
    check(unsafe { libc::prlimit64(pid.as_raw(), resource as _, newp, &mut old) } as libc::c_long)?;
    Ok((old.rlim_cur, old.rlim_max))
}

/// The robust futex list head registered by thread `tid` (glibc registers one per thread).
pub fn get_robust_list(tid: Pid) -> Result<(u64, u64), Errno> {
    let mut head: u64 = 0;
    let mut len: usize = 0;
    // SAFETY: both out-parameters are live locals of the sizes the kernel writes.
    check(unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            tid.as_raw(),
            &mut head as *mut u64,
            &mut len as *mut usize,
        )
    })?;
    Ok((head, len as u64))
}

/// Closes every fd in `[first, last]`.
pub fn close_range(first: u32, last: u32) -> Result<(), Errno> {
    // SAFETY: integers only; closing fds cannot violate memory safety, and callers use it
    // only where no Rust object owns the closed fds (a freshly cloned restore child).
    check(unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) }).map(drop)
}

/// Maps `len` bytes read/write/execute at exactly `addr`, failing if anything is there.
pub fn mmap_fixed_noreplace_rwx(addr: u64, len: usize) -> Result<(), Errno> {
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping, so no live Rust
    // object can be affected; the new anonymous mapping is owned by the restore child.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Errno::last());
    }
    if p as u64 != addr {
        return Err(Errno::EEXIST);
    }
    Ok(())
}

/// Writes `bytes` at `addr` of our own address space.
///
/// # Safety
/// `addr..addr+bytes.len()` must be a writable mapping that no Rust object refers to
/// (the trampoline page just made by `mmap_fixed_noreplace_rwx`).
pub unsafe fn write_own(addr: u64, bytes: &[u8]) {
    // SAFETY: the caller guarantees the destination is writable and unaliased.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, bytes.len()) };
}

/// Leaves immediately without running destructors or atexit handlers (the restore
/// child must not flush buffers it shares with the restorer).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

/// The kernel's (obfuscated, but consistent) order of the open file descriptions of
/// fd `fd1` in `pid1` and fd `fd2` in `pid2`: `Equal` means they are the same one.
pub fn kcmp_order(pid1: i32, fd1: i32, pid2: i32, fd2: i32) -> Result<std::cmp::Ordering, Errno> {
    const KCMP_FILE: libc::c_int = 0;
    // SAFETY: integers only.
    let r = check(unsafe { libc::syscall(libc::SYS_kcmp, pid1, pid2, KCMP_FILE, fd1, fd2) })?;
    Ok(match r {
        0 => std::cmp::Ordering::Equal,
        1 => std::cmp::Ordering::Less,
        _ => std::cmp::Ordering::Greater,
    })
}

/// `dup2` returning the raw result (used in the restore child, where fds are raw).
pub fn dup2(src: i32, dst: i32) -> i32 {
    // SAFETY: integers only; the restore child owns its whole fd table.
    unsafe { libc::dup2(src, dst) }
}

/// Sets FD_CLOEXEC on `fd`, raw result.
pub fn set_cloexec(fd: i32) -> i32 {
    // SAFETY: integers only.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) }
}

/// Raw-fd helpers for the restore child, whose fds are numbers it shuffles itself.
pub fn read_raw(fd: i32, buf: &mut [u8]) -> isize {
    // SAFETY: `buf` is a live, exclusively borrowed buffer of the given length.
    unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) }
}

pub fn write_raw(fd: i32, buf: &[u8]) -> isize {
    // SAFETY: `buf` is a live buffer of the given length, only read by the kernel.
    unsafe { libc::write(fd, buf.as_ptr() as *const libc::c_void, buf.len()) }
}

pub fn fchdir_raw(fd: i32) -> Result<(), Errno> {
    // SAFETY: integer argument only.
    check(unsafe { libc::fchdir(fd) } as libc::c_long).map(drop)
}

pub fn close_raw(fd: i32) {
    // SAFETY: integer argument only; the restore child owns its whole fd table.
    unsafe { libc::close(fd) };
}

pub fn set_personality(p: u32) {
    // SAFETY: integer argument only.
    unsafe { libc::personality(p as libc::c_ulong) };
}

/// Sets every catchable signal's disposition to SIG_DFL and disables the alternate
/// signal stack (in the restore child, which inherited cryo's).
pub fn reset_signal_dispositions() {
    let ss = libc::stack_t {
        ss_sp: std::ptr::null_mut(),
        ss_flags: libc::SS_DISABLE,
        ss_size: 0,
    };
    // SAFETY: `ss` is a valid stack_t; disabling needs no memory of ours.
    unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        set_handler(sig, 0);
    }
}

/// Sets `sig`'s disposition to SIG_DFL (0) or SIG_IGN (1) with no flags or mask. The raw
/// syscall: libc's sigaction would add its own SA_RESTORER and restorer.
fn set_handler(sig: i32, handler: u64) {
    // Kernel layout: handler, flags, restorer, mask.
    let act = [handler, 0, 0, 0];
    // SAFETY: `act` is a live kernel sigaction; the old action is not requested.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            act.as_ptr(),
            std::ptr::null::<u64>(),
            8,
        )
    };
}

/// Sets a thread's nice value and scheduling policy from outside (needs CAP_SYS_NICE to
/// raise priority, which the restorer has).
pub fn set_sched(tid: Pid, nice: i32, policy: u32, prio: u32) -> Result<(), Errno> {
    let param = libc::sched_param {
        sched_priority: prio as i32,
    };
    // SAFETY: `param` is a live sched_param; integers otherwise.
    let r = unsafe { libc::sched_setscheduler(tid.as_raw(), policy as i32, &param) };
    check(r as libc::c_long)?;
    // SAFETY: integers only.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid.as_raw() as libc::id_t, nice) };
    check(r as libc::c_long)?;
    Ok(())
}

/// A thread's CPU affinity mask as raw bytes (`sched_getaffinity`).
pub fn get_affinity(tid: Pid) -> Result<Vec<u8>, Errno> {
    let mut mask = vec![0u8; 128];
    // SAFETY: `mask` is a live buffer of the length passed.
    let n = check(unsafe {
        libc::syscall(
            libc::SYS_sched_getaffinity,
            tid.as_raw(),
            mask.len(),
            mask.as_mut_ptr(),
        )
    })?;
    mask.truncate(n as usize);
    Ok(mask)
}

/// Sets a thread's CPU affinity from raw mask bytes.
pub fn set_affinity(tid: Pid, mask: &[u8]) -> Result<(), Errno> {
    // SAFETY: `mask` is a live buffer of the length passed, only read.
    check(unsafe {
        libc::syscall(
            libc::SYS_sched_setaffinity,
            tid.as_raw(),
            mask.len(),
            mask.as_ptr(),
        )
    })
    .map(drop)
}

/// Discards pending instances of `sig` (setting a disposition to SIG_IGN flushes them,
/// POSIX), then restores SIG_DFL. For the restore child only, whose dispositions are
/// all default while it prepares.
pub fn discard_pending(sig: i32) {
    set_handler(sig, 1); // SIG_IGN
    set_handler(sig, 0); // SIG_DFL
}

/// Ends this process so that its parent's `wait` sees `status` (a wait status as in
/// /proc/PID/stat field 52): killed by its signal (without a core file) or exited
/// with its code. For a restore child whose dispositions are all default.
pub fn die_with_status(status: u32) -> ! {
    let sig = (status & 0x7f) as libc::c_int;
    if sig != 0 {
        // SAFETY: integers and a live, zeroed rlimit / sigset; no Rust state involved.
        unsafe {
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
            let zero = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &zero);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), sig);
        }
    }
    exit_now(((status >> 8) & 0xff) as i32)
}

/// Sets the NIS domain name of our uts namespace (`setdomainname`).
pub fn set_domainname(name: &[u8]) -> Result<(), Errno> {
    // SAFETY: `name` is a live buffer of the length passed, only read by the kernel.
    check(
        unsafe { libc::setdomainname(name.as_ptr() as *const libc::c_char, name.len()) }
            as libc::c_long,
    )
    .map(drop)
}

/// The kernel's scheduler tick in µs, as CPU-time interval timers see it: `setitimer`
/// on ITIMER_VIRTUAL/PROF adds one tick to the value it is given (kernel/time/itimer.c),
/// so a restore subtracts it. Probed once: arm a 1 µs virtual timer, read it back
/// (value + tick, minus a sliver of CPU time), disarm; rounded to the nearest HZ.
pub fn cpu_itimer_tick_us() -> u64 {
    static TICK: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICK.get_or_init(|| {
        let set = |us: i64| {
            let v = libc::itimerval {
                it_interval: libc::timeval {
                    tv_sec: 0,
                    tv_usec: 0,
                },
                it_value: libc::timeval {
                    tv_sec: 0,
                    tv_usec: us,
                },
            };
            // SAFETY: `v` is a live itimerval; the old value is not requested.
            unsafe { libc::setitimer(libc::ITIMER_VIRTUAL, &v, std::ptr::null_mut()) };
        };
        set(1);
        // SAFETY: an all-zero itimerval is valid; getitimer fills it.
        let mut got: libc::itimerval = unsafe { std::mem::zeroed() };
        // SAFETY: `got` is a live itimerval.
        unsafe { libc::getitimer(libc::ITIMER_VIRTUAL, &mut got) };
        set(0);
        let us = (got.it_value.tv_sec * 1_000_000 + got.it_value.tv_usec) as u64;
        // HZ = 1000, 300, 250 or 100.
        [1000u64, 3333, 4000, 10000]
            .into_iter()
            .min_by_key(|t| t.abs_diff(us))
            .unwrap_or(4000)
    })
}
