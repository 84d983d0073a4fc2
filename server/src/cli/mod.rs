//! The `arbiter` command line: one binary for the server and the operator tools.
//!
//! Exit codes: 0 success; 1 the command ran and found a problem (invalid policy,
//! failed verification, a refused request); 2 usage error; 3 the server could not be
//! reached.

mod bench;
mod bench_audit;
mod demo;
mod mcp;
mod remote;
mod report;
pub mod term;

use crate::config::Settings;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use term::{say, tell};

#[derive(Parser, Debug)]
#[command(
    name = "arbiter",
    version,
    about = "Arbiter: a policy decision point for AI agents"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct ServerFlags {
    /// Config file (TOML). Settings: defaults < file < ARBITER_<SECTION>__<KEY> env < flags.
    #[arg(long, env = "ARBITER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory for the embedded database and keys [default: ./arbiter-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL instead of the embedded SQLite file: postgres://USER@HOST/DB
    /// (also ARBITER_DATABASE_URL). Keys stay in the data directory.
    #[arg(long, value_name = "URL", hide_env_values = true)]
    pub database: Option<String>,
}

impl ServerFlags {
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let mut s = Settings::load(self.config.as_deref()).map_err(anyhow::Error::msg)?;
        if let Some(d) = &self.data_dir {
            s.storage.data_dir = d.clone();
        }
        if let Some(url) = &self.database {
            s.storage.database_url = Some(url.clone());
            s.validate().map_err(anyhow::Error::msg)?;
        }
        Ok(s)
    }
}

#[derive(Args, Debug, Clone)]
pub struct Remote {
    /// Server address.
    #[arg(
        long,
        global = true,
        env = "ARBITER_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub addr: String,
    /// Per-call timeout in seconds.
    #[arg(long, global = true, default_value_t = 10.0)]
    pub timeout: f64,
    /// API key (needed once any principal exists, unless a client certificate bound to
    /// a principal is presented).
    #[arg(long, global = true, env = "ARBITER_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// CA certificate (PEM) that signed the server's certificate; turns on TLS
    /// (use an https:// --addr).
    #[arg(long, global = true, env = "ARBITER_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mTLS; needs --tls-key and --tls-ca.
    #[arg(long, global = true, env = "ARBITER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, global = true, env = "ARBITER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Name the server's certificate must carry, when it differs from the --addr host.
    #[arg(long, global = true, env = "ARBITER_TLS_DOMAIN")]
    pub tls_domain: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server (embedded SQLite by default, no setup needed).
    #[command(after_help = "Observability (docs/observability.md):\n  \
        ARBITER_METRICS__LISTEN            Prometheus endpoint, GET /metrics [default: 127.0.0.1:9090; \"off\" disables]\n  \
        ARBITER_CONSOLE__LISTEN            operator console, docs/console.md [default: 127.0.0.1:9464; \"off\" disables]\n  \
        ARBITER_SERVER__SHUTDOWN_GRACE_MS  drain time for in-flight RPCs on SIGTERM [default: 10000]\n  \
        OTEL_EXPORTER_OTLP_ENDPOINT        export traces over OTLP/gRPC (with the other standard OTEL_* variables)\n  \
        ARBITER_LOG_FORMAT=json            JSON log lines with trace_id and span_id; RUST_LOG filters")]
    Serve {
        #[command(flatten)]
        server: ServerFlags,
        /// Address to listen on [default: 127.0.0.1:50051; port 0 picks a free port].
        #[arg(long)]
        listen: Option<String>,
        /// Policy bundle (YAML); hot-reloaded when it changes. On PostgreSQL the bundle is
        /// published to every replica; without this flag a replica serves the newest
        /// bundle another replica published.
        #[arg(long, env = "ARBITER_POLICY")]
        policy: Option<PathBuf>,
        /// SQLite synchronous mode: normal (survives a process crash) or full (also power loss).
        #[arg(long)]
        synchronous: Option<String>,
        /// Prometheus endpoint address, or "off" (setting metrics.listen).
        #[arg(long)]
        metrics_listen: Option<String>,
        /// Operator console address, or "off" (setting console.listen).
        #[arg(long)]
        console_listen: Option<String>,
    },
    /// Run the MCP gateway: every MCP tool call asks Arbiter first (docs/mcp.md).
    McpGateway {
        /// Gateway configuration (YAML; unknown keys are refused).
        #[arg(long)]
        config: PathBuf,
        /// Serve one MCP client on stdin/stdout (desktop clients) instead of HTTP.
        #[arg(long, requires = "agent")]
        stdio: bool,
        /// With --stdio: the agent the client acts as; ARBITER_API_KEY must be bound to it.
        #[arg(long)]
        agent: Option<String>,
        /// With --stdio: the Arbiter session (run) id [default: a new one per process].
        #[arg(long)]
        session: Option<String>,
        /// With --stdio: the agent's API key.
        #[arg(long, env = "ARBITER_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[command(flatten)]
        server: ServerFlags,
    },
    /// Walk through allow, deny per stage, a budget running out and a verified audit log.
    Demo,
    /// Policy bundle tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Trust levels.
    Trust {
        #[command(subcommand)]
        command: remote::TrustCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Consent grants.
    Consent {
        #[command(subcommand)]
        command: remote::ConsentCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Budget snapshot: spent, reserved and remaining per applicable budget.
    Budget {
        /// Agent whose budgets to show (omit for global and category budgets).
        agent: Option<String>,
        /// Session, for per-session budgets.
        #[arg(long)]
        session: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Agents the server has seen.
    Agents {
        #[command(flatten)]
        remote: Remote,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: remote::AuditCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// MCP tool pins: `arbiter mcp tools list|approve|reject`.
    Mcp {
        #[command(subcommand)]
        command: mcp::McpCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Human approvals: list, show, approve, deny, watch.
    Approvals {
        #[command(subcommand)]
        command: remote::ApprovalsCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Engage the kill switch: for every agent (default), one agent, or one session.
    Halt {
        #[command(flatten)]
        target: remote::TargetArgs,
        /// halt_noncritical, halt_all or emergency.
        #[arg(long, default_value = "halt_all")]
        mode: String,
        /// Why; shown to every denied agent and recorded in the audit log.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Lift a halt.
    Resume {
        #[command(flatten)]
        target: remote::TargetArgs,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// List engaged halts.
    Halts {
        #[command(flatten)]
        remote: Remote,
    },
    /// Callers and their API keys (admin role).
    Principals {
        #[command(subcommand)]
        command: remote::PrincipalsCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Key management.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Load generator for docs/benchmarks.md.
    Bench(bench::BenchArgs),
    /// Audit verification and proof benchmark over a synthetic log (docs/benchmarks.md).
    BenchAudit(bench_audit::BenchAuditArgs),
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Validate bundle files without starting a server; prints every problem.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show the policy the server is serving and its load history.
    Show {
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Print a new HMAC key ring (JSON) to stdout.
    Generate,
    /// Replace the active HMAC chain key or the checkpoint/token signing key. The old key
    /// is retired: it still verifies what it signed and never signs again. Restart the
    /// server to apply; it records the change as a `keys.changed` audit entry.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["hmac", "signing"])))]
    Rotate {
        /// Rotate the HMAC chain key (<data dir>/keys/hmac.json or audit.keys_file).
        #[arg(long)]
        hmac: bool,
        /// Rotate the Ed25519 signing key (<data dir>/keys/signing.json; signing.pub
        /// then lists the new key first and the retired ones after it).
        #[arg(long)]
        signing: bool,
        #[command(flatten)]
        server: ServerFlags,
    },
    /// Revoke a retired HMAC key: entries it chained after --after-seq (all of them
    /// without it) fail verification from now on. Restart the server to record it.
    Revoke {
        /// Id of the HMAC key (h-…), as listed in keys/hmac.json.
        #[arg(long, value_name = "KEY_ID")]
        hmac: String,
        /// Last entry the key is still trusted for (e.g. the seq before the suspected leak).
        #[arg(long)]
        after_seq: Option<u64>,
        #[command(flatten)]
        server: ServerFlags,
    },
}

/// An error with the exit code it should produce.
#[derive(Debug)]
pub struct Exit(pub i32, pub String);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for Exit {}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            server,
            listen,
            policy,
            synchronous,
            metrics_listen,
            console_listen,
        } => {
            let mut s = server.settings()?;
            if let Some(m) = metrics_listen {
                s.metrics.listen = m;
                s.validate().map_err(anyhow::Error::msg)?;
            }
            if let Some(c) = console_listen {
                s.console.listen = c;
                s.validate().map_err(anyhow::Error::msg)?;
            }
            if let Some(l) = listen {
                s.server.listen = l;
            }
            if let Some(p) = policy {
                s.policy.path = Some(p);
            }
            if let Some(sync) = synchronous {
                s.storage.synchronous = sync;
            }
            serve(s).await
        }
        Command::McpGateway {
            config,
            stdio,
            agent,
            session,
            api_key,
        } => mcp_gateway(&config, stdio, agent, session, api_key).await,
        Command::Migrate { server } => {
            let s = server.settings()?;
            crate::startup::open_store(&s).await?;
            if s.storage.database_url.is_some() {
                say!("migrations applied to the PostgreSQL database");
            } else {
                say!("migrations applied to {}", s.database_file().display());
            }
            Ok(())
        }
        Command::Demo => demo::run().await,
        Command::Policy { command } => match command {
            PolicyCommand::Check { files } => policy_check(&files),
            PolicyCommand::Show { remote } => remote::policy_show(&remote).await,
        },
        Command::Trust { command, remote } => remote::trust(&remote, command).await,
        Command::Consent { command, remote } => remote::consent(&remote, command).await,
        Command::Budget {
            agent,
            session,
            remote,
        } => remote::budget(&remote, agent, session).await,
        Command::Agents { remote } => remote::agents(&remote).await,
        Command::Audit { command, remote } => remote::audit(&remote, command).await,
        Command::Approvals { command, remote } => remote::approvals(&remote, command).await,
        Command::Mcp { command, remote } => mcp::run(&remote, command).await,
        Command::Halt {
            target,
            mode,
            reason,
            remote,
        } => remote::halt(&remote, target, &mode, reason).await,
        Command::Resume {
            target,
            reason,
            remote,
        } => remote::resume(&remote, target, reason).await,
        Command::Halts { remote } => remote::halts(&remote).await,
        Command::Principals { command, remote } => remote::principals(&remote, command).await,
        Command::Keys { command } => match command {
            KeysCommand::Generate => {
                term::raw(&crate::keys::generate());
                Ok(())
            }
            KeysCommand::Rotate {
                hmac,
                signing: _,
                server,
            } => {
                let settings = server.settings()?;
                if hmac {
                    let path = settings.keys_file();
                    let (old, new) = crate::keys::rotate_hmac(&path)?;
                    say!(
                        "HMAC key rotated in {}: {old} retired, {new} active",
                        path.display()
                    );
                } else {
                    let path = settings.storage.data_dir.join("keys").join("signing.json");
                    let (old, new) = crate::keys::rotate_signing(&path)?;
                    say!(
                        "signing key rotated in {}: {old} retired, {new} active; give verifiers the new {}",
                        path.display(),
                        path.with_file_name("signing.pub").display()
                    );
                }
                say!("restart the server to apply; it records the change in the audit log (keys.changed)");
                Ok(())
            }
            KeysCommand::Revoke {
                hmac,
                after_seq,
                server,
            } => {
                let path = server.settings()?.keys_file();
                crate::keys::revoke_hmac(&path, &hmac, after_seq)?;
                match after_seq {
                    Some(n) => say!("HMAC key {hmac} revoked: entries it chained after {n} now fail verification"),
                    None => say!("HMAC key {hmac} revoked: every entry it chained now fails verification"),
                }
                say!("restart the server to record it in the audit log (keys.changed)");
                Ok(())
            }
        },
        Command::Bench(args) => bench::run(args).await,
        Command::BenchAudit(args) => bench_audit::run(args).await,
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = crate::startup::Application::build(settings).await?;
    let addr = app.local_addr();
    // Handlers are installed before the address is announced: a SIGTERM sent as soon as
    // a supervisor sees the server up must start a graceful shutdown, not kill it.
    let stop = shutdown_signal()?;
    // The first stdout line is the bound address; test harnesses and scripts read it.
    // With mcp_gateway.config the gateway prints its own line once it serves.
    say!("arbiter listening on {addr}");
    tracing::info!(%addr, "serving arbiter.v1 (health and reflection enabled)");
    if let Some(url) = app.mcp_gateway_url() {
        tracing::info!(%url, "starting the in-process MCP gateway (mcp_gateway.config)");
    }
    app.run_until_stopped(stop).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn mcp_gateway(
    config: &std::path::Path,
    stdio: bool,
    agent: Option<String>,
    session: Option<String>,
    api_key: Option<String>,
) -> anyhow::Result<()> {
    let config = arbiter_mcp_gateway::config::Config::load(config)?;
    match (stdio, agent) {
        (true, Some(agent)) => {
            let key = api_key.ok_or_else(|| {
                anyhow::anyhow!("--stdio needs the agent's key in ARBITER_API_KEY (or --api-key)")
            })?;
            arbiter_mcp_gateway::run_stdio(config, &agent, &key, session).await
        }
        (false, None) => arbiter_mcp_gateway::run_http(config, shutdown_signal()?).await,
        // Over HTTP the agent comes from each client's key, never from a flag.
        _ => anyhow::bail!(
            "--agent is only for --stdio; over HTTP each client's key names its agent"
        ),
    }
}

/// Resolves on SIGTERM or Ctrl-C; the handlers are registered when this is called.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| anyhow::anyhow!("installing the SIGTERM handler: {e}"))?;
    #[cfg(unix)]
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| anyhow::anyhow!("installing the SIGINT handler: {e}"))?;
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested: draining in-flight requests");
    })
}

fn policy_check(files: &[PathBuf]) -> anyhow::Result<()> {
    let mut bad = 0;
    for f in files {
        match crate::policy::loader::load_file(f) {
            Ok(p) => say!(
                "{}: ok ({} agent rules, {} action rules, {} budgets), version {}",
                f.display(),
                p.agents.len(),
                p.actions.len(),
                p.budgets.len(),
                p.version
            ),
            Err(e) => {
                bad += 1;
                tell!("{e}");
            }
        }
    }
    if bad > 0 {
        return Err(Exit(
            1,
            format!("{bad} of {} policy file(s) invalid", files.len()),
        )
        .into());
    }
    Ok(())
}
