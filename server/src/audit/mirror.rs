//! The optional JSONL mirror: every committed entry is appended, in order, to a file in
//! the export format, before the request that wrote it is answered. It survives loss of
//! the database and is verified by the same tools as an export.

use super::canonical::{export_line, SealedEntry};
use crate::store::{Store, StoreError};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

pub struct Mirror {
    path: PathBuf,
    file: File,
    /// Highest seq in the file.
    pub last_seq: u64,
}

impl Mirror {
    /// Opens (or creates) the mirror and appends whatever the database has that the file
    /// lacks, so the file always starts at seq 1 and has no gaps.
    pub async fn open(path: &Path, store: &dyn Store, head_seq: u64) -> Result<Self, StoreError> {
        let io = |e: std::io::Error| StoreError::Unavailable(Box::new(e));
        let mut last_seq = 0;
        if path.exists() {
            let reader = BufReader::new(File::open(path).map_err(io)?);
            for line in reader.lines() {
                let line = line.map_err(io)?;
                let seq = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v["entry"]["seq"].as_u64())
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "{}: a line is not an export line",
                            path.display()
                        ))
                    })?;
                last_seq = seq;
            }
        }
        if last_seq > head_seq {
            return Err(StoreError::Corrupt(format!(
                "{} holds entries up to {last_seq} but the database only up to {head_seq}; restore the database or move the mirror away",
                path.display()
            )));
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        let mut m = Self {
            path: path.to_path_buf(),
            file,
            last_seq,
        };
        let mut next = last_seq + 1;
        while next <= head_seq {
            let page = store.audit_range(next, head_seq, 10_000).await?;
            let Some(last) = page.last() else { break };
            next = last.seq + 1;
            m.append(&page).map_err(io)?;
        }
        Ok(m)
    }

    pub fn append(&mut self, entries: &[SealedEntry]) -> std::io::Result<()> {
        let mut buf = String::new();
        for e in entries {
            buf.push_str(&export_line(e));
            buf.push('\n');
        }
        self.file.write_all(buf.as_bytes())?;
        self.file.flush()?;
        if let Some(e) = entries.last() {
            self.last_seq = e.seq;
        }
        Ok(())
    }

    /// Forces the file to disk (at shutdown; appends are flushed but not fsynced).
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_all()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
