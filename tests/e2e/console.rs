//! The operator console's HTTP contract, without a browser: sign-in and its cookie,
//! CSRF and roles on every change (each refusal audited, nothing else changed), the
//! security headers, logout, and the start-up refusal of a development-mode console
//! off loopback. The browser tests are in tests/console/.

use arbiter_client::proto as pb;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{
    arbiter_with_env, create_principal as principal, keyed, query_all, spawn_server, ServerOptions,
};

const POLICY: &str = r#"
version: 1
defaults: {approval_ttl: 1h}
actions:
  - match: {tool: "refund_*"}
    approval: always
agents:
  - id: "bot*"
    tools: {allow: ["*"]}
"#;

struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.head.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with(&prefix)
                .then(|| l[prefix.len()..].trim().to_owned())
        })
    }
}

/// One HTTP/1.0 request (the connection closes after the answer).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&[(&str, &str)]>,
) -> Answer {
    let body = form.map(|pairs| {
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", v.replace(' ', "+")))
            .collect::<Vec<_>>()
            .join("&")
    });
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: arbiter\r\n");
    if let Some(c) = cookie {
        req.push_str(&format!("Cookie: arbiter_console={c}\r\n"));
    }
    if let Some(b) = &body {
        req.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body.as_deref().unwrap_or(""));
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// Signs in with `key`; returns the session id from the cookie.
async fn sign_in(addr: SocketAddr, key: &str) -> String {
    let a = http(addr, "POST", "/login", None, Some(&[("key", key)])).await;
    assert_eq!(a.status, 303, "{}\n{}", a.head, a.body);
    let cookie = a.header("set-cookie").expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Path=/"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP on loopback: {cookie}"
    );
    cookie
        .strip_prefix("arbiter_console=")
        .and_then(|c| c.split(';').next())
        .expect("the session id")
        .to_owned()
}

/// The CSRF token the pages carry for this session.
async fn csrf(addr: SocketAddr, session: &str) -> String {
    let page = http(addr, "GET", "/approvals", Some(session), None).await;
    assert_eq!(page.status, 200);
    let mark = r#"name="csrf" value=""#;
    let at = page.body.find(mark).expect("a CSRF field") + mark.len();
    page.body[at..at + 64].to_owned()
}

#[tokio::test]
async fn console_changes_need_a_session_the_csrf_token_and_an_operator_role() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let console = server.console_addr();
    let admin = keyed(
        &server,
        &principal(&server.client(), "root", &[pb::Role::Admin], &[]).await,
    );
    let bot = keyed(
        &server,
        &principal(&admin, "bot-runtime", &[pb::Role::Agent], &["bot*"]).await,
    );
    let alice = principal(&admin, "alice", &[pb::Role::Operator], &[]).await;
    let audrey = principal(&admin, "audrey", &[pb::Role::Auditor], &[]).await;

    // No session: sign in first; a wrong key is refused and audited.
    let anon = http(console, "GET", "/approvals", None, None).await;
    assert_eq!(
        (anon.status, anon.header("location").as_deref()),
        (303, Some("/login"))
    );
    let bad = http(
        console,
        "POST",
        "/login",
        None,
        Some(&[("key", "arb_wrong")]),
    )
    .await;
    assert_eq!(bad.status, 401);
    let agent_key = principal(&admin, "bot-2", &[pb::Role::Agent], &["bot2"]).await;
    let agent = http(
        console,
        "POST",
        "/login",
        None,
        Some(&[("key", &agent_key)]),
    )
    .await;
    assert_eq!(agent.status, 401, "an agent key cannot sign in");

    let d = bot
        .evaluate("bot-1")
        .tool("refund_order")
        .send()
        .await
        .unwrap();
    let id = d.approval_id.clone().expect("pending");
    let path = format!("/approvals/{id}/decide");
    let state = || async {
        admin
            .get_approval(pb::GetApprovalRequest {
                approval_id: id.clone(),
            })
            .await
            .unwrap()
            .approval
            .unwrap()
            .state
    };
    let denied = || async {
        query_all(
            &admin,
            pb::AuditFilter {
                kinds: vec!["auth.denied".into()],
                ..Default::default()
            },
        )
        .await
        .len()
    };
    let before = denied().await;

    // An operator without the token, with another session's token: refused.
    let op = sign_in(console, &alice).await;
    let auditor = sign_in(console, &audrey).await;
    let auditor_token = csrf(console, &auditor).await;
    for form in [
        vec![("decision", "grant")],
        vec![("decision", "grant"), ("csrf", auditor_token.as_str())],
    ] {
        let a = http(console, "POST", &path, Some(&op), Some(&form)).await;
        assert_eq!(a.status, 403, "{}", a.body);
        assert!(a.body.contains("CSRF"), "{}", a.body);
    }
    // The auditor with its own token: refused by role.
    let a = http(
        console,
        "POST",
        &path,
        Some(&auditor),
        Some(&[("decision", "grant"), ("csrf", &auditor_token)]),
    )
    .await;
    assert_eq!(a.status, 403);
    assert!(a.body.contains("may only read"), "{}", a.body);
    assert_eq!(state().await, pb::ApprovalState::Pending as i32);
    assert_eq!(denied().await, before + 3, "every refusal is audited");

    // The operator with its token decides, audited as the operator.
    let token = csrf(console, &op).await;
    let a = http(
        console,
        "POST",
        &path,
        Some(&op),
        Some(&[
            ("decision", "grant"),
            ("csrf", &token),
            ("reason", "checked"),
        ]),
    )
    .await;
    assert_eq!(
        (a.status, a.header("location").as_deref()),
        (303, Some("/approvals"))
    );
    assert_eq!(state().await, pb::ApprovalState::Granted as i32);
    let grants = query_all(
        &admin,
        pb::AuditFilter {
            kinds: vec!["approval.grant".into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(grants.len(), 1);
    assert!(grants[0].canonical.contains(r#""approver":"alice""#));

    // Logout needs the token too, then the session is gone.
    let a = http(
        console,
        "POST",
        "/logout",
        Some(&op),
        Some(&[("csrf", "x")]),
    )
    .await;
    assert_eq!(a.status, 403);
    let a = http(
        console,
        "POST",
        "/logout",
        Some(&op),
        Some(&[("csrf", &token)]),
    )
    .await;
    assert_eq!(a.status, 303);
    let after = http(console, "GET", "/approvals", Some(&op), None).await;
    assert_eq!(after.header("location").as_deref(), Some("/login"));
}

#[tokio::test]
async fn console_pages_carry_a_strict_content_security_policy() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let console = server.console_addr();
    // Development mode: a session for the anonymous developer, and the banner.
    let first = http(console, "GET", "/approvals", None, None).await;
    assert_eq!(first.status, 303);
    let cookie = first.header("set-cookie").expect("a development session");
    let session = cookie
        .strip_prefix("arbiter_console=")
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_owned();
    let page = http(console, "GET", "/approvals", Some(&session), None).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("DEVELOPMENT MODE"));
    let csp = page.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(page.header("x-frame-options").as_deref(), Some("DENY"));
    assert_eq!(page.header("cache-control").as_deref(), Some("no-store"));
    assert!(!page.body.contains("<script>") && !page.body.contains(" style="));
    let js = http(console, "GET", "/assets/htmx-2.0.11.min.js", None, None).await;
    assert_eq!(js.status, 200);
    assert!(js.body.len() > 40_000);
}

/// Webhook payloads link to `/approvals/<id>` (server/src/notify/payload.rs); the link
/// lands on that approval's card, and nothing but an id is echoed into `Location`.
#[tokio::test]
async fn a_webhook_approval_link_lands_on_its_card() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let console = server.console_addr();
    let link = http(console, "GET", "/approvals/apr_0190abcdef", None, None).await;
    assert_eq!(link.status, 303);
    assert_eq!(
        link.header("location").as_deref(),
        Some("/approvals#approval-apr_0190abcdef")
    );
    for bad in [
        "/approvals/a%0d%0aSet-Cookie:x",
        "/approvals/%3Cb%3E",
        "/approvals/a.b",
    ] {
        let answer = http(console, "GET", bad, None, None).await;
        assert_eq!(answer.status, 404, "{bad}");
        assert!(answer.header("set-cookie").is_none(), "{bad}");
    }
}

#[tokio::test]
async fn a_development_mode_console_off_loopback_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = arbiter_with_env(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
            "--metrics-listen",
            "off",
        ],
        &[("ARBITER_CONSOLE__LISTEN", "0.0.0.0:0")],
    )
    .await;
    assert_eq!(out.code(), Some(1), "{}", out.text());
    assert!(
        out.text()
            .contains("refusing to serve the console on 0.0.0.0:0 without authentication"),
        "{}",
        out.text()
    );
}
