//! The library's error type. Every variant says what failed on which pid / path / syscall,
//! so the CLI can print one line a user can act on.

use nix::errno::Errno;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no such process: {pid}")]
    NoProcess { pid: i32 },

    #[error("{call} on pid {pid}: {source}")]
    Sys {
        call: &'static str,
        pid: i32,
        #[source]
        source: Errno,
    },

    #[error("pid {pid}: {name} (injected syscall) failed: {errno}")]
    Remote {
        pid: i32,
        name: &'static str,
        errno: Errno,
    },

    #[error("pid {pid}: {what}")]
    Trace { pid: i32, what: String },

    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot parse /proc/.../{path}: {msg}")]
    Parse { path: String, msg: String },

    #[error(transparent)]
    Image(#[from] crate::image::ImageError),

    #[error("pid {pid}: cannot dump {what}: {why}")]
    Unsupported { pid: i32, what: String, why: String },

    /// Everything in the tree cryo cannot dump, found in one pass.
    #[error("cannot dump: {}", blockers.join("; "))]
    Blocked { blockers: Vec<String> },

    #[error("cannot restore: pid {pid} is in use by {holder}")]
    PidTaken { pid: i32, holder: String },

    #[error("restore of pid {pid}: {msg}")]
    Restore { pid: i32, msg: String },

    #[error("fault injected at '{0}' (CRYO_FAULT)")]
    Fault(&'static str),

    #[error("{0}")]
    Usage(String),
}

impl Error {
    pub fn sys(call: &'static str, pid: i32) -> impl FnOnce(Errno) -> Error {
        move |source| Error::Sys { call, pid, source }
    }

    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    /// A /proc read failure: a vanished process is reported as such, not as an I/O error.
    pub fn proc_io(pid: i32, path: &str, e: std::io::Error) -> Error {
        if e.kind() == std::io::ErrorKind::NotFound && !crate::proc::exists(pid) {
            Error::NoProcess { pid }
        } else {
            Error::Io {
                op: "read",
                path: path.into(),
                source: e,
            }
        }
    }
}

/// For a dump that collects every blocker before refusing: an `Unsupported` error
/// becomes one blocker line ("pid P WHAT: WHY") and `Ok(None)`; other errors stay errors.
pub fn or_blocker<T>(r: Result<T>, blockers: &mut Vec<String>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(Error::Unsupported { pid, what, why }) => {
            blockers.push(format!("pid {pid} {what}: {why}"));
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Fault injection for tests: `CRYO_FAULT=<point>` makes the engine fail at that point,
/// so tests prove that every failure path leaves the target running.
pub fn fault_point(name: &'static str) -> Result<()> {
    match std::env::var("CRYO_FAULT") {
        Ok(v) if v.split(',').any(|p| p == name) => {
            log::warn!(point = name; "injecting fault");
            Err(Error::Fault(name))
        }
        _ => Ok(()),
    }
}
