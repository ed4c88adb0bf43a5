//! Credentials: uids/gids, groups, the five capability sets, securebits and
//! no_new_privs. Applied last on restore (by injected syscalls, in the order that keeps
//! the privileges each step needs), because dropping them earlier would forbid the
//! steps that rebuild the address space.

use crate::error::Result;
use crate::ptrace::Injector;
use cryo_proto::criu::CredsEntry;
use cryo_proto::cryo::TaskExtraEntry;

const CAP_LAST: u32 = 40;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const SECBIT_KEEP_CAPS: u32 = 1 << 4;
const PR_SET_NO_NEW_PRIVS: u64 = 38;
const PR_CAP_AMBIENT: u64 = 47;
const PR_CAP_AMBIENT_RAISE: u64 = 2;

fn caps(words: &[u32]) -> u64 {
    words.first().copied().unwrap_or(0) as u64 | (words.get(1).copied().unwrap_or(0) as u64) << 32
}

/// Whether `c` is what a fresh root child of cryo already has (nothing to apply).
fn is_full_root(c: &CredsEntry, x: &TaskExtraEntry) -> bool {
    let all = (1u64 << (CAP_LAST + 1)) - 1;
    [
        c.uid, c.euid, c.suid, c.fsuid, c.gid, c.egid, c.sgid, c.fsgid,
    ]
    .iter()
    .all(|&v| v == 0)
        && caps(&c.cap_eff) & all == all
        && caps(&c.cap_prm) & all == all
        && caps(&c.cap_bnd) & all == all
        && caps(&c.cap_inh) == 0
        && x.cap_amb.unwrap_or(0) == 0
        && c.secbits == 0
        && !x.no_new_privs.unwrap_or(false)
}

pub fn restore(
    inj: &Injector,
    c: &CredsEntry,
    x: &TaskExtraEntry,
    own_groups: &[u32],
) -> Result<()> {
    if is_full_root(c, x) && c.groups == own_groups {
        return Ok(());
    }
    let bnd = caps(&c.cap_bnd);
    for cap in 0..=CAP_LAST {
        if bnd & (1 << cap) == 0 {
            inj.call(
                "prctl(PR_CAPBSET_DROP)",
                libc::SYS_prctl,
                &[libc::PR_CAPBSET_DROP as u64, cap as u64],
            )?;
        }
    }
    inj.call(
        "prctl(PR_SET_SECUREBITS)",
        libc::SYS_prctl,
        &[
            libc::PR_SET_SECUREBITS as u64,
            (c.secbits & !SECBIT_KEEP_CAPS) as u64,
        ],
    )?;
    let g: Vec<u8> = c.groups.iter().flat_map(|g| g.to_ne_bytes()).collect();
    let addr = inj.put(0, &g)?;
    inj.call(
        "setgroups",
        libc::SYS_setgroups,
        &[c.groups.len() as u64, addr],
    )?;
    inj.call(
        "setresgid",
        libc::SYS_setresgid,
        &[c.gid as u64, c.egid as u64, c.sgid as u64],
    )?;
    inj.call("setfsgid", libc::SYS_setfsgid, &[c.fsgid as u64])?;
    inj.call(
        "prctl(PR_SET_KEEPCAPS)",
        libc::SYS_prctl,
        &[libc::PR_SET_KEEPCAPS as u64, 1],
    )?;
    inj.call(
        "setresuid",
        libc::SYS_setresuid,
        &[c.uid as u64, c.euid as u64, c.suid as u64],
    )?;
    inj.call("setfsuid", libc::SYS_setfsuid, &[c.fsuid as u64])?;
    // capset(header, data[2]): data = {effective, permitted, inheritable} per 32-bit word.
    let (eff, prm, inh) = (caps(&c.cap_eff), caps(&c.cap_prm), caps(&c.cap_inh));
    let mut b = Vec::with_capacity(8 + 24);
    b.extend_from_slice(&LINUX_CAPABILITY_VERSION_3.to_ne_bytes());
    b.extend_from_slice(&0i32.to_ne_bytes());
    for shift in [0, 32] {
        for v in [eff, prm, inh] {
            b.extend_from_slice(&((v >> shift) as u32).to_ne_bytes());
        }
    }
    let addr = inj.put(0, &b)?;
    inj.call("capset", libc::SYS_capset, &[addr, addr + 8])?;
    let amb = x.cap_amb.unwrap_or(0);
    for cap in 0..=CAP_LAST {
        if amb & (1 << cap) != 0 {
            inj.call(
                "prctl(PR_CAP_AMBIENT)",
                libc::SYS_prctl,
                &[PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap as u64],
            )?;
        }
    }
    let keep = (c.secbits & SECBIT_KEEP_CAPS != 0) as u64;
    inj.call(
        "prctl(PR_SET_KEEPCAPS)",
        libc::SYS_prctl,
        &[libc::PR_SET_KEEPCAPS as u64, keep],
    )?;
    if x.no_new_privs.unwrap_or(false) {
        inj.call(
            "prctl(PR_SET_NO_NEW_PRIVS)",
            libc::SYS_prctl,
            &[PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0],
        )?;
    }
    Ok(())
}
