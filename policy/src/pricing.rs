//! Model prices and the cost of a request, in integer micro-dollars.
//!
//! Costs are `u64` micro-dollars (1e-6 USD) so that budgets can add them up without drift. Prices are
//! applied at a resolution of 1e-12 USD per token (0.000001 USD per million tokens, finer than any
//! published price), which turns the cost into exact integer arithmetic with a single rounding, upwards,
//! at the end: a request is never undercharged, and never overcharged by float noise either
//! (100 tokens at 1.10 USD/Mtok cost 110 micro-dollars, not the 111 that `ceil(100.0 * 1.1)` gives).
//!
//! The shipped table (`pricing.yaml`, embedded at build time) holds list prices; operators override or
//! extend it from config with [`PriceTable::with_overrides`].

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

/// Prices of one model, USD per million tokens, plus an optional fee per request.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// USD per million uncached input (prompt) tokens.
    pub input_per_mtok: f64,
    /// USD per million output (completion, including reasoning) tokens.
    pub output_per_mtok: f64,
    /// Cached (prompt-cache hit) input tokens; defaults to the input price when absent.
    #[serde(default)]
    pub cached_input_per_mtok: Option<f64>,
    /// USD charged once per request, on top of the tokens; 0 when absent.
    #[serde(default)]
    pub per_request: f64,
}

/// Token counts of one request (what the gateway read from the provider's usage).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Input (prompt) tokens, cached ones included.
    pub input: u64,
    /// Output (completion) tokens.
    pub output: u64,
    /// Of `input`, served from cache.
    pub cached_input: u64,
}

/// Price units per micro-dollar: a price is applied as an integer count of 1e-6 micro-dollars per token.
const UNITS_PER_MICRO: u128 = 1_000_000;

/// `micros` (micro-dollars, per token or per request) as whole price units. Prices are validated finite
/// and non-negative; the float-to-int `as` saturates anyway (NaN -> 0, too large -> `u64::MAX`).
fn units(micros: f64) -> u128 {
    u128::from((micros * 1e6).round().max(0.0) as u64)
}

/// Cost in micro-dollars (1e-6 USD), rounded up to the next micro-dollar (never undercharge).
///
/// `(input - cached) * input + cached * cached_input + output * output` per million tokens, plus the
/// per-request fee. `cached_input` beyond `input` counts as `input`. Saturates at `u64::MAX`.
pub fn cost_micros(price: &Price, tokens: Tokens) -> u64 {
    let cached = tokens.cached_input.min(tokens.input);
    let uncached = tokens.input - cached;
    // USD per million tokens is micro-dollars per token.
    let cached_price = price.cached_input_per_mtok.unwrap_or(price.input_per_mtok);
    // Each product is at most (2^64 - 1)^2 < 2^128; only the sums can overflow.
    let total = (u128::from(uncached) * units(price.input_per_mtok))
        .saturating_add(u128::from(cached) * units(cached_price))
        .saturating_add(u128::from(tokens.output) * units(price.output_per_mtok))
        .saturating_add(units(price.per_request * 1e6));
    u64::try_from(total.div_ceil(UNITS_PER_MICRO)).unwrap_or(u64::MAX)
}

/// The shipped price list, `models:` name -> price.
const SHIPPED_YAML: &str = include_str!("pricing.yaml");

/// The shape of `pricing.yaml`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    /// Model name or `prefix*` -> price.
    models: BTreeMap<String, Price>,
}

fn shipped_models() -> Result<BTreeMap<String, Price>, String> {
    serde_saphyr::from_str::<PriceFile>(SHIPPED_YAML)
        .map(|file| file.models)
        .map_err(|e| format!("embedded pricing.yaml: {e}"))
}

/// A price table: exact model names and prefix patterns ending in `*` (longest prefix wins;
/// exact beats prefix). Lookup does not allocate.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    exact: HashMap<Box<str>, Price>,
    /// Patterns without their `*`, longest first (ties by name, for a stable order). A linear scan: the
    /// list is a few dozen entries, and the first hit is the longest.
    prefixes: Vec<(Box<str>, Price)>,
}

impl PriceTable {
    /// The table shipped with shardgate (parsed from the embedded `pricing.yaml`).
    ///
    /// Never panics: were the embedded file invalid (a test guarantees it is not), the table is empty.
    pub fn shipped() -> PriceTable {
        shipped_models().and_then(|models| Self::compile(&models)).unwrap_or_else(|_| Self::empty())
    }

    /// `shipped()` with `overrides` (model name or `prefix*` -> Price) replacing or adding entries.
    ///
    /// Errors name the model and the field: every price must be finite and `>= 0`; a name must be
    /// non-empty and may hold a `*` only as its last character (`*` alone matches every model).
    pub fn with_overrides(overrides: &BTreeMap<String, Price>) -> Result<PriceTable, String> {
        let mut models = shipped_models()?;
        models.extend(overrides.iter().map(|(name, price)| (name.clone(), *price)));
        Self::compile(&models)
    }

    /// The price for a model name as the provider reports/knows it.
    ///
    /// Lookup order: the exact name; the name with its `provider/` prefix stripped (up to the last `/`:
    /// `openai/gpt-4o` -> `gpt-4o`); the name with a final `-YYYY-MM-DD`, `-YYYYMMDD` or `-latest`
    /// stripped (`gpt-4o-2024-08-06` -> `gpt-4o`), with and then without its provider prefix; then
    /// the longest prefix pattern matching the name with or without its provider prefix.
    pub fn get(&self, model: &str) -> Option<&Price> {
        let base = strip_provider(model);
        [model, base, strip_version(model), strip_version(base)]
            .into_iter()
            .find_map(|name| self.exact.get(name))
            .or_else(|| {
                self.prefixes
                    .iter()
                    .find(|(prefix, _)| model.starts_with(&**prefix) || base.starts_with(&**prefix))
                    .map(|(_, price)| price)
            })
    }

    /// Number of entries, exact names and prefix patterns.
    pub fn len(&self) -> usize {
        self.exact.len() + self.prefixes.len()
    }

    /// Whether the table has no entry at all.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }

    fn empty() -> PriceTable {
        PriceTable { exact: HashMap::new(), prefixes: Vec::new() }
    }

    /// Validates `models` and indexes it for lookup.
    fn compile(models: &BTreeMap<String, Price>) -> Result<PriceTable, String> {
        let mut table = Self::empty();
        for (name, price) in models {
            validate(name, price)?;
            match name.strip_suffix('*') {
                Some(prefix) => table.prefixes.push((prefix.into(), *price)),
                None => {
                    table.exact.insert(name.as_str().into(), *price);
                }
            }
        }
        table.prefixes.sort_by(|(a, _), (b, _)| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        Ok(table)
    }
}

impl Default for PriceTable {
    /// [`PriceTable::shipped`].
    fn default() -> Self {
        Self::shipped()
    }
}

/// Checks one entry: a usable name, every price finite and non-negative.
fn validate(name: &str, price: &Price) -> Result<(), String> {
    if name.is_empty() {
        return Err("pricing: empty model name".to_owned());
    }
    if name.trim_end_matches('*').contains('*') || name.ends_with("**") {
        return Err(format!("pricing: model {name:?}: `*` is only allowed as the last character (a prefix)"));
    }
    let fields = [
        ("input_per_mtok", Some(price.input_per_mtok)),
        ("output_per_mtok", Some(price.output_per_mtok)),
        ("cached_input_per_mtok", price.cached_input_per_mtok),
        ("per_request", Some(price.per_request)),
    ];
    for (field, value) in fields {
        if let Some(value) = value
            && !(value.is_finite() && value >= 0.0)
        {
            return Err(format!("pricing: model {name:?}: {field} must be a finite number >= 0, got {value}"));
        }
    }
    Ok(())
}

/// `model` without its `provider/` prefix (everything up to the last `/`).
fn strip_provider(model: &str) -> &str {
    model.rsplit_once('/').map_or(model, |(_, name)| name)
}

/// `model` without a final `-YYYY-MM-DD`, `-YYYYMMDD` or `-latest`; unchanged when it has none.
fn strip_version(model: &str) -> &str {
    if let Some(name) = model.strip_suffix("-latest") {
        return name;
    }
    let bytes = model.as_bytes();
    let is_suffix = |pattern: &[u8]| {
        bytes.len() >= pattern.len()
            && bytes[bytes.len() - pattern.len()..].iter().zip(pattern).all(|(&b, &p)| match p {
                b'9' => b.is_ascii_digit(),
                _ => b == p,
            })
    };
    // `9` stands for any digit; both patterns are ASCII, so the cut is on a char boundary.
    for pattern in [b"-9999-99-99".as_slice(), b"-99999999".as_slice()] {
        if is_suffix(pattern) {
            return &model[..model.len() - pattern.len()];
        }
    }
    model
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn price(input: f64, output: f64) -> Price {
        Price { input_per_mtok: input, output_per_mtok: output, cached_input_per_mtok: None, per_request: 0.0 }
    }

    fn tokens(input: u64, output: u64, cached_input: u64) -> Tokens {
        Tokens { input, output, cached_input }
    }

    #[test]
    fn shipped_table_parses_and_is_valid() {
        let models = shipped_models().unwrap();
        assert!(models.len() >= 30, "only {} entries", models.len());
        for (name, price) in &models {
            validate(name, price).unwrap();
        }
        let table = PriceTable::shipped();
        assert_eq!(table.len(), models.len());
        assert!(!table.is_empty());
        assert_eq!(PriceTable::default(), table);
        // Every required family is present with its published price.
        let gpt_4o_mini = table.get("gpt-4o-mini").unwrap();
        assert_eq!((gpt_4o_mini.input_per_mtok, gpt_4o_mini.output_per_mtok), (0.15, 0.60));
        assert_eq!(gpt_4o_mini.cached_input_per_mtok, Some(0.075));
        for name in [
            "gpt-4o",
            "gpt-4.1",
            "gpt-4.1-mini",
            "gpt-4.1-nano",
            "o1",
            "o3",
            "o3-mini",
            "o4-mini",
            "gpt-3.5-turbo",
            "text-embedding-3-small",
            "text-embedding-3-large",
            "text-embedding-ada-002",
            "claude-opus-4",
            "claude-sonnet-4",
            "claude-3-7-sonnet",
            "claude-3-5-sonnet",
            "claude-3-5-haiku",
            "claude-3-haiku",
            "gemini-2.5-pro",
            "gemini-2.5-flash",
            "gemini-2.0-flash",
            "gemini-1.5-pro",
            "gemini-1.5-flash",
            "mistral-large",
            "mistral-small",
            "deepseek-chat",
            "deepseek-reasoner",
            "mock-1",
        ] {
            assert!(table.exact.contains_key(name), "{name} missing");
        }
    }

    #[test]
    fn shipped_yaml_has_no_duplicate_keys() {
        // A duplicate would silently shadow an entry, whatever the YAML parser does with it.
        let keys: Vec<&str> = SHIPPED_YAML
            .lines()
            .filter(|line| line.starts_with("  ") && !line.trim_start().starts_with('#'))
            .filter_map(|line| line.split_once(':').map(|(key, _)| key.trim()))
            .collect();
        assert_eq!(keys.len(), shipped_models().unwrap().len());
    }

    #[test]
    fn known_costs() {
        let table = PriceTable::shipped();
        let mini = table.get("gpt-4o-mini").unwrap();
        // 1,000 * 0.15 + 500 * 0.60 micro-dollars = 0.00045 USD.
        assert_eq!(cost_micros(mini, tokens(1_000, 500, 0)), 450);
        // (600 * 0.15 + 400 * 0.075 + 500 * 0.60) micro-dollars.
        assert_eq!(cost_micros(mini, tokens(1_000, 500, 400)), 420);
        // 0.15 micro-dollars round up to 1.
        assert_eq!(cost_micros(mini, tokens(1, 0, 0)), 1);
        assert_eq!(cost_micros(mini, Tokens::default()), 0);
        // Exact integers stay exact: 100 * 1.10 = 110 (f64 says 110.00000000000001).
        assert_eq!(cost_micros(table.get("o3-mini").unwrap(), tokens(100, 0, 0)), 110);
        assert_eq!(cost_micros(table.get("claude-opus-4").unwrap(), tokens(1_000_000, 1_000_000, 0)), 90_000_000);
        // No cached price: cached tokens cost the input price.
        assert_eq!(cost_micros(&price(2.0, 8.0), tokens(1_000, 0, 1_000)), 2_000);
    }

    #[test]
    fn per_request_fee_is_added() {
        let fee = Price { per_request: 0.005, ..price(0.15, 0.60) };
        assert_eq!(cost_micros(&fee, Tokens::default()), 5_000);
        assert_eq!(cost_micros(&fee, tokens(1_000, 500, 0)), 5_450);
        assert_eq!(cost_micros(&fee, tokens(1, 0, 0)), 5_001);
    }

    #[test]
    fn cached_beyond_input_counts_as_input() {
        let mini = PriceTable::shipped().get("gpt-4o-mini").copied().unwrap();
        assert_eq!(cost_micros(&mini, tokens(1_000, 0, 5_000)), cost_micros(&mini, tokens(1_000, 0, 1_000)));
        assert_eq!(cost_micros(&mini, tokens(1_000, 0, 1_000)), 75);
    }

    #[test]
    fn cost_saturates() {
        assert_eq!(cost_micros(&price(1e6, 1e6), tokens(u64::MAX, u64::MAX, 0)), u64::MAX);
        assert_eq!(cost_micros(&price(f64::MAX, 0.0), tokens(u64::MAX, 0, 0)), u64::MAX);
        // Unvalidated garbage still yields a number, never a panic.
        assert_eq!(cost_micros(&price(f64::NAN, -1.0), tokens(10, 10, 0)), 0);
    }

    #[test]
    fn cost_is_monotonic_in_each_token_count() {
        let prices = [
            price(0.15, 0.60),
            Price { cached_input_per_mtok: Some(0.075), ..price(0.15, 0.60) },
            Price { cached_input_per_mtok: Some(0.31), per_request: 0.001, ..price(1.25, 10.0) },
            price(0.0375, 0.15),
            price(0.0, 0.0),
        ];
        let counts = [0, 1, 2, 3, 7, 100, 999, 1_000, 1_001, 123_456, 1_000_000, 10_000_000];
        for p in &prices {
            for &a in &counts {
                for &b in &counts {
                    for pair in counts.windows(2) {
                        let (lo, hi) = (pair[0], pair[1]);
                        assert!(cost_micros(p, tokens(lo, a, b)) <= cost_micros(p, tokens(hi, a, b)), "{p:?}");
                        assert!(cost_micros(p, tokens(a, lo, b)) <= cost_micros(p, tokens(a, hi, b)), "{p:?}");
                        // Cache hits are never dearer than plain input, so more of them never cost more.
                        assert!(cost_micros(p, tokens(a, b, lo)) >= cost_micros(p, tokens(a, b, hi)), "{p:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn lookup_exact_and_provider_prefix() {
        let table = PriceTable::shipped();
        assert_eq!(table.get("gpt-4o").unwrap().input_per_mtok, 2.50);
        assert_eq!(table.get("openai/gpt-4o"), table.get("gpt-4o"));
        assert_eq!(table.get("anthropic/claude-3-5-haiku"), table.get("claude-3-5-haiku"));
        assert_eq!(table.get("groq/meta-llama/llama-4-scout-17b-16e-instruct").unwrap().input_per_mtok, 0.11);
    }

    #[test]
    fn lookup_strips_dates_and_latest() {
        let table = PriceTable::shipped();
        assert_eq!(table.get("gpt-4o-2024-08-06"), table.get("gpt-4o"));
        assert_eq!(table.get("gpt-4o-mini-2024-07-18"), table.get("gpt-4o-mini"));
        assert_eq!(table.get("claude-3-5-sonnet-20241022"), table.get("claude-3-5-sonnet"));
        assert_eq!(table.get("claude-3-5-haiku-latest"), table.get("claude-3-5-haiku"));
        assert_eq!(table.get("mistral-large-latest"), table.get("mistral-large"));
        assert_eq!(table.get("openai/o3-mini-2025-01-31"), table.get("o3-mini"));
        // An exact entry for a dated snapshot beats the stripped name.
        assert_eq!(table.get("gpt-4o-2024-05-13").unwrap().input_per_mtok, 5.0);
        // Only well-formed suffixes are stripped.
        assert_eq!(strip_version("gpt-4o-2024-8-06"), "gpt-4o-2024-8-06");
        assert_eq!(strip_version("x-2024081"), "x-2024081");
        assert_eq!(strip_version("20241022"), "20241022");
        assert_eq!(strip_version("-20241022"), "");
        assert_eq!(strip_version("é-2024-01-01"), "é");
    }

    #[test]
    fn lookup_prefix_patterns() {
        let table = PriceTable::shipped();
        let opus_4 = table.get("claude-opus-4").copied();
        // Dated and minor versions of a family resolve through the family prefix.
        assert_eq!(table.get("claude-opus-4-1-20250805").copied(), opus_4);
        assert_eq!(table.get("claude-opus-4-0").copied(), opus_4);
        assert_eq!(table.get("claude-sonnet-4-20250514"), table.get("claude-sonnet-4"));
        assert_eq!(table.get("anthropic/claude-sonnet-4-5-20250929"), table.get("claude-sonnet-4"));
        // Longest prefix wins: `claude-opus-4-5*` over `claude-opus-4*`.
        assert_eq!(table.get("claude-opus-4-5-20251101").unwrap().input_per_mtok, 5.0);
        assert_eq!(table.get("claude-opus-4-5-preview").unwrap().input_per_mtok, 5.0);
        assert_eq!(table.get("gemini-2.5-flash-lite-preview-06-17").unwrap().input_per_mtok, 0.10);
        assert_eq!(table.get("gemini-2.5-flash-preview-05-20").unwrap().input_per_mtok, 0.30);
        assert_eq!(table.get("vertex/gemini-1.5-flash-002").unwrap().input_per_mtok, 0.075);
        assert_eq!(table.get("mistral-small-2503"), table.get("mistral-small"));
        assert_eq!(table.get("unknown-model"), None);
        assert_eq!(table.get(""), None);
        assert_eq!(table.get("openai/"), None);
    }

    #[test]
    fn exact_beats_prefix() {
        let mut overrides = BTreeMap::new();
        overrides.insert("claude-opus-4-1".to_owned(), price(1.0, 2.0));
        overrides.insert("claude*".to_owned(), price(9.0, 9.0));
        let table = PriceTable::with_overrides(&overrides).unwrap();
        assert_eq!(table.get("claude-opus-4-1"), Some(&price(1.0, 2.0)));
        assert_eq!(table.get("claude-opus-4-1-20250805"), Some(&price(1.0, 2.0)));
        assert_eq!(table.get("claude-opus-4-2").unwrap().input_per_mtok, 15.0);
        assert_eq!(table.get("claude-2.1"), Some(&price(9.0, 9.0)));
    }

    #[test]
    fn mock_models_are_free() {
        let table = PriceTable::shipped();
        let big = tokens(1_000_000, 1_000_000, 500_000);
        assert_eq!(cost_micros(table.get("mock-1").unwrap(), big), 0);
        assert_eq!(cost_micros(table.get("mock-slow").unwrap(), big), 0);
        assert_eq!(cost_micros(table.get("mock/mock-1").unwrap(), big), 0);
    }

    #[test]
    fn overrides_replace_and_add() {
        let mut overrides = BTreeMap::new();
        overrides.insert("gpt-4o".to_owned(), Price { per_request: 0.01, ..price(1.0, 4.0) });
        overrides.insert("my-finetune".to_owned(), price(3.0, 12.0));
        overrides.insert("azure-eu/*".to_owned(), price(0.5, 0.5));
        overrides.insert("*".to_owned(), price(100.0, 100.0));
        let shipped = PriceTable::shipped();
        let table = PriceTable::with_overrides(&overrides).unwrap();
        assert_eq!(table.len(), shipped.len() + 3);
        assert_eq!(table.get("gpt-4o").unwrap().per_request, 0.01);
        assert_eq!(table.get("gpt-4o-2024-08-06").unwrap().input_per_mtok, 1.0);
        assert_eq!(table.get("my-finetune"), Some(&price(3.0, 12.0)));
        assert_eq!(table.get("gpt-4o-mini"), shipped.get("gpt-4o-mini"));
        // A provider prefix pattern catches that provider's unknown models; known ones keep their price.
        assert_eq!(table.get("azure-eu/gpt-9"), Some(&price(0.5, 0.5)));
        assert_eq!(table.get("azure-eu/gpt-4o-mini"), shipped.get("gpt-4o-mini"));
        // `*` alone is a catch-all, the shortest prefix of all.
        assert_eq!(table.get("whatever"), Some(&price(100.0, 100.0)));
        assert_eq!(table.get("claude-sonnet-4-9"), shipped.get("claude-sonnet-4"));
        assert_eq!(PriceTable::with_overrides(&BTreeMap::new()).unwrap(), shipped);
    }

    #[test]
    fn invalid_overrides_name_model_and_field() {
        let cases = [
            ("bad-input", price(-1.0, 1.0), "input_per_mtok"),
            ("bad-output", price(1.0, f64::NAN), "output_per_mtok"),
            (
                "bad-cached",
                Price { cached_input_per_mtok: Some(f64::INFINITY), ..price(1.0, 1.0) },
                "cached_input_per_mtok",
            ),
            ("bad-fee*", Price { per_request: f64::NEG_INFINITY, ..price(1.0, 1.0) }, "per_request"),
        ];
        for (model, bad, field) in cases {
            let overrides = BTreeMap::from([(model.to_owned(), bad)]);
            let err = PriceTable::with_overrides(&overrides).unwrap_err();
            assert!(err.contains(model) && err.contains(field), "{err}");
        }
        for model in ["", "gpt-*-mini", "gpt**"] {
            let overrides = BTreeMap::from([(model.to_owned(), price(1.0, 1.0))]);
            assert!(PriceTable::with_overrides(&overrides).is_err(), "{model:?} accepted");
        }
    }

    #[test]
    fn price_yaml_shape() {
        let parsed: BTreeMap<String, Price> =
            serde_saphyr::from_str("m: {input_per_mtok: 1, output_per_mtok: 2.5}\n").unwrap();
        assert_eq!(parsed["m"], price(1.0, 2.5));
        let unknown = serde_saphyr::from_str::<BTreeMap<String, Price>>(
            "m: {input_per_mtok: 1, output_per_mtok: 2, cache_write_per_mtok: 3}\n",
        );
        assert!(unknown.is_err());
    }
}
