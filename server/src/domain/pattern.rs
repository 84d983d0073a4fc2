use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// A compiled list of glob patterns. Tool globs let `*` match any character; URL globs
/// keep `/` as a separator (`*` stays inside one path segment, `**` crosses segments).
#[derive(Debug, Clone)]
pub struct GlobList {
    patterns: Vec<String>,
    set: GlobSet,
}

impl GlobList {
    pub fn new(patterns: &[String], separator_aware: bool) -> Result<Self, String> {
        let mut builder = GlobSetBuilder::new();
        for p in patterns {
            builder.add(compile(p, separator_aware)?);
        }
        let set = builder.build().map_err(|e| e.to_string())?;
        Ok(Self {
            patterns: patterns.to_vec(),
            set,
        })
    }

    pub fn empty() -> Self {
        Self {
            patterns: Vec::new(),
            set: GlobSet::empty(),
        }
    }

    pub fn is_match(&self, value: &str) -> bool {
        self.set.is_match(value)
    }

    /// The first pattern (in file order) that matches, for explanations.
    pub fn first_match(&self, value: &str) -> Option<&str> {
        self.set
            .matches(value)
            .into_iter()
            .min()
            .map(|i| self.patterns[i].as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The patterns as written.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

fn compile(pattern: &str, separator_aware: bool) -> Result<Glob, String> {
    if pattern.is_empty() {
        return Err("empty pattern".into());
    }
    GlobBuilder::new(pattern)
        .literal_separator(separator_aware)
        .backslash_escape(true)
        .build()
        .map_err(|e| format!("invalid glob {pattern:?}: {}", e.kind()))
}

/// An API pattern: `METHOD URL-glob`, where METHOD may be `*`.
#[derive(Debug, Clone)]
pub struct ApiPattern {
    pub text: String,
    method: Option<String>,
    url: GlobList,
}

impl ApiPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (method, url) = text
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("{text:?} must look like \"METHOD URL-glob\", e.g. \"GET https://api.example.com/**\""))?;
        let method = method.to_ascii_uppercase();
        let method = if method == "*" { None } else { Some(method) };
        // Requests are matched in canonical form, so the glob is brought to it too.
        let url = super::canonical_url_glob(url.trim())?;
        Ok(Self {
            text: text.to_owned(),
            method,
            url: GlobList::new(&[url], true)?,
        })
    }

    pub fn matches(&self, method: &str, url: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method) && self.url.is_match(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(p: &[&str]) -> GlobList {
        GlobList::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>(), false).unwrap()
    }

    #[test]
    fn tool_globs_match_whole_names() {
        let l = list(&["read_*", "send_email"]);
        assert!(l.is_match("read_invoice"));
        assert!(l.is_match("send_email"));
        assert!(!l.is_match("send_emails"));
        assert_eq!(l.first_match("read_x"), Some("read_*"));
    }

    #[test]
    fn api_patterns_check_method_and_keep_segments() {
        let p = ApiPattern::parse("GET https://api.example.com/v1/*").unwrap();
        assert!(p.matches("GET", "https://api.example.com/v1/charges"));
        assert!(!p.matches("POST", "https://api.example.com/v1/charges"));
        assert!(!p.matches("GET", "https://api.example.com/v1/charges/ch_1"));
        let any = ApiPattern::parse("* https://api.example.com/**").unwrap();
        assert!(any.matches("DELETE", "https://api.example.com/v1/a/b"));
        assert!(ApiPattern::parse("https://nope").is_err());
    }

    #[test]
    fn api_patterns_match_every_spelling_of_a_url() {
        let deny = ApiPattern::parse("* HTTPS://API.example.com:443/admin/**").unwrap();
        for spelling in [
            "https://api.example.com:443/admin/users",
            "https://api.example.com./admin/users",
            "https://API.EXAMPLE.COM/admin/users",
            "https://api.example.com/x/../admin/users",
            "https://api.example.com/%61dmin/users",
        ] {
            let url = super::super::canonical_url("action.api.url", spelling).unwrap();
            assert!(deny.matches("GET", &url), "{spelling} → {url}");
        }
    }
}
