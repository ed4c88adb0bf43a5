//! Every `unsafe` block of cryo lives under this module: one small, named wrapper per
//! syscall or ioctl, each with a `// SAFETY:` line. The rest of the engine calls these
//! wrappers and never touches raw pointers.

pub mod fd;
pub mod inet;
pub mod ipc;
pub mod mem;
pub mod net;
pub mod pidfd;
pub mod process;
pub mod ptrace;

use nix::errno::Errno;

/// A syscall's new fd (or its `-1`/errno) as an `OwnedFd`.
pub(crate) fn owned_fd(ret: libc::c_long) -> Result<std::os::fd::OwnedFd, Errno> {
    let fd = check(ret)? as std::os::fd::RawFd;
    // SAFETY: the kernel just returned this fd to us; nobody else owns it.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Converts a raw `-1`/errno syscall return into a `Result`.
pub(crate) fn check(ret: libc::c_long) -> Result<libc::c_long, Errno> {
    if ret == -1 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// The feature bits of the kernel's userfaultfd API (UFFDIO_API handshake).
pub fn uffd_api_features() -> Result<u64, Errno> {
    #[repr(C)]
    struct UffdioApi {
        api: u64,
        features: u64,
        ioctls: u64,
    }
    const UFFDIO_API: u64 = mem::ioc(3, 0xAA, 0x3F, std::mem::size_of::<UffdioApi>());
    // SAFETY: userfaultfd takes flags only and returns a new fd.
    let fd = owned_fd(unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) })?;
    let mut api = UffdioApi {
        api: 0xAA,
        features: 0,
        ioctls: 0,
    };
    // SAFETY: `api` is a live, correctly sized uffdio_api.
    let r = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            UFFDIO_API as _,
            &mut api as *mut UffdioApi,
        )
    };
    check(r as libc::c_long)?;
    Ok(api.features)
}

/// Whether the kernel tracks soft-dirty bits: a page we just wrote must show bit 55 in
/// /proc/self/pagemap (the bit reads 0 on kernels built without soft-dirty).
pub fn has_soft_dirty() -> bool {
    use std::os::unix::fs::FileExt;
    let page = Box::new([1u8; 8192]);
    let addr = page.as_ptr() as u64 + 4096 - 1;
    let addr = addr & !4095;
    let mut e = [0u8; 8];
    let ok = std::fs::File::open("/proc/self/pagemap")
        .and_then(|f| f.read_exact_at(&mut e, addr / 4096 * 8));
    drop(page);
    ok.is_ok() && u64::from_ne_bytes(e) & (1 << 55) != 0
}

/// Whether `prctl(PR_SET_MM, PR_SET_MM_MAP…)` exists (CONFIG_CHECKPOINT_RESTORE).
pub fn probe_prctl_mm_map() -> bool {
    const PR_SET_MM_MAP_SIZE: libc::c_ulong = 15;
    let mut size: u32 = 0;
    // SAFETY: PR_SET_MM_MAP_SIZE writes one u32 to the pointer we pass.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_MM,
            PR_SET_MM_MAP_SIZE,
            &mut size as *mut u32,
            0,
            0,
        )
    };
    r == 0 && size == 104
}

/// Whether `prctl(PR_TIMER_CREATE_RESTORE_IDS)` exists (Linux 6.14): asks for the mode.
pub fn probe_timer_restore_ids() -> bool {
    const PR_TIMER_CREATE_RESTORE_IDS: libc::c_int = 77;
    const GET: libc::c_ulong = 2;
    // SAFETY: the GET form only returns 0 or 1; no pointer is passed.
    let r = unsafe { libc::prctl(PR_TIMER_CREATE_RESTORE_IDS, GET, 0, 0, 0) };
    r >= 0
}
