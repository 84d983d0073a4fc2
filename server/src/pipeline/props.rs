//! Property: the decision for an API call depends on what its URL means, not how it is
//! spelled. Every respelling (case, default port, trailing dot, escapes of unreserved
//! characters, IDNA forms, dot segments, fragments) of a URL either is refused by
//! `canonical_url` or gets exactly the decision of the URL's canonical form, through
//! allow/deny lists and `approval: always` action rules alike (issue 14 defect 4).

use super::*;
use crate::domain::props::{respell, respellings, url_parts};
use crate::domain::{canonical_url, Action, ApiCall};
use crate::policy::compile;
use proptest::prelude::*;

fn policy(deny_prefix: &str) -> crate::policy::CompiledPolicy {
    let yaml = format!(
        r#"
version: 1
actions:
  - match: {{api: "POST {deny_prefix}pay/**"}}
    approval: always
agents:
  - id: "bot"
    apis:
      allow: ["* https://**", "* http://**"]
      deny: ["* {deny_prefix}admin/**", "DELETE {deny_prefix}**"]
"#
    );
    compile(yaml.as_bytes(), "props.yaml").unwrap()
}

fn decide(
    policy: &crate::policy::CompiledPolicy,
    method: &str,
    url: String,
) -> (Verdict, Vec<String>) {
    let action = Action {
        api: Some(ApiCall {
            method: method.into(),
            url,
        }),
        ..Default::default()
    };
    let state = crate::state::RuntimeState::default();
    let d = run(
        &Request {
            agent_id: "bot",
            session_id: None,
            action: &action,
            min_trust: None,
            explain: false,
            approval_id: None,
            delegation: None,
        },
        &Snapshot {
            policy,
            state: &state,
            now_ms: 1_000,
            store_available: true,
        },
    );
    (d.verdict, d.reasons.into_iter().map(|r| r.code).collect())
}

proptest! {
    #[test]
    fn a_respelled_url_gets_the_decision_of_its_canonical_form(
        mut parts in url_parts(),
        how in respellings(),
        head in prop_oneof![Just("admin"), Just("pay"), Just("public")],
        method in prop_oneof![Just("GET"), Just("POST"), Just("DELETE")],
    ) {
        // Below the head segment: `…/admin/**` covers `/admin/x`, not `/admin`.
        parts.segments.insert(0, head.to_owned());
        if parts.segments.len() == 1 {
            parts.segments.push("x".into());
        }
        let canonical = canonical_url("action.api.url", &parts.plain()).unwrap();
        let origin = &canonical[..canonical[8..].find('/').unwrap() + 8];
        let policy = policy(&format!("{origin}/"));
        let want = decide(&policy, method, canonical.clone());
        if head == "admin" || method == "DELETE" {
            prop_assert_eq!(want.0, Verdict::Deny, "{:?}", want.1);
        }
        let spelled = respell(&parts, &how);
        let url = canonical_url("action.api.url", &spelled).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(decide(&policy, method, url), want, "{}", spelled);
    }
}
