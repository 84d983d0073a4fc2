//! The MCP gateway with the official Rust SDK (rmcp) as its client: the real
//! `arbiter mcp-gateway` process in front of a stdio MCP server (the stdlib fixture in
//! tests/chart/mcp_upstream.py, which logs every call it runs), deciding through the real
//! server. The Python SDK side, the reference servers and the conformance suite are in
//! tests/mcp/.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use arbiter_client::proto as pb;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::ServiceExt;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::harness::{
    arbiter_bin, create_principal, keyed, query_all, repo_root, spawn_server, ServerOptions,
};

const POLICY: &str = r#"
version: 1
agents:
  - id: bot-1
    tools: {allow: [search_kb]}
"#;

/// A running `arbiter mcp-gateway`, stopped on drop.
struct Gateway {
    url: String,
    _child: tokio::process::Child,
}

async fn start_gateway(arbiter: &str, dir: &Path, calls: &Path) -> Gateway {
    let config = dir.join("gateway.yaml");
    let fixture = repo_root().join("tests/chart/mcp_upstream.py");
    let yaml = serde_json::json!({
        "arbiter": {"endpoint": arbiter},
        "listen": {"addr": "127.0.0.1:0"},
        "approval_wait": "0s",
        "upstreams": [{
            "name": "kb",
            "stdio": {
                "command": "python3",
                "args": [fixture],
                "env": {"FIXTURE_CALLS": calls},
            },
        }],
    });
    // JSON is YAML: the gateway reads this file as it reads any gateway.yaml.
    std::fs::write(&config, yaml.to_string()).expect("write gateway.yaml");
    let mut child = tokio::process::Command::new(arbiter_bin())
        .args(["mcp-gateway", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start arbiter mcp-gateway");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the gateway announces itself within 30 s")
        .expect("read stdout")
        .expect("a first line");
    let url = first
        .strip_prefix("arbiter mcp-gateway listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .trim()
        .to_owned();
    // Keep draining stdout so the gateway never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Gateway { url, _child: child }
}

/// An rmcp client over Streamable HTTP presenting `key` as its bearer token.
async fn connect(
    url: &str,
    key: &str,
) -> Result<rmcp::service::RunningService<rmcp::RoleClient, ()>, rmcp::service::ClientInitializeError>
{
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .expect("HTTP client");
    let config = StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(key);
    ().serve(StreamableHttpClientTransport::with_client(http, config))
        .await
}

fn calls_run(calls: &Path) -> usize {
    std::fs::read_to_string(calls).map_or(0, |s| s.lines().count())
}

async fn entries(c: &arbiter_client::Client, kind: &str) -> Vec<pb::AuditEntry> {
    query_all(
        c,
        pb::AuditFilter {
            kinds: vec![kind.into()],
            agent_id: "bot-1".into(),
            ..Default::default()
        },
    )
    .await
}

#[tokio::test]
async fn the_rust_sdk_sees_only_allowed_tools_and_only_allowed_calls_reach_the_server() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let root = create_principal(&server.client(), "root", &[pb::Role::Admin], &[]).await;
    let admin = keyed(&server, &root);
    let agent_key = create_principal(&admin, "bot-1-runtime", &[pb::Role::Agent], &["bot-1"]).await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let calls = dir.path().join("calls.jsonl");
    let gateway = start_gateway(&server.url(), dir.path(), &calls).await;

    let client = connect(&gateway.url, &agent_key)
        .await
        .expect("MCP handshake");
    let tools: Vec<String> = client
        .list_all_tools()
        .await
        .expect("tools/list")
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    assert_eq!(tools, ["search_kb"], "delete_ticket is denied, so absent");

    let mut args = serde_json::Map::new();
    args.insert("q".into(), "refund".into());
    let allowed = client
        .call_tool(CallToolRequestParams::new("search_kb").with_arguments(args))
        .await
        .expect("tools/call search_kb");
    let allowed = serde_json::to_value(&allowed).unwrap();
    assert_eq!(allowed["isError"], serde_json::json!(false), "{allowed}");
    assert_eq!(allowed["content"][0]["text"], "ran search_kb", "{allowed}");
    assert_eq!(
        calls_run(&calls),
        1,
        "the allowed call reached the upstream once"
    );

    // A denied call is answered without the upstream ever seeing it: an isError result
    // naming the denial, or a protocol error for a name the agent may not know.
    let denied = client
        .call_tool(CallToolRequestParams::new("delete_ticket"))
        .await;
    if let Ok(result) = &denied {
        let result = serde_json::to_value(result).unwrap();
        assert_eq!(result["isError"], serde_json::json!(true), "{result}");
    }
    assert_eq!(
        calls_run(&calls),
        1,
        "the denied call never reached the upstream"
    );

    // Both calls were decided and logged under the key's agent; only the forwarded one
    // was recorded.
    let evaluated = entries(&admin, "evaluate").await;
    let outcomes: Vec<&str> = evaluated.iter().map(|e| e.outcome.as_str()).collect();
    assert_eq!(outcomes, ["allow", "deny"], "{evaluated:?}");
    assert_eq!(entries(&admin, "record").await.len(), 1);
    client.cancel().await.expect("close the MCP client");
}

#[tokio::test]
async fn the_rust_sdk_with_a_key_arbiter_does_not_know_gets_nowhere() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let root = create_principal(&server.client(), "root", &[pb::Role::Admin], &[]).await;
    let admin = keyed(&server, &root);
    let dir = tempfile::tempdir().expect("temporary directory");
    let calls = dir.path().join("calls.jsonl");
    let gateway = start_gateway(&server.url(), dir.path(), &calls).await;
    let before = query_all(&admin, pb::AuditFilter::default()).await.len();

    let refused = connect(&gateway.url, "arb_not_a_key_arbiter_issued").await;
    assert!(
        refused.is_err(),
        "the handshake must fail without a known key"
    );
    assert_eq!(calls_run(&calls), 0);
    let after = query_all(&admin, pb::AuditFilter::default()).await;
    assert!(
        after[before..].iter().all(|e| e.kind != "evaluate"),
        "no decision is made for an unknown key: {:?}",
        &after[before..]
    );
}
