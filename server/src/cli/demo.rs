//! `arbiter demo`: a zero-setup walk through the pipeline against a real embedded
//! server on a temporary data directory, over real gRPC.

use super::term::say;
use crate::config::Settings;
use crate::startup::Application;
use arbiter_client::{proto as pb, ActionOutcome, Client, Decision};

const DEMO_POLICY: &str = r#"# The demo's policy bundle (see docs/policy.md).
version: 1
name: demo
defaults:
  trust_level: L2_SUGGEST
  reservation_ttl: 5m
actions:
  - match: {tool: "refund_*"}
    trust: L4_ACT_REPORT
  - match: {tool: "wire_transfer", arguments: {amount_usd: {gt: 100}}}
    approval: always
    reason: wires over $100 need a human
  - match: {tool: "wire_transfer", arguments: {to: {glob: "*.example.net"}}}
    deny: true
    reason: sanctioned counterparty
  - match: {tool: "page_oncall"}
    critical: true
agents:
  - id: billing-agent
    tools:
      allow: ["read_invoice", "send_email", "refund_*", "summarize", "wire_transfer", "page_oncall"]
      deny: ["admin_*"]
    models: ["gpt-4o-mini*"]
    loop_guard: {max_calls: 3, window: 60s}
budgets:
  - name: billing-daily
    scope: agent
    agents: ["billing-agent"]
    period: day
    max_usd: "1.00"
"#;

fn show(step: &str, d: &Decision) {
    let verdict = match d.outcome {
        arbiter_client::DecisionOutcome::Allow => "ALLOW",
        arbiter_client::DecisionOutcome::Deny => "DENY",
        arbiter_client::DecisionOutcome::PendingApproval => "PENDING_APPROVAL",
    };
    say!();
    say!("▶ {step}");
    match d.reason() {
        Some(r) if !d.allowed() => say!(
            "  {verdict} at stage {} [{}]: {}",
            r.stage,
            r.code,
            r.message
        ),
        _ => say!("  {verdict} (audit entry {})", d.audit_seq),
    }
}

pub async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let policy_path = dir.path().join("policy.yaml");
    std::fs::write(&policy_path, DEMO_POLICY)?;
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".into();
    // The demo is a walk-through on a temporary directory; it must not take the
    // metrics port from a real server on the same machine.
    settings.metrics.listen = "off".into();
    // The console on a free port of its own, for the same reason; its URL is printed.
    settings.console.listen = "127.0.0.1:0".into();
    settings.storage.data_dir = dir.path().join("data");
    settings.policy.path = Some(policy_path);
    let app = Application::build(settings).await?;
    let addr = app.local_addr();
    let console = app.console_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    say!("Arbiter demo: an embedded server is running on {addr} with a temporary data directory.");
    if let Some(c) = console {
        say!("Operator console (while the demo runs): http://{c}/");
    }
    say!("The policy lets billing-agent read invoices, send email and issue refunds and wire money (with a human's approval), within $1.00 a day.");

    let c = Client::connect(format!("http://{addr}")).await?;
    let agent = "billing-agent";

    let d = c
        .evaluate(agent)
        .session("s-1")
        .tool("read_invoice")
        .cost_micro_usd(100_000)
        .send()
        .await?;
    show("billing-agent reads an invoice, estimated at $0.10", &d);
    let r = c
        .record(&d.decision_id)
        .outcome(ActionOutcome::Success)
        .cost_micro_usd(80_000)
        .send()
        .await?;
    say!(
        "  recorded: it really cost {} (reserved {})",
        usd(r.actual.map_or(0, |a| a.micro_usd)),
        usd(r.reserved.map_or(0, |a| a.micro_usd))
    );

    let d = c
        .evaluate(agent)
        .session("s-1")
        .tool("refund_order")
        .send()
        .await?;
    show(
        "billing-agent tries a refund, which needs trust L4 (it has the default L2)",
        &d,
    );
    c.set_trust(pb::SetTrustRequest {
        agent_id: agent.into(),
        level: pb::TrustLevel::L4ActReport as i32,
        scope: String::new(),
        reason: "demo".into(),
    })
    .await?;
    let d = c
        .evaluate(agent)
        .session("s-1")
        .tool("refund_order")
        .send()
        .await?;
    show(
        "an operator raises billing-agent to L4_ACT_REPORT; the refund is asked again",
        &d,
    );

    let d = c
        .evaluate(agent)
        .session("s-1")
        .tool("send_email")
        .data("user_email", Some("notifications"))
        .send()
        .await?;
    show(
        "billing-agent wants to email a customer (personal data: user_email, for notifications)",
        &d,
    );
    c.grant_consent(pb::GrantConsentRequest {
        agent_id: agent.into(),
        data_type: "user_email".into(),
        purpose: "notifications".into(),
        expires_at: None,
    })
    .await?;
    let d = c
        .evaluate(agent)
        .session("s-1")
        .tool("send_email")
        .data("user_email", Some("notifications"))
        .send()
        .await?;
    show(
        "consent is granted for that purpose; the email is asked again",
        &d,
    );
    let d = c
        .evaluate(agent)
        .session("s-1")
        .tool("send_email")
        .data("user_email", Some("marketing"))
        .send()
        .await?;
    show("the same data for a different purpose (marketing)", &d);

    let d = c
        .evaluate(agent)
        .session("s-1")
        .tool("admin_reset")
        .send()
        .await?;
    show(
        "billing-agent tries admin_reset, which its policy denies",
        &d,
    );
    let d = c
        .evaluate("mystery-agent")
        .tool("read_invoice")
        .send()
        .await?;
    show("an agent the policy does not mention", &d);

    say!();
    say!("▶ billing-agent summarizes, three calls allowed per minute per session");
    for i in 1..=4 {
        let d = c
            .evaluate(agent)
            .session("s-2")
            .tool("summarize")
            .send()
            .await?;
        match d.reason().filter(|_| !d.allowed()) {
            Some(r) => say!("  call {i}: DENY [{}]: {}", r.code, r.message),
            None => say!("  call {i}: ALLOW"),
        }
    }

    say!();
    say!("▶ the daily $1.00 budget runs out: LLM calls estimated at $0.30 each");
    for i in 1..=4 {
        let d = c
            .evaluate(agent)
            .session("s-3")
            .model("gpt-4o-mini")
            .cost_micro_usd(300_000)
            .send()
            .await?;
        match d.reason().filter(|_| !d.allowed()) {
            Some(r) => say!("  call {i}: DENY [{}]: {}", r.code, r.message),
            None => say!("  call {i}: ALLOW, reserved $0.30"),
        }
    }
    let b = c
        .get_budgets(pb::GetBudgetsRequest {
            agent_id: agent.into(),
            session_id: String::new(),
        })
        .await?;
    for snap in b.budgets {
        for a in snap.amounts {
            say!(
                "  budget {}: spent {}, reserved {}, remaining {}",
                snap.name,
                usd(a.spent),
                usd(a.reserved),
                usd(a.remaining)
            );
        }
    }

    let wire = |to: &str, amount_usd: u64| {
        c.evaluate(agent)
            .session("s-4")
            .tool("wire_transfer")
            .arguments(serde_json::json!({"to": to, "amount_usd": amount_usd}))
    };
    show(
        "billing-agent wires $40 to ACME: rules look at arguments, and this one needs no human",
        &wire("acme.example.com", 40).send().await?,
    );
    show(
        "...and tries a counterparty a rule denies by its argument",
        &wire("shell.example.net", 40).send().await?,
    );
    let d = wire("acme.example.com", 120).send().await?;
    let approval = d.approval_id.clone().unwrap_or_default();
    say!();
    say!("▶ billing-agent wants to wire $120 to ACME, which the policy says a human must approve");
    say!(
        "  PENDING_APPROVAL: approval {approval} ({})",
        d.reason().map(|r| r.message.as_str()).unwrap_or("")
    );
    c.approve(pb::ApproveRequest {
        approval_id: approval.clone(),
        grant: true,
        reason: "checked the invoice".into(),
    })
    .await?;
    say!("  an operator grants it (`arbiter approvals approve {approval}`)");
    show(
        "billing-agent presents that approval for $9,000 instead: it binds the exact arguments",
        &wire("acme.example.com", 9_000)
            .approval_id(&approval)
            .send()
            .await?,
    );
    let d = wire("acme.example.com", 120)
        .approval_id(&approval)
        .send()
        .await?;
    show(
        "billing-agent asks again for the $120 it was approved for",
        &d,
    );
    let d = wire("acme.example.com", 120)
        .approval_id(&approval)
        .send()
        .await?;
    show(
        "...and tries to use it a second time: approvals are single-use",
        &d,
    );

    let whole_agent = || {
        Some(pb::HaltTarget {
            scope: pb::HaltScope::Agent as i32,
            agent_id: agent.into(),
            session_id: String::new(),
        })
    };
    c.halt(pb::HaltRequest {
        target: whole_agent(),
        mode: pb::HaltMode::HaltAll as i32,
        reason: "demo: suspicious activity".into(),
    })
    .await?;
    say!();
    say!(
        "▶ an operator halts billing-agent (`arbiter halt --agent billing-agent --mode halt_all`)"
    );
    let d = c
        .evaluate(agent)
        .session("s-5")
        .tool("read_invoice")
        .send()
        .await?;
    show("billing-agent reads an invoice while halted", &d);
    let d = c
        .evaluate(agent)
        .session("s-5")
        .tool("page_oncall")
        .send()
        .await?;
    show(
        "billing-agent pages the on-call engineer, an action the policy marks critical",
        &d,
    );
    c.resume(pb::ResumeRequest {
        target: whole_agent(),
        reason: "demo: all clear".into(),
    })
    .await?;
    let d = c
        .evaluate(agent)
        .session("s-5")
        .tool("read_invoice")
        .send()
        .await?;
    show("the halt is lifted and the invoice is read", &d);

    let v = c
        .verify_audit(pb::VerifyAuditRequest {
            from_seq: 0,
            to_seq: 0,
        })
        .await?;
    say!();
    say!("▶ the audit log");
    say!(
        "  {}: {} entries, each HMAC-chained to the one before; head {}",
        if v.ok {
            "verified"
        } else {
            "VERIFICATION FAILED"
        },
        v.checked,
        &v.head_mac[..16.min(v.head_mac.len())]
    );
    say!(
        "  try it yourself: `arbiter serve`, then `arbiter audit tail` and `arbiter audit verify`."
    );

    let _ = stop.send(());
    server.await??;
    if !v.ok {
        return Err(super::Exit(1, format!("audit verification failed: {}", v.message)).into());
    }
    Ok(())
}

fn usd(micros: i64) -> String {
    crate::domain::MicroUsd(micros.max(0) as u64).to_string()
}
