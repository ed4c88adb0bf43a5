//! End-to-end: fd kinds beyond plain files (issue 4), checked by the workloads.

mod common;
use common::*;

/// Pipes (data in flight, one end, capacity, O_NONBLOCK), a FIFO, eventfds, signalfd,
/// timerfds, memfd, a deleted file, a directory, epoll, inotify and a file opened
/// through a symlink, all in one process.
#[test]
fn fd_kinds_come_back() {
    let env = Env::new("fdkinds");
    let pid = env.start("fdkinds", &["--tmpdir", env.dir.to_str().unwrap()]);
    env.cycle(pid);
}

/// Each fd kind on its own (the workload sets up and checks just that kind), so one
/// kind's failure is not hidden behind another's.
#[test]
fn each_fd_kind_alone() {
    for kind in [
        "pipe", "halfpipe", "fifo", "eventfd", "signalfd", "timerfd", "memfd", "ghost", "dir",
        "epoll", "inotify", "symlink",
    ] {
        let env = Env::new(&format!("fdkind-{kind}"));
        let pid = env.start(
            "fdkinds",
            &["--tmpdir", env.dir.to_str().unwrap(), "--only", kind],
        );
        env.cycle(pid);
    }
}

/// A shell pipeline `producer | sort -n | consumer`, checkpointed mid-stream: the
/// consumer (a bash read loop, feeding md5sum) is slow, so sort sits blocked with output
/// in memory and the pipes hold data. After restore the pipeline writes the same output
/// as an uninterrupted run.
#[test]
fn shell_pipeline_mid_stream() {
    let env = Env::new("pipeline");
    let script = |out: &std::path::Path| {
        format!(
            "seq 200000 -1 1 | sort -n | while read l; do echo \"x$l\"; done | md5sum > {}",
            out.display()
        )
    };
    // The uninterrupted run.
    let want_path = env.path("want");
    let st = std::process::Command::new("bash")
        .arg("-c")
        .arg(script(&want_path))
        .status()
        .unwrap();
    assert!(st.success());
    let want = std::fs::read_to_string(&want_path).unwrap();

    let out = env.path("out");
    let mut cmd = std::process::Command::new("bash");
    cmd.arg("-c").arg(script(&out));
    let pid = env.spawn(cmd, true);
    wait_exec(pid, "bash");
    std::thread::sleep(std::time::Duration::from_millis(700));
    env.dump(pid, &[]);
    assert!(
        std::fs::read_to_string(&out).unwrap_or_default().is_empty(),
        "the pipeline finished before the checkpoint: make the producer slower"
    );
    // Mid-stream: the pipes held data when they were frozen, and there were 4 processes.
    assert!(env.images().join("pipes-data.img").exists());
    let pstree = std::fs::read(env.images().join("pstree.img")).unwrap();
    let tasks: Vec<cryo_proto::criu::PstreeEntry> =
        cryo::image::decode_all(&pstree, cryo::image::PSTREE).unwrap();
    assert!(tasks.len() >= 4, "{} processes", tasks.len());
    env.restore(pid, &[]);
    let status = nix::sys::wait::waitpid(pid, None).unwrap();
    assert_eq!(status, nix::sys::wait::WaitStatus::Exited(pid, 0));
    reap_zombies();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), want);
}

/// Everything the dump cannot handle is reported in one error, across the tree (pid and
/// fd of each, and a child's own net namespace), and the tree runs on untouched.
#[test]
fn every_blocker_listed_at_once() {
    let env = Env::new("blockers");
    let ready = env.path("ready");
    let mut cmd = std::process::Command::new("python3");
    cmd.arg("-c").arg(format!(
        r#"
import os, socket, time
nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
os.dup2(nl.fileno(), 20)
pk = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
os.dup2(pk.fileno(), 21)
if os.fork() == 0:
    import ctypes
    assert ctypes.CDLL(None, use_errno=True).unshare(0x40000000) == 0  # CLONE_NEWNET
    nl2 = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0)
    os.dup2(nl2.fileno(), 30)
    open("{ready}.child", "w").close()
    while True: time.sleep(1)
open("{ready}", "w").close()
while True: time.sleep(1)
"#,
        ready = ready.display()
    ));
    let pid = env.spawn(cmd, true);
    wait_for(&ready, std::time::Duration::from_secs(20));
    wait_for(&env.path("ready.child"), std::time::Duration::from_secs(20));
    let err = env.dump_fails(pid, &[]);
    let child = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap()
        .trim()
        .to_string();
    for want in [
        format!("pid {pid} fd 20"),
        format!("pid {pid} fd 21"),
        format!("pid {child} fd 30"),
        format!("pid {child} namespaces: net"),
    ] {
        assert!(err.contains(&want), "{want:?} missing from: {err}");
    }
    // Untouched: running, not traced, and the child too.
    for p in [pid.as_raw(), child.parse().unwrap()] {
        let p = nix::unistd::Pid::from_raw(p);
        assert!(matches!(state(p), Some('S' | 'R')), "{p} is {:?}", state(p));
        assert_eq!(tracer(p), Some(0));
    }
}

/// flock, POSIX record and OFD locks, in a parent and a child, seen from outside after
/// restore with their owners.
#[test]
fn file_locks_come_back() {
    let env = Env::new("locks");
    let pid = env.start("locks", &["--tmpdir", env.dir.to_str().unwrap()]);
    env.cycle(pid);
}

/// A pty whose master and slave are in the tree, with a session on it: same index,
/// termios and window size; the session leader has it as its controlling terminal again
/// with the same foreground group.
#[test]
fn pty_inside_the_tree() {
    let env = Env::new("pty");
    let pid = env.start("pty", &[]);
    env.cycle(pid);
}

/// memfds mapped without an fd left: shared across fork (one object after restore,
/// writes seen both ways) and private (copy-on-write page kept, file bytes behind it);
/// a deleted file mapped shared across fork.
#[test]
fn memfd_and_deleted_file_mappings() {
    let env = Env::new("memfdmap");
    let pid = env.start("memfdmap", &["--tmpdir", env.dir.to_str().unwrap()]);
    env.cycle(pid);
}

/// Ten checkpoints in a row of every fd kind at once, and of the pty and lock
/// workloads: nothing drifts or accumulates from one restore to the next (timer
/// expiries, pty index, recreated deleted files, locks).
#[test]
fn soak_fd_kinds_ten_cycles() {
    for (name, tmp) in [("fdkinds", true), ("pty", false), ("locks", true)] {
        let env = Env::new(&format!("soak-{name}"));
        let dir = env.dir.to_str().unwrap().to_string();
        let args: Vec<&str> = if tmp { vec!["--tmpdir", &dir] } else { vec![] };
        let pid = env.start(name, &args);
        for _ in 0..10 {
            env.dump(pid, &[]);
            env.restore(pid, &[]);
        }
        env.verify(pid);
    }
}
