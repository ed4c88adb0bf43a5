//! Process trees beyond parent/child: zombies, a group whose leader exited, orphans
//! adopted by a child subreaper in their dead parent's session, and MAP_SHARED
//! anonymous memory shared across fork. Each workload verifies itself after restore.

mod common;

use common::*;
use nix::unistd::Pid;

fn children(pid: Pid) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .map(|k| k.parse().unwrap())
        .collect()
}

fn stat_fields(pid: i32) -> Vec<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    s[s.rfind(')').map_or(0, |i| i + 1)..]
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Zombies come back as zombies of the same parent, with the same wait status (exit
/// code 42, SIGKILL, SIGTERM), group and name; nobody reaps them during the restore and
/// the parent gets no second SIGCHLD.
#[test]
fn zombies_keep_their_exit_status() {
    let env = Env::new("zombie");
    let pid = env.start("zombie", &[]);
    let zombies = children(pid);
    assert_eq!(zombies.len(), 3, "zombies: {zombies:?}");
    env.dump(pid, &[]);
    let pstree = std::process::Command::new("crit")
        .args(["decode", "--pretty", "-i"])
        .arg(env.images().join(format!("core-{}.img", zombies[0])))
        .output();
    if let Ok(out) = pstree {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("\"task_state\": 2"), "zombie core: {text}");
    }
    env.restore(pid, &[]);
    for z in &zombies {
        let f = stat_fields(*z);
        assert_eq!(f.first().map(String::as_str), Some("Z"), "{z}: {f:?}");
        assert_eq!(f[1], pid.to_string(), "{z}: parent");
    }
    env.verify(pid);
}

/// A group whose leader exited: restored with a helper holding the leader's pid, which
/// is gone (not even a zombie) once the restore is done.
#[test]
fn group_whose_leader_exited() {
    let env = Env::new("pgrp");
    let pid = env.start("pgrp", &[]);
    let kids = children(pid);
    assert_eq!(kids.len(), 2);
    let group: i32 = stat_fields(kids[0])[2].parse().unwrap();
    assert!(!std::path::Path::new(&format!("/proc/{group}")).exists());
    env.dump(pid, &[]);
    env.restore(pid, &[]);
    assert!(
        !std::path::Path::new(&format!("/proc/{group}")).exists(),
        "the group helper {group} is still there"
    );
    for k in &kids {
        assert_eq!(stat_fields(*k)[2], group.to_string(), "{k}: group");
    }
    env.verify(pid);
}

/// Orphans of a dead session leader, adopted by the root (a child subreaper): restored
/// under a helper with the leader's pid that calls setsid, makes them and exits, so they
/// are adopted again by the subreaper.
#[test]
fn orphans_adopted_by_an_in_tree_subreaper() {
    let env = Env::new("orphan");
    let pid = env.start("orphan", &[]);
    let kids = children(pid);
    assert_eq!(kids.len(), 2, "adopted: {kids:?}");
    let sid = stat_fields(kids[0])[3].clone();
    env.dump(pid, &[]);
    env.restore(pid, &[]);
    assert_eq!(children(pid), kids);
    for k in &kids {
        let f = stat_fields(*k);
        assert_eq!(
            (f[1].as_str(), &f[3]),
            (pid.to_string().as_str(), &sid),
            "{k}"
        );
    }
    assert!(!std::path::Path::new(&format!("/proc/{sid}")).exists());
    env.verify(pid);
}

/// An orphan in a session whose leader is alive elsewhere in the tree cannot be
/// recreated: the dump refuses it, naming the process, and leaves the tree running.
#[test]
fn orphan_in_a_living_session_is_refused() {
    let env = Env::new("orphan-refuse");
    let pid = env.start("orphan", &["--refuse", "1"]);
    let err = env.dump_fails(pid, &[]);
    assert!(
        err.contains("session") && err.contains("leader has exited"),
        "{err}"
    );
    assert!(matches!(state(pid), Some('S' | 'R')));
    env.verify(pid);
}

/// MAP_SHARED|MAP_ANONYMOUS memory shared by a parent and two children: dumped once,
/// restored as one object that all three map (writes after restore are seen across),
/// still "/dev/zero (deleted)".
#[test]
fn shared_anonymous_memory_stays_shared() {
    let env = Env::new("shmem");
    let pid = env.start("shmem", &[]);
    env.dump(pid, &[]);
    let img = env.images();
    let pages: u64 = std::fs::read_dir(&img)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("pages-"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    // 8 MiB shared by three processes, stored once (plus each one's private pages).
    assert!(pages < 12 << 20, "pages images hold {pages} bytes");
    let shm: Vec<_> = std::fs::read_dir(&img)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("pagemap-shmem-")
        })
        .collect();
    assert_eq!(shm.len(), 1, "one shared object");
    if std::path::Path::new("/usr/bin/crit").exists() {
        let out = std::process::Command::new("crit")
            .args(["decode", "-i"])
            .arg(shm[0].path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "crit: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    env.restore(pid, &[]);
    env.verify(pid);
}

/// A restore failing after the tree (zombies, helpers, adopted orphans) exists leaves
/// no process and no zombie behind; a retry then works.
#[test]
fn failed_restore_of_zombies_and_orphans_leaves_nothing() {
    for (name, workload) in [("zombie-fault", "zombie"), ("orphan-fault", "orphan")] {
        let env = Env::new(name);
        let pid = env.start(workload, &[]);
        let mut pids = vec![pid.as_raw()];
        for k in children(pid) {
            pids.push(k);
            pids.extend(children(Pid::from_raw(k)));
            // The dead session leader (the orphans' helper holds its pid).
            pids.push(stat_fields(k)[3].parse().unwrap());
        }
        pids.sort_unstable();
        pids.dedup();
        env.dump(pid, &[]);
        for point in ["restore-mid-mm", "restore-before-regs"] {
            let out = std::process::Command::new(cryo())
                .args(["restore", "-d", "-D", env.images().to_str().unwrap()])
                .env("CRYO_FAULT", point)
                .output()
                .unwrap();
            assert!(
                !out.status.success(),
                "{workload} {point}: restore succeeded"
            );
            for p in &pids {
                assert!(
                    state(Pid::from_raw(*p)).is_none(),
                    "{workload} {point}: pid {p} left in state {:?}",
                    state(Pid::from_raw(*p))
                );
            }
        }
        env.restore(pid, &[]);
        env.verify(pid);
    }
}

/// A process forking short-lived children all the time (some caught running, some as
/// zombies): three checkpoints in a row, each consistent; every child's exit status is
/// checked by the parent, which goes on forking.
#[test]
fn forking_all_the_time() {
    let env = Env::new("forker");
    let pid = env.start("forker", &[]);
    for _ in 0..3 {
        std::thread::sleep(std::time::Duration::from_millis(200));
        env.dump(pid, &[]);
        env.restore(pid, &[]);
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    env.verify(pid);
}
