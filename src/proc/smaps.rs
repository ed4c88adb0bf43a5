//! `/proc/PID/smaps`: the VMAs with the flags `/proc/PID/maps` does not show (VmFlags).

use crate::error::{Error, Result};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    /// PROT_* bits.
    pub prot: u32,
    pub shared: bool,
    pub pgoff: u64,
    pub dev: (u32, u32),
    pub inode: u64,
    /// Path or pseudo name (`[heap]`, `[stack]`, `[vdso]`, ...) as the kernel prints it.
    pub name: String,
    /// Two-letter VmFlags codes (`gd`, `dd`, `hg`, ...).
    pub vmflags: Vec<String>,
}

impl Vma {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    pub fn has_flag(&self, f: &str) -> bool {
        self.vmflags.iter().any(|x| x == f)
    }

    /// Backed by a file (has an inode and a path, not a pseudo mapping or shmem).
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.name.starts_with('/')
    }
}

fn bad(msg: String) -> Error {
    Error::Parse {
        path: "smaps".into(),
        msg,
    }
}

fn parse_header(line: &str) -> Result<Vma> {
    let mut it = line.splitn(6, ' ');
    let range = it.next().unwrap_or_default();
    let perms = it.next().unwrap_or_default();
    let off = it.next().unwrap_or_default();
    let dev = it.next().unwrap_or_default();
    let ino = it.next().unwrap_or_default();
    let name = it.next().unwrap_or_default().trim_start().to_string();
    let (s, e) = range
        .split_once('-')
        .ok_or_else(|| bad(format!("bad range in {line:?}")))?;
    let hex =
        |v: &str| u64::from_str_radix(v, 16).map_err(|_| bad(format!("bad hex {v:?} in {line:?}")));
    let p = perms.as_bytes();
    if p.len() != 4 {
        return Err(bad(format!("bad perms in {line:?}")));
    }
    let mut prot = 0;
    if p[0] == b'r' {
        prot |= libc::PROT_READ as u32;
    }
    if p[1] == b'w' {
        prot |= libc::PROT_WRITE as u32;
    }
    if p[2] == b'x' {
        prot |= libc::PROT_EXEC as u32;
    }
    let (maj, min) = dev
        .split_once(':')
        .ok_or_else(|| bad(format!("bad dev in {line:?}")))?;
    Ok(Vma {
        start: hex(s)?,
        end: hex(e)?,
        prot,
        shared: p[3] == b's',
        pgoff: hex(off)?,
        dev: (hex(maj)? as u32, hex(min)? as u32),
        inode: ino
            .parse()
            .map_err(|_| bad(format!("bad inode in {line:?}")))?,
        name,
        vmflags: Vec::new(),
    })
}

/// A header line starts with `start-end `; attribute lines start with `Name:`.
fn is_header(line: &str) -> bool {
    line.split(' ')
        .next()
        .is_some_and(|f| f.contains('-') && f.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
}

pub fn parse_smaps(s: &str) -> Result<Vec<Vma>> {
    let mut out: Vec<Vma> = Vec::new();
    for line in s.lines() {
        if is_header(line) {
            out.push(parse_header(line)?);
        } else if let Some(flags) = line.strip_prefix("VmFlags:") {
            let v = out
                .last_mut()
                .ok_or_else(|| bad("VmFlags before any mapping".into()))?;
            v.vmflags = flags.split_whitespace().map(str::to_string).collect();
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = "\
55d0c0a00000-55d0c0a02000 r--p 00000000 fe:00 1234                       /usr/bin/sleep
Size:                  8 kB
VmFlags: rd mr mw me sd
7ffc0f2f0000-7ffc0f311000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
VmFlags: rd wr mr mw me gd ac
7f19681aa000-7f19681ac000 r-xp 00000000 00:00 0                          [vdso]
VmFlags: rd ex mr mw me de sd
7f0000000000-7f0000001000 rw-s 00000000 00:01 99                         /dev/zero (deleted)
VmFlags: rd wr sh mr mw me ms sd
";

    #[test]
    fn parses_fixture() {
        let v = parse_smaps(FIXTURE).unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(v[0].name, "/usr/bin/sleep");
        assert!(v[0].is_file());
        assert_eq!(v[0].prot, libc::PROT_READ as u32);
        assert!(v[1].has_flag("gd"));
        assert_eq!(v[1].len(), 0x21000);
        assert_eq!(v[2].name, "[vdso]");
        assert!(v[3].shared);
        assert_eq!(v[3].name, "/dev/zero (deleted)");
    }

    #[test]
    fn garbage_is_error_not_panic() {
        assert!(
            parse_smaps("zz-yy rwxp 0 0 0 x").is_err()
                || parse_smaps("zz-yy rwxp 0 0 0 x").unwrap().is_empty()
        );
        assert!(parse_smaps("0-1 rw 0 0:0 0").is_err());
    }
}
