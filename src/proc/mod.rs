//! Pure parsers for `/proc/PID/*` text. They take `&str` so they are tested on fixtures
//! and fuzzed without a live process; `read_*` helpers add the file read.

use crate::error::{Error, Result};
use std::path::Path;

pub mod smaps;
pub mod timers;
pub use smaps::{parse_smaps, Vma};

pub fn read(pid: i32, what: &str) -> Result<String> {
    let path = format!("/proc/{pid}/{what}");
    std::fs::read_to_string(&path).map_err(|e| Error::proc_io(pid, &path, e))
}

pub fn read_bytes(pid: i32, what: &str) -> Result<Vec<u8>> {
    let path = format!("/proc/{pid}/{what}");
    std::fs::read(&path).map_err(|e| Error::proc_io(pid, &path, e))
}

pub fn read_link(pid: i32, what: &str) -> Result<String> {
    let path = format!("/proc/{pid}/{what}");
    std::fs::read_link(&path)
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(|e| Error::proc_io(pid, &path, e))
}

fn bad(path: &str, msg: impl Into<String>) -> Error {
    Error::Parse {
        path: path.to_string(),
        msg: msg.into(),
    }
}

/// The fields of `/proc/PID/stat` cryo uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stat {
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub flags: u64,
    pub nice: i64,
    pub num_threads: i64,
    pub start_time: u64,
    pub start_code: u64,
    pub end_code: u64,
    pub start_stack: u64,
    pub exit_signal: i32,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    pub rt_priority: u32,
    pub policy: u32,
}

pub fn parse_stat(s: &str) -> Result<Stat> {
    const P: &str = "stat";
    let open = s.find('(').ok_or_else(|| bad(P, "no '('"))?;
    let close = s.rfind(')').ok_or_else(|| bad(P, "no ')'"))?;
    if close < open {
        return Err(bad(P, "')' before '('"));
    }
    let comm = s[open + 1..close].to_string();
    // Field 3 (state) is rest[0]; field N is rest[N - 3].
    let rest: Vec<&str> = s[close + 1..].split_whitespace().collect();
    if rest.len() < 50 {
        return Err(bad(P, format!("{} fields after comm, need 50", rest.len())));
    }
    let num = |field: usize| -> Result<u64> {
        rest[field - 3]
            .parse::<i64>()
            .map(|v| v as u64)
            .or_else(|_| rest[field - 3].parse::<u64>())
            .map_err(|_| {
                bad(
                    P,
                    format!("field {field} is not a number: {:?}", rest[field - 3]),
                )
            })
    };
    Ok(Stat {
        comm,
        state: rest[0].chars().next().unwrap_or('?'),
        ppid: num(4)? as i32,
        pgid: num(5)? as i32,
        sid: num(6)? as i32,
        flags: num(9)?,
        nice: num(19)? as i64,
        num_threads: num(20)? as i64,
        start_time: num(22)?,
        start_code: num(26)?,
        end_code: num(27)?,
        start_stack: num(28)?,
        exit_signal: num(38)? as i32,
        start_data: num(45)?,
        end_data: num(46)?,
        start_brk: num(47)?,
        arg_start: num(48)?,
        arg_end: num(49)?,
        env_start: num(50)?,
        env_end: num(51)?,
        rt_priority: num(40)? as u32,
        policy: num(41)? as u32,
    })
}

/// The fields of `/proc/PID/status` cryo uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    pub umask: u32,
    pub tgid: i32,
    pub threads: u32,
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    pub groups: Vec<u32>,
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
    pub no_new_privs: bool,
    pub seccomp: u32,
}

pub fn parse_status(s: &str) -> Result<Status> {
    const P: &str = "status";
    let mut st = Status::default();
    let ids = |v: &str| -> Result<[u32; 4]> {
        let n: Vec<u32> = v
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        n.try_into()
            .map_err(|_| bad(P, format!("bad id list {v:?}")))
    };
    let hex =
        |v: &str| u64::from_str_radix(v.trim(), 16).map_err(|_| bad(P, format!("bad hex {v:?}")));
    for line in s.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k {
            "Umask" => st.umask = u32::from_str_radix(v, 8).map_err(|_| bad(P, "bad Umask"))?,
            "Tgid" => st.tgid = v.parse().map_err(|_| bad(P, "bad Tgid"))?,
            "Threads" => st.threads = v.parse().map_err(|_| bad(P, "bad Threads"))?,
            "Uid" => st.uids = ids(v)?,
            "Gid" => st.gids = ids(v)?,
            "Groups" => {
                st.groups = v
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            }
            "CapInh" => st.cap_inh = hex(v)?,
            "CapPrm" => st.cap_prm = hex(v)?,
            "CapEff" => st.cap_eff = hex(v)?,
            "CapBnd" => st.cap_bnd = hex(v)?,
            "CapAmb" => st.cap_amb = hex(v)?,
            "NoNewPrivs" => st.no_new_privs = v == "1",
            "Seccomp" => st.seccomp = v.parse().map_err(|_| bad(P, "bad Seccomp"))?,
            _ => {}
        }
    }
    Ok(st)
}

/// `/proc/PID/fdinfo/N`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FdInfo {
    pub pos: u64,
    pub flags: u32,
    pub mnt_id: i32,
}

pub fn parse_fdinfo(s: &str) -> Result<FdInfo> {
    const P: &str = "fdinfo";
    let mut fi = FdInfo::default();
    for line in s.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k {
            "pos" => fi.pos = v.parse().map_err(|_| bad(P, "bad pos"))?,
            "flags" => fi.flags = u32::from_str_radix(v, 8).map_err(|_| bad(P, "bad flags"))?,
            "mnt_id" => fi.mnt_id = v.parse().map_err(|_| bad(P, "bad mnt_id"))?,
            _ => {}
        }
    }
    Ok(fi)
}

/// `/proc/PID/auxv` as (type, value) words.
pub fn parse_auxv(b: &[u8]) -> Vec<u64> {
    b.chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or_default()))
        .collect()
}

/// Peak resident memory of this process (VmHWM) in KiB: what the dumper itself cost.
pub fn own_peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// `/proc/PID/limits`: (soft, hard) per resource, in resource-number order. Read
/// from /proc rather than with prlimit64, which needs CAP_SYS_RESOURCE for a process of
/// another user.
pub fn parse_limits(s: &str) -> Result<Vec<(u64, u64)>> {
    const P: &str = "limits";
    let val = |v: &str| -> Result<u64> {
        match v.trim() {
            "unlimited" => Ok(u64::MAX),
            n => n.parse().map_err(|_| bad(P, format!("bad limit {n:?}"))),
        }
    };
    let mut out = Vec::new();
    // Columns: name (25) ' ' soft (20) ' ' hard (20) ' ' units.
    for line in s.lines().skip(1) {
        let soft = line
            .get(26..46)
            .ok_or_else(|| bad(P, format!("short line {line:?}")))?;
        let hard = line
            .get(47..67)
            .or_else(|| line.get(47..))
            .ok_or_else(|| bad(P, format!("short line {line:?}")))?;
        out.push((val(soft)?, val(hard)?));
    }
    Ok(out)
}

/// Whether `/proc/PID` exists.
pub fn exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_in_comm() {
        let s = "1234 (a b) c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 5555 1000 10 \
                 18446744073709551615 4194304 4198400 140737488346112 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 \
                 6299000 6299100 6300000 140737488347000 140737488347100 140737488347100 140737488347200 0\n";
        let st = parse_stat(s).unwrap();
        assert_eq!(st.comm, "a b) c)");
        assert_eq!(st.state, 'S');
        assert_eq!((st.ppid, st.pgid, st.sid), (1, 1234, 1234));
        assert_eq!(st.start_code, 4194304);
        assert_eq!(st.exit_signal, 17);
        assert_eq!(st.start_brk, 6300000);
        assert_eq!(st.env_end, 140737488347200);
    }

    #[test]
    fn stat_truncated_is_error() {
        assert!(parse_stat("12 (x) S 1 2").is_err());
        assert!(parse_stat("").is_err());
    }

    #[test]
    fn status_fields() {
        let s = "Name:\tsleep\nUmask:\t0022\nTgid:\t77\nUid:\t0\t1\t2\t3\nGid:\t4\t5\t6\t7\nGroups:\t10 20 \n\
                 Threads:\t1\nCapEff:\t000001ffffffffff\nNoNewPrivs:\t1\nSeccomp:\t0\n";
        let st = parse_status(s).unwrap();
        assert_eq!(st.umask, 0o22);
        assert_eq!(st.uids, [0, 1, 2, 3]);
        assert_eq!(st.groups, vec![10, 20]);
        assert_eq!(st.cap_eff, 0x1ff_ffff_ffff);
        assert!(st.no_new_privs);
    }

    #[test]
    fn limits_table() {
        let s = "Limit                     Soft Limit           Hard Limit           Units     \n\
                 Max cpu time              unlimited            unlimited            seconds   \n\
                 Max open files            200                  1048576              files     \n\
                 Max nice priority         0                    0                    \n";
        assert_eq!(
            parse_limits(s).unwrap(),
            vec![(u64::MAX, u64::MAX), (200, 1048576), (0, 0)]
        );
        assert!(parse_limits("Limit\nMax x").is_err());
    }

    #[test]
    fn fdinfo_fields() {
        let fi = parse_fdinfo("pos:\t1234\nflags:\t02102002\nmnt_id:\t25\nino:\t5\n").unwrap();
        assert_eq!(
            fi,
            FdInfo {
                pos: 1234,
                flags: 0o2102002,
                mnt_id: 25
            }
        );
    }
}
