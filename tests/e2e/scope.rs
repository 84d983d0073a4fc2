//! Stage 5, scope (default deny) and the loop guard.

use arbiter_client::proto::FilterToolsRequest;
use arbiter_client::Client;

use crate::harness::{code, spawn_server, ServerOptions};

const POLICY: &str = r#"
version: 1
agents:
  - id: db-agent
    tools:
      allow: ["db_*", search, "internal_*"]
      deny: ["db_drop*"]
      hidden: ["internal_*"]
  - id: looper
    tools: {allow: ["*"]}
    loop_guard: {max_calls: 3, window: 60s}
"#;

async fn tool(client: &Client, agent: &str, session: &str, tool: &str) -> String {
    let d = client
        .evaluate(agent)
        .session(session)
        .tool(tool)
        .send()
        .await
        .unwrap();
    if !d.allowed() {
        assert_eq!(d.reason().unwrap().stage, "scope", "{:?}", d.reasons);
    }
    code(&d)
}

#[tokio::test]
async fn deny_wins_over_allow_in_tool_globs() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let client = server.client();

    assert_eq!(tool(&client, "db-agent", "", "db_read").await, "ok");
    assert_eq!(
        tool(&client, "db-agent", "", "db_drop_table").await,
        "scope.tool_denied"
    );
    assert_eq!(
        tool(&client, "db-agent", "", "shell").await,
        "scope.tool_not_allowed"
    );
}

#[tokio::test]
async fn hidden_tools_are_filtered_out_and_denied() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let client = server.client();

    let visible = client
        .filter_tools(FilterToolsRequest {
            agent_id: "db-agent".into(),
            tools: [
                "search",
                "internal_debug",
                "db_drop_all",
                "db_read",
                "shell",
            ]
            .map(String::from)
            .to_vec(),
        })
        .await
        .unwrap();
    assert_eq!(visible.tools, ["search", "db_read"]);

    assert_eq!(
        tool(&client, "db-agent", "", "internal_debug").await,
        "scope.tool_hidden"
    );
}

#[tokio::test]
async fn an_agent_without_a_policy_rule_is_denied_with_scope_no_policy() {
    let server = spawn_server(ServerOptions::new().policy(POLICY)).await;
    let client = server.client();

    let d = client
        .evaluate("stranger")
        .tool("search")
        .send()
        .await
        .unwrap();
    assert!(d.is_denied());
    let reason = d.reason().unwrap();
    assert_eq!(
        (reason.stage.as_str(), reason.code.as_str()),
        ("scope", "scope.no_policy")
    );

    let visible = client
        .filter_tools(FilterToolsRequest {
            agent_id: "stranger".into(),
            tools: vec!["search".into()],
        })
        .await
        .unwrap();
    assert!(visible.tools.is_empty(), "{visible:?}");
}

#[tokio::test]
async fn without_a_policy_file_every_agent_is_denied_with_scope_no_policy() {
    let server = spawn_server(ServerOptions::new()).await;
    let d = server
        .client()
        .evaluate("a")
        .tool("t")
        .send()
        .await
        .unwrap();
    assert_eq!(code(&d), "scope.no_policy");
}

#[tokio::test]
async fn the_loop_guard_trips_on_call_max_plus_one_per_session_and_per_tool() {
    let server = spawn_server(
        ServerOptions::new()
            .policy(POLICY)
            .clock("2030-01-15T12:00:00Z"),
    )
    .await;
    let client = server.client();

    for call in 1..=3 {
        assert_eq!(
            tool(&client, "looper", "s1", "fetch").await,
            "ok",
            "call {call}"
        );
    }
    let tripped = client
        .evaluate("looper")
        .session("s1")
        .tool("fetch")
        .send()
        .await
        .unwrap();
    assert_eq!(code(&tripped), "loop.detected", "call 4 of 3");
    assert_eq!(tripped.reason().unwrap().stage, "scope");

    assert_eq!(
        tool(&client, "looper", "s2", "fetch").await,
        "ok",
        "another session"
    );
    assert_eq!(
        tool(&client, "looper", "s1", "store").await,
        "ok",
        "another tool"
    );
    assert_eq!(
        tool(&client, "looper", "s1", "fetch").await,
        "loop.detected"
    );

    // The window slides: once the first calls are older than 60 s they no longer count.
    server.set_time("2030-01-15T12:01:01Z");
    assert_eq!(tool(&client, "looper", "s1", "fetch").await, "ok");
}
