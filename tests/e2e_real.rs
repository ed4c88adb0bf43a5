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

/// A JVM (java, with its dozen threads, JIT code, GC and perf-data mapping) running a
/// counting loop that writes its progress to a file: it goes on counting from where it
/// stopped, and its own check of the sequence passes.
#[test]
fn real_program_java() {
    let Ok(javac) = which("javac") else {
        panic!("javac is not installed");
    };
    let env = Env::new("java");
    let src = env.path("Count.java");
    let out = env.path("count.txt");
    std::fs::write(
        &src,
        r#"
import java.nio.file.*;
public class Count {
    public static void main(String[] a) throws Exception {
        Path p = Paths.get(a[0]);
        long n = 0, sum = 0;
        java.util.HashMap<Long, Long> m = new java.util.HashMap<>();
        while (true) {
            n++; sum += n; m.put(n % 1000, n);
            if (n % 50 == 0) {
                // Each line: n, the sum so far, and whether the invariants still hold.
                boolean ok = sum == n * (n + 1) / 2 && m.get(n % 1000) == n;
                Files.writeString(p, n + " " + sum + " " + ok + "\n");
                Thread.sleep(5);
            }
        }
    }
}
"#,
    )
    .unwrap();
    let st = Command::new(&javac)
        .arg("-d")
        .arg(&env.dir)
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success());
    let mut cmd = Command::new("java");
    cmd.args(["-Xmx64m", "-XX:+UseSerialGC", "-cp"])
        .arg(&env.dir)
        .arg("Count")
        .arg(&out);
    let pid = env.spawn(cmd, true);
    let read = || -> (u64, bool) {
        for _ in 0..200 {
            let s = std::fs::read_to_string(&out).unwrap_or_default();
            let f: Vec<&str> = s.split_whitespace().collect();
            if f.len() == 3 {
                return (f[0].parse().unwrap(), f[2] == "true");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no progress line in {}", out.display());
    };
    let t = Instant::now();
    while read().0 < 500 {
        assert!(t.elapsed() < Duration::from_secs(60), "java does not count");
        std::thread::sleep(Duration::from_millis(50));
    }
    env.dump(pid, &[]);
    let (before, ok) = read();
    assert!(ok);
    env.restore(pid, &[]);
    std::thread::sleep(Duration::from_millis(1000));
    let (after, ok) = read();
    assert!(ok, "the JVM's own invariants failed after restore");
    assert!(
        after > before + 50,
        "java did not go on: {before} -> {after}"
    );
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .ok_or(())
}

/// PostgreSQL: the postmaster and its background processes (shared memory shared by
/// all, a SysV interlock segment in its own ipc namespace, latches on epoll/signalfd,
/// the postmaster-death pipe, unix and TCP listeners), run as the postgres user. After
/// restore a new client reads the rows written before the checkpoint and writes more.
#[test]
fn real_program_postgres() {
    let bin = std::path::Path::new("/usr/lib/postgresql/15/bin");
    if !bin.join("postgres").exists() {
        panic!("PostgreSQL 15 server is not installed (hack/setup.sh installs it)");
    }
    let env = Env::new("postgres");
    let data = env.path("pgdata");
    std::fs::create_dir_all(&data).unwrap();
    let chown = |p: &std::path::Path| {
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(p)
            .status()
            .unwrap()
    };
    assert!(chown(&env.dir).success());
    let st = Command::new("setpriv")
        .args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
        .arg(bin.join("initdb"))
        .args(["-A", "trust", "-U", "postgres", "-D"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let port = (20000 + std::process::id() % 20000).to_string();
    let mut cmd = Command::new("unshare");
    cmd.arg("--ipc")
        .arg("setpriv")
        .args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
        .arg(bin.join("postgres"))
        .arg("-D")
        .arg(&data)
        .arg("-k")
        .arg(&env.dir)
        .args([
            "-p",
            &port,
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "shared_buffers=16MB",
            "-c",
            "logging_collector=off",
        ]);
    cmd.stderr(std::fs::File::create(env.path("pg.log")).unwrap());
    let pid = env.spawn(cmd, true);
    let psql = |sql: &str| -> String {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-At",
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let t = Instant::now();
    while !Command::new("pg_isready")
        .args(["-h", "127.0.0.1", "-p", &port])
        .output()
        .unwrap()
        .status
        .success()
    {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "postgres did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    psql("create table t (k int primary key, v text)");
    psql("insert into t select g, 'v' || g from generate_series(1, 10000) g");
    env.dump(pid, &[]);
    let pstree = std::fs::read(env.images().join("pstree.img")).unwrap();
    let tasks: Vec<cryo_proto::criu::PstreeEntry> =
        cryo::image::decode_all(&pstree, cryo::image::PSTREE).unwrap();
    assert!(tasks.len() >= 5, "{} processes", tasks.len());
    env.restore(pid, &[]);
    assert_eq!(psql("select count(*), sum(k) from t"), "10000|50005000");
    psql("insert into t select g, 'w' || g from generate_series(10001, 20000) g");
    assert_eq!(psql("select count(*) from t"), "20000");
    // Immediate shutdown of the whole tree, then reap it.
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT);
    let _ = nix::sys::wait::waitpid(pid, None);
    reap_children();
}

/// Node.js (V8 and its JIT, libuv's epoll loop, eventfds, worker threads): an HTTP
/// server that counts with a timer answers a new request after restore, its count having
/// gone on from where it stopped.
#[test]
fn real_program_node() {
    let Ok(node) = which("node") else {
        panic!("node is not installed");
    };
    let env = Env::new("node");
    let port = 20000 + std::process::id() % 20000;
    let script = format!(
        r#"
let n = 0;
setInterval(() => {{ n++; }}, 10);
require('http').createServer((q, r) => r.end('count ' + n + '\n')).listen({port}, '127.0.0.1');
"#
    );
    let mut cmd = Command::new(node);
    cmd.arg("-e").arg(script);
    let pid = env.spawn(cmd, true);
    let get = || -> Option<u64> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port as u16)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
        let mut b = String::new();
        s.read_to_string(&mut b).ok()?;
        b.rsplit("count ").next()?.trim().parse().ok()
    };
    let t = Instant::now();
    let before = loop {
        if let Some(n) = get().filter(|&n| n > 20) {
            break n;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "node did not serve");
        std::thread::sleep(Duration::from_millis(50));
    };
    env.dump(pid, &[]);
    env.restore(pid, &[]);
    std::thread::sleep(Duration::from_millis(300));
    let after = get().expect("no answer after restore");
    assert!(
        after > before,
        "the timer did not go on: {before} -> {after}"
    );
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
}

/// python3 multiprocessing: a pool of worker processes fed through pipes, locks and
/// semaphores (POSIX semaphores in unlinked /dev/shm files, mapped shared) and a shared
/// counter in anonymous shared memory: the work goes on after restore and every result
/// is right.
#[test]
fn real_program_python_multiprocessing() {
    let env = Env::new("pymp");
    let (ready, go, result) = (env.path("ready"), env.path("go"), env.path("result"));
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(format!(
        r#"
import multiprocessing as mp, os, time
def init(c):
    global counter
    counter = c
def sq(i):
    with counter.get_lock():
        counter.value += 1
    return i * i
if __name__ == "__main__":
    mp.set_start_method("fork")
    c = mp.Value("i", 0)
    with mp.Pool(3, initializer=init, initargs=(c,)) as p:
        first = p.map(sq, range(1000))
        open("{ready}", "w").close()
        while not os.path.exists("{go}"):
            time.sleep(0.05)
        second = p.map(sq, range(1000, 2000))
    ok = first == [i*i for i in range(1000)] and second == [i*i for i in range(1000, 2000)] and c.value == 2000
    open("{result}", "w").write("PASS" if ok else "FAIL %d" % c.value)
"#,
        ready = ready.display(),
        go = go.display(),
        result = result.display()
    ));
    let pid = env.spawn(cmd, true);
    wait_for(&ready, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(100));
    env.dump(pid, &[]);
    env.restore(pid, &[]);
    std::fs::write(&go, b"").unwrap();
    wait_for(&result, Duration::from_secs(30));
    let status = nix::sys::wait::waitpid(pid, None).unwrap();
    assert_eq!(status, nix::sys::wait::WaitStatus::Exited(pid, 0));
    assert_eq!(std::fs::read_to_string(&result).unwrap(), "PASS");
    reap_children();
}
