//! Tamper evidence, one case per fault, each put to every verifier: the server's
//! `audit verify` (RPC and CLI), `arbiter audit extends SAVED` (the entries rebuilt
//! against a checkpoint saved before the tampering), the offline `arbiter audit verify
//! --export --checkpoint` and `scripts/verify_audit.py --checkpoint`. Raw edits are
//! refused by triggers; with the triggers dropped (an attacker with the database
//! file or a superuser), every edit, deletion, insertion, swap, truncation and
//! rollback is found, and each case says which seq each verifier names and why.
//! The server refuses to start on a log shorter than what it signed.

use arbiter_client::proto::VerifyAuditRequest;

use crate::harness::{
    arbiter, audit_head, python, repo_root, spawn_server, ServerOptions, TestServer,
};

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

if mode == "backup":
    # An online, consistent copy of the whole database (what a backup tool makes).
    dst = sqlite3.connect(args[0])
    con.backup(dst)
    dst.close()
    print("copied")
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
elif mode == "set":
    import json
    for seq, canonical, mac in json.load(open(args[0])):
        con.execute("UPDATE audit_entries SET canonical = ?, mac = ? WHERE seq = ?",
                    (canonical, mac, seq))
elif mode == "delete_newest":
    top = con.execute("SELECT max(seq) FROM audit_entries").fetchone()[0]
    con.execute("DELETE FROM audit_entries WHERE seq > ?", (top - int(args[0]),))
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

/// A running server whose log holds a policy load and ten decisions, and the
/// checkpoint an auditor saved from it before anyone tampered with it.
struct History {
    server: TestServer,
    /// The decisions' sequence numbers; decision `i` carries the context `note=entry-i`.
    seqs: Vec<u64>,
    /// `arbiter audit checkpoint --out`, taken at the end of the history.
    saved: String,
    /// Its size: the whole log at that point.
    size: u64,
}

async fn server_with_history() -> History {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let seqs = evaluate(&server, 0..10).await;
    let saved = server.scratch("saved-checkpoint.txt").display().to_string();
    let out = arbiter(&[
        "audit",
        "checkpoint",
        "--addr",
        &server.url(),
        "--out",
        &saved,
    ])
    .await;
    assert_eq!(out.code(), Some(0), "arbiter audit checkpoint:\n{out}");
    let size = audit_head(&server.client()).await;
    History {
        server,
        seqs,
        saved,
        size,
    }
}

async fn evaluate(server: &TestServer, notes: std::ops::Range<u32>) -> Vec<u64> {
    let client = server.client();
    let mut seqs = Vec::new();
    for i in notes {
        let d = client
            .evaluate("agent")
            .tool("lookup")
            .context("note", format!("entry-{i}"))
            .send()
            .await
            .unwrap();
        seqs.push(d.audit_seq);
    }
    seqs
}

async fn sql(server: &TestServer, args: &[&str]) -> crate::harness::CliOutput {
    if crate::harness::on_postgres() {
        return pg_sql(server, args);
    }
    let db = server.db_path().display().to_string();
    let mut argv = vec!["-c", SQL, db.as_str()];
    argv.extend_from_slice(args);
    python(&argv).await
}

/// The same modes as [`SQL`] on PostgreSQL, through `psql` as the cluster superuser
/// (an attacker with database access): `refuse` keeps the triggers, the other modes
/// disable them first. Values are test constants, quoted as dollar-quoted literals.
fn pg_sql(server: &TestServer, args: &[&str]) -> crate::harness::CliOutput {
    use std::os::unix::process::ExitStatusExt;
    let db = server.database.clone().expect("a PostgreSQL server");
    let run = |sql: &str| crate::harness::psql_try(&db, sql);
    let done = |code: i32, stdout: String| crate::harness::CliOutput {
        status: std::process::ExitStatus::from_raw(code << 8),
        stdout,
        stderr: String::new(),
    };
    let canonical = |seq: u64| {
        run(&format!(
            "SELECT canonical FROM audit_entries WHERE seq = {seq}"
        ))
    };
    let (mode, args) = args.split_first().expect("a mode");
    if *mode == "refuse" {
        let mut out = String::new();
        for sql in [
            "UPDATE audit_entries SET outcome = 'allow' WHERE seq = 2",
            "DELETE FROM audit_entries WHERE seq = 2",
        ] {
            match run(sql) {
                Err(e) => out.push_str(&format!("refused: {}\n", e.lines().next().unwrap_or(""))),
                Ok(_) => return done(3, format!("{out}ACCEPTED: {sql}\n")),
            }
        }
        return done(0, out);
    }
    let mut script = String::from("ALTER TABLE audit_entries DISABLE TRIGGER USER; ");
    let n = |i: usize| args[i].parse::<u64>().expect("a seq");
    match *mode {
        "edit" => {
            let (seq, old, new) = (n(0), args[1], args[2]);
            let c = canonical(seq).expect("read the entry");
            if !c.contains(old) {
                return done(1, format!("{old:?} is not in entry {seq}: {c}"));
            }
            script.push_str(&format!(
                "UPDATE audit_entries SET canonical = replace(canonical, $t${old}$t$, $t${new}$t$) WHERE seq = {seq}"
            ));
        }
        "delete" => script.push_str(&format!("DELETE FROM audit_entries WHERE seq = {}", n(0))),
        "set" => {
            let rows: Vec<(u64, String, String)> =
                serde_json::from_str(&std::fs::read_to_string(args[0]).unwrap()).unwrap();
            for (seq, canonical, mac) in rows {
                script.push_str(&format!(
                    "UPDATE audit_entries SET canonical = $t${canonical}$t$, mac = '{mac}' WHERE seq = {seq}; "
                ));
            }
        }
        "delete_newest" => script.push_str(&format!(
            "DELETE FROM audit_entries WHERE seq > (SELECT max(seq) - {} FROM audit_entries)",
            n(0)
        )),
        "swap" => {
            let (a, b) = (n(0), n(1));
            script.push_str(&format!(
                "UPDATE audit_entries x SET canonical = y.canonical, mac = y.mac FROM audit_entries y \
                 WHERE (x.seq = {a} AND y.seq = {b}) OR (x.seq = {b} AND y.seq = {a})"
            ));
        }
        "insert" => {
            // As the SQLite mode: move every later entry up by one, renumbering its
            // hashed seq, and put a copy of entry k-1 at k.
            let k = n(0);
            let top: u64 = run("SELECT max(seq) FROM audit_entries")
                .unwrap()
                .parse()
                .unwrap();
            for seq in (k..=top).rev() {
                script.push_str(&format!(
                    "UPDATE audit_entries SET seq = {}, canonical = replace(canonical, '\"seq\":{seq},', '\"seq\":{},') WHERE seq = {seq}; ",
                    seq + 1,
                    seq + 1
                ));
            }
            script.push_str(&format!(
                "INSERT INTO audit_entries SELECT {k}, ts_ms, kind, agent_id, session_id, outcome, key_id, \
                 replace(canonical, '\"seq\":{},', '\"seq\":{k},'), mac FROM audit_entries WHERE seq = {}",
                k - 1,
                k - 1
            ));
        }
        other => return done(2, format!("unknown mode {other}")),
    }
    match run(&script) {
        Ok(_) => done(0, "tampered\n".into()),
        Err(e) => done(1, e),
    }
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

fn public_key(server: &TestServer) -> String {
    server
        .data_dir
        .join("keys")
        .join("signing.pub")
        .display()
        .to_string()
}

/// What each verifier reports for one fault: the seq it names and the fault's name.
///
/// They differ for reasons of what each can see. The server reads each row's stored
/// seq and the chain, so it names the entry. `extends` holds only the public key: it
/// rebuilds the tree from the entries and compares signed roots, so a rewrite is a
/// `tree_mismatch` at the saved checkpoint's size (it has no way to tell which leaf
/// changed without trusting the server's nodes), and it names the first missing entry
/// of a truncation. The offline verifiers see only the hashed bytes (a swapped row is
/// a `gap` to them) and report `truncated` at the checkpoint's size (docs/audit-format.md §7).
struct Found {
    server: (u64, &'static str),
    extends: (u64, &'static str),
    offline: (u64, &'static str),
    python: (u64, &'static str),
}

fn expect_fail(out: &crate::harness::CliOutput, what: &str, (seq, fault): (u64, &str)) {
    let expected = format!("FAIL: seq {seq}: {fault}");
    assert_eq!(out.code(), Some(1), "{what}:\n{out}");
    assert!(
        out.text().contains(&expected),
        "{what}: expected {expected:?}:\n{out}"
    );
}

/// Puts the log of `h` to every verifier and checks what each names.
async fn assert_found(h: &History, found: Found) {
    let server = &h.server;
    let report = server
        .client()
        .verify_audit(VerifyAuditRequest::default())
        .await
        .unwrap();
    assert!(!report.ok, "{report:?}");
    assert_eq!(report.first_bad_seq, found.server.0, "{report:?}");

    let out = arbiter(&["audit", "verify", "--addr", &server.url()]).await;
    expect_fail(&out, "arbiter audit verify", found.server);

    let public = public_key(server);
    let out = arbiter(&[
        "audit",
        "extends",
        &h.saved,
        "--public-key",
        &public,
        "--addr",
        &server.url(),
    ])
    .await;
    expect_fail(&out, "arbiter audit extends", found.extends);

    let file = export(server).await;
    let keys = server.keys_path().display().to_string();
    let out = arbiter(&[
        "audit",
        "verify",
        "--export",
        &file,
        "--keys",
        &keys,
        "--checkpoint",
        &h.saved,
        "--public-key",
        &public,
    ])
    .await;
    expect_fail(&out, "offline arbiter audit verify", found.offline);

    let script = repo_root().join("scripts").join("verify_audit.py");
    let out = python(&[
        &script.display().to_string(),
        &file,
        "--keys",
        &keys,
        "--checkpoint",
        &h.saved,
    ])
    .await;
    expect_fail(&out, "verify_audit.py", found.python);
}

/// Every verifier accepts the log of `h`, checked against `saved`.
async fn assert_passes(server: &TestServer, saved: &str) {
    let out = arbiter(&["audit", "verify", "--addr", &server.url()]).await;
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.stdout.contains("rebuild the signed checkpoint"),
        "{out}"
    );
    let public = public_key(server);
    let out = arbiter(&[
        "audit",
        "extends",
        saved,
        "--public-key",
        &public,
        "--addr",
        &server.url(),
    ])
    .await;
    assert_eq!(out.code(), Some(0), "{out}");
    let file = export(server).await;
    let keys = server.keys_path().display().to_string();
    let out = arbiter(&[
        "audit",
        "verify",
        "--export",
        &file,
        "--keys",
        &keys,
        "--checkpoint",
        saved,
        "--public-key",
        &public,
    ])
    .await;
    assert_eq!(out.code(), Some(0), "{out}");
    let script = repo_root().join("scripts").join("verify_audit.py");
    let out = python(&[
        &script.display().to_string(),
        &file,
        "--keys",
        &keys,
        "--checkpoint",
        saved,
    ])
    .await;
    assert_eq!(out.code(), Some(0), "{out}");
}

#[tokio::test]
async fn the_database_refuses_update_and_delete_on_audit_entries() {
    let h = server_with_history().await;
    let out = sql(&h.server, &["refuse"]).await;
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.stdout.matches("append-only").count(), 2, "{out}");
    assert_passes(&h.server, &h.saved).await;
}

#[tokio::test]
async fn an_untampered_log_passes_every_verifier_and_restarts() {
    let mut h = server_with_history().await;
    assert_passes(&h.server, &h.saved).await;
    let file = export(&h.server).await;
    let lines = std::fs::read_to_string(&file).unwrap().lines().count() as u64;
    assert_eq!(lines, h.size, "the export holds the whole log");
    h.server.restart().await;
    assert_passes(&h.server, &h.saved).await;
}

#[tokio::test]
async fn an_edited_entry_is_found_at_its_sequence_number() {
    let h = server_with_history().await;
    let target = h.seqs[4];
    tamper(
        &h.server,
        &["edit", &target.to_string(), "entry-4", "entry-X"],
    )
    .await;
    let found = Found {
        server: (target, "mac_mismatch"),
        extends: (h.size, "tree_mismatch"),
        offline: (target, "mac_mismatch"),
        python: (target, "mac_mismatch"),
    };
    assert_found(&h, found).await;
}

#[tokio::test]
async fn deleting_the_newest_entries_is_found_as_truncation_by_every_verifier() {
    let h = server_with_history().await;
    tamper(&h.server, &["delete_newest", "2"]).await;
    let first_missing = h.size - 1;
    let found = Found {
        server: (first_missing, "truncated"),
        extends: (first_missing, "truncated"),
        offline: (h.size, "truncated"),
        python: (h.size, "truncated"),
    };
    assert_found(&h, found).await;
}

#[tokio::test]
async fn a_deleted_oldest_entry_is_found_at_seq_1_and_stops_a_restart() {
    let h = server_with_history().await;
    tamper(&h.server, &["delete", "1"]).await;
    let found = Found {
        server: (1, "gap"),
        extends: (1, "gap"),
        offline: (1, "gap"),
        // The Python verifier reports the first line it cannot place, as §7 of
        // docs/audit-format.md says: "export starts at seq 2" from GENESIS.
        python: (2, "seq_mismatch"),
    };
    assert_found(&h, found).await;
    refused_at_start(h, "gap").await;
}

/// Stops the server of `h` and checks that it refuses to start again, naming `fault`.
async fn refused_at_start(mut h: History, fault: &str) {
    h.server.stop().await;
    let out = h.server.start_refused().await;
    assert!(out.text().contains(fault), "expected {fault:?}:\n{out}");
}

#[tokio::test]
async fn a_deleted_entry_in_the_middle_is_found_as_a_gap_and_stops_a_restart() {
    let h = server_with_history().await;
    let target = h.seqs[5];
    tamper(&h.server, &["delete", &target.to_string()]).await;
    let found = Found {
        server: (target, "gap"),
        extends: (target, "gap"),
        offline: (target, "gap"),
        python: (target, "gap"),
    };
    assert_found(&h, found).await;
    refused_at_start(h, "gap").await;
}

#[tokio::test]
async fn an_inserted_entry_is_found_at_its_sequence_number_and_stops_a_restart() {
    let mut h = server_with_history().await;
    let target = h.seqs[6];
    tamper(&h.server, &["insert", &target.to_string()]).await;
    let found = Found {
        server: (target, "mac_mismatch"),
        extends: (h.size, "tree_mismatch"),
        offline: (target, "mac_mismatch"),
        python: (target, "mac_mismatch"),
    };
    assert_found(&h, found).await;
    // The log now has one entry more than the server ever signed.
    h.server.stop().await;
    let out = h.server.start_refused().await;
    let why = format!("newest entry is seq {}", h.size + 1);
    assert!(out.text().contains(&why), "{out}");
    assert!(out.text().contains("tree_mismatch"), "{out}");
}

#[tokio::test]
async fn two_swapped_entries_are_found_at_the_first_of_them() {
    let h = server_with_history().await;
    let (first, second) = (h.seqs[3], h.seqs[7]);
    tamper(
        &h.server,
        &["swap", &first.to_string(), &second.to_string()],
    )
    .await;
    // A swapped row sits at a position whose stored seq says one number and whose
    // hashed bytes another: the server reads the row's seq, the others only the bytes.
    let found = Found {
        server: (first, "seq_mismatch"),
        extends: (first, "gap"),
        offline: (first, "gap"),
        python: (first, "gap"),
    };
    assert_found(&h, found).await;
}

/// A forger who holds the HMAC key ring edits an entry and recomputes every later MAC:
/// the chain is valid again, so chain-only verification (the offline verifiers without
/// `--checkpoint`) cannot see it. The signed tree can: the server names the entry
/// whose leaf differs from the stored tree; the checkpoint holders name the size.
#[tokio::test]
async fn an_entry_rewritten_with_valid_macs_is_found_by_the_signed_tree() {
    let h = server_with_history().await;
    let target = h.seqs[4];
    let keys = std::fs::read_to_string(h.server.keys_path()).unwrap();
    let ring = arbiter_server::keys::parse(&keys, "hmac.json").unwrap();
    let lines = std::fs::read_to_string(export(&h.server).await).unwrap();
    let mut prev = *arbiter_server::audit::GENESIS;
    let mut rows = Vec::new();
    for line in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let seq = v["entry"]["seq"].as_u64().unwrap();
        let entry = line
            .strip_prefix("{\"entry\":")
            .and_then(|r| r.rsplit_once(",\"mac\":\""))
            .unwrap()
            .0;
        let canonical = if seq == target {
            entry.replace("entry-4", "entry-Y")
        } else {
            entry.to_owned()
        };
        let key = ring.get(v["entry"]["key_id"].as_str().unwrap()).unwrap();
        let mac = key.mac(&prev, canonical.as_bytes());
        prev = mac;
        if seq >= target {
            rows.push((seq, canonical, hex::encode(mac)));
        }
    }
    let file = h.server.scratch("rewritten.json");
    std::fs::write(&file, serde_json::to_string(&rows).unwrap()).unwrap();
    tamper(&h.server, &["set", &file.display().to_string()]).await;

    // Chain-only verification passes: the forger had the keys.
    let export = export(&h.server).await;
    let keys = h.server.keys_path().display().to_string();
    let out = arbiter(&["audit", "verify", "--export", &export, "--keys", &keys]).await;
    assert_eq!(out.code(), Some(0), "{out}");
    let found = Found {
        server: (target, "tree_mismatch"),
        extends: (h.size, "tree_mismatch"),
        offline: (h.size, "tree_mismatch"),
        python: (h.size, "tree_mismatch"),
    };
    assert_found(&h, found).await;
}

/// The issue-13 scenario: the two newest rows deleted while the server is stopped.
/// Before, the server started, sealed new entries 7 and 8 again and every server-side
/// check said OK; now it refuses, naming both numbers, the fault and what to do.
#[tokio::test]
async fn a_truncated_log_stops_the_server_at_start_and_no_sequence_number_is_reused() {
    let mut h = server_with_history().await;
    h.server.stop().await;
    tamper(&h.server, &["delete_newest", "2"]).await;
    let out = h.server.start_refused().await;
    let text = out.text();
    for needed in [
        "truncated".to_owned(),
        format!("newest entry is seq {}", h.size - 2),
        format!("checkpoint of size {}", h.size),
        "backup".to_owned(),
        "arbiter audit verify".to_owned(),
    ] {
        assert!(text.contains(&needed), "{needed:?} missing:\n{out}");
    }
    // Refused again on the next try: nothing was written meanwhile.
    h.server.start_refused().await;
}

/// The database replaced by an older copy of itself: every table agrees with every
/// other, so only a checkpoint kept outside the database shows it. The server keeps
/// one (`<data dir>/audit-checkpoint.txt`) and refuses the older copy at start.
/// Verifiers run against the copy see nothing on their own (it is a whole, signed
/// log); against a checkpoint saved after the copy was made they see a truncation.
#[tokio::test]
async fn a_database_rolled_back_to_an_older_copy_is_refused_at_start() {
    let mut h = server_with_history().await;
    let copy = h.server.scratch("older.db");
    let older = if crate::harness::on_postgres() {
        h.server.pg_dump()
    } else {
        tamper(&h.server, &["backup", &copy.display().to_string()]).await;
        Vec::new()
    };
    evaluate(&h.server, 10..13).await;
    let later = h
        .server
        .scratch("later-checkpoint.txt")
        .display()
        .to_string();
    let out = arbiter(&[
        "audit",
        "checkpoint",
        "--addr",
        &h.server.url(),
        "--out",
        &later,
    ])
    .await;
    assert_eq!(out.code(), Some(0), "{out}");
    let later_size = audit_head(&h.server.client()).await;
    h.server.stop().await;
    if crate::harness::on_postgres() {
        h.server.pg_restore(&older);
    } else {
        let db = h.server.db_path();
        for suffix in ["db-wal", "db-shm"] {
            let _ = std::fs::remove_file(db.with_extension(suffix));
        }
        std::fs::copy(&copy, &db).unwrap();
    }
    let out = h.server.start_refused().await;
    let text = out.text();
    for needed in [
        "rollback".to_owned(),
        format!("signed at size {later_size}"),
        format!("holds a log of {} entries", h.size),
        "audit-checkpoint.txt aside".to_owned(),
    ] {
        assert!(text.contains(&needed), "{needed:?} missing:\n{out}");
    }

    // An operator who accepts the older copy moves the kept checkpoint aside. The copy
    // is a whole signed log of its own: the checks against its own checkpoints pass,
    // and only a checkpoint saved after the copy shows what is missing.
    let kept = h.server.data_dir.join("audit-checkpoint.txt");
    std::fs::rename(&kept, h.server.scratch("evidence-checkpoint.txt")).unwrap();
    h.server.start().await;
    assert_passes(&h.server, &h.saved).await;
    let against_later = History {
        saved: later,
        size: later_size,
        seqs: Vec::new(),
        server: h.server,
    };
    let public = public_key(&against_later.server);
    let out = arbiter(&[
        "audit",
        "extends",
        &against_later.saved,
        "--public-key",
        &public,
        "--addr",
        &against_later.server.url(),
    ])
    .await;
    // The restarted copy appended its own entries (policy load) after seq `h.size`,
    // so the later checkpoint's entries are not missing but different.
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.text().contains("truncated") || out.text().contains("tree_mismatch"),
        "{out}"
    );
}

/// The log cut back under a running server. SQLite has one writer, which seals after
/// the head it holds in memory: the next entry gets the next new number, never a
/// covered one, `audit verify` reports the hole and a restart is refused. PostgreSQL replicas read the head
/// under the sequencer lock: a replica that finds it below what it sealed fails every
/// commit from then on and stays NOT_SERVING, and a replica starting on that database
/// refuses to start.
#[tokio::test]
async fn a_log_cut_back_under_a_running_server_never_reuses_a_sequence_number() {
    let mut h = server_with_history().await;
    tamper(&h.server, &["delete_newest", "2"]).await;
    let client = h.server.client();
    if !crate::harness::on_postgres() {
        let next = evaluate(&h.server, 20..21).await[0];
        assert_eq!(next, h.size + 1, "no sequence number is handed out twice");
        let out = arbiter(&["audit", "verify", "--addr", &h.server.url()]).await;
        expect_fail(&out, "arbiter audit verify", (h.size - 1, "gap"));
        refused_at_start(h, "gap").await;
        return;
    }
    let err = client
        .evaluate("agent")
        .tool("lookup")
        .send()
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("Unavailable"), "{err:?}");
    let why = format!("went back from seq {} to seq {}", h.size, h.size - 2);
    assert!(h.server.log().contains(&why), "{}", h.server.log_tail());
    crate::harness::eventually(
        "health NOT_SERVING",
        std::time::Duration::from_secs(10),
        || async { (!crate::harness::serving(&h.server).await).then_some(()) },
    )
    .await;
    // It does not come back by itself: the database answers, but the log is short.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(!crate::harness::serving(&h.server).await);
    h.server.kill9();
    let out = h.server.start_refused().await;
    assert!(out.text().contains("truncated"), "{out}");
}
