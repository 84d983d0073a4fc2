//! TLS and mTLS: the real binary serving TLS with certificates made here (rcgen; no
//! private key is checked in), principals bound to client-certificate identities, and
//! the refusals at the handshake and in the authenticator.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use arbiter_client::{proto as pb, Client, Error};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use tonic::Code;

use crate::harness::{
    arbiter, arbiter_bin, audit_head, create_principal, eventually, query_all, spawn_server,
    ServerOptions, ServerTls, TestServer,
};

const POLICY: &str = r#"
version: 1
agents:
  - id: "bot-*"
    tools: {allow: ["*"]}
"#;

/// The name on the server certificate. It is not the address the tests dial
/// (127.0.0.1), so every client must name it: hostname verification stays on.
const SERVER_NAME: &str = "arbiter.test";

/// A certificate authority that signs server and client certificates.
struct Ca {
    key: KeyPair,
    cert: rcgen::Certificate,
}

/// A PEM certificate and its PEM private key.
#[derive(Clone)]
struct Pair {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { key, cert }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    fn sign(&self, sans: Vec<SanType>, cn: Option<&str>, usage: ExtendedKeyUsagePurpose) -> Pair {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn server(&self) -> Pair {
        self.sign(
            vec![SanType::DnsName(SERVER_NAME.try_into().unwrap())],
            None,
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate whose identity is a SPIFFE ID (URI SAN).
    fn client(&self, spiffe: &str) -> Pair {
        self.sign(
            vec![SanType::URI(spiffe.try_into().unwrap())],
            Some("ignored-cn"),
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }
}

/// Files for one server: the CA, the server pair and the directory they live in.
struct Pki {
    ca: Ca,
    dir: tempfile::TempDir,
}

const ADMIN_ID: &str = "spiffe://arbiter.test/admin";
const OPS_ID: &str = "spiffe://arbiter.test/ops";
const BOT_ID: &str = "spiffe://arbiter.test/bot";

impl Pki {
    fn new() -> Self {
        Self {
            ca: Ca::new("arbiter e2e CA"),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Writes a client pair and returns (cert path, key path).
    fn write_pair(&self, name: &str, pair: &Pair) -> (PathBuf, PathBuf) {
        (
            self.write(&format!("{name}.crt"), &pair.cert),
            self.write(&format!("{name}.key"), &pair.key),
        )
    }

    /// `server.tls` with this CA as the client CA; the probe presents `probe`.
    fn server_tls(&self, client_auth: &'static str, probe: Option<&Pair>) -> ServerTls {
        let server = self.ca.server();
        ServerTls {
            cert_file: self.write("server.crt", &server.cert),
            key_file: self.write("server.key", &server.key),
            client_ca_file: (client_auth != "none").then(|| self.write("ca.crt", &self.ca.pem())),
            client_auth,
            probe_ca_pem: self.ca.pem(),
            probe_identity: probe.map(|p| (p.cert.clone(), p.key.clone())),
            probe_domain: Some(SERVER_NAME.to_owned()),
        }
    }

    /// A client that trusts this CA and presents `identity`, if any.
    fn client(&self, server: &TestServer, identity: Option<&Pair>) -> Client {
        let mut builder = Client::builder(server.url())
            .timeout(Duration::from_secs(15))
            .retries(0)
            .disable_circuit_breaker()
            .tls_ca_pem(self.ca.pem())
            .tls_domain_name(SERVER_NAME);
        if let Some(p) = identity {
            builder = builder.tls_identity_pem(p.cert.clone(), p.key.clone());
        }
        builder.connect_lazy().expect("valid TLS settings")
    }
}

fn global_halt(reason: &str) -> pb::HaltRequest {
    pb::HaltRequest {
        target: Some(pb::HaltTarget {
            scope: pb::HaltScope::Global as i32,
            agent_id: String::new(),
            session_id: String::new(),
        }),
        mode: pb::HaltMode::HaltAll as i32,
        reason: reason.into(),
    }
}

/// A refusal by the TLS layer: the call never reaches gRPC. Under TLS 1.3 the client
/// learns of a rejected certificate only after its side of the handshake, so the
/// connection dies before the request (UNAVAILABLE), as it goes out (CANCELLED) or
/// while it is written (UNKNOWN with a transport error). Never a gRPC answer.
fn refused_at_handshake(result: Result<impl std::fmt::Debug, Error>) {
    match result {
        Ok(v) => panic!("expected a handshake refusal, got {v:?}"),
        Err(e) => assert!(
            matches!(e.code(), Code::Unavailable | Code::Cancelled)
                || (e.code() == Code::Unknown && e.to_string().contains("transport error")),
            "expected a handshake refusal, got {e:?}"
        ),
    }
}

fn code(result: Result<impl std::fmt::Debug, Error>) -> Code {
    match result {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(e) => e.code(),
    }
}

async fn denials(c: &Client) -> Vec<String> {
    query_all(
        c,
        pb::AuditFilter {
            kinds: vec!["auth.denied".into()],
            ..Default::default()
        },
    )
    .await
    .into_iter()
    .map(|e| e.canonical)
    .collect()
}

/// An mTLS server (client certificates required) with an admin, an operator and an
/// agent principal, each bound to a certificate identity. The admin is created with
/// the CLI and its TLS flags, while the server is still in development mode.
async fn mtls_server() -> (TestServer, Pki, [Pair; 3]) {
    let pki = Pki::new();
    let admin = pki.ca.client(ADMIN_ID);
    let ops = pki.ca.client(OPS_ID);
    let bot = pki.ca.client(BOT_ID);
    let server = spawn_server(
        ServerOptions::new()
            .policy(POLICY)
            .tls(pki.server_tls("required", Some(&admin))),
    )
    .await;
    let ca = pki.write("ca.crt", &pki.ca.pem());
    let (cert, key) = pki.write_pair("admin", &admin);
    let tls_flags = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        for (flag, value) in [
            ("--addr", server.url()),
            ("--tls-ca", ca.display().to_string()),
            ("--tls-cert", cert.display().to_string()),
            ("--tls-key", key.display().to_string()),
            ("--tls-domain", SERVER_NAME.to_owned()),
        ] {
            v.push(flag.into());
            v.push(value);
        }
        v
    };
    let args = tls_flags(&[
        "principals",
        "create",
        "root",
        "--role",
        "admin",
        "--tls-identity",
        ADMIN_ID,
    ]);
    let out = arbiter(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("no API key"), "{out}");

    // From here on the admin certificate authenticates as `root`.
    let c = pki.client(&server, Some(&admin));
    for (name, role, agents, id) in [
        ("ops-1", pb::Role::Operator, vec![], OPS_ID),
        (
            "bot-runtime",
            pb::Role::Agent,
            vec!["bot-1".to_owned()],
            BOT_ID,
        ),
    ] {
        let resp = c
            .create_principal(pb::CreatePrincipalRequest {
                name: name.into(),
                roles: vec![role as i32],
                agents,
                tls_identity: id.into(),
            })
            .await
            .expect("CreatePrincipal");
        assert!(
            resp.api_key.is_empty(),
            "a certificate principal gets no key"
        );
        assert_eq!(resp.principal.unwrap().tls_identity, id);
    }
    let args = tls_flags(&["principals", "list"]);
    let out = arbiter(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("ops-1\t") && l.contains(&format!("tls {OPS_ID}"))),
        "principals list shows the identity: {out}"
    );
    (server, pki, [admin, ops, bot])
}

#[tokio::test]
async fn a_tls_server_answers_health_and_evaluate_over_tls() {
    let pki = Pki::new();
    let server = spawn_server(
        ServerOptions::new()
            .policy(POLICY)
            .tls(pki.server_tls("none", None)),
    )
    .await;
    // spawn_server already saw SERVING over TLS; ask once more with our own channel.
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .tls_config(server.tls.as_ref().unwrap().client_config())
        .unwrap()
        .connect()
        .await
        .expect("TLS handshake");
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health over TLS");
    assert_eq!(
        health.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let decision = pki
        .client(&server, None)
        .evaluate("bot-1")
        .tool("search")
        .send()
        .await
        .expect("Evaluate over TLS");
    assert!(decision.allowed(), "{decision:?}");

    // Hostname verification is on: without the override the certificate (for
    // arbiter.test) does not match 127.0.0.1.
    let wrong_name = Client::builder(server.url())
        .retries(0)
        .tls_ca_pem(pki.ca.pem())
        .connect_lazy()
        .unwrap();
    refused_at_handshake(wrong_name.evaluate("bot-1").tool("t").send().await);
}

#[tokio::test]
async fn a_plaintext_client_cannot_talk_to_a_tls_server() {
    let pki = Pki::new();
    let server = spawn_server(ServerOptions::new().tls(pki.server_tls("none", None))).await;
    let plain = Client::builder(format!("http://{}", server.addr))
        .timeout(Duration::from_secs(5))
        .retries(0)
        .connect_lazy()
        .unwrap();
    let tls = pki.client(&server, None);
    let head = audit_head(&tls).await;
    let got = plain.evaluate("bot-1").tool("t").send().await;
    assert!(got.is_err(), "plaintext got an answer: {got:?}");
    // Nothing reached the engine: no decision was logged.
    assert_eq!(audit_head(&tls).await, head);
}

#[tokio::test]
async fn with_client_auth_required_a_client_without_a_certificate_is_refused() {
    let (server, pki, [admin, ..]) = mtls_server().await;
    let before = denials(&pki.client(&server, Some(&admin))).await.len();
    let anonymous = pki.client(&server, None);
    let got = anonymous.evaluate("bot-1").tool("t").send().await;
    refused_at_handshake(got);
    // Refused by TLS, not by the authenticator: no auth.denied entry.
    assert_eq!(
        denials(&pki.client(&server, Some(&admin))).await.len(),
        before
    );
}

#[tokio::test]
async fn certificate_principals_hold_their_roles_and_agent_bindings() {
    let (server, pki, [_, ops, bot]) = mtls_server().await;
    let ops_c = pki.client(&server, Some(&ops));
    let bot_c = pki.client(&server, Some(&bot));

    // The agent certificate acts for its own agent only, and cannot halt.
    let d = bot_c.evaluate("bot-1").tool("search").send().await.unwrap();
    assert!(d.allowed(), "{d:?}");
    assert_eq!(
        code(bot_c.evaluate("bot-2").tool("search").send().await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(bot_c.halt(global_halt("agent tries")).await),
        Code::PermissionDenied
    );

    // The operator certificate halts, and the halt names the principal.
    let halt = ops_c
        .halt(global_halt("drill"))
        .await
        .expect("operator halts");
    assert_eq!(halt.halt.unwrap().engaged_by, "ops-1");
    let d = bot_c.evaluate("bot-1").tool("search").send().await.unwrap();
    assert!(
        d.is_denied() && d.reason().unwrap().stage == "halt",
        "{d:?}"
    );
    assert_eq!(
        code(
            bot_c
                .resume(pb::ResumeRequest {
                    target: global_halt("").target,
                    reason: "agent tries".into(),
                })
                .await
        ),
        Code::PermissionDenied
    );
}

#[tokio::test]
async fn an_unknown_certificate_from_the_trusted_ca_is_unauthenticated_and_audited() {
    let (server, pki, [admin, ops, _]) = mtls_server().await;
    let stranger_id = "spiffe://arbiter.test/stranger";
    let stranger = pki.client(&server, Some(&pki.ca.client(stranger_id)));
    assert_eq!(
        code(stranger.list_halts(pb::ListHaltsRequest {}).await),
        Code::Unauthenticated
    );
    let admin_c = pki.client(&server, Some(&admin));
    eventually("the refusal to be audited", Duration::from_secs(10), || {
        let admin_c = admin_c.clone();
        async move {
            denials(&admin_c)
                .await
                .iter()
                .any(|e| e.contains(stranger_id) && e.contains("\"principal\":\"unauthenticated\""))
                .then_some(())
        }
    })
    .await;

    // Revoking a certificate principal shuts its certificate out at once.
    admin_c
        .revoke_principal(pb::RevokePrincipalRequest {
            name: "ops-1".into(),
        })
        .await
        .unwrap();
    let ops_c = pki.client(&server, Some(&ops));
    assert_eq!(
        code(ops_c.halt(global_halt("after revoke")).await),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn a_certificate_signed_by_another_ca_is_refused_at_the_handshake() {
    let (server, pki, [admin, ..]) = mtls_server().await;
    let before = denials(&pki.client(&server, Some(&admin))).await.len();
    // Same SPIFFE ID as the operator: only the signature tells them apart.
    let rogue = Ca::new("rogue CA").client(OPS_ID);
    let c = pki.client(&server, Some(&rogue));
    refused_at_handshake(c.halt(global_halt("rogue")).await);
    assert_eq!(
        denials(&pki.client(&server, Some(&admin))).await.len(),
        before
    );
    let halts = pki
        .client(&server, Some(&admin))
        .list_halts(pb::ListHaltsRequest {})
        .await
        .unwrap();
    assert!(halts.halts.is_empty(), "{halts:?}");
}

#[tokio::test]
async fn an_api_key_and_a_certificate_of_different_principals_are_refused() {
    let pki = Pki::new();
    let ops = pki.ca.client(OPS_ID);
    let server = spawn_server(
        ServerOptions::new()
            .policy(POLICY)
            .tls(pki.server_tls("optional", None)),
    )
    .await;
    // Development mode bootstraps an admin with a key, then the certificate operator.
    let root_key = create_principal(&server.client(), "root", &[pb::Role::Admin], &[]).await;
    let root = Client::builder(server.url())
        .retries(0)
        .api_key(root_key.clone())
        .tls_ca_pem(pki.ca.pem())
        .tls_domain_name(SERVER_NAME)
        .connect_lazy()
        .unwrap();
    root.create_principal(pb::CreatePrincipalRequest {
        name: "ops-1".into(),
        roles: vec![pb::Role::Operator as i32],
        agents: vec![],
        tls_identity: OPS_ID.into(),
    })
    .await
    .unwrap();

    // Optional client auth: the key alone works, and so does the certificate alone.
    root.list_principals(pb::ListPrincipalsRequest {})
        .await
        .unwrap();
    pki.client(&server, Some(&ops))
        .list_halts(pb::ListHaltsRequest {})
        .await
        .unwrap();
    // Both together, naming different principals: refused and audited.
    let both = Client::builder(server.url())
        .retries(0)
        .api_key(root_key)
        .tls_ca_pem(pki.ca.pem())
        .tls_domain_name(SERVER_NAME)
        .tls_identity_pem(ops.cert.clone(), ops.key.clone())
        .connect_lazy()
        .unwrap();
    assert_eq!(
        code(both.list_halts(pb::ListHaltsRequest {}).await),
        Code::Unauthenticated
    );
    eventually(
        "the mismatch to be audited",
        Duration::from_secs(10),
        || {
            let root = root.clone();
            async move {
                denials(&root)
                    .await
                    .iter()
                    .any(|e| e.contains("but the client certificate to"))
                    .then_some(())
            }
        },
    )
    .await;
    // A plain TLS client with an unknown key is still refused, as before TLS.
    assert_eq!(
        code(
            keyed_tls(&server, &pki, "arb_nope")
                .list_halts(pb::ListHaltsRequest {})
                .await
        ),
        Code::Unauthenticated
    );
}

fn keyed_tls(server: &TestServer, pki: &Pki, key: &str) -> Client {
    Client::builder(server.url())
        .retries(0)
        .api_key(key.to_owned())
        .tls_ca_pem(pki.ca.pem())
        .tls_domain_name(SERVER_NAME)
        .connect_lazy()
        .unwrap()
}

/// Runs `arbiter serve` with these `server.tls` settings and returns its exit code and
/// stderr; the server must refuse to start (it would print its address otherwise).
async fn serve_refused(
    dir: &Path,
    env: &[(&str, &Path)],
    client_auth: &str,
) -> (Option<i32>, String) {
    let mut cmd = tokio::process::Command::new(arbiter_bin());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .env_remove("ARBITER_CONFIG")
        .env_remove("ARBITER_POLICY")
        .env("ARBITER_SERVER__TLS__CLIENT_AUTH", client_auth)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("a refused start ends at once")
        .expect("arbiter runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("listening"), "it served: {stdout}");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_bad_certificate_key_or_client_ca_stops_the_start_and_names_the_field() {
    let pki = Pki::new();
    let server = pki.ca.server();
    let other = pki.ca.server();
    let cert = pki.write("server.crt", &server.cert);
    let key = pki.write("server.key", &server.key);
    let other_key = pki.write("other.key", &other.key);
    let garbage = pki.write("garbage.pem", "this is not PEM\n");
    let missing = pki.dir.path().join("missing.crt");
    let dir = pki.dir.path();
    const CERT: &str = "ARBITER_SERVER__TLS__CERT_FILE";
    const KEY: &str = "ARBITER_SERVER__TLS__KEY_FILE";
    const CA: &str = "ARBITER_SERVER__TLS__CLIENT_CA_FILE";

    // (what is wrong, server.tls environment, client_auth, what stderr must say)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a Path)>, &'a str, Vec<String>);
    let cases: Vec<Case> = vec![
        (
            "missing certificate file",
            vec![(CERT, &missing), (KEY, &key)],
            "none",
            vec!["server.tls.cert_file".into(), missing.display().to_string()],
        ),
        (
            "certificate file without PEM",
            vec![(CERT, &garbage), (KEY, &key)],
            "none",
            vec!["server.tls.cert_file".into(), "no PEM certificate".into()],
        ),
        (
            "key of another certificate",
            vec![(CERT, &cert), (KEY, &other_key)],
            "none",
            vec!["server.tls.key_file".into(), "does not fit".into()],
        ),
        (
            "key file holding a certificate",
            vec![(CERT, &cert), (KEY, &cert)],
            "none",
            vec![
                "server.tls.key_file".into(),
                "no usable PEM private key".into(),
            ],
        ),
        (
            "client CA without certificates",
            vec![(CERT, &cert), (KEY, &key), (CA, &garbage)],
            "required",
            vec!["server.tls.client_ca_file".into()],
        ),
        (
            "client auth without a client CA",
            vec![(CERT, &cert), (KEY, &key)],
            "required",
            vec!["server.tls.client_ca_file: needed".into()],
        ),
        (
            "key without certificate",
            vec![(KEY, &key)],
            "none",
            vec!["server.tls.cert_file: needed".into()],
        ),
    ];
    for (what, env, auth, needles) in cases {
        let (code, stderr) = serve_refused(dir, &env, auth).await;
        assert_ne!(code, Some(0), "{what}: exit {code:?}\n{stderr}");
        for needle in &needles {
            assert!(
                stderr.contains(needle.as_str()),
                "{what}: stderr lacks {needle:?}:\n{stderr}"
            );
        }
    }
}

#[tokio::test]
async fn the_same_files_that_are_refused_when_broken_start_when_whole() {
    // The control for the test above: the certificate, key and CA it breaks work as is.
    let pki = Pki::new();
    let admin = pki.ca.client(ADMIN_ID);
    let server =
        spawn_server(ServerOptions::new().tls(pki.server_tls("required", Some(&admin)))).await;
    let log = server.log();
    assert!(log.contains("TLS on") && log.contains("required"), "{log}");
}

/// One HTTP/1.0 request to the console over TLS, presenting `identity` when given;
/// (status, head, body).
async fn console_https(
    addr: std::net::SocketAddr,
    pki: &Pki,
    identity: Option<&Pair>,
    request: &str,
) -> (u16, String, String) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca.pem().as_bytes()).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some(p) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(p.cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(p.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from(SERVER_NAME).unwrap(), tcp)
        .await
        .expect("the console's TLS handshake");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

/// `console.tls`: the console serves the gRPC certificate, and a principal bound to a
/// client certificate signs in with it and no key; without a certificate, or with one
/// bound to an agent principal, the certificate sign-in is refused and audited.
#[tokio::test]
async fn under_mtls_a_certificate_principal_signs_in_to_the_console_without_a_key() {
    let pki = Pki::new();
    let admin = pki.ca.client(ADMIN_ID);
    let ops = pki.ca.client(OPS_ID);
    let bot = pki.ca.client(BOT_ID);
    let server = spawn_server(
        ServerOptions::new()
            .policy(POLICY)
            .tls(pki.server_tls("optional", Some(&admin)))
            .env("ARBITER_CONSOLE__TLS", "true"),
    )
    .await;
    // Development mode bootstraps the first admin; from then on certificates identify.
    let c = pki.client(&server, None);
    for (name, role, agents, id) in [
        ("root", pb::Role::Admin, vec![], ADMIN_ID),
        ("ops-1", pb::Role::Operator, vec![], OPS_ID),
        (
            "bot-runtime",
            pb::Role::Agent,
            vec!["bot-1".to_owned()],
            BOT_ID,
        ),
    ] {
        let c = if name == "root" {
            c.clone()
        } else {
            pki.client(&server, Some(&admin))
        };
        c.create_principal(pb::CreatePrincipalRequest {
            name: name.into(),
            roles: vec![role as i32],
            agents,
            tls_identity: id.into(),
        })
        .await
        .expect("CreatePrincipal");
    }
    let root = pki.client(&server, Some(&admin));
    let console = server.console_addr();
    let get = |path: &str| format!("GET {path} HTTP/1.0\r\nHost: arbiter\r\n\r\n");
    let post =
        |path: &str| format!("POST {path} HTTP/1.0\r\nHost: arbiter\r\nContent-Length: 0\r\n\r\n");

    let (status, _, body) = console_https(console, &pki, Some(&ops), &get("/login")).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("id=\"certificate-principal\">ops-1<"),
        "{body}"
    );
    let (status, head, _) =
        console_https(console, &pki, Some(&ops), &post("/login/certificate")).await;
    assert_eq!(status, 303, "{head}");
    let cookie = header(&head, "set-cookie").expect("a session");
    assert!(
        cookie.contains("Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    let page = format!("GET /approvals HTTP/1.0\r\nHost: arbiter\r\nCookie: {session}\r\n\r\n");
    let (status, _, body) = console_https(console, &pki, Some(&ops), &page).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("ops-1"),
        "the page names the signed-in principal"
    );

    let before = denials(&root).await.len();
    let (status, _, body) = console_https(console, &pki, None, &post("/login/certificate")).await;
    assert_eq!(status, 401);
    assert!(body.contains("no client certificate"), "{body}");
    let (status, _, body) =
        console_https(console, &pki, Some(&bot), &post("/login/certificate")).await;
    assert_eq!(status, 401);
    assert!(body.contains("requires one of the roles"), "{body}");
    let (_, _, body) = console_https(console, &pki, Some(&bot), &get("/login")).await;
    assert!(
        !body.contains("certificate-principal"),
        "no certificate button for an agent"
    );
    assert_eq!(
        denials(&root).await.len(),
        before + 2,
        "each refusal is audited"
    );
}
