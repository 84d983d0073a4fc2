//! One `Settings` tree: defaults in code, then an optional TOML file, then
//! `ARBITER_<SECTION>__<KEY>` environment variables, then command-line flags.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address to serve gRPC on; port 0 picks a free port.
    pub listen: String,
    /// Largest accepted request message, in bytes.
    pub max_message_bytes: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".into(),
            max_message_bytes: 1 << 20,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// Directory for the embedded database and keys.
    pub data_dir: PathBuf,
    /// "normal" survives a process crash; "full" also survives power loss, at a cost
    /// in commit latency (see docs/benchmarks.md).
    pub synchronous: String,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./arbiter-data"),
            synchronous: "normal".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySettings {
    /// Policy bundle file. Without one every agent is denied with `scope.no_policy`.
    pub path: Option<PathBuf>,
    /// Safety-net re-check interval for hot reload, in milliseconds.
    pub poll_interval_ms: u64,
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            path: None,
            poll_interval_ms: 1000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// Most entries written in one group commit.
    pub max_batch: usize,
    /// HMAC key ring; defaults to `<data_dir>/keys/hmac.json`.
    pub keys_file: Option<PathBuf>,
    /// Checkpoint origin line (the log's name); fixed when the signing key is created.
    pub origin: Option<String>,
    /// Also append every committed entry to this JSONL file (export format).
    pub mirror: Option<PathBuf>,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            max_batch: 512,
            keys_file: None,
            origin: None,
            mirror: None,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevSettings {
    /// Read the time from this file (tests and demos only).
    pub clock_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub policy: PolicySettings,
    pub audit: AuditSettings,
    pub dev: DevSettings,
}

impl Settings {
    /// Reads defaults, then `file` (if given), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, String> {
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(f) = file {
            if !f.exists() {
                return Err(format!("config file {} does not exist", f.display()));
            }
            fig = fig.merge(Toml::file(f));
        }
        fig = fig.merge(
            Env::prefixed("ARBITER_")
                .filter(|k| k.as_str().contains("__"))
                .split("__"),
        );
        let s: Settings = fig.extract().map_err(|e| {
            e.into_iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        s.validate()?;
        Ok(s)
    }

    /// Lists every bad setting at once.
    pub fn validate(&self) -> Result<(), String> {
        let mut bad = Vec::new();
        if self.server.listen.parse::<SocketAddr>().is_err() {
            bad.push(format!(
                "server.listen: {:?} is not an address like 127.0.0.1:50051",
                self.server.listen
            ));
        }
        if !(1024..=64 << 20).contains(&self.server.max_message_bytes) {
            bad.push("server.max_message_bytes: must be 1 KiB–64 MiB".to_owned());
        }
        if !matches!(self.storage.synchronous.as_str(), "normal" | "full") {
            bad.push(format!(
                "storage.synchronous: must be \"normal\" or \"full\", got {:?}",
                self.storage.synchronous
            ));
        }
        if !(1..=10_000).contains(&self.audit.max_batch) {
            bad.push("audit.max_batch: must be 1–10000".to_owned());
        }
        if self.policy.poll_interval_ms < 100 {
            bad.push("policy.poll_interval_ms: must be at least 100".to_owned());
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(format!("invalid settings:\n  {}", bad.join("\n  ")))
        }
    }

    pub fn keys_file(&self) -> PathBuf {
        self.audit
            .keys_file
            .clone()
            .unwrap_or_else(|| self.storage.data_dir.join("keys").join("hmac.json"))
    }

    pub fn database_file(&self) -> PathBuf {
        self.storage.data_dir.join("arbiter.db")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_lists_every_bad_key() {
        let mut s = Settings::default();
        s.server.listen = "nope".into();
        s.storage.synchronous = "sometimes".into();
        let err = s.validate().unwrap_err();
        assert!(
            err.contains("server.listen") && err.contains("storage.synchronous"),
            "{err}"
        );
    }
}
