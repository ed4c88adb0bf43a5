//! End-to-end: SysV IPC objects of a tree's own ipc namespace (shared memory segments
//! attached at their addresses and shared across processes, semaphores, message
//! queues) and POSIX message queues come back with their ids, keys, contents and
//! messages; the `sysvipc` workload checks all of it. A segment of the host's ipc
//! namespace attached by the tree is refused, naming pid and key.

mod common;
use common::*;
use nix::unistd::Pid;
use std::process::Command;
use std::time::Duration;

/// Kills the workload (and its child) if a test fails; the ipc namespace goes with them.
struct Cleanup(Pid);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGKILL);
            reap_zombies();
        }
    }
}

/// `unshare --ipc sysvipc --out --ready ARGS` in a new session.
fn start(env: &Env, args: &[&str]) -> Pid {
    let mut cmd = Command::new("unshare");
    cmd.arg("--ipc")
        .arg(workload_bin("sysvipc"))
        .arg("--out")
        .arg(env.path("out"))
        .arg("--ready")
        .arg(env.path("ready"))
        .args(args);
    let pid = env.spawn(cmd, true);
    wait_for(&env.path("ready"), Duration::from_secs(60));
    pid
}

fn crit_decode(env: &Env, name: &str) -> Option<String> {
    let o = Command::new("crit")
        .args(["decode", "--pretty", "-i"])
        .arg(env.images().join(name))
        .output()
        .ok()?;
    assert!(
        o.status.success(),
        "crit cannot decode {name}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Some(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn image_named(env: &Env, prefix: &str) -> String {
    let names: Vec<String> = std::fs::read_dir(env.images())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names
        .iter()
        .find(|n| n.starts_with(prefix))
        .cloned()
        .unwrap_or_else(|| panic!("no {prefix}*.img in {names:?}"))
}

#[test]
fn sysv_objects_round_trip() {
    let env = Env::new("sysvipc");
    let pid = start(&env, &[]);
    let _c = Cleanup(pid);
    env.dump(pid, &[]);
    // CRIU's images, decodable by crit: 3 segments, 1 set of 3, 1 queue of 5.
    if let Some(j) = crit_decode(&env, &image_named(&env, "ipcns-shm-")) {
        assert_eq!(j.matches("\"size\"").count(), 3, "{j}");
    }
    if let Some(j) = crit_decode(&env, &image_named(&env, "ipcns-sem-")) {
        assert!(j.contains("\"nsems\": 3") && j.contains("42"), "{j}");
    }
    if let Some(j) = crit_decode(&env, &image_named(&env, "ipcns-msg-")) {
        assert!(
            j.contains("\"qnum\": 5") && j.contains("\"mtype\": 9"),
            "{j}"
        );
    }
    if let Some(j) = crit_decode(&env, &format!("mm-{pid}.img")) {
        assert!(j.contains("VMA_AREA_SYSVIPC"), "{j}");
    }
    env.restore(pid, &[]);
    env.verify(pid);
}

/// SysV objects and a POSIX queue (priorities, O_NONBLOCK, a second O_WRONLY fd);
/// the restored tree dumps and restores again.
#[test]
fn sysv_and_posix_mqueue_two_cycles() {
    let env = Env::new("sysvipc-mq");
    let pid = start(&env, &["--mq", "1"]);
    let _c = Cleanup(pid);
    env.dump(pid, &[]);
    env.restore(pid, &[]);
    env.dump(pid, &[]);
    env.restore(pid, &[]);
    env.verify(pid);
}

/// Dumped with --leave-running, the workload still passes its own checks: nothing was
/// consumed from the queues (SysV MSG_COPY; POSIX messages put back in order).
#[test]
fn dump_leaves_ipc_state_intact() {
    let env = Env::new("sysvipc-leave");
    let pid = start(&env, &["--mq", "1"]);
    let _c = Cleanup(pid);
    env.dump(pid, &["--leave-running"]);
    env.verify(pid);
}

/// A tree that shares cryo's ipc namespace and attaches a segment there is refused:
/// the error names the pid, the key and the way out; the target runs on untouched.
#[test]
fn host_namespace_segment_is_refused() {
    let env = Env::new("sysvipc-host");
    let pid = env.start("sysvipc", &["--host", "1"]);
    struct Rm;
    impl Drop for Rm {
        fn drop(&mut self) {
            // The workload removes its segment on SIGTERM; if the test failed first,
            // remove it here (key 0xc71000ff) so nothing is left in the host.
            let _ = Command::new("ipcrm").args(["-M", "0xc71000ff"]).output();
        }
    }
    let _rm = Rm;
    let _c = Cleanup(pid);
    let err = env.dump_fails(pid, &[]);
    assert!(
        err.contains(&format!("pid {pid}"))
            && err.contains("0xc71000ff")
            && err.contains("unshare --ipc"),
        "{err}"
    );
    assert!(!env.images().join("inventory.img").exists());
    assert_eq!(tracer(pid), Some(0), "still traced");
    env.verify(pid);
}

/// The same objects in a tree that also has its own pid namespace (the root is pid 1,
/// as under `unshare --fork --pid --mount-proc --ipc`).
#[test]
fn sysv_objects_in_pid_namespace() {
    let env = Env::new("sysvipc-pidns");
    let mut cmd = Command::new("unshare");
    // setsid: pid 1 of the namespace leads its own session, as cryo requires.
    cmd.args([
        "--fork",
        "--kill-child",
        "--pid",
        "--mount-proc",
        "--ipc",
        "setsid",
    ])
    .arg(workload_bin("sysvipc"))
    .arg("--out")
    .arg(env.path("out"))
    .arg("--ready")
    .arg(env.path("ready"))
    .args(["--mq", "1"]);
    let unshare = env.spawn(cmd, true);
    wait_for(&env.path("ready"), Duration::from_secs(60));
    let kids = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
        .unwrap_or_default();
    let pid = Pid::from_raw(kids.split_whitespace().next().unwrap().parse().unwrap());
    let _c = Cleanup(pid);
    dump_unshared(&env, unshare, pid);
    env.restore(pid, &[]);
    env.verify(pid);
}
