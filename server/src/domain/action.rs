use super::{Arguments, MicroUsd};
use serde_json::json;
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

impl Action {
    /// The canonical JSON form that digests, approvals and audit entries share. An
    /// action without arguments has no `arguments` key, so its digest is the one it had
    /// before arguments existed.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = json!({
            "tool": self.tool,
            "api": self.api.as_ref().map(|a| json!({"method": a.method, "url": a.url})),
            "model": self.model,
            "max_tokens": self.max_tokens,
            "estimate": {"micro_usd": self.estimate.micro_usd.0, "tokens": self.estimate.tokens},
            "data": self.data.iter().map(|d| json!({"data_type": d.data_type, "purpose": d.purpose})).collect::<Vec<_>>(),
            "category": self.category,
            "budget": self.budget,
        });
        if let Some(args) = &self.arguments {
            v["arguments"] = serde_json::Value::Object(args.as_map().clone());
        }
        v
    }

    pub fn digest(&self) -> ActionDigest {
        let bytes = serde_jcs::to_vec(&self.to_json()).expect("action JSON has no floats");
        ActionDigest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
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
