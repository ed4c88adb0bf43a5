//! cryo: checkpoint/restore for Linux processes, writing CRIU's image format.
//!
//! Modules are named for the concern they hold; the dump and restore halves of one
//! concern sit side by side. `unsafe` lives in small named wrappers, each with a
//! `// SAFETY:` line: syscalls in `sys`, the signal-safe log flush in `binlog`;
//! callers of `unsafe fn`s (clone3) state the contract they uphold.

pub mod binlog;
pub mod check;
pub mod cpu;
pub mod creds;
pub mod dump;
pub mod error;
pub mod files;
pub mod image;
pub mod ipc;
pub mod logging;
pub mod mm;
pub mod namespaces;
pub mod pages;
pub mod proc;
pub mod pstree;
pub mod ptrace;
pub mod restore;
pub mod seccomp;
pub mod seize;
pub mod shmem;
pub mod signals;
pub mod sys;
pub mod timers;

pub use error::{Error, Result};
/// cryo's API uses oci-spec types; re-export the version it was built with.
pub use oci_spec;
