//! End-to-end: real workloads, real ptrace, dump → kill → restore → self-verification.

mod common;
use common::*;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn memory_pattern_64m() {
    let env = Env::new("mem");
    let pid = env.start(
        "mem",
        &["--mib", "64", "--tmpdir", env.dir.to_str().unwrap()],
    );
    env.cycle(pid);
}

#[test]
fn fpu_avx_registers() {
    let env = Env::new("fpu");
    let pid = env.start("fpu", &[]);
    std::thread::sleep(Duration::from_millis(100));
    env.cycle(pid);
}

#[test]
fn file_offsets_and_flags() {
    let env = Env::new("files");
    let pid = env.start("files", &["--tmpdir", env.dir.to_str().unwrap()]);
    env.cycle(pid);
}

#[test]
fn signals_handlers_mask_pending_altstack() {
    let env = Env::new("signals");
    let pid = env.start("signals", &[]);
    env.cycle(pid);
}

#[test]
fn counter_keeps_counting() {
    let env = Env::new("counter");
    let file = env.path("count.txt");
    let pid = env.start("counter", &["--file", file.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(300));
    env.dump(pid, &[]);
    std::thread::sleep(Duration::from_millis(200));
    env.restore(pid, &[]);
    std::thread::sleep(Duration::from_millis(300));
    env.verify(pid);
}

#[test]
fn blocked_in_nanosleep_pause_poll_futex() {
    for mode in ["nanosleep", "pause", "poll", "futex", "pipe"] {
        let env = Env::new(mode);
        let pid = env.start("sleeper", &["--mode", mode]);
        std::thread::sleep(Duration::from_millis(100));
        env.cycle(pid);
    }
}

/// Repeated checkpoints of the same process: the restored process dumps again.
#[test]
fn dump_restore_twice() {
    let env = Env::new("twice");
    let pid = env.start(
        "mem",
        &["--mib", "8", "--tmpdir", env.dir.to_str().unwrap()],
    );
    env.dump(pid, &[]);
    env.restore(pid, &[]);
    std::fs::remove_dir_all(env.images()).unwrap();
    env.dump(pid, &[]);
    env.restore(pid, &[]);
    env.verify(pid);
}

#[test]
fn leave_running_keeps_original_and_image_restores() {
    let env = Env::new("leave");
    let pid = env.start(
        "mem",
        &["--mib", "16", "--tmpdir", env.dir.to_str().unwrap()],
    );
    env.dump(pid, &["--leave-running"]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(tracer(pid), Some(0), "original still traced");
    assert!(
        matches!(state(pid), Some('S' | 'R')),
        "original not running: {:?}",
        state(pid)
    );
    // The image must not restore over a live process: clear error naming the holder.
    let out = run_cryo(
        &["restore", "-d", "-D", env.images().to_str().unwrap()],
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by") && err.contains("mem"), "{err}");
    // The original verifies itself, then the image restores into the freed PID.
    env.verify(pid);
    env.restore(pid, &[]);
    env.verify(pid);
}

/// `sleep`, a program nobody here wrote: restored mid-sleep, it still sleeps its full
/// time (nanosleep returns EINTR with the remaining time, and sleep carries on).
#[test]
fn real_program_sleep() {
    let env = Env::new("sleep");
    let t0 = Instant::now();
    let mut cmd = Command::new("sleep");
    cmd.arg("3");
    let pid = env.spawn(cmd, true);
    wait_exec(pid, "sleep");
    std::thread::sleep(Duration::from_millis(500));
    env.dump(pid, &[]);
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"));
    assert!(exe.is_err());
    env.restore(pid, &[]);
    assert!(std::fs::read_link(format!("/proc/{pid}/exe"))
        .unwrap()
        .ends_with("sleep"));
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert_eq!(cmdline, b"sleep\x003\x00");
    match waitpid(pid, None).unwrap() {
        WaitStatus::Exited(_, 0) => {}
        other => panic!("sleep ended with {other:?}"),
    }
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(2900),
        "sleep returned early: {took:?}"
    );
}

/// python3 holding a 200 MiB dict, verified by the interpreter after restore.
#[test]
fn real_program_python_bigdict() {
    let env = Env::new("python");
    let pid = env.start("bigdict.py", &["--mib", "200"]);
    env.cycle(pid);
}

/// A process that is not a session leader needs --shell-job on both sides.
#[test]
fn shell_job() {
    let env = Env::new("shelljob");
    let pid = env.start_opts(
        "counter",
        &["--file", env.path("c.txt").to_str().unwrap()],
        false,
    );
    assert!(env.dump_fails(pid, &[]).contains("--shell-job"));
    assert_eq!(tracer(pid), Some(0));
    env.dump(pid, &["--shell-job"]);
    env.restore(pid, &["--shell-job"]);
    env.verify(pid);
}

/// A dump that fails at any step leaves the target running, untraced and intact.
#[test]
fn dump_fault_injection_leaves_target_running() {
    for point in [
        "dump-after-seize",
        "dump-mid-memory",
        "dump-before-pagemap",
        "dump-before-write",
    ] {
        let env = Env::new(point);
        let pid = env.start(
            "mem",
            &["--mib", "8", "--tmpdir", env.dir.to_str().unwrap()],
        );
        let out = Command::new(cryo())
            .args([
                "dump",
                "-t",
                &pid.to_string(),
                "-D",
                env.images().to_str().unwrap(),
            ])
            .env("CRYO_FAULT", point)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{point}: dump succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(point) && err.contains("log:"),
            "{point}: {err}"
        );
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(tracer(pid), Some(0), "{point}: still traced");
        assert!(
            matches!(state(pid), Some('S' | 'R')),
            "{point}: state {:?}",
            state(pid)
        );
        env.verify(pid);
    }
}

/// A restore that fails at any step leaves no process behind; a retry then works.
#[test]
fn restore_fault_injection_leaves_nothing() {
    let env = Env::new("rstfault");
    let pid = env.start(
        "mem",
        &["--mib", "8", "--tmpdir", env.dir.to_str().unwrap()],
    );
    env.dump(pid, &[]);
    for point in [
        "restore-before-fork",
        "restore-mid-mm",
        "restore-after-pages",
        "restore-before-regs",
    ] {
        let out = Command::new(cryo())
            .args(["restore", "-d", "-D", env.images().to_str().unwrap()])
            .env("CRYO_FAULT", point)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{point}: restore succeeded");
        assert!(
            state(pid).is_none(),
            "{point}: pid {pid} left in state {:?}",
            state(pid)
        );
    }
    env.restore(pid, &[]);
    env.verify(pid);
}

#[test]
fn restore_without_detach_returns_exit_status() {
    let env = Env::new("wait");
    let mut cmd = Command::new("python3");
    cmd.args(["-c", "import time; time.sleep(3); raise SystemExit(7)"]);
    let pid = env.spawn(cmd, true);
    wait_exec(pid, "python3");
    std::thread::sleep(Duration::from_millis(200));
    env.dump(pid, &[]);
    let out = run_cryo(&["restore", "-D", env.images().to_str().unwrap()], &[]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = kill(Pid::from_raw(pid.as_raw()), Signal::SIGKILL);
}

#[test]
fn threads_eight_with_own_state() {
    let env = Env::new("threads");
    let pid = env.start("threads", &["--threads", "8"]);
    std::thread::sleep(Duration::from_millis(100));
    env.cycle(pid);
}

#[test]
fn threads_hundred() {
    let env = Env::new("threads100");
    let pid = env.start("threads", &["--threads", "100"]);
    env.cycle(pid);
}

/// python3 with several interpreter threads (GIL, condition variables, thread-locals).
#[test]
fn real_program_python_threads() {
    let env = Env::new("pythreads");
    let pid = env.start("pythreads.py", &["--threads", "4"]);
    std::thread::sleep(Duration::from_millis(100));
    env.cycle(pid);
}

/// 50 consecutive dump/restore cycles of the multi-threaded workload: no failure, no
/// leaked process (Env's drop checks), the workload verifies itself at the end.
#[test]
fn soak_fifty_cycles_threads() {
    let env = Env::new("soak");
    let pid = env.start("threads", &["--threads", "8"]);
    for i in 0..50 {
        env.dump(pid, &[]);
        env.restore(pid, &[]);
        std::fs::remove_dir_all(env.images()).unwrap_or_else(|e| panic!("cycle {i}: {e}"));
    }
    env.verify(pid);
}

/// A job on a terminal: its tty fds come back on the terminal cryo restores from
/// (`--shell-job`), like a shell resuming a job, here another pseudo-terminal.
#[test]
fn shell_job_on_a_terminal() {
    use std::os::fd::AsRawFd;
    let env = Env::new("shelljob-tty");
    let first = nix::pty::openpty(None, None).unwrap();
    let second = nix::pty::openpty(None, None).unwrap();
    let tty_name = |fd: &std::os::fd::OwnedFd| {
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap()
    };
    let mut cmd = Command::new(workload_bin("counter"));
    cmd.arg("--out")
        .arg(env.path("out"))
        .arg("--ready")
        .arg(env.path("ready"));
    cmd.arg("--file").arg(env.path("c.txt"));
    let slave = std::fs::File::from(first.slave.try_clone().unwrap());
    cmd.stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave);
    let pid = spawn_with_stdio(cmd);
    wait_for(&env.path("ready"), Duration::from_secs(10));
    env.dump(pid, &["--shell-job"]);
    env.restore_on_tty(std::fs::File::from(second.slave.try_clone().unwrap()));
    let want = tty_name(&second.slave);
    for fd in 0..3 {
        let got = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
        assert_eq!(got, want, "fd {fd} not on the restoring terminal");
    }
    env.verify(pid);
}

/// `head` blocked in read(2) on its terminal: restored onto another terminal, the read
/// restarts there and gets what is typed after the restore.
#[test]
fn real_program_blocked_in_tty_read() {
    use std::io::Write;
    let env = Env::new("ttyread");
    let first = nix::pty::openpty(None, None).unwrap();
    let second = nix::pty::openpty(None, None).unwrap();
    let mut cmd = Command::new("head");
    cmd.args(["-c", "6"]);
    cmd.stdin(std::fs::File::from(first.slave.try_clone().unwrap()));
    cmd.stdout(std::fs::File::create(env.path("head.out")).unwrap());
    cmd.stderr(std::fs::File::from(first.slave.try_clone().unwrap()));
    let pid = spawn_with_stdio(cmd);
    wait_exec(pid, "head");
    std::thread::sleep(Duration::from_millis(200));
    env.dump(pid, &["--shell-job"]);
    env.restore_on_tty(std::fs::File::from(second.slave.try_clone().unwrap()));
    std::thread::sleep(Duration::from_millis(100));
    let mut master = std::fs::File::from(second.master.try_clone().unwrap());
    master.write_all(b"hello\n").unwrap();
    match waitpid(pid, None).unwrap() {
        WaitStatus::Exited(_, 0) => {}
        other => panic!("head ended with {other:?}"),
    }
    assert_eq!(
        std::fs::read_to_string(env.path("head.out")).unwrap(),
        "hello\n"
    );
}

/// Interval timers, through five checkpoints in a row: a CPU-time timer must not drift
/// by the tick setitimer adds on each restore.
#[test]
fn interval_timers() {
    let env = Env::new("timers");
    let pid = env.start("timers", &[]);
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..5 {
        env.dump(pid, &[]);
        env.restore(pid, &[]);
    }
    env.verify(pid);
}

/// A 3-level tree with process groups and copy-on-write memory: every process comes back
/// with its PID, created by its restored parent, and checks itself.
#[test]
fn process_tree_three_levels() {
    let env = Env::new("tree");
    let pid = env.start("tree", &[]);
    env.dump(pid, &[]);
    env.restore(pid, &[]);
    // The inherited stderr is still one open file description across the tree.
    let kids = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let kids: Vec<i32> = kids
        .split_whitespace()
        .map(|k| k.parse().unwrap())
        .collect();
    assert_eq!(kids.len(), 2, "root's children: {kids:?}");
    for k in kids {
        // SAFETY: kcmp takes integers only.
        let same = unsafe { libc::syscall(libc::SYS_kcmp, pid.as_raw(), k, 0, 2, 2) };
        assert_eq!(same, 0, "stderr of {k} is not shared with its parent {pid}");
    }
    env.verify(pid);
}

/// bash running a loop that forks `sleep` children: bash and its current child come back,
/// and the loop goes on forking new children afterwards.
#[test]
fn real_program_bash_loop_with_child() {
    let env = Env::new("bash");
    let counter = env.path("n");
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(format!(
        "i=0; while true; do i=$((i+1)); echo $i > {}; sleep 0.3; done",
        counter.display()
    ));
    let pid = env.spawn(cmd, true);
    wait_exec(pid, "bash");
    std::thread::sleep(Duration::from_millis(500));
    // bash rewrites the file (truncate, then write): retry a read that falls between.
    let count = || -> u32 {
        for _ in 0..100 {
            if let Ok(n) = std::fs::read_to_string(&counter)
                .unwrap_or_default()
                .trim()
                .parse()
            {
                return n;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("counter file stays empty");
    };
    env.dump(pid, &[]);
    let before = std::fs::read_to_string(&counter)
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0);
    env.restore(pid, &[]);
    std::thread::sleep(Duration::from_millis(1000));
    let after = count();
    assert!(
        after >= before + 2,
        "bash loop did not go on: {before} -> {after}"
    );
    assert!(matches!(state(pid), Some('S' | 'R')));
}

/// A hundred processes: all restored with their PIDs under their parent.
#[test]
fn process_tree_hundred() {
    let env = Env::new("fanout");
    let pid = env.start("fanout", &["--procs", "100"]);
    env.cycle(pid);
}

/// Many objects: 10 processes, each with 200 extra mappings and 50 extra fds.
#[test]
fn process_tree_many_objects() {
    let env = Env::new("objects");
    let pid = env.start("fanout", &["--procs", "10", "--vmas", "200", "--fds", "50"]);
    env.cycle(pid);
}
