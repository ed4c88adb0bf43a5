//! Image files: CRIU's crit decodes them, they are private (0600), and damaged or foreign
//! input gives one clear error line, never a panic and never a half-restored process.

mod common;
use common::*;
use cryo_proto::criu::InventoryEntry;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn dumped(env: &Env) -> nix::unistd::Pid {
    let pid = env.start(
        "mem",
        &["--mib", "4", "--tmpdir", env.dir.to_str().unwrap()],
    );
    env.dump(pid, &[]);
    pid
}

fn restore_err(env: &Env) -> String {
    let out = run_cryo(
        &["restore", "-d", "-D", env.images().to_str().unwrap()],
        &[],
    );
    assert!(!out.status.success(), "restore of a bad image succeeded");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.lines().count(), 1, "expected one error line: {err}");
    err
}

fn image_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "img"))
        .collect();
    v.sort();
    v
}

#[test]
fn crit_decodes_every_image_and_files_are_private() {
    let env = Env::new("crit");
    let pid = dumped(&env);
    for f in image_files(&env.images()) {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", f.display());
    }
    if Path::new("/usr/bin/crit").exists() {
        for f in image_files(&env.images()) {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("pages-") || name.starts_with("cryo-") {
                continue; // raw page data; cryo's own records
            }
            let out = std::process::Command::new("crit")
                .args(["decode", "-i"])
                .arg(&f)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "crit cannot decode {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let json = String::from_utf8_lossy(&out.stdout);
            if name.starts_with("pagemap-") {
                assert!(json.contains("nr_pages"), "{json}");
            }
        }
        let out = std::process::Command::new("crit")
            .args(["show"])
            .arg(env.images().join("pstree.img"))
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("\"pid\": {pid}")));
    } else {
        eprintln!("crit not installed: skipping decode checks");
    }
    env.restore(pid, &[]);
    env.verify(pid);
}

/// A negative control: a flipped byte in the page data must be caught by the workload.
#[test]
fn corrupted_pages_are_detected_by_the_workload() {
    let env = Env::new("corrupt");
    let pid = dumped(&env);
    let pages = env.images().join("pages-1.img");
    let mut data = std::fs::read(&pages).unwrap();
    // Most of the page data is the workload's pattern: one flipped byte in the middle.
    let n = data.len();
    data[n / 2 + 17] ^= 0x5a;
    std::fs::write(&pages, data).unwrap();
    env.restore(pid, &[]);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let _ = nix::sys::wait::waitpid(pid, None);
    let out = std::fs::read_to_string(env.path("out")).unwrap_or_default();
    assert!(
        !out.starts_with("PASS"),
        "corruption went unnoticed: {out:?}"
    );
}

#[test]
fn truncated_image() {
    let env = Env::new("trunc");
    let pid = dumped(&env);
    let core = env.images().join(format!("core-{pid}.img"));
    let len = std::fs::metadata(&core).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&core).unwrap();
    f.set_len(len / 2).unwrap();
    let err = restore_err(&env);
    assert!(err.contains("truncated") && err.contains("core-"), "{err}");
    assert!(state(pid).is_none());
}

#[test]
fn truncated_pages() {
    let env = Env::new("truncpages");
    let pid = dumped(&env);
    let pages = env.images().join("pages-1.img");
    let len = std::fs::metadata(&pages).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&pages)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let err = restore_err(&env);
    assert!(err.contains("truncated"), "{err}");
    assert!(state(pid).is_none(), "half-restored process left behind");
}

#[test]
fn wrong_magic() {
    let env = Env::new("magic");
    let pid = dumped(&env);
    let mm = env.images().join(format!("mm-{pid}.img"));
    let mut b = std::fs::read(&mm).unwrap();
    b[4] ^= 0xff;
    std::fs::write(&mm, b).unwrap();
    let err = restore_err(&env);
    assert!(err.contains("wrong magic") && err.contains("mm-"), "{err}");
}

#[test]
fn missing_image_file() {
    let env = Env::new("missing");
    let pid = dumped(&env);
    std::fs::remove_file(env.images().join(format!("mm-{pid}.img"))).unwrap();
    let err = restore_err(&env);
    assert!(
        err.contains("missing image file") && err.contains("mm-"),
        "{err}"
    );
    let out = run_cryo(
        &["restore", "-D", "/nonexistent/cryo-images"],
        &["-o", "/dev/null"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/cryo-images"));
}

#[test]
fn newer_image_version() {
    let env = Env::new("newer");
    dumped(&env);
    let dir = cryo::image::ImageDir::open(&env.images()).unwrap();
    let mut inv: InventoryEntry = dir
        .read_one("inventory.img", cryo::image::INVENTORY)
        .unwrap();
    inv.img_version = 3;
    dir.write_one("inventory.img", cryo::image::INVENTORY, &inv)
        .unwrap();
    let err = restore_err(&env);
    assert!(err.contains("image version 3"), "{err}");
}

#[test]
fn no_such_process() {
    let env = Env::new("nopid");
    let err = env.dump_fails(nix::unistd::Pid::from_raw(999999), &[]);
    assert!(
        err.contains("no such process: 999999") && err.contains("log:"),
        "{err}"
    );
}

/// Garbage in every image file: always an error, never a panic.
/// Flips bytes in (and truncates) every image but the raw pages, one file at a time, and
/// restores each time: a clear error or a running process, never a panic or leftovers.
fn garbage_rounds(env: &Env, pid: nix::unistd::Pid) {
    let files = image_files(&env.images());
    let pristine: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let mut seed = 0x9e3779b97f4a7c15u64;
    for (i, f) in files.iter().enumerate() {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("pages-") || name.ends_with(".log") {
            continue;
        }
        for round in 0..5 {
            let mut b = pristine[i].clone();
            if round == 4 {
                b.truncate(b.len() / 2);
            }
            for _ in 0..(1 + round * 3) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                if !b.is_empty() && round < 4 {
                    let at = (seed as usize) % b.len();
                    b[at] = (seed >> 32) as u8;
                }
            }
            std::fs::write(f, &b).unwrap();
            let out = run_cryo(
                &["restore", "-d", "-D", env.images().to_str().unwrap()],
                &["-o", "/dev/null"],
            );
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!err.contains("panicked"), "{}: {err}", f.display());
            if out.status.success() {
                // A harmless byte: the process runs; remove it before the next round.
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(pid, None);
            } else {
                assert_eq!(err.lines().count(), 1, "{}: {err}", f.display());
            }
            assert!(state(pid).is_none(), "{}: process left behind", f.display());
        }
        std::fs::write(f, &pristine[i]).unwrap();
    }
}

#[test]
fn garbage_images_never_panic() {
    let env = Env::new("garbage");
    let pid = dumped(&env);
    garbage_rounds(&env, pid);
}

/// The same for the images of every fd kind (pipe data, deleted files, memfd, epoll,
/// inotify, timerfd, signalfd, eventfd entries).
#[test]
fn garbage_fd_images_never_panic() {
    let env = Env::new("garbage-fds");
    let pid = env.start("fdkinds", &["--tmpdir", env.dir.to_str().unwrap()]);
    env.dump(pid, &[]);
    garbage_rounds(&env, pid);
    env.restore(pid, &[]);
    env.verify(pid);
}

/// A mapped file that changed since the dump is refused by name (its pages that were not
/// dumped would come from the new content).
#[test]
fn changed_mapped_file_is_refused() {
    let env = Env::new("changedfile");
    let pid = dumped(&env);
    let f = env.dir.join(format!("cryo-mem-{pid}-private.dat"));
    let mut b = std::fs::read(&f).expect("mem workload's private mapping file");
    b.extend_from_slice(b"more");
    std::fs::write(&f, b).unwrap();
    let err = restore_err(&env);
    assert!(
        err.contains("changed since the dump") && err.contains("private.dat"),
        "{err}"
    );
    assert!(state(pid).is_none());
}

/// A process someone else already traces cannot be dumped: one clear line, and the
/// other tracer keeps it.
#[test]
fn already_traced_process() {
    let env = Env::new("traced");
    let pid = env.start("counter", &["--file", env.path("c.txt").to_str().unwrap()]);
    nix::sys::ptrace::seize(pid, nix::sys::ptrace::Options::empty()).unwrap();
    let err = env.dump_fails(pid, &[]);
    assert!(
        err.contains("permission denied to trace it") && err.contains(&pid.to_string()),
        "{err}"
    );
    assert_eq!(tracer(pid), Some(nix::unistd::gettid().as_raw()));
    // Let it go again (PTRACE_DETACH needs a stop: interrupt first).
    nix::sys::ptrace::interrupt(pid).unwrap();
    let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::__WALL));
    nix::sys::ptrace::detach(pid, None).unwrap();
    env.verify(pid);
}

/// crit decodes every image the fd kinds add (pipe and FIFO data, deleted files, memfd,
/// file locks, pty info, epoll/inotify/timerfd entries in files.img), all 0600, and the
/// images restore.
#[test]
fn crit_decodes_fd_kind_images() {
    for (name, args) in [("fdkinds", true), ("locks", true), ("pty", false)] {
        let env = Env::new(name);
        let dir = env.dir.to_str().unwrap().to_string();
        let extra: Vec<&str> = if args { vec!["--tmpdir", &dir] } else { vec![] };
        let pid = env.start(name, &extra);
        env.dump(pid, &[]);
        let files = image_files(&env.images());
        for f in &files {
            let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} is {mode:o}", f.display());
        }
        if Path::new("/usr/bin/crit").exists() {
            for f in &files {
                let n = f.file_name().unwrap().to_string_lossy().into_owned();
                if n.starts_with("pages-") || n.starts_with("cryo-") {
                    continue;
                }
                crit_decode(f);
            }
        }
        env.restore(pid, &[]);
        env.verify(pid);
    }
}
