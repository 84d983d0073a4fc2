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
    /// TLS and mTLS; off unless `cert_file` is set.
    pub tls: TlsSettings,
    /// On SIGTERM or Ctrl-C, how long in-flight RPCs (streams included) may run before
    /// they are cut, in milliseconds. The last audit batch is committed either way.
    pub shutdown_grace_ms: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".into(),
            max_message_bytes: 1 << 20,
            tls: TlsSettings::default(),
            shutdown_grace_ms: 10_000,
        }
    }
}

/// `server.tls`: the server's certificate and key turn TLS on; a client CA and a
/// client-auth mode turn on mTLS, whose certificate identities can be principals.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// Server certificate chain (PEM, leaf first).
    pub cert_file: Option<PathBuf>,
    /// Private key of the leaf certificate (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates must chain to.
    pub client_ca_file: Option<PathBuf>,
    /// "none": no client certificates; "optional": verified if presented;
    /// "required": the handshake fails without one.
    pub client_auth: String,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            client_auth: "none".into(),
        }
    }
}

/// Whether and how the server asks for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Optional,
    Required,
}

impl std::fmt::Display for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Optional => "optional",
            Self::Required => "required",
        })
    }
}

impl TlsSettings {
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }

    pub fn client_auth(&self) -> Result<ClientAuth, String> {
        match self.client_auth.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(ClientAuth::None),
            "optional" => Ok(ClientAuth::Optional),
            "required" => Ok(ClientAuth::Required),
            _ => Err(format!(
                "server.tls.client_auth: must be \"none\", \"optional\" or \"required\", got {:?}",
                self.client_auth
            )),
        }
    }

    fn validate(&self, bad: &mut Vec<String>) {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => {
                bad.push("server.tls.key_file: needed with server.tls.cert_file".to_owned())
            }
            (None, Some(_)) => {
                bad.push("server.tls.cert_file: needed with server.tls.key_file".to_owned())
            }
            _ => {}
        }
        let auth = match self.client_auth() {
            Ok(a) => a,
            Err(e) => {
                bad.push(e);
                return;
            }
        };
        if auth != ClientAuth::None && self.cert_file.is_none() {
            bad.push(format!(
                "server.tls.cert_file: needed when server.tls.client_auth is {auth} (mTLS runs over TLS)"
            ));
        }
        match (auth, &self.client_ca_file) {
            (ClientAuth::None, Some(_)) => bad.push(
                "server.tls.client_auth: set \"optional\" or \"required\" to use server.tls.client_ca_file"
                    .to_owned(),
            ),
            (ClientAuth::Optional | ClientAuth::Required, None) => bad.push(format!(
                "server.tls.client_ca_file: needed when server.tls.client_auth is {auth}"
            )),
            _ => {}
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
    /// `postgres://…`: use PostgreSQL instead of the embedded SQLite file (keys stay in
    /// `data_dir`). Also `--database` and `ARBITER_DATABASE_URL`. Never logged.
    pub database_url: Option<String>,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./arbiter-data"),
            synchronous: "normal".into(),
            database_url: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySettings {
    /// Policy bundle file. Without one every agent is denied with `scope.no_policy`,
    /// except on a shared PostgreSQL database that already holds a published bundle,
    /// which is then served (docs/postgres.md).
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
    /// Copy of the newest signed checkpoint, kept outside the database so a database
    /// rolled back to an older copy of itself is refused at start; defaults to
    /// `<data_dir>/audit-checkpoint.txt`.
    pub checkpoint_file: Option<PathBuf>,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            max_batch: 512,
            keys_file: None,
            origin: None,
            mirror: None,
            checkpoint_file: None,
        }
    }
}

/// `metrics`: the Prometheus endpoint, on its own HTTP port.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Address of the HTTP listener serving `GET /metrics`; "off" (or empty) disables it.
    /// It carries no decisions or secrets, but counts do reveal activity: keep it off
    /// public networks.
    pub listen: String,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9090".into(),
        }
    }
}

impl MetricsSettings {
    /// The address to serve on, or `None` when metrics are off.
    pub fn addr(&self) -> Result<Option<SocketAddr>, String> {
        let v = self.listen.trim();
        if v.is_empty() || v.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        v.parse().map(Some).map_err(|_| {
            format!(
                "metrics.listen: {:?} is not an address like 127.0.0.1:9090 (or \"off\")",
                self.listen
            )
        })
    }
}

/// `console`: the operator console (docs/console.md), on its own HTTP port.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSettings {
    /// Address of the console's HTTP listener; "off" (or empty) disables it.
    pub listen: String,
    /// The address people reach the console at (a TLS-terminating proxy in front of it),
    /// printed in the log and used for links. An `https://` URL marks the session cookie
    /// `Secure`.
    pub public_url: Option<String>,
    /// A session ends after this many seconds without a request (60–86 400).
    pub idle_timeout_secs: u64,
    /// A session ends this many seconds after sign-in whatever its use (60–604 800).
    pub max_age_secs: u64,
    /// Serve HTTPS with the gRPC listener's certificate and client-certificate rules
    /// (`server.tls`): the session cookie is `Secure`, and a principal bound to a client
    /// certificate signs in with it, without a key.
    pub tls: bool,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
            public_url: None,
            idle_timeout_secs: 15 * 60,
            max_age_secs: 8 * 60 * 60,
            tls: false,
        }
    }
}

impl ConsoleSettings {
    /// The address to serve on, or `None` when the console is off.
    pub fn addr(&self) -> Result<Option<SocketAddr>, String> {
        let v = self.listen.trim();
        if v.is_empty() || v.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        v.parse().map(Some).map_err(|_| {
            format!(
                "console.listen: {:?} is not an address like 127.0.0.1:9464 (or \"off\")",
                self.listen
            )
        })
    }

    fn validate(&self, bad: &mut Vec<String>) {
        if let Err(e) = self.addr() {
            bad.push(e);
        }
        if let Some(url) = &self.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bad.push(format!(
                    "console.public_url: {url:?} must start with http:// or https://"
                ));
            }
        }
        if !(60..=86_400).contains(&self.idle_timeout_secs) {
            bad.push("console.idle_timeout_secs: must be 60–86400".to_owned());
        }
        if !(60..=604_800).contains(&self.max_age_secs) {
            bad.push("console.max_age_secs: must be 60–604800".to_owned());
        }
    }
}

/// `mcp_gateway`: the MCP gateway (docs/mcp.md) served by this process, on its own HTTP
/// port, calling this server's own gRPC listener.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpGatewaySettings {
    /// The gateway's `gateway.yaml` (without `arbiter.endpoint`). Unset: no gateway.
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevSettings {
    /// Read the time from this file (tests and demos only).
    pub clock_file: Option<PathBuf>,
    /// Unauthenticated refusals queued for the audit log before further ones are only
    /// counted (and audited as one summary entry). 1–1 000 000; tests make it small.
    pub refusal_queue: usize,
}

impl Default for DevSettings {
    fn default() -> Self {
        Self {
            clock_file: None,
            refusal_queue: 1024,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub policy: PolicySettings,
    pub audit: AuditSettings,
    pub metrics: MetricsSettings,
    /// Outbound webhooks (docs/operations.md, "Webhooks").
    pub notifications: crate::notify::settings::NotificationSettings,
    pub console: ConsoleSettings,
    pub mcp_gateway: McpGatewaySettings,
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
        let mut s = s;
        if let Ok(url) = std::env::var("ARBITER_DATABASE_URL") {
            if !url.is_empty() {
                s.storage.database_url = Some(url);
            }
        }
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
        self.server.tls.validate(&mut bad);
        if self.server.shutdown_grace_ms > 300_000 {
            bad.push("server.shutdown_grace_ms: must be at most 300000 (5 minutes)".to_owned());
        }
        if let Err(e) = self.metrics.addr() {
            bad.push(e);
        }
        self.console.validate(&mut bad);
        if self.console.tls && self.server.tls.cert_file.is_none() {
            bad.push(
                "console.tls: needs server.tls.cert_file and server.tls.key_file (the console \
                 serves the gRPC listener's certificate)"
                    .to_owned(),
            );
        }
        if !matches!(self.storage.synchronous.as_str(), "normal" | "full") {
            bad.push(format!(
                "storage.synchronous: must be \"normal\" or \"full\", got {:?}",
                self.storage.synchronous
            ));
        }
        if let Some(url) = &self.storage.database_url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                // The value itself is not repeated: it may hold a password.
                bad.push(
                    "storage.database_url: must be a postgres:// or postgresql:// URL".to_owned(),
                );
            }
        }
        if !(1..=10_000).contains(&self.audit.max_batch) {
            bad.push("audit.max_batch: must be 1–10000".to_owned());
        }
        if !(1..=1_000_000).contains(&self.dev.refusal_queue) {
            bad.push("dev.refusal_queue: must be 1–1000000".to_owned());
        }
        if self.policy.poll_interval_ms < 100 {
            bad.push("policy.poll_interval_ms: must be at least 100".to_owned());
        }
        self.notifications.validate(&mut bad);
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

    pub fn checkpoint_file(&self) -> PathBuf {
        self.audit
            .checkpoint_file
            .clone()
            .unwrap_or_else(|| self.storage.data_dir.join("audit-checkpoint.txt"))
    }

    pub fn notifications_cursor_file(&self) -> PathBuf {
        self.notifications
            .cursor_file
            .clone()
            .unwrap_or_else(|| self.storage.data_dir.join("notifications-cursor"))
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
        s.metrics.listen = "everywhere".into();
        let err = s.validate().unwrap_err();
        assert!(
            err.contains("server.listen")
                && err.contains("storage.synchronous")
                && err.contains("metrics.listen"),
            "{err}"
        );
    }

    #[test]
    fn the_mcp_gateway_is_off_unless_its_file_is_named() {
        assert!(Settings::default().mcp_gateway.config.is_none());
        let fig = Figment::from(Serialized::defaults(Settings::default())).merge(Toml::string(
            "[mcp_gateway]\nconfig = \"/etc/arbiter/gateway.yaml\"\n",
        ));
        let s: Settings = fig.extract().unwrap();
        assert_eq!(
            s.mcp_gateway.config.as_deref(),
            Some(Path::new("/etc/arbiter/gateway.yaml"))
        );
    }

    #[test]
    fn metrics_can_be_switched_off() {
        let mut s = MetricsSettings::default();
        assert_eq!(s.addr().unwrap(), Some("127.0.0.1:9090".parse().unwrap()));
        for off in ["off", "OFF", "", "  "] {
            s.listen = off.into();
            assert_eq!(s.addr().unwrap(), None, "{off:?}");
        }
    }

    #[test]
    fn tls_settings_name_every_missing_piece() {
        let mut s = Settings::default();
        s.server.tls.key_file = Some("key.pem".into());
        s.server.tls.client_auth = "required".into();
        let err = s.validate().unwrap_err();
        assert!(
            err.contains("server.tls.cert_file: needed with server.tls.key_file")
                && err.contains(
                    "server.tls.client_ca_file: needed when server.tls.client_auth is required"
                ),
            "{err}"
        );
        let mut s = Settings::default();
        s.server.tls.client_auth = "sometimes".into();
        let err = s.validate().unwrap_err();
        assert!(err.contains("server.tls.client_auth: must be"), "{err}");
        let mut s = Settings::default();
        s.server.tls.cert_file = Some("cert.pem".into());
        s.server.tls.key_file = Some("key.pem".into());
        s.server.tls.client_ca_file = Some("ca.pem".into());
        let err = s.validate().unwrap_err();
        assert!(err.contains("server.tls.client_auth: set"), "{err}");
        s.server.tls.client_auth = "Optional".into();
        s.validate().unwrap();
    }
}
