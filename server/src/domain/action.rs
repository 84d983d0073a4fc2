use super::{Arguments, MicroUsd};
use crate::jcs::{self, CanonicalMap};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::fmt;

/// An HTTP call: upper-case method and absolute URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiCall {
    pub method: String,
    pub url: String,
}

/// One personal-data access. `purpose: None` means the request named no purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataAccess {
    pub data_type: String,
    pub purpose: Option<String>,
}

/// The caller's cost estimate before pricing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    pub micro_usd: MicroUsd,
    pub tokens: u64,
}

/// What an agent wants to do, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Action {
    pub tool: Option<String>,
    pub api: Option<ApiCall>,
    pub model: Option<String>,
    pub max_tokens: u64,
    pub estimate: Estimate,
    pub data: Vec<DataAccess>,
    pub category: Option<String>,
    pub budget: Option<String>,
    /// The call's arguments; `None` for none (an empty object is none too).
    pub arguments: Option<Arguments>,
}

/// SHA-256 over the JCS encoding of an action, written `sha256:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActionDigest(pub String);

impl fmt::Display for ActionDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An action as JSON, with the arguments given (its own for the digest, redacted ones
/// for the audit log): the form that digests, approvals and audit entries share.
/// Fields are declared in JCS order (`crate::jcs`). An action without arguments has no
/// `arguments` member, so its digest is the one it had before arguments existed.
#[derive(Serialize)]
pub struct ActionJson<'a> {
    api: Option<ApiJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<CanonicalMap<'a>>,
    budget: Option<&'a str>,
    category: Option<&'a str>,
    data: Vec<DataJson<'a>>,
    estimate: EstimateJson,
    max_tokens: u64,
    model: Option<&'a str>,
    tool: Option<&'a str>,
}

#[derive(Serialize)]
struct ApiJson<'a> {
    method: &'a str,
    url: &'a str,
}

#[derive(Serialize)]
struct DataJson<'a> {
    data_type: &'a str,
    purpose: Option<&'a str>,
}

#[derive(Serialize)]
struct EstimateJson {
    micro_usd: u64,
    tokens: u64,
}

impl Action {
    /// This action as JSON with `arguments` in place of its own.
    pub fn json_with<'a>(&'a self, arguments: Option<&'a Map<String, Value>>) -> ActionJson<'a> {
        ActionJson {
            api: self.api.as_ref().map(|a| ApiJson {
                method: &a.method,
                url: &a.url,
            }),
            arguments: arguments.map(CanonicalMap),
            budget: self.budget.as_deref(),
            category: self.category.as_deref(),
            data: self
                .data
                .iter()
                .map(|d| DataJson {
                    data_type: &d.data_type,
                    purpose: d.purpose.as_deref(),
                })
                .collect(),
            estimate: EstimateJson {
                micro_usd: self.estimate.micro_usd.0,
                tokens: self.estimate.tokens,
            },
            max_tokens: self.max_tokens,
            model: self.model.as_deref(),
            tool: self.tool.as_deref(),
        }
    }

    /// This action as JSON, its own arguments included.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.json_with(self.arguments.as_ref().map(Arguments::as_map)))
            .expect("an action serializes")
    }

    pub fn digest(&self) -> ActionDigest {
        let text = jcs::to_string_any_number(
            &self.json_with(self.arguments.as_ref().map(Arguments::as_map)),
        );
        ActionDigest(format!("sha256:{}", hex::encode(Sha256::digest(text))))
    }

    /// A short human summary for logs and the CLI.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(t) = &self.tool {
            parts.push(format!("tool {t}"));
        }
        if let Some(a) = &self.api {
            parts.push(format!("{} {}", a.method, a.url));
        }
        if let Some(m) = &self.model {
            parts.push(format!("model {m}"));
        }
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The digest is the one the `json!` form this replaced gave (serde_jcs over the
    /// value), so approvals and receipts made by older releases still match.
    #[test]
    fn the_digest_is_unchanged_from_the_value_form() {
        let a = Action {
            tool: Some("mail.send".into()),
            api: Some(ApiCall {
                method: "POST".into(),
                url: "https://api.example.com/v1/x?q=1".into(),
            }),
            model: Some("gpt-x".into()),
            max_tokens: 1_000,
            estimate: Estimate {
                micro_usd: MicroUsd(2_500),
                tokens: 300,
            },
            data: vec![DataAccess {
                data_type: "email".into(),
                purpose: None,
            }],
            category: Some("comms".into()),
            budget: None,
            arguments: Arguments::parse(
                "action.arguments",
                json!({"to": ["a@b.c"], "f": 0.1, "big": u64::MAX, "\u{e000}": 1, "\u{1f600}": {"n": null}})
                    .as_object()
                    .unwrap()
                    .clone(),
            )
            .unwrap(),
        };
        let old = json!({
            "tool": a.tool,
            "api": {"method": "POST", "url": "https://api.example.com/v1/x?q=1"},
            "model": a.model,
            "max_tokens": 1_000,
            "estimate": {"micro_usd": 2_500, "tokens": 300},
            "data": [{"data_type": "email", "purpose": null}],
            "category": "comms",
            "budget": null,
            "arguments": a.arguments.as_ref().unwrap().as_map(),
        });
        let want = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(serde_jcs::to_vec(&old).unwrap()))
        );
        assert_eq!(a.digest().0, want);
        assert_eq!(a.to_json(), old);
    }

    #[test]
    fn digest_changes_with_the_action_and_is_stable() {
        let a = Action {
            tool: Some("send_email".into()),
            ..Default::default()
        };
        let mut b = a.clone();
        assert_eq!(a.digest(), b.digest());
        b.tool = Some("send_emails".into());
        assert_ne!(a.digest(), b.digest());
        assert!(a.digest().0.starts_with("sha256:"));
        assert_eq!(a.digest().0.len(), 7 + 64);
    }

    #[test]
    fn the_digest_binds_argument_values_but_not_their_spelling() {
        let with = |v: serde_json::Value| Action {
            tool: Some("delete.user".into()),
            arguments: Arguments::parse("action.arguments", v.as_object().unwrap().clone())
                .unwrap(),
            ..Default::default()
        };
        let u1 = with(json!({"user_id": "u1", "hard": true}));
        assert_ne!(
            u1.digest(),
            with(json!({"user_id": "u2", "hard": true})).digest()
        );
        // Key order is not part of the meaning (RFC 8785 sorts keys).
        assert_eq!(
            u1.digest(),
            with(json!({"hard": true, "user_id": "u1"})).digest()
        );
        // No arguments and an empty object are the same action as before arguments existed.
        let none = Action {
            tool: Some("delete.user".into()),
            ..Default::default()
        };
        assert_eq!(with(json!({})).digest(), none.digest());
        assert_ne!(u1.digest(), none.digest());
    }
}
