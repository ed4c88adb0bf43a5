//! End-to-end: namespaces. A tree in its own pid namespace (started under
//! `unshare --fork --pid --mount-proc --uts --ipc`) is dumped by its host pid and comes
//! back with the same pids inside (root = 1) and outside, its hostname, domain name and
//! IPC sysctls, and a proc of its own on /proc; the `pidns` workload checks all of it.
//! The `nszombie` workload (pid 1 of its namespace) adds zombies, a group whose leader
//! exited and orphans of a dead session leader adopted by pid 1.
//! Trees in namespaces cryo cannot restore are refused, naming task and namespace.

mod common;
use common::*;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::{Duration, Instant};

/// If a test fails, kills the tree's pid-namespace init (which takes the whole
/// namespace with it) and reaps the `unshare` parent, so nothing outlives the test.
/// Declared after the `Env`, it runs before the Env's own cleanup.
struct Cleanup {
    parent: Pid,
    init: Pid,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = nix::sys::signal::kill(self.init, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(self.parent, None);
            reap_zombies();
        }
    }
}

fn ns_ino(kind: &str) -> String {
    std::fs::metadata(format!("/proc/self/ns/{kind}"))
        .unwrap()
        .ino()
        .to_string()
}

/// Starts `unshare UNSHARE_ARGS pidns --out --ready WORKLOAD_ARGS` in a new session and
/// waits for its ready file; returns (the spawned process, the workload's host pid).
fn start_unshared(env: &Env, unshare: &[&str], workload: &[&str]) -> (Pid, Pid, Cleanup) {
    let (uts, ipc) = (ns_ino("uts"), ns_ino("ipc"));
    let mut args = vec!["--host-uts", &uts, "--host-ipc", &ipc];
    args.extend_from_slice(workload);
    start_unshared_bin(env, "pidns", unshare, &args)
}

/// `unshare UNSHARE_ARGS BIN --out --ready WORKLOAD_ARGS`, as `start_unshared`.
/// Starts `unshare UNSHARE BIN --out --ready WORKLOAD`; returns `unshare`'s pid, the
/// workload's (the same without `--fork`) and the guard that removes both on failure.
fn start_unshared_bin(
    env: &Env,
    bin: &str,
    unshare: &[&str],
    workload: &[&str],
) -> (Pid, Pid, Cleanup) {
    let mut cmd = Command::new("unshare");
    cmd.args(unshare)
        .arg(workload_bin(bin))
        .arg("--out")
        .arg(env.path("out"))
        .arg("--ready")
        .arg(env.path("ready"))
        .args(workload);
    let spawned = env.spawn(cmd, true);
    wait_for(&env.path("ready"), Duration::from_secs(60));
    let guard = |init| Cleanup {
        parent: spawned,
        init,
    };
    if !unshare.contains(&"--fork") {
        return (spawned, spawned, guard(spawned));
    }
    // unshare --fork stays outside as the parent of the namespace's pid 1.
    let t = Instant::now();
    loop {
        let kids = std::fs::read_to_string(format!("/proc/{spawned}/task/{spawned}/children"))
            .unwrap_or_default();
        if let Some(p) = kids.split_whitespace().next() {
            let init = Pid::from_raw(p.parse().unwrap());
            return (spawned, init, guard(init));
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no child of unshare");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `NSpid` of every process and thread of the tree under `root`, by host pid.
fn nspids(root: Pid) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    let mut todo = vec![root.as_raw()];
    while let Some(p) = todo.pop() {
        for t in std::fs::read_dir(format!("/proc/{p}/task"))
            .unwrap()
            .flatten()
        {
            let tid = t.file_name().to_string_lossy().into_owned();
            let st = std::fs::read_to_string(t.path().join("status")).unwrap();
            let ns = st.lines().find(|l| l.starts_with("NSpid:")).unwrap();
            out.push((tid.parse().unwrap(), ns.to_string()));
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap();
            todo.extend(kids.split_whitespace().map(|k| k.parse::<i32>().unwrap()));
        }
    }
    out.sort();
    out
}

fn start_pidns(env: &Env) -> (Pid, Pid, Cleanup) {
    start_unshared(
        env,
        &[
            "--fork",
            "--kill-child",
            "--pid",
            "--mount-proc",
            "--uts",
            "--ipc",
        ],
        &["--pid1", "1", "--own-uts", "1", "--own-ipc", "1"],
    )
}

#[test]
fn pid_namespace_tree_keeps_pids_inside_and_out() {
    let env = Env::new("pidns");
    let (unshare, pid, _cleanup) = start_pidns(&env);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("NSpid:") && l.ends_with("\t1")),
        "workload is not pid 1 of its namespace"
    );
    let before = nspids(pid);
    assert_eq!(before.len(), 5, "root + thread, A, A1, B: {before:?}");
    dump_unshared(&env, unshare, pid);
    let tree = Command::new("crit")
        .args(["show"])
        .arg(env.images().join("pstree.img"))
        .output();
    if let Ok(o) = tree {
        // CRIU's convention: pids as seen in the tree's pid namespace.
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("\"pid\": 1,"),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    env.restore(pid, &[]);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("NSpid:") && l.ends_with(&format!("{pid}\t1"))),
        "restored process is not pid 1 of a new namespace: {status}"
    );
    // Every task has its pids back, inside and outside.
    assert_eq!(nspids(pid), before);
    env.verify(pid);
}

/// Restored with `cryo restore` staying the parent (it waits and reports the status).
#[test]
fn pid_namespace_tree_attached_restore() {
    let env = Env::new("pidns-att");
    let (unshare, pid, _cleanup) = start_pidns(&env);
    dump_unshared(&env, unshare, pid);
    let pidfile = env.path("restored.pid");
    let mut restorer = Command::new(cryo())
        .args([
            "restore",
            "-D",
            env.images().to_str().unwrap(),
            "--pidfile",
            pidfile.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !pidfile.exists() {
        if let Ok(Some(st)) = restorer.try_wait() {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(&mut restorer.stderr.take().unwrap(), &mut err);
            panic!("restore failed ({st}): {err}");
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "restore did not finish"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let st = restorer.wait().unwrap();
    let out = std::fs::read_to_string(env.path("out")).unwrap_or_default();
    let stderr = std::fs::read_to_string(env.path("stderr")).unwrap_or_default();
    assert_eq!(out.trim(), "PASS", "verdict {out:?}; stderr: {stderr}");
    assert_eq!(st.code(), Some(0));
}

/// Own uts and ipc namespaces, no pid namespace: hostname, domain name and msgmax come
/// back in new namespaces; crit decodes CRIU's namespace images.
#[test]
fn uts_and_ipc_namespaces_round_trip() {
    let env = Env::new("utsipc");
    let (_, pid, _cleanup) = start_unshared(
        &env,
        &["--uts", "--ipc"],
        &["--own-uts", "1", "--own-ipc", "1"],
    );
    env.dump(pid, &[]);
    let imgs: Vec<String> = std::fs::read_dir(env.images())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for prefix in ["utsns-", "ipcns-var-"] {
        let name = imgs
            .iter()
            .find(|n| n.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix}*.img in {imgs:?}"));
        if let Ok(o) = Command::new("crit")
            .args(["decode", "-i"])
            .arg(env.images().join(name))
            .output()
        {
            assert!(o.status.success(), "crit cannot decode {name}");
            eprintln!("{}", String::from_utf8_lossy(&o.stdout));
            let json = String::from_utf8_lossy(&o.stdout);
            assert!(
                json.contains("cryo-pidns") || json.contains("12345"),
                "{json}"
            );
        }
    }
    env.restore(pid, &[]);
    env.verify(pid);
}

/// A tree in a new net namespace is refused at dump time, naming the task and "net",
/// and keeps running untouched.
#[test]
fn net_namespace_is_refused() {
    let env = Env::new("netns");
    let (_, pid, _cleanup) = start_unshared(&env, &["--net"], &[]);
    let err = env.dump_fails(pid, &[]);
    assert!(
        err.contains(&format!("pid {pid}")) && err.contains("net namespace"),
        "{err}"
    );
    assert!(!env.images().join("inventory.img").exists());
    env.verify(pid);
}

/// A mount namespace with more than a proc on /proc is refused, naming "mnt".
#[test]
fn mount_namespace_with_other_mounts_is_refused() {
    let env = Env::new("mntns");
    let mnt = env.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let bin = workload_bin("pidns");
    let script = format!(
        "mount -t tmpfs cryo-test {} && exec {} --out {} --ready {}",
        mnt.display(),
        bin.display(),
        env.path("out").display(),
        env.path("ready").display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "sh", "-c", &script]);
    let pid = env.spawn(cmd, true);
    let _cleanup = Cleanup {
        parent: pid,
        init: pid,
    };
    wait_for(&env.path("ready"), Duration::from_secs(60));
    let err = env.dump_fails(pid, &[]);
    assert!(
        err.contains(&format!("pid {pid}"))
            && err.contains("mnt namespace")
            && err.contains("tmpfs"),
        "{err}"
    );
    env.verify(pid);
}

/// A restore into new namespaces that fails half-way leaves no task behind (every host
/// pid is free again); a retry then works.
#[test]
fn pid_namespace_failed_restore_leaves_nothing() {
    let env = Env::new("pidns-fault");
    let (unshare, pid, _cleanup) = start_pidns(&env);
    let tasks = nspids(pid);
    dump_unshared(&env, unshare, pid);
    for point in ["restore-mid-mm", "restore-before-regs"] {
        let out = Command::new(cryo())
            .args(["restore", "-d", "-D", env.images().to_str().unwrap()])
            .env("CRYO_FAULT", point)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{point}: restore succeeded");
        for (t, _) in &tasks {
            let t = Pid::from_raw(*t);
            assert!(
                state(t).is_none(),
                "{point}: task {t} left in {:?}",
                state(t)
            );
        }
    }
    env.restore(pid, &[]);
    assert_eq!(nspids(pid), tasks);
    env.verify(pid);
}

/// The root of a dump in a pid namespace must be that namespace's init.
#[test]
fn non_init_of_pid_namespace_is_refused() {
    let env = Env::new("pidns-noinit");
    let bin = workload_bin("pidns");
    let script = format!(
        "setsid {} --out {} --ready {}; true",
        bin.display(),
        env.path("out").display(),
        env.path("ready").display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--fork",
        "--kill-child",
        "--pid",
        "--mount-proc",
        "sh",
        "-c",
        &script,
    ]);
    let unshare = env.spawn(cmd, true);
    wait_for(&env.path("ready"), Duration::from_secs(60));
    // unshare → sh (pid 1 inside) → pidns (pid 2 inside).
    let child = |p: i32| -> i32 {
        std::fs::read_to_string(format!("/proc/{p}/task/{p}/children"))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let init = Pid::from_raw(child(unshare.as_raw()));
    let _cleanup = Cleanup {
        parent: unshare,
        init,
    };
    let pid = Pid::from_raw(child(init.as_raw()));
    let err = env.dump_fails(pid, &[]);
    assert!(
        err.contains(&format!("pid {pid}")) && err.contains("not its init"),
        "{err}"
    );
    assert_eq!(tracer(pid), Some(0), "still traced");
    // The workload ends on SIGTERM; sh, then unshare, follow.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    waitpid(unshare, None).unwrap();
    let out = std::fs::read_to_string(env.path("out")).unwrap_or_default();
    assert_eq!(out.trim(), "PASS");
}

/// The restored tree (in the namespaces cryo made) dumps and restores again.
#[test]
fn pid_namespace_tree_dumped_twice() {
    let env = Env::new("pidns-twice");
    let (unshare, pid, _cleanup) = start_pidns(&env);
    let tasks = nspids(pid);
    dump_unshared(&env, unshare, pid);
    env.restore(pid, &[]);
    std::fs::remove_dir_all(env.images()).unwrap();
    env.dump(pid, &[]);
    env.restore(pid, &[]);
    assert_eq!(nspids(pid), tasks);
    env.verify(pid);
}

/// Every process of the tree under `root`, zombies included, by host pid: whether a
/// zombie, and the NSpid, NSpgid and NSsid lines of its status (host and namespace ids).
fn tree_ids(root: Pid) -> Vec<(i32, char, String)> {
    let mut out = Vec::new();
    let mut todo = vec![root.as_raw()];
    while let Some(p) = todo.pop() {
        let st = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap();
        let ids: Vec<&str> = st
            .lines()
            .filter(|l| {
                l.starts_with("NSpid:") || l.starts_with("NSpgid:") || l.starts_with("NSsid:")
            })
            .collect();
        // Zombie or not ('Z' / 'L'): running or sleeping varies.
        let z = if state(Pid::from_raw(p)) == Some('Z') {
            'Z'
        } else {
            'L'
        };
        out.push((p, z, ids.join(" ")));
        let kids =
            std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
        todo.extend(kids.split_whitespace().map(|k| k.parse::<i32>().unwrap()));
    }
    out.sort();
    out
}

/// The `--pids` file of nszombie: name → pid in the namespace.
fn ns_pids(env: &Env) -> std::collections::HashMap<String, i32> {
    std::fs::read_to_string(env.path("pids"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (n, p) = l.split_once(' ')?;
            Some((n.to_string(), p.parse().ok()?))
        })
        .collect()
}

fn start_nszombie(env: &Env) -> (Pid, Pid, Cleanup) {
    let pids = env.path("pids");
    start_unshared_bin(
        env,
        "nszombie",
        &["--fork", "--kill-child", "--pid", "--mount-proc"],
        &["--pids", pids.to_str().unwrap()],
    )
}

/// The host pid of a process of the tree whose pid in the namespace is `vpid`.
fn host_of(ids: &[(i32, char, String)], vpid: i32) -> i32 {
    ids.iter()
        .find(|(_, _, l)| {
            l.starts_with("NSpid:") && l.split_whitespace().nth(2) == Some(&vpid.to_string())
        })
        .map(|(p, _, _)| *p)
        .unwrap_or_else(|| panic!("no process {vpid} in {ids:?}"))
}

/// Host pid of the group (NSpgid, first level) of process `host`.
fn host_pgid(ids: &[(i32, char, String)], host: i32) -> String {
    let (_, _, l) = ids.iter().find(|(p, _, _)| *p == host).unwrap();
    let f: Vec<&str> = l.split_whitespace().collect();
    let i = f.iter().position(|x| *x == "NSpgid:").unwrap();
    f[i + 1].to_string()
}

/// Zombies (one exited with 42 in its own group, one killed by SIGTERM), a group whose
/// leader exited and orphans of a dead session leader adopted by pid 1, all in the
/// tree's own pid namespace: every process, zombies included, comes back with its pids
/// inside and outside, group and session (the dead leaders' pids held by helpers during
/// the restore, gone after); the workload checks ids, the zombies' wait status and a
/// signal to the helper-made group.
#[test]
fn pid_namespace_zombies_dead_leaders_and_orphans() {
    let env = Env::new("nszombie");
    let (unshare, pid, _cleanup) = start_nszombie(&env);
    let before = tree_ids(pid);
    let names = ns_pids(&env);
    assert_eq!(
        before.len(),
        9,
        "root, Z1, Z2, M1, M1a, M2, G1, GG, G2: {before:?}"
    );
    for z in ["Z1", "Z2"] {
        let h = host_of(&before, names[z]);
        assert_eq!(state(Pid::from_raw(h)), Some('Z'), "{z}");
    }
    // The dead leaders' host pids: the groups of M1 and G1 as the host sees them.
    let dead_l = host_pgid(&before, host_of(&before, names["M1"]));
    let dead_c = host_pgid(&before, host_of(&before, names["G1"]));
    dump_unshared(&env, unshare, pid);
    if let Ok(o) = Command::new("crit")
        .args(["show"])
        .arg(env.images().join("pstree.img"))
        .output()
    {
        let text = String::from_utf8_lossy(&o.stdout);
        for n in ["Z1", "Z2", "G1"] {
            assert!(
                text.contains(&format!("\"pid\": {},", names[n])),
                "{n} not in pstree.img by its pid in the namespace: {text}"
            );
        }
        assert!(
            text.contains(&format!("\"pgid\": {},", names["L"])),
            "{text}"
        );
        assert!(
            text.contains(&format!("\"sid\": {},", names["C"])),
            "{text}"
        );
    }
    env.restore(pid, &[]);
    let after = tree_ids(pid);
    assert_eq!(after, before);
    for p in [&dead_l, &dead_c] {
        assert!(
            !std::path::Path::new(&format!("/proc/{p}")).exists(),
            "helper {p} is still there"
        );
    }
    env.verify(pid);
}

/// An image whose cryo-ns.img has no outer pids for the dead leaders (as written by an
/// older cryo): the helpers get their pids inside the namespace and whatever pid the
/// kernel picks outside; the restore still accounts for their exits.
#[test]
fn pid_namespace_helpers_without_outer_pids() {
    use cryo_proto::cryo::{CryoHeadEntry, NsPidEntry, NsTreeEntry};
    let env = Env::new("nszombie-noouter");
    let (unshare, pid, _cleanup) = start_nszombie(&env);
    let before = tree_ids(pid);
    let names = ns_pids(&env);
    dump_unshared(&env, unshare, pid);
    let dir = cryo::image::ImageDir::open(&env.images()).unwrap();
    let mut r = dir.reader("cryo-ns.img", cryo::image::CRYO_NS).unwrap();
    let head: CryoHeadEntry = r.next_entry().unwrap().unwrap();
    let mut e: NsTreeEntry = r.next_entry().unwrap().unwrap();
    drop(r);
    let n = e.pids.len();
    e.pids
        .retain(|p: &NsPidEntry| p.pid != names["L"] as u32 && p.pid != names["C"] as u32);
    assert_eq!(e.pids.len(), n - 2, "dead leaders recorded: {:?}", e.pids);
    let mut w = dir.writer("cryo-ns.img", cryo::image::CRYO_NS).unwrap();
    w.entry(&head).unwrap();
    w.entry(&e).unwrap();
    w.finish().unwrap();
    env.restore(pid, &[]);
    // The same pids inside; outside, only the groups' and sessions' ids may differ.
    let inner = |v: &[(i32, char, String)]| -> Vec<(i32, char, Vec<String>)> {
        v.iter()
            .map(|(p, s, l)| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let at = |k: &str| f[f.iter().position(|x| *x == k).unwrap() + 2].to_string();
                (*p, *s, vec![at("NSpid:"), at("NSpgid:"), at("NSsid:")])
            })
            .collect()
    };
    assert_eq!(inner(&tree_ids(pid)), inner(&before));
    env.verify(pid);
}

/// A failed restore of that tree leaves no process, zombie or helper behind; a retry
/// then works.
#[test]
fn pid_namespace_zombies_failed_restore_leaves_nothing() {
    let env = Env::new("nszombie-fault");
    let (unshare, pid, _cleanup) = start_nszombie(&env);
    let before = tree_ids(pid);
    let names = ns_pids(&env);
    let mut hosts: Vec<String> = before.iter().map(|(p, _, _)| p.to_string()).collect();
    hosts.push(host_pgid(&before, host_of(&before, names["M1"])));
    hosts.push(host_pgid(&before, host_of(&before, names["G1"])));
    dump_unshared(&env, unshare, pid);
    for point in ["restore-mid-mm", "restore-before-regs"] {
        let out = Command::new(cryo())
            .args(["restore", "-d", "-D", env.images().to_str().unwrap()])
            .env("CRYO_FAULT", point)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{point}: restore succeeded");
        for h in &hosts {
            assert!(
                !std::path::Path::new(&format!("/proc/{h}")).exists(),
                "{point}: pid {h} left behind"
            );
        }
    }
    env.restore(pid, &[]);
    assert_eq!(tree_ids(pid), before);
    env.verify(pid);
}
