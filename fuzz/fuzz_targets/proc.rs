//! The /proc parsers: the kernel's text is trusted less than it looks (comm and paths
//! are user data): stat, status, smaps, fdinfo (and the per-kind fdinfo lines of epoll,
//! inotify and locks), timers, mountinfo, NSpid, limits, auxv.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = cryo::proc::parse_stat(s);
        let _ = cryo::proc::parse_status(s);
        let _ = cryo::proc::parse_smaps(s);
        let _ = cryo::proc::parse_fdinfo(s);
        let _ = cryo::proc::parse_limits(s);
        let _ = cryo::proc::timers::parse_timers(s);
        let _ = cryo::namespaces::parse_mountinfo(s);
        let _ = cryo::namespaces::parse_nspid(s);
        let _ = cryo::namespaces::parse_ns_link(s);
        for line in s.lines() {
            let _ = cryo::files::epoll::parse_tfd(line);
            let _ = cryo::files::inotify::parse_watch(line);
            let _ = cryo::files::locks::parse_line(line);
        }
    }
    let _ = cryo::proc::parse_auxv(data);
});
