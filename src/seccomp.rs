//! Seccomp filters (mode 2; strict mode is refused).
//!
//! Dump: each thread's chain is read from outside with PTRACE_SECCOMP_GET_FILTER (index
//! 0 is the oldest, whatever ptrace(2) says) and PTRACE_SECCOMP_GET_METADATA (flags: SECCOMP_FILTER_FLAG_LOG).
//! Threads and processes that inherited a chain hold the same kernel filters; there is
//! no kcmp mode for them, so filters are shared by content: one `seccomp_filter` entry
//! per distinct (previous filter, program, flags) in `seccomp.img`, CRIU's layout
//! (`prev` = the filter installed before it; `thread_core_entry.seccomp_filter` = the
//! thread's newest). While cryo injects syscalls, PTRACE_O_SUSPEND_SECCOMP keeps the
//! target's filters from judging (or killing for) them.
//!
//! Restore: the filters are the last syscalls injected in each thread, after rseq, the
//! service fds' close and the scratch area's unmap: a filter may forbid anything cryo
//! would run later. The part of the chains every thread shares is installed once from
//! the leader with SECCOMP_FILTER_FLAG_TSYNC (so the threads share it again, as a later
//! TSYNC by the program requires); each thread then installs the rest of its own chain.
//! The `sock_fprog` and program are written just below the thread's final stack
//! pointer (past the red zone) with /proc/PID/mem, and the bytes there are put back
//! after the call.

use crate::dump::TaskState;
use crate::error::{Error, Result};
use crate::image::{self, ImageDir, ImageError};
use crate::mm;
use crate::proc;
use crate::ptrace::{read_mem, write_mem, Injector};
use crate::seize::Seized;
use crate::sys::ptrace as raw;
use cryo_proto::criu::{SeccompEntry, SeccompFilter, VmaEntry};
use nix::errno::Errno;
use nix::unistd::Pid;
use std::collections::HashMap;

pub const SECCOMP_IMG: &str = "seccomp.img";
const MODE_STRICT: u32 = 1;
const MODE_FILTER: u32 = 2;
const SECCOMP_SET_MODE_FILTER: u64 = 1;
const FLAG_TSYNC: u32 = 1;
const FLAG_LOG: u32 = 2;
const FLAG_SPEC_ALLOW: u32 = 4;
/// BPF_MAXINSNS: the kernel's limit for one filter program.
const MAX_INSNS: usize = 4096;
const CAP_SYS_ADMIN: u64 = 1 << 21;
/// x86-64 red zone below the stack pointer, which leaf code may use.
const RED_ZONE: u64 = 128;

/// One filter: the raw `struct sock_filter` array and its install flags.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Filter {
    pub prog: Vec<u8>,
    pub flags: u32,
}

/// A thread's filters, oldest first (empty: no seccomp).
pub type Chain = Vec<Filter>;

/// Reads every thread's chain. Refuses strict mode, and filters that could not be
/// installed again (no no_new_privs and no CAP_SYS_ADMIN). If any thread has filters,
/// every thread gets PTRACE_O_SUSPEND_SECCOMP before cryo injects anything.
pub fn dump_process(seized: &Seized) -> Result<Vec<Chain>> {
    let pid = seized.pid.as_raw();
    let mut out = Vec::with_capacity(seized.threads.len());
    for th in &seized.threads {
        let t = th.tid.as_raw();
        let st = proc::parse_status(&proc::read(pid, &format!("task/{t}/status"))?)?;
        match st.seccomp {
            0 => out.push(Chain::new()),
            MODE_STRICT => {
                return Err(Error::Unsupported {
                    pid,
                    what: format!("seccomp strict mode (thread {t})"),
                    why: "strict mode allows only read/write/exit/sigreturn; cryo cannot run the restore in it".into(),
                })
            }
            MODE_FILTER => {
                if !st.no_new_privs && st.cap_eff & CAP_SYS_ADMIN == 0 {
                    return Err(Error::Unsupported {
                        pid,
                        what: format!("seccomp filters of thread {t}"),
                        why: "the thread has neither no_new_privs nor CAP_SYS_ADMIN, so the filters could not be installed again".into(),
                    });
                }
                out.push(dump_chain(th.tid)?);
            }
            m => {
                return Err(Error::Unsupported {
                    pid,
                    what: format!("seccomp mode {m} (thread {t})"),
                    why: "unknown mode".into(),
                })
            }
        }
    }
    if out.iter().any(|c| !c.is_empty()) {
        for th in &seized.threads {
            raw::set_options(
                th.tid,
                libc::PTRACE_O_TRACESYSGOOD as usize | raw::O_SUSPEND_SECCOMP,
            )
            .map_err(Error::sys(
                "PTRACE_SETOPTIONS(SUSPEND_SECCOMP)",
                th.tid.as_raw(),
            ))?;
        }
        log::debug!(pid = pid, filters = out.iter().map(|c| c.len()).sum::<usize>(); "seccomp filters read; suspended while traced");
    }
    Ok(out)
}

fn dump_chain(tid: Pid) -> Result<Chain> {
    let t = tid.as_raw();
    let mut chain = Vec::new();
    for i in 0.. {
        let prog = match raw::seccomp_get_filter(tid, i) {
            Ok(p) => p,
            Err(Errno::ENOENT) => break,
            Err(e) => {
                return Err(Error::Sys {
                    call: "PTRACE_SECCOMP_GET_FILTER",
                    pid: t,
                    source: e,
                })
            }
        };
        let flags = raw::seccomp_get_metadata(tid, i)
            .map_err(Error::sys("PTRACE_SECCOMP_GET_METADATA", t))?;
        chain.push(Filter {
            prog,
            flags: flags as u32,
        });
    }
    Ok(chain)
}

/// Numbers the distinct filters of the whole tree, points each thread core at its
/// newest filter, and writes `seccomp.img` (only if some thread has filters).
pub fn write_image(dir: &ImageDir, tasks: &mut [TaskState]) -> Result<()> {
    let mut entry = SeccompEntry::default();
    let mut ids: HashMap<(Option<u32>, &Filter), u32> = HashMap::new();
    let mut newest: Vec<Vec<Option<u32>>> = Vec::with_capacity(tasks.len());
    for t in tasks.iter() {
        let mut per = Vec::with_capacity(t.seccomp.len());
        for chain in &t.seccomp {
            let mut prev = None;
            for f in chain {
                let id = *ids.entry((prev, f)).or_insert_with(|| {
                    entry.seccomp_filters.push(SeccompFilter {
                        filter: f.prog.clone(),
                        prev,
                        flags: Some(f.flags),
                    });
                    entry.seccomp_filters.len() as u32 - 1
                });
                prev = Some(id);
            }
            per.push(prev);
        }
        newest.push(per);
    }
    if entry.seccomp_filters.is_empty() {
        return Ok(());
    }
    for (t, per) in tasks.iter_mut().zip(newest) {
        for (core, id) in t.cores.iter_mut().zip(per) {
            if let (Some(tc), Some(id)) = (core.thread_core.as_mut(), id) {
                tc.seccomp_mode = Some(MODE_FILTER as i32);
                tc.seccomp_filter = Some(id);
            }
        }
    }
    dir.write_one(SECCOMP_IMG, image::SECCOMP, &entry)?;
    Ok(())
}

/// `seccomp.img` if the dump wrote one.
pub fn read_image(dir: &ImageDir) -> Result<SeccompEntry> {
    if !dir.file(SECCOMP_IMG).exists() {
        return Ok(SeccompEntry::default());
    }
    Ok(dir.read_one(SECCOMP_IMG, image::SECCOMP)?)
}

/// A thread's chain to install, oldest first, with each filter's index in the image.
pub type RestoreChain = Vec<(u32, Filter)>;

/// Resolves and checks the chain of one thread (`seccomp_mode`, `seccomp_filter`).
pub fn thread_chain(
    dir: &ImageDir,
    img: &SeccompEntry,
    tid: u32,
    mode: Option<i32>,
    newest: Option<u32>,
) -> Result<RestoreChain> {
    let bad = |msg: String| -> Error {
        ImageError::Invalid {
            path: dir.file(&format!("core-{tid}.img")),
            msg,
        }
        .into()
    };
    match mode.unwrap_or(0) {
        0 => return Ok(Vec::new()),
        m if m == MODE_FILTER as i32 => {}
        m => return Err(bad(format!("seccomp mode {m} cannot be restored"))),
    }
    let mut chain = Vec::new();
    let mut next = Some(newest.ok_or_else(|| bad("seccomp filter mode without a filter".into()))?);
    while let Some(i) = next {
        let f = img.seccomp_filters.get(i as usize).ok_or_else(|| {
            bad(format!(
                "seccomp filter {i} not in seccomp.img ({} filters)",
                img.seccomp_filters.len()
            ))
        })?;
        let insns = f.filter.len() / 8;
        if f.filter.len() % 8 != 0 || insns == 0 || insns > MAX_INSNS {
            return Err(bad(format!(
                "seccomp filter {i}: {} bytes is no BPF program",
                f.filter.len()
            )));
        }
        let flags = f.flags.unwrap_or(0) & !FLAG_TSYNC;
        if flags & !(FLAG_LOG | FLAG_SPEC_ALLOW) != 0 {
            return Err(bad(format!("seccomp filter {i}: flags {flags:#x}")));
        }
        // Earlier filters come first in the image: this also rules out cycles.
        if f.prev.is_some_and(|p| p >= i) {
            return Err(bad(format!("seccomp filter {i}: bad previous filter")));
        }
        chain.push((
            i,
            Filter {
                prog: f.filter.clone(),
                flags,
            },
        ));
        next = f.prev;
    }
    chain.reverse();
    Ok(chain)
}

/// Where to put `need` bytes for the kernel to read in thread memory: below the red
/// zone under `sp` if that lies in one readable private mapping, else the start of any
/// big enough readable private mapping.
fn arg_area(sp: u64, need: u64, vmas: &[VmaEntry]) -> Option<u64> {
    let usable = |v: &&VmaEntry| {
        v.prot & libc::PROT_READ as u32 != 0
            && v.flags & libc::MAP_PRIVATE as u32 != 0
            && !mm::is_special(v.status)
            && v.end - v.start >= need
    };
    let below = sp
        .checked_sub(RED_ZONE + need)
        .map(|a| a & !15)
        .filter(|&a| {
            vmas.iter()
                .filter(usable)
                .any(|v| v.start <= a && a + need <= v.end)
        });
    below.or_else(|| vmas.iter().find(usable).map(|v| v.start))
}

/// Installs one filter in the thread `inj` drives, from memory borrowed at `area`.
fn install(inj: &Injector, area: u64, f: &Filter, flags: u32) -> Result<()> {
    let pid = inj.pid;
    let need = 16 + f.prog.len();
    let mut saved = vec![0u8; need];
    read_mem(pid, area, &mut saved)?;
    // struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    let mut arg = Vec::with_capacity(need);
    arg.extend_from_slice(&((f.prog.len() / 8) as u64).to_ne_bytes());
    arg.extend_from_slice(&(area + 16).to_ne_bytes());
    arg.extend_from_slice(&f.prog);
    write_mem(pid, area, &arg)?;
    let r = inj.call(
        "seccomp(SET_MODE_FILTER)",
        libc::SYS_seccomp,
        &[SECCOMP_SET_MODE_FILTER, flags as u64, area],
    );
    write_mem(pid, area, &saved)?;
    match r? {
        0 => Ok(()),
        // TSYNC reports the thread it could not synchronise.
        t => Err(Error::Restore {
            pid: pid.as_raw(),
            msg: format!("seccomp TSYNC failed on thread {t}"),
        }),
    }
}

/// Installs the chains (same order as `threads`: (injector, final stack pointer));
/// `opts` are the ptrace options to keep, PTRACE_O_SUSPEND_SECCOMP is added to them.
pub fn restore(
    threads: &[(&Injector, u64)],
    chains: &[RestoreChain],
    vmas: &[VmaEntry],
    opts: usize,
) -> Result<()> {
    if chains.iter().all(|c| c.is_empty()) {
        return Ok(());
    }
    let pid = threads[0].0.pid.as_raw();
    for (inj, _) in threads {
        raw::set_options(inj.pid, opts | raw::O_SUSPEND_SECCOMP).map_err(Error::sys(
            "PTRACE_SETOPTIONS(SUSPEND_SECCOMP)",
            inj.pid.as_raw(),
        ))?;
    }
    // The prefix every thread shares (by image index) goes in once, with TSYNC.
    let shared = if threads.len() > 1 {
        let first = &chains[0];
        (0..first.len())
            .take_while(|&i| {
                chains
                    .iter()
                    .all(|c| c.get(i).map(|x| x.0) == Some(first[i].0))
            })
            .count()
    } else {
        0
    };
    let area_for = |(inj, sp): &(&Injector, u64), f: &Filter| {
        arg_area(*sp, 16 + f.prog.len() as u64, vmas).ok_or_else(|| Error::Restore {
            pid: inj.pid.as_raw(),
            msg: "no readable private mapping to pass a seccomp filter from".into(),
        })
    };
    for (_, f) in &chains[0][..shared] {
        let area = area_for(&threads[0], f)?;
        install(threads[0].0, area, f, f.flags | FLAG_TSYNC)?;
    }
    for (th, chain) in threads.iter().zip(chains) {
        for (_, f) in &chain[shared..] {
            let area = area_for(th, f)?;
            install(th.0, area, f, f.flags)?;
        }
    }
    log::debug!(pid = pid, shared = shared, filters = chains.iter().map(|c| c.len()).sum::<usize>(); "seccomp filters installed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vma(start: u64, end: u64, prot: i32, flags: i32) -> VmaEntry {
        VmaEntry {
            start,
            end,
            prot: prot as u32,
            flags: flags as u32,
            status: mm::VMA_ANON_PRIVATE,
            ..Default::default()
        }
    }

    #[test]
    fn chains_are_checked() {
        let dir = ImageDir {
            path: "/nonexistent".into(),
        };
        let f = |prev: Option<u32>, len: usize, flags: u32| SeccompFilter {
            filter: vec![6; len],
            prev,
            flags: Some(flags),
        };
        let img = SeccompEntry {
            seccomp_filters: vec![f(None, 16, 0), f(Some(0), 8, 2 | 1), f(Some(2), 8, 0)],
        };
        let c = thread_chain(&dir, &img, 1, Some(2), Some(1)).unwrap();
        assert_eq!(c.iter().map(|x| x.0).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(c[1].1.flags, 2, "TSYNC is cryo's business, not the image's");
        assert!(thread_chain(&dir, &img, 1, None, None).unwrap().is_empty());
        assert!(
            thread_chain(&dir, &img, 1, Some(2), Some(2)).is_err(),
            "self loop"
        );
        assert!(
            thread_chain(&dir, &img, 1, Some(2), Some(7)).is_err(),
            "out of range"
        );
        assert!(
            thread_chain(&dir, &img, 1, Some(2), None).is_err(),
            "no filter"
        );
        assert!(
            thread_chain(&dir, &img, 1, Some(1), Some(0)).is_err(),
            "strict"
        );
        let bad = SeccompEntry {
            seccomp_filters: vec![f(None, 12, 0)],
        };
        assert!(
            thread_chain(&dir, &bad, 1, Some(2), Some(0)).is_err(),
            "length"
        );
        let bad = SeccompEntry {
            seccomp_filters: vec![f(None, 8, 8)],
        };
        assert!(
            thread_chain(&dir, &bad, 1, Some(2), Some(0)).is_err(),
            "listener flag"
        );
    }

    #[test]
    fn area_below_stack_or_elsewhere() {
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let priv_ = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        let vmas = [
            vma(0x1000, 0x3000, rw, libc::MAP_SHARED),
            vma(0x10000, 0x20000, rw, priv_),
            vma(0x7000_0000, 0x7001_0000, rw, priv_),
        ];
        // Room below sp: just under the red zone, 16-aligned.
        assert_eq!(
            arg_area(0x7000_f000, 0x100, &vmas),
            Some(0x7000_f000 - 128 - 0x100)
        );
        // Too close to the stack's start: falls back to another private mapping.
        assert_eq!(arg_area(0x7000_0100, 0x1000, &vmas), Some(0x10000));
        // Nothing big enough (the shared mapping never counts).
        assert_eq!(arg_area(0x2000, 0x20000, &vmas), None);
    }
}
