//! Logs: every dump and restore writes a full-verbosity binary log into the image
//! directory; `cryo log decode` renders it as text or JSON, and a damaged log decodes up
//! to the damage and says where it stopped.

mod common;
use common::*;
use std::process::Command;

fn decode(path: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(cryo())
        .args(["log", "decode"])
        .arg(path)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn dump_and_restore_logs_decode() {
    let env = Env::new("logs");
    let pid = env.start("counter", &["--file", env.path("c.txt").to_str().unwrap()]);
    env.dump(pid, &[]);
    env.restore(pid, &[]);
    env.verify(pid);
    for (name, must) in [("dump.log", "dump done"), ("restore.log", "restored")] {
        let log = env.images().join(name);
        let bytes = std::fs::read(&log).unwrap();
        assert!(bytes.starts_with(b"CRYOLOG1"), "{name} is not a binary log");
        let out = decode(&log, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(must), "{name}: {text}");
        // Full verbosity: every injected syscall is there, with its key-values.
        assert!(
            text.contains("TRACE injected syscall") && text.contains("name=mmap"),
            "{name}"
        );
        let json = decode(&log, &["--json"]);
        for line in String::from_utf8_lossy(&json.stdout).lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert!(v.get("msg").is_some() && v.get("level").is_some(), "{line}");
        }
        let info = decode(&log, &["--level", "info"]);
        assert!(!String::from_utf8_lossy(&info.stdout).contains("TRACE"));
    }
}

#[test]
fn truncated_log_decodes_to_the_damage() {
    let env = Env::new("logtrunc");
    let pid = env.start("counter", &["--file", env.path("c.txt").to_str().unwrap()]);
    env.dump(pid, &[]);
    let log = env.images().join("dump.log");
    let full = decode(&log, &[]);
    let n_full = String::from_utf8_lossy(&full.stdout).lines().count();
    let bytes = std::fs::read(&log).unwrap();
    let cut = env.path("cut.log");
    // Wherever the cut falls (inside a record, or between two: the session then lacks
    // the END record its header promises), the decoder says where it stopped.
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let out = decode(&cut, &[]);
    assert!(
        !out.status.success(),
        "a truncated log must not decode as complete"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("byte"), "no damage offset: {err}");
    let n = String::from_utf8_lossy(&out.stdout).lines().count();
    assert!(n > 0 && n < n_full, "decoded {n} of {n_full} lines");
}

#[test]
fn text_and_json_sinks() {
    let env = Env::new("logfmt");
    let pid = env.start("counter", &["--file", env.path("c.txt").to_str().unwrap()]);
    env.dump(
        pid,
        &[
            "--leave-running",
            "--log-format",
            "text",
            "-o",
            env.path("t.log").to_str().unwrap(),
        ],
    );
    let t = std::fs::read_to_string(env.path("t.log")).unwrap();
    assert!(t.contains("INFO  dump done"), "{t}");
    std::fs::remove_dir_all(env.images()).unwrap();
    env.dump(
        pid,
        &[
            "--leave-running",
            "--log-format",
            "json",
            "-o",
            env.path("j.log").to_str().unwrap(),
        ],
    );
    for line in std::fs::read_to_string(env.path("j.log")).unwrap().lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
    env.verify(pid);
}
