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
