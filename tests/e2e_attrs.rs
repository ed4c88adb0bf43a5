//! End-to-end: process attributes (cwd, umask, rlimits, comm, personality, session,
//! pdeath signal, dumpable, child subreaper, credentials) survive dump → kill → restore.
//! The `attrs` workload records them at setup and compares after restore.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;

fn start_attrs(env: &Env, extra: &[&str]) -> nix::unistd::Pid {
    let sub = env.path("sub");
    std::fs::create_dir(&sub).unwrap();
    let mut args = vec!["--dir", sub.to_str().unwrap()];
    args.extend_from_slice(extra);
    env.start("attrs", &args)
}

/// Restored under a waiting `cryo restore`, which stays the parent: the parent-death
/// signal is re-armed too (with `-d` it is not, since that parent exits at once).
#[test]
fn process_attributes_survive() {
    let env = Env::new("attrs");
    let pid = start_attrs(&env, &[]);
    env.cycle_attached(pid);
}

#[test]
fn dropped_credentials_survive() {
    let env = Env::new("attrs-creds");
    // With dropped privileges (fsuid 1006) the workload creates its ready marker here; its
    // verdict file is opened before the drop.
    std::fs::set_permissions(&env.dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let pid = start_attrs(&env, &["--drop-privs"]);
    env.cycle_attached(pid);
}
