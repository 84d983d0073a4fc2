//! A call's arguments as JSON, to and from the `google.protobuf.Struct` the wire carries.

use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value};
use serde_json::Value as Json;

/// JSON object → `Struct`. Numbers travel as IEEE doubles (as RFC 8785 reads them
/// anyway), so the server's action digest matches one computed from the same JSON.
pub fn to_struct(object: &serde_json::Map<String, Json>) -> Struct {
    Struct {
        fields: object
            .iter()
            .map(|(k, v)| (k.clone(), to_value(v)))
            .collect(),
    }
}

fn to_value(v: &Json) -> Value {
    let kind = match v {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(to_value).collect(),
        }),
        Json::Object(o) => Kind::StructValue(to_struct(o)),
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_values_keep_their_shape() {
        let s = to_struct(
            json!({"a": [1, "x", null, {"b": true}]})
                .as_object()
                .unwrap(),
        );
        let Some(Kind::ListValue(list)) = &s.fields["a"].kind else {
            panic!("a list")
        };
        assert_eq!(list.values.len(), 4);
        assert_eq!(list.values[0].kind, Some(Kind::NumberValue(1.0)));
        assert!(matches!(list.values[3].kind, Some(Kind::StructValue(_))));
    }
}
