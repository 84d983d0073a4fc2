//! A call's arguments in the log: every JSON type, floats included, verifies with the
//! server, the offline Rust verifier and the stdlib Python script; the receipt of an
//! entry with arguments verifies offline; the digest is over the raw arguments.

use arbiter_client::proto::AuditFilter;

use crate::harness::{arbiter, python, query_all, repo_root, spawn_server, ServerOptions};

const POLICY: &str = r#"
version: 1
audit:
  sensitive_keys: {token: digest}
agents:
  - id: "*"
    tools: {allow: ["*"]}
"#;

#[tokio::test]
async fn entries_with_arguments_of_every_json_type_verify_everywhere() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let c = server.client();
    let args = serde_json::json!({
        "temperature": 0.7,
        "big": 1e300,
        "count": 3,
        "negative": -12,
        "flag": false,
        "nothing": null,
        "text": "naïve \u{1b}[31m \"quoted\"",
        "nested": {"list": [1, 2.5, "x", {"token": "secret-value"}]},
        "token": 42
    });
    let d = c
        .evaluate("agent-1")
        .tool("search")
        .arguments(args.clone())
        .receipt(true)
        .send()
        .await
        .unwrap();
    assert!(d.allowed(), "{:?}", d.reasons);

    let entries = query_all(
        &c,
        AuditFilter {
            kinds: vec!["evaluate".into()],
            ..Default::default()
        },
    )
    .await;
    let entry = &entries.last().unwrap().canonical;
    let v: serde_json::Value = serde_json::from_str(entry).unwrap();
    let recorded = &v["body"]["action"]["arguments"];
    assert_eq!(
        recorded["temperature"], "0.7",
        "floats are recorded as their JCS text"
    );
    assert_eq!(recorded["big"], "1e+300");
    assert_eq!(recorded["count"], 3);
    assert_eq!(recorded["nested"]["list"][1], "2.5");
    assert!(!entry.contains("secret-value"), "{entry}");
    assert!(recorded["nested"]["list"][3]["token"]
        .as_str()
        .unwrap()
        .starts_with("hmac-sha256:"));
    assert!(recorded["token"]
        .as_str()
        .unwrap()
        .starts_with("hmac-sha256:"));

    // The digest is over the raw action: recomputed here from the call itself.
    let raw = serde_json::json!({
        "tool": "search", "api": null, "model": null, "max_tokens": 0,
        "estimate": {"micro_usd": 0, "tokens": 0}, "data": [], "category": null,
        "budget": null, "arguments": args,
    });
    let digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            serde_jcs::to_vec(&raw).unwrap()
        ))
    );
    assert_eq!(d.action_digest, digest);
    assert_eq!(v["body"]["action_digest"], digest);

    let file = server.scratch("export.jsonl").display().to_string();
    let out = arbiter(&["audit", "export", "--addr", &server.url(), "--out", &file]).await;
    assert_eq!(out.code(), Some(0), "{out}");
    let keys = server.keys_path().display().to_string();
    let script = repo_root().join("scripts").join("verify_audit.py");
    for out in [
        arbiter(&["audit", "verify", "--addr", &server.url()]).await,
        arbiter(&["audit", "verify", "--export", &file, "--keys", &keys]).await,
        python(&[&script.display().to_string(), &file, "--keys", &keys]).await,
    ] {
        assert_eq!(out.code(), Some(0), "{out}");
    }
    let receipt = d.receipt().expect("a receipt");
    assert!(receipt.entry.contains("\"temperature\":\"0.7\""));
}
