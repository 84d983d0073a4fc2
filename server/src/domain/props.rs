//! Property tests for URL canonicalisation, API patterns and tool globs (issue 14).
//!
//! Case counts follow proptest's `PROPTEST_CASES` (256 by default; `scripts/campaign.sh`
//! runs more). The URL strategies are shared with the pipeline's properties.

use super::{canonical_url, canonical_url_glob, text, ApiPattern, GlobList};
use proptest::prelude::*;
use unicode_normalization::UnicodeNormalization;

/// The proptest configuration of a property that is slow per case (signatures,
/// policy compiles): `default` cases unless `PROPTEST_CASES` says otherwise.
pub fn cases(default: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok());
    ProptestConfig::with_cases(n.unwrap_or(default))
}

/// A URL in canonical form, with the pieces a spelling may rewrite.
#[derive(Debug, Clone)]
pub struct UrlParts {
    pub https: bool,
    /// Host labels in their Unicode form (IDNA makes the canonical ASCII form).
    pub labels: Vec<String>,
    pub port: Option<u16>,
    pub segments: Vec<String>,
    pub query: Option<String>,
}

impl UrlParts {
    pub fn scheme(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }

    /// The URL written plainly (Unicode host, no default port, no dot segments).
    pub fn plain(&self) -> String {
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        let query = self
            .query
            .as_ref()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        format!(
            "{}://{}{port}/{}{query}",
            self.scheme(),
            self.labels.join("."),
            self.segments.join("/")
        )
    }
}

fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        // A label with `--` in its third and fourth places is reserved (RFC 5891
        // §4.2.3.1: `xn--` is an A-label that must decode), so it is not an ordinary
        // spelling of a host; the parser refuses such labels unless they decode.
        "[a-z][a-z0-9-]{0,10}[a-z0-9]".prop_filter("reserved label", |l| l.get(2..4) != Some("--")),
        Just("bücher".to_owned()),
        Just("ñandú".to_owned()),
        Just("例え".to_owned()),
    ]
}

fn segment() -> impl Strategy<Value = String> {
    // Unreserved characters and a few escapes of reserved ones; never empty, never a
    // dot segment.
    prop_oneof![
        4 => "[A-Za-z0-9_~-]{1,12}",
        1 => "[a-z]{1,4}%(3A|40|25|20)[a-z]{0,4}",
        1 => "[a-z]{1,4}\\.[a-z]{1,4}",
    ]
}

pub fn url_parts() -> impl Strategy<Value = UrlParts> {
    (
        any::<bool>(),
        prop::collection::vec(label(), 1..4),
        prop::option::weighted(0.2, prop_oneof![Just(8443u16), 1u16..=65535]),
        prop::collection::vec(segment(), 0..5),
        prop::option::weighted(0.3, "[a-z]{1,5}=[a-z0-9]{0,5}(&[a-z]=%7[eE])?"),
    )
        .prop_map(|(https, mut labels, port, segments, query)| {
            labels.push("example".into());
            let default = if https { 443 } else { 80 };
            UrlParts {
                https,
                labels,
                port: port.filter(|p| *p != default),
                segments,
                query,
            }
        })
}

/// One way of rewriting a URL that must not change what it means.
#[derive(Debug, Clone)]
pub enum Respelling {
    UpperScheme,
    UpperHost,
    DefaultPort,
    TrailingDot,
    /// Percent-encode the unreserved character at this position of the path (with
    /// lower- or upper-case hex).
    Encode(usize, bool),
    /// Insert `x/..` (or `.`) before this path segment, encoded or not.
    DotSegment(usize, bool),
    Fragment(String),
    AsciiHost,
    NfdHost,
}

pub fn respellings() -> impl Strategy<Value = Vec<Respelling>> {
    let one = prop_oneof![
        Just(Respelling::UpperScheme),
        Just(Respelling::UpperHost),
        Just(Respelling::DefaultPort),
        Just(Respelling::TrailingDot),
        (any::<usize>(), any::<bool>()).prop_map(|(i, l)| Respelling::Encode(i, l)),
        (any::<usize>(), any::<bool>()).prop_map(|(i, e)| Respelling::DotSegment(i, e)),
        "[a-z0-9/]{0,8}".prop_map(Respelling::Fragment),
        Just(Respelling::AsciiHost),
        Just(Respelling::NfdHost),
    ];
    prop::collection::vec(one, 0..6)
}

/// Writes `parts` with the given respellings applied.
pub fn respell(parts: &UrlParts, how: &[Respelling]) -> String {
    let mut scheme = parts.scheme().to_owned();
    let mut host = parts.labels.join(".");
    let mut port = parts.port.map(|p| format!(":{p}")).unwrap_or_default();
    let mut segments = parts.segments.clone();
    let mut fragment = String::new();
    for r in how {
        match r {
            Respelling::UpperScheme => scheme = scheme.to_ascii_uppercase(),
            Respelling::UpperHost => host = host.to_uppercase(),
            Respelling::DefaultPort if port.is_empty() => {
                port = if parts.https { ":443" } else { ":80" }.into()
            }
            Respelling::DefaultPort => {}
            Respelling::TrailingDot if !host.ends_with('.') => host.push('.'),
            Respelling::TrailingDot => {}
            Respelling::Encode(i, lower) => encode_one(&mut segments, *i, *lower),
            Respelling::DotSegment(i, encoded) => {
                // Before an existing segment: a dot segment at the end leaves a
                // trailing slash, which is another URL.
                let at = i % segments.len().max(1);
                let dots = if *encoded { "%2e%2E" } else { ".." };
                if i % 2 == 0 {
                    segments.insert(at, dots.into());
                    segments.insert(at, "x".into());
                } else {
                    segments.insert(at, if *encoded { "%2E" } else { "." }.into());
                }
            }
            Respelling::Fragment(f) => fragment = format!("#{f}"),
            Respelling::AsciiHost => {
                let ascii = url::Url::parse(&format!("http://{host}/"))
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_owned));
                if let Some(a) = ascii {
                    let dot = if host.ends_with('.') && !a.ends_with('.') {
                        "."
                    } else {
                        ""
                    };
                    host = format!("{a}{dot}");
                }
            }
            Respelling::NfdHost => host = host.nfd().collect(),
        }
    }
    let query = parts
        .query
        .as_ref()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    format!(
        "{scheme}://{host}{port}/{}{query}{fragment}",
        segments.join("/")
    )
}

fn encode_one(segments: &mut [String], i: usize, lower: bool) {
    let total: usize = segments.iter().map(String::len).sum();
    if total == 0 {
        return;
    }
    let mut at = i % total;
    for s in segments.iter_mut() {
        if at < s.len() {
            let c = s.as_bytes()[at];
            // Only unreserved characters outside an existing escape.
            let in_escape = s[..at].rfind('%').is_some_and(|p| at - p <= 2);
            if (c.is_ascii_alphanumeric() || b"-._~".contains(&c)) && !in_escape {
                let hex = format!("%{c:02X}");
                let hex = if lower { hex.to_ascii_lowercase() } else { hex };
                s.replace_range(at..at + 1, &hex);
            }
            return;
        }
        at -= s.len();
    }
}

fn canon(u: &str) -> Result<String, String> {
    canonical_url("action.api.url", u).map_err(|e| {
        assert_eq!(e.field, "action.api.url", "the error names the field");
        e.problem
    })
}

proptest! {
    #[test]
    fn any_string_is_canonicalised_or_refused_naming_the_field(s in "\\PC{0,64}|https?://\\PC{0,40}") {
        if let Ok(c) = canon(&s) {
            prop_assert_eq!(canon(&c), Ok(c.clone()), "canonical(canonical(x)) == canonical(x)");
            prop_assert!(c.starts_with("http://") || c.starts_with("https://"));
            let url = url::Url::parse(&c).unwrap();
            prop_assert!(url.username().is_empty() && url.password().is_none());
            prop_assert!(url.fragment().is_none() && !c.contains('\\'));
        }
    }

    #[test]
    fn canonical_form_is_idempotent(parts in url_parts(), how in respellings()) {
        let c = canon(&respell(&parts, &how)).map_err(TestCaseError::fail)?;
        prop_assert_eq!(canon(&c), Ok(c.clone()));
    }

    #[test]
    fn every_respelling_has_the_canonical_form_of_the_plain_url(parts in url_parts(), how in respellings()) {
        let want = canon(&parts.plain()).map_err(TestCaseError::fail)?;
        let spelled = respell(&parts, &how);
        prop_assert_eq!(canon(&spelled), Ok(want), "{}", spelled);
    }

    #[test]
    fn no_spelling_escapes_a_deny_pattern_that_covers_the_canonical_url(
        parts in url_parts(),
        how in respellings(),
        keep in 0usize..4,
        upper_glob in any::<bool>(),
    ) {
        let canonical = canon(&parts.plain()).map_err(TestCaseError::fail)?;
        // A deny glob over the URL's own prefix, written with the default port and in
        // upper case when `upper_glob`: it must still cover every spelling.
        let url = url::Url::parse(&canonical).unwrap();
        let host = url.host_str().unwrap();
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_else(|| {
            if upper_glob { if parts.https { ":443".into() } else { ":80".into() } } else { String::new() }
        });
        // `…/a/**` covers what is below `/a/`, not `/a` itself (docs/policy.md §3).
        let keep = if keep < parts.segments.len() { keep } else { 0 };
        let prefix = &parts.segments[..keep];
        let mut glob = format!("{}://{host}{port}/", parts.scheme());
        if upper_glob {
            glob = glob.to_ascii_uppercase();
        }
        let path: String = prefix.iter().map(|s| format!("{s}/")).collect();
        let deny = match ApiPattern::parse(&format!("* {glob}{}**", normalise_escapes(&path))) {
            Ok(d) => d,
            Err(e) => return Err(TestCaseError::reject(e)),
        };
        prop_assert!(deny.matches("GET", &canonical), "{} must cover {}", deny.text, canonical);
        let spelled = respell(&parts, &how);
        let c = canon(&spelled).map_err(TestCaseError::fail)?;
        prop_assert!(deny.matches("GET", &c), "{} escaped {} as {}", spelled, deny.text, c);
    }

    #[test]
    fn url_globs_are_canonical_or_refused(g in "(https?|HTTPS?|\\*)://\\PC{0,40}") {
        if let Ok(c) = canonical_url_glob(&g) {
            prop_assert_eq!(canonical_url_glob(&c), Ok(c.clone()));
        }
        let _ = ApiPattern::parse(&format!("GET {g}"));
    }

    #[test]
    fn a_denied_tool_is_denied_under_every_accepted_spelling(
        name in "[a-z][a-z0-9_.]{0,12}(é|ü|)",
        suffix in prop_oneof![Just(""), Just("\u{200b}"), Just("\u{202e}"), Just("\u{301}"), Just(" "), Just("\u{1b}[0m")],
        nfd in any::<bool>(),
        cut in 0usize..4,
    ) {
        let stem: String = name.chars().take(name.chars().count().saturating_sub(cut).max(1)).collect();
        let deny = GlobList::new(&[format!("{stem}*")], false).unwrap();
        let allow = GlobList::new(&["*".to_owned()], false).unwrap();
        prop_assert!(deny.is_match(&name));
        let spelled: String = if nfd { name.nfd().collect() } else { name.clone() };
        let spelled = format!("{spelled}{suffix}");
        // A spelling is either refused by the character set of names or still denied.
        if text::check_name("action.tool", &spelled, false).is_ok() {
            prop_assert!(allow.is_match(&spelled));
            prop_assert!(deny.is_match(&spelled), "{:?} escaped {:?}", spelled, deny.patterns());
        }
    }

    #[test]
    fn arbitrary_tool_globs_compile_or_are_refused(p in "\\PC{0,24}", v in "\\PC{0,24}") {
        if let Ok(g) = GlobList::new(&[p], false) {
            let _ = g.is_match(&v);
            let _ = g.first_match(&v);
        }
    }
}

/// Upper-cases the hex digits of escapes, as canonical globs must write them.
fn normalise_escapes(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let esc = rest.get(i..i + 3).unwrap_or(&rest[i..]);
        out.push_str(&esc.to_ascii_uppercase());
        rest = &rest[i + esc.len()..];
    }
    out.push_str(rest);
    out
}
