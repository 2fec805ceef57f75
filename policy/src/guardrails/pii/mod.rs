//! The PII detector: e-mail addresses, phone numbers, payment cards, IBANs, US SSNs, IP
//! addresses, dates of birth, postal addresses, and user-defined patterns and word lists.
//!
//! One pass finds every digit run and validates the candidates around it locally (`numeric`);
//! `memchr` finds `@` for e-mails and `:` for IPv6; custom entries run only when configured.
//! No regex runs over the whole text unless the user configured one.

mod address;
mod card;
mod custom;
mod dob;
mod email;
mod groups;
mod iban;
mod ip;
mod numeric;
mod phone;
mod ssn;
mod text;

#[cfg(test)]
mod tests;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use serde::Deserialize;

use crate::guardrails::finding::{Category, Finding};

/// What the PII detector looks for. Every built-in category is on unless turned off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PiiConfig {
    /// E-mail addresses (`local@domain.tld`).
    pub email: bool,
    /// Phone numbers: E.164 (`+` country code) and common national formats.
    pub phone: bool,
    /// Payment card numbers (Luhn-valid with a known issuer prefix).
    pub credit_card: bool,
    /// IBANs (registered length per country, mod-97 checked).
    pub iban: bool,
    /// US Social Security numbers.
    pub us_ssn: bool,
    /// IPv4 and IPv6 addresses.
    pub ip_address: bool,
    /// Dates right after a birth keyword ("DOB", "born on", "né le", ...).
    pub date_of_birth: bool,
    /// US street addresses, US "City, ST 12345" lines, UK postcodes.
    pub postal_address: bool,
    /// User regexes, reported as `Category::Custom(i)` with `i` their index in this list.
    pub patterns: Vec<CustomPattern>,
    /// User word lists, reported as `Category::Custom(patterns.len() + j)` with `j` their index
    /// in this list: custom indices number the patterns first, then the word lists.
    pub words: Vec<WordList>,
}

impl Default for PiiConfig {
    fn default() -> PiiConfig {
        PiiConfig {
            email: true,
            phone: true,
            credit_card: true,
            iban: true,
            us_ssn: true,
            ip_address: true,
            date_of_birth: true,
            postal_address: true,
            patterns: Vec::new(),
            words: Vec::new(),
        }
    }
}

/// A user-defined regex (Rust `regex` syntax).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomPattern {
    /// Named in config errors.
    pub name: String,
    /// The pattern; every non-empty match is a finding.
    pub regex: String,
}

/// A user-defined list of words or phrases, matched as whole words.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WordList {
    /// Named in config errors.
    pub name: String,
    /// The words or phrases (none may be blank).
    pub words: Vec<String>,
    /// Match case exactly; otherwise ASCII letters match in either case (non-ASCII letters
    /// always match exactly).
    #[serde(default)]
    pub case_sensitive: bool,
}

/// Which built-in categories are on (the config's switches, without the lists).
#[derive(Debug, Clone, Copy)]
struct Enabled {
    email: bool,
    phone: bool,
    credit_card: bool,
    iban: bool,
    us_ssn: bool,
    ip_address: bool,
    date_of_birth: bool,
    postal_address: bool,
}

impl Enabled {
    fn numeric(&self) -> bool {
        self.phone
            || self.credit_card
            || self.iban
            || self.us_ssn
            || self.ip_address
            || self.date_of_birth
            || self.postal_address
    }
}

/// SSN keywords, for bare nine-digit numbers.
const SSN_KEYWORDS: &[&str] = &["ssn", "ss#", "ss no", "social security", "social sec"];

/// The compiled PII detector.
pub struct PiiDetector {
    on: Enabled,
    dob_keywords: AhoCorasick,
    ssn_keywords: AhoCorasick,
    custom: custom::Custom,
}

impl std::fmt::Debug for PiiDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PiiDetector").field("on", &self.on).finish_non_exhaustive()
    }
}

impl PiiDetector {
    /// Compiles the config; the error names the custom pattern or word list that is invalid.
    pub fn new(cfg: &PiiConfig) -> Result<PiiDetector, String> {
        let on = Enabled {
            email: cfg.email,
            phone: cfg.phone,
            credit_card: cfg.credit_card,
            iban: cfg.iban,
            us_ssn: cfg.us_ssn,
            ip_address: cfg.ip_address,
            date_of_birth: cfg.date_of_birth,
            postal_address: cfg.postal_address,
        };
        let ssn_keywords = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostLongest)
            .build(SSN_KEYWORDS)
            .map_err(|e| format!("ssn keywords: {e}"))?;
        Ok(PiiDetector {
            on,
            dob_keywords: dob::keywords()?,
            ssn_keywords,
            custom: custom::Custom::new(&cfg.patterns, &cfg.words)?,
        })
    }

    /// Appends findings for `text`, sorted by start, non-overlapping within this detector.
    /// Where candidates overlap, the earliest wins, then the longest.
    pub fn scan(&self, text: &str, out: &mut Vec<Finding>) {
        let base = out.len();
        let b = text.as_bytes();
        if self.on.numeric() {
            let numeric =
                numeric::Numeric { on: &self.on, dob_keywords: &self.dob_keywords, ssn_keywords: &self.ssn_keywords };
            numeric.scan(b, out);
        }
        if self.on.email {
            email::scan(b, |start, end| out.push(Finding { start, end, category: Category::Email, score: 1.0 }));
        }
        if self.on.ip_address {
            ip::scan_v6(b, |start, end| out.push(Finding { start, end, category: Category::IpAddress, score: 1.0 }));
        }
        if !self.custom.is_empty() {
            self.custom.scan(text, |start, end, i| {
                out.push(Finding { start, end, category: Category::Custom(i), score: 1.0 })
            });
        }
        resolve_overlaps(out, base);
    }
}

/// Sorts `out[base..]` by start (longest first on ties) and drops findings that overlap an
/// earlier kept one, in place.
fn resolve_overlaps(out: &mut Vec<Finding>, base: usize) {
    if let Some(tail) = out.get_mut(base..) {
        tail.sort_unstable_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    }
    let mut index = 0;
    let mut kept_end: Option<usize> = None;
    out.retain(|f| {
        index += 1;
        if index <= base {
            return true;
        }
        if kept_end.is_some_and(|e| f.start < e) {
            return false;
        }
        kept_end = Some(f.end);
        true
    });
}
