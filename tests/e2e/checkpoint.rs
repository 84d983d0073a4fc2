//! The Merkle tree and signed checkpoints: any verifier with the public key can check
//! one decision (inclusion) and that the log only grew (consistency).

use arbiter_client::{proto as pb, Client};
use arbiter_server::audit::merkle;
use base64::Engine as _;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::harness::{query_all, spawn_server, ServerOptions, TestServer};

const POLICY: &str = "version: 1\nagents:\n  - id: \"*\"\n    tools: {allow: [\"*\"]}\n";

fn unhex(s: &str) -> [u8; 32] {
    hex::decode(s).unwrap().try_into().unwrap()
}

/// Checks the C2SP signed note with the public key from `signing.pub`, independently of
/// the server's code, and returns (size, root).
fn verify_note(server: &TestServer, note: &str) -> (u64, [u8; 32]) {
    let pubfile =
        std::fs::read_to_string(server.data_dir.join("keys").join("signing.pub")).unwrap();
    let mut lines = pubfile.lines();
    let (origin, public) = (lines.next().unwrap(), lines.next().unwrap());
    let key = VerifyingKey::from_bytes(&unhex(public)).unwrap();
    let (body, sig_line) = note.split_once("\n\n").unwrap();
    let body = format!("{body}\n");
    let mut parts = body.lines();
    assert_eq!(parts.next(), Some(origin));
    let size: u64 = parts.next().unwrap().parse().unwrap();
    let root: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(parts.next().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let sig_line = sig_line.trim_end().strip_prefix("\u{2014} ").unwrap();
    let (name, blob) = sig_line.split_once(' ').unwrap();
    assert_eq!(name, origin);
    let blob = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .unwrap();
    let mut h = Sha256::new();
    h.update(origin.as_bytes());
    h.update([0x0A, 0x01]);
    h.update(key.as_bytes());
    assert_eq!(&blob[..4], &h.finalize()[..4], "key id");
    key.verify(body.as_bytes(), &Signature::from_slice(&blob[4..]).unwrap())
        .expect("signature verifies");
    (size, root)
}

async fn checkpoint(c: &Client) -> pb::GetCheckpointResponse {
    c.get_checkpoint(pb::GetCheckpointRequest {}).await.unwrap()
}

#[tokio::test]
async fn every_entry_is_provably_in_the_signed_tree_and_the_tree_only_grows() {
    let mut server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let c = server.client();
    for i in 0..12 {
        c.evaluate(format!("agent-{}", i % 3))
            .tool("t")
            .send()
            .await
            .unwrap();
    }
    let first = checkpoint(&c).await;
    let (size, root) = verify_note(&server, &first.checkpoint);
    assert_eq!(
        (size, hex::encode(root)),
        (first.tree_size, first.root_hash.clone())
    );

    let entries = query_all(&c, pb::AuditFilter::default()).await;
    assert_eq!(entries.len() as u64, size, "one leaf per entry");
    for e in &entries {
        let proof = c
            .get_inclusion_proof(pb::GetInclusionProofRequest {
                seq: e.seq,
                tree_size: size,
            })
            .await
            .unwrap();
        let hashes: Vec<[u8; 32]> = proof.hashes.iter().map(|h| unhex(h)).collect();
        let leaf = merkle::leaf_hash(e.canonical.as_bytes());
        assert!(
            merkle::verify_inclusion(e.seq - 1, size, &leaf, &hashes, &root),
            "entry {}",
            e.seq
        );
        let forged = merkle::leaf_hash(format!("{} ", e.canonical).as_bytes());
        assert!(!merkle::verify_inclusion(
            e.seq - 1,
            size,
            &forged,
            &hashes,
            &root
        ));
    }

    // More traffic and a restart: the new tree extends the old one.
    server.restart().await;
    let c = server.client();
    for _ in 0..7 {
        c.evaluate("agent-9").tool("t").send().await.unwrap();
    }
    let later = checkpoint(&c).await;
    let (new_size, new_root) = verify_note(&server, &later.checkpoint);
    assert!(new_size > size);
    let proof = c
        .get_consistency_proof(pb::GetConsistencyProofRequest {
            from_size: size,
            to_size: new_size,
        })
        .await
        .unwrap();
    let hashes: Vec<[u8; 32]> = proof.hashes.iter().map(|h| unhex(h)).collect();
    assert!(merkle::verify_consistency(
        size, new_size, &root, &new_root, &hashes
    ));
    assert!(
        !merkle::verify_consistency(size, new_size, &new_root, &new_root, &hashes),
        "a different old root is refused"
    );

    let bad = c
        .get_inclusion_proof(pb::GetInclusionProofRequest {
            seq: new_size + 1,
            tree_size: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.field(), Some("seq"));
}

#[tokio::test]
async fn a_receipt_verifies_offline_with_the_public_key_and_an_edited_one_does_not() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let c = server.client();
    let d = c
        .evaluate("agent-1")
        .tool("send_email")
        .receipt(true)
        .send()
        .await
        .unwrap();
    let r = d.receipt().expect("a receipt").clone();
    assert!(
        r.entry.contains(&d.decision_id),
        "the receipt is for this decision"
    );
    let file = server.scratch("receipt.json");
    let json = serde_json::json!({"entry": r.entry, "mac": r.mac, "inclusion_proof": r.inclusion_proof, "checkpoint": r.checkpoint});
    std::fs::write(&file, json.to_string()).unwrap();
    let public = server.data_dir.join("keys").join("signing.pub");
    let out = crate::harness::arbiter(&[
        "audit",
        "verify-receipt",
        file.to_str().unwrap(),
        "--public-key",
        public.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.code(), Some(0), "{}", out.text());

    let edited = json.to_string().replace("send_email", "send_money");
    std::fs::write(&file, edited).unwrap();
    let out = crate::harness::arbiter(&[
        "audit",
        "verify-receipt",
        file.to_str().unwrap(),
        "--public-key",
        public.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.code(), Some(1), "{}", out.text());

    // The CLI builds the same receipt for any entry.
    let out = crate::harness::arbiter(&[
        "audit",
        "proof",
        &d.audit_seq.to_string(),
        "--out",
        file.to_str().unwrap(),
        "--addr",
        &server.url(),
    ])
    .await;
    assert_eq!(out.code(), Some(0), "{}", out.text());
    let out = crate::harness::arbiter(&[
        "audit",
        "verify-receipt",
        file.to_str().unwrap(),
        "--public-key",
        public.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.code(), Some(0), "{}", out.text());
}

#[tokio::test]
async fn a_saved_checkpoint_exposes_truncation_of_the_log() {
    let mut server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let c = server.client();
    for _ in 0..5 {
        c.evaluate("agent-1").tool("t").send().await.unwrap();
    }
    let saved = server.scratch("saved.checkpoint");
    let public = server.data_dir.join("keys").join("signing.pub");
    let (url, saved_s, public_s) = (
        server.url(),
        saved.to_str().unwrap().to_owned(),
        public.to_str().unwrap().to_owned(),
    );
    let out =
        crate::harness::arbiter(&["audit", "checkpoint", "--out", &saved_s, "--addr", &url]).await;
    assert_eq!(out.code(), Some(0), "{}", out.text());
    for _ in 0..3 {
        c.evaluate("agent-1").tool("t").send().await.unwrap();
    }
    let out = crate::harness::arbiter(&[
        "audit",
        "extends",
        &saved_s,
        "--public-key",
        &public_s,
        "--addr",
        &url,
    ])
    .await;
    assert_eq!(
        out.code(),
        Some(0),
        "an honest log extends its old checkpoint: {}",
        out.text()
    );

    // Someone with database access cuts the log back to 3 entries (and its tree).
    server.stop().await;
    if crate::harness::on_postgres() {
        server.psql(
            "ALTER TABLE audit_entries DISABLE TRIGGER USER; \
             ALTER TABLE merkle_nodes DISABLE TRIGGER USER; \
             ALTER TABLE checkpoints DISABLE TRIGGER USER; \
             DELETE FROM audit_entries WHERE seq > 3; \
             DELETE FROM merkle_nodes WHERE (idx + 1) * (1::bigint << level::int) > 3; \
             DELETE FROM checkpoints WHERE size > 3",
        );
    } else {
        // The embedded tree stores nodes in post-order: a tree of 3 leaves is the first 4.
        let script = format!(
            "import sqlite3; db = sqlite3.connect({:?}); \
             [db.execute('DROP TRIGGER ' + t) for t in ['audit_entries_no_delete', 'merkle_tree_no_delete', 'checkpoints_no_delete']]; \
             db.execute('DELETE FROM audit_entries WHERE seq > 3'); \
             db.execute('DELETE FROM merkle_tree WHERE pos >= 4'); \
             db.execute('DELETE FROM checkpoints WHERE size > 3'); db.commit()",
            server.db_path().to_str().unwrap()
        );
        let out = crate::harness::python(&["-c", &script]).await;
        assert_eq!(out.code(), Some(0), "{}", out.text());
    }
    // Cut back consistently (entries, tree and checkpoints), the log looks like an older
    // copy of itself: the checkpoint the server keeps outside the database catches it.
    let out = server.start_refused().await;
    assert!(out.text().contains("rollback"), "{}", out.text());
    // Moved aside, the server starts on the short log; a saved checkpoint still shows it.
    let kept = server.data_dir.join("audit-checkpoint.txt");
    std::fs::rename(&kept, server.scratch("kept-checkpoint.txt")).unwrap();
    server.start().await;
    let out = crate::harness::arbiter(&[
        "audit",
        "extends",
        &saved_s,
        "--public-key",
        &public_s,
        "--addr",
        &server.url(),
    ])
    .await;
    assert_eq!(out.code(), Some(1), "{}", out.text());
    assert!(
        out.text().contains("truncated") || out.text().contains("not an extension"),
        "{}",
        out.text()
    );
}

#[tokio::test]
async fn the_jsonl_mirror_equals_the_export_survives_the_database_and_verifies_independently() {
    let mut server = spawn_server(ServerOptions::new().policy(POLICY).mirror()).await;
    let c = server.client();
    for i in 0..9 {
        c.evaluate(format!("agent-{i}"))
            .tool("t")
            .send()
            .await
            .unwrap();
    }
    let export = server.scratch("export.jsonl");
    let out = crate::harness::arbiter(&[
        "audit",
        "export",
        "--out",
        export.to_str().unwrap(),
        "--addr",
        &server.url(),
    ])
    .await;
    assert_eq!(out.code(), Some(0), "{}", out.text());
    let mirror = server.mirror.clone().unwrap();
    assert_eq!(
        std::fs::read_to_string(&mirror).unwrap(),
        std::fs::read_to_string(&export).unwrap(),
        "every acknowledged entry is mirrored, in order"
    );

    // The database is lost; the mirror still proves the history on its own.
    server.stop().await;
    if crate::harness::on_postgres() {
        server.drop_database();
    } else {
        std::fs::remove_file(server.db_path()).unwrap();
    }
    let keys = server.data_dir.join("keys").join("hmac.json");
    let script = crate::harness::repo_root()
        .join("scripts")
        .join("verify_audit.py");
    let out = crate::harness::python(&[
        script.to_str().unwrap(),
        mirror.to_str().unwrap(),
        "--keys",
        keys.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.code(), Some(0), "{}", out.text());
    let out = crate::harness::arbiter(&[
        "audit",
        "verify",
        "--export",
        mirror.to_str().unwrap(),
        "--keys",
        keys.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.code(), Some(0), "{}", out.text());
}

/// What a downstream tool server does before acting: check the receipt it was handed
/// with `arbiter_client::proof`, offline, with only `signing.pub`.
#[tokio::test]
async fn the_rust_client_checks_a_receipt_offline_like_a_tool_server_would() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let d = server
        .client()
        .evaluate("agent-1")
        .tool("send_email")
        .receipt(true)
        .send()
        .await
        .unwrap();
    let receipt = d.receipt().expect("a receipt").clone();
    let public = std::fs::read_to_string(server.data_dir.join("keys").join("signing.pub")).unwrap();
    let (origin, keys) = arbiter_client::proof::read_public_key(&public).unwrap();

    let checked = arbiter_client::proof::verify_receipt(&receipt, &origin, &keys).unwrap();
    assert_eq!(checked.seq, d.audit_seq);
    assert_eq!(checked.entry["outcome"], "allow");
    assert_eq!(checked.entry["body"]["decision_id"], d.decision_id.as_str());
    assert_eq!(
        checked.entry["body"]["action_digest"],
        d.action_digest.as_str()
    );
    assert!(checked.head.size >= d.audit_seq);

    let mut edited = receipt.clone();
    edited.entry = edited.entry.replace("send_email", "wire_money");
    assert!(arbiter_client::proof::verify_receipt(&edited, &origin, &keys).is_err());
    let mut reordered = receipt.clone();
    reordered.inclusion_proof.reverse();
    reordered.inclusion_proof.push("00".repeat(32));
    assert!(arbiter_client::proof::verify_receipt(&reordered, &origin, &keys).is_err());
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[5; 32]).verifying_key();
    let err = arbiter_client::proof::verify_receipt(&receipt, &origin, &[stranger]).unwrap_err();
    assert!(err.contains("signature"), "{err}");
}

#[tokio::test]
async fn an_export_is_checked_against_a_saved_checkpoint_offline() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let c = server.client();
    for _ in 0..6 {
        c.evaluate("agent-1").tool("t").send().await.unwrap();
    }
    let url = server.url();
    let saved = server.scratch("saved.checkpoint").display().to_string();
    let out =
        crate::harness::arbiter(&["audit", "checkpoint", "--out", &saved, "--addr", &url]).await;
    assert_eq!(out.code(), Some(0), "{out}");
    c.evaluate("agent-1").tool("t").send().await.unwrap();
    let export = server.scratch("export.jsonl").display().to_string();
    let out = crate::harness::arbiter(&["audit", "export", "--out", &export, "--addr", &url]).await;
    assert_eq!(out.code(), Some(0), "{out}");
    let keys = server.keys_path().display().to_string();
    let public = server
        .data_dir
        .join("keys")
        .join("signing.pub")
        .display()
        .to_string();
    let verify = |file: String| {
        let (keys, saved, public) = (keys.clone(), saved.clone(), public.clone());
        async move {
            crate::harness::arbiter(&[
                "audit",
                "verify",
                "--export",
                &file,
                "--keys",
                &keys,
                "--checkpoint",
                &saved,
                "--public-key",
                &public,
            ])
            .await
        }
    };
    let out = verify(export.clone()).await;
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.text().contains("rebuild the signed checkpoint"),
        "{out}"
    );

    // A consistent chain cut back below the checkpoint: only the checkpoint exposes it.
    let text = std::fs::read_to_string(&export).unwrap();
    let short = server.scratch("short.jsonl");
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&short, lines[..3].join("\n") + "\n").unwrap();
    let out = verify(short.display().to_string()).await;
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.text().contains("truncated"), "{out}");
}
