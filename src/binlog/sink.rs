//! The binary sink: writes records without formatting them.
//!
//! # File format, version 1
//!
//! All fixed-width integers are little-endian. `varint` is unsigned LEB128 (at most 10
//! bytes), `zigzag` a signed integer mapped to unsigned (0, -1, 1, -2, …) then varint,
//! `str` a varint byte length followed by that many bytes of UTF-8.
//!
//! ```text
//! file     = session+            a file opened again appends a new session
//! session  = header record*
//!
//! header, 32 bytes:
//!   +0   8  magic "CRYOLOG1"
//!   +8   2  format version (u16), 1
//!   +10  2  header length (u16), 32; readers skip header bytes they do not know
//!   +12  4  flags (u32): bit 0 = the writer ends the session with an END record when
//!           it closes cleanly (exit); a session with the bit and no END was cut off or
//!           its writer died. Other bits 0.
//!   +16  8  wall clock at start, ns since the Unix epoch (u64)
//!   +24  8  monotonic base: CLOCK_MONOTONIC at start, ns (u64); record times count
//!           from this instant
//!
//! record   = type:u8 len:varint payload[len]        self-delimiting
//!
//! type 0x01 CALLSITE: once per callsite and session, before the first record using it
//!   id:varint (>= 1) flags:u8 line:varint file:str module:str msg:str
//!   nkeys:varint key:str*nkeys
//!     flags bit 0: dynamic message (not a literal): every record carries its own
//!                  text and msg is empty
//!     line 0:      unknown
//!     keys:        the key names of the callsite's first record (its "schema")
//!
//! type 0x02 LOG RECORD
//!   site:varint lvl:u8 ts:varint pid:varint [tid:varint]
//!   [line:varint file:str module:str]     only if site == 0 (callsite inline)
//!   [msg:str]                             only if site == 0 or the site is dynamic
//!   kv*                                   up to the end of the payload
//!     lvl bits 0-2: level, 1 ERROR, 2 WARN, 3 INFO, 4 DEBUG, 5 TRACE
//!     lvl bit 3:    tid follows (the thread is not the main thread, tid != pid)
//!     ts:           ns since the session's monotonic base
//!
//! type 0x03 END: the session was closed cleanly (empty payload); nothing follows it
//!   in the session.
//!
//! kv       = tag:u8 [key:str] value
//!   tag bit 4 set:   the key follows inline
//!   tag bit 4 clear: the key is the callsite's key number i, i = this kv's position
//!                    in the record (0-based)
//!   tag bits 0-3, the value's type and encoding:
//!     0 NULL   -                  renders None
//!     1 U64    varint
//!     2 I64    zigzag
//!     3 F64    8 bytes, IEEE-754 bits
//!     4 FALSE  -
//!     5 TRUE   -
//!     6 STR    str
//!     7 CHAR   varint, a Unicode scalar value
//!     8 U128   16 bytes
//!     9 I128   16 bytes, two's complement
//!    10 FMT    str: the value's Display/Debug text, formatted when logged (values the
//!              `log` crate only knows as Debug/Display; the slow path)
//! ```
//!
//! The writer never splits a record across two `write(2)` calls, so a file that was cut
//! off (crash, full disk) ends with whole records, or a torn last record that the decoder
//! reports.
//!
//! # Hot path
//!
//! A record costs: the level check, one monotonic clock read, a cached tid, one
//! uncontended lock, a hash lookup of the callsite by the address of its static message,
//! file and module strings plus its line, and the varint encoding of its fields. Nothing
//! is formatted unless the message is not a literal or a value is only Debug/Display.
//! Records collect in a buffer that goes to the file when it passes [`FLUSH_AT`] bytes,
//! after every ERROR record, on `flush()`, at exit, on panic and on fatal signals (see
//! the parent module).
//!
//! # Forked children
//!
//! The pid is read once when the sink is created and the tid once per thread. A child
//! made by fork or clone (restore's `clone3` child) inherits a copy of the buffer: every
//! write checks `getpid()` first and drops the copy in a child instead of writing the
//! parent's records twice. Records a child logs are therefore lost; children must not log
//! (they only do async-signal-safe work until they exec or exit anyway).

use log::kv::{self, Key, Value, VisitSource, VisitValue};
use log::{Level, LevelFilter, Log, Metadata, Record};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub(crate) const MAGIC: &[u8; 8] = b"CRYOLOG1";
pub(crate) const VERSION: u16 = 1;
pub(crate) const HEADER_LEN: usize = 32;

pub(crate) const T_CALLSITE: u8 = 0x01;
pub(crate) const T_RECORD: u8 = 0x02;
pub(crate) const T_END: u8 = 0x03;
/// Header flag: the session ends with an END record when its writer closes cleanly.
pub(crate) const FLAG_CLOSES: u32 = 1;

pub(crate) const SITE_DYNAMIC: u8 = 0x01;
pub(crate) const LVL_MASK: u8 = 0x07;
pub(crate) const LVL_HAS_TID: u8 = 0x08;

pub(crate) const TAG_INLINE_KEY: u8 = 0x10;
pub(crate) const TAG_TYPE: u8 = 0x0f;
pub(crate) const V_NULL: u8 = 0;
pub(crate) const V_U64: u8 = 1;
pub(crate) const V_I64: u8 = 2;
pub(crate) const V_F64: u8 = 3;
pub(crate) const V_FALSE: u8 = 4;
pub(crate) const V_TRUE: u8 = 5;
pub(crate) const V_STR: u8 = 6;
pub(crate) const V_CHAR: u8 = 7;
pub(crate) const V_U128: u8 = 8;
pub(crate) const V_I128: u8 = 9;
pub(crate) const V_FMT: u8 = 10;

/// The buffer goes to the file once it holds this many bytes.
pub const FLUSH_AT: usize = 64 * 1024;

/// The 32-byte session header.
pub(crate) fn header(wall_ns: u64, mono_ns: u64, flags: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    h[10..12].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
    h[12..16].copy_from_slice(&flags.to_le_bytes());
    h[16..24].copy_from_slice(&wall_ns.to_le_bytes());
    h[24..32].copy_from_slice(&mono_ns.to_le_bytes());
    h
}

#[inline]
pub(crate) fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

#[inline]
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_varint(buf, s.len() as u64);
    buf.extend_from_slice(s.as_bytes());
}

/// Makes the one-byte placeholder at `len_at` the varint length of `buf[start..]`,
/// moving the content when the length needs more than one byte.
#[inline]
fn patch_len(buf: &mut Vec<u8>, len_at: usize, start: usize) {
    let len = buf.len() - start;
    if len < 0x80 {
        buf[len_at] = len as u8;
        return;
    }
    let mut v = Vec::with_capacity(10);
    put_varint(&mut v, len as u64);
    buf[len_at] = v[0];
    buf.splice(len_at + 1..len_at + 1, v[1..].iter().copied());
}

/// Writes `args` formatted as a `str` (slow path).
fn put_fmt(buf: &mut Vec<u8>, args: std::fmt::Arguments) {
    let len_at = buf.len();
    buf.push(0);
    let start = buf.len();
    // A Display impl that fails leaves what it wrote so far; the record stays well-formed.
    let _ = buf.write_fmt(args);
    patch_len(buf, len_at, start);
}

fn level_code(l: Level) -> u8 {
    l as u8 // Error = 1 … Trace = 5
}

/// Multiply-rotate hash (FxHash) for the callsite table: its keys are a few addresses.
#[derive(Default)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    #[inline]
    fn write_u32(&mut self, v: u32) {
        self.write_u64(v as u64);
    }
    #[inline]
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A callsite's identity: the addresses of its `&'static` strings (message, file,
/// module) and its line. Only static strings take part, so an address can never be
/// reused for other text. A dynamic message has address 0.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct SiteKey {
    msg: usize,
    msg_len: usize,
    file: usize,
    module: usize,
    line: u32,
}

struct Site {
    id: u64,
    dynamic: bool,
    keys: Box<[Box<str>]>,
}

struct State {
    out: File,
    buf: Vec<u8>,
    /// `buf[..committed]` holds whole records; a record torn by a panic in a value's
    /// Display impl is cut off at the next lock.
    committed: usize,
    /// Callsite id `i + 1` is `sites[i]`.
    sites: Vec<Site>,
    site_ids: HashMap<SiteKey, usize, BuildHasherDefault<FxHasher>>,
}

/// The binary `log::Log` sink (see the module documentation for the format).
pub struct BinLogger {
    level: LevelFilter,
    start: Instant,
    pid: u32,
    state: Mutex<State>,
}

thread_local! {
    /// Set while this thread is inside `BinLogger::log` (holding the lock).
    static IN_LOG: Cell<bool> = const { Cell::new(false) };
    static TID: Cell<u32> = const { Cell::new(0) };
    /// Records logged from inside a value's Display impl while the lock was held.
    static NESTED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static HAVE_NESTED: Cell<bool> = const { Cell::new(false) };
}

#[inline]
fn current_tid() -> u32 {
    TID.with(|t| {
        let v = t.get();
        if v != 0 {
            return v;
        }
        let v = nix::unistd::gettid().as_raw() as u32;
        t.set(v);
        v
    })
}

/// Whether this thread is inside the sink (so it must not wait for the lock).
pub(crate) fn in_log() -> bool {
    IN_LOG.with(|c| c.get())
}

struct InLog;

impl InLog {
    #[inline]
    fn enter() -> Option<InLog> {
        IN_LOG.with(|c| {
            if c.get() {
                None
            } else {
                c.set(true);
                Some(InLog)
            }
        })
    }
}

impl Drop for InLog {
    #[inline]
    fn drop(&mut self) {
        IN_LOG.with(|c| c.set(false));
    }
}

/// Collects the key names of a callsite's first record.
struct KeyNames(Vec<Box<str>>);

impl<'kvs> VisitSource<'kvs> for KeyNames {
    fn visit_pair(&mut self, key: Key<'kvs>, _: Value<'kvs>) -> Result<(), kv::Error> {
        self.0.push(key.as_str().into());
        Ok(())
    }
}

struct KvEnc<'a> {
    buf: &'a mut Vec<u8>,
    keys: &'a [Box<str>],
    i: usize,
}

impl<'kvs> VisitSource<'kvs> for KvEnc<'_> {
    #[inline]
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), kv::Error> {
        let k = key.as_str();
        let tag_at = self.buf.len();
        match self.keys.get(self.i) {
            Some(s) if short_eq(s.as_bytes(), k.as_bytes()) => self.buf.push(0),
            _ => {
                self.buf.push(TAG_INLINE_KEY);
                put_str(self.buf, k);
            }
        }
        self.i += 1;
        let _ = value.visit(ValEnc {
            buf: self.buf,
            tag_at,
        });
        Ok(())
    }
}

/// Key names are a few bytes: an inline loop beats a call to `memcmp`.
#[inline]
fn short_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// Writes one value and ORs its type into the tag byte at `tag_at`.
struct ValEnc<'a> {
    buf: &'a mut Vec<u8>,
    tag_at: usize,
}

impl ValEnc<'_> {
    #[inline]
    fn ty(&mut self, t: u8) {
        self.buf[self.tag_at] |= t;
    }
}

impl<'v> VisitValue<'v> for ValEnc<'_> {
    fn visit_any(&mut self, value: Value) -> Result<(), kv::Error> {
        self.ty(V_FMT);
        put_fmt(self.buf, format_args!("{value}"));
        Ok(())
    }
    fn visit_null(&mut self) -> Result<(), kv::Error> {
        Ok(()) // V_NULL is 0
    }
    #[inline]
    fn visit_u64(&mut self, v: u64) -> Result<(), kv::Error> {
        self.ty(V_U64);
        put_varint(self.buf, v);
        Ok(())
    }
    #[inline]
    fn visit_i64(&mut self, v: i64) -> Result<(), kv::Error> {
        self.ty(V_I64);
        put_varint(self.buf, zigzag(v));
        Ok(())
    }
    fn visit_u128(&mut self, v: u128) -> Result<(), kv::Error> {
        self.ty(V_U128);
        self.buf.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn visit_i128(&mut self, v: i128) -> Result<(), kv::Error> {
        self.ty(V_I128);
        self.buf.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn visit_f64(&mut self, v: f64) -> Result<(), kv::Error> {
        self.ty(V_F64);
        self.buf.extend_from_slice(&v.to_bits().to_le_bytes());
        Ok(())
    }
    #[inline]
    fn visit_bool(&mut self, v: bool) -> Result<(), kv::Error> {
        self.ty(if v { V_TRUE } else { V_FALSE });
        Ok(())
    }
    #[inline]
    fn visit_str(&mut self, v: &str) -> Result<(), kv::Error> {
        self.ty(V_STR);
        put_str(self.buf, v);
        Ok(())
    }
    fn visit_char(&mut self, v: char) -> Result<(), kv::Error> {
        self.ty(V_CHAR);
        put_varint(self.buf, v as u64);
        Ok(())
    }
}

/// Finds or defines the callsite of `r`; `None` when it cannot be identified by static
/// strings (then the record carries its callsite inline).
#[inline]
fn site<'s>(
    sites: &'s mut Vec<Site>,
    site_ids: &mut HashMap<SiteKey, usize, BuildHasherDefault<FxHasher>>,
    buf: &mut Vec<u8>,
    r: &Record,
) -> Option<&'s Site> {
    let file = r.file_static()?;
    let module = match (r.module_path_static(), r.module_path()) {
        (Some(m), _) => m,
        (None, None) => "",
        (None, Some(_)) => return None,
    };
    let msg = r.args().as_str();
    let key = SiteKey {
        msg: msg.map_or(0, |m| m.as_ptr() as usize),
        msg_len: msg.map_or(0, str::len),
        file: file.as_ptr() as usize,
        module: module.as_ptr() as usize,
        line: r.line().unwrap_or(0),
    };
    let i = match site_ids.get(&key) {
        Some(&i) => i,
        None => {
            sites.push(define_site(
                buf,
                sites.len() as u64 + 1,
                r,
                file,
                module,
                msg,
            ));
            site_ids.insert(key, sites.len() - 1);
            sites.len() - 1
        }
    };
    sites.get(i)
}

#[cold]
fn define_site(
    buf: &mut Vec<u8>,
    id: u64,
    r: &Record,
    file: &str,
    module: &str,
    msg: Option<&str>,
) -> Site {
    let mut names = KeyNames(Vec::new());
    let _ = r.key_values().visit(&mut names);
    buf.push(T_CALLSITE);
    let len_at = buf.len();
    buf.push(0);
    let start = buf.len();
    put_varint(buf, id);
    buf.push(if msg.is_none() { SITE_DYNAMIC } else { 0 });
    put_varint(buf, r.line().unwrap_or(0) as u64);
    put_str(buf, file);
    put_str(buf, module);
    put_str(buf, msg.unwrap_or(""));
    put_varint(buf, names.0.len() as u64);
    for k in &names.0 {
        put_str(buf, k);
    }
    patch_len(buf, len_at, start);
    Site {
        id,
        dynamic: msg.is_none(),
        keys: names.0.into_boxed_slice(),
    }
}

/// Appends one LOG RECORD; `site` None writes the callsite inline.
#[inline]
fn encode_record(buf: &mut Vec<u8>, site: Option<&Site>, r: &Record, ts: u64, pid: u32, tid: u32) {
    buf.push(T_RECORD);
    let len_at = buf.len();
    buf.push(0);
    let start = buf.len();
    put_varint(buf, site.map_or(0, |s| s.id));
    let lvl = level_code(r.level());
    if tid == pid {
        buf.push(lvl);
        put_varint(buf, ts);
        put_varint(buf, pid as u64);
    } else {
        buf.push(lvl | LVL_HAS_TID);
        put_varint(buf, ts);
        put_varint(buf, pid as u64);
        put_varint(buf, tid as u64);
    }
    match site {
        Some(s) if !s.dynamic => {}
        Some(_) => put_msg(buf, r),
        None => {
            put_varint(buf, r.line().unwrap_or(0) as u64);
            put_str(buf, r.file().unwrap_or(""));
            put_str(buf, r.module_path().unwrap_or(""));
            put_msg(buf, r);
        }
    }
    let mut kvs = KvEnc {
        buf,
        keys: site.map_or(&[], |s| &s.keys),
        i: 0,
    };
    let _ = r.key_values().visit(&mut kvs);
    patch_len(buf, len_at, start);
}

fn put_msg(buf: &mut Vec<u8>, r: &Record) {
    match r.args().as_str() {
        Some(s) => put_str(buf, s),
        None => put_fmt(buf, format_args!("{}", r.args())),
    }
}

impl State {
    /// Writes the buffered records, unless this is a forked copy of the logger.
    fn write_out(&mut self, owner_pid: u32) {
        if self.committed > 0 && nix::unistd::getpid().as_raw() as u32 == owner_pid {
            // Errors (full disk) drop the records: the buffer must not grow without bound.
            let _ = (&self.out).write_all(&self.buf[..self.committed]);
        }
        self.buf.clear();
        self.committed = 0;
    }
}

impl BinLogger {
    /// A sink appending a new session to `path` (created 0600).
    pub fn create(path: &Path, level: LevelFilter) -> io::Result<BinLogger> {
        BinLogger::create_with(path, level, 0)
    }

    /// Like [`BinLogger::create`], for a writer that calls [`BinLogger::close`] when it
    /// ends (the header says so; a session without its END record was then cut off).
    pub fn create_closing(path: &Path, level: LevelFilter) -> io::Result<BinLogger> {
        BinLogger::create_with(path, level, FLAG_CLOSES)
    }

    fn create_with(path: &Path, level: LevelFilter, flags: u32) -> io::Result<BinLogger> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        BinLogger::with_flags(f, level, flags)
    }

    /// A sink writing to `out`, which must be positioned at the end (or opened to append).
    pub fn new(out: File, level: LevelFilter) -> io::Result<BinLogger> {
        BinLogger::with_flags(out, level, 0)
    }

    fn with_flags(out: File, level: LevelFilter, flags: u32) -> io::Result<BinLogger> {
        let start = Instant::now();
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        (&out).write_all(&header(wall, super::monotonic_ns(), flags))?;
        let buf = Vec::with_capacity(FLUSH_AT + 4096);
        Ok(BinLogger {
            level,
            start,
            pid: nix::unistd::getpid().as_raw() as u32,
            state: Mutex::new(State {
                out,
                buf,
                committed: 0,
                sites: Vec::new(),
                site_ids: HashMap::default(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => {
                let mut g = p.into_inner();
                let c = g.committed;
                g.buf.truncate(c);
                self.state.clear_poison();
                g
            }
        }
    }

    /// Writes the buffer to the file. Skipped when this thread is inside the sink (a
    /// panic raised by a value's Display impl while logging): it holds the lock.
    pub fn flush_buffer(&self) {
        if in_log() {
            return;
        }
        self.lock().write_out(self.pid);
    }

    /// Ends the session: an END record, then the buffer goes to the file (at exit).
    pub fn close(&self) {
        if in_log() {
            return;
        }
        let mut g = self.lock();
        let c = g.committed;
        g.buf.truncate(c);
        g.buf.extend_from_slice(&[T_END, 0]);
        g.committed = g.buf.len();
        g.write_out(self.pid);
    }

    /// From a signal handler: writes the buffer only if the lock is free right now.
    pub(crate) fn flush_from_signal(&self) {
        let mut g = match self.state.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => {
                let mut g = p.into_inner();
                let c = g.committed;
                g.buf.truncate(c);
                g
            }
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        g.write_out(self.pid);
    }

    /// A record logged from inside a value's Display impl, while this thread holds the
    /// lock: encoded with its callsite inline into a thread-local buffer that the outer
    /// call appends after its own record.
    #[cold]
    fn log_nested(&self, r: &Record, ts: u64, tid: u32) {
        let mut rec = Vec::new();
        encode_record(&mut rec, None, r, ts, self.pid, tid);
        NESTED.with(|n| {
            if let Ok(mut n) = n.try_borrow_mut() {
                n.extend_from_slice(&rec);
                HAVE_NESTED.with(|h| h.set(true));
            }
        });
    }
}

impl Log for BinLogger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= self.level
    }

    fn log(&self, r: &Record) {
        let level = r.level();
        if level > self.level {
            return;
        }
        let ts = self.start.elapsed().as_nanos() as u64;
        let tid = current_tid();
        let Some(_in) = InLog::enter() else {
            self.log_nested(r, ts, tid);
            return;
        };
        let mut g = self.lock();
        let st = &mut *g;
        let s = site(&mut st.sites, &mut st.site_ids, &mut st.buf, r);
        st.committed = st.buf.len(); // a new callsite definition is whole
        encode_record(&mut st.buf, s, r, ts, self.pid, tid);
        if HAVE_NESTED.with(|h| h.replace(false)) {
            NESTED.with(|n| {
                if let Ok(mut n) = n.try_borrow_mut() {
                    st.buf.extend_from_slice(&n);
                    n.clear();
                }
            });
        }
        st.committed = st.buf.len();
        if st.buf.len() >= FLUSH_AT || level == Level::Error {
            st.write_out(self.pid);
        }
    }

    fn flush(&self) {
        self.flush_buffer();
    }
}

impl Drop for BinLogger {
    fn drop(&mut self) {
        self.flush_buffer();
    }
}
