//! Runs the real `arbiter` binary for a test: one process, one free port and one
//! temporary directory per [`TestServer`], so tests run in parallel without sharing
//! anything.
//!
//! Layout of the temporary directory:
//!
//! ```text
//! data/               --data-dir (database, keys/hmac.json)
//! policy/policy.yaml  --policy (alone in its directory: the server watches the directory)
//! clock               ARBITER_DEV__CLOCK_FILE, when the test controls time
//! server.log          the server's stderr (and stdout after the first line), every run appended
//! ```
//!
//! Nothing here sleeps for a fixed time: waits poll a condition with a deadline.
//!
//! Set `ARBITER_E2E_KEEP=1` to keep each server's directory (its path is printed) for
//! a look at the log and the database after the test.
//!
//! Backends: by default every server uses the embedded SQLite file. With
//! `ARBITER_E2E_DATABASE=postgres` and `ARBITER_E2E_DATABASE_URL=postgres://…/postgres`
//! (a superuser on a throwaway cluster, see scripts/pg-cluster.sh) every server gets a
//! fresh database of its own, created with `psql` and dropped with the server. A test
//! that cannot run on a backend calls [`skip_on_postgres`], which says so on stderr
//! and in `$ARBITER_E2E_SKIP_LOG`: never a silent pass.

#![allow(dead_code)] // Each test module uses a different part of the harness.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use arbiter_client::{proto, Client};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// How long a server may take to print its address and report SERVING.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM.
const STOP_DEADLINE: Duration = Duration::from_secs(20);
/// Step between polls of any condition.
pub const POLL_STEP: Duration = Duration::from_millis(50);

/// The `arbiter` binary under test: `$ARBITER_BIN`, or `arbiter` next to the
/// `deps/` directory this test binary lives in (target/debug/deps/e2e-… →
/// target/debug/arbiter).
pub fn arbiter_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("ARBITER_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "ARBITER_BIN={} does not exist; build it first: cargo build -p arbiter-server",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("the test binary knows its own path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in <target>/<profile>/deps/");
    let path = profile_dir.join(format!("arbiter{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "the arbiter binary is missing at {}; build it first: cargo build -p arbiter-server \
         (or set ARBITER_BIN)",
        path.display()
    );
    path
}

/// Runs `arbiter ARGS…` to completion (CLI commands such as `audit verify`).
pub async fn arbiter(args: &[&str]) -> CliOutput {
    let output = tokio::process::Command::new(arbiter_bin())
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("arbiter runs");
    CliOutput::from(output)
}

/// Runs `arbiter ARGS…` to completion with extra environment variables.
pub async fn arbiter_with_env(args: &[&str], env: &[(&str, &str)]) -> CliOutput {
    let output = tokio::process::Command::new(arbiter_bin())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("arbiter runs");
    CliOutput::from(output)
}

/// What a CLI command did, with its output as text.
#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Stdout and stderr together, for "the output mentions …" checks.
    pub fn text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl From<Output> for CliOutput {
    fn from(o: Output) -> Self {
        Self {
            status: o.status,
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status.code(),
            self.stdout,
            self.stderr
        )
    }
}

/// Runs `python3 ARGS…` (the stdlib verifier, raw SQLite edits).
pub async fn python(args: &[&str]) -> CliOutput {
    let output = tokio::process::Command::new("python3")
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("python3 is installed");
    CliOutput::from(output)
}

/// The repository root (the parent of this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository root")
        .to_path_buf()
}

/// Whether the suite runs against PostgreSQL (`ARBITER_E2E_DATABASE=postgres`).
pub fn on_postgres() -> bool {
    match std::env::var("ARBITER_E2E_DATABASE").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Ok("") | Err(_) => false,
        Ok(other) => panic!("ARBITER_E2E_DATABASE={other:?}: expected sqlite or postgres"),
    }
}

/// The admin URL of the test cluster (a superuser, database `postgres`).
pub fn postgres_admin_url() -> String {
    std::env::var("ARBITER_E2E_DATABASE_URL")
        .expect("ARBITER_E2E_DATABASE=postgres needs ARBITER_E2E_DATABASE_URL (scripts/pg-cluster.sh start)")
}

/// Runs one SQL statement on the test cluster as its superuser, in `database`.
pub fn psql(database: &str, sql: &str) -> String {
    let url = with_database(&postgres_admin_url(), database);
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &url,
            "-c",
            sql,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql {sql:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Like [`psql`], returning the error text instead of failing.
pub fn psql_try(database: &str, sql: &str) -> Result<String, String> {
    let url = with_database(&postgres_admin_url(), database);
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &url,
            "-c",
            sql,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("psql runs");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// `url` with its database name replaced.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, _) = url
        .rsplit_once('/')
        .expect("a postgres URL ends in /DATABASE");
    format!("{base}/{database}")
}

/// A fresh, empty database on the test cluster; returns its name.
pub fn create_database() -> String {
    let name = format!("arbiter_e2e_{}", uuid_like());
    psql("postgres", &format!("CREATE DATABASE {name}"));
    name
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}_{n}_{nanos}", std::process::id())
}

/// On SQLite, reports that this PostgreSQL-only test does not apply there (stderr and
/// `$ARBITER_E2E_SKIP_LOG`), and returns true so the caller returns early.
pub fn skip_unless_postgres(test: &str) -> bool {
    if on_postgres() {
        return false;
    }
    let line =
        format!("SKIPPED on sqlite: {test}: needs PostgreSQL (ARBITER_E2E_DATABASE=postgres)");
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("ARBITER_E2E_SKIP_LOG") {
        if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{line}");
        }
    }
    true
}

/// On PostgreSQL, reports that this test does not apply there and why (stderr and
/// `$ARBITER_E2E_SKIP_LOG`), and returns true so the caller returns early.
pub fn skip_on_postgres(test: &str, why: &str) -> bool {
    if !on_postgres() {
        return false;
    }
    let line = format!("SKIPPED on postgres: {test}: {why}");
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("ARBITER_E2E_SKIP_LOG") {
        if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{line}");
        }
    }
    true
}

/// A PostgreSQL cluster of a test's own (scripts/pg-cluster.sh), for tests that stop
/// the database. Removed on drop.
pub struct PgCluster {
    dir: PathBuf,
    /// `postgres://postgres@127.0.0.1:PORT/postgres`
    pub url: String,
}

impl PgCluster {
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("arbiter-pgc-{}", uuid_like()));
        let url = Self::script("start", &dir);
        Self { dir, url }
    }

    fn script(cmd: &str, dir: &Path) -> String {
        let out = Command::new(repo_root().join("scripts").join("pg-cluster.sh"))
            .arg(cmd)
            .arg(dir)
            .stdin(Stdio::null())
            .output()
            .expect("scripts/pg-cluster.sh runs");
        assert!(
            out.status.success(),
            "pg-cluster.sh {cmd} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Stops the cluster (fast shutdown: sessions are cut), keeping its data.
    pub fn pause(&self) {
        Self::script("pause", &self.dir);
    }

    /// Stops the cluster with `pg_ctl -m immediate`: every backend is killed mid-work,
    /// nothing is checkpointed, and the next start runs crash recovery.
    pub fn crash(&self) {
        Self::script("crash", &self.dir);
    }

    /// Starts it again on the same port.
    pub fn resume(&self) {
        Self::script("resume", &self.dir);
    }

    /// A fresh database on this cluster; returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        let out = Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &self.url, "-c"])
            .arg(format!("CREATE DATABASE {name}"))
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        with_database(&self.url, name)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts").join("pg-cluster.sh"))
            .arg("stop")
            .arg(&self.dir)
            .output();
    }
}

/// How to start a server.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    policy: Option<String>,
    clock: Option<String>,
    fast_reload: bool,
    mirror: bool,
    tls: Option<ServerTls>,
    database_url: Option<String>,
    data_dir: Option<PathBuf>,
    env: Vec<(String, String)>,
}

/// `server.tls` for a test server, and what the harness's readiness probe presents
/// to get through the handshake.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
    /// "none", "optional" or "required".
    pub client_auth: &'static str,
    /// CA (PEM) the probe trusts.
    pub probe_ca_pem: String,
    /// Client certificate and key (PEM) the probe presents, for mTLS.
    pub probe_identity: Option<(String, String)>,
    /// Name the probe expects on the server certificate, when not the address.
    pub probe_domain: Option<String>,
}

impl ServerTls {
    /// The probe's channel settings.
    pub fn client_config(&self) -> tonic::transport::ClientTlsConfig {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let mut config =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.probe_ca_pem));
        if let Some((cert, key)) = &self.probe_identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(domain) = &self.probe_domain {
            config = config.domain_name(domain.clone());
        }
        config
    }
}

impl ServerOptions {
    /// Serve TLS (and mTLS, with a client CA) with these files.
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets an environment variable for the server process (on every start).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Mirror the audit log to `mirror.jsonl` in the temporary directory.
    pub fn mirror(mut self) -> Self {
        self.mirror = true;
        self
    }

    pub fn new() -> Self {
        Self::default()
    }

    /// Use this PostgreSQL database (`postgres://…/DB`) instead of a fresh one on the
    /// suite's cluster: replicas on one database, or a cluster the test stops.
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.database_url = Some(url.into());
        self
    }

    /// Use this data directory (keys) instead of a fresh one: replicas share their keys.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Serve this policy bundle (YAML), written to `policy/policy.yaml`.
    pub fn policy(mut self, yaml: &str) -> Self {
        self.policy = Some(yaml.to_owned());
        self
    }

    /// Read the time from a file that starts at `time` (RFC 3339 or Unix ms);
    /// move it with [`TestServer::set_time`].
    pub fn clock(mut self, time: &str) -> Self {
        self.clock = Some(time.to_owned());
        self
    }

    /// Re-check the policy file every 200 ms (hot-reload tests).
    pub fn fast_reload(mut self) -> Self {
        self.fast_reload = true;
        self
    }
}

/// Starts `arbiter serve` on a free port with a fresh temporary directory and waits
/// until it reports SERVING.
pub async fn spawn_server(opts: ServerOptions) -> TestServer {
    let dir = tempfile::Builder::new()
        .prefix("arbiter-e2e-")
        .tempdir()
        .expect("temporary directory");
    let root = dir.path().to_path_buf();
    let policy_path = opts.policy.as_ref().map(|yaml| {
        let path = root.join("policy").join("policy.yaml");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, yaml).unwrap();
        path
    });
    let clock_path = opts.clock.as_ref().map(|time| {
        let path = root.join("clock");
        write_atomically(&path, time.as_bytes());
        path
    });
    let database = (opts.database_url.is_none() && on_postgres()).then(create_database);
    let mut server = TestServer {
        addr: "0.0.0.0:0".parse().unwrap(),
        database,
        database_url_override: opts.database_url,
        data_dir: opts.data_dir.unwrap_or_else(|| root.join("data")),
        policy_path,
        clock_path,
        log_path: root.join("server.log"),
        fast_reload: opts.fast_reload,
        mirror: opts.mirror.then(|| root.join("mirror.jsonl")),
        tls: opts.tls,
        env: opts.env,
        child: None,
        dir: Some(dir),
    };
    server.start().await;
    server
}

/// A running `arbiter serve` process and its temporary directory.
pub struct TestServer {
    /// Address the server listens on (changes on every restart: port 0).
    pub addr: SocketAddr,
    /// The server's own PostgreSQL database, when the suite runs on PostgreSQL.
    pub database: Option<String>,
    /// A database URL given by the test (`ServerOptions::database_url`).
    database_url_override: Option<String>,
    /// `--data-dir`: the database and the key ring.
    pub data_dir: PathBuf,
    policy_path: Option<PathBuf>,
    clock_path: Option<PathBuf>,
    log_path: PathBuf,
    fast_reload: bool,
    /// The audit mirror file, when mirroring.
    pub mirror: Option<PathBuf>,
    /// The TLS setup, when serving TLS.
    pub tls: Option<ServerTls>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// Removed on drop, after the process is gone (unless `ARBITER_E2E_KEEP` is set).
    dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// `http://ADDR` (`https://ADDR` when serving TLS), as the CLI's `--addr` wants it.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// A client for this server (it connects on first use).
    /// On a TLS server it trusts the probe's CA and presents the probe's certificate.
    pub fn client(&self) -> Client {
        let mut builder = Client::builder(self.url()).timeout(Duration::from_secs(15));
        if let Some(tls) = &self.tls {
            builder = builder.tls_ca_pem(tls.probe_ca_pem.clone());
            if let Some((cert, key)) = &tls.probe_identity {
                builder = builder.tls_identity_pem(cert.clone(), key.clone());
            }
            if let Some(domain) = &tls.probe_domain {
                builder = builder.tls_domain_name(domain.clone());
            }
        }
        builder.connect_lazy().expect("valid endpoint")
    }

    /// `--database` for this server (PostgreSQL only).
    pub fn database_url(&self) -> Option<String> {
        if let Some(url) = &self.database_url_override {
            return Some(url.clone());
        }
        self.database
            .as_ref()
            .map(|db| with_database(&postgres_admin_url(), db))
    }

    /// Runs SQL as the cluster superuser in this server's PostgreSQL database.
    pub fn psql(&self, sql: &str) -> String {
        psql(self.database.as_ref().expect("a PostgreSQL server"), sql)
    }

    /// A plain-text dump of this server's PostgreSQL database (`pg_dump`).
    pub fn pg_dump(&self) -> Vec<u8> {
        let url = self.database_url().expect("a PostgreSQL server");
        let out = Command::new("pg_dump")
            .args(["--no-owner", "-d", &url])
            .stdin(Stdio::null())
            .output()
            .expect("pg_dump runs");
        assert!(
            out.status.success(),
            "pg_dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Replaces this server's PostgreSQL database with a dump of it taken earlier
    /// ([`TestServer::pg_dump`]); the server must be stopped.
    pub fn pg_restore(&self, dump: &[u8]) {
        let db = self.database.as_ref().expect("a PostgreSQL server");
        self.drop_database();
        psql("postgres", &format!("CREATE DATABASE {db}"));
        let url = self.database_url().expect("a PostgreSQL server");
        let mut child = Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &url])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("psql runs");
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(dump)
            .expect("the dump reaches psql");
        let out = child.wait_with_output().expect("psql ends");
        assert!(
            out.status.success(),
            "restoring the dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Drops this server's PostgreSQL database (the server must be stopped).
    pub fn drop_database(&self) {
        let db = self.database.as_ref().expect("a PostgreSQL server");
        psql("postgres", &format!("DROP DATABASE {db} WITH (FORCE)"));
    }

    /// The embedded database file.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("arbiter.db")
    }

    /// The audit HMAC key ring.
    pub fn keys_path(&self) -> PathBuf {
        self.data_dir.join("keys").join("hmac.json")
    }

    /// The policy file the server watches.
    pub fn policy_path(&self) -> &Path {
        self.policy_path
            .as_deref()
            .expect("the server was started with a policy")
    }

    /// A scratch path inside the server's temporary directory.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.as_ref().expect("live directory").path().join(name)
    }

    /// The process id of the running server.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// Everything the server wrote to stderr so far (all runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Moves the server's clock (RFC 3339 text or Unix milliseconds). The server
    /// reads the file on every call, so the next request sees the new time.
    pub fn set_time(&self, time: &str) {
        let path = self
            .clock_path
            .as_ref()
            .expect("start the server with ServerOptions::clock to control time");
        write_atomically(path, time.as_bytes());
    }

    /// Replaces the policy file (atomically, by rename, as editors do).
    pub fn write_policy(&self, yaml: &str) {
        write_atomically(self.policy_path(), yaml.as_bytes());
    }

    /// Kills the process with SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM without waiting (the server keeps draining in the background);
    /// [`TestServer::wait_exit`] collects the exit status.
    pub fn sigterm(&self) {
        let child = self.child.as_ref().expect("server is running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) on the pid of a child we have not yet reaped.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "sending SIGTERM to the server failed");
    }

    /// Waits for the process to exit (after [`TestServer::sigterm`]) and returns its
    /// status; kills it and fails the test after the stop deadline.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server is running");
        wait_for("the server to exit after SIGTERM", STOP_DEADLINE, || {
            child.try_wait().expect("try_wait")
        })
        .await
        .unwrap_or_else(|e| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{e}\n{}", self.log_tail());
        })
    }

    /// The address of the Prometheus endpoint of the current run (the harness serves
    /// it on a free port; the server logs where).
    pub fn metrics_addr(&self) -> SocketAddr {
        const MARK: &str = "serving Prometheus metrics on http://";
        let log = self.log();
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains(MARK))
            .unwrap_or_else(|| panic!("the server logged no metrics address\n{}", self.log_tail()));
        let rest = &line[line.find(MARK).unwrap() + MARK.len()..];
        rest.split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unreadable metrics address in {line:?}"))
    }

    /// The address of the operator console of the current run (a free port; the
    /// server logs where).
    pub fn console_addr(&self) -> SocketAddr {
        // http:// or, under console.tls, https://
        const MARK: &str = "serving the operator console on http";
        let log = self.log();
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains(MARK))
            .unwrap_or_else(|| panic!("the server logged no console address\n{}", self.log_tail()));
        let rest = &line[line.find(MARK).unwrap() + MARK.len()..];
        let rest = rest.trim_start_matches('s').trim_start_matches("://");
        rest.split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unreadable console address in {line:?}"))
    }

    /// `GET /metrics` over plain HTTP/1.0: (content type, body).
    pub async fn scrape_metrics(&self) -> (String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(self.metrics_addr())
            .await
            .expect("connect to the metrics endpoint");
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: arbiter\r\n\r\n")
            .await
            .unwrap();
        let mut raw = String::new();
        conn.read_to_string(&mut raw).await.unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        let content_type = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-type:")
                    .map(|v| v.trim().to_owned())
            })
            .unwrap_or_default();
        (content_type, body.to_owned())
    }

    /// Sends SIGTERM and waits for a clean exit (status 0).
    pub async fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        self.sigterm();
        let status = self.wait_exit().await;
        assert!(
            status.success(),
            "the server exited with {status} after SIGTERM\n{}",
            self.log_tail()
        );
    }

    /// Stops the server if it runs, then starts it again on the same data directory,
    /// policy and clock (on a new port).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start().await;
    }

    /// Starts the process (again) and waits for SERVING.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "the server is already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("server log");
        let mut cmd = self.serve_command();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log.try_clone().unwrap()));
        self.run_until_serving(cmd, log).await;
    }

    /// Starts the process (again) expecting it to refuse: waits for it to exit without
    /// ever printing its address, and returns what it said (also appended to the log).
    pub async fn start_refused(&mut self) -> CliOutput {
        assert!(self.child.is_none(), "the server is already running");
        let mut cmd = tokio::process::Command::from(self.serve_command());
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        let out = tokio::time::timeout(START_DEADLINE, cmd.output())
            .await
            .expect("a refused start exits in time")
            .expect("arbiter runs");
        let out = CliOutput::from(out);
        if let Ok(mut log) = OpenOptions::new().append(true).open(&self.log_path) {
            let _ = write!(log, "{}{}", out.stdout, out.stderr);
        }
        assert!(
            !out.status.success() && !out.stdout.contains("arbiter listening on"),
            "the server was expected to refuse to start:\n{out}"
        );
        out
    }

    /// `arbiter serve` with this server's data directory, database, policy and settings.
    fn serve_command(&self) -> Command {
        let mut cmd = Command::new(arbiter_bin());
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env_remove("ARBITER_CONFIG")
            .env_remove("ARBITER_POLICY")
            // A developer's collector settings must not leak into test servers; tests
            // that export traces set their own.
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env("RUST_LOG", "info,sqlx=warn")
            .env("NO_COLOR", "1")
            // A free port per server: tests run in parallel.
            .env("ARBITER_METRICS__LISTEN", "127.0.0.1:0")
            .env("ARBITER_CONSOLE__LISTEN", "127.0.0.1:0")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if let Some(policy) = &self.policy_path {
            cmd.arg("--policy").arg(policy);
        }
        if let Some(url) = self.database_url() {
            cmd.arg("--database").arg(url);
        }
        if let Some(clock) = &self.clock_path {
            cmd.env("ARBITER_DEV__CLOCK_FILE", clock);
        }
        if self.fast_reload {
            cmd.env("ARBITER_POLICY__POLL_INTERVAL_MS", "200");
        }
        if let Some(m) = &self.mirror {
            cmd.env("ARBITER_AUDIT__MIRROR", m);
        }
        if let Some(tls) = &self.tls {
            cmd.env("ARBITER_SERVER__TLS__CERT_FILE", &tls.cert_file)
                .env("ARBITER_SERVER__TLS__KEY_FILE", &tls.key_file)
                .env("ARBITER_SERVER__TLS__CLIENT_AUTH", tls.client_auth);
            if let Some(ca) = &tls.client_ca_file {
                cmd.env("ARBITER_SERVER__TLS__CLIENT_CA_FILE", ca);
            }
        }
        cmd
    }

    async fn run_until_serving(&mut self, mut cmd: Command, log: File) {
        let mut child = cmd.spawn().expect("spawn arbiter serve");
        let stdout = child.stdout.take().expect("piped stdout");
        self.child = Some(child);

        // The first stdout line is the bound address; the rest of stdout goes to the log.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || read_address_then_drain(stdout, log, tx));
        let line = match tokio::time::timeout(START_DEADLINE, rx).await {
            Ok(Ok(Some(line))) => line,
            Ok(_) => self.fail_start("the server exited before printing its address"),
            Err(_) => self.fail_start("the server printed no address in time"),
        };
        let addr = line
            .strip_prefix("arbiter listening on ")
            .and_then(|a| a.trim().parse::<SocketAddr>().ok())
            .unwrap_or_else(|| {
                self.fail_start(&format!(
                    "the first stdout line is not `arbiter listening on ADDR`: {line:?}"
                ))
            });
        self.addr = addr;

        let mut endpoint = tonic::transport::Endpoint::from_shared(self.url())
            .unwrap()
            .connect_timeout(Duration::from_secs(1));
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.client_config())
                .expect("valid probe TLS settings");
        }
        let mut health = HealthClient::new(endpoint.connect_lazy());
        let started = Instant::now();
        loop {
            let status = health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|r| r.into_inner().status);
            if matches!(status, Ok(s) if s == ServingStatus::Serving as i32) {
                return;
            }
            if let Some(exit) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.fail_start(&format!("the server exited with {exit} before SERVING"));
            }
            if started.elapsed() > START_DEADLINE {
                self.fail_start(&format!(
                    "health did not report SERVING in time (last: {status:?})"
                ));
            }
            tokio::time::sleep(POLL_STEP).await;
        }
    }

    fn fail_start(&mut self, why: &str) -> ! {
        self.kill9();
        panic!("starting arbiter failed: {why}\n{}", self.log_tail());
    }

    /// The end of the server log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(60);
        format!(
            "--- server log ({}) ---\n{}",
            self.log_path.display(),
            lines[from..].join("\n")
        )
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
        self.kill9();
        if std::env::var_os("ARBITER_E2E_KEEP").is_some() {
            if let Some(dir) = self.dir.take() {
                eprintln!("kept {}", dir.keep().display());
            }
            if let Some(db) = &self.database {
                eprintln!("kept database {db}");
            }
        } else if let Some(db) = self.database.take() {
            let _ = psql_try(
                "postgres",
                &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
            );
        }
    }
}

fn read_address_then_drain(
    stdout: impl Read,
    mut log: File,
    tx: tokio::sync::oneshot::Sender<Option<String>>,
) {
    let mut reader = BufReader::new(stdout);
    let mut first = String::new();
    match reader.read_line(&mut first) {
        Ok(n) if n > 0 => {
            let _ = tx.send(Some(first.trim_end().to_owned()));
        }
        _ => {
            let _ = tx.send(None);
            return;
        }
    }
    let _ = std::io::copy(&mut reader, &mut log);
}

/// Writes a file by renaming a sibling into place, so readers never see it half-written.
pub fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).expect("create temporary file");
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
    std::fs::rename(&tmp, path).expect("rename into place");
}

/// Polls `check` every [`POLL_STEP`] until it returns `Some`, or fails after `deadline`.
pub async fn wait_for<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let started = Instant::now();
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if started.elapsed() > deadline {
            return Err(format!("timed out after {deadline:?} waiting for {what}"));
        }
        tokio::time::sleep(POLL_STEP).await;
    }
}

/// Like [`wait_for`] with an async check.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            started.elapsed() <= deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(POLL_STEP).await;
    }
}

// ---------------------------------------------------------------------------------
// Small helpers over the client, shared by the feature modules.
// ---------------------------------------------------------------------------------

/// Unix milliseconds of an RFC 3339 time, for clock arithmetic in tests.
pub fn ms(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .expect("valid RFC 3339 time")
        .timestamp_millis()
}

/// A protobuf timestamp of an RFC 3339 time.
pub fn timestamp(rfc3339: &str) -> prost_types::Timestamp {
    let t = ms(rfc3339);
    prost_types::Timestamp {
        seconds: t.div_euclid(1000),
        nanos: (t.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// The highest sequence number in the audit log.
pub async fn audit_head(client: &Client) -> u64 {
    client
        .verify_audit(proto::VerifyAuditRequest::default())
        .await
        .expect("VerifyAudit")
        .head_seq
}

/// Every audit entry matching `filter`, following pages.
pub async fn query_all(client: &Client, filter: proto::AuditFilter) -> Vec<proto::AuditEntry> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .query_audit(proto::QueryAuditRequest {
                filter: Some(filter.clone()),
                page_size: 1000,
                page_token,
            })
            .await
            .expect("QueryAudit");
        out.extend(page.entries);
        if page.next_page_token.is_empty() {
            return out;
        }
        page_token = page.next_page_token;
    }
}

/// The budget snapshot for an agent (and session).
pub async fn budgets(client: &Client, agent: &str, session: &str) -> proto::GetBudgetsResponse {
    client
        .get_budgets(proto::GetBudgetsRequest {
            agent_id: agent.to_owned(),
            session_id: session.to_owned(),
        })
        .await
        .expect("GetBudgets")
}

/// One dimension (`"micro_usd"`, `"tokens"`, `"calls"`) of one named budget.
pub async fn amount(
    client: &Client,
    agent: &str,
    session: &str,
    budget: &str,
    unit: &str,
) -> proto::BudgetAmount {
    let snapshot = budgets(client, agent, session).await;
    let b = snapshot
        .budgets
        .iter()
        .find(|b| b.name == budget)
        .unwrap_or_else(|| panic!("budget {budget:?} does not apply to {agent}: {snapshot:?}"));
    b.amounts
        .iter()
        .find(|a| a.unit == unit)
        .unwrap_or_else(|| panic!("budget {budget:?} has no {unit} cap: {b:?}"))
        .clone()
}

/// Assigns a trust level (agent-wide when `scope` is empty).
pub async fn set_trust(client: &Client, agent: &str, level: proto::TrustLevel, scope: &str) {
    client
        .set_trust(proto::SetTrustRequest {
            agent_id: agent.to_owned(),
            level: level as i32,
            scope: scope.to_owned(),
            reason: "e2e".to_owned(),
        })
        .await
        .expect("SetTrust");
}

/// Grants consent; an empty purpose covers every purpose.
pub async fn grant_consent(
    client: &Client,
    agent: &str,
    data_type: &str,
    purpose: &str,
    expires_at: Option<prost_types::Timestamp>,
) {
    client
        .grant_consent(proto::GrantConsentRequest {
            agent_id: agent.to_owned(),
            data_type: data_type.to_owned(),
            purpose: purpose.to_owned(),
            expires_at,
        })
        .await
        .expect("GrantConsent");
}

/// `(stage, code)` of every reason, for compact assertions.
pub fn stages(decision: &arbiter_client::Decision) -> Vec<(String, String)> {
    decision
        .reasons
        .iter()
        .map(|r| (r.stage.clone(), r.code.clone()))
        .collect()
}

/// The deciding reason's code (`"ok"` when every stage passed).
pub fn code(decision: &arbiter_client::Decision) -> String {
    decision
        .reason()
        .map(|r| r.code.clone())
        .unwrap_or_default()
}

/// A client for this server that presents an API key.
pub fn keyed(server: &TestServer, key: &str) -> Client {
    Client::builder(server.url())
        .timeout(Duration::from_secs(15))
        .api_key(key.to_owned())
        .connect_lazy()
        .expect("valid endpoint")
}

/// Creates a principal through the admin API and returns its API key.
pub async fn create_principal(
    c: &Client,
    name: &str,
    roles: &[proto::Role],
    agents: &[&str],
) -> String {
    c.create_principal(proto::CreatePrincipalRequest {
        name: name.into(),
        roles: roles.iter().map(|r| *r as i32).collect(),
        agents: agents.iter().map(|a| a.to_string()).collect(),
        tls_identity: String::new(),
    })
    .await
    .expect("CreatePrincipal")
    .api_key
}

/// Whether the server's health check (whole server, "") answers SERVING now.
pub async fn serving(server: &TestServer) -> bool {
    let Ok(channel) = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
    else {
        return false;
    };
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
}
