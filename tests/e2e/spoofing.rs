//! Issue 14, defect 5: text an agent or a caller chose (arguments, URLs, reasons,
//! summaries) cannot rewrite the terminal of the person reading it, nor forge a row of a
//! listing, in any CLI output (listings, JSON, reports) or in the server's log. Names
//! are refused outright (tests/cases/validation); this is the free text that is kept.

use arbiter_client::{proto as pb, DecisionOutcome};

use crate::harness::{arbiter, spawn_server, CliOutput, ServerOptions};

const POLICY: &str = r#"
version: 1
defaults: {approval_ttl: 1h}
actions:
  - match: {tool: wire}
    approval: always
agents:
  - id: "bot*"
    tools: {allow: ["*"]}
    apis: {allow: ["* https://**"]}
"#;

/// What a spoof uses: a clear screen and cursor move, a forged row, a bidi override, a
/// C1 CSI (a terminal escape without ESC), a line separator, a carriage return, a
/// zero-width space.
const HOSTILE: &[&str] = &[
    "\u{1b}[2J\u{1b}[1;1Hapr_fake\tgranted",
    "ok\napr_forged\tgranted by alice",
    "invoice\u{202e}fdp.exe",
    "\u{9b}31mred",
    "a\u{2028}b",
    "shown\roverwritten",
    "send\u{200b}money",
];

const RAW: &[char] = &[
    '\u{1b}', '\r', '\u{9b}', '\u{202e}', '\u{2028}', '\u{200b}', '\u{85}',
];

fn assert_no_raw(what: &str, text: &str) {
    if let Some(c) = text.chars().find(|c| RAW.contains(c)) {
        panic!("{what}: raw U+{:04X} reaches the reader:\n{text}", c as u32);
    }
}

fn assert_ok(what: &str, out: &CliOutput) {
    assert_eq!(out.code(), Some(0), "{what}: {out}");
    assert_no_raw(what, &out.stdout);
    assert_no_raw(what, &out.stderr);
}

#[tokio::test]
async fn what_others_chose_is_escaped_wherever_a_person_reads_it() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let c = server.client();
    let url = server.url();
    let mut ids = Vec::new();
    for (i, text) in HOSTILE.iter().enumerate() {
        let d = c
            .evaluate("bot-1")
            .tool("wire")
            .arguments(serde_json::json!({"memo": text, "n": i}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            d.outcome,
            DecisionOutcome::PendingApproval,
            "{:?}",
            d.reasons
        );
        ids.push(d.approval_id.unwrap());
    }
    // A URL is a name, not free text: those bytes are refused, naming the field.
    for text in HOSTILE {
        let e = c
            .evaluate("bot-1")
            .api("GET", format!("https://api.example.com/x?q={text}"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{text:?}: {e}");
        assert!(e.to_string().contains("action.api.url"), "{e}");
    }

    // Listings: one row per approval, whatever the summaries hold.
    let out = arbiter(&["approvals", "list", "--state", "pending", "--addr", &url]).await;
    assert_ok("approvals list", &out);
    assert_eq!(out.stdout.lines().count(), HOSTILE.len(), "{out}");
    assert!(
        out.stdout.contains("\\u001b[2J"),
        "escaped, not dropped: {out}"
    );
    for id in &ids {
        let out = arbiter(&["approvals", "show", id, "--addr", &url]).await;
        assert_ok("approvals show", &out);
    }

    // Reasons people type are free text too: a deny reason, a halt reason.
    for (id, reason) in ids.iter().zip(HOSTILE) {
        let out = arbiter(&["approvals", "deny", id, "--reason", reason, "--addr", &url]).await;
        assert_ok("approvals deny", &out);
    }
    let out = arbiter(&["approvals", "list", "--addr", &url]).await;
    assert_ok("approvals list (decided)", &out);
    assert_eq!(out.stdout.lines().count(), HOSTILE.len(), "{out}");
    let out = arbiter(&[
        "halt", "--agent", "bot-2", "--mode", "halt_all", "--reason", HOSTILE[1], "--addr", &url,
    ])
    .await;
    assert_ok("halt", &out);
    let out = arbiter(&["halts", "--addr", &url]).await;
    assert_ok("halts", &out);
    assert_eq!(out.stdout.lines().count(), 1, "{out}");

    // JSON lines stay the same values, only safe to show.
    let out = arbiter(&["audit", "query", "--limit", "1000", "--addr", &url]).await;
    assert_ok("audit query", &out);
    let shown: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let stored = c
        .query_audit(pb::QueryAuditRequest {
            filter: Some(pb::AuditFilter::default()),
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .unwrap();
    let mut stored: Vec<serde_json::Value> = stored
        .entries
        .iter()
        .map(|e| serde_json::from_str(&e.canonical).unwrap())
        .collect();
    let mut shown_sorted = shown.clone();
    let key = |v: &serde_json::Value| v["seq"].as_u64();
    stored.sort_by_key(key);
    shown_sorted.sort_by_key(key);
    assert_eq!(
        shown_sorted, stored,
        "the escaped lines parse to the stored entries"
    );
    assert!(
        stored.iter().any(|v| v.to_string().contains('\u{202e}')),
        "the log keeps what was sent"
    );
    let out = arbiter(&[
        "audit", "tail", "--from", "1", "--limit", "5", "--addr", &url,
    ])
    .await;
    assert_ok("audit tail", &out);

    // Reports an auditor reads.
    for format in [
        &["--format", "article12"][..],
        &["--format", "article12", "--json"],
    ] {
        let mut args = vec!["audit", "report"];
        args.extend_from_slice(format);
        args.extend_from_slice(&["--addr", &url]);
        let out = arbiter(&args).await;
        assert_no_raw("audit report", &out.stdout);
    }

    // The server's own log.
    assert_no_raw("server log", &server.log());
}
