//! `arbiter audit report --format article12`: counts what happened in a period and
//! states whether the log behind it verifies (tree, signature, chain).

use arbiter_client::proto as pb;

use crate::harness::{arbiter, python, spawn_server, ServerOptions, TestServer};

const POLICY: &str = r#"
version: 1
actions:
  - match: {tool: "refund_*"}
    approval: always
agents:
  - id: "bot*"
    tools: {allow: ["*"], deny: ["rm_*"]}
"#;

async fn report(server: &TestServer, extra: &[&str]) -> (crate::harness::CliOutput, String) {
    let out_file = server.scratch("report.out").display().to_string();
    let keys = server.keys_path().display().to_string();
    let public = server
        .data_dir
        .join("keys")
        .join("signing.pub")
        .display()
        .to_string();
    let url = server.url();
    let mut args = vec![
        "audit",
        "report",
        "--format",
        "article12",
        "--keys",
        &keys,
        "--public-key",
        &public,
        "--addr",
        &url,
        "--out",
        &out_file,
    ];
    args.extend_from_slice(extra);
    let out = arbiter(&args).await;
    (out, std::fs::read_to_string(&out_file).unwrap_or_default())
}

#[tokio::test]
async fn the_article12_report_counts_the_period_and_vouches_for_the_log() {
    let mut server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let c = server.client();
    for _ in 0..3 {
        assert!(c
            .evaluate("bot-1")
            .tool("read")
            .send()
            .await
            .unwrap()
            .allowed());
    }
    assert!(c
        .evaluate("bot-2")
        .tool("rm_rf")
        .send()
        .await
        .unwrap()
        .is_denied());
    let pending = c
        .evaluate("bot-1")
        .tool("refund_order")
        .send()
        .await
        .unwrap();
    c.approve(pb::ApproveRequest {
        approval_id: pending.approval_id.clone().expect("an approval id"),
        grant: true,
        reason: "customer is owed".into(),
    })
    .await
    .unwrap();
    let target = Some(pb::HaltTarget {
        scope: pb::HaltScope::Agent as i32,
        agent_id: "bot-2".into(),
        session_id: String::new(),
    });
    c.halt(pb::HaltRequest {
        target: target.clone(),
        mode: pb::HaltMode::HaltAll as i32,
        reason: "drill".into(),
    })
    .await
    .unwrap();
    c.resume(pb::ResumeRequest {
        target,
        reason: "drill over".into(),
    })
    .await
    .unwrap();

    let (out, json) = report(&server, &["--json"]).await;
    assert_eq!(out.code(), Some(0), "{out}");
    let r: serde_json::Value = serde_json::from_str(&json).unwrap();
    let i = &r["integrity"];
    assert_eq!(i["tree_ok"], true, "{i}");
    assert_eq!(i["signature"], "verified", "{i}");
    assert!(i["chain"].as_str().unwrap().contains("offline"), "{i}");
    let t = &r["tally"];
    assert_eq!(t["decisions"]["allow"], 3);
    assert_eq!(t["decisions"]["deny"], 1);
    assert_eq!(t["decisions"]["pending_approval"], 1);
    assert_eq!(t["denials"]["scope.tool_denied"], 1);
    assert_eq!(t["oversight"]["approvals_requested"], 1);
    assert_eq!(t["oversight"]["approvals_granted"], 1);
    assert_eq!(t["oversight"]["halts_engaged"], 1);
    assert_eq!(t["oversight"]["halts_released"], 1);
    assert_eq!(t["agents"]["bot-1"]["decisions"], 4);
    assert_eq!(t["changes"]["policy"][0][2], true);
    assert!(r["coverage_caveat"].as_str().unwrap().contains("bypass"));

    let (out, markdown) = report(&server, &[]).await;
    assert_eq!(out.code(), Some(0), "{out}");
    for section in [
        "**Status: VERIFIED**",
        "## 2. Events recorded automatically (Art. 12(1))",
        "| `scope.tool_denied` | 1 |",
        "## 5. Human oversight",
        "## 9. Coverage caveat",
    ] {
        assert!(
            markdown.contains(section),
            "{section:?} missing:\n{markdown}"
        );
    }

    // A period after everything holds nothing, and still vouches for the log.
    let (out, json) = report(&server, &["--json", "--since", "2999-01-01"]).await;
    assert_eq!(out.code(), Some(0), "{out}");
    let r: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(r["tally"]["entries"], 0);
    let (out, _) = report(&server, &["--since", "yesterday-ish"]).await;
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.text().contains("--since"), "{out}");

    // Someone with database access turns the denial into an allow: the report says so.
    server.stop().await;
    let script = format!(
        "import sqlite3; db = sqlite3.connect({:?}); db.execute('DROP TRIGGER audit_entries_no_update'); \
         db.execute(\"UPDATE audit_entries SET canonical = replace(canonical, '\\\"outcome\\\":\\\"deny\\\"', '\\\"outcome\\\":\\\"allow\\\"') WHERE outcome = 'deny'\"); db.commit()",
        server.db_path().to_str().unwrap()
    );
    let out = python(&["-c", &script]).await;
    assert_eq!(out.code(), Some(0), "{out}");
    server.start().await;
    let (out, markdown) = report(&server, &[]).await;
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(markdown.contains("**Status: FAILED**"), "{markdown}");
    assert!(out.text().contains("mac_mismatch"), "{out}");
}
