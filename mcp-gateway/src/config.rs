//! `gateway.yaml`: the gateway's one configuration file. Unknown keys are refused and
//! every problem names its field, so a typo never silently widens what is reachable.

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The Arbiter server every decision comes from.
    #[serde(default)]
    pub arbiter: ArbiterConfig,
    /// Where MCP clients connect (Streamable HTTP).
    #[serde(default)]
    pub listen: ListenConfig,
    /// How long a call that needs a human approval is held before the client is told
    /// to retry (`approval_wait`, e.g. "2m"; 0 answers at once).
    #[serde(default = "default_approval_wait", deserialize_with = "duration")]
    pub approval_wait: Duration,
    /// How often a session that listed its tools (or an open `subscriptions/listen`
    /// stream) has them filtered again, to send `notifications/tools/list_changed` when
    /// what it may see changed (`list_watch`, e.g. "10s"; 0 never sends it).
    #[serde(default = "default_list_watch", deserialize_with = "duration")]
    pub list_watch: Duration,
    /// Bound on one upstream tools/list or tools/call (`upstream_timeout`, e.g. "60s").
    #[serde(default = "default_upstream_timeout", deserialize_with = "duration")]
    pub upstream_timeout: Duration,
    /// The MCP servers the gateway may reach: nothing else is reachable.
    pub upstreams: Vec<UpstreamConfig>,
    /// Prometheus endpoint (`GET /metrics`); off unless `metrics.listen` is set.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// How the `requestState` of a 2026-07-28 `input_required` answer is sealed.
    #[serde(default)]
    pub request_state: RequestStateConfig,
    /// The hook endpoints (`hooks.rs`): what their calls cost.
    #[serde(default)]
    pub hooks: HooksConfig,
    /// The operator console as the people who approve calls reach it, e.g.
    /// "https://arbiter.example.com:8443". Set, a 2026-07-28 client that takes URL-mode
    /// elicitations is pointed at `<console_url>/approvals/<id>` while its call waits.
    #[serde(default)]
    pub console_url: Option<String>,
}

/// Settings of the hook endpoints, whose tools are named by the agent runtime, not by an
/// upstream, so no `upstreams[].prices` entry can apply to them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    #[serde(default)]
    pub claude_code: ClaudeCodeHooksConfig,
    #[serde(default)]
    pub docker: DockerHooksConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerHooksConfig {
    /// Cost of one call per tool name as Docker's MCP gateway names it (the
    /// interceptor body's `params.name`), in integer micro-USD, sent as Evaluate's
    /// estimate and Recorded by the `after` hook.
    #[serde(default)]
    pub prices: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaudeCodeHooksConfig {
    /// Cost of one call per Claude Code tool name (`Bash`, `WebFetch`,
    /// `mcp__server__tool`, exactly as the hook's `tool_name`), in integer micro-USD,
    /// sent as Evaluate's estimate and Recorded at PostToolUse.
    #[serde(default)]
    pub prices: BTreeMap<String, u64>,
}

/// The HMAC secret and lifetime of pending calls' `requestState` (`state.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestStateConfig {
    /// The secret itself (at least 32 bytes). Prefer `secret_file`.
    #[serde(default)]
    pub secret: Option<String>,
    /// A file holding the secret (at least 32 bytes; surrounding whitespace ignored).
    /// Neither set: a random secret per start.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// How long a sealed state may be presented (`ttl`, e.g. "1h", Arbiter's default
    /// approval lifetime).
    #[serde(default = "default_state_ttl", deserialize_with = "duration")]
    pub ttl: Duration,
}

impl Default for RequestStateConfig {
    fn default() -> Self {
        Self {
            secret: None,
            secret_file: None,
            ttl: default_state_ttl(),
        }
    }
}

/// Largest price of one call, in micro-USD (1 000 USD): a larger one is a typo.
pub const MAX_PRICE: u64 = 1_000_000_000;

/// Shortest secret accepted (HMAC-SHA256's block of key material).
pub const MIN_SECRET_BYTES: usize = 32;

impl RequestStateConfig {
    /// The configured secret's bytes, if one is configured; a short one is refused.
    pub fn secret(&self) -> anyhow::Result<Option<Vec<u8>>> {
        let (field, bytes) = match (&self.secret, &self.secret_file) {
            (Some(_), Some(_)) => {
                anyhow::bail!("request_state: set secret or secret_file, not both")
            }
            (Some(s), None) => ("request_state.secret", s.trim().as_bytes().to_vec()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("request_state.secret_file: reading {}: {e}", path.display())
                })?;
                ("request_state.secret_file", text.trim().as_bytes().to_vec())
            }
            (None, None) => return Ok(None),
        };
        if bytes.len() < MIN_SECRET_BYTES {
            anyhow::bail!(
                "{field}: must be at least {MIN_SECRET_BYTES} bytes, got {}",
                bytes.len()
            );
        }
        Ok(Some(bytes))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the metrics endpoint, e.g. "127.0.0.1:9465".
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArbiterConfig {
    /// gRPC endpoint, e.g. "http://127.0.0.1:50051". Required for `arbiter mcp-gateway`;
    /// inside `arbiter serve` it must be absent: the server sets it to its own listener.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// PEM file of the CA that signed Arbiter's certificate (for https:// endpoints).
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// The name Arbiter's certificate must carry, when it differs from the endpoint's host.
    #[serde(default)]
    pub tls_domain: Option<String>,
    /// Client certificate (PEM) for an Arbiter that asks for one (mTLS). It only opens
    /// the connection: each call is still made with the MCP client's own key, so the
    /// certificate must not be bound to a principal (Arbiter refuses a key and a
    /// certificate of different principals).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Deadline of one Arbiter call (e.g. "5s").
    #[serde(default = "default_arbiter_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
}

impl Default for ArbiterConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            tls_ca: None,
            tls_domain: None,
            tls_cert: None,
            tls_key: None,
            timeout: default_arbiter_timeout(),
        }
    }
}

/// Where the gateway runs, which decides who names the Arbiter endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// `arbiter mcp-gateway`: its own process, `arbiter.endpoint` required.
    Standalone,
    /// Inside `arbiter serve`: the server points it at its own gRPC listener.
    InServer,
}

impl ArbiterConfig {
    fn problems(&self, placement: Placement, out: &mut Vec<String>) {
        match (placement, &self.endpoint) {
            (Placement::Standalone, None) => out.push(
                "arbiter.endpoint: required (Arbiter's gRPC endpoint, e.g. \"http://127.0.0.1:50051\")"
                    .to_owned(),
            ),
            (Placement::InServer, Some(_)) => out.push(
                "arbiter.endpoint: not used inside `arbiter serve`, where the gateway calls that \
                 server's own gRPC listener; remove it"
                    .to_owned(),
            ),
            _ => {}
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => out.push("arbiter.tls_key: needed with arbiter.tls_cert".to_owned()),
            (None, Some(_)) => out.push("arbiter.tls_cert: needed with arbiter.tls_key".to_owned()),
            _ => {}
        }
        // Arbiter's client takes these only over TLS, which the CA turns on.
        if self.tls_ca.is_none() {
            for (set, field) in [
                (self.tls_cert.is_some(), "arbiter.tls_cert"),
                (self.tls_domain.is_some(), "arbiter.tls_domain"),
            ] {
                if set {
                    out.push(format!("arbiter.tls_ca: needed with {field}"));
                }
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Address to bind; loopback by default. Port 0 picks a free port.
    #[serde(default = "default_addr")]
    pub addr: SocketAddr,
    /// HTTP path of the MCP endpoint.
    #[serde(default = "default_path")]
    pub path: String,
    /// `Host` header values accepted (DNS-rebinding defence); loopback names by default.
    #[serde(default = "default_hosts")]
    pub allowed_hosts: Vec<String>,
    /// Browser origins accepted, e.g. "http://localhost:*". A request with any other
    /// `Origin` header is refused with 403; requests without one (non-browser clients)
    /// pass. Empty (the default) refuses every request that carries an `Origin`.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_max_body")]
    pub max_request_bytes: usize,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            addr: default_addr(),
            path: default_path(),
            allowed_hosts: default_hosts(),
            allowed_origins: Vec::new(),
            max_request_bytes: default_max_body(),
        }
    }
}

/// One upstream MCP server: exactly one of `stdio` or `http`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// 1–64 chars of [A-Za-z0-9_-]; the tool prefix when there are several upstreams.
    pub name: String,
    #[serde(default)]
    pub stdio: Option<StdioConfig>,
    #[serde(default)]
    pub http: Option<HttpConfig>,
    /// Cost of one call per tool (the upstream's own tool name), in integer micro-USD
    /// (1 USD = 1 000 000), sent as Evaluate's estimate so budgets cap MCP spend.
    #[serde(default)]
    pub prices: BTreeMap<String, u64>,
    /// Ask Arbiter for a receipt of each allowed call and hand it to this upstream in
    /// the request's `_meta["io.github.arbiter/receipt"]`, so the tool server can check
    /// offline, with only Arbiter's public key, that the call was allowed and logged.
    #[serde(default)]
    pub receipts: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdioConfig {
    /// Program to start (looked up on PATH).
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment added to the child's (the gateway's own environment is not cleared).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory of the child.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Streamable HTTP endpoint, http:// or https://.
    pub url: String,
    /// Headers sent upstream (the gateway's own credentials for this server; the
    /// client's token is never passed through).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// PEM file of the CA to trust for an https:// upstream (no system roots otherwise).
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
}

/// How the gateway reaches one upstream.
#[derive(Debug, Clone)]
pub enum Transport {
    Stdio(StdioConfig),
    Http(HttpConfig),
}

impl UpstreamConfig {
    pub fn transport(&self) -> Transport {
        match (&self.stdio, &self.http) {
            (Some(s), _) => Transport::Stdio(s.clone()),
            (None, Some(h)) => Transport::Http(h.clone()),
            (None, None) => unreachable!("validated: exactly one transport"),
        }
    }
}

fn default_approval_wait() -> Duration {
    Duration::from_secs(120)
}
fn default_list_watch() -> Duration {
    Duration::from_secs(10)
}
fn default_upstream_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_state_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_arbiter_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8765))
}
fn default_path() -> String {
    "/mcp".to_owned()
}
fn default_hosts() -> Vec<String> {
    ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec()
}
fn default_max_body() -> usize {
    4 * 1024 * 1024
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!("{text:?} is not a duration like \"30s\": {e}"))
    })
}

impl Config {
    /// Reads and checks `path` for `arbiter mcp-gateway`; every problem is named by field.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        Self::load_for(path, Placement::Standalone)
    }

    /// Reads and checks `path` for where the gateway runs.
    pub fn load_for(path: &Path, placement: Placement) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        Self::parse_for(&text, placement).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Config> {
        Self::parse_for(text, Placement::Standalone)
    }

    pub fn parse_for(text: &str, placement: Placement) -> anyhow::Result<Config> {
        let config: Config = serde_norway::from_str(text)?;
        let mut problems = Vec::new();
        config.arbiter.problems(placement, &mut problems);
        problems.extend(config.problems());
        if problems.is_empty() {
            Ok(config)
        } else {
            anyhow::bail!("{}", problems.join("; "))
        }
    }

    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.upstreams.is_empty() {
            out.push("upstreams: at least one upstream is required".to_owned());
        }
        if !self.listen.path.starts_with('/') {
            out.push(format!(
                "listen.path: must start with '/', got {:?}",
                self.listen.path
            ));
        }
        if let Some(url) = &self.console_url {
            if let Err(why) = console_url_problem(url) {
                out.push(format!("console_url: {why}, got {url:?}"));
            }
        }
        if self.request_state.ttl.is_zero() {
            out.push("request_state.ttl: must be more than 0s".to_owned());
        }
        if let Err(e) = self.request_state.secret() {
            out.push(e.to_string());
        }
        price_problems(
            "hooks.claude_code.prices",
            &self.hooks.claude_code.prices,
            &mut out,
        );
        price_problems("hooks.docker.prices", &self.hooks.docker.prices, &mut out);
        let mut seen = std::collections::BTreeSet::new();
        for (i, u) in self.upstreams.iter().enumerate() {
            let at = format!("upstreams[{i}]");
            if !valid_name(&u.name) {
                out.push(format!(
                    "{at}.name: must be 1–64 characters of [A-Za-z0-9_-], got {:?}",
                    u.name
                ));
            }
            price_problems(&format!("{at}.prices"), &u.prices, &mut out);
            if !seen.insert(u.name.as_str()) {
                out.push(format!("{at}.name: {:?} is used twice", u.name));
            }
            match (&u.stdio, &u.http) {
                (Some(_), Some(_)) | (None, None) => {
                    out.push(format!("{at}: set exactly one of stdio or http"))
                }
                (Some(s), None) if s.command.is_empty() => {
                    out.push(format!("{at}.stdio.command: must not be empty"))
                }
                (None, Some(h))
                    if !(h.url.starts_with("http://") || h.url.starts_with("https://")) =>
                {
                    out.push(format!(
                        "{at}.http.url: must be http:// or https://, got {:?}",
                        h.url
                    ))
                }
                _ => {}
            }
        }
        out
    }
}

/// The console's address must be a plain http(s) origin or path: the approval page is
/// appended to it, and a query or fragment would swallow that.
fn console_url_problem(url: &str) -> Result<(), &'static str> {
    let parsed = reqwest::Url::parse(url).map_err(|_| "must be an http:// or https:// URL")?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err("must be an http:// or https:// URL");
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("must have no query or fragment (the approval page is appended)");
    }
    Ok(())
}

/// Every price of a `{tool: micro-USD}` table is for a named tool and at most `MAX_PRICE`.
fn price_problems(at: &str, prices: &BTreeMap<String, u64>, out: &mut Vec<String>) {
    for (tool, price) in prices {
        if tool.is_empty() {
            out.push(format!("{at}: a tool name must not be empty"));
        }
        if *price > MAX_PRICE {
            out.push(format!(
                "{at}.{tool}: at most {MAX_PRICE} micro-USD (1 000 USD) per call, got {price}"
            ));
        }
    }
}

/// Upstream names become tool prefixes (`<server>.<tool>`), so they hold no '.'.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "arbiter: {endpoint: 'http://127.0.0.1:1'}\nupstreams: [{name: files, stdio: {command: srv}}]\n";

    #[test]
    fn a_minimal_file_takes_loopback_defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        assert!(c.listen.addr.ip().is_loopback());
        assert_eq!(c.listen.path, "/mcp");
        assert_eq!(c.approval_wait, Duration::from_secs(120));
        assert_eq!(c.list_watch, Duration::from_secs(10));
        assert!(matches!(c.upstreams[0].transport(), Transport::Stdio(_)));
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let text = MINIMAL.replace("command: srv", "command: srv, argz: [x]");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("argz"), "{err}");
    }

    #[test]
    fn each_problem_names_its_field() {
        let text = "arbiter: {endpoint: x}\nupstreams:\n  - {name: 'a.b', stdio: {command: s}, http: {url: 'http://x'}}\n  - {name: c, http: {url: 'ftp://x'}}\n  - {name: c, stdio: {command: s}}\n";
        let err = Config::parse(text).unwrap_err().to_string();
        for want in [
            "upstreams[0].name: must be",
            "upstreams[0]: set exactly one of stdio or http",
            "upstreams[1].http.url",
            "upstreams[2].name: \"c\" is used twice",
        ] {
            assert!(err.contains(want), "{want} missing from {err}");
        }
    }

    #[test]
    fn a_bad_duration_is_named() {
        let text = format!("{MINIMAL}approval_wait: soon\n");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("approval_wait") || err.contains("soon"),
            "{err}"
        );
    }

    #[test]
    fn a_short_or_doubled_request_state_secret_is_named() {
        let short = format!("{MINIMAL}request_state: {{secret: tooshort}}\n");
        let err = Config::parse(&short).unwrap_err().to_string();
        assert!(
            err.contains("request_state.secret: must be at least 32 bytes, got 8"),
            "{err}"
        );
        let both = format!("{MINIMAL}request_state: {{secret: x, secret_file: /x}}\n");
        let err = Config::parse(&both).unwrap_err().to_string();
        assert!(err.contains("not both"), "{err}");
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.request_state.ttl, Duration::from_secs(3600));
        assert!(c.request_state.secret().unwrap().is_none());
    }

    #[test]
    fn prices_are_micro_usd_per_tool_and_bounded() {
        let text = MINIMAL.replace("command: srv}", "command: srv}, prices: {send: 20000}");
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.upstreams[0].prices["send"], 20_000);
        let text = MINIMAL.replace("command: srv}", "command: srv}, prices: {send: 2000000000}");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("upstreams[0].prices.send: at most"), "{err}");
        let text = MINIMAL.replace("command: srv}", "command: srv}, prices: {send: 0.02}");
        assert!(Config::parse(&text).is_err(), "prices are integers");
    }

    #[test]
    fn claude_code_prices_are_keyed_by_its_tool_names_and_bounded() {
        let text = format!("{MINIMAL}hooks: {{claude_code: {{prices: {{Bash: 1000}}}}}}\n");
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.hooks.claude_code.prices["Bash"], 1000);
        let text = format!("{MINIMAL}hooks: {{claude_code: {{prices: {{Bash: 2000000000}}}}}}\n");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("hooks.claude_code.prices.Bash: at most"),
            "{err}"
        );
        let text = format!("{MINIMAL}hooks: {{claude: {{}}}}\n");
        assert!(
            Config::parse(&text).is_err(),
            "unknown hook names are refused"
        );
        let text = format!("{MINIMAL}hooks: {{docker: {{prices: {{fetch: 2000000000}}}}}}\n");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("hooks.docker.prices.fetch: at most"), "{err}");
    }

    #[test]
    fn the_console_url_is_an_http_address_without_query() {
        let ok = format!("{MINIMAL}console_url: https://arbiter.example:8443/\n");
        let c = Config::parse(&ok).unwrap();
        assert_eq!(
            c.console_url.as_deref(),
            Some("https://arbiter.example:8443/")
        );
        for bad in [
            "ftp://x",
            "arbiter.example",
            "https://a/?x=1",
            "https://a/#f",
        ] {
            let text = format!("{MINIMAL}console_url: \"{bad}\"\n");
            let err = Config::parse(&text).unwrap_err().to_string();
            assert!(err.contains("console_url: must"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_endpoint_is_required_standalone_and_refused_inside_the_server() {
        let bare = "upstreams: [{name: files, stdio: {command: srv}}]\n";
        let err = Config::parse(bare).unwrap_err().to_string();
        assert!(err.contains("arbiter.endpoint: required"), "{err}");
        let c = Config::parse_for(bare, Placement::InServer).unwrap();
        assert!(c.arbiter.endpoint.is_none());
        assert_eq!(c.arbiter.timeout, Duration::from_secs(5));
        let err = Config::parse_for(MINIMAL, Placement::InServer)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("arbiter.endpoint: not used inside `arbiter serve`"),
            "{err}"
        );
    }

    #[test]
    fn client_tls_pieces_name_what_they_need() {
        let text = MINIMAL.replace(
            "endpoint: 'http://127.0.0.1:1'",
            "endpoint: 'https://a:1', tls_cert: c.pem, tls_domain: a",
        );
        let err = Config::parse(&text).unwrap_err().to_string();
        for want in [
            "arbiter.tls_key: needed with arbiter.tls_cert",
            "arbiter.tls_ca: needed with arbiter.tls_cert",
            "arbiter.tls_ca: needed with arbiter.tls_domain",
        ] {
            assert!(err.contains(want), "{want} missing from {err}");
        }
    }

    #[test]
    fn no_upstream_is_refused() {
        let err = Config::parse("arbiter: {endpoint: x}\nupstreams: []\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("upstreams: at least one"), "{err}");
    }
}
