use crate::domain::MicroUsd;
use std::collections::BTreeMap;

/// Price of a model in micro-USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    pub input_per_mtok: u64,
    pub output_per_mtok: u64,
}

impl Price {
    /// Cost of a call, rounded up to the next micro-USD so an estimate never undercounts.
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> MicroUsd {
        let part = |tokens: u64, per_m: u64| -> u64 {
            let product = u128::from(tokens) * u128::from(per_m);
            product.div_ceil(1_000_000).min(u128::from(u64::MAX)) as u64
        };
        MicroUsd(
            part(input_tokens, self.input_per_mtok)
                .saturating_add(part(output_tokens, self.output_per_mtok)),
        )
    }
}

/// Built-in list prices (USD per million tokens, input / output), overridable by policy.
const BUILT_IN: &[(&str, u64, u64)] = &[
    ("gpt-4o", 2_500_000, 10_000_000),
    ("gpt-4o-mini", 150_000, 600_000),
    ("gpt-4.1", 2_000_000, 8_000_000),
    ("gpt-4.1-mini", 400_000, 1_600_000),
    ("o3", 2_000_000, 8_000_000),
    ("claude-opus-4", 15_000_000, 75_000_000),
    ("claude-sonnet-4", 3_000_000, 15_000_000),
    ("claude-3-5-haiku", 800_000, 4_000_000),
    ("gemini-2.5-pro", 1_250_000, 10_000_000),
    ("gemini-2.5-flash", 300_000, 2_500_000),
];

/// Model → price. Lookup is exact first; a dated release ("gpt-4o-2024-08-06") then
/// takes the price of the longest known name it extends.
#[derive(Debug, Clone)]
pub struct PriceTable {
    prices: BTreeMap<String, Price>,
}

impl PriceTable {
    pub fn built_in() -> Self {
        Self {
            prices: BUILT_IN
                .iter()
                .map(|(m, i, o)| {
                    (
                        (*m).to_owned(),
                        Price {
                            input_per_mtok: *i,
                            output_per_mtok: *o,
                        },
                    )
                })
                .collect(),
        }
    }

    pub fn set(&mut self, model: String, price: Price) {
        self.prices.insert(model, price);
    }

    pub fn get(&self, model: &str) -> Option<Price> {
        if let Some(p) = self.prices.get(model) {
            return Some(*p);
        }
        self.prices
            .iter()
            .filter(|(name, _)| {
                // Only a dated release of a known model ("gpt-4o-2024-08-06") shares its
                // price; "o3-pro" is a different model and must be priced explicitly.
                model
                    .strip_prefix(name.as_str())
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            })
            .max_by_key(|(name, _)| name.len())
            .map(|(_, p)| *p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_round_up_to_the_next_micro_usd() {
        let p = Price {
            input_per_mtok: 150_000,
            output_per_mtok: 600_000,
        };
        assert_eq!(p.cost(1, 0), MicroUsd(1)); // 0.15 micro-USD rounds up
        assert_eq!(p.cost(1_000_000, 1_000_000), MicroUsd(750_000));
    }

    #[test]
    fn dated_model_names_use_the_longest_matching_family() {
        let t = PriceTable::built_in();
        assert_eq!(
            t.get("gpt-4o-mini-2024-07-18").unwrap().input_per_mtok,
            150_000
        );
        assert_eq!(
            t.get("claude-sonnet-4-20250514").unwrap().input_per_mtok,
            3_000_000
        );
        assert_eq!(
            t.get("gpt-4o-2024-08-06").unwrap().input_per_mtok,
            2_500_000
        );
        assert!(t.get("unknown-model").is_none());
        assert!(
            t.get("o3-pro").is_none(),
            "a different model is not priced by prefix"
        );
    }
}
