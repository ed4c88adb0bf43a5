//! `cryo restore`: rebuild a dumped process with its PID and hand it back running.
//!
//! 1. Everything that can fail on bad input (images, files to reopen) is checked and
//!    opened here, before any process exists.
//! 2. `clone3(set_tid)` creates the process. The child, still running cryo's code, puts
//!    the prepared fds at their numbers, enters its session, sets cwd/umask/rlimits,
//!    maps a scratch page and stops itself.
//! 3. The restorer (this process, its tracer) rebuilds the address space by injected
//!    syscalls: unmap cryo's mappings, move the vDSO to its old place, map every VMA,
//!    let the target `pread64` its pages from the image, set the mm fields with
//!    `PR_SET_MM_MAP`, then signals, credentials, rseq; finally it sets the registers
//!    and FPU state and detaches.
//!
//! A failure at any point kills the half-built process (`ChildGuard`).

use crate::cpu;
use crate::creds;
use crate::dump::CRYO_FORMAT_VERSION;
use crate::error::{fault_point, Error, Result};
use crate::files;
use crate::image::{self, ImageDir, ImageError};
use crate::mm::{self, PAGE_SIZE};
use crate::namespaces::{self, RestoreNs};
use crate::pages;
use crate::proc;
use crate::pstree::{self, Runtime};
use crate::ptrace::{self as tr, Injector, Stop};
use crate::seccomp;
use crate::shmem;
use crate::signals;
use crate::sys::{process as sysproc, ptrace as raw};
use crate::timers;
use cryo_proto::criu::{
    core_entry::March, CoreEntry, FdinfoEntry, FileEntry, FsEntry, InventoryEntry, MmEntry,
    PagemapEntry, PstreeEntry, TaskKobjIdsEntry,
};
use cryo_proto::cryo::{CpuStateEntry, CryoHeadEntry, TaskExtraEntry};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

/// Scratch page mapped by the child for syscall arguments passed by pointer.
const SCRATCH_LEN: u64 = 64 * 1024;
/// Where in the scratch area the iovec array of `preadv` goes (16 bytes per run).
const SCRATCH_IOV: u64 = 16 * 1024;
/// ptrace options the restorer traces the new processes with.
const TRACE_OPTS: i32 = libc::PTRACE_O_TRACESYSGOOD
    | libc::PTRACE_O_EXITKILL
    | libc::PTRACE_O_TRACECLONE
    | libc::PTRACE_O_TRACEFORK;

#[derive(Debug, Clone)]
pub struct RestoreOpts {
    pub dir: PathBuf,
    pub detach: bool,
    pub pidfile: Option<PathBuf>,
    pub shell_job: bool,
    pub fds: files::FdOpts,
}

#[derive(Debug)]
pub enum Outcome {
    /// `--restore-detached`: the process runs on its own.
    Detached(i32),
    /// The restored process ended; its exit code (128+signal if killed).
    Exited(i32),
}

/// The images of one process, as read (a zombie has only `pstree` and `core`).
#[derive(Default)]
struct Images {
    pstree: PstreeEntry,
    /// Leader's core (carries `tc`, the process-wide state).
    core: CoreEntry,
    /// Every thread, leader first: (tid, core, raw XSAVE).
    threads: Vec<(u32, CoreEntry, Vec<u8>)>,
    /// CPU affinity per thread (same order), when recorded.
    affinity: Vec<Option<Vec<u8>>>,
    mm: MmEntry,
    fs: FsEntry,
    fdinfo: Vec<FdinfoEntry>,
    extra: TaskExtraEntry,
    pages_id: u32,
    pagemap: Vec<PagemapEntry>,
    /// Seccomp filters to install per thread (same order as `threads`).
    seccomp: Vec<seccomp::RestoreChain>,
}

impl Images {
    fn is_zombie(&self) -> bool {
        self.core
            .tc
            .as_ref()
            .is_some_and(|tc| tc.task_state == pstree::TASK_DEAD)
    }
}

fn invalid(dir: &ImageDir, name: &str, msg: impl Into<String>) -> Error {
    ImageError::Invalid {
        path: dir.file(name),
        msg: msg.into(),
    }
    .into()
}

/// Reads and checks the whole image set: the tree, the shared file table, each process.
fn load(dir: &ImageDir) -> Result<(Vec<Images>, Vec<FileEntry>)> {
    let inv: InventoryEntry = dir.read_one("inventory.img", image::INVENTORY)?;
    if inv.img_version != image::IMG_VERSION {
        return Err(invalid(
            dir,
            "inventory.img",
            format!(
                "image version {} (this cryo reads version {})",
                inv.img_version,
                image::IMG_VERSION
            ),
        ));
    }
    let tree: Vec<PstreeEntry> = dir.reader("pstree.img", image::PSTREE)?.all()?;
    if tree.is_empty() {
        return Err(invalid(dir, "pstree.img", "no process"));
    }
    for (i, e) in tree.iter().enumerate().skip(1) {
        if !tree[..i].iter().any(|p| p.pid == e.ppid) {
            return Err(invalid(
                dir,
                "pstree.img",
                format!("process {} listed before its parent {}", e.pid, e.ppid),
            ));
        }
    }
    let files = dir.reader("files.img", image::FILES)?.all()?;
    let mut imgs = tree
        .into_iter()
        .map(|e| load_task(dir, e))
        .collect::<Result<Vec<_>>>()?;
    let filters = seccomp::read_image(dir)?;
    for img in &mut imgs {
        img.seccomp = img
            .threads
            .iter()
            .map(|(tid, c, _)| {
                let th = c.thread_core.as_ref();
                seccomp::thread_chain(
                    dir,
                    &filters,
                    *tid,
                    th.and_then(|t| t.seccomp_mode),
                    th.and_then(|t| t.seccomp_filter),
                )
            })
            .collect::<Result<_>>()?;
    }
    Ok((imgs, files))
}

fn load_task(dir: &ImageDir, pstree: PstreeEntry) -> Result<Images> {
    let pid = pstree.pid;
    let core: CoreEntry = dir.read_one(&format!("core-{pid}.img"), image::CORE)?;
    if core.mtype != March::X8664 as i32 {
        return Err(invalid(
            dir,
            &format!("core-{pid}.img"),
            format!("architecture {} is not x86_64", core.mtype),
        ));
    }
    if core
        .tc
        .as_ref()
        .is_some_and(|tc| tc.task_state == pstree::TASK_DEAD)
    {
        return Ok(Images {
            pstree,
            core,
            ..Default::default()
        });
    }
    let ids: TaskKobjIdsEntry = dir.read_one(&format!("ids-{pid}.img"), image::IDS)?;
    let mut cr = dir.reader(&format!("cryo-cpu-{pid}.img"), image::CRYO_CPU)?;
    let head: CryoHeadEntry = cr
        .next_entry()?
        .ok_or_else(|| invalid(dir, "cryo-cpu", "empty"))?;
    if head.format_version > CRYO_FORMAT_VERSION {
        return Err(invalid(
            dir,
            &format!("cryo-cpu-{pid}.img"),
            format!(
                "written by a newer cryo ({}, format {}); this cryo reads format {}",
                head.cryo_version.unwrap_or_default(),
                head.format_version,
                CRYO_FORMAT_VERSION
            ),
        ));
    }
    let extra: TaskExtraEntry = cr.next_entry()?.unwrap_or_default();
    let cpus: Vec<CpuStateEntry> = cr.all()?;
    // Leader first, then the other threads in pstree order.
    let mut tids: Vec<u32> = vec![pid];
    tids.extend(pstree.threads.iter().copied().filter(|&t| t != pid));
    let mut threads = Vec::with_capacity(tids.len());
    for &tid in &tids {
        let name = format!("core-{tid}.img");
        let c: CoreEntry = if tid == pid {
            core.clone()
        } else {
            dir.read_one(&name, image::CORE)?
        };
        if c.thread_info.is_none() {
            return Err(invalid(dir, &name, "no registers"));
        }
        let xsave = cpus
            .iter()
            .find(|x| x.tid == tid)
            .map(|x| x.xsave.clone())
            .ok_or_else(|| {
                invalid(
                    dir,
                    &format!("cryo-cpu-{pid}.img"),
                    format!("no CPU state for thread {tid}"),
                )
            })?;
        threads.push((tid, c, xsave));
    }
    let affinity = threads
        .iter()
        .map(|(tid, _, _)| {
            cpus.iter()
                .find(|x| x.tid == *tid)
                .and_then(|x| x.affinity.clone())
        })
        .collect();
    let (pages_id, pagemap) = pages::read_pagemap(dir, pid as i32)?;
    let mm: MmEntry = dir.read_one(&format!("mm-{pid}.img"), image::MM)?;
    mm::validate(&mm, &pagemap).map_err(|m| invalid(dir, &format!("mm-{pid}.img"), m))?;
    Ok(Images {
        core,
        threads,
        affinity,
        mm,
        fs: dir.read_one(&format!("fs-{pid}.img"), image::FS)?,
        fdinfo: dir
            .reader(&format!("fdinfo-{}.img", ids.files_id), image::FDINFO)?
            .all()?,
        extra,
        pages_id,
        pagemap,
        pstree,
        seccomp: Vec::new(),
    })
}

/// Describes who holds `pid`, for the "PID taken" error.
fn holder(pid: i32) -> String {
    let comm = proc::read(pid, "comm")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let state = proc::read(pid, "stat")
        .ok()
        .and_then(|s| proc::parse_stat(&s).ok())
        .map(|s| s.state);
    match state {
        Some('Z') => format!("zombie process '{comm}' (its parent has not reaped it)"),
        _ => format!("process '{comm}'"),
    }
}

/// What the child does before it stops; all fds are already open in the parent.
/// (Sessions, groups and the children it creates are in `pstree::Runtime`.)
#[derive(Default)]
struct ChildPlan {
    /// The pid as the process itself sees it (in the tree's pid namespace).
    pid: i32,
    /// The root's new namespaces (the others inherit them).
    ns: Option<namespaces::ChildNs>,
    /// Lowest fd number above every fd involved; sources are first copied here.
    base: i32,
    /// Fds the target keeps until the end of the restore (at base + index).
    service: Vec<RawFd>,
    /// (source fd, target fd number, close-on-exec) for the target's own fds.
    moves: Vec<(RawFd, i32, bool)>,
    cwd: usize,
    root: Option<usize>,
    umask: u32,
    personality: u32,
    rlimits: Vec<(u32, u64, u64)>,
    comm: std::ffi::CString,
    scratch: u64,
    /// Only the root waits for the tracer; its descendants are traced from birth.
    go: Option<RawFd>,
    report: RawFd,
    pages_idx: usize,
    map_idx: HashMap<u32, usize>,
    /// Shared anonymous objects (shmid → service index).
    shm_idx: HashMap<u64, usize>,
    exe_idx: usize,
    /// Steps after the fds are in place (epoll registrations).
    late: Vec<files::Late>,
    /// (fd on the slave, foreground group): this session leader's controlling terminal.
    ctty: Option<(i32, i32)>,
    /// POSIX queue fds, opened by injected mq_open: (fd, name, flags, close-on-exec).
    mq: Vec<(i32, String, u32, bool)>,
}

/// Kills and reaps the half-restored process unless the restore completed.
struct ChildGuard {
    /// Every process of the tree, root first.
    pids: Vec<Pid>,
    armed: bool,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.armed {
            for p in &self.pids {
                let _ = nix::sys::signal::kill(*p, nix::sys::signal::Signal::SIGKILL);
            }
            // Reap every traced thread and process (cryo restore has no other child).
            use nix::sys::wait::{waitpid, WaitPidFlag};
            while waitpid(Pid::from_raw(-1), Some(WaitPidFlag::__WALL)).is_ok() {}
            log::warn!(pid = self.pids[0].as_raw(); "restore failed; processes removed");
        }
    }
}

/// Removes the POSIX queues a failed restore created in the restorer's ipc namespace.
struct MqGuard(Vec<String>);

impl Drop for MqGuard {
    fn drop(&mut self) {
        files::mqueue::unlink(&self.0);
    }
}

/// First address ≥ 1 MiB with `len` free bytes outside every range in `avoid`.
fn find_gap(len: u64, avoid: &[(u64, u64)]) -> u64 {
    let mut v: Vec<(u64, u64)> = avoid.to_vec();
    v.sort_unstable();
    let mut addr = 1 << 20;
    for (s, e) in v {
        if e <= addr {
            continue;
        }
        if s >= addr + len + PAGE_SIZE {
            break;
        }
        addr = (e + PAGE_SIZE).next_multiple_of(PAGE_SIZE);
    }
    addr
}

fn own_ranges(pid: i32) -> Result<Vec<(u64, u64)>> {
    Ok(proc::parse_smaps(&proc::read(pid, "maps")?)?
        .iter()
        .map(|v| (v.start, v.end))
        .collect())
}

pub fn restore(opts: &RestoreOpts) -> Result<Outcome> {
    let dir = ImageDir::open(&opts.dir)?;
    let (imgs, files) = load(&dir)?;
    let nsr = namespaces::load(&dir, &imgs.iter().map(|i| &i.pstree).collect::<Vec<_>>())?;
    // `vpid`: the root as the tree sees it; `pid`: in our pid namespace.
    let vpid = imgs[0].pstree.pid as i32;
    let pid = nsr.outer(vpid as u32);
    if imgs[0].pstree.sid as i32 != vpid && !opts.shell_job {
        return Err(Error::Usage(format!(
            "pid {pid} was not a session leader when dumped; restore it with --shell-job"
        )));
    }
    let entries: Vec<_> = imgs.iter().map(|i| (i.pstree.clone(), &i.core)).collect();
    let mut ptasks = pstree::tasks_of(&entries);
    ptasks[0].init = nsr.own_pidns();
    let tree = pstree::plan(&ptasks, opts.shell_job, &|_| false)
        .map_err(|(p, why)| invalid(&dir, "pstree.img", format!("process {p}: {why}")))?;
    let mut keep: Vec<OwnedFd> = Vec::new();
    let comms = tree
        .nodes
        .iter()
        .enumerate()
        .map(|(i, _)| {
            imgs.get(i)
                .map(|m| m.core.tc.clone().unwrap_or_default().comm)
        })
        .map(Option::unwrap_or_default)
        .collect();
    let mut rt = Runtime::new(tree, comms, &mut keep)?;
    // Each task's set_tid: its pid in the tree's pid namespace, then in ours.
    rt.set_tids = rt
        .plan
        .nodes
        .iter()
        .map(|n| nsr.set_tid(n.pid as u32))
        .collect();
    // Our pids of the tree (in a new pid namespace, its own pids are all free).
    for p in rt.pids().filter_map(|p| nsr.host_pid(p as u32)) {
        if proc::exists(p) {
            return Err(Error::PidTaken {
                pid: p,
                holder: holder(p),
            });
        }
    }
    fault_point("restore-before-fork")?;

    // Open everything in this process first: bad input fails before any fork. All
    // processes of the tree inherit these fds; each keeps its own.
    let mut opener = files::Opener::new(&dir, &files, opts.shell_job, opts.fds)?;
    let mut shm: HashMap<u64, RawFd> = HashMap::new();
    for (id, fd) in shmem::restore_objects(&dir, imgs.iter().map(|i| &i.mm))? {
        shm.insert(id, fd.as_raw_fd());
        keep.push(fd);
    }
    let (go_r, go_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(Error::sys("pipe2", 0))?;
    let (rep_r, rep_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(Error::sys("pipe2", 0))?;
    let report_raw = rep_w.as_raw_fd();
    keep.push(rep_w);
    let own = own_ranges(std::process::id() as i32)?;
    let mut plans = Vec::with_capacity(imgs.len());
    for img in &imgs {
        let plan = prepare(&dir, img, &mut opener, &mut keep, report_raw, &own, &shm)?;
        plans.push(plan);
    }
    plans[0].ns = Some(nsr.child.clone());
    for (i, p) in plans.iter().enumerate() {
        if let Some((fd, _)) = p.ctty {
            rt.cttys[i] = p.moves.iter().find(|m| m.1 == fd).map(|m| m.0);
        }
    }
    plans[0].go = Some(go_r.as_raw_fd());
    // Above every fd the new processes inherit (all of ours) and every target number.
    let ours = std::fs::read_dir("/proc/self/fd")
        .map_err(Error::io("read", "/proc/self/fd"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok());
    let max_fd = ours
        .chain(plans.iter().flat_map(|p| p.moves.iter().map(|m| m.1)))
        .chain(plans.iter().flat_map(|p| p.mq.iter().map(|m| m.0)))
        .chain([2])
        .max()
        .unwrap_or(2);
    for p in &mut plans {
        p.base = max_fd + 1;
    }

    // Orphans of the tree's processes come to us while restoring, and are reaped here
    // if it fails.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    // SAFETY: cryo's restore runs single-threaded; the child only runs `child_main`,
    // which never returns (it stops for the tracer or exits).
    let child = match unsafe { sysproc::clone3_set_tid(&rt.set_tids[0], nsr.clone_flags) } {
        Ok(None) => child_main(&plans, &rt, 0),
        Ok(Some(p)) => p,
        Err(nix::errno::Errno::EEXIST) => {
            return Err(Error::PidTaken {
                pid,
                holder: holder(pid),
            })
        }
        Err(e) => {
            return Err(Error::Sys {
                call: "clone3(set_tid)",
                pid,
                source: e,
            })
        }
    };
    drop(go_r);
    // (Helpers whose outer pid the kernel picked are not listed: they die with the
    // root, the init of their pid namespace.)
    let mut guard = ChildGuard {
        pids: rt
            .pids()
            .filter_map(|p| nsr.host_pid(p as u32))
            .map(Pid::from_raw)
            .collect(),
        armed: true,
    };
    raw::seize(child, TRACE_OPTS as usize).map_err(Error::sys("PTRACE_SEIZE", pid))?;
    let mut go_w = std::fs::File::from(go_w);
    go_w.write_all(b"g")
        .map_err(Error::io("write", "restore sync pipe"))?;
    // Our copies of the fds are the new processes' business now (but for the TCP
    // connections still in repair mode, released once every process holds its fds).
    let sk_files = opener.unix.take_created();
    let tcp = opener.inet.take_pending();
    drop(keep);
    let mqueues = std::mem::take(&mut opener.mqueues);
    drop(opener);
    wait_prepared(&rt, rep_r, &nsr)?;
    // SysV objects and POSIX queues of the tree's ipc namespace, before any process
    // attaches or opens them.
    if let Some(ipc) = &nsr.ipc {
        namespaces::in_ns_of(pid, "ipc", nix::sched::CloneFlags::CLONE_NEWIPC, || {
            ipc.create()
        })?;
    }
    let _mq_guard = if mqueues.is_empty() {
        None
    } else {
        let names = namespaces::in_ns_of(pid, "ipc", nix::sched::CloneFlags::CLONE_NEWIPC, || {
            mqueues.create()
        })?;
        // In a new ipc namespace they go with it; in ours a failed restore removes them.
        (nsr.clone_flags & libc::CLONE_NEWIPC as u64 == 0).then(|| MqGuard(names))
    };
    tcp.finish()?;
    // Children first; every process is rebuilt before any runs (a session's foreground group, for one,
    // is set by its leader after the members are rebuilt), then all are let go at once.
    let mut threads = Vec::new();
    for (img, plan) in imgs.iter().zip(&plans).rev() {
        if img.is_zombie() {
            continue;
        }
        let p = Pid::from_raw(nsr.outer(img.pstree.pid));
        let root = p.as_raw() == pid;
        threads.extend(rebuild(img, plan, p, !(root && opts.detach), &nsr)?);
    }
    for t in threads {
        raw::detach(t, 0).map_err(Error::sys("PTRACE_DETACH", t.as_raw()))?;
    }
    if let Some(ipc) = nsr.ipc.as_ref().filter(|i| i.has_destroyed()) {
        namespaces::in_ns_of(pid, "ipc", nix::sched::CloneFlags::CLONE_NEWIPC, || {
            ipc.remove_destroyed()
        })?;
    }
    guard.armed = false;
    sk_files.disarm();
    if let Some(mut g) = _mq_guard {
        g.0.clear();
    }
    log::info!(pid = pid; "restored");
    if let Some(p) = &opts.pidfile {
        std::fs::write(p, format!("{pid}\n")).map_err(Error::io("write", p))?;
    }
    if opts.detach {
        return Ok(Outcome::Detached(pid));
    }
    let _ = nix::sys::prctl::set_child_subreaper(false);
    use nix::sys::wait::WaitStatus;
    loop {
        match nix::sys::wait::waitpid(child, None).map_err(Error::sys("waitpid", pid))? {
            WaitStatus::Exited(_, c) => return Ok(Outcome::Exited(c)),
            WaitStatus::Signaled(_, s, _) => return Ok(Outcome::Exited(128 + s as i32)),
            _ => continue,
        }
    }
}

/// Opens what one process needs and plans its fds; `base` is set once all are known.
fn prepare(
    dir: &ImageDir,
    img: &Images,
    opener: &mut files::Opener,
    keep: &mut Vec<OwnedFd>,
    report: RawFd,
    own: &[(u64, u64)],
    shm: &HashMap<u64, RawFd>,
) -> Result<ChildPlan> {
    let pid = img.pstree.pid as i32;
    if img.is_zombie() {
        return Ok(ChildPlan {
            pid,
            report,
            ..Default::default()
        });
    }
    let mut service: Vec<RawFd> = vec![report];
    let mut add_service = |fd: OwnedFd, keep: &mut Vec<OwnedFd>| -> usize {
        service.push(fd.as_raw_fd());
        keep.push(fd);
        service.len() - 1
    };
    let pages_path = dir.file(&format!("pages-{}.img", img.pages_id));
    let pages_fd: OwnedFd = std::fs::File::open(&pages_path)
        .map_err(|_| ImageError::Missing {
            path: pages_path.clone(),
        })?
        .into();
    let pages_idx = add_service(pages_fd, keep);
    let mut map_idx: HashMap<u32, usize> = HashMap::new();
    for v in &img.mm.vmas {
        if v.status & (mm::VMA_FILE_PRIVATE | mm::VMA_FILE_SHARED) != 0
            && !map_idx.contains_key(&(v.shmid as u32))
        {
            let fd = opener.open_for_mapping(v.shmid as u32)?;
            let idx = add_service(fd, keep);
            map_idx.insert(v.shmid as u32, idx);
        }
    }
    let name = |id: u32| -> Result<String> {
        opener
            .entry(id)?
            .reg
            .as_ref()
            .map(|r| r.name.clone())
            .ok_or_else(|| invalid(dir, "files.img", "file without path"))
    };
    let exe_idx = add_service(
        files::open_for_map(&name(img.mm.exe_file_id)?, false, None)?,
        keep,
    );
    let cwd = add_service(files::open_dir(&name(img.fs.cwd_id)?)?, keep);
    let root_path = name(img.fs.root_id)?;
    let root = if root_path != "/" {
        Some(add_service(files::open_dir(&root_path)?, keep))
    } else {
        None
    };
    let mut shm_idx = HashMap::new();
    for id in shmem::shmids(&img.mm) {
        if let (None, Some(&fd)) = (shm_idx.get(&id), shm.get(&id)) {
            service.push(fd);
            shm_idx.insert(id, service.len() - 1);
        }
    }
    let mut moves = Vec::new();
    let mut mq = Vec::new();
    for fi in &img.fdinfo {
        let cloexec = fi.flags & libc::FD_CLOEXEC as u32 != 0;
        if let Some((name, flags)) = opener.mqueues.file(fi.id) {
            mq.push((fi.fd as i32, name, flags, cloexec));
            continue;
        }
        // One open file description per file id, shared across fds and processes.
        let src = opener.open(fi.id)?;
        moves.push((src, fi.fd as i32, fi.flags & libc::FD_CLOEXEC as u32 != 0));
    }
    let late = opener.late_steps(pid, &img.fdinfo)?;
    let ctty = (img.pstree.sid == img.pstree.pid)
        .then(|| opener.ctty_duty(img.pstree.pid, &img.fdinfo))
        .flatten();
    let tc = img.core.tc.clone().unwrap_or_default();
    let mut avoid: Vec<(u64, u64)> = img.mm.vmas.iter().map(|v| (v.start, v.end)).collect();
    avoid.extend_from_slice(own);
    Ok(ChildPlan {
        pid,
        ns: None,
        base: 0,
        service,
        moves,
        cwd,
        root,
        umask: img.fs.umask.unwrap_or(0o022),
        personality: tc.personality,
        rlimits: tc
            .rlimits
            .as_ref()
            .map(|r| {
                r.rlimits
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (i as u32, l.cur, l.max))
                    .collect()
            })
            .unwrap_or_default(),
        comm: std::ffi::CString::new(tc.comm.clone()).unwrap_or_default(),
        scratch: find_gap(SCRATCH_LEN, &avoid),
        go: None,
        report,
        pages_idx,
        map_idx,
        shm_idx,
        exe_idx,
        late,
        ctty,
        mq,
    })
}

/// Lets the new processes run their preparation (each stops with SIGSTOP when done),
/// continuing the fork and birth stops of the tree; then checks their reports.
/// Zombies and helpers are done when they exit as planned. waitpid names the
/// processes by our pids, the plan by the tree's: in a new pid namespace each new
/// process is looked up (`NSpid`) at its first stop, before it can exit.
fn wait_prepared(rt: &Runtime, report: OwnedFd, nsr: &RestoreNs) -> Result<()> {
    let n = rt.plan.nodes.len();
    let mut inner: HashMap<i32, i32> = rt
        .pids()
        .filter_map(|p| Some((nsr.host_pid(p as u32)?, p)))
        .collect();
    let learn = |inner: &mut HashMap<i32, i32>, p: Pid| {
        if nsr.own_pidns() && !inner.contains_key(&p.as_raw()) {
            if let Some(v) = proc::read(p.as_raw(), "status")
                .ok()
                .and_then(|s| namespaces::parse_nspid(&s)?.last().copied())
            {
                log::debug!(pid = p.as_raw(), vpid = v; "new process");
                inner.insert(p.as_raw(), v);
            }
        }
    };
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let read_report = |report: &OwnedFd| -> String {
        let _ = nix::fcntl::fcntl(
            report,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
        let mut b = vec![0u8; 4096];
        let n = nix::unistd::read(report, &mut b).unwrap_or(0);
        String::from_utf8_lossy(&b[..n]).into_owned()
    };
    let expected = |inner: &HashMap<i32, i32>, p: Pid| -> Option<u32> {
        let v = if nsr.own_pidns() {
            *inner.get(&p.as_raw())?
        } else {
            p.as_raw()
        };
        rt.expected_exit(v)
    };
    let mut ready = 0;
    while ready < n {
        let st = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::__WALL))
            .map_err(Error::sys("waitpid", 0))?;
        match st {
            WaitStatus::Stopped(p, nix::sys::signal::Signal::SIGSTOP) => {
                log::debug!(pid = p.as_raw(); "prepared");
                ready += 1;
            }
            WaitStatus::PtraceEvent(p, _, _) => {
                learn(&mut inner, p);
                raw::cont(p, 0).map_err(Error::sys("PTRACE_CONT", p.as_raw()))?
            }
            WaitStatus::Stopped(p, sig) => {
                learn(&mut inner, p);
                raw::cont(p, sig as i32).map_err(Error::sys("PTRACE_CONT", p.as_raw()))?
            }
            WaitStatus::Exited(p, c) if expected(&inner, p) == Some((c as u32) << 8) => {
                log::debug!(pid = p.as_raw(), code = c; "exited as planned");
                ready += 1;
            }
            WaitStatus::Signaled(p, s, _)
                if expected(&inner, p).map(|e| e & 0x7f) == Some(s as u32) =>
            {
                log::debug!(pid = p.as_raw(), signal = s as i32; "killed as planned");
                ready += 1;
            }
            WaitStatus::Exited(p, _) | WaitStatus::Signaled(p, _, _) => {
                let msg = read_report(&report).replace("ok", "");
                let msg = if msg.is_empty() {
                    "the new process died while preparing".to_string()
                } else {
                    msg
                };
                return Err(Error::Restore {
                    pid: p.as_raw(),
                    msg,
                });
            }
            _ => {}
        }
    }
    let msg = read_report(&report);
    if msg != "ok".repeat(rt.live_tasks()) {
        return Err(Error::Restore {
            pid: 0,
            msg: format!("preparation reported {msg:?}"),
        });
    }
    Ok(())
}

/// Runs in the new process: only fd shuffling and simple syscalls, then it stops.
fn child_main(plans: &[ChildPlan], rt: &Runtime, idx: usize) -> ! {
    let mut spawn = |c: usize| -> nix::Result<()> {
        // SAFETY: this process is single-threaded (a fork of the restorer); the child
        // runs child_main, which never returns.
        match unsafe { sysproc::clone3_set_tid(&rt.set_tids[c], 0) } {
            Ok(None) => child_main(plans, rt, c),
            Ok(Some(_)) => Ok(()),
            Err(e) => Err(e),
        }
    };
    if idx >= plans.len() {
        rt.helper_main(idx, plans[0].report, &mut spawn);
    }
    let p = &plans[idx];
    let mut report = p.report;
    let fail = |report: RawFd, what: &str, e: nix::errno::Errno| -> ! {
        let m = format!("in the new process: {what}: {e}");
        let _ = sysproc::write_raw(report, m.as_bytes());
        sysproc::exit_now(1)
    };
    if let Some(go) = p.go {
        let mut b = [0u8; 1];
        if sysproc::read_raw(go, &mut b) != 1 {
            sysproc::exit_now(1);
        }
    }
    if rt.plan.nodes[idx].pdeathsig {
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    }
    if let Some(ns) = &p.ns {
        if let Err((what, e)) = namespaces::enter(ns) {
            fail(report, what, e);
        }
    }
    // cryo's own handlers (Rust's runtime sets SIGSEGV/SIGBUS ones) must not leak into
    // the restored process: start from all-default, the tracer sets the dumped ones.
    sysproc::reset_signal_dispositions();
    // Session and group first (children inherit them), then the children, each made
    // by its restored parent with its PID (a zombie exits here); fds are shuffled only
    // after that.
    if let Err((what, e)) = rt.enter(idx, &mut spawn) {
        fail(report, what, e);
    }
    // Sources to base.., then drop everything else, then targets into place.
    let sources: Vec<RawFd> = p
        .service
        .iter()
        .copied()
        .chain(p.moves.iter().map(|m| m.0))
        .collect();
    for (i, &src) in sources.iter().enumerate() {
        if let Err(e) = dup2_raw(src, p.base + i as i32) {
            fail(report, "dup2", e);
        }
    }
    report = p.base;
    let end = p.base + sources.len() as i32;
    let _ = sysproc::close_range(0, (p.base - 1) as u32);
    let _ = sysproc::close_range(end as u32, u32::MAX);
    let ns = p.service.len() as i32;
    for (j, &(_, target, cloexec)) in p.moves.iter().enumerate() {
        if let Err(e) = dup2_raw(p.base + ns + j as i32, target) {
            fail(report, "dup2 to target fd", e);
        }
        if cloexec {
            if let Err(e) = set_cloexec(target) {
                fail(report, "fcntl(FD_CLOEXEC)", e);
            }
        }
    }
    if ns < sources.len() as i32 {
        let _ = sysproc::close_range((p.base + ns) as u32, (end - 1) as u32);
    }
    for step in &p.late {
        if let Err((what, e)) = step.run() {
            fail(report, what, e);
        }
    }
    if let Some(r) = p.root {
        if let Err(e) =
            sysproc::fchdir_raw(p.base + r as i32).and_then(|_| nix::unistd::chroot("."))
        {
            fail(report, "chroot", e);
        }
    }
    if let Err(e) = sysproc::fchdir_raw(p.base + p.cwd as i32) {
        fail(report, "fchdir(cwd)", e);
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(p.umask));
    sysproc::set_personality(p.personality);
    let me = Pid::from_raw(0);
    for &(res, cur, max) in &p.rlimits {
        if sysproc::prlimit(me, res, Some((cur, max))).is_err() {
            // Without CAP_SYS_RESOURCE a hard limit cannot grow: keep ours, set the soft one.
            if let Ok((_, ourmax)) = sysproc::prlimit(me, res, None) {
                let _ = sysproc::prlimit(me, res, Some((cur.min(ourmax), max.min(ourmax))));
            }
        }
    }
    let _ = nix::sys::prctl::set_name(&p.comm);
    if let Err(e) = sysproc::mmap_fixed_noreplace_rwx(p.scratch, SCRATCH_LEN as usize) {
        fail(report, "mmap scratch", e);
    }
    let _ = sysproc::write_raw(report, b"ok");
    sysproc::close_raw(report);
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
    let _ = p.pid;
    sysproc::exit_now(1)
}

fn dup2_raw(src: RawFd, dst: RawFd) -> nix::Result<()> {
    if src == dst {
        return Ok(());
    }
    nix::errno::Errno::result(sysproc::dup2(src, dst)).map(drop)
}

fn set_cloexec(fd: RawFd) -> nix::Result<()> {
    nix::errno::Errno::result(sysproc::set_cloexec(fd)).map(drop)
}

/// Rebuilds the stopped child into the dumped process; returns its threads, still
/// stopped, for the caller to let go. `child` is its
/// pid in our namespace; what runs inside it uses the pids of the tree's (`img`).
fn rebuild(
    img: &Images,
    plan: &ChildPlan,
    child: Pid,
    rearm_pdeath: bool,
    nsr: &RestoreNs,
) -> Result<Vec<Pid>> {
    let (pages_idx, map_idx, exe_idx) = (plan.pages_idx, &plan.map_idx, plan.exe_idx);
    let pid = child.as_raw();
    let vpid = img.pstree.pid as i32;
    let svc = |i: usize| (plan.base + i as i32) as u64;
    raw::set_sigmask(child, !0).map_err(Error::sys("PTRACE_SETSIGMASK", pid))?;
    let base_regs = raw::get_regs(child).map_err(Error::sys("PTRACE_GETREGS", pid))?;
    let mine = proc::parse_smaps(&proc::read(pid, "maps")?)?;
    let vdso = mine
        .iter()
        .find(|v| v.name == "[vdso]")
        .ok_or_else(|| Error::Restore {
            pid,
            msg: "the new process has no vDSO".into(),
        })?;
    let ip = tr::find_syscall_insn(child, vdso.start, vdso.end)?.ok_or_else(|| Error::Restore {
        pid,
        msg: "no syscall instruction in the vDSO".into(),
    })?;
    let mut inj = Injector {
        pid: child,
        syscall_ip: ip,
        base: base_regs,
        scratch: Some((plan.scratch, SCRATCH_LEN)),
    };

    // glibc registered rseq in the child at cryo's TLS; it is about to be unmapped.
    let rseq =
        raw::get_rseq_config(child).map_err(Error::sys("PTRACE_GET_RSEQ_CONFIGURATION", pid))?;
    if rseq.rseq_abi_pointer != 0 {
        inj.call(
            "rseq(unregister)",
            libc::SYS_rseq,
            &[
                rseq.rseq_abi_pointer,
                rseq.rseq_abi_size as u64,
                1,
                rseq.signature as u64,
            ],
        )?;
    }
    // Drop cryo's own mappings; keep the kernel's specials and the scratch page.
    let specials: Vec<&proc::Vma> = mine
        .iter()
        .filter(|v| matches!(v.name.as_str(), "[vdso]" | "[vvar]" | "[vvar_vclock]"))
        .collect();
    for v in &mine {
        if v.name == "[vsyscall]"
            || specials.iter().any(|s| s.start == v.start)
            || v.start == plan.scratch
        {
            continue;
        }
        inj.call("munmap", libc::SYS_munmap, &[v.start, v.len()])?;
    }
    // Put vvar/vdso where the process had them.
    let want: Vec<_> = img
        .mm
        .vmas
        .iter()
        .filter(|v| v.status & (mm::VMA_AREA_VDSO | mm::VMA_AREA_VVAR) != 0)
        .collect();
    let sizes_match = want.len() == specials.len()
        && want
            .iter()
            .zip(&specials)
            .all(|(w, s)| w.end - w.start == s.len());
    if !sizes_match {
        return Err(Error::Restore {
            pid,
            msg: "the vDSO layout differs from the dumping kernel's (restore on another kernel is not supported yet)".into(),
        });
    }
    let overlap = want
        .iter()
        .any(|w| specials.iter().any(|s| w.start < s.end && s.start < w.end));
    let mut cur: Vec<u64> = specials.iter().map(|s| s.start).collect();
    if overlap {
        let total: u64 = specials.iter().map(|s| s.len()).sum();
        let mut avoid: Vec<(u64, u64)> = img.mm.vmas.iter().map(|v| (v.start, v.end)).collect();
        avoid.extend(specials.iter().map(|s| (s.start, s.end)));
        avoid.push((plan.scratch, plan.scratch + SCRATCH_LEN));
        let mut tmp = find_gap(total, &avoid);
        for (c, s) in cur.iter_mut().zip(&specials) {
            mremap(&inj, *c, s.len(), tmp)?;
            if s.name == "[vdso]" {
                inj.syscall_ip = inj.syscall_ip - *c + tmp;
            }
            *c = tmp;
            tmp += s.len();
        }
    }
    for ((c, s), w) in cur.iter().zip(&specials).zip(&want) {
        if *c != w.start {
            mremap(&inj, *c, s.len(), w.start)?;
            if s.name == "[vdso]" {
                inj.syscall_ip = inj.syscall_ip - *c + w.start;
            }
        }
    }
    fault_point("restore-mid-mm")?;

    // Map every VMA, writable while its pages are filled.
    let has_pages = |v: &cryo_proto::criu::VmaEntry| {
        img.pagemap
            .iter()
            .any(|p| p.vaddr < v.end && p.vaddr + p.nr_pages.unwrap_or(0) * PAGE_SIZE > v.start)
    };
    let mut reprotect = Vec::new();
    for v in img.mm.vmas.iter().filter(|v| !mm::is_special(v.status)) {
        if v.status & mm::VMA_AREA_SYSVIPC != 0 {
            crate::ipc::attach(&inj, v, &img.mm.vmas)?;
            continue;
        }
        let fill = has_pages(v);
        let prot = v.prot as u64 | if fill { libc::PROT_WRITE as u64 } else { 0 };
        let (fd, off, flags) = match map_idx.get(&(v.shmid as u32)) {
            Some(&i) if v.status & (mm::VMA_FILE_PRIVATE | mm::VMA_FILE_SHARED) != 0 => {
                (svc(i), v.pgoff, v.flags as u64)
            }
            _ => match shmem::map_source(v, &plan.shm_idx) {
                Some((i, off, flags)) => (svc(i), off, flags),
                None => (u64::MAX, 0, v.flags as u64),
            },
        };
        let flags = flags | libc::MAP_FIXED as u64;
        let got = inj.call(
            "mmap",
            libc::SYS_mmap,
            &[v.start, v.end - v.start, prot, flags, fd, off],
        )?;
        if got != v.start {
            return Err(Error::Restore {
                pid,
                msg: format!("mmap of {:x} landed at {got:x}", v.start),
            });
        }
        for adv in mm::madvices(v) {
            inj.call(
                "madvise",
                libc::SYS_madvise,
                &[v.start, v.end - v.start, adv as u64],
            )?;
        }
        if prot != v.prot as u64 {
            reprotect.push(v);
        }
    }
    pages::restore_pages(&inj, &img.pagemap, svc(pages_idx) as i32, SCRATCH_IOV)?;
    for v in reprotect {
        inj.call(
            "mprotect",
            libc::SYS_mprotect,
            &[v.start, v.end - v.start, v.prot as u64],
        )?;
    }
    fault_point("restore-after-pages")?;

    // mm fields, in one call.
    let auxv = mm::auxv_bytes(&img.mm);
    let auxv_addr = inj.put(1024, &auxv)?;
    let map = mm::prctl_mm_map(&img.mm, auxv_addr, svc(exe_idx) as i32);
    let map_addr = inj.put(0, &map)?;
    inj.call(
        "prctl(PR_SET_MM_MAP)",
        libc::SYS_prctl,
        &[libc::PR_SET_MM as u64, 14, map_addr, map.len() as u64, 0],
    )?;

    // POSIX queue fds: opened by the process itself, in its ipc namespace.
    for (fd, name, flags, cloexec) in &plan.mq {
        let mut b = name.as_bytes().to_vec();
        b.push(0);
        let addr = inj.put(12288, &b)?;
        // mq_open always sets FD_CLOEXEC.
        let tmp = inj.call("mq_open", libc::SYS_mq_open, &[addr, *flags as u64, 0, 0])?;
        if tmp != *fd as u64 {
            let fl = if *cloexec { libc::O_CLOEXEC as u64 } else { 0 };
            inj.call("dup3", libc::SYS_dup3, &[tmp, *fd as u64, fl])?;
            inj.call("close", libc::SYS_close, &[tmp])?;
        } else if !cloexec {
            inj.call(
                "fcntl(F_SETFD)",
                libc::SYS_fcntl,
                &[tmp, libc::F_SETFD as u64, 0],
            )?;
        }
    }

    // Process-wide signal and task state (leader).
    let tc = img.core.tc.clone().unwrap_or_default();
    signals::restore_sigactions(&inj, &tc.sigactions)?;
    if tc.child_subreaper == Some(true) {
        inj.call(
            "prctl",
            libc::SYS_prctl,
            &[libc::PR_SET_CHILD_SUBREAPER as u64, 1],
        )?;
    }
    if let Some(d) = img.mm.dumpable {
        inj.call(
            "prctl",
            libc::SYS_prctl,
            &[libc::PR_SET_DUMPABLE as u64, d as u64],
        )?;
    }
    if let Some(q) = &tc.signals_s {
        signals::restore_pending(&inj, vpid, vpid, q, true)?;
    }

    // The other threads, created by the leader with their TIDs; each stops at birth
    // (PTRACE_O_TRACECLONE) and is driven like the leader.
    let mut injs = vec![(child, inj)];
    for (tid, _, _) in img.threads.iter().skip(1) {
        let leader = &injs[0].1;
        let set_tid = nsr.set_tid(*tid);
        let set_tid_bytes: Vec<u8> = set_tid.iter().flat_map(|t| t.to_ne_bytes()).collect();
        let tid_addr = leader.put(8192 + 128, &set_tid_bytes)?;
        let flags = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM) as u64;
        // struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal, stack,
        // stack_size, tls, set_tid, set_tid_size, cgroup.
        let args: Vec<u8> = [
            flags,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            tid_addr,
            set_tid.len() as u64,
            0,
        ]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect();
        let args_addr = leader.put(8192, &args)?;
        let got = leader.call(
            "clone3(thread)",
            libc::SYS_clone3,
            &[args_addr, args.len() as u64],
        )?;
        if got != *tid as u64 {
            return Err(Error::Restore {
                pid,
                msg: format!("thread created as {got}, wanted {tid}"),
            });
        }
        let t = Pid::from_raw(nsr.outer(*tid));
        match tr::wait_stop(t)? {
            Stop::Event | Stop::Signal(libc::SIGSTOP) => {}
            other => {
                return Err(Error::Restore {
                    pid,
                    msg: format!("new thread {tid}: unexpected stop {other:?}"),
                })
            }
        }
        let base = raw::get_regs(t).map_err(Error::sys("PTRACE_GETREGS", *tid as i32))?;
        let ti = Injector {
            pid: t,
            syscall_ip: leader.syscall_ip,
            base,
            scratch: leader.scratch,
        };
        injs.push((t, ti));
    }

    // Per-thread kernel state.
    let own_groups = nix::unistd::getgroups()
        .unwrap_or_default()
        .iter()
        .map(|g| g.as_raw())
        .collect::<Vec<_>>();
    for ((tid, core, _), (_, tinj)) in img.threads.iter().zip(&injs) {
        let th = core.thread_core.clone().unwrap_or_default();
        let ti = core.thread_info.clone().unwrap_or_default();
        if let Some(sas) = &th.sas {
            signals::restore_altstack(tinj, sas)?;
        }
        if th.futex_rla != 0 {
            tinj.call(
                "set_robust_list",
                libc::SYS_set_robust_list,
                &[th.futex_rla, th.futex_rla_len as u64],
            )?;
        }
        tinj.call(
            "set_tid_address",
            libc::SYS_set_tid_address,
            &[ti.clear_tid_addr],
        )?;
        if let Some(name) = &th.comm {
            let mut b: Vec<u8> = name.as_bytes().iter().copied().take(15).collect();
            b.push(0);
            let addr = tinj.put(8192, &b)?;
            tinj.call(
                "prctl(PR_SET_NAME)",
                libc::SYS_prctl,
                &[libc::PR_SET_NAME as u64, addr],
            )?;
        }
        if let Some(q) = &th.signals_p {
            signals::restore_pending(tinj, vpid, *tid as i32, q, false)?;
        }
        if let Some(c) = &th.creds {
            creds::restore(tinj, c, &img.extra, &own_groups)?;
        }
        // After the credentials: a uid/gid change resets the parent-death signal. With
        // --restore-detached the parent is cryo, which exits now: re-arming the signal
        // would fire it at once, so it stays off (the original parent is not restored).
        let pdeath = th.pdeath_sig.unwrap_or(0);
        if pdeath != 0 && !rearm_pdeath {
            log::warn!(tid = *tid, signal = pdeath; "parent-death signal not re-armed: the restorer is the parent and exits");
        }
        let pdeath = if rearm_pdeath { pdeath } else { 0 };
        tinj.call(
            "prctl",
            libc::SYS_prctl,
            &[libc::PR_SET_PDEATHSIG as u64, pdeath as u64],
        )?;
        timers::restore_slack(tinj, th.timerslack_ns)?;
    }

    // Service fds and the scratch page go; rseq is registered last so the kernel checks
    // any critical section against the final instruction pointer.
    let leader = &injs[0].1;
    // Every process of the session exists now: the terminal's foreground group (the
    // leader took the terminal before creating its children).
    if let Some((fd, pgrp)) = plan.ctty {
        let at = leader.put(8192, &pgrp.to_ne_bytes())?;
        leader.call(
            "ioctl(TIOCSPGRP)",
            libc::SYS_ioctl,
            &[fd as u64, libc::TIOCSPGRP, at],
        )?;
    }
    if let Some(t) = &tc.timers {
        timers::restore(leader, t)?;
    }
    leader.call(
        "close_range",
        libc::SYS_close_range,
        &[plan.base as u64, u32::MAX as u64, 0],
    )?;
    leader.call("munmap", libc::SYS_munmap, &[plan.scratch, SCRATCH_LEN])?;
    for ((_, core, _), (_, tinj)) in img.threads.iter().zip(&injs) {
        let th = core.thread_core.clone().unwrap_or_default();
        if let Some(r) = &th.rseq_entry {
            tinj.call(
                "rseq",
                libc::SYS_rseq,
                &[
                    r.rseq_abi_pointer,
                    r.rseq_abi_size as u64,
                    0,
                    r.signature as u64,
                ],
            )?;
        }
    }
    // Seccomp filters after everything else injected: they may forbid any of it.
    let sps: Vec<(&Injector, u64)> = img
        .threads
        .iter()
        .zip(&injs)
        .map(|((_, c, _), (_, i))| (i, c.thread_info.as_ref().map_or(0, |t| t.gpregs.sp)))
        .collect();
    seccomp::restore(&sps, &img.seccomp, &img.mm.vmas, TRACE_OPTS as usize)?;
    for ((tid, core, xsave), (t, _)) in img.threads.iter().zip(&injs) {
        let th = core.thread_core.clone().unwrap_or_default();
        let ti = core.thread_info.clone().unwrap_or_default();
        fault_point("restore-before-regs")?;
        let tid = *tid as i32;
        raw::set_regs(*t, &cpu::entry_to_regs(&ti.gpregs))
            .map_err(Error::sys("PTRACE_SETREGS", tid))?;
        raw::set_xstate(*t, xsave).map_err(Error::sys("PTRACE_SETREGSET(NT_X86_XSTATE)", tid))?;
        raw::set_sigmask(*t, th.blk_sigset.unwrap_or(tc.blk_sigset))
            .map_err(Error::sys("PTRACE_SETSIGMASK", tid))?;
    }
    // Scheduling, CPU affinity and OOM score are set from outside, as root.
    for (((tid, core, _), (t, _)), aff) in img.threads.iter().zip(&injs).zip(&img.affinity) {
        if let Some(mask) = aff {
            if let Err(e) = sysproc::set_affinity(*t, mask) {
                // The restoring machine may have fewer CPUs.
                log::warn!(tid = *tid, err:% = e; "CPU affinity not restored");
            }
        }
        let th = core.thread_core.clone().unwrap_or_default();
        if let (Some(nice), Some(policy)) = (th.sched_nice, th.sched_policy) {
            sysproc::set_sched(*t, nice, policy, th.sched_prio.unwrap_or(0))
                .map_err(Error::sys("sched_setscheduler/setpriority", *tid as i32))?;
        }
    }
    if let Some(adj) = tc.oom_score_adj {
        let path = format!("/proc/{pid}/oom_score_adj");
        if let Err(e) = std::fs::write(&path, adj.to_string()) {
            // Lowering it needs CAP_SYS_RESOURCE, which this restorer may lack.
            log::warn!(pid = pid, oom_score_adj = adj, err:% = e; "oom_score_adj not restored");
        }
    }
    Ok(injs.into_iter().map(|(t, _)| t).collect())
}

fn mremap(inj: &Injector, from: u64, len: u64, to: u64) -> Result<()> {
    let flags = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
    inj.call("mremap", libc::SYS_mremap, &[from, len, len, flags, to])?;
    Ok(())
}
