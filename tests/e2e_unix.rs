//! End-to-end: unix sockets (issue 4), checked by the `unixsk` workload.

mod common;
use common::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::time::Duration;

/// Stream, datagram and seqpacket sockets; socketpairs (one shared with a child);
/// names by path and abstract; a listener with 2 connections not yet accepted; data
/// queued both ways; SCM_RIGHTS in flight; shutdown, closed peer, unlinked name.
#[test]
fn unix_sockets_come_back() {
    let env = Env::new("unixsk");
    let pid = env.start("unixsk", &["--tmpdir", env.dir.to_str().unwrap()]);
    env.cycle(pid);
}

/// Reading the queues for the dump consumes nothing: the target, left running, still
/// finds every byte, message and descriptor (and its peek offsets as they were).
#[test]
fn unix_dump_leaves_queues_in_place() {
    let env = Env::new("unixsk-leave");
    let pid = env.start("unixsk", &["--tmpdir", env.dir.to_str().unwrap()]);
    env.dump(pid, &["--leave-running"]);
    env.verify(pid);
}

/// The images decode with CRIU's crit (files.img with unix_sk_entry, sk-queues.img).
#[test]
fn unix_images_decode_with_crit() {
    if std::process::Command::new("crit")
        .arg("--help")
        .output()
        .is_err()
    {
        eprintln!("crit not installed; skipping");
        return;
    }
    let env = Env::new("unixsk-crit");
    let pid = env.start("unixsk", &["--tmpdir", env.dir.to_str().unwrap()]);
    env.dump(pid, &["--leave-running"]);
    for img in ["files.img", "sk-queues.img"] {
        let p = env.images().join(img);
        let text = crit_decode(&p);
        let want = if img == "files.img" { "usk" } else { "id_for" };
        assert!(text.contains(want), "{img}: {text}");
    }
    env.verify(pid);
}

/// Waits for a workload already told to verify itself; asserts PASS.
fn wait_pass(env: &Env, pid: nix::unistd::Pid) {
    let st = nix::sys::wait::waitpid(pid, None).expect("wait for workload");
    let out = std::fs::read_to_string(env.path("out")).unwrap_or_default();
    let stderr = std::fs::read_to_string(env.path("stderr")).unwrap_or_default();
    assert_eq!(
        out.trim(),
        "PASS",
        "verdict {out:?} ({st:?}); stderr: {stderr}"
    );
}

/// A workload connected to a listener held by this test (outside the dumped tree).
fn start_ext(env: &Env) -> (nix::unistd::Pid, UnixListener, std::path::PathBuf) {
    let sock = env.path("ext.sock");
    let l = UnixListener::bind(&sock).unwrap();
    let pid = env.start("unixsk", &["--ext", sock.to_str().unwrap()]);
    (pid, l, sock)
}

/// A peer outside the tree: refused by default, naming the pid, the fd and both
/// sockets; the target keeps running untouched.
#[test]
fn unix_external_peer_is_refused() {
    let env = Env::new("unixsk-ext-refused");
    let (pid, l, sock) = start_ext(&env);
    let (mut conn, _) = l.accept().unwrap();
    let err = env.dump_fails(pid, &[]);
    assert!(err.contains(&format!("pid {pid} fd 3 (socket:[")), "{err}");
    assert!(err.contains("outside the dumped tree"), "{err}");
    assert!(err.contains(sock.to_str().unwrap()), "{err}");
    assert!(err.contains("--ext-unix-sk"), "{err}");
    let st = state(pid).expect("target gone after a refused dump");
    assert!(!matches!(st, 'T' | 't' | 'Z'), "target left in state {st}");
    assert_eq!(tracer(pid), Some(0), "target still traced");
    // Still talking to its peer.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut buf = [0u8; 5];
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping\n");
    conn.write_all(b"pong\n").unwrap();
    wait_pass(&env, pid);
}

/// With --ext-unix-sk the sockets are kept and reconnect by name on restore: a stream
/// socket to a listener and a datagram socket to a bound socket, both held by this test,
/// which accepts the new connection and talks over both.
#[test]
fn unix_external_peer_with_flag() {
    let env = Env::new("unixsk-ext");
    let dg_path = env.path("extdg.sock");
    let dg = std::os::unix::net::UnixDatagram::bind(&dg_path).unwrap();
    let sock = env.path("ext.sock");
    let l = UnixListener::bind(&sock).unwrap();
    let pid = env.start(
        "unixsk",
        &[
            "--ext",
            sock.to_str().unwrap(),
            "--extdg",
            dg_path.to_str().unwrap(),
        ],
    );
    let (old, _) = l.accept().unwrap();
    env.dump(pid, &["--ext-unix-sk"]);
    drop(old);
    env.restore(pid, &["--ext-unix-sk"]);
    l.set_nonblocking(true).unwrap();
    let t = std::time::Instant::now();
    let mut conn = loop {
        match l.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(t.elapsed() < Duration::from_secs(5), "no reconnection");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut buf = [0u8; 5];
    conn.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping\n");
    conn.write_all(b"pong\n").unwrap();
    dg.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut d = [0u8; 16];
    let n = dg.recv(&mut d).unwrap();
    assert_eq!(&d[..n], b"dgping");
    wait_pass(&env, pid);
}

/// A restore that fails leaves no socket file behind (neither when a later step fails
/// nor when a socket cannot be bound), never removes a file that is not a socket, and
/// a later restore works.
#[test]
fn unix_failed_restore_leaves_no_socket_files() {
    let env = Env::new("unixsk-fail");
    let pid = env.start("unixsk", &["--tmpdir", env.dir.to_str().unwrap()]);
    env.dump(pid, &[]);
    let listen = env.path("listen.sock");
    let sender = env.path("sender.sock");
    let restore = |fault: &str| {
        std::process::Command::new(cryo())
            .args(["restore", "-d", "-D", env.images().to_str().unwrap()])
            .env("CRYO_FAULT", fault)
            .output()
            .unwrap()
    };
    for point in ["restore-mid-mm", "restore-before-regs"] {
        let out = restore(point);
        assert!(!out.status.success(), "{point}: restore succeeded");
        assert!(state(pid).is_none(), "{point}: pid {pid} left behind");
        assert!(
            !listen.exists(),
            "{point}: {} left behind",
            listen.display()
        );
        assert!(
            !sender.exists(),
            "{point}: {} left behind",
            sender.display()
        );
    }
    // A regular file where a socket must be bound: a clear error, and nothing else.
    std::fs::write(&sender, b"not a socket").unwrap();
    let out = restore("");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "restore over a regular file succeeded"
    );
    assert!(
        err.contains("sender.sock exists and is not a socket"),
        "{err}"
    );
    assert!(state(pid).is_none(), "pid {pid} left behind");
    assert!(!listen.exists(), "{} left behind", listen.display());
    assert_eq!(std::fs::read(&sender).unwrap(), b"not a socket");
    std::fs::remove_file(&sender).unwrap();
    env.restore(pid, &[]);
    env.verify(pid);
}
