//! Conditions on a call's arguments (`match.arguments` of an action rule): compiled
//! from the YAML once, evaluated per request without allocation beyond the path walk.
//!
//! A condition the arguments cannot answer (a glob on a number, `gt` on a word) is a
//! *fault*, not a "no": the scope stage denies the action, because reading it as "does
//! not match" would let a caller skip an approval rule by sending `"amount": "lots"`.

use crate::domain::Arguments;
use globset::{GlobBuilder, GlobMatcher};
use serde_json::Value;

/// One `path: {operators}` entry; every operator must hold.
#[derive(Debug, Clone)]
pub struct ArgMatcher {
    /// The path as written (`recipient.email`), for messages.
    pub path: String,
    segments: Vec<String>,
    ops: Vec<Op>,
}

#[derive(Debug, Clone)]
enum Op {
    Eq(Value),
    Ne(Value),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    Glob { text: String, glob: GlobMatcher },
    NotGlob { text: String, glob: GlobMatcher },
    Cmp(Cmp, f64),
    Present(bool),
}

#[derive(Debug, Clone, Copy)]
enum Cmp {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// Why a condition could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault(pub String);

const OPERATORS: &str =
    "eq, ne, in, not_in, glob, not_glob, gt, gte, lt, lte, present, ignore_case";

impl ArgMatcher {
    /// Compiles `path: condition`. A scalar condition means `eq`. Problems are returned
    /// as `(sub-path, problem)` so the caller can name them in the bundle.
    pub fn compile(path: &str, condition: &Value) -> Result<Self, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
        if segments.iter().any(String::is_empty) {
            problems.push((
                String::new(),
                "an argument path is one or more keys joined by '.', e.g. recipient.email".into(),
            ));
        }
        let ops = match condition {
            Value::Object(map) => compile_ops(map, &mut problems),
            Value::Array(_) => {
                problems.push((
                    String::new(),
                    format!(
                        "must be a value or a map of operators ({OPERATORS}); use `in` for a list"
                    ),
                ));
                Vec::new()
            }
            scalar => vec![Op::Eq(scalar.clone())],
        };
        if ops.is_empty() && problems.is_empty() {
            problems.push((String::new(), format!("names no operator ({OPERATORS})")));
        }
        if problems.is_empty() {
            Ok(Self {
                path: path.to_owned(),
                segments,
                ops,
            })
        } else {
            Err(problems)
        }
    }

    /// Whether the arguments satisfy every operator. Missing arguments satisfy only
    /// `present: false`; where the path reaches several values (arrays), an operator holds
    /// if it holds for any of them.
    pub fn eval(&self, args: Option<&Arguments>) -> Result<bool, Fault> {
        let values = args.and_then(|a| a.lookup(&self.segments));
        let mut all = true;
        for op in &self.ops {
            let holds = match (&values, op) {
                (_, Op::Present(want)) => values.is_some() == *want,
                (None, _) => false,
                (Some(vs), op) => {
                    let mut any = false;
                    // Every value is checked, so a fault anywhere is seen.
                    for v in vs {
                        any |= op
                            .holds(v)
                            .map_err(|why| Fault(format!("argument {:?} {why}", self.path)))?;
                    }
                    any
                }
            };
            all &= holds;
        }
        Ok(all)
    }
}

impl Op {
    fn holds(&self, v: &Value) -> Result<bool, String> {
        Ok(match self {
            Op::Eq(want) => equal(want, v),
            Op::Ne(want) => !equal(want, v),
            Op::In(list) => list.iter().any(|w| equal(w, v)),
            Op::NotIn(list) => !list.iter().any(|w| equal(w, v)),
            Op::Glob { text, glob } => glob.is_match(string(v, "glob", text)?),
            Op::NotGlob { text, glob } => !glob.is_match(string(v, "not_glob", text)?),
            Op::Cmp(cmp, limit) => {
                let n = number(v)
                    .ok_or_else(|| format!("must be a number for a comparison, got {}", kind(v)))?;
                match cmp {
                    Cmp::Gt => n > *limit,
                    Cmp::Gte => n >= *limit,
                    Cmp::Lt => n < *limit,
                    Cmp::Lte => n <= *limit,
                }
            }
            Op::Present(_) => unreachable!("handled by ArgMatcher::eval"),
        })
    }
}

fn string<'a>(v: &'a Value, op: &str, pattern: &str) -> Result<&'a str, String> {
    v.as_str()
        .ok_or_else(|| format!("must be a string for {op} {pattern:?}, got {}", kind(v)))
}

/// A JSON number, or a string that spells one in plain decimal (`"150"`, `"-2.5e3"`):
/// tool servers commonly accept both, so a rule on `amount` must see both.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if is_decimal(s) => s.parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

fn is_decimal(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    digits(int)
        && frac.is_none_or(digits)
        && exponent.is_none_or(|e| digits(e.strip_prefix(['+', '-']).unwrap_or(e)))
}

/// JSON equality, with numbers compared by value (`100` = `100.0` = `"100"` when the
/// rule's value is a number).
fn equal(want: &Value, v: &Value) -> bool {
    match want {
        Value::Number(w) => number(v).is_some_and(|n| Some(n) == w.as_f64()),
        _ => want == v,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn compile_ops(
    map: &serde_json::Map<String, Value>,
    problems: &mut Vec<(String, String)>,
) -> Vec<Op> {
    let ignore_case = match map.get("ignore_case") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            problems.push(("ignore_case".into(), "must be true or false".into()));
            false
        }
    };
    let mut ops = Vec::new();
    for (name, value) in map {
        let mut bad = |problem: String| problems.push((name.clone(), problem));
        match name.as_str() {
            "ignore_case" => {}
            "eq" | "ne" => match scalar(value) {
                Ok(v) if name == "eq" => ops.push(Op::Eq(v)),
                Ok(v) => ops.push(Op::Ne(v)),
                Err(e) => bad(e),
            },
            "in" | "not_in" => match value {
                Value::Array(items) if !items.is_empty() => {
                    match items.iter().map(scalar).collect::<Result<Vec<_>, _>>() {
                        Ok(list) if name == "in" => ops.push(Op::In(list)),
                        Ok(list) => ops.push(Op::NotIn(list)),
                        Err(e) => bad(e),
                    }
                }
                _ => bad("must be a non-empty list of values".into()),
            },
            "glob" | "not_glob" => match value.as_str().map(|t| glob(t, ignore_case)) {
                Some(Ok(g)) => {
                    let text = value.as_str().unwrap_or_default().to_owned();
                    ops.push(if name == "glob" {
                        Op::Glob { text, glob: g }
                    } else {
                        Op::NotGlob { text, glob: g }
                    });
                }
                Some(Err(e)) => bad(e),
                None => bad("must be a glob pattern (a string)".into()),
            },
            "gt" | "gte" | "lt" | "lte" => match value.as_f64() {
                Some(n) => {
                    let cmp = match name.as_str() {
                        "gt" => Cmp::Gt,
                        "gte" => Cmp::Gte,
                        "lt" => Cmp::Lt,
                        _ => Cmp::Lte,
                    };
                    ops.push(Op::Cmp(cmp, n));
                }
                None => bad("must be a number".into()),
            },
            "present" => match value {
                Value::Bool(b) => ops.push(Op::Present(*b)),
                _ => bad("must be true or false".into()),
            },
            other => bad(format!(
                "unknown operator {other:?} (expected one of {OPERATORS})"
            )),
        }
    }
    ops
}

fn scalar(v: &Value) -> Result<Value, String> {
    match v {
        Value::Array(_) | Value::Object(_) => {
            Err("must be a string, number, boolean or null".into())
        }
        other => Ok(other.clone()),
    }
}

/// `*` matches any characters (argument values are not paths), `?` one, `[..]` a set.
fn glob(pattern: &str, ignore_case: bool) -> Result<GlobMatcher, String> {
    GlobBuilder::new(pattern)
        .literal_separator(false)
        .backslash_escape(true)
        .case_insensitive(ignore_case)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("invalid glob {pattern:?}: {}", e.kind()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> Arguments {
        Arguments::parse("action.arguments", v.as_object().unwrap().clone())
            .unwrap()
            .unwrap()
    }

    fn m(path: &str, cond: Value) -> ArgMatcher {
        ArgMatcher::compile(path, &cond).unwrap()
    }

    #[test]
    fn numeric_comparisons_read_numbers_and_decimal_strings() {
        let over = m("amount", json!({"gt": 100}));
        assert_eq!(over.eval(Some(&args(json!({"amount": 150})))), Ok(true));
        assert_eq!(over.eval(Some(&args(json!({"amount": 100})))), Ok(false));
        assert_eq!(over.eval(Some(&args(json!({"amount": 100.01})))), Ok(true));
        assert_eq!(over.eval(Some(&args(json!({"amount": "150"})))), Ok(true));
        assert_eq!(over.eval(Some(&args(json!({"amount": "1.5e3"})))), Ok(true));
        // Absent: the comparison does not hold (write `present` to require the key).
        assert_eq!(over.eval(Some(&args(json!({"other": 1})))), Ok(false));
        assert_eq!(over.eval(None), Ok(false));
    }

    #[test]
    fn a_value_the_rule_cannot_read_is_a_fault_not_a_no() {
        let over = m("amount", json!({"gt": 100}));
        for bad in [
            json!("lots"),
            json!(" 150"),
            json!(true),
            json!({"v": 1}),
            json!(null),
        ] {
            let e = over
                .eval(Some(&args(json!({"amount": bad.clone()}))))
                .unwrap_err();
            assert!(e.0.contains("\"amount\""), "{bad}: {}", e.0);
        }
        let e = m("to", json!({"glob": "*@x.com"}))
            .eval(Some(&args(json!({"to": 5}))))
            .unwrap_err();
        assert!(e.0.contains("must be a string"), "{}", e.0);
    }

    #[test]
    fn arrays_hold_if_any_element_holds_and_fault_if_any_element_faults() {
        let outside = m(
            "to",
            json!({"not_glob": "*@example.com", "ignore_case": true}),
        );
        let only_ours = args(json!({"to": ["a@example.com", "b@EXAMPLE.com"]}));
        let one_out = args(json!({"to": ["a@example.com", "evil@else.com"]}));
        assert_eq!(outside.eval(Some(&only_ours)), Ok(false));
        assert_eq!(outside.eval(Some(&one_out)), Ok(true));
        assert!(outside
            .eval(Some(&args(json!({"to": ["a@example.com", 7]}))))
            .is_err());
    }

    #[test]
    fn equality_and_lists() {
        assert_eq!(
            m("id", json!("u1")).eval(Some(&args(json!({"id": "u1"})))),
            Ok(true)
        );
        assert_eq!(
            m("id", json!("u1")).eval(Some(&args(json!({"id": "u2"})))),
            Ok(false)
        );
        assert_eq!(
            m("n", json!(100)).eval(Some(&args(json!({"n": 100.0})))),
            Ok(true)
        );
        let env = m("env", json!({"in": ["prod", "staging"]}));
        assert_eq!(env.eval(Some(&args(json!({"env": "prod"})))), Ok(true));
        assert_eq!(env.eval(Some(&args(json!({"env": "dev"})))), Ok(false));
        let not = m("env", json!({"not_in": ["dev"]}));
        assert_eq!(not.eval(Some(&args(json!({"env": "prod"})))), Ok(true));
        assert_eq!(
            m("force", json!({"present": true})).eval(Some(&args(json!({"force": null})))),
            Ok(true)
        );
        assert_eq!(m("force", json!({"present": false})).eval(None), Ok(true));
    }

    #[test]
    fn globs_cross_slashes_and_spaces() {
        let rm = m("command", json!({"glob": "*rm -rf*"}));
        assert_eq!(
            rm.eval(Some(&args(json!({"command": "cd /tmp && rm -rf /"})))),
            Ok(true)
        );
        assert_eq!(
            rm.eval(Some(&args(json!({"command": "ls -la /"})))),
            Ok(false)
        );
        assert_eq!(
            m("p", json!({"glob": "/srv/*"})).eval(Some(&args(json!({"p": "/srv/a/b"})))),
            Ok(true)
        );
    }

    #[test]
    fn bad_conditions_are_refused_with_the_operator_named() {
        let e = ArgMatcher::compile("amount", &json!({"gtt": 1})).unwrap_err();
        assert_eq!(e[0].0, "gtt");
        assert!(e[0].1.contains("unknown operator"));
        assert!(ArgMatcher::compile("amount", &json!({"gt": "1"})).is_err());
        assert!(ArgMatcher::compile("a..b", &json!(1)).is_err());
        assert!(ArgMatcher::compile("a", &json!([1, 2])).is_err());
        assert!(ArgMatcher::compile("a", &json!({})).is_err());
        assert!(ArgMatcher::compile("a", &json!({"in": []})).is_err());
        assert!(ArgMatcher::compile("a", &json!({"glob": "[x"})).is_err());
    }
}
