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
