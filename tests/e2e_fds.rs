//! End-to-end: fd kinds beyond plain files (issue 4), checked by the workloads.

mod common;
use common::*;

/// Pipes (data in flight, one end, capacity, O_NONBLOCK), a FIFO, eventfds, signalfd,
/// timerfds, memfd, a deleted file, a directory, epoll and inotify.
#[test]
fn fd_kinds_come_back() {
    let env = Env::new("fdkinds");
    let pid = env.start("fdkinds", &["--tmpdir", env.dir.to_str().unwrap()]);
    env.cycle(pid);
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
