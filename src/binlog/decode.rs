//! Decoding binary logs back to the text sink's lines, or to JSON lines.
//!
//! The decoder trusts nothing: every length and id is checked against the input, and at
//! the first damage (a torn or corrupt record, an unknown record type, an undefined
//! callsite) it stops and reports the byte offset and why. If a later session header
//! follows (several runs appended to one file) it resumes there.

use super::sink::{
    FLAG_CLOSES, HEADER_LEN, LVL_HAS_TID, LVL_MASK, MAGIC, SITE_DYNAMIC, TAG_INLINE_KEY, TAG_TYPE,
    T_CALLSITE, T_END, T_RECORD, VERSION, V_CHAR, V_F64, V_FALSE, V_FMT, V_I128, V_I64, V_NULL,
    V_STR, V_TRUE, V_U128, V_U64,
};
use log::{Level, LevelFilter};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write};

/// What [`decode`] did.
#[derive(Debug, Default)]
pub struct DecodeReport {
    /// Log records decoded, including those below the level filter.
    pub records: u64,
    /// Records rendered to the output.
    pub written: u64,
    /// Session headers seen (one per run that wrote to the file).
    pub sessions: u32,
    /// Where decoding stopped early, and why; empty if the whole input decoded.
    pub damage: Vec<Damage>,
    /// Writing the output failed; decoding stopped there.
    pub output_error: Option<io::Error>,
}

impl DecodeReport {
    /// The whole input decoded and rendered.
    pub fn is_complete(&self) -> bool {
        self.damage.is_empty() && self.output_error.is_none()
    }
}

impl fmt::Display for DecodeReport {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} records decoded", self.records)?;
        if self.written != self.records {
            write!(f, " ({} shown)", self.written)?;
        }
        for d in &self.damage {
            write!(f, "; {d}")?;
        }
        if let Some(e) = &self.output_error {
            write!(f, "; output error: {e}")?;
        }
        Ok(())
    }
}

/// A place where decoding stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Offset of the header or record that could not be decoded.
    pub offset: usize,
    pub kind: DamageKind,
    /// Offset of a later session header where decoding went on, if there was one.
    pub resumed_at: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DamageKind {
    /// No `CRYOLOG1` magic where a header must be.
    NotBinlog,
    UnsupportedVersion(u16),
    TruncatedHeader,
    /// The input ends inside the record.
    Truncated,
    UnknownType(u8),
    UndefinedCallsite(u64),
    /// The record's framing is intact but its payload is not valid.
    Corrupt(&'static str),
    /// A session whose writer promised an END record ends without one: the file was
    /// cut off there, or the writer died.
    NotClosed,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let at = self.offset;
        match &self.kind {
            DamageKind::NotBinlog => write!(f, "not a cryo binary log (no CRYOLOG1) at byte {at}"),
            DamageKind::UnsupportedVersion(v) => {
                write!(f, "unsupported format version {v} at byte {at}")
            }
            DamageKind::TruncatedHeader => write!(f, "truncated header at byte {at}"),
            DamageKind::Truncated => write!(f, "truncated record at byte {at}"),
            DamageKind::UnknownType(t) => write!(f, "unknown record type 0x{t:02x} at byte {at}"),
            DamageKind::UndefinedCallsite(id) => {
                write!(f, "callsite id {id} undefined at byte {at}")
            }
            DamageKind::Corrupt(what) => write!(f, "corrupt record at byte {at}: {what}"),
            DamageKind::NotClosed => write!(
                f,
                "the session ends at byte {at} without its end record (the file was cut off, or cryo was killed)"
            ),
        }?;
        if let Some(r) = self.resumed_at {
            write!(f, " (resumed at the session header at byte {r})")?;
        }
        Ok(())
    }
}

#[derive(Debug)]
enum CurErr {
    End,
    Overflow,
}

impl CurErr {
    fn corrupt(self) -> DamageKind {
        DamageKind::Corrupt(match self {
            CurErr::End => "a field runs past the end of the record",
            CurErr::Overflow => "varint longer than 64 bits",
        })
    }
}

struct Cur<'a> {
    b: &'a [u8],
    p: usize,
}

impl<'a> Cur<'a> {
    fn done(&self) -> bool {
        self.p >= self.b.len()
    }
    fn u8(&mut self) -> Result<u8, CurErr> {
        let v = *self.b.get(self.p).ok_or(CurErr::End)?;
        self.p += 1;
        Ok(v)
    }
    fn varint(&mut self) -> Result<u64, CurErr> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            if i == 9 && b > 1 {
                return Err(CurErr::Overflow);
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(CurErr::Overflow)
    }
    fn bytes(&mut self, n: u64) -> Result<&'a [u8], CurErr> {
        let rest = self.b.len() - self.p;
        if n > rest as u64 {
            return Err(CurErr::End);
        }
        let s = &self.b[self.p..self.p + n as usize];
        self.p += n as usize;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], CurErr> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N as u64)?);
        Ok(a)
    }
    fn str(&mut self) -> Result<Cow<'a, str>, CurErr> {
        let n = self.varint()?;
        Ok(String::from_utf8_lossy(self.bytes(n)?))
    }
}

struct Site<'a> {
    dynamic: bool,
    line: u64,
    file: Cow<'a, str>,
    module: Cow<'a, str>,
    msg: Cow<'a, str>,
    keys: Vec<Cow<'a, str>>,
}

enum Val<'a> {
    Null,
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Str(Cow<'a, str>),
    Char(char),
    U128(u128),
    I128(i128),
    Fmt(Cow<'a, str>),
}

/// Rendered as `log::kv::Value`'s Display renders the value it came from.
impl fmt::Display for Val<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Val::Null => f.write_str("None"),
            Val::U64(v) => fmt::Display::fmt(v, f),
            Val::I64(v) => fmt::Display::fmt(v, f),
            Val::F64(v) => fmt::Display::fmt(v, f),
            Val::Bool(v) => fmt::Display::fmt(v, f),
            Val::Str(v) | Val::Fmt(v) => f.write_str(v),
            Val::Char(v) => fmt::Display::fmt(v, f),
            Val::U128(v) => fmt::Display::fmt(v, f),
            Val::I128(v) => fmt::Display::fmt(v, f),
        }
    }
}

struct Rec<'a> {
    level: Level,
    ts: u64,
    pid: u64,
    tid: u64,
    line: u64,
    file: Cow<'a, str>,
    module: Cow<'a, str>,
    msg: Cow<'a, str>,
    kvs: Vec<(Cow<'a, str>, Val<'a>)>,
}

fn level_of(code: u8) -> Option<Level> {
    Some(match code {
        1 => Level::Error,
        2 => Level::Warn,
        3 => Level::Info,
        4 => Level::Debug,
        5 => Level::Trace,
        _ => return None,
    })
}

fn parse_site<'a>(payload: &'a [u8]) -> Result<(u64, Site<'a>), DamageKind> {
    let mut c = Cur { b: payload, p: 0 };
    let e = CurErr::corrupt;
    let id = c.varint().map_err(e)?;
    if id == 0 {
        return Err(DamageKind::Corrupt("callsite definition with id 0"));
    }
    let flags = c.u8().map_err(e)?;
    let line = c.varint().map_err(e)?;
    let file = c.str().map_err(e)?;
    let module = c.str().map_err(e)?;
    let msg = c.str().map_err(e)?;
    let n = c.varint().map_err(e)?;
    let mut keys = Vec::new();
    for _ in 0..n {
        keys.push(c.str().map_err(e)?);
    }
    // Bytes after the keys are left for later format versions.
    Ok((
        id,
        Site {
            dynamic: flags & SITE_DYNAMIC != 0,
            line,
            file,
            module,
            msg,
            keys,
        },
    ))
}

fn parse_value<'a>(c: &mut Cur<'a>, ty: u8) -> Result<Val<'a>, DamageKind> {
    let e = CurErr::corrupt;
    Ok(match ty {
        V_NULL => Val::Null,
        V_U64 => Val::U64(c.varint().map_err(e)?),
        V_I64 => {
            let z = c.varint().map_err(e)?;
            Val::I64((z >> 1) as i64 ^ -((z & 1) as i64))
        }
        V_F64 => Val::F64(f64::from_bits(u64::from_le_bytes(c.array().map_err(e)?))),
        V_FALSE => Val::Bool(false),
        V_TRUE => Val::Bool(true),
        V_STR => Val::Str(c.str().map_err(e)?),
        V_CHAR => {
            let v = c.varint().map_err(e)?;
            let ch = u32::try_from(v).ok().and_then(char::from_u32);
            Val::Char(ch.ok_or(DamageKind::Corrupt("char value is not a Unicode scalar"))?)
        }
        V_U128 => Val::U128(u128::from_le_bytes(c.array().map_err(e)?)),
        V_I128 => Val::I128(i128::from_le_bytes(c.array().map_err(e)?)),
        V_FMT => Val::Fmt(c.str().map_err(e)?),
        _ => return Err(DamageKind::Corrupt("unknown value type")),
    })
}

fn parse_record<'a>(
    payload: &'a [u8],
    sites: &HashMap<u64, Site<'a>>,
) -> Result<Rec<'a>, DamageKind> {
    let mut c = Cur { b: payload, p: 0 };
    let e = CurErr::corrupt;
    let id = c.varint().map_err(e)?;
    let lvl = c.u8().map_err(e)?;
    let level = level_of(lvl & LVL_MASK).ok_or(DamageKind::Corrupt("invalid level"))?;
    let ts = c.varint().map_err(e)?;
    let pid = c.varint().map_err(e)?;
    let tid = if lvl & LVL_HAS_TID != 0 {
        c.varint().map_err(e)?
    } else {
        pid
    };
    let (line, file, module, msg, keys): (_, _, _, _, &[Cow<'a, str>]) = if id == 0 {
        let line = c.varint().map_err(e)?;
        let file = c.str().map_err(e)?;
        let module = c.str().map_err(e)?;
        (line, file, module, c.str().map_err(e)?, &[])
    } else {
        let s = sites.get(&id).ok_or(DamageKind::UndefinedCallsite(id))?;
        let msg = if s.dynamic {
            c.str().map_err(e)?
        } else {
            s.msg.clone()
        };
        (s.line, s.file.clone(), s.module.clone(), msg, &s.keys)
    };
    let mut kvs = Vec::new();
    while !c.done() {
        let tag = c.u8().map_err(e)?;
        if tag & !(TAG_INLINE_KEY | TAG_TYPE) != 0 {
            return Err(DamageKind::Corrupt("invalid key-value tag"));
        }
        let key = if tag & TAG_INLINE_KEY != 0 {
            c.str().map_err(e)?
        } else {
            keys.get(kvs.len()).cloned().ok_or(DamageKind::Corrupt(
                "key refers to a callsite key that is not defined",
            ))?
        };
        kvs.push((key, parse_value(&mut c, tag & TAG_TYPE)?));
    }
    Ok(Rec {
        level,
        ts,
        pid,
        tid,
        line,
        file,
        module,
        msg,
        kvs,
    })
}

fn render_text(line: &mut Vec<u8>, r: &Rec) {
    let _ = write!(
        line,
        "({:3}.{:06}) {:5} {}",
        r.ts / 1_000_000_000,
        r.ts % 1_000_000_000 / 1000,
        r.level,
        r.msg
    );
    for (k, v) in &r.kvs {
        let _ = write!(line, " {k}={v}");
    }
    line.push(b'\n');
}

fn json_str(line: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *line, s);
}

fn render_json(line: &mut Vec<u8>, r: &Rec, wall_ns: u64) {
    let _ = write!(
        line,
        "{{\"ts\":{}.{:06},\"unix_ns\":{},\"level\":\"{}\",\"msg\":",
        r.ts / 1_000_000_000,
        r.ts % 1_000_000_000 / 1000,
        wall_ns.wrapping_add(r.ts),
        r.level
    );
    json_str(line, &r.msg);
    line.extend_from_slice(b",\"file\":");
    json_str(line, &r.file);
    if r.line == 0 {
        line.extend_from_slice(b",\"line\":null");
    } else {
        let _ = write!(line, ",\"line\":{}", r.line);
    }
    line.extend_from_slice(b",\"module\":");
    json_str(line, &r.module);
    let _ = write!(line, ",\"pid\":{},\"tid\":{},\"kv\":{{", r.pid, r.tid);
    for (i, (k, v)) in r.kvs.iter().enumerate() {
        if i > 0 {
            line.push(b',');
        }
        json_str(line, k);
        line.push(b':');
        match v {
            Val::Null => line.extend_from_slice(b"null"),
            Val::U64(v) => {
                let _ = write!(line, "{v}");
            }
            Val::I64(v) => {
                let _ = write!(line, "{v}");
            }
            Val::U128(v) => {
                let _ = write!(line, "{v}");
            }
            Val::I128(v) => {
                let _ = write!(line, "{v}");
            }
            Val::F64(v) => {
                // Non-finite floats have no JSON number: serde_json writes null.
                let _ = serde_json::to_writer(&mut *line, v);
            }
            Val::Bool(v) => {
                let _ = write!(line, "{v}");
            }
            Val::Char(c) => json_str(line, c.encode_utf8(&mut [0u8; 4])),
            Val::Str(s) | Val::Fmt(s) => json_str(line, s),
        }
    }
    line.extend_from_slice(b"}}\n");
}

enum Stop {
    Damage(usize, DamageKind),
    Output(io::Error),
}

/// Decodes from the session header at `pos` to the end of the input.
fn run(
    bytes: &[u8],
    mut pos: usize,
    min_level: LevelFilter,
    out: &mut impl Write,
    json: bool,
    rep: &mut DecodeReport,
) -> Result<(), Stop> {
    let mut sites: HashMap<u64, Site> = HashMap::new();
    let mut wall_ns = 0u64;
    let mut line = Vec::with_capacity(256);
    let mut first = true;
    // The session's writer promised an END record (header flag) and it has not come yet.
    let mut open = false;
    while pos < bytes.len() {
        let at = pos;
        if first || bytes[pos..].starts_with(MAGIC) {
            if open {
                return Err(Stop::Damage(at, DamageKind::NotClosed));
            }
            first = false;
            if !bytes[pos..].starts_with(MAGIC) {
                let kind = if MAGIC.starts_with(&bytes[pos..]) {
                    DamageKind::TruncatedHeader
                } else {
                    DamageKind::NotBinlog
                };
                return Err(Stop::Damage(at, kind));
            }
            let h = &bytes[pos..];
            if h.len() < HEADER_LEN {
                return Err(Stop::Damage(at, DamageKind::TruncatedHeader));
            }
            let version = u16::from_le_bytes([h[8], h[9]]);
            if version != VERSION {
                return Err(Stop::Damage(at, DamageKind::UnsupportedVersion(version)));
            }
            let hlen = u16::from_le_bytes([h[10], h[11]]) as usize;
            if hlen < HEADER_LEN {
                return Err(Stop::Damage(
                    at,
                    DamageKind::Corrupt("header length below 32"),
                ));
            }
            if h.len() < hlen {
                return Err(Stop::Damage(at, DamageKind::TruncatedHeader));
            }
            let mut w = [0u8; 8];
            w.copy_from_slice(&h[16..24]);
            wall_ns = u64::from_le_bytes(w);
            open = u32::from_le_bytes([h[12], h[13], h[14], h[15]]) & FLAG_CLOSES != 0;
            sites.clear();
            rep.sessions += 1;
            pos += hlen;
            continue;
        }
        let ty = bytes[pos];
        let mut c = Cur {
            b: bytes,
            p: pos + 1,
        };
        let len = match c.varint() {
            Ok(l) => l,
            Err(CurErr::End) => return Err(Stop::Damage(at, DamageKind::Truncated)),
            Err(CurErr::Overflow) => {
                return Err(Stop::Damage(
                    at,
                    DamageKind::Corrupt("record length longer than 64 bits"),
                ))
            }
        };
        let payload = match c.bytes(len) {
            Ok(p) => p,
            Err(_) => return Err(Stop::Damage(at, DamageKind::Truncated)),
        };
        match ty {
            T_CALLSITE => {
                let (id, site) = parse_site(payload).map_err(|k| Stop::Damage(at, k))?;
                sites.insert(id, site);
            }
            T_RECORD => {
                let r = parse_record(payload, &sites).map_err(|k| Stop::Damage(at, k))?;
                rep.records += 1;
                if r.level <= min_level {
                    line.clear();
                    if json {
                        render_json(&mut line, &r, wall_ns);
                    } else {
                        render_text(&mut line, &r);
                    }
                    out.write_all(&line).map_err(Stop::Output)?;
                    rep.written += 1;
                }
            }
            T_END => open = false,
            t => return Err(Stop::Damage(at, DamageKind::UnknownType(t))),
        }
        pos = c.p;
    }
    if open {
        return Err(Stop::Damage(bytes.len(), DamageKind::NotClosed));
    }
    Ok(())
}

fn find_magic(bytes: &[u8], from: usize) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(MAGIC.len())
        .position(|w| w == MAGIC)
        .map(|p| p + from)
}

/// Renders the binary log `bytes` to `out`: the text sink's lines, or with `json` one
/// JSON object per line (`ts`, `unix_ns`, `level`, `msg`, `file`, `line`, `module`,
/// `pid`, `tid`, and the key-values under `kv`). Records above `min_level` are skipped.
/// Never panics; stops at damage and reports where (see [`DecodeReport`]).
pub fn decode(
    bytes: &[u8],
    min_level: LevelFilter,
    out: &mut impl Write,
    json: bool,
) -> DecodeReport {
    let mut rep = DecodeReport::default();
    let mut pos = 0;
    loop {
        match run(bytes, pos, min_level, out, json, &mut rep) {
            Ok(()) => break,
            Err(Stop::Output(e)) => {
                rep.output_error = Some(e);
                break;
            }
            Err(Stop::Damage(offset, kind)) => {
                // An unclosed session stops at the next session's header: resume there.
                let resumed_at = if kind == DamageKind::NotClosed
                    && bytes.get(offset..).is_some_and(|b| b.starts_with(MAGIC))
                {
                    Some(offset)
                } else {
                    find_magic(bytes, offset + 1)
                };
                rep.damage.push(Damage {
                    offset,
                    kind,
                    resumed_at,
                });
                match resumed_at {
                    Some(p) => pos = p,
                    None => break,
                }
            }
        }
    }
    rep
}
