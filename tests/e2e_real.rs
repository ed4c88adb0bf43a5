//! End-to-end with real programs nobody here wrote, beyond the ones in e2e.rs.

mod common;
use common::*;
use nix::unistd::Pid;
use std::process::Command;
use std::time::{Duration, Instant};

fn tmux(sock: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("tmux")
        .arg("-S")
        .arg(sock)
        .args(args)
        .env("TERM", "xterm")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tmux {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until the pane shows `want`.
fn pane_shows(sock: &std::path::Path, want: &str) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if tmux(sock, &["capture-pane", "-p"]).contains(want) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// tmux: its server holds a pty master, a bash on the slave (a session leader with the
/// pty as controlling terminal), a listening unix socket and an epoll loop. After
/// restore a new client talks to the server through the socket, and bash, with the
/// variable it was given before the checkpoint, runs the command typed into the pane.
#[test]
fn real_program_tmux() {
    if Command::new("tmux").arg("-V").output().is_err() {
        panic!("tmux is not installed (hack/setup.sh installs it)");
    }
    let env = Env::new("tmux");
    let sock = env.path("tmux.sock");
    // The server daemonizes; as the test is a child subreaper it stays our child.
    tmux(
        &sock,
        &[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            "80",
            "-y",
            "24",
            "env -i PS1='$ ' TERM=xterm bash --norc --noprofile",
        ],
    );
    let server: i32 = tmux(&sock, &["display", "-p", "#{pid}"])
        .trim()
        .parse()
        .unwrap();
    let server = Pid::from_raw(server);
    tmux(&sock, &["send-keys", "X=4242; echo before-$X", "Enter"]);
    assert!(pane_shows(&sock, "before-4242"));
    env.dump(server, &[]);
    // The server and its shell, a pty master, unix sockets: all in the images.
    let pstree = std::fs::read(env.images().join("pstree.img")).unwrap();
    let tasks: Vec<cryo_proto::criu::PstreeEntry> =
        cryo::image::decode_all(&pstree, cryo::image::PSTREE).unwrap();
    assert!(tasks.len() >= 2, "{} processes", tasks.len());
    assert!(env.images().join("tty-info.img").exists());
    let files = std::fs::read(env.images().join("files.img")).unwrap();
    let files: Vec<cryo_proto::criu::FileEntry> =
        cryo::image::decode_all(&files, cryo::image::FILES).unwrap();
    assert!(
        files.iter().any(|f| f.usk.is_some()),
        "no unix socket dumped"
    );
    assert!(
        state(server).is_none(),
        "the server still runs after the dump"
    );
    env.restore(server, &[]);
    tmux(&sock, &["send-keys", "echo after-$X-$((X+1))", "Enter"]);
    assert!(
        pane_shows(&sock, "after-4242-4243"),
        "pane: {}",
        tmux(&sock, &["capture-pane", "-p"])
    );
    // The shell's terminal is still its controlling terminal, in the foreground.
    tmux(
        &sock,
        &["send-keys", "tty; [ -t 0 ] && echo fg-ok", "Enter"],
    );
    assert!(pane_shows(&sock, "fg-ok"));
    tmux(&sock, &["kill-server"]);
    let _ = nix::sys::wait::waitpid(server, None);
}

/// python3's sqlite3 in the middle of a write transaction (a POSIX lock on the database
/// and an open rollback journal): through the checkpoint the lock is still held (another
/// connection finds the database locked), and afterwards the transaction commits.
#[test]
fn real_program_sqlite_transaction() {
    let env = Env::new("sqlite");
    let db = env.path("t.db");
    let (ready, go, done) = (env.path("ready"), env.path("go"), env.path("done"));
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(format!(
        r#"
import os, sqlite3, time
c = sqlite3.connect("{db}", isolation_level=None, timeout=0)
c.execute("create table t (k integer primary key, v text)")
c.execute("begin immediate")
for i in range(1000):
    c.execute("insert into t values (?, ?)", (i, "v%d" % i))
open("{ready}", "w").close()
while not os.path.exists("{go}"):
    time.sleep(0.05)
c.execute("commit")
open("{done}", "w").close()
"#,
        db = db.display(),
        ready = ready.display(),
        go = go.display(),
        done = done.display()
    ));
    let pid = env.spawn(cmd, true);
    wait_for(&ready, Duration::from_secs(20));
    let locked = || -> bool {
        let out = Command::new("sqlite3")
            .arg(&db)
            .arg("begin immediate; rollback;")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).contains("locked")
    };
    assert!(locked(), "the transaction does not hold the lock");
    env.dump(pid, &[]);
    env.restore(pid, &[]);
    assert!(locked(), "the lock was lost in the checkpoint");
    std::fs::write(&go, b"").unwrap();
    wait_for(&done, Duration::from_secs(20));
    let status = nix::sys::wait::waitpid(pid, None).unwrap();
    assert_eq!(status, nix::sys::wait::WaitStatus::Exited(pid, 0));
    let out = Command::new("sqlite3")
        .arg(&db)
        .arg("select count(*), sum(k) from t;")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1000|499500");
}
