//! Test harness: start a workload from test-containers/ as our child (in its own
//! session), checkpoint and restore it with the real `cryo` binary, then let the workload
//! verify itself. The test process is a child subreaper, so restored processes (whose
//! restorer exits) become our children and are reaped here, never left as zombies.

#![allow(dead_code)]

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());
static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn cryo() -> &'static str {
    env!("CARGO_BIN_EXE_cryo")
}

pub fn workload_bin(name: &str) -> PathBuf {
    let p = root().join("test-containers/workloads/bin").join(name);
    assert!(
        p.exists(),
        "{} missing: run `make -C test-containers/workloads`",
        p.display()
    );
    p
}

/// One test's scratch space and serialization (PIDs and subreaping are per process).
pub struct Env {
    pub dir: PathBuf,
    _lock: MutexGuard<'static, ()>,
}

impl Env {
    pub fn new(name: &str) -> Env {
        let lock = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("cryo-test-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Env { dir, _lock: lock }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Starts `cmd` with stdout/stderr to files, in a new session unless `shell_job`.
    pub fn spawn(&self, mut cmd: Command, new_session: bool) -> Pid {
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(self.path("stdout")).unwrap())
            .stderr(std::fs::File::create(self.path("stderr")).unwrap())
            .current_dir(&self.dir);
        // SAFETY: close_range and setsid are async-signal-safe syscalls; nothing else
        // runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Fds leaked into the test runner by its own parent are not the workload's.
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                if new_session {
                    nix::unistd::setsid().map_err(std::io::Error::from)?;
                }
                Ok(())
            });
        }
        // Reaped by PID with waitpid (the restored process is a different kernel task).
        #[allow(clippy::zombie_processes)]
        let child = cmd.spawn().expect("spawn workload");
        Pid::from_raw(child.id() as i32)
    }

    /// Starts a zdtm-style workload and waits for its ready file.
    pub fn start(&self, name: &str, args: &[&str]) -> Pid {
        self.start_opts(name, args, true)
    }

    pub fn start_opts(&self, name: &str, args: &[&str], new_session: bool) -> Pid {
        let mut cmd = if name.ends_with(".py") {
            let mut c = Command::new("python3");
            c.arg(root().join("test-containers/workloads/py").join(name));
            c
        } else {
            Command::new(workload_bin(name))
        };
        cmd.arg("--out")
            .arg(self.path("out"))
            .arg("--ready")
            .arg(self.path("ready"))
            .args(args);
        let pid = self.spawn(cmd, new_session);
        wait_for(&self.path("ready"), Duration::from_secs(60));
        pid
    }

    pub fn images(&self) -> PathBuf {
        self.path("img")
    }

    fn run_dump(&self, pid: Pid, extra: &[&str]) -> Output {
        let pid = pid.to_string();
        run_cryo(
            &["dump", "-t", &pid, "-D", self.images().to_str().unwrap()],
            extra,
        )
    }

    /// `cryo dump`; asserts success and, unless leaving it running, that it is gone.
    pub fn dump(&self, pid: Pid, extra: &[&str]) {
        let out = self.run_dump(pid, extra);
        assert!(
            out.status.success(),
            "dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if !extra.contains(&"--leave-running") && !extra.contains(&"-R") {
            match waitpid(pid, None).expect("reap dumped process") {
                WaitStatus::Signaled(_, Signal::SIGKILL, _) => {}
                other => panic!("dumped process ended unexpectedly: {other:?}"),
            }
            // The rest of a dumped tree was orphaned to us (subreaper): reap it too.
            reap_zombies();
        }
    }

    /// `cryo restore -d`; asserts success and that the process runs with its PID.
    pub fn restore(&self, pid: Pid, extra: &[&str]) {
        let pidfile = self.path("restored.pid");
        let out = run_cryo(
            &[
                "restore",
                "-d",
                "-D",
                self.images().to_str().unwrap(),
                "--pidfile",
                pidfile.to_str().unwrap(),
            ],
            extra,
        );
        assert!(
            out.status.success(),
            "restore failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(got, pid.as_raw(), "restored with another pid");
        let st = state(pid).expect("restored process is gone");
        assert!(
            !matches!(st, 'T' | 't' | 'Z' | 'X'),
            "restored process is in state {st}"
        );
    }

    /// Asks the workload to verify itself (SIGTERM) and returns its verdict.
    pub fn verify(&self, pid: Pid) {
        kill(pid, Signal::SIGTERM).unwrap();
        let st = waitpid(pid, None).expect("wait for workload");
        let out = std::fs::read_to_string(self.path("out")).unwrap_or_default();
        let stderr = std::fs::read_to_string(self.path("stderr")).unwrap_or_default();
        assert_eq!(
            out.trim(),
            "PASS",
            "workload verdict: {out:?} ({st:?}); stderr: {stderr}"
        );
        assert!(
            matches!(st, WaitStatus::Exited(_, 0)),
            "workload exit: {st:?}"
        );
    }

    /// Restore without `-d`: cryo stays the parent and waits, as `criu restore` does;
    /// then SIGTERM and cryo's exit status is the workload's.
    pub fn cycle_attached(&self, pid: Pid) {
        self.dump(pid, &[]);
        let pidfile = self.path("restored.pid");
        let _ = std::fs::remove_file(&pidfile);
        #[allow(clippy::zombie_processes)] // waited for below
        let mut restorer = Command::new(cryo())
            .args([
                "restore",
                "-D",
                self.images().to_str().unwrap(),
                "--pidfile",
                pidfile.to_str().unwrap(),
            ])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while !pidfile.exists() {
            if let Ok(Some(st)) = restorer.try_wait() {
                let mut err = String::new();
                let _ =
                    std::io::Read::read_to_string(&mut restorer.stderr.take().unwrap(), &mut err);
                panic!("restore failed ({st}): {err}");
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "restore did not finish"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        kill(pid, Signal::SIGTERM).unwrap();
        let st = restorer.wait().unwrap();
        let out = std::fs::read_to_string(self.path("out")).unwrap_or_default();
        let stderr = std::fs::read_to_string(self.path("stderr")).unwrap_or_default();
        assert_eq!(
            out.trim(),
            "PASS",
            "workload verdict: {out:?}; stderr: {stderr}"
        );
        assert_eq!(st.code(), Some(0), "cryo restore exit: {st}");
    }

    /// `cryo dump` that must fail; returns its stderr (one line naming the problem).
    pub fn dump_fails(&self, pid: Pid, extra: &[&str]) -> String {
        let out = self.run_dump(pid, extra);
        assert!(!out.status.success(), "dump of {pid} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `cryo restore -d --shell-job` run from the terminal `tty` (its stdin).
    pub fn restore_on_tty(&self, tty: std::fs::File) {
        let out = Command::new(cryo())
            .args([
                "restore",
                "-d",
                "--shell-job",
                "-D",
                self.images().to_str().unwrap(),
            ])
            .stdin(tty)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Full cycle: dump (killing it), restore, verify.
    pub fn cycle(&self, pid: Pid) {
        self.dump(pid, &[]);
        self.restore(pid, &[]);
        self.verify(pid);
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let leaks = stopped_children();
        reap_children();
        if !std::thread::panicking() {
            assert!(
                leaks.is_empty(),
                "stopped or traced processes left behind: {leaks:?}"
            );
        }
        if std::env::var_os("CRYO_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn run_cryo(args: &[&str], extra: &[&str]) -> Output {
    Command::new(cryo())
        .args(args)
        .args(extra)
        .output()
        .expect("run cryo")
}

pub fn wait_for(path: &Path, timeout: Duration) {
    let t = Instant::now();
    while !path.exists() {
        assert!(
            t.elapsed() < timeout,
            "timed out waiting for {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Spawns `cmd` with the stdio it was given and nothing else open; returns its PID.
pub fn spawn_with_stdio(mut cmd: Command) -> Pid {
    // SAFETY: close_range is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    #[allow(clippy::zombie_processes)] // reaped by PID by the test
    let child = cmd.spawn().unwrap();
    Pid::from_raw(child.id() as i32)
}

/// Waits until `pid` has exec'd a program whose path contains `name` and holds only
/// stdio (before exec it still has the spawner's close-on-exec status pipe).
pub fn wait_exec(pid: Pid, name: &str) {
    let t = Instant::now();
    loop {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0);
        if exe.to_string_lossy().contains(name) && fds <= 3 {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "pid {pid} did not exec {name}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The state letter of `/proc/PID/stat`.
pub fn state(pid: Pid) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 1..].trim_start().chars().next()
}

pub fn tracer(pid: Pid) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Our children (including adopted ones) with their state letter.
fn our_children() -> Vec<(i32, char)> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = s.rfind(')') else { continue };
        let f: Vec<&str> = s[close + 1..].split_whitespace().collect();
        if f.len() > 2 && f[1].parse::<i32>().ok() == Some(me) {
            out.push((pid, f[0].chars().next().unwrap_or('?')));
        }
    }
    out
}

/// Our children that are stopped or traced.
pub fn stopped_children() -> Vec<(i32, char)> {
    our_children()
        .into_iter()
        .filter(|(_, st)| matches!(st, 'T' | 't'))
        .collect()
}

/// Reaps our children that have exited (killed members of a dumped tree).
pub fn reap_zombies() {
    let t = Instant::now();
    // A killed process may take a moment to turn into a zombie after its tracer let go.
    while t.elapsed() < Duration::from_millis(200) {
        for (pid, st) in our_children() {
            if st == 'Z' {
                let _ = waitpid(Pid::from_raw(pid), None);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills and reaps every child still around (tests clean up by PID); their own children
/// come to us (subreaper) as they die, so repeat until none is left.
pub fn reap_children() {
    for _ in 0..10 {
        let kids = our_children();
        if kids.is_empty() {
            return;
        }
        for (pid, _) in kids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
        }
    }
}

/// `crit decode --pretty -i PATH`: asserts that crit decodes it and returns the JSON.
pub fn crit_decode(path: &Path) -> String {
    let out = Command::new("crit")
        .args(["decode", "--pretty", "-i"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "crit cannot decode {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `cryo dump` of the namespace's init (not our child): the `unshare` parent is reaped.
pub fn dump_unshared(env: &Env, unshare: Pid, pid: Pid) {
    let out = run_cryo(
        &[
            "dump",
            "-t",
            &pid.to_string(),
            "-D",
            env.images().to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // unshare reports its child's death by dying the same way.
    waitpid(unshare, None).expect("reap unshare");
    reap_zombies();
    assert!(state(pid).is_none(), "dumped process {pid} still exists");
}
