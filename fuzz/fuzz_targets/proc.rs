//! The /proc parsers: the kernel's text is trusted less than it looks (comm is user data).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = cryo::proc::parse_stat(s);
        let _ = cryo::proc::parse_status(s);
        let _ = cryo::proc::parse_smaps(s);
        let _ = cryo::proc::parse_fdinfo(s);
    }
    let _ = cryo::proc::parse_auxv(data);
});
