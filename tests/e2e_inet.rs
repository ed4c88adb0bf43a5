//! End-to-end: TCP and UDP sockets (issue 4): listeners, UDP, established connections
//! with TCP_REPAIR (peer inside the tree, peer outside it), the refusal without
//! `--tcp-established`, `--tcp-close`; half-closed connections (CLOSE_WAIT, FIN_WAIT2,
//! CLOSING) and queued UDP datagrams (workload tcphalf); and real servers: redis and
//! nginx.

mod common;
use common::*;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn ports(env: &Env) -> (u16, u16) {
    let s = std::fs::read_to_string(env.path("info")).unwrap();
    let get = |k: &str| -> u16 {
        s.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .unwrap()
            .parse()
            .unwrap()
    };
    (get("listen="), get("client="))
}

fn start_inetsk(env: &Env, extra: &[&str]) -> Pid {
    let info = env.path("info");
    let mut args = vec!["--info", info.to_str().unwrap()];
    args.extend_from_slice(extra);
    env.start("inetsk", &args)
}

/// Every image crit knows must decode (files.img with the inet entries, tcp-stream).
fn crit_decodes(dir: &Path) {
    if !Path::new("/usr/bin/crit").exists() {
        eprintln!("crit not installed: skipping decode checks");
        return;
    }
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name == "files.img" || name.starts_with("tcp-stream-")) {
            continue;
        }
        let json = crit_decode(&e.path());
        if name == "files.img" {
            assert!(json.contains("INETSK"), "{json}");
        } else {
            assert!(json.contains("inq_seq"), "{json}");
        }
    }
}

/// Listeners (v4, v6), a connected UDP pair and a loopback TCP connection with data
/// queued both ways (part of it never sent): everything comes back, byte-exact.
#[test]
fn tcp_udp_sockets_come_back() {
    let env = Env::new("inetsk");
    let pid = start_inetsk(&env, &[]);
    env.dump(pid, &["--tcp-established"]);
    crit_decodes(&env.images());
    assert!(std::fs::read_dir(env.images())
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("tcp-stream-")));
    env.restore(pid, &["--tcp-established"]);
    env.verify(pid);
}

/// `--leave-running`: the connection leaves repair mode and keeps working in the
/// original; the image restores afterwards too.
#[test]
fn tcp_leave_running_keeps_connection() {
    let env = Env::new("inetsk-leave");
    let pid = start_inetsk(&env, &[]);
    env.dump(pid, &["--tcp-established", "--leave-running"]);
    env.verify(pid);
    env.restore(pid, &["--tcp-established"]);
    env.verify(pid);
}

/// A dump that fails after the connections entered repair mode (memory, writing)
/// leaves repair mode again: the target runs on with its connection working.
#[test]
fn failed_dump_leaves_connection_working() {
    for point in ["dump-mid-memory", "dump-before-write"] {
        let env = Env::new(point);
        let pid = start_inetsk(&env, &[]);
        let out = Command::new(cryo())
            .args(["dump", "-t", &pid.to_string(), "-D"])
            .arg(env.images())
            .arg("--tcp-established")
            .env("CRYO_FAULT", point)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{point}: dump succeeded");
        assert!(String::from_utf8_lossy(&out.stderr).contains(point));
        assert_eq!(tracer(pid), Some(0), "{point}: still traced");
        env.verify(pid);
    }
}

/// Without `--tcp-established` the dump refuses, naming the pid, both fds and the
/// connection's addresses, and the workload runs on untouched.
#[test]
fn established_tcp_refused_without_flag() {
    let env = Env::new("inetsk-refuse");
    let pid = start_inetsk(&env, &[]);
    let (lport, cport) = ports(&env);
    let err = env.dump_fails(pid, &[]);
    for want in [
        format!("pid {pid} fd 14"),
        format!("pid {pid} fd 15"),
        format!("127.0.0.1:{lport}"),
        format!("127.0.0.1:{cport}"),
        "--tcp-established".to_string(),
    ] {
        assert!(err.contains(&want), "{want:?} not in: {err}");
    }
    assert!(!err.contains("fd 10 "), "the listener is no blocker: {err}");
    assert_eq!(tracer(pid), Some(0));
    env.verify(pid);
}

/// A listener with a connection the program has not accepted yet is refused (with
/// every other blocker: here none), naming the listener; the workload runs on.
#[test]
fn listener_with_pending_connection_refused() {
    let env = Env::new("inetsk-pending");
    let pid = start_inetsk(&env, &[]);
    let (lport, _) = ports(&env);
    let pending = TcpStream::connect(("127.0.0.1", lport)).unwrap();
    let err = env.dump_fails(pid, &["--tcp-established"]);
    for want in [
        format!("pid {pid} fd 10"),
        format!("127.0.0.1:{lport}"),
        "not yet accepted".to_string(),
    ] {
        assert!(err.contains(&want), "{want:?} not in: {err}");
    }
    assert_eq!(tracer(pid), Some(0));
    assert!(matches!(state(pid), Some('S' | 'R')));
    drop(pending);
    stop(pid);
}

/// `--tcp-close`: the connection comes back closed (EOF/error on both ends); the
/// listeners and UDP sockets still work.
#[test]
fn tcp_close_restores_closed() {
    let env = Env::new("inetsk-close");
    let pid = start_inetsk(&env, &["--closed", "1"]);
    env.dump(pid, &["--tcp-established"]);
    env.restore(pid, &["--tcp-close"]);
    env.verify(pid);
}

/// Restoring an established connection needs one of the flags: a clear error, and
/// nothing left behind.
#[test]
fn tcp_restore_without_flag_fails_cleanly() {
    let env = Env::new("inetsk-noflag");
    let pid = start_inetsk(&env, &[]);
    env.dump(pid, &["--tcp-established"]);
    let out = run_cryo(
        &["restore", "-d", "-D", env.images().to_str().unwrap()],
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--tcp-established"), "{err}");
    assert!(state(pid).is_none(), "a failed restore left pid {pid}");
    env.restore(pid, &["--tcp-established"]);
    env.verify(pid);
}

/// A port for a test server, from the test's pid (tests run one at a time).
fn free_port(salt: u16) -> u16 {
    let base = 20000 + (std::process::id() % 20000) as u16;
    for i in 0..200u16 {
        let p = base + (salt * 211 + i * 7) % 20000;
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
    panic!("no free port");
}

fn wait_port(port: u16, what: &str) {
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{what} does not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills `pid` (ours) and reaps it.
fn stop(pid: Pid) {
    let _ = kill(pid, Signal::SIGKILL);
    let _ = waitpid(pid, None);
}

const REDIS_KEYS: usize = 100_000;

fn redis_value(i: usize) -> String {
    format!("v{i}-{}", "x".repeat(i % 50))
}

/// A RESP reader over the client's one connection.
struct Resp<R: BufRead> {
    r: R,
}

impl<R: BufRead> Resp<R> {
    fn line(&mut self) -> String {
        let mut l = String::new();
        let n = self.r.read_line(&mut l).expect("read from redis");
        assert!(n > 0, "redis closed the connection");
        l.trim_end().to_string()
    }

    /// One reply: simple strings and integers as-is, bulk strings as their contents.
    fn reply(&mut self) -> String {
        let l = self.line();
        match l.as_bytes().first() {
            Some(b'$') => {
                let n: i64 = l[1..].parse().unwrap();
                if n < 0 {
                    return "(nil)".into();
                }
                let mut b = vec![0u8; n as usize + 2];
                self.r.read_exact(&mut b).unwrap();
                String::from_utf8_lossy(&b[..n as usize]).into_owned()
            }
            Some(b'-') => panic!("redis error: {l}"),
            _ => l,
        }
    }
}

fn resp_cmd(args: &[&str]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend(format!("${}\r\n{a}\r\n", a.len()).bytes());
    }
    v
}

/// redis-server with 100k keys and a client that keeps its one TCP connection through
/// dump (kill) and restore, then reads every key back over it.
#[test]
fn redis_keeps_client_connection() {
    if !Path::new("/usr/bin/redis-server").exists() {
        panic!("redis-server missing: run hack/setup.sh");
    }
    let env = Env::new("redis");
    let port = free_port(1);
    let conf = env.path("redis.conf");
    std::fs::write(
        &conf,
        format!(
            "bind 127.0.0.1\nport {port}\ndaemonize no\nsave \"\"\nappendonly no\n\
             dir {}\nlogfile {}\nprotected-mode no\n",
            env.dir.display(),
            env.path("redis.log").display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new("/usr/bin/redis-server");
    cmd.arg(&conf);
    let pid = env.spawn(cmd, true);
    wait_port(port, "redis-server");

    // The client: one connection for everything.
    let conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut w = conn.try_clone().unwrap();
    let mut r = Resp {
        r: BufReader::new(conn.try_clone().unwrap()),
    };
    let t = Instant::now();
    let mut batch = Vec::new();
    for i in 0..REDIS_KEYS {
        batch.extend(resp_cmd(&["SET", &format!("key:{i}"), &redis_value(i)]));
        if batch.len() > 1 << 16 || i == REDIS_KEYS - 1 {
            w.write_all(&batch).unwrap();
            batch.clear();
        }
    }
    for _ in 0..REDIS_KEYS {
        assert_eq!(r.reply(), "+OK");
    }
    w.write_all(&resp_cmd(&["DBSIZE"])).unwrap();
    assert_eq!(r.reply(), format!(":{REDIS_KEYS}"));
    eprintln!("redis: loaded {REDIS_KEYS} keys in {:?}", t.elapsed());

    let t = Instant::now();
    env.dump(pid, &["--tcp-established"]);
    let dump_t = t.elapsed();
    let size: u64 = std::fs::read_dir(env.images())
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    // Killed, and silently: the client's connection is still there, no EOF, no RST.
    conn.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    match (&conn).read(&mut b) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("client connection after the dump: {other:?}"),
    }
    conn.set_nonblocking(false).unwrap();
    let t = Instant::now();
    env.restore(pid, &["--tcp-established"]);
    let restore_t = t.elapsed();
    eprintln!(
        "redis: dump {dump_t:?}, restore {restore_t:?}, images {} KiB",
        size / 1024
    );

    // Same connection: PING, then every key, pipelined.
    w.write_all(&resp_cmd(&["PING"])).unwrap();
    assert_eq!(r.reply(), "+PONG");
    for chunk in (0..REDIS_KEYS).collect::<Vec<_>>().chunks(5000) {
        let mut req = Vec::new();
        for &i in chunk {
            req.extend(resp_cmd(&["GET", &format!("key:{i}")]));
        }
        w.write_all(&req).unwrap();
        for &i in chunk {
            assert_eq!(r.reply(), redis_value(i), "key:{i}");
        }
    }
    w.write_all(&resp_cmd(&["PING"])).unwrap();
    assert_eq!(r.reply(), "+PONG");
    // And a new client is served too.
    let mut c2 = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c2.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c2.write_all(&resp_cmd(&["DBSIZE"])).unwrap();
    let mut r2 = Resp {
        r: BufReader::new(c2),
    };
    assert_eq!(r2.reply(), format!(":{REDIS_KEYS}"));
    stop(pid);
}

fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn nginx_conf(env: &Env, port: u16, master: bool) -> std::path::PathBuf {
    let www = env.path("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "cryo says hello\n").unwrap();
    let conf = env.path("nginx.conf");
    let d = env.dir.display();
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process {};\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log;\nevents {{ worker_connections 64; }}\n\
             http {{\n access_log {d}/access.log;\n client_body_temp_path {d}/body;\n\
             proxy_temp_path {d}/proxy;\n fastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
             server {{ listen 127.0.0.1:{port}; root {}; }}\n}}\n",
            if master { "on" } else { "off" },
            www.display()
        ),
    )
    .unwrap();
    conf
}

fn nginx(master: bool) {
    if !Path::new("/usr/sbin/nginx").exists() {
        panic!("nginx missing: run hack/setup.sh");
    }
    let env = Env::new(if master { "nginx-master" } else { "nginx" });
    let port = free_port(if master { 3 } else { 2 });
    let conf = nginx_conf(&env, port, master);
    let mut cmd = Command::new("/usr/sbin/nginx");
    cmd.arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(env.path("error.log"));
    cmd.stdin(Stdio::null());
    let pid = env.spawn(cmd, true);
    wait_port(port, "nginx");
    assert!(http_get(port, "/").contains("cryo says hello"));
    env.dump(pid, &[]);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nginx still listening after the dump"
    );
    env.restore(pid, &[]);
    let page = http_get(port, "/");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("cryo says hello"), "{page}");
    assert!(http_get(port, "/missing").starts_with("HTTP/1.1 404"));
    stop(pid);
}

/// nginx (one process: `master_process off`) answers a new request after restore.
#[test]
fn nginx_answers_after_restore() {
    nginx(false);
}

/// nginx master + worker (a tree: epoll, eventfd, the master <-> worker unix
/// socketpairs, the shared listener) answers a new request after restore.
#[test]
fn nginx_master_worker_answers_after_restore() {
    nginx(true);
}

fn start_tcphalf(env: &Env, extra: &[&str]) -> Pid {
    let info = env.path("info");
    let mut args = vec!["--info", info.to_str().unwrap()];
    args.extend_from_slice(extra);
    env.start("tcphalf", &args)
}

/// A loopback connection with both ends in the tree, half-closed: the client shut
/// down its write side (FIN_WAIT2), the server (CLOSE_WAIT) has the data and the FIN
/// unread. After restore the server reads the data then EOF and can still answer; the
/// client reads that, cannot write (EPIPE). And a UDP socket with 3 datagrams from 2
/// senders in the tree: back in order, with contents and sender addresses; sk-queues
/// decodes with crit.
#[test]
fn tcp_half_closed_and_udp_queue_come_back() {
    let env = Env::new("tcphalf");
    let pid = start_tcphalf(&env, &[]);
    // Without --tcp-established: refused, naming the state.
    let err = env.dump_fails(pid, &[]);
    assert!(
        err.contains("CLOSE_WAIT") && err.contains("FIN_WAIT2"),
        "{err}"
    );
    env.dump(pid, &["--tcp-established"]);
    if Path::new("/usr/bin/crit").exists() {
        let json = crit_decode(&env.images().join("sk-queues.img"));
        for want in [
            "id_for",
            "\"length\": 15",
            "\"length\": 16",
            "\"length\": 23",
        ] {
            assert!(json.contains(want), "{want:?} not in: {json}");
        }
    }
    env.restore(pid, &["--tcp-established"]);
    env.verify(pid);
}

/// The FIN must be replayed: with the replay disabled (fault point), the restored
/// server never sees EOF and the client can still write; the workload says so.
#[test]
fn tcp_half_closed_fails_without_fin_replay() {
    let env = Env::new("tcphalf-nofin");
    let pid = start_tcphalf(&env, &[]);
    env.dump(pid, &["--tcp-established"]);
    let pidfile = env.path("restored.pid");
    let out = Command::new(cryo())
        .args(["restore", "-d", "--tcp-established", "-D"])
        .arg(env.images())
        .arg("--pidfile")
        .arg(&pidfile)
        .env("CRYO_FAULT", "skip-fin-replay")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    kill(pid, Signal::SIGTERM).unwrap();
    let _ = waitpid(pid, None);
    let verdict = std::fs::read_to_string(env.path("out")).unwrap_or_default();
    eprintln!("without the FIN replay: {verdict}");
    assert!(verdict.starts_with("FAIL"), "{verdict}");
    assert!(
        verdict.contains("EOF") || verdict.contains("EPIPE") || verdict.contains("state"),
        "{verdict}"
    );
}

/// Peers outside the tree (this test process): a connection whose peer shut down its
/// write side (CLOSE_WAIT in the tree: data then EOF, and the reply reaches us), one
/// the workload shut down (FIN_WAIT2: we still send to it), and a datagram from our
/// own UDP socket, which keeps its source address.
#[test]
fn tcp_half_closed_with_outside_peer() {
    let env = Env::new("tcphalf-ext");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let uport = udp.local_addr().unwrap().port().to_string();
    let info = env.path("info");
    let client = std::thread::spawn({
        let info = info.clone();
        move || {
            wait_for(&info, Duration::from_secs(30));
            let s = std::fs::read_to_string(&info).unwrap();
            let get = |k: &str| -> u16 {
                s.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap()
            };
            udp.send_to(b"fourth, from outside", ("127.0.0.1", get("udp=")))
                .unwrap();
            let mut e1 = TcpStream::connect(("127.0.0.1", get("listen="))).unwrap();
            let e2 = TcpStream::connect(("127.0.0.1", get("listen="))).unwrap();
            let data: Vec<u8> = (0..2000usize).map(|i| pat(i, 3)).collect();
            e1.write_all(&data).unwrap();
            e1.shutdown(std::net::Shutdown::Write).unwrap();
            (e1, e2)
        }
    });
    let pid = start_tcphalf(&env, &["--ext", "1", "--extudp", &uport]);
    let (mut e1, mut e2) = client.join().unwrap();
    env.dump(pid, &["--tcp-established"]);
    env.restore(pid, &["--tcp-established"]);
    e2.write_all(b"late data").unwrap();
    env.verify(pid);
    for s in [&e1, &e2] {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    let mut got = String::new();
    e1.read_to_string(&mut got).unwrap();
    assert_eq!(got, "reply-ext");
    got.clear();
    e2.read_to_string(&mut got).unwrap();
    assert_eq!(got, "bye");
}

/// tcphalf.c's pat().
fn pat(i: usize, seed: u32) -> u8 {
    let mut x = (i as u32).wrapping_mul(2654435761) ^ seed.wrapping_mul(40503);
    x ^= x >> 15;
    (x ^ (x >> 8)) as u8
}
