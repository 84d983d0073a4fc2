//! Templates (minijinja, compiled once at start from files embedded in the binary) and
//! the small formatting helpers pages share. Every template is `.html`, so minijinja
//! escapes every value it prints: anything an agent or a policy wrote reaches the page
//! as text, never as markup.

use super::Caller;
use axum::response::Html;
use minijinja::value::Serde;
use minijinja::{context, Environment, Value};

const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("templates/layout.html")),
    ("error.html", include_str!("templates/error.html")),
    ("login.html", include_str!("templates/login.html")),
    ("approvals.html", include_str!("templates/approvals.html")),
    (
        "approvals_list.html",
        include_str!("templates/approvals_list.html"),
    ),
    ("halts.html", include_str!("templates/halts.html")),
    (
        "halt_confirm.html",
        include_str!("templates/halt_confirm.html"),
    ),
    ("audit.html", include_str!("templates/audit.html")),
    ("audit_list.html", include_str!("templates/audit_list.html")),
    ("entry.html", include_str!("templates/entry.html")),
    ("budgets.html", include_str!("templates/budgets.html")),
    ("agents.html", include_str!("templates/agents.html")),
    ("agent.html", include_str!("templates/agent.html")),
    ("policy.html", include_str!("templates/policy.html")),
];

pub struct Views {
    env: Environment<'static>,
}

impl Default for Views {
    fn default() -> Self {
        Self::new()
    }
}

impl Views {
    pub fn new() -> Self {
        let mut env = Environment::new();
        // The default already escapes `.html`; said again so no change of default can
        // turn it off unnoticed.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("console template {name} does not compile: {e}"));
        }
        Self { env }
    }

    /// Renders a template; a rendering fault is logged and shown as a plain error.
    pub fn render(&self, name: &str, ctx: Value) -> Html<String> {
        match self.env.get_template(name).and_then(|t| t.render(ctx)) {
            Ok(html) => Html(html),
            Err(e) => {
                tracing::error!(template = name, error = %e, "console template failed");
                Html("<!doctype html><title>Arbiter</title><p>The page could not be rendered; see the server log.</p>".to_owned())
            }
        }
    }

    /// A full page for a signed-in caller: the layout's context plus the page's own.
    pub fn page(
        &self,
        name: &str,
        caller: &Caller,
        flash: Option<super::session::Flash>,
        nav: &str,
        ctx: Value,
    ) -> Html<String> {
        let roles: Vec<&str> = caller.principal.roles.iter().map(|r| r.name()).collect();
        self.render(
            name,
            context! {
                me => caller.principal.name.as_str(),
                roles => roles.join(", "),
                operates => caller.operates(),
                dev => caller.dev,
                csrf => caller.session.csrf.as_str(),
                nav => nav,
                flash => Serde(flash),
                signed_in => true,
                ..ctx
            },
        )
    }

    /// A page that explains a refusal or an error.
    pub fn error(&self, message: &str) -> Html<String> {
        self.render(
            "error.html",
            context! { message => message, signed_in => false, dev => false, nav => "", flash => false },
        )
    }
}

/// Micro-USD as dollars with all six decimals trimmed to at least two.
pub fn usd(micro: u64) -> String {
    let whole = micro / 1_000_000;
    let frac = format!("{:06}", micro % 1_000_000);
    let frac = frac.trim_end_matches('0');
    let frac = if frac.len() < 2 {
        format!("{frac:0<2}")
    } else {
        frac.to_owned()
    };
    format!("${whole}.{frac}")
}

/// A duration in words a human reads at a glance ("42 s", "5 min", "3 h", "2 d").
pub fn span(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

/// RFC 3339 (UTC, milliseconds) for a Unix-ms time.
pub fn when(ms: i64) -> String {
    crate::audit::canonical::format_ts(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_and_spans_read_well() {
        assert_eq!(usd(0), "$0.00");
        assert_eq!(usd(1_500_000), "$1.50");
        assert_eq!(usd(2_000_123), "$2.000123");
        assert_eq!(span(42_000), "42 s");
        assert_eq!(span(600_000), "10 min");
        assert_eq!(span(-5), "0 s");
    }

    #[test]
    fn every_template_compiles_and_escapes() {
        let v = Views::new();
        let html = v.error("<script>alert(1)</script>").0;
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
    }
}
