//! `cryo check`: probes each kernel feature the engine relies on and says what follows
//! from a missing one.

use crate::sys;
use std::os::fd::AsFd;

pub struct Probe {
    pub name: &'static str,
    pub present: bool,
    /// What cryo does without it.
    pub consequence: &'static str,
}

fn uffd_features() -> Option<u64> {
    // UFFD_API handshake on a fresh userfaultfd: the kernel answers with its features.
    sys::uffd_api_features().ok()
}

pub fn probe_all() -> Vec<Probe> {
    let me = nix::unistd::getpid();
    let pagemap_scan = std::fs::File::open("/proc/self/pagemap")
        .ok()
        .map(|f| {
            let mut r = [sys::mem::PageRegion::default(); 1];
            let probe = 0u8;
            let here = &probe as *const u8 as u64 & !4095;
            sys::mem::pagemap_scan(
                f.as_fd(),
                here,
                here + 4096,
                sys::mem::PAGE_IS_PRESENT,
                sys::mem::PAGE_IS_PRESENT,
                &mut r,
            )
            .is_ok()
        })
        .unwrap_or(false);
    let uffd = uffd_features();
    const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
    const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
    let wp_async = uffd
        .is_some_and(|f| f & UFFD_FEATURE_WP_ASYNC != 0 && f & UFFD_FEATURE_WP_UNPOPULATED != 0);
    let rseq = sys::ptrace::probe_rseq_config();
    let pidfd = sys::pidfd::pidfd_open(me)
        .is_ok_and(|fd| sys::pidfd::pidfd_getfd(std::os::fd::AsFd::as_fd(&fd), 0).is_ok());
    let soft_dirty = sys::has_soft_dirty();
    // TCP_REPAIR needs CAP_NET_ADMIN (and CONFIG_CHECKPOINT_RESTORE's sibling options).
    let tcp_repair = sys::inet::socket(libc::AF_INET, libc::SOCK_STREAM, 0).is_ok_and(|s| {
        sys::inet::setsockopt_int(s.as_fd(), libc::IPPROTO_TCP, sys::inet::TCP_REPAIR, 1).is_ok()
    });
    let tfd_ticks = sys::fd::timerfd_create(libc::CLOCK_MONOTONIC, 0)
        .is_ok_and(|t| sys::fd::timerfd_set_ticks(t.as_fd(), 1).is_ok());
    vec![
        Probe {
            name: "clone3 with set_tid",
            present: sys::process::probe_clone3_set_tid(),
            consequence: "restore cannot give processes their old PIDs",
        },
        Probe {
            name: "PAGEMAP_SCAN ioctl",
            present: pagemap_scan,
            consequence: "dump cannot tell which pages exist (needs Linux 6.7)",
        },
        Probe {
            name: "userfaultfd",
            present: uffd.is_some(),
            consequence: "no lazy restore and no dirty tracking",
        },
        Probe {
            name: "userfaultfd WP-async + WP-unpopulated",
            present: wp_async,
            consequence: "pre-dump cannot track written pages without soft-dirty",
        },
        Probe {
            name: "PTRACE_GET_RSEQ_CONFIGURATION",
            present: rseq,
            consequence: "processes using rseq (every glibc ≥ 2.35 program) cannot be dumped",
        },
        Probe {
            name: "pidfd_open + pidfd_getfd",
            present: pidfd,
            consequence: "fds of the target cannot be inspected (pipes, sockets, eventfd …)",
        },
        Probe {
            name: "PR_SET_MM_MAP",
            present: sys::probe_prctl_mm_map(),
            consequence: "restore cannot set brk, arg/env, auxv and /proc/PID/exe",
        },
        Probe {
            name: "PR_TIMER_CREATE_RESTORE_IDS",
            present: sys::probe_timer_restore_ids(),
            consequence: "POSIX timers cannot be restored with their ids (needs Linux 6.14)",
        },
        Probe {
            name: "TCP_REPAIR",
            present: tcp_repair,
            consequence: "established TCP connections cannot be dumped (--tcp-established)",
        },
        Probe {
            name: "TFD_IOC_SET_TICKS",
            present: tfd_ticks,
            consequence: "a timerfd's unread expirations are lost on restore",
        },
        Probe {
            name: "soft-dirty page tracking",
            present: soft_dirty,
            consequence: "none: cryo tracks written pages with userfaultfd WP-async instead",
        },
    ]
}

/// Prints the report; returns whether everything restore and dump need is there.
pub fn run() -> bool {
    let probes = probe_all();
    let mut ok = true;
    for p in &probes {
        if p.present {
            println!("  present  {}", p.name);
        } else {
            println!("  MISSING  {}: {}", p.name, p.consequence);
            if !p.name.starts_with("soft-dirty")
                && !p.name.starts_with("userfaultfd")
                && !p.name.starts_with("PR_TIMER")
                && !p.name.starts_with("TCP_REPAIR")
                && !p.name.starts_with("TFD_")
            {
                ok = false;
            }
        }
    }
    println!(
        "{}",
        if ok {
            "Looks good."
        } else {
            "Some features cryo needs are missing."
        }
    );
    ok
}
