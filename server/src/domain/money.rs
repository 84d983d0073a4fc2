use super::ParseError;
use std::fmt;

/// Largest amount of money accepted anywhere: one billion USD in micro-USD.
pub const MAX_MICRO_USD: i64 = 1_000_000_000_000_000;
/// Largest token count accepted anywhere.
pub const MAX_TOKENS: i64 = 1_000_000_000_000;

/// Money as integer micro-USD (1 USD = 1 000 000). Never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MicroUsd(pub u64);

impl MicroUsd {
    /// Validates a wire amount: 0–10^15.
    pub fn from_wire(field: &str, v: i64) -> Result<Self, ParseError> {
        if !(0..=MAX_MICRO_USD).contains(&v) {
            return Err(ParseError::new(
                field,
                format!("must be 0–{MAX_MICRO_USD} micro-USD, got {v}"),
            ));
        }
        Ok(Self(v as u64))
    }

    /// Parses a decimal USD string such as "10", "10.5" or "0.000001" exactly.
    /// More than six fractional digits would need rounding, so they are refused.
    pub fn parse_usd(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let (whole, frac) = match t.split_once('.') {
            Some((w, f)) => (w, f),
            None => (t, ""),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || (!frac.is_empty() && !digits(frac)) || t.ends_with('.') {
            return Err(format!(
                "{text:?} is not a decimal USD amount like \"12.50\""
            ));
        }
        if frac.len() > 6 {
            return Err(format!(
                "{text:?} has more than 6 decimal places (1 micro-USD is the smallest unit)"
            ));
        }
        let whole: u64 = whole
            .parse()
            .map_err(|_| format!("{text:?} is too large"))?;
        let frac_micros: u64 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<6}").parse().expect("six ASCII digits")
        };
        let total = whole
            .checked_mul(1_000_000)
            .and_then(|w| w.checked_add(frac_micros))
            .filter(|v| *v <= MAX_MICRO_USD as u64)
            .ok_or_else(|| format!("{text:?} exceeds the maximum of 1000000000 USD"))?;
        Ok(Self(total))
    }
}

impl fmt::Display for MicroUsd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}.{:06}", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_strings_convert_exactly() {
        assert_eq!(MicroUsd::parse_usd("10").unwrap().0, 10_000_000);
        assert_eq!(MicroUsd::parse_usd("0.000001").unwrap().0, 1);
        assert_eq!(MicroUsd::parse_usd("12.5").unwrap().0, 12_500_000);
        assert!(MicroUsd::parse_usd("0.0000001").is_err());
        assert!(MicroUsd::parse_usd("-1").is_err());
        assert!(MicroUsd::parse_usd("1e3").is_err());
        assert!(MicroUsd::parse_usd("2000000000").is_err());
    }

    #[test]
    fn wire_amounts_outside_the_range_are_refused() {
        assert!(MicroUsd::from_wire("x", -1).is_err());
        assert!(MicroUsd::from_wire("x", MAX_MICRO_USD + 1).is_err());
        assert_eq!(
            MicroUsd::from_wire("x", MAX_MICRO_USD).unwrap().0,
            MAX_MICRO_USD as u64
        );
    }

    #[test]
    fn display_shows_dollars_and_micros() {
        assert_eq!(MicroUsd(1_500_001).to_string(), "$1.500001");
    }
}
