//! Stage 4, consent: purpose matching, expiry and revocation.

use arbiter_client::proto::RevokeConsentRequest;
use arbiter_client::Client;
use tonic::Code;

use crate::harness::{code, grant_consent, spawn_server, timestamp, ServerOptions};

const POLICY: &str = r#"
version: 1
defaults:
  consent: deny
agents:
  - id: "*"
    tools: {allow: [send_email]}
"#;

const T0: &str = "2030-01-15T12:00:00Z";

/// Code of the deciding reason for an email to `agent` with `purpose` (None: no purpose).
async fn email(client: &Client, agent: &str, purpose: Option<&str>) -> String {
    let d = client
        .evaluate(agent)
        .tool("send_email")
        .data("user_email", purpose)
        .send()
        .await
        .unwrap();
    assert_eq!(d.allowed(), code(&d) == "ok", "{:?}", d.reasons);
    if !d.allowed() {
        assert_eq!(d.reason().unwrap().stage, "consent", "{:?}", d.reasons);
    }
    code(&d)
}

#[tokio::test]
async fn a_grant_without_purpose_covers_every_purpose_and_no_purpose() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let client = server.client();
    assert_eq!(
        email(&client, "a", Some("marketing")).await,
        "consent.missing"
    );

    grant_consent(&client, "a", "user_email", "", None).await;
    assert_eq!(email(&client, "a", Some("marketing")).await, "ok");
    assert_eq!(email(&client, "a", Some("notifications")).await, "ok");
    assert_eq!(email(&client, "a", None).await, "ok");
    assert_eq!(
        email(&client, "someone-else", None).await,
        "consent.missing",
        "grants are per agent"
    );
}

#[tokio::test]
async fn a_request_without_purpose_matches_only_a_grant_without_purpose() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let client = server.client();
    grant_consent(&client, "a", "user_email", "notifications", None).await;

    assert_eq!(email(&client, "a", Some("notifications")).await, "ok");
    assert_eq!(
        email(&client, "a", Some("marketing")).await,
        "consent.missing"
    );
    assert_eq!(email(&client, "a", None).await, "consent.missing");
}

#[tokio::test]
async fn an_expired_grant_no_longer_counts() {
    let server = spawn_server(ServerOptions::new().policy(POLICY).clock(T0)).await;
    let client = server.client();
    grant_consent(
        &client,
        "a",
        "user_email",
        "",
        Some(timestamp("2030-01-15T13:00:00Z")),
    )
    .await;

    server.set_time("2030-01-15T12:59:59Z");
    assert_eq!(email(&client, "a", Some("x")).await, "ok");
    server.set_time("2030-01-15T13:00:00Z");
    assert_eq!(email(&client, "a", Some("x")).await, "consent.expired");
}

#[tokio::test]
async fn a_revoked_grant_no_longer_counts_and_revoking_a_missing_grant_is_not_found() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let client = server.client();
    grant_consent(&client, "a", "user_email", "notifications", None).await;
    assert_eq!(email(&client, "a", Some("notifications")).await, "ok");

    let revoke = |purpose: &str| {
        client.revoke_consent(RevokeConsentRequest {
            agent_id: "a".into(),
            data_type: "user_email".into(),
            purpose: purpose.into(),
        })
    };
    // Revoking removes the exact grant only: the every-purpose grant does not exist.
    let err = revoke("").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    assert_eq!(email(&client, "a", Some("notifications")).await, "ok");

    revoke("notifications").await.unwrap();
    assert_eq!(
        email(&client, "a", Some("notifications")).await,
        "consent.missing"
    );

    let err = revoke("notifications").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
}
