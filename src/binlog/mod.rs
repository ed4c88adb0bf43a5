//! Binary logs: full-verbosity logging at almost no cost.
//!
//! [`BinLogger`] is a `log::Log` sink that writes each record's callsite id, level,
//! timestamp, pid/tid and structured key-values in raw binary, and the static message
//! text and file:line once per callsite (format in [`sink`]). [`decode`] renders a log
//! as the text sink (`crate::logging`) would have written it, or as JSON lines.
//!
//! Records are buffered. The buffer is written at [`FLUSH_AT`] bytes, after each ERROR
//! record, on `log::logger().flush()` / [`flush_now`], at exit (an `atexit` handler
//! registered by [`init_file`]), and with [`install_crash_flush`] on panic and on
//! SIGSEGV, SIGBUS, SIGABRT, SIGILL and SIGFPE.
//!
//! # Flushing from a signal handler
//!
//! Only async-signal-safe work is allowed there, so the handler does not wait for the
//! buffer's lock: it takes it with `try_lock` (one atomic compare-exchange), writes the
//! bytes with `write(2)` and clears the buffer without freeing it. If the lock is held —
//! the signal hit a thread in the middle of logging, or another thread is logging right
//! now — the buffered records are lost rather than risking a deadlock or writing a buffer
//! that is being modified. cryo's engine is single-threaded and faults outside the sink,
//! so in practice the lock is free. Then, for a signal that was sent (`kill`, `raise`,
//! `abort`), the handler sets the default action and raises it again; for a fault it puts
//! back the action that was there before (`SIG_DFL`, or the Rust runtime's stack-overflow
//! reporter for SIGSEGV/SIGBUS) and returns: the faulting instruction runs again and
//! meets that action with its original `siginfo`.

pub mod decode;
pub mod sink;

pub use decode::{decode, Damage, DamageKind, DecodeReport};
pub use sink::{BinLogger, FLUSH_AT};

use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::sync::{Once, OnceLock};

/// The sink installed by [`init_file`], for the exit, panic and signal flushes.
static GLOBAL: OnceLock<&'static BinLogger> = OnceLock::new();

/// Whether `bytes` start like a binary log (its magic `CRYOLOG1`).
pub fn is_binlog(bytes: &[u8]) -> bool {
    bytes.starts_with(sink::MAGIC)
}

/// Installs the binary sink appending a new session to `path` (created 0600) and
/// registers an exit-time flush. Mirrors `logging::init_file`: only the first call (of
/// either) installs a logger.
pub fn init_file(path: &std::path::Path, level: log::LevelFilter) -> std::io::Result<()> {
    let logger: &'static BinLogger = Box::leak(Box::new(BinLogger::create_closing(path, level)?));
    if log::set_logger(logger).is_ok() {
        let _ = GLOBAL.set(logger);
        log::set_max_level(level);
        register_exit_flush();
    }
    Ok(())
}

/// Writes the installed binary sink's buffer to its file now; a no-op without one.
/// Safe to call from a panic hook (it never waits on a lock its own thread holds).
pub fn flush_now() {
    if let Some(l) = GLOBAL.get() {
        l.flush_buffer();
    }
}

/// Flushes the binary log on panic (hook chained before the previous one, after logging
/// the panic as an ERROR record) and on the fatal signals SIGSEGV, SIGBUS, SIGABRT,
/// SIGILL and SIGFPE (see the module documentation). Before or after [`init_file`];
/// later calls do nothing.
pub fn install_crash_flush() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GLOBAL.get().is_some() && !sink::in_log() {
                let at = info.location().map(|l| l.to_string()).unwrap_or_default();
                let message = info.payload_as_str().unwrap_or("(not a string)");
                log::error!(at = at.as_str(), message = message; "panicked");
            }
            flush_now();
            prev(info);
        }));
        for (i, &sig) in FATAL.iter().enumerate() {
            if let Ok(old) = set_action(sig, &crash_action()) {
                let _ = OLD_ACTIONS[i].set(old);
            }
        }
    });
}

const FATAL: [Signal; 5] = [
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGABRT,
    Signal::SIGILL,
    Signal::SIGFPE,
];

/// The actions our handler replaced, put back when it runs.
static OLD_ACTIONS: [OnceLock<SigAction>; 5] = [const { OnceLock::new() }; 5];

fn crash_action() -> SigAction {
    SigAction::new(
        SigHandler::SigAction(on_fatal_signal),
        // On the alternate stack the Rust runtime sets up, so a stack overflow can flush.
        SaFlags::SA_SIGINFO | SaFlags::SA_ONSTACK,
        SigSet::empty(),
    )
}

/// `sigaction(2)` for one signal, returning the previous action.
fn set_action(sig: Signal, act: &SigAction) -> nix::Result<SigAction> {
    // SAFETY: the handlers installed here are `on_fatal_signal`, which only does
    // async-signal-safe work (see the module documentation), or actions that were
    // installed before and are merely put back.
    unsafe { signal::sigaction(sig, act) }
}

/// Reads `si_code` of a handler's `siginfo`.
fn si_code(info: *const libc::siginfo_t) -> Option<i32> {
    if info.is_null() {
        return None;
    }
    // SAFETY: the kernel passes SA_SIGINFO handlers a valid siginfo_t; null is checked.
    Some(unsafe { (*info).si_code })
}

extern "C" fn on_fatal_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    if let Some(l) = GLOBAL.get() {
        l.flush_from_signal();
    }
    let Ok(s) = Signal::try_from(sig) else {
        return;
    };
    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    if si_code(info).is_none_or(|c| c <= 0) {
        // Sent by kill/tgkill/raise/abort: send it again with the default action; it is
        // delivered when we return. (The Rust runtime's SIGSEGV/SIGBUS handler would
        // just return from a sent signal and let the process go on.)
        let _ = set_action(s, &dfl);
        let _ = signal::raise(s);
    } else {
        // A fault: put the previous action back; returning re-executes the faulting
        // instruction, which meets it with the original siginfo (the runtime's handler
        // reports a stack overflow, then falls back to the default action).
        let old = FATAL
            .iter()
            .position(|&f| f == s)
            .and_then(|i| OLD_ACTIONS[i].get().copied())
            .unwrap_or(dfl);
        let _ = set_action(s, &old);
    }
}

extern "C" fn flush_at_exit() {
    if let Some(l) = GLOBAL.get() {
        l.close();
    }
}

fn register_exit_flush() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a plain `extern "C" fn()` with no preconditions; it runs at
        // exit(3) and only locks and writes the leaked, 'static sink.
        unsafe {
            libc::atexit(flush_at_exit);
        }
    });
}

/// CLOCK_MONOTONIC now, in ns (the header's monotonic base).
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if r != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::kv::Value;
    use log::{Level, LevelFilter, Log, Record};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Tmp(PathBuf);

    impl Tmp {
        fn new(tag: &str) -> Tmp {
            // The macros check the global maximum level before calling any logger.
            log::set_max_level(LevelFilter::Trace);
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let p =
                std::env::temp_dir().join(format!("cryo-binlog-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_file(&p);
            Tmp(p)
        }
        fn logger(&self, level: LevelFilter) -> BinLogger {
            BinLogger::create(&self.0, level).unwrap()
        }
        fn bytes(&self) -> Vec<u8> {
            std::fs::read(&self.0).unwrap()
        }
    }

    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// What `logging::TextLogger` writes after the timestamp for these kvs.
    fn text_tail(level: Level, msg: &str, kvs: &[(&str, Value)]) -> String {
        let mut s = format!("{level:5} {msg}");
        for (k, v) in kvs {
            s.push_str(&format!(" {k}={v}"));
        }
        s
    }

    fn decode_text(bytes: &[u8]) -> (Vec<String>, DecodeReport) {
        let mut out = Vec::new();
        let rep = decode(bytes, LevelFilter::Trace, &mut out, false);
        let text = String::from_utf8(out).unwrap();
        (text.lines().map(str::to_string).collect(), rep)
    }

    /// Drops the `(  1.234567) ` timestamp, checking its shape.
    fn untimed(line: &str) -> &str {
        assert!(line.starts_with('('), "{line}");
        let close = line.find(") ").unwrap();
        let (secs, micros) = line[1..close].split_once('.').unwrap();
        assert!(secs.len() >= 3 && micros.len() == 6, "{line}");
        &line[close + 2..]
    }

    fn log_kvs(l: &BinLogger, level: Level, kvs: &[(&str, Value)]) {
        l.log(
            &Record::builder()
                .args(format_args!("static message"))
                .level(level)
                .file_static(Some(file!()))
                .line(Some(line!()))
                .module_path_static(Some(module_path!()))
                .key_values(&kvs)
                .build(),
        );
    }

    #[derive(Debug)]
    #[allow(dead_code)]
    struct Opaque {
        a: u32,
        b: &'static str,
    }

    struct Shown;
    impl std::fmt::Display for Shown {
        fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("shown ✓")
        }
    }

    #[test]
    fn binlog_round_trip_matches_text_sink() {
        let t = Tmp::new("rt");
        let l = t.logger(LevelFilter::Trace);
        let opaque = Opaque { a: 7, b: "x\"y" };
        let v = vec![1u8, 2, 3];
        let long = "L".repeat(20_000);
        let err = std::io::Error::other("disk on fire");
        let cases: Vec<(Level, Vec<(&str, Value)>)> = vec![
            (
                Level::Info,
                vec![
                    ("pid", Value::from(1234u32)),
                    ("addr", Value::from(0x7fff_dead_beef_u64)),
                    ("neg", Value::from(-42i64)),
                ],
            ),
            (
                Level::Debug,
                vec![
                    ("s", Value::from("héllo wörld")),
                    ("t", Value::from(true)),
                    ("f", Value::from(false)),
                    ("x", Value::from(1.5f64)),
                    ("y", Value::from(1.0f64)),
                    ("z", Value::from(0.1f32)),
                    ("nan", Value::from(f64::NAN)),
                ],
            ),
            (
                Level::Trace,
                vec![
                    ("dbg", Value::from_debug(&opaque)),
                    ("vec", Value::from_debug(&v)),
                    ("disp", Value::from_display(&Shown)),
                    ("err", Value::from_dyn_error(&err)),
                    ("none", Value::null()),
                    ("c", Value::from('ж')),
                    ("big", Value::from(u128::MAX)),
                    ("small", Value::from(i128::MIN)),
                    ("min", Value::from(i64::MIN)),
                    ("max", Value::from(u64::MAX)),
                ],
            ),
            (Level::Warn, vec![("long", Value::from(long.as_str()))]),
            (Level::Error, vec![]),
            // The same callsite line with other keys: inline keys.
            (
                Level::Info,
                vec![("other", Value::from(1u8)), ("pid", Value::from(2u8))],
            ),
        ];
        for (level, kvs) in &cases {
            log_kvs(&l, *level, kvs);
        }
        l.flush();
        let (lines, rep) = decode_text(&t.bytes());
        assert!(rep.is_complete(), "{rep}");
        assert_eq!(rep.records, cases.len() as u64);
        assert_eq!(lines.len(), cases.len());
        for (line, (level, kvs)) in lines.iter().zip(&cases) {
            assert_eq!(untimed(line), text_tail(*level, "static message", kvs));
        }
    }

    #[test]
    fn binlog_macros_callsites_and_dynamic_messages() {
        let t = Tmp::new("macros");
        let l = t.logger(LevelFilter::Debug);
        for i in 0..3u64 {
            log::info!(logger: &l, i = i, name = "vma"; "mapped");
            log::debug!(logger: &l, v:? = Some(i); "dynamic {}", i * 10);
            log::trace!(logger: &l, i = i; "filtered at the sink");
        }
        // A record whose file is not static: the callsite goes inline.
        let file = String::from("somewhere.rs");
        l.log(
            &Record::builder()
                .args(format_args!("inline site"))
                .level(Level::Warn)
                .file(Some(&file))
                .line(Some(9))
                .build(),
        );
        l.flush();
        let bytes = t.bytes();
        let (lines, rep) = decode_text(&bytes);
        assert!(rep.is_complete(), "{rep}");
        let got: Vec<&str> = lines.iter().map(|l| untimed(l)).collect();
        assert_eq!(
            got,
            [
                "INFO  mapped i=0 name=vma",
                "DEBUG dynamic 0 v=Some(0)",
                "INFO  mapped i=1 name=vma",
                "DEBUG dynamic 10 v=Some(1)",
                "INFO  mapped i=2 name=vma",
                "DEBUG dynamic 20 v=Some(2)",
                "WARN  inline site",
            ]
        );
        // Callsite text is written once: "mapped" appears once in the file.
        let n = bytes.windows(6).filter(|w| w == b"mapped").count();
        assert_eq!(n, 1);

        // Level filter and JSON.
        let mut out = Vec::new();
        let rep = decode(&bytes, LevelFilter::Info, &mut out, true);
        assert_eq!((rep.records, rep.written), (7, 4));
        let text = String::from_utf8(out).unwrap();
        let objs: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(objs[0]["msg"], "mapped");
        assert_eq!(objs[0]["level"], "INFO");
        assert_eq!(objs[0]["kv"]["i"], 0);
        assert_eq!(objs[0]["kv"]["name"], "vma");
        assert_eq!(objs[0]["file"], file!());
        assert_eq!(objs[0]["module"], module_path!());
        assert_eq!(objs[0]["pid"], std::process::id());
        assert!(objs[0]["line"].as_u64().unwrap() > 0);
        assert!(objs[0]["ts"].as_f64().unwrap() >= 0.0);
        assert_eq!(objs[3]["msg"], "inline site");
        assert_eq!(objs[3]["file"], "somewhere.rs");
        assert_eq!(objs[3]["line"], 9);
    }

    #[test]
    fn binlog_threads_carry_their_tid() {
        let t = Tmp::new("tid");
        let l = t.logger(LevelFilter::Trace);
        log::info!(logger: &l, "main");
        std::thread::scope(|s| {
            s.spawn(|| log::info!(logger: &l, "thread"));
        });
        l.flush();
        let mut out = Vec::new();
        let rep = decode(&t.bytes(), LevelFilter::Trace, &mut out, true);
        assert!(rep.is_complete(), "{rep}");
        let objs: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(objs[0]["pid"], std::process::id());
        assert_eq!(objs[1]["pid"], std::process::id());
        assert_eq!(objs[0]["tid"], nix::unistd::gettid().as_raw());
        assert_ne!(objs[1]["tid"], objs[0]["tid"]);
    }

    #[test]
    fn binlog_buffers_and_flushes() {
        let t = Tmp::new("flush");
        let l = t.logger(LevelFilter::Trace);
        log::info!(logger: &l, n = 1; "buffered");
        assert_eq!(t.bytes().len(), sink::HEADER_LEN, "buffered, not written");
        log::error!(logger: &l, n = 2; "an error flushes");
        let (lines, rep) = decode_text(&t.bytes());
        assert!(rep.is_complete(), "{rep}");
        assert_eq!(lines.len(), 2);
        for i in 0..20_000u64 {
            log::trace!(logger: &l, i = i; "bulk");
        }
        let written = t.bytes().len();
        assert!(written > FLUSH_AT, "the full buffer went out: {written}");
        drop(l); // flushes
        let (lines, rep) = decode_text(&t.bytes());
        assert!(rep.is_complete(), "{rep}");
        assert_eq!(lines.len(), 20_002);
    }

    struct Nested<'a>(&'a BinLogger);
    impl std::fmt::Display for Nested<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            log::warn!(logger: self.0, depth = 1; "logged while formatting");
            f.write_str("outer value")
        }
    }

    struct Boom;
    impl std::fmt::Display for Boom {
        fn fmt(&self, _: &mut std::fmt::Formatter) -> std::fmt::Result {
            panic!("Display panics")
        }
    }

    #[test]
    fn binlog_survives_reentrant_and_panicking_values() {
        let t = Tmp::new("nested");
        let l = t.logger(LevelFilter::Trace);
        let n = Nested(&l);
        log::info!(logger: &l, v:% = n; "outer");
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            log::info!(logger: &l, v:% = Boom; "torn");
        }));
        assert!(r.is_err());
        log::info!(logger: &l, after = true; "after the panic");
        l.flush();
        let (lines, rep) = decode_text(&t.bytes());
        assert!(rep.is_complete(), "{rep}");
        let got: Vec<&str> = lines.iter().map(|l| untimed(l)).collect();
        assert_eq!(
            got,
            [
                "INFO  outer v=outer value",
                "WARN  logged while formatting depth=1",
                "INFO  after the panic after=true",
            ]
        );
    }

    fn sample_log() -> Vec<u8> {
        let t = Tmp::new("sample");
        let l = t.logger(LevelFilter::Trace);
        for i in 0..4i64 {
            log::info!(logger: &l, i = i, neg = -i, s = "str"; "first");
            log::debug!(logger: &l, f = 0.5 * i as f64, ok = i % 2 == 0; "second {}", i);
        }
        log::warn!(logger: &l, dbg:? = (1, "two"); "third");
        l.flush();
        t.bytes()
    }

    /// Offsets where the records of a well-formed single-session log start.
    fn record_starts(bytes: &[u8]) -> Vec<usize> {
        let mut starts = Vec::new();
        let mut p = sink::HEADER_LEN;
        while p < bytes.len() {
            starts.push(p);
            let mut len = 0usize;
            let mut q = p + 1;
            let mut shift = 0;
            loop {
                let b = bytes[q];
                len |= ((b & 0x7f) as usize) << shift;
                shift += 7;
                q += 1;
                if b < 0x80 {
                    break;
                }
            }
            p = q + len;
        }
        assert_eq!(p, bytes.len());
        starts
    }

    #[test]
    fn binlog_truncated_at_every_offset_decodes_a_prefix() {
        let bytes = sample_log();
        let (full, rep) = decode_text(&bytes);
        assert!(rep.is_complete(), "{rep}");
        assert_eq!(full.len(), 9);
        let starts = record_starts(&bytes);
        for cut in 0..bytes.len() {
            let (lines, rep) = decode_text(&bytes[..cut]);
            assert_eq!(lines[..], full[..lines.len()], "cut at {cut}");
            if cut == 0 {
                assert!(rep.is_complete());
                continue;
            }
            if cut < sink::HEADER_LEN {
                assert_eq!(rep.damage[0].offset, 0);
                assert_eq!(rep.damage[0].kind, DamageKind::TruncatedHeader);
                continue;
            }
            if starts.contains(&cut) || cut == sink::HEADER_LEN {
                assert!(rep.is_complete(), "cut at a record boundary {cut}: {rep}");
                continue;
            }
            let torn = *starts.iter().rev().find(|&&s| s < cut).unwrap();
            assert_eq!(rep.damage.len(), 1, "{rep}");
            assert_eq!(rep.damage[0].offset, torn, "cut at {cut}: {rep}");
            assert_eq!(rep.damage[0].kind, DamageKind::Truncated);
            assert_eq!(
                rep.damage[0].to_string(),
                format!("truncated record at byte {torn}")
            );
        }
    }

    #[test]
    fn binlog_reports_damage_kinds() {
        let bytes = sample_log();
        let starts = record_starts(&bytes);
        // The first record is the definition of callsite 1; without it, its first use
        // refers to an undefined callsite.
        let mut b = bytes[..starts[0]].to_vec();
        b.extend_from_slice(&bytes[starts[1]..]);
        let (_, rep) = decode_text(&b);
        assert_eq!(
            rep.damage[0].to_string(),
            format!("callsite id 1 undefined at byte {}", starts[0])
        );
        let mut b = bytes.clone();
        b[starts[2]] = 0x7e;
        let (lines, rep) = decode_text(&b);
        assert_eq!(
            rep.damage[0].to_string(),
            format!("unknown record type 0x7e at byte {}", starts[2])
        );
        assert_eq!(lines.len(), 1);
        let (_, rep) = decode_text(b"not a log at all, not at all");
        assert_eq!(rep.damage[0].kind, DamageKind::NotBinlog);
        assert!(!is_binlog(b"CRYOLOG"));
        assert!(is_binlog(&bytes));
    }

    #[test]
    fn binlog_appended_sessions_and_resync() {
        let t = Tmp::new("sessions");
        for run in 0..2u32 {
            let l = t.logger(LevelFilter::Trace);
            log::info!(logger: &l, run = run; "session");
        }
        let bytes = t.bytes();
        let (lines, rep) = decode_text(&bytes);
        assert!(rep.is_complete(), "{rep}");
        assert_eq!(rep.sessions, 2);
        assert_eq!(lines.len(), 2);
        // Tear the first session's last record: the second session still decodes.
        let second = bytes[1..]
            .windows(8)
            .position(|w| w == sink::MAGIC)
            .unwrap()
            + 1;
        let mut b = bytes[..second - 3].to_vec();
        b.extend_from_slice(&bytes[second..]);
        let (lines, rep) = decode_text(&b);
        assert_eq!(rep.damage.len(), 1, "{rep}");
        assert_eq!(rep.damage[0].resumed_at, Some(second - 3));
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].ends_with("session run=1"));
    }

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn binlog_random_corruption_never_panics() {
        let bytes = sample_log();
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut out = Vec::new();
        for i in 0..20_000 {
            let mut b = bytes.clone();
            match rng.below(4) {
                0 => {
                    for _ in 0..1 + rng.below(4) {
                        let p = rng.below(b.len());
                        b[p] = rng.next() as u8;
                    }
                }
                1 => {
                    let p = sink::HEADER_LEN + rng.below(b.len() - sink::HEADER_LEN);
                    b[p] ^= 1 << rng.below(8);
                }
                2 => {
                    let p = rng.below(b.len());
                    let n = rng.below(16);
                    let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                    b.splice(p..p, junk);
                }
                _ => {
                    b.truncate(sink::HEADER_LEN);
                    for _ in 0..rng.below(256) {
                        b.push(rng.next() as u8);
                    }
                }
            }
            out.clear();
            let json = i % 2 == 0;
            let rep = decode(&b, LevelFilter::Trace, &mut out, json);
            for d in &rep.damage {
                // An unclosed session is reported at the end of the input.
                assert!(
                    d.offset < b.len() || (d.kind == DamageKind::NotClosed && d.offset == b.len()),
                    "{rep}"
                );
            }
            let text = std::str::from_utf8(&out).expect("output is UTF-8");
            if json {
                assert_eq!(text.lines().count() as u64, rep.written);
                for l in text.lines() {
                    let _: serde_json::Value = serde_json::from_str(l).expect(l);
                }
            }
        }
    }

    /// Run by `binlog_crash_flush_keeps_the_last_records` in a child process: installs
    /// the global sink, logs, then ends as `CRYO_BINLOG_CRASH` says.
    #[test]
    #[ignore]
    fn binlog_crash_child() {
        let (Ok(how), Ok(path)) = (
            std::env::var("CRYO_BINLOG_CRASH"),
            std::env::var("CRYO_BINLOG_CRASH_FILE"),
        ) else {
            return;
        };
        init_file(std::path::Path::new(&path), LevelFilter::Trace).unwrap();
        install_crash_flush();
        for i in 0..3u32 {
            log::debug!(i = i, how = how.as_str(); "before the end");
        }
        match how.as_str() {
            "exit" => {}
            "abort" => std::process::abort(),
            "kill" => {
                let _ = nix::sys::signal::raise(Signal::SIGBUS);
            }
            "fault" => {
                use nix::sys::mman::{mmap_anonymous, MapFlags, ProtFlags};
                let len = std::num::NonZeroUsize::new(4096).unwrap();
                // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
                let p = unsafe {
                    mmap_anonymous(None, len, ProtFlags::PROT_NONE, MapFlags::MAP_PRIVATE)
                }
                .unwrap();
                // SAFETY: the page is mapped but inaccessible: the read faults with
                // SIGSEGV (SEGV_ACCERR), which is what this test wants.
                let v = unsafe { std::ptr::read_volatile(p.as_ptr().cast::<u8>()) };
                std::hint::black_box(v);
            }
            "overflow" => {
                #[allow(unconditional_recursion)]
                fn down(n: u64) -> u64 {
                    let pad = std::hint::black_box([n; 64]);
                    down(pad[3] + 1) + pad[7]
                }
                std::hint::black_box(down(0));
            }
            "panic" => panic!("deliberate"),
            other => panic!("unknown mode {other}"),
        }
    }

    #[test]
    fn binlog_crash_flush_keeps_the_last_records() {
        use std::os::unix::process::ExitStatusExt;
        let exe = std::env::current_exe().unwrap();
        for (how, signal) in [
            ("exit", None),
            ("abort", Some(libc::SIGABRT)),
            ("kill", Some(libc::SIGBUS)),
            ("fault", Some(libc::SIGSEGV)),
            // The runtime reports the overflow, then aborts (SIGABRT). In a debug build
            // the nested SIGABRT handler can overflow the small alternate signal stack:
            // the kernel then kills with SIGSEGV, after our first flush.
            ("overflow", None),
            ("panic", None),
        ] {
            let t = Tmp::new(how);
            let st = std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "binlog::tests::binlog_crash_child",
                    "--ignored",
                    "--test-threads=1",
                ])
                .env("CRYO_BINLOG_CRASH", how)
                .env("CRYO_BINLOG_CRASH_FILE", &t.0)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            match (how, st.signal()) {
                ("overflow", Some(libc::SIGABRT | libc::SIGSEGV)) => {}
                (_, got) => assert_eq!(got, signal, "{how}: {st:?}"),
            }
            let (lines, rep) = decode_text(&t.bytes());
            // Every record is there; a writer killed by a signal never wrote its END
            // record, which the decoder reports (and nothing else).
            if signal.is_none() && how != "overflow" {
                assert!(rep.is_complete(), "{how}: {rep}");
            } else {
                assert!(
                    rep.damage.iter().all(|d| d.kind == DamageKind::NotClosed),
                    "{how}: {rep}"
                );
            }
            let want = if how == "panic" { 4 } else { 3 };
            assert_eq!(lines.len(), want, "{how}: {lines:?}");
            assert!(
                lines[2].ends_with(&format!("before the end i=2 how={how}")),
                "{how}: {lines:?}"
            );
            if how == "panic" {
                assert!(lines[3].contains("ERROR panicked at=src/binlog/mod.rs:"));
                assert!(lines[3].ends_with("message=deliberate"), "{lines:?}");
            }
        }
    }

    /// `cargo test --release --lib binlog_bench -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn binlog_bench_vs_text() {
        const N: u64 = 1_000_000;
        let dir = std::path::Path::new("/dev/shm");
        let bin_path = dir.join(format!("cryo-bench-{}.bin", std::process::id()));
        let text_path = dir.join(format!("cryo-bench-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&bin_path);
        let _ = std::fs::remove_file(&text_path);

        fn run(l: &dyn Log) -> f64 {
            let t = std::time::Instant::now();
            for i in 0..N {
                let addr = 0x7f00_0000_0000u64 + i * 4096;
                log::debug!(logger: l, vma = i, start = addr, name = "[heap]"; "vma");
            }
            l.flush();
            t.elapsed().as_nanos() as f64 / N as f64
        }

        // Logging off: the macros' max-level check skips the record.
        log::set_max_level(LevelFilter::Off);
        let off = BinLogger::create(&bin_path, LevelFilter::Off).unwrap();
        let off_ns = run(&off);
        // A sink that filters every record (record built, one dynamic call).
        log::set_max_level(LevelFilter::Trace);
        let filtered_ns = run(&off);
        drop(off);
        let _ = std::fs::remove_file(&bin_path);

        let bin = BinLogger::create(&bin_path, LevelFilter::Trace).unwrap();
        let bin_ns = run(&bin);
        drop(bin);
        let bin_size = std::fs::metadata(&bin_path).unwrap().len();

        crate::logging::init_file(&text_path, LevelFilter::Trace, false).unwrap();
        let text_ns = run(log::logger());
        let text_size = std::fs::metadata(&text_path).unwrap().len();

        let bytes = std::fs::read(&bin_path).unwrap();
        let t = std::time::Instant::now();
        let mut out = std::io::BufWriter::new(std::fs::File::create("/dev/null").unwrap());
        let rep = decode(&bytes, LevelFilter::Trace, &mut out, false);
        let dec_ns = t.elapsed().as_nanos() as f64 / N as f64;
        assert!(rep.is_complete() && rep.records == N, "{rep}");

        println!("{N} records with 3 key-values (u64, u64, &str), /dev/shm:");
        println!("  logging off:   {off_ns:7.1} ns/record");
        println!("  sink filters:  {filtered_ns:7.1} ns/record");
        println!(
            "  binary sink:   {bin_ns:7.1} ns/record, {:.1} bytes/record",
            bin_size as f64 / N as f64
        );
        println!(
            "  text sink:     {text_ns:7.1} ns/record, {:.1} bytes/record",
            text_size as f64 / N as f64
        );
        println!("  decode (text): {dec_ns:7.1} ns/record");
        let _ = std::fs::remove_file(&bin_path);
        let _ = std::fs::remove_file(&text_path);
    }

    #[test]
    fn binlog_closed_sessions_and_cut_ones() {
        let t = Tmp::new("close");
        let l = BinLogger::create_closing(&t.0, LevelFilter::Trace).unwrap();
        log_kvs(&l, Level::Info, &[]);
        log_kvs(&l, Level::Info, &[]);
        l.flush_buffer();
        // Not closed yet: the session reads as cut off, after both records.
        let (lines, rep) = decode_text(&t.bytes());
        assert_eq!(lines.len(), 2);
        assert!(matches!(rep.damage.as_slice(), [d] if d.kind == DamageKind::NotClosed));
        l.close();
        let (lines, rep) = decode_text(&t.bytes());
        assert_eq!(lines.len(), 2);
        assert!(rep.is_complete(), "{rep}");
        // A second, unclosed session appended: the first stays whole.
        let l2 = BinLogger::create_closing(&t.0, LevelFilter::Trace).unwrap();
        log_kvs(&l2, Level::Warn, &[]);
        l2.flush_buffer();
        let (lines, rep) = decode_text(&t.bytes());
        assert_eq!((lines.len(), rep.sessions), (3, 2));
        assert_eq!(rep.damage.len(), 1);
        // Cut between the two records of the first session: no longer whole.
        let b = t.bytes();
        let first_end = b.windows(2).position(|w| w == [sink::T_END, 0]).unwrap();
        let (_, rep) = decode_text(&b[..first_end]);
        assert!(!rep.is_complete());
    }
}
