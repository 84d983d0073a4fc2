//! Reads a bundle from disk and watches it. A change is compiled off the request path;
//! the engine installs a valid bundle whole or records the rejection of an invalid one.

use super::{compile, CompiledPolicy, PolicyError};
use notify::{RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// Reads and compiles a bundle file.
pub fn load_file(path: &Path) -> Result<CompiledPolicy, PolicyError> {
    let source = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| PolicyError {
        source_name: source.clone(),
        problems: vec![format!("cannot read the file: {e}")],
    })?;
    compile(&bytes, &source)
}

/// A change seen on disk.
pub enum Reload {
    Valid(Box<CompiledPolicy>),
    /// Version hash of the rejected bytes, and why.
    Invalid {
        version: String,
        error: PolicyError,
    },
}

/// Watches `path` (through its directory, so editors that replace the file by rename
/// are seen) and re-checks every `poll` as a safety net. Sends one message per new
/// content; identical content is ignored.
pub fn watch(path: PathBuf, current_version: String, poll: Duration) -> mpsc::Receiver<Reload> {
    let (tx, rx) = mpsc::channel(8);
    let (kick_tx, mut kick_rx) = mpsc::channel::<()>(1);
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let watcher = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
        let _ = kick_tx.try_send(());
    })
    .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w));
    let watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "file watching unavailable; policy changes are picked up by polling");
            None
        }
    };
    tokio::spawn(async move {
        let _keep_alive = watcher;
        let mut last = current_version;
        let mut tick = tokio::time::interval(poll);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                Some(()) = kick_rx.recv() => {
                    // Let a burst of writes settle before reading.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    while kick_rx.try_recv().is_ok() {}
                }
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let version = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
            if version == last {
                continue;
            }
            last = version.clone();
            let msg = match compile(&bytes, &path.display().to_string()) {
                Ok(p) => Reload::Valid(Box::new(p)),
                Err(error) => Reload::Invalid { version, error },
            };
            if tx.send(msg).await.is_err() {
                break;
            }
        }
    });
    rx
}
