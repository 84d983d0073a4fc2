//! Policy bundles: hot reload, rejection of invalid rewrites, `arbiter policy check`.

use std::time::Duration;

use arbiter_client::proto::{AuditFilter, GetPolicyRequest};
use arbiter_client::Client;
use sha2::{Digest, Sha256};

use crate::harness::{arbiter, eventually, query_all, repo_root, spawn_server, ServerOptions};

const V1: &str = r#"
version: 1
name: first
agents:
  - id: "*"
    tools: {allow: [old]}
"#;

const V2: &str = r#"
version: 1
name: second
agents:
  - id: "*"
    tools: {allow: [old, new]}
"#;

/// Two problems the structure allows (so both are reported), each at its own path.
const BAD: &str = r#"
version: 1
defaults: {trust_level: L9}
agents:
  - id: "*"
    tools: {allow: [old, new]}
budgets:
  - {name: b, scope: team, period: day, max_usd: "1.00"}
"#;

const RELOAD_DEADLINE: Duration = Duration::from_secs(15);

fn version(yaml: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(yaml.as_bytes())))
}

async fn served_version(client: &Client) -> String {
    client
        .get_policy(GetPolicyRequest {})
        .await
        .unwrap()
        .current
        .unwrap()
        .version
}

#[tokio::test]
async fn a_rewritten_policy_file_is_served_within_a_deadline() {
    let server = spawn_server(ServerOptions::new().policy(V1).fast_reload()).await;
    let client = server.client();
    let d = client.evaluate("a").tool("new").send().await.unwrap();
    assert_eq!(
        d.policy_version,
        version(V1),
        "decisions carry the bundle's hash"
    );
    assert_eq!(d.reason().unwrap().code, "scope.tool_not_allowed");

    server.write_policy(V2);
    let d = eventually(
        "decisions under the new policy",
        RELOAD_DEADLINE,
        || async {
            let d = client.evaluate("a").tool("new").send().await.unwrap();
            (d.policy_version != version(V1)).then_some(d)
        },
    )
    .await;
    assert_eq!(d.policy_version, version(V2));
    assert!(d.allowed(), "{:?}", d.reasons);
    assert_eq!(served_version(&client).await, version(V2));

    let loads = query_all(
        &client,
        AuditFilter {
            kinds: vec!["policy.load".into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(loads.len(), 2, "{loads:?}");
    assert!(loads[0].canonical.contains(&version(V1)));
    assert!(loads[1].canonical.contains(&version(V2)));
    assert!(loads[1].canonical.contains("\"name\":\"second\""));
}

#[tokio::test]
async fn an_invalid_rewrite_is_rejected_and_the_old_policy_keeps_serving() {
    let server = spawn_server(ServerOptions::new().policy(V1).fast_reload()).await;
    let client = server.client();
    let path = server.policy_path().display().to_string();

    server.write_policy(BAD);
    let rejected = eventually(
        "the rejection in the policy history",
        RELOAD_DEADLINE,
        || async {
            let info = client.get_policy(GetPolicyRequest {}).await.unwrap();
            info.history.into_iter().find(|h| !h.accepted)
        },
    )
    .await;
    assert_eq!(rejected.version, version(BAD));
    assert_eq!(rejected.source, path);
    for needle in [path.as_str(), "budgets[0].scope", "defaults.trust_level"] {
        assert!(
            rejected.error.contains(needle),
            "error names {needle}: {}",
            rejected.error
        );
    }

    assert_eq!(served_version(&client).await, version(V1));
    let d = client.evaluate("a").tool("new").send().await.unwrap();
    assert_eq!(d.policy_version, version(V1));
    assert_eq!(
        d.reason().unwrap().code,
        "scope.tool_not_allowed",
        "old rules still apply"
    );

    let entries = query_all(
        &client,
        AuditFilter {
            kinds: vec!["policy.rejected".into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    let body = &entries[0].canonical;
    assert!(body.contains(&version(BAD)), "{body}");
    assert!(
        body.contains(&format!("\"serving\":\"{}\"", version(V1))),
        "{body}"
    );
    assert!(body.contains("budgets[0].scope"), "{body}");

    // Fixing the file recovers without a restart.
    server.write_policy(V2);
    eventually("the fixed policy", RELOAD_DEADLINE, || async {
        (served_version(&client).await == version(V2)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn policy_check_exits_1_naming_file_and_path_for_a_bad_bundle_and_0_for_a_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let good = dir.path().join("good.yaml");
    std::fs::write(&bad, BAD).unwrap();
    std::fs::write(&good, V2).unwrap();
    let bad = bad.display().to_string();
    let good = good.display().to_string();

    let out = arbiter(&["policy", "check", &bad]).await;
    assert_eq!(out.code(), Some(1), "{out}");
    for needle in [
        bad.as_str(),
        "budgets[0].scope",
        "defaults.trust_level: unknown trust level",
    ] {
        assert!(out.text().contains(needle), "output names {needle}:\n{out}");
    }

    let out = arbiter(&["policy", "check", &good]).await;
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains(&version(V2)), "{out}");

    let out = arbiter(&["policy", "check", &good, &bad]).await;
    assert_eq!(out.code(), Some(1), "one bad file fails the check:\n{out}");

    let example = repo_root().join("examples").join("policy.yaml");
    let out = arbiter(&["policy", "check", &example.display().to_string()]).await;
    assert_eq!(out.code(), Some(0), "the shipped example is valid:\n{out}");
}

#[tokio::test]
async fn policy_check_names_every_bad_argument_condition() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("args.yaml");
    std::fs::write(
        &bad,
        r#"version: 1
actions:
  - match: {tool: refund, arguments: {amount: {gtt: 100}, "a..b": 1, to: {glob: "[x"}, n: {gt: "5"}, l: [1, 2]}}
    approval: always
  - match: {arguments: {}}
    deny: true
"#,
    )
    .unwrap();
    let out = arbiter(&["policy", "check", &bad.display().to_string()]).await;
    assert_eq!(out.code(), Some(1), "{out}");
    for needle in [
        "actions[0].match.arguments.amount.gtt: unknown operator",
        "actions[0].match.arguments.a..b: an argument path",
        "actions[0].match.arguments.to.glob: invalid glob",
        "actions[0].match.arguments.n.gt: must be a number",
        "actions[0].match.arguments.l: must be a value or a map of operators",
        "actions[1].match.arguments: must name at least one argument",
    ] {
        assert!(out.text().contains(needle), "output names {needle}:\n{out}");
    }
}
