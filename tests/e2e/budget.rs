//! Stage 3, budget: check and reserve (`spent + reserved + estimate ≤ cap`), under
//! concurrency, across reservation TTLs and across UTC period boundaries.

use std::collections::BTreeMap;

use arbiter_client::ActionOutcome;
use futures::future::join_all;

use crate::harness::{amount, budgets, code, ms, spawn_server, ServerOptions};

const T0: &str = "2030-01-15T12:00:00Z";

fn policy(budget: &str) -> String {
    format!(
        r#"
version: 1
defaults:
  reservation_ttl: 5m
agents:
  - id: "*"
    tools: {{allow: ["*"]}}
budgets:
  - {budget}
"#
    )
}

#[tokio::test]
async fn spend_equal_to_the_cap_is_allowed_and_one_micro_usd_more_is_denied() {
    let yaml = policy(r#"{name: cap, scope: agent, period: lifetime, max_usd: "1.00"}"#);
    let server = spawn_server(ServerOptions::new().policy(&yaml)).await;
    let client = server.client();

    let exact = client
        .evaluate("exact")
        .tool("t")
        .cost_micro_usd(1_000_000)
        .send()
        .await
        .unwrap();
    assert!(
        exact.allowed(),
        "estimate == cap passes: {:?}",
        exact.reasons
    );

    let over = client
        .evaluate("over")
        .tool("t")
        .cost_micro_usd(1_000_001)
        .send()
        .await
        .unwrap();
    assert!(over.is_denied());
    let reason = over.reason().unwrap();
    assert_eq!(
        (reason.stage.as_str(), reason.code.as_str()),
        ("budget", "budget.exceeded")
    );
    assert!(
        reason.message.contains("\"cap\""),
        "names the budget: {}",
        reason.message
    );

    // Reservations count against the cap like spend: 0.6 reserved leaves exactly 0.4.
    let first = client
        .evaluate("split")
        .tool("t")
        .cost_micro_usd(600_000)
        .send()
        .await
        .unwrap();
    assert!(first.allowed());
    let too_much = client
        .evaluate("split")
        .tool("t")
        .cost_micro_usd(400_001)
        .send()
        .await
        .unwrap();
    assert_eq!(code(&too_much), "budget.exceeded");
    let rest = client
        .evaluate("split")
        .tool("t")
        .cost_micro_usd(400_000)
        .send()
        .await
        .unwrap();
    assert!(rest.allowed(), "{:?}", rest.reasons);
    let a = amount(&client, "split", "", "cap", "micro_usd").await;
    assert_eq!((a.spent, a.reserved, a.remaining), (0, 1_000_000, 0));
}

#[tokio::test]
async fn concurrent_evaluates_never_reserve_past_the_cap() {
    // Each round's category budget of 10 000 micro-USD admits exactly 10 requests of
    // 1 000; 64 arrive at once. Several rounds, because a race shows only sometimes.
    const ROUNDS: usize = 4;
    let budgets: Vec<String> = (0..ROUNDS)
        .map(|r| format!(r#"{{name: round-{r}, scope: category, category: round-{r}, period: lifetime, max_usd: "0.01"}}"#))
        .collect();
    let yaml = policy(&budgets.join("\n  - "));
    let server = spawn_server(ServerOptions::new().policy(&yaml)).await;
    let client = server.client();

    for round in 0..ROUNDS {
        let category = format!("round-{round}");
        let calls = (0..64).map(|i| {
            let client = client.clone();
            let category = category.clone();
            async move {
                client
                    .evaluate(format!("agent-{}", i % 8))
                    .tool("t")
                    .category(category)
                    .cost_micro_usd(1_000)
                    .send()
                    .await
                    .unwrap()
            }
        });
        let decisions: Vec<_> = join_all(calls).await;
        let mut by_code: BTreeMap<String, usize> = BTreeMap::new();
        for d in &decisions {
            *by_code.entry(code(d)).or_default() += 1;
        }
        let allowed = decisions.iter().filter(|d| d.allowed()).count();
        assert_eq!(allowed, 10, "round {round}: {by_code:?}");
        assert_eq!(
            by_code.get("budget.exceeded"),
            Some(&54),
            "round {round}: {by_code:?}"
        );

        let a = amount(&client, "agent-0", "", &category, "micro_usd").await;
        assert_eq!(
            (a.spent, a.reserved, a.remaining),
            (0, 10_000, 0),
            "round {round}"
        );
    }
}

#[tokio::test]
async fn an_unsettled_reservation_is_released_after_its_ttl() {
    let yaml = policy(r#"{name: cap, scope: agent, period: lifetime, max_usd: "1.00"}"#);
    let server = spawn_server(ServerOptions::new().policy(&yaml).clock(T0)).await;
    let client = server.client();

    let held = client
        .evaluate("a")
        .tool("t")
        .cost_micro_usd(1_000_000)
        .send()
        .await
        .unwrap();
    assert!(held.allowed());
    let expires = held.reservation_expires_at().expect("reservation expiry");
    assert_eq!(
        expires.seconds * 1000 + i64::from(expires.nanos) / 1_000_000,
        ms(T0) + 5 * 60 * 1000,
        "the reservation lapses reservation_ttl after the decision"
    );

    server.set_time("2030-01-15T12:04:59Z");
    let d = client
        .evaluate("a")
        .tool("t")
        .cost_micro_usd(1)
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(&d),
        "budget.exceeded",
        "still held just before the TTL"
    );

    server.set_time("2030-01-15T12:05:01Z");
    let a = amount(&client, "a", "", "cap", "micro_usd").await;
    assert_eq!((a.spent, a.reserved), (0, 0), "released after the TTL");
    let d = client
        .evaluate("a")
        .tool("t")
        .cost_micro_usd(1_000_000)
        .send()
        .await
        .unwrap();
    assert!(d.allowed(), "{:?}", d.reasons);
}

#[tokio::test]
async fn a_daily_budget_starts_again_at_midnight_utc() {
    let yaml = policy(r#"{name: daily, scope: agent, period: day, max_usd: "1.00"}"#);
    let server = spawn_server(
        ServerOptions::new()
            .policy(&yaml)
            .clock("2030-01-15T23:59:59Z"),
    )
    .await;
    let client = server.client();

    let d = client
        .evaluate("a")
        .tool("t")
        .cost_micro_usd(1_000_000)
        .send()
        .await
        .unwrap();
    assert!(d.allowed());
    client
        .record(&d.decision_id)
        .outcome(ActionOutcome::Success)
        .cost_micro_usd(1_000_000)
        .send()
        .await
        .unwrap();
    let d = client
        .evaluate("a")
        .tool("t")
        .cost_micro_usd(1)
        .send()
        .await
        .unwrap();
    assert_eq!(code(&d), "budget.exceeded", "the day is spent");

    server.set_time("2030-01-16T00:00:00Z");
    let snapshot = budgets(&client, "a", "").await;
    let daily = &snapshot.budgets[0];
    assert_eq!(
        daily.window_start.as_ref().map(|t| t.seconds),
        Some(ms("2030-01-16T00:00:00Z") / 1000)
    );
    assert_eq!(
        daily.window_end.as_ref().map(|t| t.seconds),
        Some(ms("2030-01-17T00:00:00Z") / 1000)
    );
    assert_eq!((daily.amounts[0].spent, daily.amounts[0].reserved), (0, 0));

    let d = client
        .evaluate("a")
        .tool("t")
        .cost_micro_usd(1_000_000)
        .send()
        .await
        .unwrap();
    assert!(d.allowed(), "a new day, a new budget: {:?}", d.reasons);
}

#[tokio::test]
async fn spend_recorded_after_midnight_belongs_to_the_day_it_was_evaluated() {
    let yaml = policy(r#"{name: daily, scope: agent, period: day, max_usd: "1.00"}"#);
    let server = spawn_server(
        ServerOptions::new()
            .policy(&yaml)
            .clock("2030-01-15T23:59:59Z"),
    )
    .await;
    let client = server.client();
    let late = client
        .evaluate("a")
        .tool("t")
        .cost_micro_usd(1_000_000)
        .send()
        .await
        .unwrap();
    assert!(late.allowed());

    server.set_time("2030-01-16T00:00:01Z");
    let r = client
        .record(&late.decision_id)
        .cost_micro_usd(1_000_000)
        .send()
        .await
        .unwrap();
    assert!(!r.reservation_expired);
    let today = amount(&client, "a", "", "daily", "micro_usd").await;
    assert_eq!(
        (today.spent, today.reserved),
        (0, 0),
        "charged to yesterday"
    );
    let d = client
        .evaluate("a")
        .tool("t")
        .cost_micro_usd(1_000_000)
        .send()
        .await
        .unwrap();
    assert!(d.allowed(), "{:?}", d.reasons);
}

#[tokio::test]
async fn a_request_naming_an_unknown_budget_is_denied_with_budget_not_found() {
    let yaml = policy(r#"{name: known, scope: agent, period: lifetime, max_usd: "1.00"}"#);
    let server = spawn_server(ServerOptions::new().policy(&yaml)).await;
    let client = server.client();

    let d = client
        .evaluate("a")
        .tool("t")
        .budget("no-such-budget")
        .send()
        .await
        .unwrap();
    assert!(d.is_denied());
    let reason = d.reason().unwrap();
    assert_eq!(
        (reason.stage.as_str(), reason.code.as_str()),
        ("budget", "budget.not_found")
    );
    assert!(
        reason.message.contains("no-such-budget"),
        "{}",
        reason.message
    );
    assert!(d.reservation_id.is_none());

    let known = client
        .evaluate("a")
        .tool("t")
        .budget("known")
        .send()
        .await
        .unwrap();
    assert!(known.allowed(), "{:?}", known.reasons);
}
