//! The arguments of a call (a tool call's arguments, an HTTP request's JSON body): a
//! JSON object inside documented limits. They are part of the action digest, so an
//! approval or a receipt binds the exact values, and action rules can match on them.

use super::ParseError;
use serde_json::{Map, Value};

/// Largest canonical (RFC 8785) encoding accepted, in bytes.
pub const MAX_ARGUMENT_BYTES: usize = 65_536;
/// Deepest nesting accepted: the arguments object itself is depth 1.
pub const MAX_ARGUMENT_DEPTH: usize = 16;
/// Most object keys plus array elements accepted, counted over the whole tree.
pub const MAX_ARGUMENT_NODES: usize = 1_024;
/// Longest object key accepted, in characters.
pub const MAX_ARGUMENT_KEY_CHARS: usize = 256;

/// A validated, non-empty arguments object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arguments(Map<String, Value>);

impl Arguments {
    /// Checks the limits. An empty object is the same as no arguments (`None`), so it
    /// does not change the digest of an action that has none.
    pub fn parse(field: &str, map: Map<String, Value>) -> Result<Option<Self>, ParseError> {
        if map.is_empty() {
            return Ok(None);
        }
        let mut nodes = 0;
        check_children(
            field,
            &mut map.iter().map(|(k, v)| (Some(k), v)),
            1,
            &mut nodes,
        )?;
        let bytes = crate::jcs::to_string_any_number(&crate::jcs::CanonicalMap(&map));
        if bytes.len() > MAX_ARGUMENT_BYTES {
            return Err(ParseError::new(
                field,
                format!(
                    "must be at most {MAX_ARGUMENT_BYTES} bytes as canonical JSON, got {}",
                    bytes.len()
                ),
            ));
        }
        Ok(Some(Self(map)))
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// The values a dotted path reaches (`recipient.email`). Arrays on the way, and an
    /// array at the end, stand for each of their elements, so a condition on `to` tests
    /// every address of `to: [..]`. `None` when the path does not exist.
    pub fn lookup<'a>(&'a self, path: &[String]) -> Option<Vec<&'a Value>> {
        let mut current: Vec<&Value> = Vec::new();
        let (first, rest) = path.split_first()?;
        flatten(self.0.get(first)?, &mut current);
        for key in rest {
            let mut next = Vec::new();
            for v in current {
                if let Some(child) = v.as_object().and_then(|o| o.get(key)) {
                    flatten(child, &mut next);
                }
            }
            if next.is_empty() {
                return None;
            }
            current = next;
        }
        Some(current)
    }
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

/// Checks the keys and children of a container at `depth` (the arguments object is 1).
fn check_children<'a>(
    field: &str,
    children: &mut dyn Iterator<Item = (Option<&'a String>, &'a Value)>,
    depth: usize,
    nodes: &mut usize,
) -> Result<(), ParseError> {
    if depth > MAX_ARGUMENT_DEPTH {
        return Err(ParseError::new(
            field,
            format!("must nest at most {MAX_ARGUMENT_DEPTH} levels deep"),
        ));
    }
    for (key, child) in children {
        if let Some(key) = key {
            check_key(field, key)?;
        }
        *nodes += 1;
        if *nodes > MAX_ARGUMENT_NODES {
            return Err(ParseError::new(
                field,
                format!("must have at most {MAX_ARGUMENT_NODES} keys and array elements in all"),
            ));
        }
        match child {
            Value::Object(m) => check_children(
                field,
                &mut m.iter().map(|(k, v)| (Some(k), v)),
                depth + 1,
                nodes,
            )?,
            Value::Array(items) => check_children(
                field,
                &mut items.iter().map(|v| (None, v)),
                depth + 1,
                nodes,
            )?,
            _ => {}
        }
    }
    Ok(())
}

fn check_key(field: &str, key: &str) -> Result<(), ParseError> {
    let chars = key.chars().count();
    if chars == 0 || chars > MAX_ARGUMENT_KEY_CHARS {
        return Err(ParseError::new(
            field,
            format!("keys must be 1–{MAX_ARGUMENT_KEY_CHARS} characters, got {chars} in {key:?}"),
        ));
    }
    if key.chars().any(char::is_control) {
        return Err(ParseError::new(
            field,
            format!("key {key:?} must not contain control characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> Result<Option<Arguments>, ParseError> {
        Arguments::parse("action.arguments", v.as_object().unwrap().clone())
    }

    #[test]
    fn an_empty_object_is_no_arguments() {
        assert_eq!(args(json!({})).unwrap(), None);
    }

    #[test]
    fn limits_name_the_field_and_the_limit() {
        let mut deep = json!(1);
        for _ in 0..=MAX_ARGUMENT_DEPTH {
            deep = json!({ "k": deep });
        }
        let e = args(deep).unwrap_err();
        assert_eq!(e.field, "action.arguments");
        assert!(e.problem.contains("16 levels"), "{}", e.problem);

        let many: Map<String, Value> = (0..=MAX_ARGUMENT_NODES)
            .map(|i| (format!("k{i}"), json!(i)))
            .collect();
        let e = Arguments::parse("action.arguments", many).unwrap_err();
        assert!(e.problem.contains("1024"), "{}", e.problem);

        let big = json!({ "k": "x".repeat(MAX_ARGUMENT_BYTES) });
        assert!(args(big).unwrap_err().problem.contains("65536 bytes"));

        assert!(args(json!({ "": 1 }))
            .unwrap_err()
            .problem
            .contains("1–256"));
        assert!(args(json!({ "a\u{1b}b": 1 }))
            .unwrap_err()
            .problem
            .contains("control"));
    }

    #[test]
    fn the_deepest_allowed_nesting_passes() {
        let mut deep = json!(1);
        for _ in 0..MAX_ARGUMENT_DEPTH {
            deep = json!({ "k": deep });
        }
        assert!(args(deep).unwrap().is_some());
    }

    #[test]
    fn lookup_walks_objects_and_spreads_arrays() {
        let a = args(json!({
            "to": ["a@x.com", "b@y.com"],
            "items": [{"sku": "s1"}, {"sku": "s2"}, {"other": 1}],
            "amount": 5
        }))
        .unwrap()
        .unwrap();
        let path = |p: &str| p.split('.').map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            a.lookup(&path("to")).unwrap(),
            vec![&json!("a@x.com"), &json!("b@y.com")]
        );
        assert_eq!(
            a.lookup(&path("items.sku")).unwrap(),
            vec![&json!("s1"), &json!("s2")]
        );
        assert_eq!(a.lookup(&path("amount")).unwrap(), vec![&json!(5)]);
        assert!(a.lookup(&path("missing")).is_none());
        assert!(a.lookup(&path("amount.deeper")).is_none());
    }
}
