//! `/proc/PID/timers`: the POSIX timers of a process (kernel `show_timer`), one record
//! of four lines per timer:
//! ```text
//! ID: 3
//! signal: 34/00000000c0ffee01
//! notify: signal/tid.4242
//! ClockID: 1
//! ```

use crate::error::{Error, Result};

const P: &str = "timers";

/// One POSIX timer as the kernel lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PosixTimer {
    pub id: i32,
    pub signo: u32,
    /// `sigev_value` (the pointer member).
    pub sival: u64,
    /// `sigev_notify`: SIGEV_SIGNAL (0), SIGEV_NONE (1), SIGEV_THREAD (2), each possibly
    /// with SIGEV_THREAD_ID (4).
    pub notify: u32,
    /// The pid (or with SIGEV_THREAD_ID the tid) signals go to.
    pub target: i32,
    /// Clock id, CPU clocks in the kernel's encoding (negative).
    pub clock: i32,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Parse {
        path: P.into(),
        msg: msg.into(),
    }
}

pub fn parse_timers(s: &str) -> Result<Vec<PosixTimer>> {
    let mut out: Vec<PosixTimer> = Vec::new();
    for line in s.lines().filter(|l| !l.trim().is_empty()) {
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("line without ':': {line:?}")))?;
        let v = v.trim();
        if k == "ID" {
            let id = v.parse().map_err(|_| bad(format!("bad ID {v:?}")))?;
            out.push(PosixTimer {
                id,
                ..Default::default()
            });
            continue;
        }
        let t = out
            .last_mut()
            .ok_or_else(|| bad(format!("{k} before the first ID")))?;
        match k {
            "signal" => {
                let (sig, val) = v
                    .split_once('/')
                    .ok_or_else(|| bad(format!("bad signal {v:?}")))?;
                t.signo = sig.parse().map_err(|_| bad(format!("bad signo {sig:?}")))?;
                t.sival =
                    u64::from_str_radix(val, 16).map_err(|_| bad(format!("bad value {val:?}")))?;
            }
            "notify" => {
                let (how, whom) = v
                    .split_once('/')
                    .ok_or_else(|| bad(format!("bad notify {v:?}")))?;
                let base = match how {
                    "signal" => 0,
                    "none" => 1,
                    "thread" => 2,
                    _ => return Err(bad(format!("unknown notify {how:?}"))),
                };
                let (kind, id) = whom
                    .split_once('.')
                    .ok_or_else(|| bad(format!("bad notify target {whom:?}")))?;
                t.notify = match kind {
                    "pid" => base,
                    "tid" => base | 4,
                    _ => return Err(bad(format!("bad notify target {whom:?}"))),
                };
                t.target = id.parse().map_err(|_| bad(format!("bad target {id:?}")))?;
            }
            "ClockID" => t.clock = v.parse().map_err(|_| bad(format!("bad ClockID {v:?}")))?,
            _ => {} // newer kernels may add lines
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_output() {
        let s = "ID: 47\nsignal: 12/0000000000001234\nnotify: none/pid.8104\nClockID: -2\n\
                 ID: 44\nsignal: 34/00000000c0ffee01\nnotify: signal/tid.8105\nClockID: 7\n";
        let t = parse_timers(s).unwrap();
        assert_eq!(
            t,
            vec![
                PosixTimer {
                    id: 47,
                    signo: 12,
                    sival: 0x1234,
                    notify: 1,
                    target: 8104,
                    clock: -2
                },
                PosixTimer {
                    id: 44,
                    signo: 34,
                    sival: 0xc0ffee01,
                    notify: 4,
                    target: 8105,
                    clock: 7
                },
            ]
        );
        assert!(parse_timers("").unwrap().is_empty());
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_timers("signal: 1/0\n").is_err());
        assert!(parse_timers("ID: x\n").is_err());
        assert!(parse_timers("ID: 1\nnotify: weird/pid.1\n").is_err());
        assert!(parse_timers("ID: 1\nsignal: 1/zz\n").is_err());
    }
}
