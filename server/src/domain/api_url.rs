//! One spelling per URL. Every `action.api.url` is parsed by a WHATWG-conformant parser
//! (the `url` crate, the algorithm browsers and most HTTP clients follow) and rewritten
//! to one canonical form before any pattern sees it, and URL globs in a policy are
//! brought to the same form when they are compiled. So `HTTPS://API.example.com:443/x`,
//! `https://api.example.com./x` and `https://api.example.com/a/../x` are all
//! `https://api.example.com/x` to a deny rule, to the digest and in the audit entry.
//!
//! Spellings that different HTTP stacks read differently are refused rather than
//! guessed: backslashes, user info, empty path segments, encoded `/`, `\` or NUL in the
//! path, control and format characters.

use super::ParseError;
use url::{Host, Url};

const MAX_URL: usize = 2048;

/// The canonical form of an http(s) URL: scheme and host lower-cased, IDNA host in
/// ASCII, default port dropped, one trailing dot of the host dropped, dot segments
/// resolved, percent-encoding normalised (unreserved characters decoded, hex digits
/// upper-case), fragment dropped, an empty path written `/`.
pub fn canonical_url(field: &str, raw: &str) -> Result<String, ParseError> {
    let bad = |why: String| ParseError::new(field, why);
    let chars = raw.chars().count();
    if chars == 0 || chars > MAX_URL {
        return Err(bad(format!("must be 1–{MAX_URL} characters, got {chars}")));
    }
    if let Some(c) = raw
        .chars()
        .find(|c| c.is_whitespace() || super::text::is_invisible(*c))
    {
        return Err(bad(format!(
            "must not contain whitespace, control or format characters (found U+{:04X})",
            c as u32
        )));
    }
    if raw.contains('\\') {
        return Err(bad(
            "must not contain a backslash (HTTP clients disagree whether it means /)".into(),
        ));
    }
    let url = Url::parse(raw).map_err(|e| bad(format!("must be an absolute http(s) URL: {e}")))?;
    let scheme = url.scheme();
    if scheme != "http" && scheme != "https" {
        return Err(bad(format!(
            "must be an http or https URL, got scheme {scheme:?}"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry user info (user:password@)".into()));
    }
    let host = match url.host() {
        Some(Host::Domain(d)) => {
            let d = d.strip_suffix('.').unwrap_or(d);
            if d.is_empty() || d.ends_with('.') || d.contains("..") {
                return Err(bad(format!("has an invalid host {d:?}")));
            }
            d.to_owned()
        }
        Some(Host::Ipv4(ip)) => ip.to_string(),
        Some(Host::Ipv6(ip)) => format!("[{ip}]"),
        None => return Err(bad("needs a host".into())),
    };
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let path = normalize_percent(url.path());
    if path.contains("//") {
        return Err(bad("must not have an empty path segment (//)".into()));
    }
    for encoded in ["%2F", "%5C", "%00"] {
        if path.contains(encoded) {
            return Err(bad(format!(
                "must not encode / or \\ or NUL in the path ({encoded}): servers disagree on what it means"
            )));
        }
    }
    let query = url
        .query()
        .map(|q| format!("?{}", normalize_percent(q)))
        .unwrap_or_default();
    Ok(format!("{scheme}://{host}{port}{path}{query}"))
}

/// Decodes percent-encoded unreserved characters (RFC 3986 §2.3: they mean the same
/// encoded or not) and upper-cases the hex digits of every other escape.
fn normalize_percent(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = (bytes[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match escape {
            Some(c) if c.is_ascii_alphanumeric() || b"-._~".contains(&c) => {
                out.push(c as char);
                i += 3;
            }
            Some(c) => {
                out.push_str(&format!("%{c:02X}"));
                i += 3;
            }
            None => {
                let ch = s[i..].chars().next().expect("in bounds");
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    out
}

/// Brings the URL glob of an API pattern to the canonical form URLs are matched in:
/// scheme and host lower-cased, default port and a trailing host dot dropped. A glob
/// that no canonical URL could match (user info, a backslash, dot or empty segments, a
/// needlessly encoded character) is refused with what to write instead.
pub fn canonical_url_glob(glob: &str) -> Result<String, String> {
    let (scheme, rest) = glob
        .split_once("://")
        .ok_or_else(|| format!("URL glob {glob:?} must start with http:// or https://"))?;
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(
        scheme.as_str(),
        "http" | "https" | "*" | "http*" | "http[s]"
    ) {
        return Err(format!(
            "URL glob {glob:?} must start with http:// or https://"
        ));
    }
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.contains('@') || glob.contains('\\') || glob.contains('#') {
        return Err(format!(
            "URL glob {glob:?} can never match: URLs are matched without user info, backslashes or fragments"
        ));
    }
    if !authority.is_ascii() {
        return Err(format!(
            "URL glob {glob:?}: write the host in its ASCII (punycode) form{}",
            ascii_host(authority)
                .map(|h| format!(", e.g. {h}"))
                .unwrap_or_default()
        ));
    }
    let mut authority = authority.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => Some(":443"),
        "http" => Some(":80"),
        _ => None,
    };
    if let Some(p) = default_port.filter(|p| authority.ends_with(p)) {
        authority.truncate(authority.len() - p.len());
    }
    let (host, port) = match authority.rfind(':').filter(|_| !authority.ends_with(']')) {
        Some(i) => authority.split_at(i),
        None => (authority.as_str(), ""),
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let path_only = path.split('?').next().unwrap_or("");
    if path_only.contains("//")
        || path_only
            .split('/')
            .any(|seg| seg == "." || seg == ".." || seg.eq_ignore_ascii_case("%2e"))
    {
        return Err(format!(
            "URL glob {glob:?} can never match: URLs are matched with dot segments resolved and without empty segments (//)"
        ));
    }
    let normalized = normalize_percent(path);
    if normalized != path {
        return Err(format!(
            "URL glob {glob:?} can never match: percent-encoding is normalised before matching; write {:?}",
            format!("{scheme}://{host}{port}{normalized}")
        ));
    }
    Ok(format!("{scheme}://{host}{port}{path}"))
}

fn ascii_host(authority: &str) -> Option<String> {
    let url = Url::parse(&format!("https://{authority}/")).ok()?;
    url.host_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(u: &str) -> String {
        canonical_url("action.api.url", u).unwrap_or_else(|e| panic!("{u}: {e}"))
    }

    #[test]
    fn spellings_of_one_url_have_one_canonical_form() {
        let want = "https://api.example.com/admin/users";
        for spelling in [
            "https://api.example.com/admin/users",
            "HTTPS://API.Example.COM/admin/users",
            "https://api.example.com:443/admin/users",
            "https://api.example.com./admin/users",
            "https://api.example.com/v1/../admin/users",
            "https://api.example.com/./admin/users",
            "https://api.example.com/%2e%2E/admin/users",
            "https://api.example.com/%61dmin/users",
            "https://api.example.com/admin/users#fragment",
        ] {
            assert_eq!(canon(spelling), want, "{spelling}");
        }
        assert_eq!(canon("http://a.example.com:80"), "http://a.example.com/");
        assert_eq!(
            canon("https://a.example.com:8443/x"),
            "https://a.example.com:8443/x"
        );
        assert_eq!(
            canon("https://a.example.com/x?q=%7e%2f"),
            "https://a.example.com/x?q=~%2F"
        );
        assert_eq!(
            canon("https://bücher.example/x"),
            "https://xn--bcher-kva.example/x"
        );
        assert_eq!(canon("http://0x7f.1/x"), "http://127.0.0.1/x");
    }

    #[test]
    fn ambiguous_spellings_are_refused_naming_the_field() {
        for bad in [
            "https://api.example.com\\admin/users",
            "https://user:pw@api.example.com/x",
            "https://api.example.com//admin",
            "https://api.example.com/admin%2Fusers",
            "https://api.example.com/a\u{1b}[2J",
            "https://api.example.com/a\u{202e}b",
            "https://api.example.com/a b",
            "ftp://api.example.com/x",
            "api.example.com/x",
            "https://",
        ] {
            let e = canonical_url("action.api.url", bad).unwrap_err();
            assert_eq!(e.field, "action.api.url", "{bad}");
        }
    }

    #[test]
    fn globs_are_brought_to_the_canonical_form_or_refused() {
        assert_eq!(
            canonical_url_glob("HTTPS://API.example.com:443/v1/**").unwrap(),
            "https://api.example.com/v1/**"
        );
        assert_eq!(
            canonical_url_glob("https://*.example.com./v1/*").unwrap(),
            "https://*.example.com/v1/*"
        );
        assert_eq!(
            canonical_url_glob("https://api.example.com:8443/**").unwrap(),
            "https://api.example.com:8443/**"
        );
        for bad in [
            "https://api.example.com/v1/../admin/**",
            "https://api.example.com//x",
            "https://api.example.com/%61dmin/**",
            "https://u@api.example.com/**",
            "https://bücher.example/**",
            "api.example.com/**",
        ] {
            assert!(canonical_url_glob(bad).is_err(), "{bad}");
        }
    }
}
