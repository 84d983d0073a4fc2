//! The bytes an endpoint receives: Standard Webhooks JSON
//! (`{"type", "timestamp", "data"}`) or a Slack incoming-webhook message (`text` plus
//! `blocks`). Slack text is read by a human, so everything that comes from an agent or
//! an operator is escaped for mrkdwn.

use super::event::{Event, EventType};
use super::settings::Format;
use crate::audit::canonical::format_ts;
use serde_json::{json, Value};

pub fn body(format: Format, ev: &Event, console_url: Option<&url::Url>) -> Vec<u8> {
    let v = match format {
        Format::Standard => standard(ev, console_url),
        Format::Slack => slack(ev, console_url),
    };
    serde_json::to_vec(&v).expect("JSON values serialize")
}

fn standard(ev: &Event, console_url: Option<&url::Url>) -> Value {
    let mut data = ev.data.clone();
    if let (Some(link), Some(obj)) = (console_link(ev, console_url), data.as_object_mut()) {
        obj.insert("console_url".into(), Value::String(link));
    }
    json!({"type": ev.ty.name(), "timestamp": format_ts(ev.ts_ms), "data": data})
}

/// The console page of the event's subject (the approval, or the halts page).
fn console_link(ev: &Event, base: Option<&url::Url>) -> Option<String> {
    let base = base?;
    let path = match ev.ty {
        EventType::ApprovalRequested | EventType::ApprovalDecided | EventType::ApprovalExpired => {
            format!("approvals/{}", ev.data.get("approval_id")?.as_str()?)
        }
        EventType::HaltEngaged | EventType::HaltReleased | EventType::WatchdogAction => {
            "halts".into()
        }
        EventType::BudgetThreshold => "budgets".into(),
    };
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        base.set_path(&format!("{}/", base.path()));
    }
    // `join` percent-encodes the id; ids are names (no '/', '?', '#').
    base.join(&path).ok().map(String::from)
}

/// Escapes text for Slack mrkdwn: `&`, `<` and `>` are control characters there
/// (`<url|label>` is a link, `<!channel>` a mention).
pub fn escape_mrkdwn(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn field(ev: &Event, key: &str) -> String {
    match ev.data.get(key) {
        Some(Value::String(s)) => escape_mrkdwn(s),
        Some(Value::Null) | None => "-".into(),
        Some(v) => escape_mrkdwn(&v.to_string()),
    }
}

fn slack(ev: &Event, console_url: Option<&url::Url>) -> Value {
    let f = |k: &str| field(ev, k);
    let headline = match ev.ty {
        EventType::ApprovalRequested => {
            let what = [("tool", "tool"), ("api", "API"), ("model", "model")]
                .iter()
                .find(|(k, _)| ev.data.get(*k).is_some_and(|v| !v.is_null()))
                .map(|(k, label)| format!("{label} `{}`", f(k)))
                .unwrap_or_else(|| "an action".into());
            format!(
                ":raised_hand: Approval requested: agent *{}* (session {}) wants {what}",
                f("agent_id"),
                f("session_id")
            )
        }
        EventType::ApprovalDecided => format!(
            ":white_check_mark: Approval {} {} by *{}*: {}",
            f("approval_id"),
            f("decision"),
            f("approver"),
            f("reason")
        ),
        EventType::ApprovalExpired => format!(":hourglass: Approval {} expired", f("approval_id")),
        EventType::HaltEngaged => format!(
            ":octagonal_sign: Halt engaged on {} ({}) by *{}*: {}",
            f("target"),
            f("mode"),
            f("principal"),
            f("reason")
        ),
        EventType::HaltReleased => format!(
            ":arrow_forward: Halt released on {} by *{}*: {}",
            f("target"),
            f("principal"),
            f("reason")
        ),
        EventType::WatchdogAction => {
            format!(":dog: Watchdog halted {}: {}", f("target"), f("reason"))
        }
        EventType::BudgetThreshold => format!(
            ":moneybag: Budget *{}* ({}) reached {} of its {} cap: {} of {}",
            f("budget"),
            f("scope_key"),
            ev.data["share"]
                .as_f64()
                .map_or("-".into(), |s| format!("{:.0}%", s * 100.0)),
            f("dimension"),
            f("spent"),
            f("cap")
        ),
    };
    let mut blocks = vec![json!({"type": "section", "text": {"type": "mrkdwn", "text": headline}})];
    if let Some(link) = console_link(ev, console_url) {
        // The URL is ours (configured base + an id); escaped all the same.
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn",
            "text": format!("<{}|Open in the Arbiter console>", escape_mrkdwn(&link))}]}));
    }
    json!({"text": headline, "blocks": blocks})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(tool: &str) -> Event {
        Event {
            id: "msg_x".into(),
            ty: EventType::ApprovalRequested,
            seq: 3,
            ts_ms: 0,
            data: json!({"approval_id": "apr_1", "agent_id": "bot", "session_id": "s", "tool": tool}),
        }
    }

    #[test]
    fn the_standard_payload_has_type_timestamp_data_and_a_console_link() {
        let base = url::Url::parse("https://arbiter.example.com/console").unwrap();
        let v: Value =
            serde_json::from_slice(&body(Format::Standard, &request("db.drop"), Some(&base)))
                .unwrap();
        assert_eq!(v["type"], "approval.requested");
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["data"]["approval_id"], "apr_1");
        assert_eq!(
            v["data"]["console_url"],
            "https://arbiter.example.com/console/approvals/apr_1"
        );
    }

    #[test]
    fn agent_text_in_slack_cannot_make_links_or_mentions() {
        let v: Value = serde_json::from_slice(&body(
            Format::Slack,
            &request("<!channel> <https://evil.example|click> & co"),
            None,
        ))
        .unwrap();
        let text = v["text"].as_str().unwrap();
        assert!(
            text.contains("&lt;!channel&gt; &lt;https://evil.example|click&gt; &amp; co"),
            "{text}"
        );
        assert!(!text.contains('<') && !text.contains('>'));
        assert_eq!(v["blocks"][0]["text"]["type"], "mrkdwn");
    }
}
