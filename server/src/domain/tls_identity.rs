//! The name a client certificate gives its holder, as a principal is bound to it.

use std::fmt;
use std::str::FromStr;

/// One identity a verified client certificate carries, typed by the certificate
/// field it comes from. The type is part of the identity: a subject CN that reads
/// `spiffe://…` never matches a principal bound to that URI SAN, because a CA may
/// check SANs more strictly than free-form subject names.
///
/// Text form (what `--tls-identity` takes and what is stored):
/// - a URI with a scheme, e.g. `spiffe://example.org/ns/prod/sa/billing`: a URI SAN,
///   compared byte for byte;
/// - `dns:NAME`: a DNS SAN, compared ASCII case-insensitively (stored lowercase,
///   without a trailing dot); wildcard names are refused, since they name a set of
///   hosts rather than one caller;
/// - `cn:NAME`: the subject Common Name, compared byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TlsIdentity {
    Uri(String),
    Dns(String),
    CommonName(String),
}

/// Longest identity accepted, in bytes (SPIFFE IDs are limited to 2048).
pub const MAX_TLS_IDENTITY: usize = 2048;

impl TlsIdentity {
    /// A URI SAN as found in a certificate.
    pub fn uri(uri: &str) -> Result<Self, String> {
        let (scheme, rest) = uri
            .split_once("://")
            .ok_or_else(|| format!("{uri:?} is not a URI with a scheme (like spiffe://…)"))?;
        let scheme_ok = scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !scheme_ok || rest.is_empty() {
            return Err(format!(
                "{uri:?} is not a URI with a scheme (like spiffe://…)"
            ));
        }
        Self::checked(Self::Uri(uri.to_owned()))
    }

    /// A DNS SAN as found in a certificate.
    pub fn dns(name: &str) -> Result<Self, String> {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        if name.is_empty() {
            return Err("a DNS name must not be empty".into());
        }
        if name.contains('*') {
            return Err(format!(
                "{name:?} is a wildcard; a wildcard names many hosts, not one caller"
            ));
        }
        Self::checked(Self::Dns(name))
    }

    /// A subject Common Name as found in a certificate.
    pub fn common_name(cn: &str) -> Result<Self, String> {
        if cn.is_empty() {
            return Err("a Common Name must not be empty".into());
        }
        Self::checked(Self::CommonName(cn.to_owned()))
    }

    fn checked(self) -> Result<Self, String> {
        let value = self.value();
        if value.len() > MAX_TLS_IDENTITY {
            return Err(format!(
                "must be at most {MAX_TLS_IDENTITY} bytes, got {}",
                value.len()
            ));
        }
        // Spaces are fine in a subject name ("Jane Doe"), never in a URI or DNS name.
        let spaces_ok = matches!(self, Self::CommonName(_));
        if value
            .chars()
            .any(|c| c.is_control() || (!spaces_ok && c.is_whitespace()))
        {
            return Err(format!(
                "{value:?} contains whitespace or control characters"
            ));
        }
        Ok(self)
    }

    /// The field's value without its type.
    pub fn value(&self) -> &str {
        match self {
            Self::Uri(v) | Self::Dns(v) | Self::CommonName(v) => v,
        }
    }

    /// The certificate field it was read from, for messages.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Uri(_) => "URI SAN",
            Self::Dns(_) => "DNS SAN",
            Self::CommonName(_) => "subject CN",
        }
    }
}

impl fmt::Display for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uri(v) => f.write_str(v),
            Self::Dns(v) => write!(f, "dns:{v}"),
            Self::CommonName(v) => write!(f, "cn:{v}"),
        }
    }
}

impl FromStr for TlsIdentity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const FORMS: &str = "use a URI SAN (spiffe://…), dns:NAME or cn:NAME";
        if let Some(name) = s.strip_prefix("dns:") {
            Self::dns(name)
        } else if let Some(cn) = s.strip_prefix("cn:") {
            Self::common_name(cn)
        } else if s.contains("://") {
            Self::uri(s)
        } else {
            Err(format!("{s:?} is not a certificate identity; {FORMS}"))
        }
        .map_err(|e| {
            if e.contains(FORMS) {
                e
            } else {
                format!("{e}; {FORMS}")
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_form_round_trips_for_every_field() {
        for text in [
            "spiffe://example.org/ns/prod/sa/billing",
            "dns:agent-1.example.org",
            "cn:ops-1",
        ] {
            let id: TlsIdentity = text.parse().unwrap();
            assert_eq!(id.to_string(), text);
        }
    }

    #[test]
    fn dns_names_are_case_insensitive_and_ignore_a_trailing_dot() {
        let a: TlsIdentity = "dns:Agent-1.Example.ORG.".parse().unwrap();
        assert_eq!(a, TlsIdentity::dns("agent-1.example.org").unwrap());
        assert_eq!(a.to_string(), "dns:agent-1.example.org");
    }

    #[test]
    fn the_field_type_is_part_of_the_identity() {
        let uri = TlsIdentity::uri("spiffe://example.org/a").unwrap();
        let cn = TlsIdentity::common_name("spiffe://example.org/a").unwrap();
        assert_ne!(uri, cn);
        assert_eq!(cn.to_string(), "cn:spiffe://example.org/a");
        assert_eq!(
            "cn:spiffe://example.org/a".parse::<TlsIdentity>().unwrap(),
            cn
        );
    }

    #[test]
    fn malformed_identities_are_refused_with_the_accepted_forms() {
        for bad in [
            "ops-1",
            "",
            "dns:",
            "cn:",
            "dns:*.example.org",
            "://nothing",
            "1x://a",
            "spiffe://",
            "dns:two words.example",
            "spiffe://example.org/a b",
            "spiffe://example.org/a\nb",
        ] {
            let err = bad.parse::<TlsIdentity>().unwrap_err();
            assert!(err.contains("dns:NAME or cn:NAME"), "{bad:?}: {err}");
        }
        assert_eq!(
            "cn:Jane Doe".parse::<TlsIdentity>().unwrap().value(),
            "Jane Doe"
        );
        let long = format!("cn:{}", "x".repeat(MAX_TLS_IDENTITY + 1));
        assert!(long.parse::<TlsIdentity>().is_err());
    }
}
