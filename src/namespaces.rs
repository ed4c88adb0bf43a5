//! Namespaces of the dumped tree, dump and restore side by side.
//!
//! Dump records every task's namespace ids (the inode numbers of `/proc/PID/ns/*`) in
//! CRIU's `task_kobj_ids_entry` and decides how the tree relates to the dumping cryo:
//! either it shares all of cryo's namespaces, or its root is the init (pid 1) of a pid
//! namespace of its own, possibly with its own uts and ipc namespaces and a mount
//! namespace that differs from cryo's only by a proc mounted on /proc (what
//! `unshare --fork --pid --mount-proc --uts --ipc` makes). Anything else is refused
//! before any image is written, naming the task and the namespace.
//!
//! Pids: pstree.img and the per-task image names use the pids inside the tree's pid
//! namespace (CRIU's convention: the root is 1); `cryo-ns.img` keeps each task's pid in
//! the dumping cryo's namespace, and restore asks `clone3` for both (`set_tid`).
//!
//! Restore creates the root with the recorded `CLONE_NEW*` flags; the root, still
//! running cryo's code (`enter`), makes its mount tree private, mounts a fresh proc
//! on /proc, and sets hostname, domain name and the IPC sysctls. The SysV objects of
//! a tree's own ipc namespace are read and recreated by `crate::ipc`, from a thread
//! that joins the namespace (`in_ns_of`).

use crate::dump::CRYO_FORMAT_VERSION;
use crate::error::{Error, Result};
use crate::image::{self, ImageDir, ImageError};
use crate::proc;
use crate::sys::process as sysproc;
use cryo_proto::criu::{IpcVarEntry, PstreeEntry, TaskKobjIdsEntry, UtsnsEntry};
use cryo_proto::cryo::{CryoHeadEntry, NsPidEntry, NsTreeEntry};
use nix::errno::Errno;
use nix::sched::CloneFlags;
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;

const CLONE_NEWPID: u64 = libc::CLONE_NEWPID as u64;
const CLONE_NEWUTS: u64 = libc::CLONE_NEWUTS as u64;
const CLONE_NEWIPC: u64 = libc::CLONE_NEWIPC as u64;
const CLONE_NEWNS: u64 = libc::CLONE_NEWNS as u64;
/// The namespaces cryo can create for a restored tree.
const SUPPORTED: u64 = CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNS;
const NS_IMAGE: &str = "cryo-ns.img";

/// One task's namespaces, as `/proc/PID/ns/*` inode numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NsIds {
    pub pid: u32,
    pub pid_for_children: u32,
    pub net: u32,
    pub ipc: u32,
    pub uts: u32,
    pub mnt: u32,
    pub user: u32,
    pub cgroup: u32,
    pub time: u32,
    pub time_for_children: u32,
}

impl NsIds {
    /// `base` is a /proc directory of one task: `/proc/self`, `/proc/PID/task/TID`.
    fn read(base: &str, pid: i32) -> Result<NsIds> {
        let ino = |kind: &str| -> Result<u32> {
            let path = format!("{base}/ns/{kind}");
            let link = std::fs::read_link(&path).map_err(|e| Error::proc_io(pid, &path, e))?;
            parse_ns_link(&link.to_string_lossy()).ok_or_else(|| Error::Parse {
                path: format!("ns/{kind}"),
                msg: format!("unexpected link {}", link.display()),
            })
        };
        Ok(NsIds {
            pid: ino("pid")?,
            pid_for_children: ino("pid_for_children")?,
            net: ino("net")?,
            ipc: ino("ipc")?,
            uts: ino("uts")?,
            mnt: ino("mnt")?,
            user: ino("user")?,
            cgroup: ino("cgroup")?,
            time: ino("time")?,
            time_for_children: ino("time_for_children")?,
        })
    }

    /// (name, id) of every kind, in a fixed order.
    fn kinds(&self) -> [(&'static str, u32); 10] {
        [
            ("pid", self.pid),
            ("pid_for_children", self.pid_for_children),
            ("net", self.net),
            ("ipc", self.ipc),
            ("uts", self.uts),
            ("mnt", self.mnt),
            ("user", self.user),
            ("cgroup", self.cgroup),
            ("time", self.time),
            ("time_for_children", self.time_for_children),
        ]
    }
}

/// `"uts:[4026531838]"` → 4026531838.
pub fn parse_ns_link(s: &str) -> Option<u32> {
    let (_, rest) = s.split_once(":[")?;
    rest.strip_suffix(']')?.parse().ok()
}

/// The `NSpid:` line of `/proc/PID/status`: the pid at each pid-namespace level,
/// outermost first.
pub fn parse_nspid(status: &str) -> Option<Vec<i32>> {
    parse_ns_line(status, "NSpid:")
}

/// A per-level line of `/proc/PID/status` (`NSpid:`, `NSpgid:`, `NSsid:`), outermost
/// first; a 0 means the id is not visible at that level.
pub fn parse_ns_line(status: &str, key: &str) -> Option<Vec<i32>> {
    let v = status.lines().find_map(|l| l.strip_prefix(key))?;
    let p: Vec<i32> = v
        .split_whitespace()
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    (!p.is_empty()).then_some(p)
}

/// One line of `/proc/PID/mountinfo` without the ids that differ between namespaces
/// (mount id, parent id, propagation tags): what is mounted where, how.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mount {
    pub mountpoint: String,
    pub root: String,
    pub dev: String,
    pub fstype: String,
    pub source: String,
    pub opts: String,
    pub super_opts: String,
    /// Propagation tags (`shared:N`, `master:N`, ...), not part of the comparison key.
    pub tags: Vec<String>,
}

pub fn parse_mountinfo(s: &str) -> Result<Vec<Mount>> {
    let bad = |l: &str| Error::Parse {
        path: "mountinfo".into(),
        msg: format!("bad line {l:?}"),
    };
    let mut out = Vec::new();
    for l in s.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = l.split_whitespace().collect();
        let sep = f.iter().position(|x| *x == "-").ok_or_else(|| bad(l))?;
        if sep < 6 || f.len() < sep + 4 {
            return Err(bad(l));
        }
        out.push(Mount {
            dev: f[2].into(),
            root: f[3].into(),
            mountpoint: f[4].into(),
            opts: f[5].into(),
            tags: f[6..sep].iter().map(|x| x.to_string()).collect(),
            fstype: f[sep + 1].into(),
            source: f[sep + 2].into(),
            super_opts: f[sep + 3].into(),
        });
    }
    Ok(out)
}

/// Compares a task's mount table with cryo's. `Ok(mount_proc)`: the same mounts, plus
/// (if true) one proc mounted on /proc; `Err(why)` otherwise.
pub fn compare_mounts(task: &[Mount], mine: &[Mount]) -> std::result::Result<bool, String> {
    let key = |m: &Mount| {
        (
            m.mountpoint.clone(),
            m.root.clone(),
            m.dev.clone(),
            m.fstype.clone(),
            m.source.clone(),
            m.opts.clone(),
            m.super_opts.clone(),
        )
    };
    if let Some(m) = task.iter().find(|m| !m.tags.is_empty()) {
        return Err(format!(
            "{} has propagation {} (restored mounts are private)",
            m.mountpoint,
            m.tags.join(" ")
        ));
    }
    let mut left: Vec<_> = mine.iter().map(key).collect();
    let mut extra = Vec::new();
    for m in task {
        match left.iter().position(|k| *k == key(m)) {
            Some(i) => {
                left.swap_remove(i);
            }
            None => extra.push(m),
        }
    }
    let procs = extra
        .iter()
        .filter(|m| m.fstype == "proc" && m.mountpoint == "/proc")
        .count();
    let others: Vec<String> = extra
        .iter()
        .filter(|m| !(m.fstype == "proc" && m.mountpoint == "/proc"))
        .map(|m| format!("{} ({} {})", m.mountpoint, m.fstype, m.source))
        .collect();
    let mut why = Vec::new();
    if !others.is_empty() {
        why.push(format!("mounts cryo has not: {}", others.join(", ")));
    }
    if procs > 1 {
        why.push(format!("{procs} extra proc mounts on /proc"));
    }
    if !left.is_empty() {
        let missing: Vec<String> = left
            .iter()
            .map(|k| format!("{} ({} {})", k.0, k.3, k.4))
            .collect();
        why.push(format!("mounts of cryo missing: {}", missing.join(", ")));
    }
    if why.is_empty() {
        Ok(procs == 1)
    } else {
        Err(why.join("; "))
    }
}

/// What dump found out about the tree's namespaces.
#[derive(Debug, Default)]
pub struct TreeNs {
    /// `CLONE_NEW*` flags for the root (0: the tree shares cryo's namespaces).
    pub clone_flags: u64,
    pub mount_proc: bool,
    /// Pid in cryo's namespace → pid in the tree's, for every process, thread and
    /// zombie.
    vpids: HashMap<i32, i32>,
    /// Process (cryo's pid) → its (group, session) in the tree's pid namespace, from
    /// `NSpgid`/`NSsid` (CLONE_NEWPID only; a dead leader's pid is known that way).
    groups: HashMap<i32, (i32, i32)>,
    /// Every group and session id of the tree, in the tree's namespace → in cryo's
    /// (CLONE_NEWPID only): the pids of dead leaders, which helpers take at restore.
    leaders: HashMap<i32, i32>,
    /// Namespaces of every process (by pid in cryo's namespace).
    ids: HashMap<i32, NsIds>,
    root_ids: NsIds,
    uts: Option<UtsnsEntry>,
    ipc: Option<IpcVarEntry>,
    /// The SysV objects of the tree's own ipc namespace.
    ipc_objs: Option<crate::ipc::Objects>,
}

/// Runs `f` in a short-lived thread that has joined namespace `kind` of `pid` (uts and
/// ipc can be joined by one thread of a process; cryo's other threads stay where they
/// are). The thread ends with `f`, and its namespaces with it.
pub(crate) fn in_ns_of<T: Send>(
    pid: i32,
    kind: &str,
    flag: CloneFlags,
    f: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
    let path = format!("/proc/{pid}/ns/{kind}");
    let fd = std::fs::File::open(&path).map_err(|e| Error::proc_io(pid, &path, e))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(&fd, flag).map_err(Error::sys("setns", pid))?;
            f()
        })
        .join()
        .unwrap_or_else(|_| {
            Err(Error::Trace {
                pid,
                what: format!("the helper thread in the {kind} namespace panicked"),
            })
        })
    })
}

fn read_sysctl(path: &str) -> Result<String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(Error::io("read", path))
}

fn sysctl_u64(path: &str) -> Result<u64> {
    let s = read_sysctl(path)?;
    // The *_next_id knobs read -1 when unset: kept as u32::MAX (CRIU does the same).
    s.parse::<u64>()
        .or_else(|_| s.parse::<i64>().map(|v| v as u64))
        .map_err(|_| Error::Parse {
            path: path.into(),
            msg: format!("not a number: {s:?}"),
        })
}

/// The IPC namespace sysctls as seen by the calling thread.
fn dump_ipc_vars() -> Result<IpcVarEntry> {
    let k = |n: &str| sysctl_u64(&format!("/proc/sys/kernel/{n}"));
    let mq = |n: &str| sysctl_u64(&format!("/proc/sys/fs/mqueue/{n}"));
    let sem: Vec<u32> = read_sysctl("/proc/sys/kernel/sem")?
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let v = IpcVarEntry {
        sem_ctls: sem,
        msg_ctlmax: k("msgmax")? as u32,
        msg_ctlmnb: k("msgmnb")? as u32,
        msg_ctlmni: k("msgmni")? as u32,
        auto_msgmni: k("auto_msgmni").unwrap_or(0) as u32,
        shm_ctlmax: k("shmmax")?,
        shm_ctlall: k("shmall")?,
        shm_ctlmni: k("shmmni")? as u32,
        shm_rmid_forced: k("shm_rmid_forced")? as u32,
        mq_queues_max: mq("queues_max")? as u32,
        mq_msg_max: mq("msg_max")? as u32,
        mq_msgsize_max: mq("msgsize_max")? as u32,
        mq_msg_default: mq("msg_default").ok().map(|v| v as u32),
        mq_msgsize_default: mq("msgsize_default").ok().map(|v| v as u32),
        msg_next_id: k("msg_next_id").ok().map(|v| v as u32),
        sem_next_id: k("sem_next_id").ok().map(|v| v as u32),
        shm_next_id: k("shm_next_id").ok().map(|v| v as u32),
    };
    Ok(v)
}

/// Checks and records the namespaces of a frozen tree: `tree` lists each process (pid
/// in cryo's namespace, root first) with its threads, `zombies` the zombies of the tree
/// (also by pid in cryo's namespace). Every unsupported arrangement is returned as a
/// blocker line (naming the task, the namespace and why), to be reported with the
/// tree's other blockers.
pub fn dump_tree(tree: &[(i32, Vec<i32>)], zombies: &[i32]) -> Result<(TreeNs, Vec<String>)> {
    let root = tree
        .first()
        .map(|t| t.0)
        .ok_or(Error::NoProcess { pid: 0 })?;
    let t0 = std::time::Instant::now();
    let mine = NsIds::read("/proc/self", 0)?;
    let my_levels = parse_nspid(&std::fs::read_to_string("/proc/self/status").unwrap_or_default())
        .map_or(1, |v| v.len());
    let root_ids = NsIds::read(&format!("/proc/{root}"), root)?;
    let mut problems: Vec<(i32, String)> = Vec::new();
    let mut ns = TreeNs {
        root_ids,
        ..Default::default()
    };

    // Every task shares the root's namespaces.
    for (pid, tids) in tree {
        for &tid in tids {
            let ids = NsIds::read(&format!("/proc/{pid}/task/{tid}"), *pid)?;
            if tid == *pid {
                ns.ids.insert(*pid, ids);
            }
            for ((kind, have), (_, want)) in ids.kinds().iter().zip(root_ids.kinds()) {
                if *have != want {
                    problems.push((
                        tid,
                        format!(
                            "{kind} namespace [{have}] is not the root's [{want}] (the tasks of a tree must share their namespaces)"
                        ),
                    ));
                }
            }
        }
    }
    for (kind, id) in [
        ("pid_for_children", root_ids.pid_for_children),
        ("time_for_children", root_ids.time_for_children),
    ] {
        let of = if kind.starts_with("pid") {
            root_ids.pid
        } else {
            root_ids.time
        };
        if id != of {
            problems.push((
                root,
                format!("{kind} namespace [{id}] differs from its own (nested namespaces are not supported)"),
            ));
        }
    }

    // The root's namespaces against cryo's.
    for (kind, have, want) in [
        ("net", root_ids.net, mine.net),
        ("user", root_ids.user, mine.user),
        ("cgroup", root_ids.cgroup, mine.cgroup),
        ("time", root_ids.time, mine.time),
    ] {
        if have != want {
            problems.push((
                root,
                format!(
                    "{kind} namespace [{have}] is not cryo's [{want}] (cryo restores only pid, uts, ipc and mount namespaces)"
                ),
            ));
        }
    }
    let nspid = |pid: i32, tid: i32| -> Result<Vec<i32>> {
        let st = proc::read(pid, &format!("task/{tid}/status"))?;
        parse_nspid(&st).ok_or_else(|| Error::Parse {
            path: "status".into(),
            msg: "no NSpid line".into(),
        })
    };
    if root_ids.pid != mine.pid {
        let levels = nspid(root, root)?;
        if levels.len() != my_levels + 1 {
            problems.push((
                root,
                format!(
                    "pid namespace [{}] is {} levels below cryo's (only a pid namespace that is a child of cryo's is supported)",
                    root_ids.pid,
                    levels.len().saturating_sub(my_levels)
                ),
            ));
        } else if levels.last() != Some(&1) {
            problems.push((
                root,
                format!(
                    "pid namespace [{}]: the root is pid {} there, not its init (dump the process that is pid 1 in it)",
                    root_ids.pid,
                    levels.last().copied().unwrap_or(0)
                ),
            ));
        }
        ns.clone_flags |= CLONE_NEWPID;
    }
    for (pid, tids) in tree {
        for &tid in tids {
            let v = if ns.clone_flags & CLONE_NEWPID != 0 {
                nspid(*pid, tid)?.last().copied().unwrap_or(0)
            } else {
                tid
            };
            ns.vpids.insert(tid, v);
        }
    }
    if ns.clone_flags & CLONE_NEWPID != 0 {
        // A zombie still has its pids, group and session (/proc/PID/status works).
        for &z in zombies {
            let st = proc::read(z, "status")?;
            let v = parse_nspid(&st)
                .and_then(|l| l.last().copied())
                .ok_or_else(|| Error::Parse {
                    path: format!("/proc/{z}/status"),
                    msg: "no NSpid line".into(),
                })?;
            ns.vpids.insert(z, v);
        }
        // Groups and sessions as the tree's namespace numbers them: the last level of
        // NSpgid/NSsid (0 when the id is not visible there, i.e. outside the
        // namespace); the first level is the id in cryo's namespace.
        for pid in tree.iter().map(|t| t.0).chain(zombies.iter().copied()) {
            let st = proc::read(pid, "status")?;
            let mut inner = [0i32; 2];
            for (i, (what, key)) in [("process group", "NSpgid:"), ("session", "NSsid:")]
                .into_iter()
                .enumerate()
            {
                match parse_ns_line(&st, key) {
                    Some(l) if l.len() >= 2 && l.last().is_some_and(|&v| v > 0) => {
                        let v = l[l.len() - 1];
                        inner[i] = v;
                        ns.leaders.insert(v, l[0]);
                    }
                    l => problems.push((
                        pid,
                        format!(
                            "pid namespace: its {what} {} is outside the namespace (a tree in its own pid namespace must have its own sessions)",
                            l.and_then(|l| l.first().copied()).unwrap_or(0)
                        ),
                    )),
                }
            }
            ns.groups.insert(pid, (inner[0], inner[1]));
        }
    }
    if root_ids.uts != mine.uts {
        ns.clone_flags |= CLONE_NEWUTS;
        let u = in_ns_of(root, "uts", CloneFlags::CLONE_NEWUTS, || {
            nix::sys::utsname::uname().map_err(Error::sys("uname", root))
        })?;
        ns.uts = Some(UtsnsEntry {
            nodename: u.nodename().to_string_lossy().into_owned(),
            domainname: u.domainname().to_string_lossy().into_owned(),
        });
    }
    if root_ids.ipc != mine.ipc {
        ns.clone_flags |= CLONE_NEWIPC;
        // The sysctls first: the objects' reading must not move the *_next_id knobs.
        let (v, objs) = in_ns_of(root, "ipc", CloneFlags::CLONE_NEWIPC, || {
            let v = dump_ipc_vars()?;
            let o = crate::ipc::dump_objects(v.msg_ctlmax.max(8192) as usize)?;
            Ok((v, o))
        })?;
        ns.ipc = Some(v);
        ns.ipc_objs = Some(objs);
    }
    if root_ids.mnt != mine.mnt {
        ns.clone_flags |= CLONE_NEWNS;
        let task = parse_mountinfo(&proc::read(root, "mountinfo")?)?;
        let own = parse_mountinfo(
            &std::fs::read_to_string("/proc/self/mountinfo")
                .map_err(Error::io("read", "/proc/self/mountinfo"))?,
        )?;
        match compare_mounts(&task, &own) {
            Ok(p) => ns.mount_proc = p,
            Err(why) => problems.push((
                root,
                format!(
                    "mnt namespace [{}] differs from cryo's beyond a proc on /proc: {why}",
                    root_ids.mnt
                ),
            )),
        }
    }
    log::info!(pid = root, clone_flags = ns.clone_flags, mount_proc = ns.mount_proc, problems = problems.len(), us = t0.elapsed().as_micros() as u64; "namespaces recorded");
    let problems = problems
        .into_iter()
        .map(|(p, w)| format!("pid {p} namespaces: {w}"))
        .collect();
    Ok((ns, problems))
}

impl TreeNs {
    /// `pid` (cryo's namespace) as the tree's pid namespace names it; 0 for a process
    /// outside a tree that has its own pid namespace (the root's parent).
    pub fn vpid(&self, pid: i32) -> i32 {
        match self.vpids.get(&pid) {
            Some(&v) => v,
            None if self.clone_flags & CLONE_NEWPID == 0 => pid,
            None => 0,
        }
    }

    /// The (group, session) of process `pid` (cryo's namespace), whose `/proc/PID/stat`
    /// says `pgid`, `sid`, in the tree's pid namespace.
    pub fn pgid_sid(&self, pid: i32, pgid: i32, sid: i32) -> (i32, i32) {
        match self.groups.get(&pid) {
            Some(&g) => g,
            None => (self.vpid(pgid), self.vpid(sid)),
        }
    }

    /// Whether pid `p` of the tree's namespace is held by a process (looked up by its
    /// pid in cryo's namespace, when known: a leader's pid).
    pub fn alive(&self, p: i32) -> bool {
        if self.clone_flags & CLONE_NEWPID == 0 {
            return proc::exists(p);
        }
        self.leaders
            .get(&p)
            .copied()
            .or_else(|| self.vpids.iter().find(|(_, &v)| v == p).map(|(&o, _)| o))
            .is_some_and(proc::exists)
    }

    /// Whether the tree has a pid namespace of its own (its root is pid 1 there).
    pub fn own_pidns(&self) -> bool {
        self.clone_flags & CLONE_NEWPID != 0
    }

    /// SysV segments of the tree's own ipc namespace (id → (key, size)); `None` when
    /// the tree shares cryo's ipc namespace.
    pub fn ipc_segments(&self) -> Option<HashMap<u32, (u32, u64)>> {
        self.ipc_objs.as_ref().map(|o| o.segments())
    }

    /// Fills the namespace ids of process `pid` into its kobj ids.
    pub fn fill_ids(&self, pid: i32, k: &mut TaskKobjIdsEntry) {
        let ids = self.ids.get(&pid).copied().unwrap_or(self.root_ids);
        k.pid_ns_id = Some(ids.pid);
        k.net_ns_id = Some(ids.net);
        k.ipc_ns_id = Some(ids.ipc);
        k.uts_ns_id = Some(ids.uts);
        k.mnt_ns_id = Some(ids.mnt);
        k.user_ns_id = Some(ids.user);
        k.cgroup_ns_id = Some(ids.cgroup);
        k.time_ns_id = Some(ids.time);
    }

    /// Writes `cryo-ns.img` and CRIU's images of the namespaces the tree has of its own
    /// (`utsns-ID.img`, `ipcns-var-ID.img`, ID = the namespace's inode number).
    pub fn write(&self, dir: &ImageDir) -> Result<()> {
        if let Some(u) = &self.uts {
            dir.write_one(&format!("utsns-{}.img", self.root_ids.uts), image::UTSNS, u)?;
        }
        if let Some(v) = &self.ipc {
            dir.write_one(
                &format!("ipcns-var-{}.img", self.root_ids.ipc),
                image::IPC_VAR,
                v,
            )?;
        }
        if let Some(o) = &self.ipc_objs {
            o.write(dir, self.root_ids.ipc)?;
        }
        let mut pids: Vec<NsPidEntry> = if self.clone_flags & CLONE_NEWPID != 0 {
            self.vpids
                .iter()
                .map(|(&outer, &pid)| NsPidEntry {
                    pid: pid as u32,
                    outer_pid: outer as u32,
                })
                .collect()
        } else {
            Vec::new()
        };
        // The pids of dead group and session leaders too: the helpers that hold them
        // during the restore take both (cryo-ns.img written by an older cryo has
        // none: the kernel then picks the outer pid).
        if self.clone_flags & CLONE_NEWPID != 0 {
            for (&pid, &outer) in &self.leaders {
                if outer > 0 && !pids.iter().any(|p| p.pid == pid as u32) {
                    pids.push(NsPidEntry {
                        pid: pid as u32,
                        outer_pid: outer as u32,
                    });
                }
            }
        }
        pids.sort_by_key(|p| p.pid);
        let mut w = dir.writer(NS_IMAGE, image::CRYO_NS)?;
        w.entry(&CryoHeadEntry {
            format_version: CRYO_FORMAT_VERSION,
            cryo_version: Some(env!("CARGO_PKG_VERSION").into()),
        })?;
        w.entry(&NsTreeEntry {
            clone_flags: self.clone_flags,
            mount_proc: Some(self.mount_proc),
            pids,
        })?;
        w.finish()?;
        Ok(())
    }
}

/// What the root does in its new namespaces before anything else (restore child).
#[derive(Debug, Clone, Default)]
pub struct ChildNs {
    pub new_mnt: bool,
    pub mount_proc: bool,
    pub hostname: Option<Vec<u8>>,
    pub domainname: Option<Vec<u8>>,
    /// IPC sysctls to write: (path, value).
    pub ipc_vars: Vec<(String, String)>,
}

/// The namespaces a restore creates, and the pids of the tree in the restorer's.
#[derive(Debug, Default)]
pub struct RestoreNs {
    pub clone_flags: u64,
    /// Pid in the tree's pid namespace → pid in the restorer's (CLONE_NEWPID only).
    outer: HashMap<u32, i32>,
    pub child: ChildNs,
    /// SysV objects to create in the new ipc namespace.
    pub ipc: Option<crate::ipc::Restore>,
}

fn invalid(dir: &ImageDir, name: &str, msg: impl Into<String>) -> Error {
    ImageError::Invalid {
        path: dir.file(name),
        msg: msg.into(),
    }
    .into()
}

fn ipc_var_writes(v: &IpcVarEntry) -> Vec<(String, String)> {
    let k = |n: &str| format!("/proc/sys/kernel/{n}");
    let mq = |n: &str| format!("/proc/sys/fs/mqueue/{n}");
    let mut w = Vec::new();
    if v.sem_ctls.len() == 4 {
        let s: Vec<String> = v.sem_ctls.iter().map(|x| x.to_string()).collect();
        w.push((k("sem"), s.join(" ")));
    }
    w.push((k("msgmax"), v.msg_ctlmax.to_string()));
    w.push((k("msgmnb"), v.msg_ctlmnb.to_string()));
    w.push((k("msgmni"), v.msg_ctlmni.to_string()));
    w.push((k("shmmax"), v.shm_ctlmax.to_string()));
    w.push((k("shmall"), v.shm_ctlall.to_string()));
    w.push((k("shmmni"), v.shm_ctlmni.to_string()));
    w.push((k("shm_rmid_forced"), v.shm_rmid_forced.to_string()));
    w.push((mq("queues_max"), v.mq_queues_max.to_string()));
    w.push((mq("msg_max"), v.mq_msg_max.to_string()));
    w.push((mq("msgsize_max"), v.mq_msgsize_max.to_string()));
    if let Some(x) = v.mq_msg_default {
        w.push((mq("msg_default"), x.to_string()));
    }
    if let Some(x) = v.mq_msgsize_default {
        w.push((mq("msgsize_default"), x.to_string()));
    }
    // -1 (unset) is the default of a new namespace.
    for (n, x) in [
        ("msg_next_id", v.msg_next_id),
        ("sem_next_id", v.sem_next_id),
        ("shm_next_id", v.shm_next_id),
    ] {
        if let Some(x) = x.filter(|&x| x != u32::MAX) {
            w.push((k(n), x.to_string()));
        }
    }
    w
}

/// Reads `cryo-ns.img` (absent: the tree shares the caller's namespaces) and the
/// namespace images it refers to; checks that every task of `tree` has its pids.
pub fn load(dir: &ImageDir, tree: &[&PstreeEntry]) -> Result<RestoreNs> {
    if !dir.file(NS_IMAGE).exists() {
        return Ok(RestoreNs::default());
    }
    let mut r = dir.reader(NS_IMAGE, image::CRYO_NS)?;
    let head: CryoHeadEntry = r
        .next_entry()?
        .ok_or_else(|| invalid(dir, NS_IMAGE, "empty"))?;
    if head.format_version > CRYO_FORMAT_VERSION {
        return Err(invalid(
            dir,
            NS_IMAGE,
            format!(
                "written by a newer cryo (format {}); this cryo reads format {CRYO_FORMAT_VERSION}",
                head.format_version
            ),
        ));
    }
    let e: NsTreeEntry = r
        .next_entry()?
        .ok_or_else(|| invalid(dir, NS_IMAGE, "no namespace record"))?;
    if e.clone_flags & !SUPPORTED != 0 {
        return Err(invalid(
            dir,
            NS_IMAGE,
            format!("unsupported namespace flags {:#x}", e.clone_flags),
        ));
    }
    let mut ns = RestoreNs {
        clone_flags: e.clone_flags,
        ..Default::default()
    };
    let root = tree
        .first()
        .ok_or_else(|| invalid(dir, "pstree.img", "no process"))?;
    if e.clone_flags & CLONE_NEWPID != 0 {
        if root.pid != 1 {
            return Err(invalid(
                dir,
                NS_IMAGE,
                format!("a new pid namespace, but the root is pid {}", root.pid),
            ));
        }
        for p in &e.pids {
            if p.outer_pid == 0 || p.outer_pid > i32::MAX as u32 {
                return Err(invalid(dir, NS_IMAGE, format!("bad pid {}", p.outer_pid)));
            }
            ns.outer.insert(p.pid, p.outer_pid as i32);
        }
        for t in tree {
            for p in std::iter::once(t.pid).chain(t.threads.iter().copied()) {
                if !ns.outer.contains_key(&p) {
                    return Err(invalid(dir, NS_IMAGE, format!("no outer pid for task {p}")));
                }
            }
        }
    }
    let ids = || -> Result<TaskKobjIdsEntry> {
        Ok(dir.read_one(&format!("ids-{}.img", root.pid), image::IDS)?)
    };
    if e.clone_flags & CLONE_NEWUTS != 0 {
        let id = ids()?.uts_ns_id.unwrap_or(0);
        let u: UtsnsEntry = dir.read_one(&format!("utsns-{id}.img"), image::UTSNS)?;
        ns.child.hostname = Some(u.nodename.into_bytes());
        ns.child.domainname = Some(u.domainname.into_bytes());
    }
    if e.clone_flags & CLONE_NEWIPC != 0 {
        let id = ids()?.ipc_ns_id.unwrap_or(0);
        let v: IpcVarEntry = dir.read_one(&format!("ipcns-var-{id}.img"), image::IPC_VAR)?;
        ns.child.ipc_vars = ipc_var_writes(&v);
        let next = vec![
            ("shm", v.shm_next_id.unwrap_or(u32::MAX)),
            ("sem", v.sem_next_id.unwrap_or(u32::MAX)),
            ("msg", v.msg_next_id.unwrap_or(u32::MAX)),
        ];
        ns.ipc = Some(crate::ipc::load(dir, id, next)?);
    }
    ns.child.new_mnt = e.clone_flags & CLONE_NEWNS != 0;
    ns.child.mount_proc = ns.child.new_mnt && e.mount_proc == Some(true);
    Ok(ns)
}

impl RestoreNs {
    /// Whether the tree gets a pid namespace of its own.
    pub fn own_pidns(&self) -> bool {
        self.clone_flags & CLONE_NEWPID != 0
    }

    /// Task `pid` (as pstree.img names it) in the restorer's pid namespace, if known:
    /// in a new pid namespace, a helper's outer pid may be left to the kernel.
    pub fn host_pid(&self, pid: u32) -> Option<i32> {
        if self.own_pidns() {
            self.outer.get(&pid).copied()
        } else {
            Some(pid as i32)
        }
    }

    /// Task `pid` (as pstree.img names it) in the restorer's pid namespace.
    pub fn outer(&self, pid: u32) -> i32 {
        self.outer.get(&pid).copied().unwrap_or(pid as i32)
    }

    /// The `set_tid` array that creates task `pid`: innermost namespace first.
    pub fn set_tid(&self, pid: u32) -> Vec<i32> {
        match self.outer.get(&pid) {
            Some(&o) => vec![pid as i32, o],
            None => vec![pid as i32],
        }
    }
}

/// Runs in the restored root right after `clone3` created it in its new namespaces:
/// private mount tree and a fresh proc on /proc (the new pid namespace's), hostname,
/// domain name and IPC sysctls. Returns what failed.
pub fn enter(c: &ChildNs) -> std::result::Result<(), (&'static str, Errno)> {
    use nix::mount::{mount, MsFlags};
    if c.new_mnt {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| ("mount(/, MS_REC|MS_PRIVATE)", e))?;
    }
    if c.mount_proc {
        mount(
            Some("proc"),
            "/proc",
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(|e| ("mount proc on /proc", e))?;
    }
    if let Some(h) = &c.hostname {
        nix::unistd::sethostname(std::ffi::OsStr::from_bytes(h)).map_err(|e| ("sethostname", e))?;
    }
    if let Some(d) = &c.domainname {
        sysproc::set_domainname(d).map_err(|e| ("setdomainname", e))?;
    }
    for (path, v) in &c.ipc_vars {
        std::fs::write(path, v).map_err(|e| {
            (
                "write of an IPC sysctl",
                Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ns_links_and_nspid() {
        assert_eq!(parse_ns_link("uts:[4026531838]"), Some(4026531838));
        assert_eq!(parse_ns_link("pid_for_children:[7]"), Some(7));
        assert_eq!(parse_ns_link("garbage"), None);
        let st = "Name:\tx\nNSpid:\t4242\t1\nNSpgid:\t4242\t1\n";
        assert_eq!(parse_nspid(st), Some(vec![4242, 1]));
        assert_eq!(parse_nspid("Name: x\n"), None);
    }

    const HOST: &str = "22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw
30 25 0:27 / /dev/shm rw,relatime - tmpfs tmpfs rw
";

    #[test]
    fn mount_proc_is_the_only_allowed_difference() {
        let mine = parse_mountinfo(HOST).unwrap();
        let same = "46 45 254:0 / / rw,relatime - ext4 /dev/vda rw
48 46 0:21 / /proc rw,relatime - proc proc rw
62 61 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw
63 62 0:27 / /dev/shm rw,relatime - tmpfs tmpfs rw
";
        assert_eq!(
            compare_mounts(&parse_mountinfo(same).unwrap(), &mine),
            Ok(false)
        );
        let with_proc =
            format!("{same}67 48 0:41 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw\n");
        assert_eq!(
            compare_mounts(&parse_mountinfo(&with_proc).unwrap(), &mine),
            Ok(true)
        );
        let extra = format!("{same}70 46 0:50 / /mnt rw - tmpfs none rw\n");
        let e = compare_mounts(&parse_mountinfo(&extra).unwrap(), &mine).unwrap_err();
        assert!(e.contains("/mnt"), "{e}");
        let missing = "46 45 254:0 / / rw,relatime - ext4 /dev/vda rw\n";
        let e = compare_mounts(&parse_mountinfo(missing).unwrap(), &mine).unwrap_err();
        assert!(e.contains("missing") && e.contains("/dev/shm"), "{e}");
        let shared = "46 45 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n";
        assert!(compare_mounts(&parse_mountinfo(shared).unwrap(), &mine).is_err());
        assert!(parse_mountinfo("1 2 3\n").is_err());
    }

    #[test]
    fn ipc_sysctls_skip_unset_next_ids() {
        let v = IpcVarEntry {
            sem_ctls: vec![250, 32000, 32, 128],
            msg_ctlmax: 12345,
            msg_next_id: Some(u32::MAX),
            shm_next_id: Some(7),
            ..Default::default()
        };
        let w = ipc_var_writes(&v);
        assert!(w.contains(&("/proc/sys/kernel/sem".into(), "250 32000 32 128".into())));
        assert!(w.contains(&("/proc/sys/kernel/msgmax".into(), "12345".into())));
        assert!(w.contains(&("/proc/sys/kernel/shm_next_id".into(), "7".into())));
        assert!(!w.iter().any(|(p, _)| p.ends_with("msg_next_id")));
    }
}
