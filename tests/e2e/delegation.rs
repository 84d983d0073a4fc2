//! Delegation tokens (SPEC §3.5): Delegate issues a signed token from the parent's
//! scope; Evaluate enforces policy ∩ token ∩ every issuer's live policy; each kind of
//! refusal has its own code.

use std::time::Duration;

use arbiter_client::proto::{self as pb, AuditFilter};
use arbiter_client::{Client, Error};
use base64::Engine as _;

use crate::harness::{code, eventually, query_all, spawn_server, ServerOptions};

const POLICY: &str = r#"
version: 1
agents:
  - id: planner
    tools: {allow: ["crm.*", send_email], deny: ["crm.delete*"]}
    apis: {allow: ["GET https://api.example.com/**"]}
  - id: worker
    tools: {allow: ["*"]}
    apis: {allow: ["* https://**"]}
  - id: helper
    tools: {allow: ["*"]}
"#;

fn request(parent: &str, subject: &str, tools: &[&str], apis: &[&str]) -> pb::DelegateRequest {
    pb::DelegateRequest {
        parent_agent_id: parent.into(),
        subject_agent_id: subject.into(),
        tools: tools.iter().map(|t| t.to_string()).collect(),
        apis: apis.iter().map(|a| a.to_string()).collect(),
        ttl_seconds: 600,
        max_depth: 0,
        parent_token: String::new(),
    }
}

async fn delegate(c: &Client, r: pb::DelegateRequest) -> String {
    c.delegate(r).await.expect("Delegate").token
}

/// The refusal code of a failed Delegate (the status message starts with it).
fn refusal(e: Error) -> String {
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    e.to_string()
        .split(':')
        .find(|p| p.trim().starts_with("delegation.") || p.trim().starts_with("halt."))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

async fn with_token(c: &Client, agent: &str, tool: &str, token: &str) -> String {
    let d = c
        .evaluate(agent)
        .tool(tool)
        .delegation_token(token)
        .send()
        .await
        .unwrap();
    code(&d)
}

#[tokio::test]
async fn a_token_narrows_the_subject_and_every_use_is_traced_in_the_log() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let c = server.client();
    let token = delegate(&c, request("planner", "worker", &["crm.read*"], &[])).await;
    assert!(token.starts_with("arbiter-dt1."));

    assert_eq!(
        with_token(&c, "worker", "crm.read_contact", &token).await,
        "ok"
    );
    // Within the worker's own policy but outside the token.
    assert_eq!(
        with_token(&c, "worker", "send_email", &token).await,
        "delegation.out_of_scope"
    );
    let api = c
        .evaluate("worker")
        .api("GET", "https://api.example.com/v1/x")
        .delegation_token(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(code(&api), "delegation.out_of_scope");
    // The subject's own policy still applies: the token cannot widen it.
    let narrow = delegate(
        &c,
        request(
            "planner",
            "helper",
            &["crm.read*"],
            &["GET https://api.example.com/v1/**"],
        ),
    )
    .await;
    let d = c
        .evaluate("helper")
        .api("GET", "https://api.example.com/v1/x")
        .delegation_token(&narrow)
        .send()
        .await
        .unwrap();
    assert_eq!(code(&d), "scope.api_not_allowed");

    let issued = query_all(
        &c,
        AuditFilter {
            kinds: vec!["delegation.issued".into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(issued.len(), 2);
    let entry: serde_json::Value = serde_json::from_str(&issued[0].canonical).unwrap();
    let body = &entry["body"];
    assert_eq!(body["subject"], "worker");
    assert_eq!(body["tools"], serde_json::json!(["crm.read*"]));
    assert!(
        !issued[0].canonical.contains(&token),
        "the bearer token itself is never logged"
    );
    let token_id = body["token_id"].as_str().unwrap().to_owned();

    let used = query_all(
        &c,
        AuditFilter {
            agent_id: "worker".into(),
            kinds: vec!["evaluate".into()],
            outcome: "allow".into(),
            ..Default::default()
        },
    )
    .await;
    let entry: serde_json::Value = serde_json::from_str(&used[0].canonical).unwrap();
    let body = &entry["body"];
    assert_eq!(body["delegation"]["token_id"], token_id.as_str());
    assert_eq!(
        body["delegation"]["issuers"],
        serde_json::json!(["planner"])
    );
}

#[tokio::test]
async fn escalation_forgery_wrong_subject_and_depth_are_refused_with_distinct_codes() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let c = server.client();

    // Escalation at the root: outside the planner's allow list, wider than it, or denied to it.
    for tools in [
        &["billing.pay"][..],
        &["*"],
        &["crm.delete_all"],
        &["send_*"],
    ] {
        let e = c
            .delegate(request("planner", "worker", tools, &[]))
            .await
            .unwrap_err();
        assert_eq!(refusal(e), "delegation.escalation", "{tools:?}");
    }
    let e = c
        .delegate(request(
            "planner",
            "worker",
            &[],
            &["POST https://api.example.com/v1/x"],
        ))
        .await
        .unwrap_err();
    assert_eq!(refusal(e), "delegation.escalation");

    let mut root = request("planner", "worker", &["crm.*"], &[]);
    root.max_depth = 1;
    let root = delegate(&c, root).await;

    // Forged: any change to the payload breaks the signature.
    let (payload, signature) = root["arbiter-dt1.".len()..].split_once('.').unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let widened = String::from_utf8(b64.decode(payload).unwrap())
        .unwrap()
        .replace("crm.*", "*");
    let forged = format!("arbiter-dt1.{}.{signature}", b64.encode(widened));
    assert_eq!(
        with_token(&c, "worker", "billing.pay", &forged).await,
        "delegation.forged"
    );
    assert_eq!(
        with_token(&c, "worker", "crm.read", "not-a-token").await,
        "delegation.forged"
    );
    let mut again = request("worker", "helper", &["crm.read"], &[]);
    again.parent_token = forged;
    assert_eq!(
        refusal(c.delegate(again).await.unwrap_err()),
        "delegation.forged"
    );

    // Wrong subject: the helper cannot use the worker's token, nor re-delegate it.
    assert_eq!(
        with_token(&c, "helper", "crm.read", &root).await,
        "delegation.wrong_subject"
    );
    let mut stolen = request("helper", "planner", &["crm.read"], &[]);
    stolen.parent_token = root.clone();
    assert_eq!(
        refusal(c.delegate(stolen).await.unwrap_err()),
        "delegation.wrong_subject"
    );

    // Re-delegation narrows: a wider pattern is an escalation, a narrower one works.
    let mut wider = request("worker", "helper", &["*"], &[]);
    wider.parent_token = root.clone();
    assert_eq!(
        refusal(c.delegate(wider).await.unwrap_err()),
        "delegation.escalation"
    );
    let mut deeper = request("worker", "helper", &["crm.read*"], &[]);
    deeper.parent_token = root.clone();
    deeper.max_depth = 1;
    assert_eq!(
        refusal(c.delegate(deeper).await.unwrap_err()),
        "delegation.depth_exceeded"
    );
    let mut narrower = request("worker", "helper", &["crm.read*"], &[]);
    narrower.parent_token = root.clone();
    let child = delegate(&c, narrower).await;
    assert_eq!(
        with_token(&c, "helper", "crm.read_contact", &child).await,
        "ok"
    );
    assert_eq!(
        with_token(&c, "helper", "crm.update", &child).await,
        "delegation.out_of_scope"
    );

    // Depth: the child was issued with max_depth 0, so it cannot be delegated again.
    let mut past = request("helper", "worker", &["crm.read_contact"], &[]);
    past.parent_token = child;
    assert_eq!(
        refusal(c.delegate(past).await.unwrap_err()),
        "delegation.depth_exceeded"
    );
}

#[tokio::test]
async fn tokens_expire_and_cannot_be_renewed_by_re_delegation() {
    let server = spawn_server(
        ServerOptions::new()
            .policy(POLICY)
            .clock("2026-01-01T00:00:00Z"),
    )
    .await;
    let c = server.client();
    let mut r = request("planner", "worker", &["crm.*"], &[]);
    r.ttl_seconds = 60;
    r.max_depth = 1;
    let token = delegate(&c, r).await;

    // A child asking for longer than its parent has left ends with the parent.
    let mut child = request("worker", "helper", &["crm.read"], &[]);
    child.parent_token = token.clone();
    child.ttl_seconds = 3600;
    let issued = c.delegate(child.clone()).await.unwrap();
    assert_eq!(
        issued.expires_at.unwrap().seconds,
        crate::harness::ms("2026-01-01T00:01:00Z") / 1000
    );

    server.set_time("2026-01-01T00:01:00Z");
    assert_eq!(
        with_token(&c, "worker", "crm.read", &token).await,
        "delegation.expired"
    );
    assert_eq!(
        with_token(&c, "helper", "crm.read", &issued.token).await,
        "delegation.expired"
    );
    assert_eq!(
        refusal(c.delegate(child).await.unwrap_err()),
        "delegation.expired"
    );
}

#[tokio::test]
async fn an_issuers_halt_and_policy_bound_the_work_it_delegated() {
    let server = spawn_server(ServerOptions::new().policy(POLICY).fast_reload()).await;
    let c = server.client();
    let token = delegate(&c, request("planner", "worker", &["crm.*"], &[])).await;
    assert_eq!(with_token(&c, "worker", "crm.read", &token).await, "ok");
    // The issuer's deny list applies to the delegated glob.
    assert_eq!(
        with_token(&c, "worker", "crm.delete_all", &token).await,
        "delegation.issuer_scope"
    );

    let planner = Some(pb::HaltTarget {
        scope: pb::HaltScope::Agent as i32,
        agent_id: "planner".into(),
        session_id: String::new(),
    });
    c.halt(pb::HaltRequest {
        target: planner.clone(),
        mode: pb::HaltMode::HaltAll as i32,
        reason: "investigating".into(),
    })
    .await
    .unwrap();
    assert_eq!(
        with_token(&c, "worker", "crm.read", &token).await,
        "halt.engaged"
    );
    // Without the token the worker acts on its own authority, which the halt does not touch.
    let own = c.evaluate("worker").tool("crm.read").send().await.unwrap();
    assert!(own.allowed(), "{:?}", own.reasons);
    let e = c
        .delegate(request("planner", "helper", &["crm.read"], &[]))
        .await
        .unwrap_err();
    assert_eq!(refusal(e), "halt.engaged");
    c.resume(pb::ResumeRequest {
        target: planner,
        reason: "resolved".into(),
    })
    .await
    .unwrap();
    assert_eq!(with_token(&c, "worker", "crm.read", &token).await, "ok");

    // Narrowing the issuer's policy narrows every token it issued, at once.
    server.write_policy(&POLICY.replace(r#"allow: ["crm.*", send_email]"#, "allow: [send_email]"));
    eventually(
        "the planner's narrower policy",
        Duration::from_secs(10),
        || async {
            (with_token(&c, "worker", "crm.read", &token).await == "delegation.issuer_scope")
                .then_some(())
        },
    )
    .await;
    let refused = query_all(
        &c,
        AuditFilter {
            kinds: vec!["delegation.refused".into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(refused.len(), 1, "the halted planner's attempt is audited");
}

#[tokio::test]
async fn an_agent_key_delegates_only_from_its_own_agents() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let admin_key =
        crate::harness::create_principal(&server.client(), "root", &[pb::Role::Admin], &[]).await;
    let admin = crate::harness::keyed(&server, &admin_key);
    let key =
        crate::harness::create_principal(&admin, "worker-key", &[pb::Role::Agent], &["worker"])
            .await;
    let worker = crate::harness::keyed(&server, &key);
    let e = worker
        .delegate(request("planner", "worker", &["crm.read"], &[]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(!e.to_string().contains("delegation."), "{e}");
    let e = worker
        .delegate(request("worker", "worker", &["crm.read"], &[]))
        .await
        .unwrap_err();
    assert_eq!(e.field(), Some("subject_agent_id"));
    let e = worker
        .delegate(request("worker", "helper", &["[broken"], &[]))
        .await
        .unwrap_err();
    assert_eq!(e.field(), Some("tools[0]"));
    let mut r = request("worker", "helper", &["crm.read"], &[]);
    r.ttl_seconds = 0;
    assert_eq!(
        worker.delegate(r).await.unwrap_err().field(),
        Some("ttl_seconds")
    );
    let token = delegate(&worker, request("worker", "helper", &["crm.read"], &[])).await;
    assert!(token.starts_with("arbiter-dt1."));
}
