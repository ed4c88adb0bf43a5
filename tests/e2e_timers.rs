//! End-to-end: POSIX timers, timer slack and seccomp filters survive dump → kill →
//! restore; the `posixtimers` and `seccomp` workloads check themselves.

mod common;
use common::*;
use cryo_proto::criu::SeccompEntry;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use std::path::Path;
use std::time::Duration;

/// Timers on every clock with every kind of notification, one periodic, one disarmed,
/// one far away; the slack. Dumped and restored twice (a restored process dumps again).
#[test]
fn posix_timers_and_slack() {
    let env = Env::new("posixtimers");
    let pid = env.start("posixtimers", &[]);
    std::thread::sleep(Duration::from_millis(200));
    env.dump(pid, &[]);
    crit_decodes(&env.images(), &format!("core-{pid}.img"));
    env.restore(pid, &[]);
    std::thread::sleep(Duration::from_millis(100));
    let _ = std::fs::remove_dir_all(env.images());
    env.cycle(pid);
}

/// A CLOCK_THREAD_CPUTIME_ID timer in a multi-threaded process: the kernel does not say
/// which thread's clock it counts, so the dump refuses it by name; the target runs on.
#[test]
fn thread_clock_timer_with_threads_refused() {
    let env = Env::new("posixtimers-mt");
    let pid = env.start("posixtimers", &["--mtclock", "1"]);
    let err = env.dump_fails(pid, &[]);
    assert!(err.contains("CLOCK_THREAD_CPUTIME_ID"), "{err}");
    assert!(err.contains(&pid.to_string()), "{err}");
    assert_eq!(tracer(pid), Some(0), "left traced");
    // It still works: every timer and the slack pass its own check.
    env.verify(pid);
}

fn seccomp_img(dir: &Path) -> SeccompEntry {
    let img = cryo::image::ImageDir::open(dir).unwrap();
    img.read_one("seccomp.img", cryo::image::SECCOMP).unwrap()
}

fn crit_decodes(dir: &Path, name: &str) {
    if !Path::new("/usr/bin/crit").exists() {
        eprintln!("crit not installed: skipping decode of {name}");
        return;
    }
    crit_decode(&dir.join(name));
}

/// Two layered filters (the second with SECCOMP_FILTER_FLAG_LOG) on a single thread. The
/// first filter kills on sigaltstack, which the dump injects: the target must survive.
/// The restored process dumps to the same seccomp.img (programs, order, flags).
#[test]
fn seccomp_filters_layered() {
    let env = Env::new("seccomp");
    let pid = env.start("seccomp", &[]);
    env.dump(pid, &[]);
    let first = seccomp_img(&env.images());
    assert_eq!(first.seccomp_filters.len(), 2, "{first:?}");
    assert_eq!(first.seccomp_filters[1].prev, Some(0));
    assert_eq!(first.seccomp_filters[1].flags, Some(2), "FLAG_LOG");
    crit_decodes(&env.images(), "seccomp.img");
    crit_decodes(&env.images(), &format!("core-{pid}.img"));
    env.restore(pid, &[]);
    let again = env.path("again");
    let out = run_cryo(
        &[
            "dump",
            "-t",
            &pid.to_string(),
            "-D",
            again.to_str().unwrap(),
            "--leave-running",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(seccomp_img(&again), first, "filters differ after restore");
    env.verify(pid);
}

/// Threads with different chains: all share filter A, one thread adds B; each thread
/// also has its own timer slack.
#[test]
fn seccomp_filters_per_thread() {
    let env = Env::new("seccomp-threads");
    let pid = env.start("seccomp", &["--threads", "1"]);
    env.dump(pid, &[]);
    let img = seccomp_img(&env.images());
    // A once (shared by the three threads), B once.
    assert_eq!(img.seccomp_filters.len(), 2, "{img:?}");
    env.restore(pid, &[]);
    env.verify(pid);
}

/// Strict mode cannot be restored: refused at dump, naming it; the target runs on.
#[test]
fn seccomp_strict_refused() {
    let env = Env::new("seccomp-strict");
    let pid = env.start("seccomp", &["--strict", "1"]);
    std::thread::sleep(Duration::from_millis(100));
    let err = env.dump_fails(pid, &[]);
    assert!(err.contains("strict"), "{err}");
    assert!(err.contains(&pid.to_string()), "{err}");
    assert_eq!(tracer(pid), Some(0), "left traced");
    assert!(matches!(state(pid), Some('S' | 'R')), "{:?}", state(pid));
    kill(pid, Signal::SIGKILL).unwrap();
    waitpid(pid, None).unwrap();
}
