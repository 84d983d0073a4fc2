//! Key rotation and revocation (`arbiter keys rotate|revoke`): old entries, checkpoints
//! and tokens keep verifying across rotations, retired keys never sign, a revoked key
//! fails the entries it chained after the revocation point, and every change is audited.

use arbiter_client::proto::{self as pb, AuditFilter};

use crate::harness::{
    arbiter, code, python, query_all, repo_root, spawn_server, ServerOptions, TestServer,
};

const POLICY: &str = r#"
version: 1
agents:
  - id: "*"
    tools: {allow: ["*"]}
"#;

async fn decide(server: &TestServer, n: usize) -> u64 {
    let c = server.client();
    let mut last = 0;
    for _ in 0..n {
        last = c
            .evaluate("agent-1")
            .tool("t")
            .send()
            .await
            .unwrap()
            .audit_seq;
    }
    last
}

async fn keys_cli(server: &TestServer, args: &[&str]) -> crate::harness::CliOutput {
    let data = server.data_dir.display().to_string();
    let mut all = vec!["keys"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--data-dir", &data]);
    arbiter(&all).await
}

fn active_hmac_id(server: &TestServer) -> String {
    let ring: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(server.keys_path()).unwrap()).unwrap();
    ring["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["status"] == "active")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Runs every verifier: the server, the offline Rust verifier and the Python script.
async fn verify_everywhere(server: &TestServer) -> [crate::harness::CliOutput; 3] {
    let file = server.scratch("export.jsonl").display().to_string();
    let out = arbiter(&["audit", "export", "--addr", &server.url(), "--out", &file]).await;
    assert_eq!(out.code(), Some(0), "{out}");
    let keys = server.keys_path().display().to_string();
    let script = repo_root().join("scripts").join("verify_audit.py");
    [
        arbiter(&["audit", "verify", "--addr", &server.url()]).await,
        arbiter(&["audit", "verify", "--export", &file, "--keys", &keys]).await,
        python(&[&script.display().to_string(), &file, "--keys", &keys]).await,
    ]
}

#[tokio::test]
async fn an_hmac_rotation_keeps_the_chain_verifying_and_is_audited() {
    let mut server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let before = decide(&server, 3).await;
    let old = active_hmac_id(&server);
    server.stop().await;

    let out = keys_cli(&server, &["rotate", "--hmac"]).await;
    assert_eq!(out.code(), Some(0), "{out}");
    let new = active_hmac_id(&server);
    assert_ne!(old, new);
    server.start().await;
    let after = decide(&server, 2).await;

    let c = server.client();
    let all = query_all(&c, AuditFilter::default()).await;
    let key_of = |seq: u64| all.iter().find(|e| e.seq == seq).unwrap().key_id.clone();
    assert_eq!(
        key_of(before),
        old,
        "entries before the rotation keep their key"
    );
    assert_eq!(key_of(after), new, "the retired key never signs again");
    let changes: Vec<_> = all.iter().filter(|e| e.kind == "keys.changed").collect();
    assert_eq!(changes.len(), 2, "first start, then the rotation");
    let body: serde_json::Value = serde_json::from_str(&changes[1].canonical).unwrap();
    let statuses = |side: &str| -> Vec<(String, String)> {
        body["body"][side]["hmac"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["id"].as_str().unwrap().to_owned(),
                    k["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert!(statuses("before").contains(&(old.clone(), "active".into())));
    assert!(statuses("after").contains(&(old.clone(), "retired".into())));
    assert!(statuses("after").contains(&(new.clone(), "active".into())));
    assert!(
        !changes[1].canonical.contains("secret"),
        "no secret is logged"
    );

    // A restart without a change records none.
    server.restart().await;
    let changes = query_all(
        &server.client(),
        AuditFilter {
            kinds: vec!["keys.changed".into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(changes.len(), 2);

    for out in verify_everywhere(&server).await {
        assert_eq!(out.code(), Some(0), "{out}");
    }
}

#[tokio::test]
async fn a_revoked_key_fails_the_entries_after_its_revocation_point() {
    let mut server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    decide(&server, 4).await;
    let old = active_hmac_id(&server);
    server.stop().await;

    let out = keys_cli(&server, &["revoke", "--hmac", &old]).await;
    assert_ne!(out.code(), Some(0), "the active key cannot be revoked");
    assert!(out.text().contains("rotate"), "{out}");
    assert_eq!(
        keys_cli(&server, &["rotate", "--hmac"]).await.code(),
        Some(0)
    );
    // Suspected leak after entry 3: the old key is trusted up to there only.
    let out = keys_cli(&server, &["revoke", "--hmac", &old, "--after-seq", "3"]).await;
    assert_eq!(out.code(), Some(0), "{out}");
    server.start().await;
    decide(&server, 1).await;

    let expected = [
        "FAIL: seq 4: revoked_key",
        "FAIL: seq 4: revoked_key",
        "FAIL: seq 4: revoked_key",
    ];
    for (out, expected) in verify_everywhere(&server).await.iter().zip(expected) {
        assert_eq!(out.code(), Some(1), "{out}");
        assert!(
            out.text().contains(expected),
            "expected {expected:?}:\n{out}"
        );
    }
    let changes = query_all(
        &server.client(),
        AuditFilter {
            kinds: vec!["keys.changed".into()],
            ..Default::default()
        },
    )
    .await;
    let last: serde_json::Value = serde_json::from_str(&changes.last().unwrap().canonical).unwrap();
    let revoked = last["body"]["after"]["hmac"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == old.as_str())
        .unwrap()
        .clone();
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["revoked_after_seq"], 3);
}

#[tokio::test]
async fn a_signing_rotation_keeps_old_checkpoints_and_tokens_valid() {
    let mut server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    decide(&server, 3).await;
    let c = server.client();
    let token = c
        .delegate(pb::DelegateRequest {
            parent_agent_id: "planner".into(),
            subject_agent_id: "worker".into(),
            tools: vec!["crm.read".into()],
            ttl_seconds: 3600,
            ..Default::default()
        })
        .await
        .unwrap()
        .token;
    let saved = server.scratch("saved.checkpoint").display().to_string();
    let out = arbiter(&[
        "audit",
        "checkpoint",
        "--out",
        &saved,
        "--addr",
        &server.url(),
    ])
    .await;
    assert_eq!(out.code(), Some(0), "{out}");
    let public = server.data_dir.join("keys").join("signing.pub");
    let old_pub = std::fs::read_to_string(&public).unwrap();
    server.stop().await;

    let out = keys_cli(&server, &["rotate", "--signing"]).await;
    assert_eq!(out.code(), Some(0), "{out}");
    let new_pub = std::fs::read_to_string(&public).unwrap();
    let lines: Vec<&str> = new_pub.lines().collect();
    assert_eq!(lines.len(), 3, "origin, new key, retired key:\n{new_pub}");
    assert_eq!(lines[2], old_pub.lines().nth(1).unwrap());
    server.start().await;
    decide(&server, 2).await;

    // The new checkpoint is signed by the new key; the old one only verifies through
    // the retired key listed in signing.pub.
    let now = server.scratch("now.checkpoint").display().to_string();
    let out = arbiter(&[
        "audit",
        "checkpoint",
        "--out",
        &now,
        "--addr",
        &server.url(),
    ])
    .await;
    assert_eq!(out.code(), Some(0), "{out}");
    let note = std::fs::read_to_string(&now).unwrap();
    let old_only = server.scratch("old.pub");
    std::fs::write(&old_only, &old_pub).unwrap();
    let public_s = public.display().to_string();
    let out = arbiter(&[
        "audit",
        "extends",
        &saved,
        "--public-key",
        &public_s,
        "--addr",
        &server.url(),
    ])
    .await;
    assert_eq!(out.code(), Some(0), "{out}");
    let out = arbiter(&[
        "audit",
        "extends",
        &saved,
        "--public-key",
        &old_only.display().to_string(),
        "--addr",
        &server.url(),
    ])
    .await;
    assert_ne!(
        out.code(),
        Some(0),
        "the new checkpoint is not signed by the old key:\n{note}\n{out}"
    );

    let file = server.scratch("export.jsonl").display().to_string();
    assert_eq!(
        arbiter(&["audit", "export", "--addr", &server.url(), "--out", &file])
            .await
            .code(),
        Some(0)
    );
    let script = repo_root().join("scripts").join("verify_audit.py");
    let keys = server.keys_path().display().to_string();
    for checkpoint in [&saved, &now] {
        let out = python(&[
            &script.display().to_string(),
            &file,
            "--keys",
            &keys,
            "--checkpoint",
            checkpoint,
            "--public-key",
            &public_s,
        ])
        .await;
        assert_eq!(out.code(), Some(0), "{out}");
    }

    // A token signed by the retired key stays valid until it expires.
    let c = server.client();
    let d = c
        .evaluate("worker")
        .tool("crm.read")
        .delegation_token(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(code(&d), "ok", "{:?}", d.reasons);
    let kinds: Vec<String> = query_all(&c, AuditFilter::default())
        .await
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "keys.changed").count(), 2);
}
