//! The delivery cursor: the audit seq up to which every event is done (delivered or
//! dead-lettered) on every endpoint. It is kept in a small file so a restart resumes
//! from it; events after it may be sent again (at-least-once, same `webhook-id`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Default)]
struct Inner {
    /// Every entry up to here has been turned into events and queued.
    examined: u64,
    /// Queued or in-flight events per entry seq.
    open: BTreeMap<u64, usize>,
}

#[derive(Default)]
pub struct Progress(Mutex<Inner>);

impl Progress {
    pub fn starting_at(seq: u64) -> Self {
        Self(Mutex::new(Inner {
            examined: seq,
            open: BTreeMap::new(),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The data stays consistent under a panic elsewhere (plain counters).
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `count` events of entry `seq` are about to be queued; call before queueing.
    pub fn opened(&self, seq: u64, count: usize) {
        if count > 0 {
            *self.lock().open.entry(seq).or_default() += count;
        }
    }

    /// Every event of entries up to `seq` has been queued (or was none).
    pub fn examined(&self, seq: u64) {
        let mut g = self.lock();
        g.examined = g.examined.max(seq);
    }

    /// One event of entry `seq` is done.
    pub fn done(&self, seq: u64) {
        let mut g = self.lock();
        if let Some(n) = g.open.get_mut(&seq) {
            *n -= 1;
            if *n == 0 {
                g.open.remove(&seq);
            }
        }
    }

    /// Resumes after `seq`, where the previous holder of the notifier lease stopped,
    /// even if that is behind what this replica examined before (events between may
    /// be sent again: at-least-once).
    pub fn resume_after(&self, seq: u64) {
        self.lock().examined = seq;
    }

    pub fn last_examined(&self) -> u64 {
        self.lock().examined
    }

    /// The seq up to which everything is done.
    pub fn safe(&self) -> u64 {
        let g = self.lock();
        match g.open.keys().next() {
            Some(first) => first.saturating_sub(1).min(g.examined),
            None => g.examined,
        }
    }
}

pub struct CursorFile(PathBuf);

impl CursorFile {
    pub fn new(path: PathBuf) -> Self {
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The stored seq, or None when there is no file yet.
    pub fn read(&self) -> Result<Option<u64>, String> {
        match std::fs::read_to_string(&self.0) {
            Ok(s) => s.trim().parse().map(Some).map_err(|_| {
                format!(
                    "{}: not a sequence number; delete it to start from the log's head",
                    self.0.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("reading {}: {e}", self.0.display())),
        }
    }

    /// Replaces the file whole (write then rename), so a crash leaves the old or the new seq.
    pub fn write(&self, seq: u64) -> std::io::Result<()> {
        let tmp = self.0.with_extension("tmp");
        std::fs::write(&tmp, format!("{seq}\n"))?;
        std::fs::rename(&tmp, &self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_stops_before_the_oldest_open_event() {
        let p = Progress::starting_at(10);
        p.opened(12, 2);
        p.examined(12);
        p.opened(15, 1);
        p.examined(20);
        assert_eq!(p.safe(), 11);
        p.done(12);
        assert_eq!(p.safe(), 11, "one event of entry 12 is still open");
        p.done(15);
        assert_eq!(p.safe(), 11, "entry 15 is done but 12 is not");
        p.done(12);
        assert_eq!(p.safe(), 20);
    }

    #[test]
    fn the_file_round_trips_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = CursorFile::new(dir.path().join("cursor"));
        assert_eq!(f.read().unwrap(), None);
        f.write(42).unwrap();
        assert_eq!(f.read().unwrap(), Some(42));
        std::fs::write(f.path(), "x").unwrap();
        assert!(f.read().unwrap_err().contains("not a sequence number"));
    }
}
