//! `[notifications]`: where outbound webhooks go, how they are signed and retried.
//! Every problem names its field and the limit (`Settings::validate` lists them all).

use super::event::EventType;
use super::sign::Secret;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationSettings {
    /// Webhook endpoints; none configured means the notifier does not start.
    pub endpoints: Vec<EndpointSettings>,
    /// Base URL of the operator console, for links in payloads (Slack's "open" link).
    pub console_url: Option<String>,
    /// Shares of a budget's cap (0 < share ≤ 1) whose crossing is announced, e.g. [0.8, 1.0].
    pub budget_shares: Vec<f64>,
    /// How long a failing event keeps being retried, in seconds (1 s – 7 days).
    pub retry_window_s: u64,
    /// Most delivery attempts of one event (1–1000).
    pub max_attempts: u32,
    /// First retry delay, in milliseconds (10 ms – 1 h); doubles per attempt, with jitter.
    pub retry_initial_ms: u64,
    /// Longest delay between two attempts, in milliseconds (≥ retry_initial_ms, ≤ 1 day).
    pub retry_max_delay_ms: u64,
    /// Events waiting per endpoint before new ones go to the dead letters (1–1 000 000).
    pub queue: usize,
    /// At a clean stop, how long queued events may still be delivered, in milliseconds (≤ 60 000).
    pub drain_ms: u64,
    /// Where the delivery cursor (the log seq up to which every event is done) is kept,
    /// so a restart resumes there; defaults to `<data_dir>/notifications-cursor`.
    pub cursor_file: Option<PathBuf>,
}

impl Default for NotificationSettings {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            console_url: None,
            budget_shares: vec![0.8, 1.0],
            retry_window_s: 24 * 3600,
            max_attempts: 30,
            retry_initial_ms: 1000,
            retry_max_delay_ms: 15 * 60 * 1000,
            queue: 10_000,
            drain_ms: 2000,
            cursor_file: None,
        }
    }
}

/// One `[[notifications.endpoints]]` table.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EndpointSettings {
    /// A short name for logs and the `endpoint` metric label (1–64 of `[A-Za-z0-9_-]`).
    pub name: String,
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// The signing secret, `whsec_` + base64 of 24–64 random bytes. Prefer
    /// `secret_file` or `secret_env` so the secret stays out of the config file.
    pub secret: Option<String>,
    /// A file holding the secret (a mounted Kubernetes Secret); surrounding whitespace is ignored.
    pub secret_file: Option<PathBuf>,
    /// An environment variable holding the secret.
    pub secret_env: Option<String>,
    /// "standard" (Standard Webhooks JSON) or "slack" (incoming-webhook JSON).
    pub format: String,
    /// Event types to send (`approval.requested`, or a prefix like `approval.*`); empty sends all.
    pub events: Vec<String>,
    /// Per-request timeout, in milliseconds (100 ms – 120 s).
    pub timeout_ms: u64,
    /// PEM CA certificates trusted for an https:// URL instead of the system roots.
    pub ca_file: Option<PathBuf>,
}

impl Default for EndpointSettings {
    fn default() -> Self {
        Self {
            name: String::new(),
            url: String::new(),
            secret: None,
            secret_file: None,
            secret_env: None,
            format: "standard".into(),
            events: Vec::new(),
            timeout_ms: 10_000,
            ca_file: None,
        }
    }
}

// The secret never appears in logs or error messages.
impl std::fmt::Debug for EndpointSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointSettings")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_file", &self.secret_file)
            .field("secret_env", &self.secret_env)
            .field("format", &self.format)
            .field("events", &self.events)
            .field("timeout_ms", &self.timeout_ms)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Standard,
    Slack,
}

/// An endpoint's validated settings, secret resolved.
#[derive(Clone)]
pub struct Endpoint {
    pub name: String,
    pub url: url::Url,
    pub secret: Secret,
    pub format: Format,
    pub filter: Vec<String>,
    pub timeout: Duration,
    pub ca_file: Option<PathBuf>,
}

impl Endpoint {
    /// Whether events of this type go to this endpoint.
    pub fn wants(&self, ty: EventType) -> bool {
        self.filter.is_empty() || self.filter.iter().any(|f| filter_matches(f, ty.name()))
    }
}

fn filter_matches(filter: &str, name: &str) -> bool {
    match filter.strip_suffix(".*") {
        Some(prefix) => name.starts_with(prefix) && name[prefix.len()..].starts_with('.'),
        None => filter == "*" || filter == name,
    }
}

impl NotificationSettings {
    /// Appends every bad setting to `bad`, each naming its field and limit.
    pub fn validate(&self, bad: &mut Vec<String>) {
        if let Some(u) = &self.console_url {
            if let Err(e) = http_url(u) {
                bad.push(format!("notifications.console_url: {e}"));
            }
        }
        for (i, s) in self.budget_shares.iter().enumerate() {
            if !(s.is_finite() && *s > 0.0 && *s <= 1.0) {
                bad.push(format!(
                    "notifications.budget_shares[{i}]: must be above 0 and at most 1, got {s}"
                ));
            }
        }
        range(bad, "retry_window_s", self.retry_window_s, 1, 7 * 24 * 3600);
        range(bad, "max_attempts", self.max_attempts.into(), 1, 1000);
        range(
            bad,
            "retry_initial_ms",
            self.retry_initial_ms,
            10,
            3_600_000,
        );
        range(
            bad,
            "retry_max_delay_ms",
            self.retry_max_delay_ms,
            self.retry_initial_ms,
            86_400_000,
        );
        range(bad, "queue", self.queue as u64, 1, 1_000_000);
        range(bad, "drain_ms", self.drain_ms, 0, 60_000);
        let mut names = std::collections::HashSet::new();
        for (i, e) in self.endpoints.iter().enumerate() {
            if !names.insert(e.name.as_str()) {
                bad.push(format!(
                    "notifications.endpoints[{i}].name: {:?} is used twice",
                    e.name
                ));
            }
            if let Err(problems) = e.resolve_with(&|k| std::env::var(k).ok()) {
                bad.extend(
                    problems
                        .into_iter()
                        .map(|p| format!("notifications.endpoints[{i}].{p}")),
                );
            }
        }
    }

    /// The endpoints with their secrets read (validation already passed).
    pub fn endpoints(&self) -> Result<Vec<Endpoint>, String> {
        self.endpoints
            .iter()
            .map(|e| e.resolve_with(&|k| std::env::var(k).ok()))
            .collect::<Result<_, _>>()
            .map_err(|p| p.join("; "))
    }
}

fn range(bad: &mut Vec<String>, field: &str, v: u64, lo: u64, hi: u64) {
    if !(lo..=hi).contains(&v) {
        bad.push(format!("notifications.{field}: must be {lo}–{hi}, got {v}"));
    }
}

fn http_url(s: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(s).map_err(|e| format!("{s:?} is not a URL ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
        return Err(format!(
            "{s:?} must be an http:// or https:// URL with a host"
        ));
    }
    Ok(u)
}

impl EndpointSettings {
    /// Every problem is `field: problem`, relative to this endpoint's table.
    fn resolve_with(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Endpoint, Vec<String>> {
        let mut bad = Vec::new();
        let name_ok = (1..=64).contains(&self.name.len())
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            bad.push(format!(
                "name: must be 1–64 of A–Z, a–z, 0–9, '_' and '-', got {:?}",
                self.name
            ));
        }
        let url = http_url(&self.url)
            .map_err(|e| bad.push(format!("url: {e}")))
            .ok();
        let format = match self.format.as_str() {
            "standard" => Some(Format::Standard),
            "slack" => Some(Format::Slack),
            other => {
                bad.push(format!(
                    "format: must be \"standard\" or \"slack\", got {other:?}"
                ));
                None
            }
        };
        for (i, f) in self.events.iter().enumerate() {
            let known = EventType::ALL.iter().any(|t| filter_matches(f, t.name()));
            if !known {
                bad.push(format!(
                    "events[{i}]: {f:?} matches no event type (known: {})",
                    EventType::ALL.map(|t| t.name()).join(", ")
                ));
            }
        }
        if !(100..=120_000).contains(&self.timeout_ms) {
            bad.push(format!(
                "timeout_ms: must be 100–120000, got {}",
                self.timeout_ms
            ));
        }
        let secret = self
            .secret_text(env)
            .and_then(|s| Secret::parse(&s))
            .map_err(|e| bad.push(e))
            .ok();
        match (url, format, secret) {
            (Some(url), Some(format), Some(secret)) if bad.is_empty() => Ok(Endpoint {
                name: self.name.clone(),
                url,
                secret,
                format,
                filter: self.events.clone(),
                timeout: Duration::from_millis(self.timeout_ms),
                ca_file: self.ca_file.clone(),
            }),
            _ => Err(bad),
        }
    }

    /// Exactly one of `secret`, `secret_file` and `secret_env`.
    fn secret_text(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
        match (&self.secret, &self.secret_file, &self.secret_env) {
            (Some(s), None, None) => Ok(s.clone()),
            (None, Some(p), None) => std::fs::read_to_string(p)
                .map(|s| s.trim().to_owned())
                .map_err(|e| format!("secret_file: cannot read {} ({e})", p.display())),
            (None, None, Some(k)) => env(k)
                .map(|s| s.trim().to_owned())
                .ok_or_else(|| format!("secret_env: the environment variable {k} is not set")),
            (None, None, None) => Err("secret: needed (or secret_file, or secret_env)".into()),
            _ => Err("secret: set only one of secret, secret_file and secret_env".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn endpoint() -> EndpointSettings {
        EndpointSettings {
            name: "ops".into(),
            url: "https://hooks.example.com/arbiter".into(),
            secret: Some(SECRET.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_good_endpoint_resolves_and_filters_by_prefix() {
        let e = endpoint().resolve_with(&|_| None).unwrap();
        assert!(e.wants(EventType::HaltEngaged));
        let mut s = endpoint();
        s.events = vec!["approval.*".into()];
        let e = s.resolve_with(&|_| None).unwrap();
        assert!(e.wants(EventType::ApprovalRequested) && e.wants(EventType::ApprovalExpired));
        assert!(!e.wants(EventType::HaltEngaged));
    }

    #[test]
    fn every_bad_field_is_named_with_its_limit() {
        let s = EndpointSettings {
            name: "has space".into(),
            url: "ftp://example.com/".into(),
            secret: Some("whsec_c2hvcnQ=".into()),
            format: "teams".into(),
            events: vec!["approval.approved".into()],
            timeout_ms: 5,
            ..Default::default()
        };
        let bad = s.resolve_with(&|_| None).err().unwrap().join("\n");
        for want in [
            "name: must be 1–64",
            "url: \"ftp://example.com/\" must be an http:// or https:// URL",
            "format: must be \"standard\" or \"slack\"",
            "events[0]: \"approval.approved\" matches no event type",
            "timeout_ms: must be 100–120000",
            "secret: must decode to 24–64 bytes",
        ] {
            assert!(bad.contains(want), "{want:?} missing from:\n{bad}");
        }
    }

    #[test]
    fn the_secret_comes_from_exactly_one_source() {
        let mut s = endpoint();
        s.secret = None;
        s.secret_env = Some("HOOK_SECRET".into());
        let env = |k: &str| (k == "HOOK_SECRET").then(|| format!("{SECRET}\n"));
        assert!(s.resolve_with(&env).is_ok());
        let bad = s.resolve_with(&|_| None).err().unwrap().join("");
        assert!(bad.contains("secret_env: the environment variable HOOK_SECRET is not set"));
        s.secret = Some(SECRET.into());
        let bad = s.resolve_with(&env).err().unwrap().join("");
        assert!(bad.contains("set only one of"), "{bad}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, format!("  {SECRET}\n")).unwrap();
        let s = EndpointSettings {
            secret: None,
            secret_file: Some(path),
            ..endpoint()
        };
        assert!(s.resolve_with(&|_| None).is_ok());
    }

    #[test]
    fn section_limits_are_checked() {
        let s = NotificationSettings {
            console_url: Some("not a url".into()),
            budget_shares: vec![0.0, 1.5],
            queue: 0,
            retry_max_delay_ms: 1,
            endpoints: vec![endpoint(), endpoint()],
            ..Default::default()
        };
        let mut bad = Vec::new();
        s.validate(&mut bad);
        let bad = bad.join("\n");
        for want in [
            "notifications.console_url:",
            "notifications.budget_shares[0]: must be above 0 and at most 1",
            "notifications.budget_shares[1]",
            "notifications.queue: must be 1–1000000",
            "notifications.retry_max_delay_ms: must be 1000–86400000",
            "notifications.endpoints[1].name: \"ops\" is used twice",
        ] {
            assert!(bad.contains(want), "{want:?} missing from:\n{bad}");
        }
    }
}
