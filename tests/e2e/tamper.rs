//! Tamper evidence: raw edits to the SQLite file are refused by triggers, and once
//! the triggers are dropped, every edit, deletion or swap is found at the right
//! sequence number by `arbiter audit verify` and by the stdlib Python verifier over
//! an export.

use arbiter_client::proto::VerifyAuditRequest;

use crate::harness::{arbiter, python, repo_root, spawn_server, ServerOptions, TestServer};

const POLICY: &str = r#"
version: 1
agents:
  - id: "*"
    tools: {allow: [lookup]}
"#;

/// Raw SQLite access through Python's stdlib, as an attacker with the file would have.
/// `refuse` tries an UPDATE and a DELETE with the triggers in place; the other modes
/// drop the triggers first.
const SQL: &str = r#"
import sqlite3, sys
db, mode, *args = sys.argv[1:]
con = sqlite3.connect(db, isolation_level=None)

def row(seq):
    r = con.execute("SELECT canonical, mac FROM audit_entries WHERE seq = ?", (seq,)).fetchone()
    if r is None:
        sys.exit(f"no audit entry {seq}")
    return r

if mode == "refuse":
    for sql in ("UPDATE audit_entries SET outcome = 'allow' WHERE seq = 2",
                "DELETE FROM audit_entries WHERE seq = 2"):
        try:
            con.execute(sql)
        except sqlite3.DatabaseError as e:
            print(f"refused: {e}")
        else:
            print(f"ACCEPTED: {sql}")
            sys.exit(3)
    sys.exit(0)

con.execute("DROP TRIGGER audit_entries_no_update")
con.execute("DROP TRIGGER audit_entries_no_delete")
if mode == "edit":
    seq, old, new = int(args[0]), args[1], args[2]
    canonical, _ = row(seq)
    if old not in canonical:
        sys.exit(f"{old!r} is not in entry {seq}: {canonical}")
    con.execute("UPDATE audit_entries SET canonical = ? WHERE seq = ?",
                (canonical.replace(old, new), seq))
elif mode == "delete":
    row(int(args[0]))
    con.execute("DELETE FROM audit_entries WHERE seq = ?", (int(args[0]),))
elif mode == "swap":
    a, b = int(args[0]), int(args[1])
    (ca, ma), (cb, mb) = row(a), row(b)
    con.execute("UPDATE audit_entries SET canonical = ?, mac = ? WHERE seq = ?", (cb, mb, a))
    con.execute("UPDATE audit_entries SET canonical = ?, mac = ? WHERE seq = ?", (ca, ma, b))
elif mode == "insert":
    # Forge an entry at seq k: move every later entry up by one (renumbering its
    # hashed seq too, as a careful forger would) and put a copy of entry k-1 there.
    k = int(args[0])
    canonical, mac = row(k - 1)
    top = con.execute("SELECT max(seq) FROM audit_entries").fetchone()[0]
    for seq in range(top, k - 1, -1):
        c, _ = row(seq)
        con.execute("UPDATE audit_entries SET seq = ?, canonical = ? WHERE seq = ?",
                    (seq + 1, c.replace(f'"seq":{seq},', f'"seq":{seq + 1},'), seq))
    con.execute("INSERT INTO audit_entries SELECT ?, ts_ms, kind, agent_id, session_id, outcome, key_id, ?, mac FROM audit_entries WHERE seq = ?",
                (k, canonical.replace(f'"seq":{k - 1},', f'"seq":{k},'), k - 1))
else:
    sys.exit(f"unknown mode {mode}")
con.close()
print("tampered")
"#;

/// A stopped server whose log holds a policy load and ten decisions; returns the
/// decisions' sequence numbers. Decision `i` carries the context `note=entry-i`.
async fn server_with_history() -> (TestServer, Vec<u64>) {
    let mut server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let client = server.client();
    let mut seqs = Vec::new();
    for i in 0..10 {
        let d = client
            .evaluate("agent")
            .tool("lookup")
            .context("note", format!("entry-{i}"))
            .send()
            .await
            .unwrap();
        seqs.push(d.audit_seq);
    }
    server.stop().await;
    (server, seqs)
}

async fn sql(server: &TestServer, args: &[&str]) -> crate::harness::CliOutput {
    let db = server.db_path().display().to_string();
    let mut argv = vec!["-c", SQL, db.as_str()];
    argv.extend_from_slice(args);
    python(&argv).await
}

async fn tamper(server: &TestServer, args: &[&str]) {
    let out = sql(server, args).await;
    assert_eq!(
        out.code(),
        Some(0),
        "tampering with {args:?} failed:\n{out}"
    );
}

/// Exports the log with the CLI; returns the export file.
async fn export(server: &TestServer) -> String {
    let file = server.scratch("export.jsonl").display().to_string();
    let out = arbiter(&["audit", "export", "--addr", &server.url(), "--out", &file]).await;
    assert_eq!(out.code(), Some(0), "arbiter audit export:\n{out}");
    file
}

/// Checks that every verifier names `seq` as the first bad entry: the server (RPC and
/// `arbiter audit verify`), the offline Rust verifier and `scripts/verify_audit.py`.
///
/// `faults` are the fault names the server, the offline Rust verifier and the Python
/// verifier report. (A swapped entry sits at a position whose stored row says one seq
/// and whose hashed bytes say another: the server reads the row's seq, the offline
/// verifiers only see the bytes, so they call it a gap.)
async fn assert_found_at(server: &TestServer, seq: u64, faults: [&str; 3]) {
    let [server_fault, offline_fault, python_fault] = faults;
    let report = server
        .client()
        .verify_audit(VerifyAuditRequest::default())
        .await
        .unwrap();
    assert!(!report.ok, "{report:?}");
    assert_eq!(report.first_bad_seq, seq, "{report:?}");

    let expected = format!("FAIL: seq {seq}: {server_fault}");
    let out = arbiter(&["audit", "verify", "--addr", &server.url()]).await;
    assert_eq!(out.code(), Some(1), "arbiter audit verify:\n{out}");
    assert!(
        out.text().contains(&expected),
        "expected {expected:?}:\n{out}"
    );

    let file = export(server).await;
    let keys = server.keys_path().display().to_string();
    let out = arbiter(&["audit", "verify", "--export", &file, "--keys", &keys]).await;
    assert_eq!(out.code(), Some(1), "offline arbiter audit verify:\n{out}");
    let expected = format!("FAIL: seq {seq}: {offline_fault}");
    assert!(
        out.text().contains(&expected),
        "expected {expected:?}:\n{out}"
    );

    let script = repo_root().join("scripts").join("verify_audit.py");
    let out = python(&[&script.display().to_string(), &file, "--keys", &keys]).await;
    assert_eq!(out.code(), Some(1), "verify_audit.py:\n{out}");
    let expected = format!("FAIL: seq {seq}: {python_fault}");
    assert!(
        out.text().contains(&expected),
        "expected {expected:?}:\n{out}"
    );
}

#[tokio::test]
async fn the_database_refuses_update_and_delete_on_audit_entries() {
    let (mut server, _) = server_with_history().await;
    let out = sql(&server, &["refuse"]).await;
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.stdout.matches("append-only").count(), 2, "{out}");

    server.start().await;
    let report = server
        .client()
        .verify_audit(VerifyAuditRequest::default())
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
}

#[tokio::test]
async fn an_untampered_export_passes_every_verifier() {
    let (mut server, seqs) = server_with_history().await;
    server.start().await;
    let out = arbiter(&["audit", "verify", "--addr", &server.url()]).await;
    assert_eq!(out.code(), Some(0), "{out}");

    let file = export(&server).await;
    let lines = std::fs::read_to_string(&file).unwrap().lines().count() as u64;
    assert!(
        lines > *seqs.last().unwrap(),
        "the export holds the whole log"
    );
    let keys = server.keys_path().display().to_string();
    let out = arbiter(&["audit", "verify", "--export", &file, "--keys", &keys]).await;
    assert_eq!(out.code(), Some(0), "{out}");

    let script = repo_root().join("scripts").join("verify_audit.py");
    let out = python(&[&script.display().to_string(), &file, "--keys", &keys]).await;
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.stdout
            .starts_with(&format!("OK: {lines} entries verified")),
        "{out}"
    );
}

#[tokio::test]
async fn an_edited_entry_is_found_at_its_sequence_number() {
    let (mut server, seqs) = server_with_history().await;
    let target = seqs[4];
    tamper(
        &server,
        &["edit", &target.to_string(), "entry-4", "entry-X"],
    )
    .await;
    server.start().await;
    assert_found_at(&server, target, ["mac_mismatch"; 3]).await;
}

#[tokio::test]
async fn a_deleted_entry_is_found_as_a_gap_at_its_sequence_number() {
    let (mut server, seqs) = server_with_history().await;
    let target = seqs[5];
    tamper(&server, &["delete", &target.to_string()]).await;
    server.start().await;
    assert_found_at(&server, target, ["gap"; 3]).await;
}

#[tokio::test]
async fn an_inserted_entry_is_found_at_its_sequence_number() {
    let (mut server, seqs) = server_with_history().await;
    let target = seqs[6];
    tamper(&server, &["insert", &target.to_string()]).await;
    server.start().await;
    assert_found_at(&server, target, ["mac_mismatch"; 3]).await;
}

#[tokio::test]
async fn two_swapped_entries_are_found_at_the_first_of_them() {
    let (mut server, seqs) = server_with_history().await;
    let (first, second) = (seqs[3], seqs[7]);
    tamper(&server, &["swap", &first.to_string(), &second.to_string()]).await;
    server.start().await;
    assert_found_at(&server, first, ["seq_mismatch", "gap", "gap"]).await;
}
