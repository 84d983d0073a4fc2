//! Decision cases as data: every `tests/cases/evaluate/*.yaml` names a policy, the
//! run-time state to set up, one `Evaluate` request and the decision it must get.
//! The format is described in `tests/cases/README.md`.
//!
//! Each case gets its own server, so a case means the same whether it runs alone or
//! with the others; the servers start concurrently to keep the whole run short. Every
//! failing case is reported (with its file name), not only the first one.
//!
//! Set `ARBITER_CASE=text` to run only the case files whose name contains `text`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arbiter_client::{proto, Client, Decision, TrustLevel};
use futures::StreamExt;
use serde::Deserialize;

use crate::harness::{code, spawn_server, timestamp, ServerOptions};

/// How many case servers run at the same time.
const PARALLEL: usize = 8;

/// The six stages, in pipeline order.
const STAGES: [&str; 6] = ["halt", "trust", "budget", "consent", "scope", "approval"];

/// One case file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// What the case shows, for people; not checked.
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    /// The policy bundle, as the text of the file the server serves.
    policy: String,
    /// Start the server's clock at this time (RFC 3339); `set_time` steps move it.
    #[serde(default)]
    clock: Option<String>,
    /// Run-time state to create before the request, in order.
    #[serde(default)]
    setup: Vec<Step>,
    request: Request,
    expect: Expect,
}

/// One setup step, written as a map with a single key: `- set_trust: {...}`.
#[derive(Debug, Deserialize)]
#[serde(try_from = "StepMap")]
enum Step {
    SetTrust(SetTrust),
    GrantConsent(GrantConsent),
    /// An `Evaluate` whose deciding code must be the given one (`ok` unless the step
    /// says `code:`). An allowed one reserves budget and counts for the loop guard; any
    /// one marks the agent and its session as seen.
    Evaluate(Box<Request>, String),
    /// Moves the server's clock (needs `clock:`).
    SetTime(String),
}

/// A step as YAML writes it (serde_norway reads enums only from `!tags`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepMap {
    #[serde(default)]
    set_trust: Option<SetTrust>,
    #[serde(default)]
    grant_consent: Option<GrantConsent>,
    #[serde(default)]
    evaluate: Option<Request>,
    /// Only beside `evaluate`: the code that step must get.
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    set_time: Option<String>,
}

impl TryFrom<StepMap> for Step {
    type Error = String;

    fn try_from(m: StepMap) -> Result<Self, String> {
        if m.code.is_some() && m.evaluate.is_none() {
            return Err("`code` belongs to an `evaluate` step".to_owned());
        }
        let code = m.code.unwrap_or_else(|| "ok".to_owned());
        let steps: Vec<Step> = [
            m.set_trust.map(Step::SetTrust),
            m.grant_consent.map(Step::GrantConsent),
            m.evaluate.map(|r| Step::Evaluate(Box::new(r), code)),
            m.set_time.map(Step::SetTime),
        ]
        .into_iter()
        .flatten()
        .collect();
        match <[Step; 1]>::try_from(steps) {
            Ok([step]) => Ok(step),
            Err(steps) => Err(format!(
                "a setup step has exactly one of set_trust, grant_consent, evaluate, set_time; got {}",
                steps.len()
            )),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetTrust {
    agent: String,
    level: String,
    /// A tool name or budget category; agent-wide when absent.
    #[serde(default)]
    scope: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantConsent {
    agent: String,
    data_type: String,
    /// Absent: the grant covers every purpose.
    #[serde(default)]
    purpose: String,
    /// RFC 3339; absent: the grant does not expire.
    #[serde(default)]
    expires_at: Option<String>,
}

/// The fields of an `Evaluate` request that the policy looks at.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    agent: String,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    tool: Option<String>,
    #[serde(default)]
    api: Option<Api>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    max_tokens: Option<u64>,
    /// `action.estimate.micro_usd`.
    #[serde(default)]
    micro_usd: Option<u64>,
    /// `action.estimate.tokens`.
    #[serde(default)]
    tokens: Option<u64>,
    #[serde(default)]
    data: Vec<Data>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    budget: Option<String>,
    #[serde(default)]
    min_trust: Option<String>,
    /// `action.arguments`: a map, sent as a protobuf Struct.
    #[serde(default)]
    arguments: Option<serde_json::Value>,
    #[serde(default)]
    explain: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Api {
    method: String,
    url: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Data {
    data_type: String,
    #[serde(default)]
    purpose: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    decision: Verdict,
    /// The deciding reason's code: the first failed stage's, or `ok`.
    code: String,
    /// Stage names of every reason, in order.
    #[serde(default)]
    stages: Option<Vec<String>>,
    /// Text the deciding reason's message must contain (for an ALLOW: any reason's).
    #[serde(default)]
    message_contains: Option<OneOrMany>,
    /// The amounts an ALLOW reserves.
    #[serde(default)]
    reserved: Option<Reserved>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Verdict {
    Allow,
    Deny,
    PendingApproval,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn texts(&self) -> &[String] {
        match self {
            Self::One(s) => std::slice::from_ref(s),
            Self::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reserved {
    #[serde(default)]
    micro_usd: Option<i64>,
    #[serde(default)]
    tokens: Option<i64>,
}

#[tokio::test]
async fn every_evaluate_case_file_gets_its_expected_decision() {
    let files = case_files();
    assert!(
        !files.is_empty(),
        "no case files matched in {}",
        cases_dir().display()
    );
    let total = files.len();
    let failures: Vec<String> = futures::stream::iter(files)
        .map(|path| async move {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            // A panic (a server that does not start) fails this case, not the run.
            let outcome = tokio::spawn(async move { load_and_check(&path).await })
                .await
                .unwrap_or_else(|e| Err(panic_text(e)));
            outcome.err().map(|why| format!("{name}: {why}"))
        })
        .buffered(PARALLEL)
        .filter_map(|failure| async move { failure })
        .collect()
        .await;
    assert!(
        failures.is_empty(),
        "{} of {total} decision case(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cases/evaluate")
}

/// The case files, sorted by name, narrowed by `ARBITER_CASE`.
fn case_files() -> Vec<PathBuf> {
    let filter = std::env::var("ARBITER_CASE").unwrap_or_default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .expect("tests/cases/evaluate exists")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(&filter))
        .collect();
    files.sort();
    files
}

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".to_owned()),
        Err(e) => e.to_string(),
    }
}

async fn load_and_check(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let case: Case =
        serde_norway::from_str(&text).map_err(|e| format!("not a valid case file: {e}"))?;
    check(&case).await
}

/// Runs one case on a fresh server and compares the decision with `expect`.
async fn check(case: &Case) -> Result<(), String> {
    let expect = &case.expect;
    if (expect.decision == Verdict::Allow) != (expect.code == "ok") {
        return Err(format!(
            "case file is inconsistent: decision {:?} with code {:?} (an ALLOW has code ok)",
            expect.decision, expect.code
        ));
    }
    if let Some(unknown) = expect
        .stages
        .iter()
        .flatten()
        .find(|s| !STAGES.contains(&s.as_str()))
    {
        return Err(format!(
            "case file names an unknown stage {unknown:?}; stages are {STAGES:?}"
        ));
    }

    let mut opts = ServerOptions::new().policy(&case.policy);
    if let Some(clock) = &case.clock {
        opts = opts.clock(clock);
    }
    let server = spawn_server(opts).await;
    let client = server.client();

    for (i, step) in case.setup.iter().enumerate() {
        let n = i + 1;
        match step {
            Step::SetTrust(t) => {
                client
                    .set_trust(proto::SetTrustRequest {
                        agent_id: t.agent.clone(),
                        level: trust_level(&t.level)? as i32,
                        scope: t.scope.clone(),
                        reason: "decision case".to_owned(),
                    })
                    .await
                    .map_err(|e| format!("setup step {n} (set_trust): {e}"))?;
            }
            Step::GrantConsent(g) => {
                client
                    .grant_consent(proto::GrantConsentRequest {
                        agent_id: g.agent.clone(),
                        data_type: g.data_type.clone(),
                        purpose: g.purpose.clone(),
                        expires_at: g.expires_at.as_deref().map(timestamp),
                    })
                    .await
                    .map_err(|e| format!("setup step {n} (grant_consent): {e}"))?;
            }
            Step::Evaluate(r, want) => {
                let d = evaluate(&client, r)
                    .await
                    .map_err(|e| format!("setup step {n} (evaluate): {e}"))?;
                let got = code(&d);
                if got != *want || d.allowed() != (want == "ok") {
                    return Err(format!(
                        "setup step {n} (evaluate) should get {want:?}, got {got:?}\n{}",
                        show(&d)
                    ));
                }
            }
            Step::SetTime(t) => {
                if case.clock.is_none() {
                    return Err(format!(
                        "setup step {n} (set_time) needs `clock:` in the case"
                    ));
                }
                server.set_time(t);
            }
        }
    }

    let d = evaluate(&client, &case.request)
        .await
        .map_err(|e| format!("the request failed: {e}"))?;
    let problems = compare(expect, &d);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{}\n{}", problems.join("\n"), show(&d)))
    }
}

/// Every way the decision differs from the expectation.
fn compare(expect: &Expect, d: &Decision) -> Vec<String> {
    let mut problems = Vec::new();
    let got = if d.allowed() {
        Verdict::Allow
    } else if d.is_denied() {
        Verdict::Deny
    } else {
        Verdict::PendingApproval
    };
    if got != expect.decision {
        problems.push(format!(
            "decision: expected {:?}, got {got:?}",
            expect.decision
        ));
    }
    let deciding = d.reason();
    let code = deciding.map_or("", |r| r.code.as_str());
    if code != expect.code {
        problems.push(format!("code: expected {:?}, got {code:?}", expect.code));
    }
    // A code belongs to one stage (`loop.detected` to scope); a mismatch is a server bug.
    if let Some(r) = deciding.filter(|r| !r.passed) {
        let owner = match r.code.split('.').next() {
            Some("loop") => "scope",
            Some(prefix) => prefix,
            None => "",
        };
        if r.stage != owner {
            problems.push(format!(
                "reason {:?} is reported by stage {:?}",
                r.code, r.stage
            ));
        }
    }
    if let Some(stages) = &expect.stages {
        let got: Vec<&str> = d.reasons.iter().map(|r| r.stage.as_str()).collect();
        if got != *stages {
            problems.push(format!("stages: expected {stages:?}, got {got:?}"));
        }
    }
    if let Some(wanted) = &expect.message_contains {
        let messages: Vec<&str> = match (got, deciding) {
            (Verdict::Deny, Some(r)) => vec![r.message.as_str()],
            _ => d.reasons.iter().map(|r| r.message.as_str()).collect(),
        };
        for text in wanted.texts() {
            if !messages.iter().any(|m| m.contains(text.as_str())) {
                problems.push(format!("no reason message contains {text:?}"));
            }
        }
    }
    if let Some(want) = &expect.reserved {
        let have = d.reserved().cloned().unwrap_or_default();
        if want.micro_usd.is_some_and(|v| v != have.micro_usd) {
            problems.push(format!(
                "reserved micro_usd: expected {}, got {}",
                want.micro_usd.unwrap(),
                have.micro_usd
            ));
        }
        if want.tokens.is_some_and(|v| v != have.tokens) {
            problems.push(format!(
                "reserved tokens: expected {}, got {}",
                want.tokens.unwrap(),
                have.tokens
            ));
        }
    }
    problems
}

async fn evaluate(client: &Client, r: &Request) -> Result<Decision, String> {
    let mut b = client.evaluate(&r.agent).explain(r.explain);
    if let Some(session) = &r.session {
        b = b.session(session);
    }
    if let Some(tool) = &r.tool {
        b = b.tool(tool);
    }
    if let Some(api) = &r.api {
        b = b.api(&api.method, &api.url);
    }
    if let Some(model) = &r.model {
        b = b.model(model);
    }
    if let Some(n) = r.max_tokens {
        b = b.max_tokens(n);
    }
    if let Some(n) = r.micro_usd {
        b = b.cost_micro_usd(n);
    }
    if let Some(n) = r.tokens {
        b = b.cost_tokens(n);
    }
    for data in &r.data {
        b = b.data(&data.data_type, data.purpose.as_deref());
    }
    if let Some(category) = &r.category {
        b = b.category(category);
    }
    if let Some(budget) = &r.budget {
        b = b.budget(budget);
    }
    if let Some(level) = &r.min_trust {
        b = b.min_trust(trust_level(level)?);
    }
    if let Some(arguments) = &r.arguments {
        b = b.arguments(arguments.clone());
    }
    b.send().await.map_err(|e| e.to_string())
}

/// A level as the policy writes it: `L3`, `l3` or `L3_ACT_APPROVE`.
fn trust_level(text: &str) -> Result<TrustLevel, String> {
    let levels: BTreeMap<&str, (&str, TrustLevel)> = BTreeMap::from([
        ("L0", ("L0_OBSERVER", TrustLevel::L0Observer)),
        ("L1", ("L1_MONITOR", TrustLevel::L1Monitor)),
        ("L2", ("L2_SUGGEST", TrustLevel::L2Suggest)),
        ("L3", ("L3_ACT_APPROVE", TrustLevel::L3ActApprove)),
        ("L4", ("L4_ACT_REPORT", TrustLevel::L4ActReport)),
        ("L5", ("L5_AUTONOMOUS", TrustLevel::L5Autonomous)),
    ]);
    let upper = text.to_ascii_uppercase();
    levels
        .get(upper.get(..2).unwrap_or(""))
        .filter(|(full, _)| upper.len() == 2 || upper == *full)
        .map(|(_, level)| *level)
        .ok_or_else(|| format!("unknown trust level {text:?}; use L0…L5 or a full name"))
}

/// The decision as text, for failure messages.
fn show(d: &Decision) -> String {
    let mut out = format!("  got {:?}:", d.outcome);
    for r in &d.reasons {
        let mark = if r.passed { "pass" } else { "FAIL" };
        out.push_str(&format!(
            "\n    {mark} {:<8} {:<28} {}",
            r.stage, r.code, r.message
        ));
    }
    out
}

#[test]
fn trust_levels_are_read_in_short_and_full_form_in_any_case() {
    assert_eq!(trust_level("L3"), Ok(TrustLevel::L3ActApprove));
    assert_eq!(trust_level("l3_act_approve"), Ok(TrustLevel::L3ActApprove));
    assert!(trust_level("L3_ACT").is_err());
    assert!(trust_level("L9").is_err());
}
