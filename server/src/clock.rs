//! Time as a parameter. Production reads the system clock; tests point the server at a
//! file holding the time, so TTL and period tests never sleep.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};

pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

/// Reads the time from a file containing RFC 3339 text or Unix milliseconds. Only for
/// tests and demos; `serve` logs loudly when it is in use.
pub struct FileClock {
    path: PathBuf,
    /// The last time read successfully; an unreadable file (say, mid-write) repeats it
    /// rather than jumping to the real time.
    last: AtomicI64,
}

impl FileClock {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            last: AtomicI64::new(i64::MIN),
        }
    }
}

impl Clock for FileClock {
    fn now_ms(&self) -> i64 {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let text = text.trim();
        let read = text.parse::<i64>().ok().or_else(|| {
            chrono::DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| t.timestamp_millis())
        });
        match (read, self.last.load(Ordering::Relaxed)) {
            (Some(ms), _) => {
                self.last.store(ms, Ordering::Relaxed);
                ms
            }
            (None, i64::MIN) => SystemClock.now_ms(),
            (None, last) => last,
        }
    }
}
