use super::ParseError;
use std::fmt;

/// Characters allowed in agent and session ids: printable, unambiguous in logs and globs.
fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._:@/-".contains(c)
}

/// A validated identifier of 1–128 characters of `[A-Za-z0-9._:@/-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(String);

impl Id {
    pub fn parse(field: &str, value: &str) -> Result<Self, ParseError> {
        let n = value.chars().count();
        if n == 0 || n > 128 {
            return Err(ParseError::new(
                field,
                format!("must be 1–128 characters, got {n}"),
            ));
        }
        if let Some(bad) = value.chars().find(|c| !id_char(*c)) {
            return Err(ParseError::new(
                field,
                format!("must use only [A-Za-z0-9._:@/-], found {bad:?}"),
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of an agent.
pub type AgentId = Id;
/// The id of one run of an agent.
pub type SessionId = Id;

impl Id {
    /// Parses an optional id: empty means absent.
    pub fn parse_optional(field: &str, value: &str) -> Result<Option<Self>, ParseError> {
        if value.is_empty() {
            Ok(None)
        } else {
            Self::parse(field, value).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_oversized_ids_are_refused_with_the_limit() {
        assert!(Id::parse("agent_id", "")
            .unwrap_err()
            .problem
            .contains("1–128"));
        let long = "a".repeat(129);
        assert!(Id::parse("agent_id", &long)
            .unwrap_err()
            .problem
            .contains("got 129"));
        assert!(Id::parse("agent_id", "billing agent").is_err());
        assert!(Id::parse("agent_id", "billing-agent@team/1").is_ok());
    }
}
