//! `hack/bench`: cryo's dump and restore next to this machine's own limits, measured in
//! the same run. Prints a markdown table (pasted into docs/benchmarks.md).
//!
//! Limits: memcpy, process_vm_readv (4 MiB window), sequential write to the image medium
//! (/dev/shm), first-touch page faults. For the memory workload at each size: dump time,
//! freeze time, restore time, throughput ratios, image size, peak RSS of cryo itself.

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

fn gbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

fn memcpy_limit() -> f64 {
    let n = 256 * MIB;
    let src = vec![1u8; n];
    let mut dst = vec![0u8; n];
    dst.copy_from_slice(&src); // fault both in first
    let t = Instant::now();
    for _ in 0..4 {
        dst.copy_from_slice(&src);
        std::hint::black_box(&dst);
    }
    gbps(4 * n, t.elapsed())
}

fn first_touch_limit() -> (f64, f64) {
    let n = 256 * MIB;
    let t = Instant::now();
    // A fresh anonymous mapping: each first write is one page fault.
    let len = std::num::NonZeroUsize::new(n).unwrap();
    // SAFETY: a new private anonymous mapping; only this function touches it, then unmaps it.
    let p = unsafe {
        nix::sys::mman::mmap_anonymous(
            None,
            len,
            nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
            nix::sys::mman::MapFlags::MAP_PRIVATE,
        )
    }
    .expect("mmap");
    let base = p.as_ptr() as *mut u8;
    for i in (0..n).step_by(4096) {
        // SAFETY: `i < n`, inside the mapping made above.
        unsafe { base.add(i).write_volatile(1) };
    }
    let d = t.elapsed();
    // SAFETY: unmaps exactly the mapping made above; nothing refers to it any more.
    let _ = unsafe { nix::sys::mman::munmap(p, n) };
    ((n / 4096) as f64 / d.as_secs_f64(), gbps(n, d))
}

/// A child holding `n` touched bytes, read by us with process_vm_readv.
fn vm_readv_limit() -> f64 {
    let n = 256 * MIB;
    #[allow(clippy::zombie_processes)] // killed and waited for below
    let mut child = Command::new("python3")
        .args([
            "-c",
            &format!("import time; b=bytearray(b'x'*{n}); time.sleep(60)"),
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("python3");
    // Wait until the buffer is resident.
    let rss = |pid: u32| -> usize {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
            * 1024
    };
    while rss(child.id()) < n {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Read the child's biggest anonymous mapping, whatever its exact layout.
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", child.id())).unwrap_or_default();
    let (start, end) = maps
        .lines()
        .filter_map(|l| {
            let r = l.split(' ').next()?;
            let (a, b) = r.split_once('-')?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            ))
        })
        .max_by_key(|(a, b)| b - a)
        .unwrap_or((0, 0));
    let pid = Pid::from_raw(child.id() as i32);
    let mut buf = vec![0u8; 4 * MIB];
    let total = ((end - start) as usize).min(n) / buf.len() * buf.len();
    let t = Instant::now();
    let mut got = 0;
    for _ in 0..4 {
        let mut off = 0;
        while off < total {
            got += cryo::sys::mem::read_remote(pid, start + off as u64, &mut buf).unwrap_or(0);
            off += buf.len();
        }
    }
    let d = t.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    gbps(got, d)
}

fn write_limit(dir: &Path) -> f64 {
    let n = 512 * MIB;
    let p = dir.join("write-test");
    let buf = vec![7u8; 4 * MIB];
    let t = Instant::now();
    let mut f = std::fs::File::create(&p).unwrap();
    for _ in 0..n / buf.len() {
        f.write_all(&buf).unwrap();
    }
    f.sync_all().unwrap();
    let d = t.elapsed();
    let _ = std::fs::remove_file(&p);
    gbps(n, d)
}

/// Runs cryo; returns (wall time, its own peak RSS in KiB, stderr).
fn run_cryo(cryo: &Path, args: &[&str]) -> (Duration, i64, String) {
    let t = Instant::now();
    #[allow(clippy::zombie_processes)] // reaped with wait4 below (for its rusage)
    let mut child = Command::new(cryo)
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    // SAFETY: rusage is plain old data; all-zero is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let mut status = 0;
    // SAFETY: `status` and `ru` are live out-parameters; the pid is our own child.
    unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    let d = t.elapsed();
    assert!(status == 0, "cryo {args:?} failed: {err}");
    let _ = ru;
    // cryo reports its own VmHWM (ru_maxrss would include what it inherited at fork).
    let rss = err
        .split("peak RSS ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1);
    (d, rss, err)
}

/// The "frozen N ms" figure of `cryo dump`'s summary line.
fn frozen_ms(err: &str) -> String {
    err.split("frozen ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap_or("?")
        .to_string()
}

fn dir_size(d: &Path) -> u64 {
    std::fs::read_dir(d)
        .map(|r| {
            r.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Starts a zdtm-style workload in its own session with only stdio open, waits for ready.
fn start_workload(bin: &Path, args: &[&str], ready: &Path) -> Pid {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .arg("--ready")
        .arg(ready)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: close_range and setsid are async-signal-safe; nothing else runs before exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            libc::setsid();
            Ok(())
        });
    }
    #[allow(clippy::zombie_processes)] // reaped by PID by the caller
    let child = cmd.spawn().unwrap();
    while !ready.exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    Pid::from_raw(child.id() as i32)
}

/// One dump → restore → verify cycle of a running workload, timed.
struct Cycle {
    dump: Duration,
    frozen: String,
    dump_rss: i64,
    restore: Duration,
    restore_rss: i64,
    verdict: String,
}

fn cycle(cryo: &Path, pid: Pid, img: &Path, outf: &Path) -> Cycle {
    let (dump, dump_rss, err) = run_cryo(
        cryo,
        &[
            "dump",
            "-t",
            &pid.to_string(),
            "-D",
            img.to_str().unwrap(),
            "-v2",
        ],
    );
    reap_dumped(pid);
    let frozen = frozen_ms(&err);
    let (restore, restore_rss, _) =
        run_cryo(cryo, &["restore", "-d", "-D", img.to_str().unwrap(), "-v2"]);
    let _ = kill(pid, Signal::SIGTERM);
    let _ = waitpid(pid, None);
    let verdict = std::fs::read_to_string(outf)
        .unwrap_or_default()
        .trim()
        .to_string();
    Cycle {
        dump,
        frozen,
        dump_rss,
        restore,
        restore_rss,
        verdict,
    }
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cryo = root.join("target/release/cryo");
    let mem = root.join("test-containers/workloads/bin/mem");
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![64, 512, 2048]
    } else {
        sizes
    };
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let work = PathBuf::from(format!("/dev/shm/cryo-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();

    let memcpy = memcpy_limit();
    let vmr = vm_readv_limit();
    let wr = write_limit(&work);
    let (faults, fault_gbps) = first_touch_limit();
    println!("## Machine limits (same run)\n");
    println!("| limit | value |\n|---|---|");
    println!("| memcpy | {memcpy:.2} GB/s |");
    println!("| process_vm_readv (4 MiB window) | {vmr:.2} GB/s |");
    println!("| write to /dev/shm | {wr:.2} GB/s |");
    println!(
        "| first-touch page faults | {:.0} k pages/s ({fault_gbps:.2} GB/s) |",
        faults / 1e3
    );
    println!();
    println!("## Memory workload (image on /dev/shm)\n");
    // One thread copies then writes (dump), or faults in then copies (restore): the
    // machine's bound for each is the harmonic combination of the two limits.
    let dump_bound = 1.0 / (1.0 / vmr + 1.0 / wr);
    let rst_bound = 1.0 / (1.0 / memcpy + 1.0 / fault_gbps);
    println!("Bounds: dump ≤ readv+write = {dump_bound:.2} GB/s; restore ≤ memcpy+first-touch = {rst_bound:.2} GB/s.\n");
    println!("| size | dump | frozen | dump GB/s | % of bound | restore | restore GB/s | % of bound | image | dump peak RSS | restore peak RSS | verified |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for mib in sizes {
        let d = work.join(format!("m{mib}"));
        std::fs::create_dir_all(&d).unwrap();
        let ready = d.join("ready");
        let outf = d.join("out");
        let pid = start_workload(
            &mem,
            &[
                "--mib",
                &mib.to_string(),
                "--tmpdir",
                d.to_str().unwrap(),
                "--out",
                outf.to_str().unwrap(),
            ],
            &ready,
        );
        let img = d.join("img");
        let c = cycle(&cryo, pid, &img, &outf);
        let (td, tr, frozen, rss_d, rss_r, verdict) = (
            c.dump,
            c.restore,
            c.frozen,
            c.dump_rss,
            c.restore_rss,
            c.verdict,
        );
        let size = dir_size(&img);
        let dump_gbps = gbps(size as usize, td);
        let rst_gbps = gbps(size as usize, tr);
        println!(
            "| {mib} MiB | {:.0} ms | {frozen} ms | {dump_gbps:.2} | {:.0}% | {:.0} ms | {rst_gbps:.2} | {:.0}% | {:.0} MiB | {} MiB | {} MiB | {verdict} |",
            td.as_secs_f64() * 1e3,
            100.0 * dump_gbps / dump_bound,
            tr.as_secs_f64() * 1e3,
            100.0 * rst_gbps / rst_bound,
            size as f64 / MIB as f64,
            rss_d / 1024,
            rss_r / 1024,
        );
        let _ = std::fs::remove_dir_all(&d);
    }
    shape_bench(
        &cryo,
        &work,
        "One process with 100 threads",
        &root.join("test-containers/workloads/bin/threads"),
        &["--threads", "100"],
    );
    shape_bench(
        &cryo,
        &work,
        "A tree of 100 processes",
        &root.join("test-containers/workloads/bin/fanout"),
        &["--procs", "100"],
    );
    redis_bench(&cryo, &work, 100_000);
    log_cost(
        &cryo,
        &work,
        "mem 1 GiB",
        &mem,
        &["--mib", "1024", "--tmpdir", work.to_str().unwrap()],
    );
    log_cost(
        &cryo,
        &work,
        "50 processes x 200 VMAs x 50 fds",
        &root.join("test-containers/workloads/bin/fanout"),
        &["--procs", "50", "--vmas", "200", "--fds", "50"],
    );
    let _ = std::fs::remove_dir_all(&work);
}

/// Dump and restore times (median of 3 cycles) with logging off (-v0), text at full
/// verbosity and binary at full verbosity; log size per record.
fn log_cost(cryo: &Path, work: &Path, title: &str, bin: &Path, args: &[&str]) {
    let d = work.join("logcost");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let (ready, outf) = (d.join("ready"), d.join("out"));
    let mut a: Vec<&str> = args.to_vec();
    a.extend(["--out", outf.to_str().unwrap()]);
    let pid = start_workload(bin, &a, &ready);
    let modes: [(&str, &[&str]); 3] = [
        ("off (-v0)", &["-v0", "--log-format", "text"]),
        ("text -v4", &["-v4", "--log-format", "text"]),
        ("binary -v4", &["-v4", "--log-format", "binary"]),
    ];
    println!("\n## Logging cost: {title} (median of 3 dump+restore cycles)\n");
    println!("| log | dump | vs off | restore | vs off | dump log | records | bytes/record |\n|---|---|---|---|---|---|---|---|");
    let (mut off_d, mut off_r) = (0.0, 0.0);
    let p = pid.to_string();
    for (name, flags) in modes {
        let (mut td, mut tr) = (Vec::new(), Vec::new());
        let (mut size, mut records) = (0, 0);
        for i in 0..3 {
            let img = d.join(format!("img-{i}"));
            let log = d.join(format!("log-{i}"));
            let mut argv = vec![
                "dump",
                "-o",
                log.to_str().unwrap(),
                "-t",
                &p,
                "-D",
                img.to_str().unwrap(),
            ];
            argv.extend_from_slice(flags);
            td.push(run_cryo(cryo, &argv).0.as_secs_f64() * 1e3);
            reap_dumped(pid);
            let rlog = d.join(format!("rlog-{i}"));
            let mut argv = vec![
                "restore",
                "-d",
                "-o",
                rlog.to_str().unwrap(),
                "-D",
                img.to_str().unwrap(),
            ];
            argv.extend_from_slice(flags);
            tr.push(run_cryo(cryo, &argv).0.as_secs_f64() * 1e3);
            size = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
            records = if name.starts_with("binary") {
                let out = Command::new(cryo)
                    .args(["log", "decode"])
                    .arg(&log)
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).lines().count()
            } else {
                std::fs::read_to_string(&log)
                    .map(|s| s.lines().count())
                    .unwrap_or(0)
            };
            let _ = std::fs::remove_dir_all(&img);
            let _ = std::fs::remove_file(&log);
            let _ = std::fs::remove_file(&rlog);
        }
        td.sort_by(|a, b| a.total_cmp(b));
        tr.sort_by(|a, b| a.total_cmp(b));
        let (md, mr) = (td[1], tr[1]);
        if off_d == 0.0 {
            (off_d, off_r) = (md, mr);
        }
        let per = if records > 0 {
            size as f64 / records as f64
        } else {
            0.0
        };
        println!(
            "| {name} | {md:.0} ms | {:+.1}% | {mr:.0} ms | {:+.1}% | {:.0} KiB | {records} | {per:.0} |",
            100.0 * (md - off_d) / off_d,
            100.0 * (mr - off_r) / off_r,
            size as f64 / 1024.0
        );
    }
    let _ = kill(pid, Signal::SIGTERM);
    let _ = waitpid(pid, None);
    let verdict = std::fs::read_to_string(&outf).unwrap_or_default();
    println!("\nverified after 9 cycles: {}", verdict.trim());
    let _ = std::fs::remove_dir_all(&d);
}

/// Reaps a dumped (killed) workload and the members of its tree orphaned to us.
fn reap_dumped(pid: Pid) {
    let _ = waitpid(pid, None);
    while let Ok(st) = waitpid(
        Pid::from_raw(-1),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    ) {
        if st == nix::sys::wait::WaitStatus::StillAlive {
            break;
        }
    }
}

/// Dump and restore of a workload of a given shape (many threads, many processes).
fn shape_bench(cryo: &Path, work: &Path, title: &str, bin: &Path, args: &[&str]) {
    let d = work.join("shape");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let (ready, outf) = (d.join("ready"), d.join("out"));
    let mut a: Vec<&str> = args.to_vec();
    a.extend(["--out", outf.to_str().unwrap()]);
    let pid = start_workload(bin, &a, &ready);
    let c = cycle(cryo, pid, &d.join("img"), &outf);
    let (td, tr, frozen, verdict) = (c.dump, c.restore, c.frozen, c.verdict);
    println!("\n## {title}\n");
    println!("| dump | frozen | restore | verified |\n|---|---|---|---|");
    println!(
        "| {:.0} ms | {frozen} ms | {:.0} ms | {verdict} |",
        td.as_secs_f64() * 1e3,
        tr.as_secs_f64() * 1e3
    );
}

/// redis-server holding `keys` keys, with a client (this process) connected over TCP:
/// dump (--tcp-established, the server is killed), restore, then the same connection
/// must still answer DBSIZE with every key.
fn redis_bench(cryo: &Path, work: &Path, keys: usize) {
    use std::io::{BufRead, BufReader, Write};
    let Some(server) = ["/usr/bin/redis-server", "/usr/sbin/redis-server"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        println!(
            "\n## redis-server\n\nredis-server not installed: skipped (hack/setup.sh installs it)"
        );
        return;
    };
    let d = work.join("redis");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let port = 20000 + (std::process::id() % 20000) as u16;
    let mut cmd = Command::new(server);
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--dir",
        d.to_str().unwrap(),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    // SAFETY: close_range and setsid are async-signal-safe; nothing else runs before exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            libc::setsid();
            Ok(())
        });
    }
    #[allow(clippy::zombie_processes)] // reaped by PID below
    let child = cmd.spawn().unwrap();
    let pid = Pid::from_raw(child.id() as i32);
    let t = Instant::now();
    let conn = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(c) => break c,
            Err(_) if t.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("redis did not start: {e}"),
        }
    };
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut w = std::io::BufWriter::new(conn.try_clone().unwrap());
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    for i in 0..keys {
        let (k, v) = (format!("key:{i}"), format!("value:{i}:{}", "x".repeat(32)));
        write!(
            w,
            "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n",
            k.len(),
            v.len()
        )
        .unwrap();
    }
    w.flush().unwrap();
    for _ in 0..keys {
        line.clear();
        r.read_line(&mut line).unwrap();
    }
    let mut ask = |q: &str| -> String {
        w.write_all(q.as_bytes()).unwrap();
        w.flush().unwrap();
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        l.trim().to_string()
    };
    let before = ask("DBSIZE\r\n");
    let img = d.join("img");
    let (td, rss_d, err) = run_cryo(
        cryo,
        &[
            "dump",
            "-t",
            &pid.to_string(),
            "-D",
            img.to_str().unwrap(),
            "--tcp-established",
            "-v2",
        ],
    );
    reap_dumped(pid);
    let frozen = frozen_ms(&err);
    let (tr, rss_r, _) = run_cryo(
        cryo,
        &[
            "restore",
            "-d",
            "-D",
            img.to_str().unwrap(),
            "--tcp-established",
            "-v2",
        ],
    );
    let after = ask("DBSIZE\r\n");
    let verdict = if after == before && after == format!(":{keys}") {
        "PASS (same connection, every key)".to_string()
    } else {
        format!("FAIL ({before} before, {after} after)")
    };
    let _ = kill(pid, Signal::SIGKILL);
    let _ = waitpid(pid, None);
    println!("\n## redis-server, {keys} keys, client connected through the checkpoint\n");
    println!("| dump | frozen | restore | image | dump peak RSS | restore peak RSS | verified |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {:.0} ms | {frozen} ms | {:.0} ms | {:.1} MiB | {} MiB | {} MiB | {verdict} |",
        td.as_secs_f64() * 1e3,
        tr.as_secs_f64() * 1e3,
        dir_size(&img) as f64 / MIB as f64,
        rss_d / 1024,
        rss_r / 1024
    );
    let _ = std::fs::remove_dir_all(&d);
}
