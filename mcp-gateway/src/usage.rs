//! What a forwarded call cost, for Record: the usage a tool server reports in its result's
//! `_meta["io.github.arbiter/usage"]` (`{micro_usd?, model?, input_tokens?,
//! output_tokens?}`, integers), else the tool's configured price, else nothing (a call
//! with no price is recorded at $0, as before prices existed).
//!
//! An upstream is on the gateway's allowlist, so what it reports is believed; a malformed
//! report is ignored (logged) and the price is charged instead, so a broken tool server
//! cannot make its calls free by sending garbage.

use arbiter_client::proto;
use rmcp::model::CallToolResult;
use serde::Deserialize;

/// The `_meta` key a tool server may report its usage under.
pub const USAGE_META: &str = "io.github.arbiter/usage";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reported {
    micro_usd: Option<u64>,
    #[serde(default)]
    model: String,
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
}

/// The usage to Record for a result of a tool priced at `price` micro-USD per call.
pub(crate) fn of(result: Option<&CallToolResult>, price: Option<u64>) -> Option<proto::Usage> {
    let reported = result
        .and_then(|r| r.meta.as_ref())
        .and_then(|m| m.0.get(USAGE_META))
        .and_then(|v| match Reported::deserialize(v) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "malformed usage in a tool result; the price is charged");
                None
            }
        });
    match reported {
        Some(r) => {
            // With a model and no cost Arbiter prices the tokens; with neither the
            // tokens price nothing, so the call's configured price is charged.
            let fallback = if r.model.is_empty() { price } else { None };
            Some(proto::Usage {
                micro_usd: r.micro_usd.or(fallback).map(clamp),
                model: r.model,
                input_tokens: clamp(r.input_tokens),
                output_tokens: clamp(r.output_tokens),
            })
        }
        None => price.map(|p| proto::Usage {
            micro_usd: Some(clamp(p)),
            ..Default::default()
        }),
    }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::{ContentBlock, MetaObject};
    use serde_json::json;

    fn result(meta: serde_json::Value) -> CallToolResult {
        let mut r = CallToolResult::success(vec![ContentBlock::text("ok")]);
        let mut m = serde_json::Map::new();
        m.insert(USAGE_META.to_owned(), meta);
        r.meta = Some(MetaObject(m));
        r
    }

    #[test]
    fn a_reported_cost_wins_over_the_price() {
        let u = of(
            Some(&result(json!({"micro_usd": 7, "input_tokens": 3}))),
            Some(20),
        )
        .unwrap();
        assert_eq!((u.micro_usd, u.input_tokens), (Some(7), 3));
    }

    #[test]
    fn without_a_report_the_price_is_charged() {
        let plain = CallToolResult::success(vec![]);
        assert_eq!(of(Some(&plain), Some(20)).unwrap().micro_usd, Some(20));
        assert!(of(Some(&plain), None).is_none());
        assert_eq!(of(None, Some(20)).unwrap().micro_usd, Some(20));
    }

    #[test]
    fn a_malformed_report_is_ignored_and_the_price_charged() {
        let bad = result(json!({"micro_usd": -5}));
        assert_eq!(of(Some(&bad), Some(20)).unwrap().micro_usd, Some(20));
        let unknown = result(json!({"usd": 1}));
        assert_eq!(of(Some(&unknown), Some(20)).unwrap().micro_usd, Some(20));
    }

    #[test]
    fn tokens_with_a_model_are_left_for_arbiter_to_price() {
        let r = result(json!({"model": "gpt-4o", "input_tokens": 1000}));
        let u = of(Some(&r), None).unwrap();
        assert_eq!((u.model.as_str(), u.micro_usd), ("gpt-4o", None));
    }
}
