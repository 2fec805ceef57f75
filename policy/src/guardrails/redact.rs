//! Mutate mode: found text rewritten (placeholder, mask or removal), and the vault of
//! originals that `restore` puts back into the answer.

use std::collections::HashMap;

use foldhash::fast::RandomState;

use super::finding::{Category, Finding, InjectionSignal, SecretKind};
use super::spec::RedactStyle;

impl Category {
    /// The name in errors, logs and metrics (`email`, `secret.openai`, `custom.3`): never the
    /// matched text.
    pub fn name(&self) -> String {
        match self {
            Category::Email => "email".into(),
            Category::Phone => "phone".into(),
            Category::CreditCard => "credit_card".into(),
            Category::Iban => "iban".into(),
            Category::UsSsn => "us_ssn".into(),
            Category::IpAddress => "ip_address".into(),
            Category::DateOfBirth => "date_of_birth".into(),
            Category::PostalAddress => "postal_address".into(),
            Category::Custom(i) => format!("custom.{i}"),
            Category::Secret(k) => format!("secret.{}", secret_name(*k)),
            Category::Injection(s) => format!("injection.{}", signal_name(*s)),
            Category::Moderation(i) => format!("moderation.{i}"),
        }
    }

    /// The placeholder's stem: `EMAIL` in `<EMAIL_1>`.
    fn stem(&self) -> &'static str {
        match self {
            Category::Email => "EMAIL",
            Category::Phone => "PHONE",
            Category::CreditCard => "CREDIT_CARD",
            Category::Iban => "IBAN",
            Category::UsSsn => "US_SSN",
            Category::IpAddress => "IP_ADDRESS",
            Category::DateOfBirth => "DATE_OF_BIRTH",
            Category::PostalAddress => "ADDRESS",
            Category::Custom(_) => "CUSTOM",
            Category::Secret(_) => "SECRET",
            Category::Injection(_) => "REMOVED",
            Category::Moderation(_) => "REDACTED",
        }
    }
}

fn secret_name(k: SecretKind) -> &'static str {
    match k {
        SecretKind::OpenAi => "openai",
        SecretKind::Anthropic => "anthropic",
        SecretKind::AwsAccessKey => "aws_access_key",
        SecretKind::AwsSecretKey => "aws_secret_key",
        SecretKind::GitHub => "github",
        SecretKind::Slack => "slack",
        SecretKind::Stripe => "stripe",
        SecretKind::Google => "google",
        SecretKind::PrivateKey => "private_key",
        SecretKind::Jwt => "jwt",
        SecretKind::Generic => "generic",
    }
}

fn signal_name(s: InjectionSignal) -> &'static str {
    match s {
        InjectionSignal::OverridePhrase => "override_phrase",
        InjectionSignal::RoleSpoof => "role_spoof",
        InjectionSignal::HiddenCharacters => "hidden_characters",
        InjectionSignal::EncodedInstructions => "encoded_instructions",
    }
}

/// The values one request's mutate rules took out, by placeholder. The same value gets the same
/// placeholder everywhere in the request, so the model can still tell two people apart.
#[derive(Debug, Default)]
pub struct Vault {
    /// (placeholder, original), in the order they were made.
    entries: Vec<(String, String)>,
    /// Index into `entries` by original value (foldhash: the values are the request's own, and
    /// SipHash measured ~4% of a redacting check on text with a finding per KiB).
    by_original: HashMap<String, usize, RandomState>,
    /// Placeholders made so far per stem: a dozen stems at most, so a list.
    counters: Vec<(&'static str, u32)>,
    /// How many entries (the first ones) may be restored: those the request itself carried
    /// ([`Vault::seal`]). A value first seen in the answer stays redacted. `None`: all.
    restorable: Option<usize>,
}

impl Vault {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Marks the values taken out so far (the request's own) as the only ones [`Vault::restore`]
    /// puts back: what an answer's redaction takes out after this stays out.
    pub fn seal(&mut self) {
        self.restorable = Some(self.entries.len());
    }

    /// `<STEM_n>` for `original`, made on first sight.
    pub fn placeholder(&mut self, category: Category, original: &str) -> &str {
        let i = match self.by_original.get(original) {
            Some(&i) => i,
            None => {
                let stem = category.stem();
                let slot = match self.counters.iter().position(|(s, _)| *s == stem) {
                    Some(k) => k,
                    None => {
                        self.counters.push((stem, 0));
                        self.counters.len() - 1
                    }
                };
                let n = self.counters.get_mut(slot).map_or(1, |(_, n)| {
                    *n += 1;
                    *n
                });
                self.entries.push((format!("<{stem}_{n}>"), original.to_owned()));
                let i = self.entries.len() - 1;
                self.by_original.insert(original.to_owned(), i);
                i
            }
        };
        self.entries.get(i).map_or("<REDACTED>", |(p, _)| p.as_str())
    }

    /// The originals put back where `text` holds their placeholders; `None` when it holds none.
    pub fn restore(&self, text: &str) -> Option<String> {
        let entries = self.entries.get(..self.restorable.unwrap_or(self.entries.len())).unwrap_or_default();
        if entries.is_empty() || !text.contains('<') {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        let mut changed = false;
        while let Some(at) = rest.find('<') {
            let (before, from) = rest.split_at(at);
            out.push_str(before);
            match entries.iter().find(|(p, _)| from.starts_with(p.as_str())) {
                Some((p, original)) => {
                    out.push_str(original);
                    rest = &from[p.len()..];
                    changed = true;
                }
                None => {
                    out.push('<');
                    rest = &from[1..];
                }
            }
        }
        out.push_str(rest);
        changed.then_some(out)
    }

    /// The longest placeholder: a stream holds back at least this much so that one split
    /// across chunks is still restored.
    pub fn longest(&self) -> usize {
        self.entries.iter().map(|(p, _)| p.len()).max().unwrap_or(0)
    }
}

/// `text` with each finding rewritten. Findings are sorted by start; an overlapping one (from
/// another detector) is merged into the one before it.
pub fn redact(text: &str, findings: &[Finding], style: RedactStyle, vault: &mut Vault) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let mut i = 0;
    while let Some(f) = findings.get(i) {
        let (start, mut end) = (f.start.max(at), f.end);
        // Merge overlapping findings so no text is rewritten twice.
        while let Some(next) = findings.get(i + 1).filter(|n| n.start < end) {
            end = end.max(next.end);
            i += 1;
        }
        i += 1;
        let (Some(before), Some(found)) = (text.get(at..start), text.get(start..end)) else { continue };
        out.push_str(before);
        match style {
            RedactStyle::Placeholder => out.push_str(vault.placeholder(f.category, found)),
            RedactStyle::Mask => {
                let n = found.chars().count();
                let keep = if n > 8 { 4 } else { 0 };
                out.extend(std::iter::repeat_n('*', n - keep));
                out.extend(found.chars().skip(n - keep));
            }
            RedactStyle::Remove => {}
        }
        at = end;
    }
    out.push_str(text.get(at..).unwrap_or(""));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn f(start: usize, end: usize, category: Category) -> Finding {
        Finding { start, end, category, score: 1.0 }
    }

    #[test]
    fn placeholders_are_stable_per_value_and_restored() {
        let text = "mail a@b.io or c@d.io, again a@b.io";
        let found = [f(5, 11, Category::Email), f(15, 21, Category::Email), f(29, 35, Category::Email)];
        let mut vault = Vault::default();
        let out = redact(text, &found, RedactStyle::Placeholder, &mut vault);
        assert_eq!(out, "mail <EMAIL_1> or <EMAIL_2>, again <EMAIL_1>");
        assert_eq!(vault.len(), 2);
        assert_eq!(vault.restore("I wrote to <EMAIL_2> and <EMAIL_1>.").unwrap(), "I wrote to c@d.io and a@b.io.");
        assert_eq!(vault.restore("a < b, <EMAIL_9>"), None, "nothing of ours");
        assert_eq!(vault.longest(), "<EMAIL_1>".len());
    }

    #[test]
    fn mask_keeps_the_last_four_of_long_values_and_remove_drops_them() {
        let text = "card 4242424242424242 pin 1234";
        let found = [f(5, 21, Category::CreditCard), f(26, 30, Category::Custom(0))];
        let mut vault = Vault::default();
        assert_eq!(redact(text, &found, RedactStyle::Mask, &mut vault), "card ************4242 pin ****");
        assert_eq!(redact(text, &found, RedactStyle::Remove, &mut vault), "card  pin ");
        assert!(vault.is_empty());
    }

    #[test]
    fn overlapping_findings_are_merged_and_bad_spans_skipped() {
        let text = "key sk-abc123 end";
        let found = [f(4, 10, Category::Secret(SecretKind::OpenAi)), f(6, 13, Category::Secret(SecretKind::Generic))];
        let mut vault = Vault::default();
        assert_eq!(redact(text, &found, RedactStyle::Placeholder, &mut vault), "key <SECRET_1> end");
        // Out of range or not on a char boundary: left alone, no panic.
        let odd = [f(1, 99, Category::Email)];
        assert_eq!(redact("é x", &odd, RedactStyle::Placeholder, &mut vault), "é x");
    }

    #[test]
    fn names_never_carry_text() {
        assert_eq!(Category::Secret(SecretKind::AwsAccessKey).name(), "secret.aws_access_key");
        assert_eq!(Category::Injection(InjectionSignal::RoleSpoof).name(), "injection.role_spoof");
        assert_eq!(Category::Custom(2).name(), "custom.2");
    }
}
