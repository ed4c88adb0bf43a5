//! `cryo dump`: freeze one process, collect its state into CRIU-format images, then kill
//! it or let it run on. Every step before the task is released goes through `Seized`,
//! whose Drop resumes the task if anything fails.

use crate::cpu;
use crate::error::{fault_point, or_blocker, Error, Result};
use crate::files::{self, FileIds};
use crate::image::{self, ImageDir};
use crate::mm;
use crate::namespaces::{self, TreeNs};
use crate::pages::{self, PageDumper};
use crate::proc;
use crate::pstree::{self, Zombie};
use crate::seccomp;
use crate::seize::Seized;
use crate::shmem;
use crate::signals;
use crate::sys::{process as sysproc, ptrace as raw};
use crate::timers;
use cryo_proto::criu::{
    core_entry::March, CoreEntry, CredsEntry, FdinfoEntry, FileEntry, FsEntry, InventoryEntry,
    MmEntry, PstreeEntry, RlimitEntry, RseqEntry, TaskCoreEntry, TaskKobjIdsEntry,
    TaskRlimitsEntry, ThreadCoreEntry, ThreadInfoX86,
};
use cryo_proto::cryo::{CpuStateEntry, CryoHeadEntry, TaskExtraEntry};
use nix::unistd::Pid;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Instant;

/// Version of cryo's own image records (`cryo-*.img`); restore refuses newer ones.
pub const CRYO_FORMAT_VERSION: u32 = 1;
/// RLIMIT_NLIMITS on Linux.
const RLIM_NLIMITS: u32 = 16;

#[derive(Debug, Clone)]
pub struct DumpOpts {
    pub pid: i32,
    pub dir: PathBuf,
    pub leave_running: bool,
    pub shell_job: bool,
    pub fds: files::FdOpts,
}

#[derive(Debug, Default, Clone)]
pub struct DumpStats {
    pub frozen_ms: f64,
    pub memdump_ms: f64,
    pub pages: pages::Stats,
}

/// Everything collected about one process, in CRIU's messages.
pub struct TaskState {
    pub pstree: PstreeEntry,
    /// One core image per thread, the leader's first (only it carries `tc` and `ids`).
    pub cores: Vec<CoreEntry>,
    pub ids: TaskKobjIdsEntry,
    pub mm: MmEntry,
    pub fs: FsEntry,
    pub fdinfo: Vec<FdinfoEntry>,
    /// Raw XSAVE per thread, same order as `cores`.
    pub cpus: Vec<CpuStateEntry>,
    pub extra: TaskExtraEntry,
    /// Seccomp filter chain per thread, same order as `cores`.
    pub seccomp: Vec<seccomp::Chain>,
}

/// Per-thread state: what the thread itself must be asked (altstack, clear_child_tid,
/// pdeath signal, securebits) runs as injected syscalls in that thread.
fn dump_thread(
    seized: &mut Seized,
    idx: usize,
    vdso: Option<(u64, u64)>,
) -> Result<(CoreEntry, CpuStateEntry)> {
    let pid = seized.pid.as_raw();
    let th = &seized.threads[idx];
    let (tid, image_regs, sigmask) = (th.tid, th.image_regs, th.sigmask);
    let t = tid.as_raw();
    let inj = seized.injector(idx, vdso)?;
    let (scratch, _) = inj.scratch()?;
    let sas = signals::dump_altstack(&inj)?;
    inj.call(
        "prctl",
        libc::SYS_prctl,
        &[libc::PR_GET_TID_ADDRESS as u64, scratch],
    )?;
    let clear_tid = u64::from_ne_bytes(inj.get(0, 8)?.try_into().unwrap_or_default());
    inj.call(
        "prctl",
        libc::SYS_prctl,
        &[libc::PR_GET_PDEATHSIG as u64, scratch],
    )?;
    let pdeath = u32::from_ne_bytes(inj.get(0, 4)?.try_into().unwrap_or_default());
    let secbits = inj.call("prctl", libc::SYS_prctl, &[libc::PR_GET_SECUREBITS as u64])? as u32;
    let timerslack = timers::dump_slack(&inj)?;
    let xsave = raw::get_xstate(tid).map_err(Error::sys("PTRACE_GETREGSET(NT_X86_XSTATE)", t))?;
    let rseq = raw::get_rseq_config(tid).map_err(Error::sys("PTRACE_GET_RSEQ_CONFIGURATION", t))?;
    let (futex_rla, futex_rla_len) =
        sysproc::get_robust_list(tid).map_err(Error::sys("get_robust_list", t))?;
    let signals_p = signals::dump_pending(tid, false)?;
    let status = proc::parse_status(&proc::read(pid, &format!("task/{t}/status"))?)?;
    let tstat = proc::parse_stat(&proc::read(pid, &format!("task/{t}/stat"))?)?;
    let comm = proc::read(pid, &format!("task/{t}/comm"))?
        .trim_end_matches('\n')
        .to_string();
    let creds = CredsEntry {
        uid: status.uids[0],
        euid: status.uids[1],
        suid: status.uids[2],
        fsuid: status.uids[3],
        gid: status.gids[0],
        egid: status.gids[1],
        sgid: status.gids[2],
        fsgid: status.gids[3],
        cap_inh: u32_words(status.cap_inh),
        cap_prm: u32_words(status.cap_prm),
        cap_eff: u32_words(status.cap_eff),
        cap_bnd: u32_words(status.cap_bnd),
        secbits,
        groups: status.groups.clone(),
        ..Default::default()
    };
    let core = CoreEntry {
        mtype: March::X8664 as i32,
        thread_info: Some(ThreadInfoX86 {
            clear_tid_addr: clear_tid,
            gpregs: cpu::regs_to_entry(&image_regs),
            fpregs: cpu::fpregs_entry(&xsave),
            tls: Vec::new(),
        }),
        thread_core: Some(ThreadCoreEntry {
            futex_rla,
            futex_rla_len: futex_rla_len as u32,
            blk_sigset: Some(sigmask),
            sas: Some(sas),
            pdeath_sig: Some(pdeath),
            signals_p: Some(signals_p),
            creds: Some(creds),
            comm: Some(comm),
            sched_nice: Some(tstat.nice as i32),
            sched_policy: Some(tstat.policy),
            sched_prio: Some(tstat.rt_priority),
            rseq_entry: (rseq.rseq_abi_pointer != 0).then_some(RseqEntry {
                rseq_abi_pointer: rseq.rseq_abi_pointer,
                rseq_abi_size: rseq.rseq_abi_size,
                signature: rseq.signature,
                rseq_cs_pointer: None,
            }),
            timerslack_ns: Some(timerslack),
            ..Default::default()
        }),
        ..Default::default()
    };
    let affinity = sysproc::get_affinity(tid).map_err(Error::sys("sched_getaffinity", t))?;
    Ok((
        core,
        CpuStateEntry {
            tid: t as u32,
            xsave,
            xcr0: None,
            affinity: Some(affinity),
        },
    ))
}

fn u32_words(v: u64) -> Vec<u32> {
    vec![v as u32, (v >> 32) as u32]
}

/// Blocks the signals a user sends to stop a command, so cryo is not killed half way
/// with a target stopped; they are delivered when the guard drops.
struct BlockTermSignals(nix::sys::signal::SigSet);

impl BlockTermSignals {
    fn new() -> Self {
        use nix::sys::signal::{SigSet, SigmaskHow, Signal};
        let mut set = SigSet::empty();
        for s in [
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGQUIT,
        ] {
            set.add(s);
        }
        let mut old = SigSet::empty();
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old));
        BlockTermSignals(old)
    }
}

impl Drop for BlockTermSignals {
    fn drop(&mut self) {
        let _ = nix::sys::signal::sigprocmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&self.0),
            None,
        );
    }
}

pub fn dump(opts: &DumpOpts) -> Result<DumpStats> {
    let pid = opts.pid;
    if pid <= 0 || !proc::exists(pid) {
        return Err(Error::NoProcess { pid });
    }
    let stat = proc::parse_stat(&proc::read(pid, "stat")?)?;
    if stat.sid != pid && !opts.shell_job {
        return Err(Error::Unsupported {
            pid,
            what: format!("session {} (not its own)", stat.sid),
            why:
                "the process is not a session leader; start it with setsid or dump with --shell-job"
                    .into(),
        });
    }
    let dir = ImageDir::create(&opts.dir)?;
    let _block = BlockTermSignals::new();
    let t0 = Instant::now();
    let (mut tree, mut zombies) = seize_tree(Pid::from_raw(pid))?;
    fault_point("dump-after-seize")?;
    // Everything cryo cannot dump is collected in `blockers` (sessions, namespaces, each
    // process's mappings and fds) and reported at once, before any memory is read or
    // image written; only what makes further inspection unsafe stops at once.
    let mut blockers = Vec::new();
    or_blocker(check_sessions(&tree, &zombies, opts), &mut blockers)?;
    let (ns, ns_problems) = namespaces::dump_tree(
        &tree
            .iter()
            .map(|s| {
                (
                    s.pid.as_raw(),
                    s.threads.iter().map(|t| t.tid.as_raw()).collect(),
                )
            })
            .collect::<Vec<_>>(),
        &zombies
            .iter()
            .map(|z| z.pstree.pid as i32)
            .collect::<Vec<_>>(),
    )?;
    blockers.extend(ns_problems);
    // Zombies by their pids in the tree's namespace, as the live tasks (`collect`).
    for z in &mut zombies {
        let e = &mut z.pstree;
        let (pgid, sid) = ns.pgid_sid(e.pid as i32, e.pgid as i32, e.sid as i32);
        e.pid = ns.vpid(e.pid as i32) as u32;
        e.ppid = ns.vpid(e.ppid as i32) as u32;
        (e.pgid, e.sid) = (pgid as u32, sid as u32);
    }

    // All state but memory, for the whole tree.
    let mut ids = FileIds::new(opts.fds);
    let mut shm = shmem::Registry::default();
    let mut tasks = Vec::with_capacity(tree.len());
    for (i, seized) in tree.iter_mut().enumerate() {
        tasks.push(collect(
            seized,
            i as u32 + 1,
            &mut ids,
            &mut shm,
            &ns,
            &mut blockers,
        )?);
    }
    // With the subreaper flags known: can the tree be rebuilt?
    let entries: Vec<_> = tasks
        .iter()
        .map(|t| (t.pstree.clone(), &t.cores[0]))
        .chain(zombies.iter().map(|z| (z.pstree.clone(), &z.core)))
        .collect();
    let mut ptasks = pstree::tasks_of(&entries);
    ptasks[0].init = ns.own_pidns();
    or_blocker(
        pstree::check(&ptasks, opts.shell_job, &|p| ns.alive(p)),
        &mut blockers,
    )?;
    ids.finish(&mut blockers);
    // The session check runs before and after collection: say each problem once.
    let mut seen = std::collections::HashSet::new();
    blockers.retain(|b| seen.insert(b.clone()));
    if !blockers.is_empty() {
        return Err(Error::Blocked { blockers });
    }
    // Only now that nothing blocks: established TCP connections enter repair mode
    // (left again if the dump fails: see files::inet::DumpState).
    ids.inet.read_streams()?;
    let mut stats = DumpStats::default();
    for (seized, task) in tree.iter().zip(&tasks) {
        let st = dump_memory(seized, task, &dir, &ns)?;
        stats.memdump_ms += st.memdump_ms;
        stats.pages.pages_scanned += st.pages.pages_scanned;
        stats.pages.pages_zero += st.pages.pages_zero;
        stats.pages.pages_written += st.pages.pages_written;
    }
    let shm_stats = shm.dump(&dir, tasks.len() as u32 + 1)?;
    stats.pages.pages_written += shm_stats.pages_written;
    stats.pages.pages_zero += shm_stats.pages_zero;
    fault_point("dump-before-write")?;
    ids.write_data(&dir)?;
    seccomp::write_image(&dir, &mut tasks)?;
    ns.write(&dir)?;
    write_images(&dir, &tasks, &zombies, &ids.files)?;
    stats.frozen_ms = t0.elapsed().as_secs_f64() * 1e3;
    ids.inet.done(opts.leave_running);
    // Children first, so no parent runs on (or dies) before its children are handled.
    for seized in tree.into_iter().rev() {
        if opts.leave_running {
            seized.resume()?;
        } else {
            seized.kill()?;
        }
    }
    log::info!(pid = pid, processes = tasks.len(), frozen_ms = stats.frozen_ms, pages = stats.pages.pages_written; "dump done");
    Ok(stats)
}

/// Children of every thread of `pid` (from /proc/PID/task/TID/children).
fn children_of(pid: Pid) -> Result<Vec<Pid>> {
    let dir = format!("/proc/{pid}/task");
    let mut out = Vec::new();
    for t in std::fs::read_dir(&dir)
        .map_err(|e| Error::proc_io(pid.as_raw(), &dir, e))?
        .flatten()
    {
        let path = t.path().join("children");
        let s = std::fs::read_to_string(&path).unwrap_or_default();
        out.extend(
            s.split_whitespace()
                .filter_map(|c| c.parse().ok())
                .map(Pid::from_raw),
        );
    }
    Ok(out)
}

/// Seizes ROOT and every descendant, parents before children; re-scans until no new
/// process appears (a process forking while others are being frozen is caught on the
/// next pass; once all are stopped, none can fork).
/// Zombies are recorded, not seized (they have nothing left to freeze).
fn seize_tree(root: Pid) -> Result<(Vec<Seized>, Vec<Zombie>)> {
    let mut tree: Vec<Seized> = vec![Seized::new(root)?];
    let mut zombies: Vec<Zombie> = Vec::new();
    loop {
        let mut new = Vec::new();
        for s in &tree {
            for c in children_of(s.pid)? {
                if !tree.iter().any(|x| x.pid == c)
                    && !zombies.iter().any(|z| z.pstree.pid as i32 == c.as_raw())
                    && !new.contains(&c)
                {
                    new.push(c);
                }
            }
        }
        if new.is_empty() {
            return Ok((tree, zombies));
        }
        for c in new {
            if let Some(z) = pstree::zombie(c.as_raw())? {
                zombies.push(z);
                continue;
            }
            match Seized::new(c) {
                Ok(s) => tree.push(s),
                // It exited meanwhile: a zombie now.
                Err(e) => match pstree::zombie(c.as_raw())? {
                    Some(z) => zombies.push(z),
                    None => return Err(e),
                },
            }
        }
    }
}

/// Sessions and groups cryo can rebuild: every process in the root's session (or
/// leading its own), every group led by a process of the tree (or, for a shell job,
/// the root's own group).
/// (Checked again once the subreaper flags are known; here every process is assumed to
/// be one, so only what no flag could fix is refused before collecting.)
fn check_sessions(tree: &[Seized], zombies: &[Zombie], opts: &DumpOpts) -> Result<()> {
    let mut tasks = Vec::with_capacity(tree.len() + zombies.len());
    for s in tree {
        let p = s.pid.as_raw();
        let st = proc::parse_stat(&proc::read(p, "stat")?)?;
        tasks.push(pstree::Task {
            pid: p,
            ppid: st.ppid,
            pgid: st.pgid,
            sid: st.sid,
            zombie: None,
            subreaper: true,
            init: false,
        });
    }
    let entries: Vec<_> = zombies
        .iter()
        .map(|z| (z.pstree.clone(), &z.core))
        .collect();
    tasks.extend(pstree::tasks_of(&entries));
    pstree::check(&tasks, opts.shell_job, &proc::exists)
}

/// Collects one process but its memory; `n` numbers its pages and fdinfo images, `ids`
/// is the file table shared by the whole tree (files.img). What cannot be dumped is
/// added to `blockers` (and collection goes on, to find every blocker). Images name
/// tasks by their pids in the tree's pid namespace (`ns.vpid`).
fn collect(
    seized: &mut Seized,
    n: u32,
    ids: &mut FileIds,
    shm: &mut shmem::Registry,
    ns: &TreeNs,
    blockers: &mut Vec<String>,
) -> Result<TaskState> {
    let pid = seized.pid.as_raw();
    let vpid = |p: i32| ns.vpid(p);
    let tid = seized.pid;
    let stat = proc::parse_stat(&proc::read(pid, "stat")?)?;
    let status = proc::parse_status(&proc::read(pid, "status")?)?;
    // Before any injection: suspends the filters while cryo runs syscalls in the task.
    // (A refusal here stops the dump at once: strict mode forbids further injection.)
    let seccomp = seccomp::dump_process(seized)?;
    let vmas = proc::parse_smaps(&proc::read(pid, "smaps")?)?;
    let vdso = vmas
        .iter()
        .find(|v| v.name == "[vdso]")
        .map(|v| (v.start, v.end));

    // What only the process can tell, by injected syscalls (in the leader).
    let inj = seized.injector(0, vdso)?;
    let (scratch, _) = inj.scratch()?;
    let brk = inj.call("brk", libc::SYS_brk, &[0])?;
    let sigactions = signals::dump_sigactions(&inj)?;
    let tids: Vec<i32> = seized.threads.iter().map(|t| t.tid.as_raw()).collect();
    let itimers = timers::dump(&inj, &tids)?;
    let dumpable = inj.call("prctl", libc::SYS_prctl, &[libc::PR_GET_DUMPABLE as u64])? as i32;
    inj.call(
        "prctl",
        libc::SYS_prctl,
        &[libc::PR_GET_CHILD_SUBREAPER as u64, scratch],
    )?;
    let subreaper = u32::from_ne_bytes(inj.get(0, 4)?.try_into().unwrap_or_default()) != 0;

    // Address space.
    let mut vma_entries = Vec::with_capacity(vmas.len());
    for v in &vmas {
        let entry = mm::vma_entry(pid, v, stat.start_stack, (stat.start_brk, brk));
        let Some((mut e, file)) = or_blocker(entry, blockers)? else {
            continue;
        };
        if let Some(f) = file {
            let id = files::dump_mapped(pid, v.start, v.end, &f, ids);
            e.shmid = or_blocker(id, blockers)?.unwrap_or(0) as u64;
        }
        vma_entries.push(e);
    }
    shm.tag(pid, &mut vma_entries)?;
    crate::ipc::check_attachments(pid, &vma_entries, ns.ipc_segments().as_ref(), blockers);
    let exe = proc::read_link(pid, "exe")?;
    let exe_id = ids.add_mapped(&exe, libc::O_RDONLY as u32);
    let auxv = proc::parse_auxv(&proc::read_bytes(pid, "auxv")?);
    let mm = MmEntry {
        mm_start_code: stat.start_code,
        mm_end_code: stat.end_code,
        mm_start_data: stat.start_data,
        mm_end_data: stat.end_data,
        mm_start_stack: stat.start_stack,
        mm_start_brk: stat.start_brk,
        mm_brk: brk,
        mm_arg_start: stat.arg_start,
        mm_arg_end: stat.arg_end,
        mm_env_start: stat.env_start,
        mm_env_end: stat.env_end,
        exe_file_id: exe_id,
        mm_saved_auxv: auxv,
        vmas: vma_entries,
        dumpable: Some(dumpable),
        ..Default::default()
    };

    // Files, cwd, root.
    let pidfd = crate::sys::pidfd::pidfd_open(tid).map_err(Error::sys("pidfd_open", pid))?;
    let fdinfo = files::dump_fds(pid, pidfd.as_fd(), ids, blockers)?;
    let cwd = proc::read_link(pid, "cwd")?;
    let root = proc::read_link(pid, "root")?;
    let fs = FsEntry {
        cwd_id: ids.add_reg(&cwd, (libc::O_RDONLY | libc::O_DIRECTORY) as u32, 0),
        root_id: ids.add_reg(&root, (libc::O_RDONLY | libc::O_DIRECTORY) as u32, 0),
        umask: Some(status.umask),
    };

    // Threads; then process-wide signals, limits, misc.
    let mut cores = Vec::with_capacity(seized.threads.len());
    let mut cpus = Vec::with_capacity(seized.threads.len());
    for i in 0..seized.threads.len() {
        let (core, mut cpu) = dump_thread(seized, i, vdso)?;
        cpu.tid = vpid(cpu.tid as i32) as u32;
        cores.push(core);
        cpus.push(cpu);
    }
    let signals_s = signals::dump_pending(tid, true)?;
    let rlimits: Vec<RlimitEntry> = proc::parse_limits(&proc::read(pid, "limits")?)?
        .into_iter()
        .map(|(cur, max)| RlimitEntry { cur, max })
        .collect();
    if rlimits.len() < RLIM_NLIMITS as usize {
        return Err(Error::Parse {
            path: "limits".into(),
            msg: format!("{} limits, expected {RLIM_NLIMITS}", rlimits.len()),
        });
    }
    let personality = u32::from_str_radix(proc::read(pid, "personality")?.trim(), 16).unwrap_or(0);
    let oom_score_adj = proc::read(pid, "oom_score_adj")?.trim().parse().ok();

    let mut kobj = TaskKobjIdsEntry {
        vm_id: 1,
        files_id: n,
        fs_id: 1,
        sighand_id: 1,
        ..Default::default()
    };
    ns.fill_ids(pid, &mut kobj);
    cores[0].tc = Some(TaskCoreEntry {
        task_state: pstree::TASK_ALIVE,
        exit_code: 0,
        personality,
        flags: stat.flags as u32,
        blk_sigset: seized.threads[0].sigmask,
        comm: stat.comm.clone(),
        rlimits: Some(TaskRlimitsEntry { rlimits }),
        signals_s: Some(signals_s),
        oom_score_adj,
        sigactions,
        child_subreaper: Some(subreaper),
        timers: Some(itimers),
        ..Default::default()
    });
    cores[0].ids = Some(kobj);
    let (pgid, sid) = ns.pgid_sid(pid, stat.pgid, stat.sid);
    let state = TaskState {
        pstree: PstreeEntry {
            pid: vpid(pid) as u32,
            ppid: vpid(stat.ppid) as u32,
            pgid: pgid as u32,
            sid: sid as u32,
            threads: seized
                .threads
                .iter()
                .map(|t| vpid(t.tid.as_raw()) as u32)
                .collect(),
        },
        cores,
        ids: kobj,
        mm,
        fs,
        fdinfo,
        cpus,
        extra: TaskExtraEntry {
            cap_amb: Some(status.cap_amb),
            no_new_privs: Some(status.no_new_privs),
        },
        seccomp,
    };
    Ok(state)
}

/// Dumps the pages of one collected process, while it is frozen.
fn dump_memory(
    seized: &Seized,
    task: &TaskState,
    dir: &ImageDir,
    ns: &TreeNs,
) -> Result<DumpStats> {
    let (pid, tid, mm, n) = (seized.pid.as_raw(), seized.pid, &task.mm, task.ids.files_id);
    // Memory, while frozen.
    let t_mem = Instant::now();
    let pagemap_path = format!("/proc/{pid}/pagemap");
    let pagemap =
        std::fs::File::open(&pagemap_path).map_err(|e| Error::proc_io(pid, &pagemap_path, e))?;
    let pages_id = n;
    let mut pd = PageDumper::new(dir, pages_id)?;
    for (i, v) in mm.vmas.iter().enumerate() {
        let skip_zero = v.status & mm::VMA_ANON_PRIVATE != 0;
        pd.start_vma(v.start);
        for (s, e) in pages::runs_to_dump(tid, &pagemap, v, &mut pd.stats)? {
            pd.dump_run(tid, s, e, skip_zero)?;
        }
        if i == mm.vmas.len() / 2 {
            fault_point("dump-mid-memory")?;
        }
    }
    let pstats = pd.finish(dir, ns.vpid(pid), pages_id)?;
    let memdump_ms = t_mem.elapsed().as_secs_f64() * 1e3;
    log::info!(
        pid = pid, ms = memdump_ms, written = pstats.pages_written, zero = pstats.pages_zero,
        read_ms = pstats.read_ns / 1_000_000, zero_ms = pstats.zero_ns / 1_000_000, write_ms = pstats.write_ns / 1_000_000;
        "memory dumped"
    );

    Ok(DumpStats {
        frozen_ms: 0.0,
        memdump_ms,
        pages: pstats,
    })
}

/// Writes every image of the tree; `inventory.img` last, so its presence marks a
/// complete image set.
pub fn write_images(
    dir: &ImageDir,
    tasks: &[TaskState],
    zombies: &[Zombie],
    files: &[FileEntry],
) -> Result<()> {
    let mut w = dir.writer("pstree.img", image::PSTREE)?;
    for t in tasks {
        w.entry(&t.pstree)?;
    }
    // After every live process, so each comes after its parent.
    for z in zombies {
        w.entry(&z.pstree)?;
    }
    w.finish()?;
    for z in zombies {
        dir.write_one(&format!("core-{}.img", z.pstree.pid), image::CORE, &z.core)?;
    }
    let mut w = dir.writer("files.img", image::FILES)?;
    for f in files {
        w.entry(f)?;
    }
    w.finish()?;
    for t in tasks {
        write_task(dir, t)?;
    }
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map(|s| (s * 1e6) as u64);
    dir.write_one(
        "inventory.img",
        image::INVENTORY,
        &InventoryEntry {
            img_version: image::IMG_VERSION,
            fdinfo_per_id: Some(true),
            root_ids: tasks.first().map(|t| t.ids),
            ns_per_id: Some(true),
            dump_uptime: uptime,
            ..Default::default()
        },
    )?;
    Ok(())
}

fn write_task(dir: &ImageDir, t: &TaskState) -> Result<()> {
    let pid = t.pstree.pid;
    for (tid, core) in t.pstree.threads.iter().zip(&t.cores) {
        dir.write_one(&format!("core-{tid}.img"), image::CORE, core)?;
    }
    dir.write_one(&format!("ids-{pid}.img"), image::IDS, &t.ids)?;
    dir.write_one(&format!("mm-{pid}.img"), image::MM, &t.mm)?;
    dir.write_one(&format!("fs-{pid}.img"), image::FS, &t.fs)?;
    let mut w = dir.writer(&format!("fdinfo-{}.img", t.ids.files_id), image::FDINFO)?;
    for f in &t.fdinfo {
        w.entry(f)?;
    }
    w.finish()?;
    let mut w = dir.writer(&format!("cryo-cpu-{pid}.img"), image::CRYO_CPU)?;
    w.entry(&CryoHeadEntry {
        format_version: CRYO_FORMAT_VERSION,
        cryo_version: Some(env!("CARGO_PKG_VERSION").into()),
    })?;
    w.entry(&t.extra)?;
    for c in &t.cpus {
        w.entry(c)?;
    }
    w.finish()?;
    Ok(())
}
