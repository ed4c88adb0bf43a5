//! Log sinks behind the `log` facade. The text sink writes one line per record with its
//! structured key-values; the binary sink (see the binary-logs issue) will plug in here.

use log::kv::{Key, Value, VisitSource};
use std::fmt::Write as _;
use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

pub struct TextLogger {
    out: Mutex<Box<dyn Write + Send>>,
    level: log::LevelFilter,
    start: Instant,
    /// One JSON object per line instead of text (`--log-format json`, for engines).
    json: bool,
}

struct JsonKv<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl<'kvs> VisitSource<'kvs> for JsonKv<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        let v = if let Some(n) = value.to_i64() {
            serde_json::Value::from(n)
        } else if let Some(n) = value.to_u64() {
            serde_json::Value::from(n)
        } else if let Some(b) = value.to_bool() {
            serde_json::Value::from(b)
        } else {
            serde_json::Value::from(value.to_string())
        };
        self.0.insert(key.to_string(), v);
        Ok(())
    }
}

struct Kv<'a>(&'a mut String);

impl<'kvs> VisitSource<'kvs> for Kv<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        let _ = write!(self.0, " {key}={value}");
        Ok(())
    }
}

impl log::Log for TextLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= self.level
    }

    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let t = self.start.elapsed();
        if self.json {
            let mut m = serde_json::Map::new();
            m.insert("ts".into(), serde_json::Value::from(t.as_secs_f64()));
            m.insert("level".into(), serde_json::Value::from(r.level().as_str()));
            m.insert("msg".into(), serde_json::Value::from(r.args().to_string()));
            let _ = r.key_values().visit(&mut JsonKv(&mut m));
            if let Ok(mut o) = self.out.lock() {
                let _ = writeln!(o, "{}", serde_json::Value::Object(m));
            }
            return;
        }
        let mut line = format!(
            "({:3}.{:06}) {:5} {}",
            t.as_secs(),
            t.subsec_micros(),
            r.level(),
            r.args()
        );
        let _ = r.key_values().visit(&mut Kv(&mut line));
        line.push('\n');
        if let Ok(mut o) = self.out.lock() {
            let _ = o.write_all(line.as_bytes());
        }
    }

    fn flush(&self) {
        if let Ok(mut o) = self.out.lock() {
            let _ = o.flush();
        }
    }
}

/// Maps CRIU's `-v0..4` to a level: 0 errors only … 4 everything.
pub fn level_from_verbosity(v: u8) -> log::LevelFilter {
    match v {
        0 => log::LevelFilter::Error,
        1 => log::LevelFilter::Warn,
        2 => log::LevelFilter::Info,
        3 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

/// Installs the text (or JSON-lines) sink writing to `path` (created 0600). Only the
/// first call wins.
pub fn init_file(
    path: &std::path::Path,
    level: log::LevelFilter,
    json: bool,
) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let logger = TextLogger {
        out: Mutex::new(Box::new(std::io::LineWriter::new(f))),
        level,
        start: Instant::now(),
        json,
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
    Ok(())
}
