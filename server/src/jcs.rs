//! RFC 8785 (JCS) bytes written in one pass from typed values: audit entry bodies, and
//! the action whose digest approvals and receipts bind.
//!
//! serde_json's compact output already is JCS for strings and integers: its string
//! escapes are JCS's (`\"` `\\` `\b` `\f` `\n` `\r` `\t`, lower-case `\u00xx` for other
//! controls, everything else literal) and it writes integers as JCS does. Three things
//! remain, and this module supplies them:
//! - object members in JCS order: a typed body declares its fields in that order (for
//!   ASCII names, byte order); `Canonical` sorts a dynamic `Value`'s members by UTF-16
//!   code units, which differs from the byte order `serde_json::Map` keeps only for keys
//!   with characters from U+E000 up;
//! - numbers: `to_string` (audit entries) refuses floats and integers beyond
//!   ±(2^53 − 1) wherever they sit, so nothing is logged as a different number;
//!   `to_string_any_number` (digests over caller data) writes every number the way JCS
//!   does, as the shortest ECMAScript form of its IEEE 754 double (`ryu-js`);
//! - a check: in debug builds (every test run) each body is compared with `serde_jcs`
//!   over the same data, so a field declared out of order fails the first test that
//!   writes it instead of producing an entry another verifier would canonicalise
//!   differently.

use std::io;

use serde::ser::SerializeMap;
use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter};
use serde_json::{Map, Value};

/// Largest integer RFC 8785 writes exactly: JCS writes every number as an IEEE 754
/// double, so a larger one would be logged as a different number.
pub const MAX_EXACT: u64 = (1 << 53) - 1;

const INEXACT: &str =
    "audit entries must not contain floating-point numbers or integers beyond ±(2^53 − 1)";

/// The canonical text of `value`, whose `Serialize` writes struct fields in JCS order
/// and wraps any dynamic `Value` in `Canonical`.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> Result<String, String> {
    write(value, Numbers::Exact)
}

/// The canonical text of `value` with any finite number in it, written as JCS writes
/// it (an integer beyond ±(2^53 − 1) as the double it rounds to, like every other
/// JCS implementation). For digests, which bind caller data exactly as JCS spells it.
pub fn to_string_any_number<T: Serialize + ?Sized>(value: &T) -> String {
    // Only a non-finite float could fail, and JSON values hold none.
    write(value, Numbers::Ecmascript).unwrap_or_default()
}

fn write<T: Serialize + ?Sized>(value: &T, numbers: Numbers) -> Result<String, String> {
    let mut out = Vec::with_capacity(512);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, numbers);
    value.serialize(&mut ser).map_err(|e| {
        // serde_json wraps a formatter's refusal in its own I/O error; say only ours.
        if e.is_io() {
            INEXACT.to_owned()
        } else {
            e.to_string()
        }
    })?;
    // serde_json writes only UTF-8.
    let text = String::from_utf8(out).map_err(|e| e.to_string())?;
    #[cfg(debug_assertions)]
    check_against_reference(value, &text);
    Ok(text)
}

/// Debug builds: the same data through a full JCS implementation gives the same bytes.
#[cfg(debug_assertions)]
fn check_against_reference<T: Serialize + ?Sized>(value: &T, text: &str) {
    let tree = serde_json::to_value(value).expect("what serialized once serializes again");
    let reference = serde_jcs::to_string(&tree).expect("finite numbers only");
    assert_eq!(
        text, reference,
        "a typed audit body is not in JCS order (fields must be declared sorted)"
    );
}

/// A dynamic JSON value written in JCS order.
pub struct Canonical<'a>(pub &'a Value);

impl Serialize for Canonical<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(members) => CanonicalMap(members).serialize(s),
            Value::Array(items) => s.collect_seq(items.iter().map(Canonical)),
            scalar => scalar.serialize(s),
        }
    }
}

/// A JSON object written in JCS order.
pub struct CanonicalMap<'a>(pub &'a Map<String, Value>);

impl Serialize for CanonicalMap<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let members = self.0;
        let mut map = s.serialize_map(Some(members.len()))?;
        if members.keys().any(|k| sorts_differently(k)) {
            let mut sorted: Vec<_> = members.iter().collect();
            sorted.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            for (k, v) in sorted {
                map.serialize_entry(k, &Canonical(v))?;
            }
        } else {
            for (k, v) in members {
                map.serialize_entry(k, &Canonical(v))?;
            }
        }
        map.end()
    }
}

/// Whether `key` may sort differently by UTF-16 code units than by bytes: only
/// characters from U+E000 up (UTF-8 lead bytes 0xEE and above) can.
fn sorts_differently(key: &str) -> bool {
    key.bytes().any(|b| b >= 0xEE)
}

/// Writes members `(name, value)` given in any order as one JCS object (a redacted
/// string map, say), sorting them by UTF-16 code units.
pub struct SortedMap<'a, V>(pub Vec<(&'a str, V)>);

impl<V: Serialize> Serialize for SortedMap<'_, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut order: Vec<usize> = (0..self.0.len()).collect();
        order.sort_by(|&a, &b| self.0[a].0.encode_utf16().cmp(self.0[b].0.encode_utf16()));
        let mut map = s.serialize_map(Some(order.len()))?;
        for i in order {
            let (k, v) = &self.0[i];
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// serde_json's compact output with JCS's numbers: refused when not exact
/// (`Exact`), or written as their double's shortest ECMAScript form (`Ecmascript`).
#[derive(Clone, Copy)]
enum Numbers {
    Exact,
    Ecmascript,
}

fn inexact() -> io::Error {
    io::Error::other(INEXACT)
}

impl Numbers {
    /// An integer beyond ±(2^53 − 1): refused, or written as the double it rounds to.
    #[allow(clippy::cast_precision_loss)] // the rounding is what JCS specifies
    fn beyond_exact<W: ?Sized + io::Write>(self, w: &mut W, as_double: f64) -> io::Result<()> {
        match self {
            Numbers::Exact => Err(inexact()),
            Numbers::Ecmascript => Numbers::Ecmascript.double(w, as_double),
        }
    }

    fn double<W: ?Sized + io::Write>(self, w: &mut W, v: f64) -> io::Result<()> {
        match self {
            Numbers::Ecmascript if v.is_finite() => {
                w.write_all(ryu_js::Buffer::new().format_finite(v).as_bytes())
            }
            _ => Err(inexact()),
        }
    }
}

impl Formatter for Numbers {
    #[allow(clippy::cast_precision_loss)]
    fn write_i64<W: ?Sized + io::Write>(&mut self, w: &mut W, v: i64) -> io::Result<()> {
        if v.unsigned_abs() > MAX_EXACT {
            return self.beyond_exact(w, v as f64);
        }
        CompactFormatter.write_i64(w, v)
    }

    #[allow(clippy::cast_precision_loss)]
    fn write_u64<W: ?Sized + io::Write>(&mut self, w: &mut W, v: u64) -> io::Result<()> {
        if v > MAX_EXACT {
            return self.beyond_exact(w, v as f64);
        }
        CompactFormatter.write_u64(w, v)
    }

    #[allow(clippy::cast_precision_loss)]
    fn write_i128<W: ?Sized + io::Write>(&mut self, w: &mut W, v: i128) -> io::Result<()> {
        if v.unsigned_abs() > u128::from(MAX_EXACT) {
            return self.beyond_exact(w, v as f64);
        }
        CompactFormatter.write_i128(w, v)
    }

    #[allow(clippy::cast_precision_loss)]
    fn write_u128<W: ?Sized + io::Write>(&mut self, w: &mut W, v: u128) -> io::Result<()> {
        if v > u128::from(MAX_EXACT) {
            return self.beyond_exact(w, v as f64);
        }
        CompactFormatter.write_u128(w, v)
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, w: &mut W, v: f32) -> io::Result<()> {
        self.double(w, f64::from(v))
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, v: f64) -> io::Result<()> {
        self.double(w, v)
    }

    fn write_number_str<W: ?Sized + io::Write>(&mut self, _: &mut W, _: &str) -> io::Result<()> {
        Err(inexact())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canonical(v: &Value) -> Result<String, String> {
        to_string(&Canonical(v))
    }

    #[test]
    fn members_sort_by_utf16_code_units_not_bytes() {
        // U+E000 is one UTF-16 unit (0xE000); U+1F600 is a surrogate pair (0xD83D …):
        // by bytes the emoji sorts last, by UTF-16 units first.
        let v = json!({"\u{e000}": 1, "\u{1f600}": 2, "a": {"z": [true, null], "b": "é\n\u{1}"}});
        let text = canonical(&v).unwrap();
        assert_eq!(
            text,
            "{\"a\":{\"b\":\"é\\n\\u0001\",\"z\":[true,null]},\"\u{1f600}\":2,\"\u{e000}\":1}"
        );
        assert_eq!(text, serde_jcs::to_string(&v).unwrap());
    }

    #[test]
    fn floats_and_integers_jcs_would_round_are_refused_at_any_depth() {
        assert_eq!(canonical(&json!({"x": [1.5]})).unwrap_err(), INEXACT);
        for n in [MAX_EXACT + 1, u64::MAX] {
            assert!(canonical(&json!({ "n": n })).is_err(), "{n}");
        }
        assert!(canonical(&json!({ "n": -(MAX_EXACT as i64) - 1 })).is_err());
        let edge = canonical(&json!([MAX_EXACT, -(MAX_EXACT as i64)])).unwrap();
        assert_eq!(edge, format!("[{MAX_EXACT},-{MAX_EXACT}]"));
    }

    #[test]
    fn any_number_mode_writes_numbers_as_jcs_does() {
        let v =
            json!({"f": [1.5, 1e21, -0.0, 0.1, 5e-324], "big": u64::MAX, "neg": i64::MIN, "i": 42});
        assert_eq!(
            to_string_any_number(&Canonical(&v)),
            serde_jcs::to_string(&v).unwrap()
        );
    }

    #[test]
    fn a_sorted_map_orders_its_members() {
        let m = SortedMap(vec![
            ("\u{e000}", "x"),
            ("\u{1f600}", "y"),
            ("b", "z"),
            ("a", "w"),
        ]);
        assert_eq!(
            to_string(&m).unwrap(),
            "{\"a\":\"w\",\"b\":\"z\",\"\u{1f600}\":\"y\",\"\u{e000}\":\"x\"}"
        );
    }

    #[derive(Serialize)]
    struct OutOfOrder {
        b: u8,
        a: u8,
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "not in JCS order")]
    fn a_body_declared_out_of_order_fails_in_debug_builds() {
        let _ = to_string(&OutOfOrder { b: 1, a: 2 });
    }
}
