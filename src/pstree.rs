//! The process tree beyond plain parent/child: zombies, sessions and process groups
//! whose leader has exited, and orphans adopted by a child subreaper of the tree.
//!
//! Dump: a zombie is recorded as CRIU does (a `pstree_entry` without threads and a core
//! with `task_state = TASK_DEAD` and the wait status from `/proc/PID/stat` field 52).
//!
//! Restore: `plan` turns the `pstree_entry` list into a creation tree. Every task is made
//! by its parent with `clone3(set_tid)`, except where the kernel state cannot be reached
//! that way; then, as CRIU does, a short-lived **helper** task takes the pid of the dead
//! leader:
//! - a group whose leader exited: a helper with the leader's pid, created by the first
//!   member, makes the group (`setpgid(0, 0)`), every member joins it, the helper waits
//!   until all have joined, exits and is reaped by its parent;
//! - a session whose leader exited: a helper with the leader's pid, created by the parent
//!   the session's topmost members were reparented to (a child subreaper), calls
//!   `setsid` and creates those members, which thereby inherit the session; when the
//!   helper exits they are reparented to the subreaper, as they were when dumped.
//!
//! Helpers synchronize with pipes made by the restorer: `ready` (the helper writes one
//! byte per member once its group exists) and `joined` (each member writes one byte once
//! in the group). A zombie runs like a task until it is in its session and group, then
//! exits with its recorded status; its parent waits for that (`waitid(WNOWAIT)`, so it
//! stays a zombie) and discards the SIGCHLD, which the original had already received.
//!
//! In a tree with its own pid namespace, pids here are the namespace's (the root is 1);
//! the namespace's init adopts orphans like a child subreaper (`Task::init`), and the
//! restorer maps the host pids it sees to these (`restore::wait_prepared`).

use crate::error::{Error, Result};
use crate::sys::process as sysproc;
use cryo_proto::criu::{core_entry::March, CoreEntry, PstreeEntry, TaskCoreEntry};
use nix::errno::Errno;
use nix::unistd::Pid;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// `task_state` values of CRIU's core image.
pub const TASK_ALIVE: u32 = 1;
pub const TASK_DEAD: u32 = 2;

// ---------------------------------------------------------------- dump side

/// A zombie found in the tree.
#[derive(Debug, Clone)]
pub struct Zombie {
    pub pstree: PstreeEntry,
    pub core: CoreEntry,
}

/// `Some` if `pid` is a zombie process (its whole thread group has exited): its pstree
/// entry (no threads) and core (TASK_DEAD, wait status, comm).
pub fn zombie(pid: i32) -> Result<Option<Zombie>> {
    let Ok(s) = crate::proc::read(pid, "stat") else {
        return Ok(None);
    };
    let st = crate::proc::parse_stat(&s)?;
    if st.state != 'Z' {
        return Ok(None);
    }
    if st.num_threads > 1 {
        return Err(Error::Unsupported {
            pid,
            what: "a thread group whose leader exited".into(),
            why: "its other threads still run (not supported yet)".into(),
        });
    }
    let exit_code = exit_code_field(&s).ok_or_else(|| Error::Parse {
        path: format!("/proc/{pid}/stat"),
        msg: "no exit_code (field 52)".into(),
    })?;
    Ok(Some(Zombie {
        pstree: PstreeEntry {
            pid: pid as u32,
            ppid: st.ppid as u32,
            pgid: st.pgid as u32,
            sid: st.sid as u32,
            threads: Vec::new(),
        },
        core: CoreEntry {
            mtype: March::X8664 as i32,
            tc: Some(TaskCoreEntry {
                task_state: TASK_DEAD,
                exit_code,
                comm: st.comm,
                ..Default::default()
            }),
            ..Default::default()
        },
    }))
}

/// Field 52 of `/proc/PID/stat`: the wait status of an exited task.
fn exit_code_field(stat: &str) -> Option<u32> {
    let rest: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    rest.get(52 - 3)?.parse::<i64>().ok().map(|v| v as u32)
}

/// Whether a zombie's wait status can be reproduced: a normal exit, or a signal whose
/// default action ends the process.
pub fn status_ok(status: u32) -> bool {
    let sig = (status & 0x7f) as i32;
    if sig == 0 {
        return status >> 16 == 0;
    }
    status >> 8 == 0 && sig_fatal(sig)
}

fn sig_fatal(sig: i32) -> bool {
    !matches!(
        sig,
        libc::SIGCHLD
            | libc::SIGURG
            | libc::SIGWINCH
            | libc::SIGCONT
            | libc::SIGSTOP
            | libc::SIGTSTP
            | libc::SIGTTIN
            | libc::SIGTTOU
            | 0x7f
    ) && (1..=64).contains(&sig)
}

// ---------------------------------------------------------------- planning

/// One task of the image as `plan` sees it.
#[derive(Debug, Clone, Default)]
pub struct Task {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    /// Wait status if the task is a zombie.
    pub zombie: Option<u32>,
    pub subreaper: bool,
    /// Pid 1 of the tree's own pid namespace: orphans inside come to it, as to a child
    /// subreaper, without the flag.
    pub init: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Task,
    Zombie {
        status: u32,
    },
    /// Holds the pid of a dead group (or, `session`, session) leader during the restore.
    Helper {
        session: bool,
    },
}

/// How a node gets into its process group.
#[derive(Debug, Clone, PartialEq)]
pub enum Join {
    /// Keep the inherited group (the caller's group of a shell job).
    Inherit,
    /// Lead its own group (`setpgid(0, 0)`), or its session (`setsid`).
    Own,
    /// Join the group of a task of the tree.
    Tree(i32),
    /// Join the group held by helper node `h`.
    Helper(usize),
}

#[derive(Debug, Clone)]
pub struct Node {
    pub pid: i32,
    pub kind: Kind,
    pub creator: Option<usize>,
    pub setsid: bool,
    pub join: Join,
    /// Helper nodes this node creates before joining its group.
    pub helpers: Vec<usize>,
    /// Task and zombie nodes this node creates after joining its group.
    pub children: Vec<usize>,
    /// Set PR_SET_PDEATHSIG(SIGKILL) while restoring (not for tasks whose creator is a
    /// helper: its exit would kill them).
    pub pdeathsig: bool,
    pub subreaper: bool,
    /// For helpers: how many members join the group before it may exit.
    pub members: usize,
}

/// The creation tree: `nodes[i]` for `i < tasks.len()` is `tasks[i]`; helpers follow.
#[derive(Debug, Clone)]
pub struct Plan {
    pub nodes: Vec<Node>,
}

/// Why a tree cannot be rebuilt: the pid concerned and the reason.
pub type Refusal = (i32, String);

/// Plans the creation of `tasks` (pstree order: parents first, the root first).
/// `alive_outside(pid)` says whether a pid not in the tree is alive (groups and sessions
/// led from outside the tree are only allowed for a shell job's root group/session).
pub fn plan(
    tasks: &[Task],
    shell_job: bool,
    alive_outside: &dyn Fn(i32) -> bool,
) -> std::result::Result<Plan, Refusal> {
    let root = tasks.first().ok_or((0, "empty tree".to_string()))?;
    let idx = |pid: i32| tasks.iter().position(|t| t.pid == pid);
    let mut nodes: Vec<Node> = tasks
        .iter()
        .map(|t| Node {
            pid: t.pid,
            kind: match t.zombie {
                Some(status) => Kind::Zombie { status },
                None => Kind::Task,
            },
            creator: if t.pid == root.pid { None } else { idx(t.ppid) },
            setsid: t.sid == t.pid,
            join: Join::Inherit,
            helpers: Vec::new(),
            children: Vec::new(),
            pdeathsig: true,
            subreaper: t.subreaper,
            members: 0,
        })
        .collect();
    for (i, t) in tasks.iter().enumerate().skip(1) {
        match nodes[i].creator {
            Some(c) if tasks[c].zombie.is_some() => {
                return Err((t.pid, format!("its parent {} is a zombie", t.ppid)))
            }
            Some(_) => {}
            None => return Err((t.pid, format!("its parent {} is not in the tree", t.ppid))),
        }
    }
    if let Some(z) = tasks
        .iter()
        .find(|t| t.zombie.is_some_and(|s| !status_ok(s)))
    {
        return Err((
            z.pid,
            format!("zombie with wait status {:#x}", z.zombie.unwrap_or(0)),
        ));
    }
    if root.zombie.is_some() {
        return Err((root.pid, "the root of the tree is a zombie".into()));
    }

    // Sessions.
    let sid_of = |i: usize| tasks[i].sid;
    let mut helper_of: std::collections::HashMap<i32, usize> = Default::default();
    for (i, t) in tasks.iter().enumerate() {
        if t.sid == t.pid {
            if t.pgid != t.pid {
                return Err((t.pid, format!("session leader in group {}", t.pgid)));
            }
            continue;
        }
        let parent = nodes[i].creator;
        let parent_sid = parent.map(sid_of);
        if i == 0 || parent_sid == Some(t.sid) {
            if i == 0 && !shell_job {
                return Err((t.pid, "the root is not a session leader".into()));
            }
            continue;
        }
        // The parent is in another session: `t` was reparented (or its parent left).
        let s = t.sid;
        if idx(s).is_some() || s == root.sid || alive_outside(s) {
            return Err((
                t.pid,
                format!(
                    "in session {s} while its parent {} is in session {}; cryo recreates that only when the session's leader has exited",
                    t.ppid,
                    parent_sid.unwrap_or(0)
                ),
            ));
        }
        let q = parent.unwrap_or(0);
        if !tasks[q].subreaper && !tasks[q].init {
            return Err((
                t.pid,
                format!(
                    "in session {s} (leader exited) under parent {} of another session that is not a child subreaper",
                    t.ppid
                ),
            ));
        }
        let h = match helper_of.get(&s) {
            Some(&h) => {
                if nodes[h].creator != Some(q) {
                    return Err((
                        t.pid,
                        format!(
                            "members of session {s} (leader exited) were reparented to different processes"
                        ),
                    ));
                }
                h
            }
            None => {
                nodes.push(Node {
                    pid: s,
                    kind: Kind::Helper { session: true },
                    creator: Some(q),
                    setsid: true,
                    join: Join::Own,
                    helpers: Vec::new(),
                    children: Vec::new(),
                    pdeathsig: true,
                    subreaper: false,
                    members: 0,
                });
                helper_of.insert(s, nodes.len() - 1);
                nodes.len() - 1
            }
        };
        nodes[i].creator = Some(h);
        nodes[i].pdeathsig = false;
    }

    // Process groups.
    for (i, t) in tasks.iter().enumerate() {
        let g = t.pgid;
        nodes[i].join = if g == t.pid {
            Join::Own
        } else if let Some(l) = idx(g) {
            if tasks[l].pgid != g {
                return Err((
                    t.pid,
                    format!(
                        "group {g}: its leader {g} is in the tree but in group {}",
                        tasks[l].pgid
                    ),
                ));
            }
            Join::Tree(g)
        } else if let Some(&h) = helper_of.get(&g) {
            nodes[h].members += 1;
            Join::Helper(h)
        } else if alive_outside(g) || g == root.pgid {
            if shell_job && g == root.pgid {
                Join::Inherit
            } else {
                return Err((
                    t.pid,
                    format!("process group {g} belongs to a process outside the dumped tree"),
                ));
            }
        } else {
            // A group whose leader exited: a helper made by its first live member.
            let maker = tasks
                .iter()
                .position(|m| m.pgid == g && m.zombie.is_none())
                .or_else(|| {
                    let c = nodes[i].creator?;
                    (c < tasks.len() && tasks[c].sid == t.sid).then_some(c)
                })
                .ok_or((t.pid, format!("group {g} (leader exited) has only zombies")))?;
            nodes.push(Node {
                pid: g,
                kind: Kind::Helper { session: false },
                creator: Some(maker),
                setsid: false,
                join: Join::Own,
                helpers: Vec::new(),
                children: Vec::new(),
                pdeathsig: true,
                subreaper: false,
                members: 1,
            });
            let h = nodes.len() - 1;
            helper_of.insert(g, h);
            Join::Helper(h)
        };
        if let Join::Helper(h) = nodes[i].join {
            // A group lives in one session: the helper's.
            let hs = if nodes[h].setsid {
                nodes[h].pid
            } else {
                tasks[nodes[h].creator.unwrap_or(0)].sid
            };
            if hs != t.sid {
                return Err((t.pid, format!("group {g} spans sessions")));
            }
        }
    }
    for j in 1..nodes.len() {
        let Some(c) = nodes[j].creator else { continue };
        if matches!(nodes[j].kind, Kind::Helper { .. }) && c < tasks.len() {
            nodes[c].helpers.push(j);
        } else {
            nodes[c].children.push(j);
        }
    }
    Ok(Plan { nodes })
}

/// Refuses at dump time a tree `plan` cannot rebuild (`alive(pid)`: whether a pid not
/// in the tree is held by a process).
pub fn check(tasks: &[Task], shell_job: bool, alive: &dyn Fn(i32) -> bool) -> Result<()> {
    plan(tasks, shell_job, alive).map(drop).map_err(refuse)
}

/// The `plan` refusal as the dump reports it.
pub fn refuse((pid, why): Refusal) -> Error {
    Error::Unsupported {
        pid,
        what: "process tree (sessions, groups, parents)".into(),
        why,
    }
}

// ---------------------------------------------------------------- restore side

/// The plan with the helpers' pipes, shared by every new process (inherited fds).
pub struct Runtime {
    pub plan: Plan,
    /// Per node: (ready read, ready write, joined read, joined write) for helpers.
    pipes: Vec<Option<[RawFd; 4]>>,
    /// Per node: comm to set (zombies).
    comms: Vec<std::ffi::CString>,
    /// Per node: the `clone3` set_tid array (pid in the tree's pid namespace first).
    pub set_tids: Vec<Vec<i32>>,
    /// Per node: an (inherited) fd on the terminal a session leader takes as its
    /// controlling terminal, before it creates anyone (members inherit it at fork).
    pub cttys: Vec<Option<RawFd>>,
}

impl Runtime {
    /// Makes the helpers' pipes; their fds go into `keep` (inherited by the tree).
    pub fn new(plan: Plan, comms: Vec<String>, keep: &mut Vec<OwnedFd>) -> Result<Self> {
        let mut pipes = Vec::with_capacity(plan.nodes.len());
        for n in &plan.nodes {
            if matches!(n.kind, Kind::Helper { .. }) {
                let (rr, rw) = nix::unistd::pipe().map_err(Error::sys("pipe", n.pid))?;
                let (jr, jw) = nix::unistd::pipe().map_err(Error::sys("pipe", n.pid))?;
                let fds = [
                    rr.as_raw_fd(),
                    rw.as_raw_fd(),
                    jr.as_raw_fd(),
                    jw.as_raw_fd(),
                ];
                keep.extend([rr, rw, jr, jw]);
                pipes.push(Some(fds));
            } else {
                pipes.push(None);
            }
        }
        let mut comms: Vec<std::ffi::CString> = comms
            .into_iter()
            .map(|c| std::ffi::CString::new(c).unwrap_or_default())
            .collect();
        comms.resize(plan.nodes.len(), Default::default());
        let set_tids = plan.nodes.iter().map(|n| vec![n.pid]).collect();
        let cttys = vec![None; plan.nodes.len()];
        Ok(Runtime {
            plan,
            pipes,
            comms,
            set_tids,
            cttys,
        })
    }

    /// Pids of every node (tasks, zombies, helpers).
    pub fn pids(&self) -> impl Iterator<Item = i32> + '_ {
        self.plan.nodes.iter().map(|n| n.pid)
    }

    /// How many stops/exits the restorer waits for, and what each exit must look like.
    pub fn expected_exit(&self, pid: i32) -> Option<u32> {
        self.plan
            .nodes
            .iter()
            .find(|n| n.pid == pid)
            .and_then(|n| match n.kind {
                Kind::Zombie { status } => Some(status),
                Kind::Helper { .. } => Some(0),
                Kind::Task => None,
            })
    }

    pub fn live_tasks(&self) -> usize {
        self.plan
            .nodes
            .iter()
            .filter(|n| n.kind == Kind::Task)
            .count()
    }

    /// In a new process (single-threaded, running cryo's code): session, subreaper,
    /// helpers, group, then (zombies exit here) the children; then waits for zombie
    /// children to be dead and reaps helper children. `spawn(i)` creates node `i`.
    pub fn enter(
        &self,
        idx: usize,
        spawn: &mut dyn FnMut(usize) -> nix::Result<()>,
    ) -> std::result::Result<(), (&'static str, Errno)> {
        let n = &self.plan.nodes[idx];
        if n.setsid {
            nix::unistd::setsid().map_err(|e| ("setsid", e))?;
        }
        if let Some(fd) = self.cttys[idx] {
            crate::sys::fd::set_ctty(fd).map_err(|e| ("ioctl(TIOCSCTTY)", e))?;
        }
        if n.subreaper {
            // Before any helper below us exits: orphans must come to us.
            nix::sys::prctl::set_child_subreaper(true)
                .map_err(|e| ("PR_SET_CHILD_SUBREAPER", e))?;
        }
        for &h in &n.helpers {
            spawn(h).map_err(|e| ("clone3(set_tid) of a helper", e))?;
        }
        self.join(idx)?;
        if let Kind::Zombie { status } = n.kind {
            let _ = nix::sys::prctl::set_name(&self.comms[idx]);
            sysproc::die_with_status(status);
        }
        for &c in &n.children {
            spawn(c).map_err(|e| ("clone3(set_tid) of a child", e))?;
        }
        self.settle_children(idx)
    }

    fn join(&self, idx: usize) -> std::result::Result<(), (&'static str, Errno)> {
        let n = &self.plan.nodes[idx];
        match n.join {
            Join::Inherit => {}
            Join::Own => {
                if !n.setsid {
                    nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))
                        .map_err(|e| ("setpgid", e))?;
                }
            }
            Join::Tree(g) => {
                if g != nix::unistd::getpgrp().as_raw() {
                    nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(g))
                        .map_err(|e| ("setpgid", e))?;
                }
            }
            Join::Helper(h) => {
                let [rr, _, _, jw] = self.pipes[h].unwrap_or([-1; 4]);
                let mut b = [0u8; 1];
                if sysproc::read_raw(rr, &mut b) != 1 {
                    return Err(("read(helper ready)", Errno::last()));
                }
                let g = self.plan.nodes[h].pid;
                if g != nix::unistd::getpgrp().as_raw() {
                    nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(g))
                        .map_err(|e| ("setpgid(helper's group)", e))?;
                }
                if sysproc::write_raw(jw, b"j") != 1 {
                    return Err(("write(helper joined)", Errno::last()));
                }
            }
        }
        Ok(())
    }

    /// Waits until every zombie child has exited (left unreaped) and reaps the helper
    /// children; then drops the SIGCHLD their exits raised here.
    fn settle_children(&self, idx: usize) -> std::result::Result<(), (&'static str, Errno)> {
        use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag};
        let n = &self.plan.nodes[idx];
        let mut any = false;
        for &c in n.children.iter().chain(&n.helpers) {
            let pid = Pid::from_raw(self.plan.nodes[c].pid);
            match self.plan.nodes[c].kind {
                Kind::Zombie { .. } => {
                    waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
                        .map_err(|e| ("waitid(zombie child)", e))?;
                }
                Kind::Helper { .. } => {
                    waitpid(pid, Some(WaitPidFlag::__WALL)).map_err(|e| ("waitpid(helper)", e))?;
                }
                Kind::Task => continue,
            }
            any = true;
        }
        if any {
            sysproc::discard_pending(libc::SIGCHLD);
        }
        Ok(())
    }

    /// A helper's whole life: make the session or group, let the members in, create
    /// the tasks that must inherit the session, wait until every member joined, exit.
    pub fn helper_main(
        &self,
        idx: usize,
        report: RawFd,
        spawn: &mut dyn FnMut(usize) -> nix::Result<()>,
    ) -> ! {
        let n = &self.plan.nodes[idx];
        let fail = |what: &str, e: Errno| -> ! {
            let m = format!("in helper {}: {what}: {e}", n.pid);
            let _ = sysproc::write_raw(report, m.as_bytes());
            sysproc::exit_now(1)
        };
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
        sysproc::reset_signal_dispositions();
        let r = if n.setsid {
            nix::unistd::setsid().map(drop)
        } else {
            nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))
        };
        if let Err(e) = r {
            fail(if n.setsid { "setsid" } else { "setpgid" }, e);
        }
        let [_, rw, jr, _] = self.pipes[idx].unwrap_or([-1; 4]);
        for _ in 0..n.members {
            if sysproc::write_raw(rw, b"r") != 1 {
                fail("write(ready)", Errno::last());
            }
        }
        for &c in &n.children {
            if let Err(e) = spawn(c) {
                fail("clone3(set_tid) of a child", e);
            }
        }
        let mut b = [0u8; 1];
        for _ in 0..n.members {
            if sysproc::read_raw(jr, &mut b) != 1 {
                fail("read(joined)", Errno::last());
            }
        }
        if let Err((what, e)) = self.settle_children(idx) {
            fail(what, e);
        }
        sysproc::exit_now(0)
    }
}

/// The tasks of an image set as `plan` takes them.
pub fn tasks_of(entries: &[(PstreeEntry, &CoreEntry)]) -> Vec<Task> {
    entries
        .iter()
        .map(|(e, core)| {
            let tc = core.tc.clone().unwrap_or_default();
            Task {
                pid: e.pid as i32,
                ppid: e.ppid as i32,
                pgid: e.pgid as i32,
                sid: e.sid as i32,
                zombie: (tc.task_state == TASK_DEAD).then_some(tc.exit_code),
                subreaper: tc.child_subreaper == Some(true),
                init: false,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(pid: i32, ppid: i32, pgid: i32, sid: i32) -> Task {
        Task {
            pid,
            ppid,
            pgid,
            sid,
            ..Default::default()
        }
    }

    #[test]
    fn plain_tree_has_no_helpers() {
        let p = plan(
            &[t(10, 1, 10, 10), t(11, 10, 10, 10), t(12, 11, 12, 10)],
            false,
            &|_| false,
        )
        .unwrap();
        assert_eq!(p.nodes.len(), 3);
        assert_eq!(p.nodes[0].children, vec![1]);
        assert_eq!(p.nodes[1].join, Join::Tree(10));
        assert_eq!(p.nodes[2].join, Join::Own);
    }

    #[test]
    fn dead_group_leader_gets_a_helper_from_the_first_member() {
        let p = plan(
            &[t(10, 1, 10, 10), t(12, 10, 11, 10), t(13, 10, 11, 10)],
            false,
            &|_| false,
        )
        .unwrap();
        assert_eq!(p.nodes.len(), 4);
        let h = &p.nodes[3];
        assert_eq!((h.pid, h.creator, h.members), (11, Some(1), 2));
        assert_eq!(p.nodes[1].helpers, vec![3]);
        assert_eq!(p.nodes[2].join, Join::Helper(3));
        // Alive outside the tree: refused.
        assert!(plan(&[t(10, 1, 10, 10), t(12, 10, 11, 10)], false, &|p| p == 11).is_err());
    }

    #[test]
    fn orphan_of_a_dead_session_leader_comes_through_a_helper() {
        let mut sub = t(10, 1, 10, 10);
        sub.subreaper = true;
        let tasks = [
            sub.clone(),
            t(12, 10, 11, 11),
            t(13, 12, 11, 11),
            t(14, 10, 14, 11),
        ];
        let p = plan(&tasks, false, &|_| false).unwrap();
        let h = p.nodes.iter().position(|n| n.pid == 11).unwrap();
        assert_eq!(p.nodes[h].kind, Kind::Helper { session: true });
        assert_eq!(p.nodes[h].creator, Some(0));
        assert_eq!(p.nodes[h].children, vec![1, 3]);
        assert_eq!(p.nodes[h].members, 2);
        assert!(!p.nodes[1].pdeathsig);
        assert_eq!(p.nodes[2].creator, Some(1));
        assert_eq!(p.nodes[0].helpers, vec![h]);
        // Not a subreaper: refused.
        let tasks = [t(10, 1, 10, 10), t(12, 10, 11, 11)];
        assert!(plan(&tasks, false, &|_| false).is_err());
        // The session's leader alive in the tree: refused.
        let tasks = [sub, t(11, 10, 11, 11), t(12, 10, 12, 11)];
        assert!(plan(&tasks, false, &|_| false)
            .unwrap_err()
            .1
            .contains("leader has exited"));
    }

    #[test]
    fn init_of_a_pid_namespace_adopts_like_a_subreaper() {
        // Pid 1 (not a subreaper) adopted 4 of session 3 (leader exited); 5 is in
        // group 2 (leader exited); 6 is a zombie.
        let mut init = t(1, 0, 1, 1);
        let mut z = t(6, 1, 1, 1);
        z.zombie = Some(7 << 8);
        let tasks = [init.clone(), t(4, 1, 3, 3), t(5, 1, 2, 1), z];
        assert!(plan(&tasks, false, &|_| false).is_err());
        init.init = true;
        let mut tasks = tasks;
        tasks[0] = init;
        let p = plan(&tasks, false, &|_| false).unwrap();
        let h = |pid| p.nodes.iter().find(|n| n.pid == pid).unwrap();
        assert_eq!(h(3).kind, Kind::Helper { session: true });
        assert_eq!(h(3).creator, Some(0));
        assert_eq!(h(2).kind, Kind::Helper { session: false });
        assert_eq!(h(2).creator, Some(2));
        assert!(!p.nodes[0].subreaper);
    }

    #[test]
    fn zombies() {
        let mut z = t(11, 10, 11, 10);
        z.zombie = Some(42 << 8);
        let p = plan(&[t(10, 1, 10, 10), z.clone()], false, &|_| false).unwrap();
        assert_eq!(p.nodes[1].kind, Kind::Zombie { status: 42 << 8 });
        z.zombie = Some(libc::SIGSTOP as u32);
        assert!(plan(&[t(10, 1, 10, 10), z], false, &|_| false).is_err());
        assert!(status_ok(9) && status_ok(0) && status_ok(255 << 8) && !status_ok(0x137f));
    }

    #[test]
    fn exit_code_is_field_52() {
        let mut s = String::from("5 (a b) Z");
        for i in 4..=52 {
            s.push_str(&format!(" {}", if i == 52 { 2560 } else { 0 }));
        }
        assert_eq!(exit_code_field(&s), Some(2560));
    }
}
