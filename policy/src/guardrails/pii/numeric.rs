//! The numeric pass: one walk over the text from digit run to digit run (SWAR search), trying
//! at each run the validators that can start there, cheapest and most specific first. Cards,
//! phones, SSNs, IPv4, IBANs, dates of birth and address numbers all contain digits, so one walk
//! serves them all.

use aho_corasick::AhoCorasick;

use super::text::{DigitFinder, at, before, is_word};
use super::{Enabled, address, card, dob, iban, ip, phone, ssn};
use crate::guardrails::finding::{Category, Finding};

/// Bare nine-digit SSNs count only this close after an SSN keyword.
const SSN_GAP: usize = 30;

pub(super) struct Numeric<'a> {
    pub(super) on: &'a Enabled,
    pub(super) dob_keywords: &'a AhoCorasick,
    pub(super) ssn_keywords: &'a AhoCorasick,
}

fn finding(start: usize, end: usize, category: Category, score: f32) -> Finding {
    Finding { start, end, category, score }
}

impl Numeric<'_> {
    pub(super) fn scan(&self, b: &[u8], out: &mut Vec<Finding>) {
        let mut digits = DigitFinder::new(b);
        let mut i = 0;
        while let Some(s) = digits.next_from(i) {
            let run = Run::new(b, s, digits.run_end(s));
            match self.at_run(b, &run) {
                Some(f) => {
                    i = f.end.max(run.end);
                    out.push(f);
                }
                None => i = run.end,
            }
        }
    }

    /// The finding that starts at (or, for city lines and "March 12", just before) the digit
    /// run. Each validator is gated on the bytes right around the run, so the common numbers of
    /// prose and code ("3 projects", `x[0]`, `2u64`) are dismissed in a few comparisons.
    fn at_run(&self, b: &[u8], run: &Run) -> Option<Finding> {
        let on = self.on;
        let Run { start: s, len, prev, next, next2, .. } = *run;
        if prev.is_ascii_uppercase() {
            // Letter-prefixed: "DE89 3704 ...", "SW1A 1AA".
            if on.iban
                && let Some((a, e)) = iban::at_check_digits(b, s)
            {
                return Some(finding(a, e, Category::Iban, 1.0));
            }
            if on.postal_address
                && len <= 2
                && let Some((a, e)) = address::uk_postcode_at(b, s)
            {
                return Some(finding(a, e, Category::PostalAddress, 0.7));
            }
            return None;
        }
        if is_word(prev) {
            return None;
        }
        if prev == b'+' {
            let anchor = s - 1;
            return (on.phone && starts_clean(b, anchor))
                .then(|| phone::at_anchor(b, anchor))
                .flatten()
                .map(|e| finding(anchor, e, Category::Phone, 0.9));
        }
        if !starts_clean(b, s) {
            return None;
        }
        // Explicit byte tests: `[u8]::contains` compiles to a memchr call, too slow here.
        let digit_after = next2.is_ascii_digit();
        let dot_digit = digit_after && next == b'.';
        let space_dash_digit = digit_after && matches!(next, b' ' | b'-');
        let date_sep_digit = digit_after && matches!(next, b'-' | b'/' | b'.');
        let any_sep_digit = digit_after && matches!(next, b' ' | b'-' | b'.' | b'/');
        // Digits in the separated cluster starting here ("555-123-4567" → 10), counted once:
        // cards need 13, phones 8, so "1.4.2" or "0.2" go no further.
        let cluster = if any_sep_digit { cluster_digits(b, s) } else { len };
        if on.ip_address
            && len <= 3
            && dot_digit
            && let Some(e) = ip::v4_at(b, s)
        {
            return Some(finding(s, e, Category::IpAddress, 1.0));
        }
        if on.us_ssn
            && ((len == 3 && space_dash_digit) || len == 9)
            && let Some((e, shape)) = ssn::at(b, s)
            && (shape == ssn::Shape::Grouped || dob::keyword_before(self.ssn_keywords, b, s, SSN_GAP, 24))
        {
            return Some(finding(s, e, Category::UsSsn, 0.9));
        }
        if on.credit_card
            && cluster >= 13
            && (len >= 13 || (len >= 3 && space_dash_digit))
            && let Some(e) = card::at(b, s)
        {
            return Some(finding(s, e, Category::CreditCard, 1.0));
        }
        if on.date_of_birth
            && ((len <= 4 && date_sep_digit) || (len <= 2 && dob::textual_hint(b, s, run.end)))
            && let Some((a, e)) = dob::at_digits(self.dob_keywords, b, s)
        {
            return Some(finding(a, e, Category::DateOfBirth, 0.9));
        }
        if on.phone && ((cluster >= 7 && any_sep_digit) || (prev == b'(' && next == b')') || len >= 8) {
            let anchor = if prev == b'(' && starts_clean(b, s - 1) { s - 1 } else { s };
            if let Some(e) = phone::at_anchor(b, anchor) {
                return Some(finding(anchor, e, Category::Phone, 0.8));
            }
        }
        if on.postal_address {
            let street_like = len <= 6
                && ((next == b' ' && next2.is_ascii_uppercase()) || (next.is_ascii_uppercase() && next2 == b' '));
            if street_like && let Some(e) = address::street_at(b, s) {
                return Some(finding(s, e, Category::PostalAddress, 0.7));
            }
            if len == 5
                && prev == b' '
                && let Some((a, e)) = address::city_line_at(b, s)
            {
                return Some(finding(a, e, Category::PostalAddress, 0.7));
            }
        }
        None
    }
}

/// A run of digits and the bytes around it.
#[derive(Clone, Copy)]
struct Run {
    start: usize,
    end: usize,
    len: usize,
    prev: u8,
    next: u8,
    next2: u8,
}

impl Run {
    fn new(b: &[u8], start: usize, end: usize) -> Run {
        Run { start, end, len: end - start, prev: before(b, start), next: at(b, end), next2: at(b, end + 1) }
    }
}

/// Digits in the run at `s` and the runs joined to it by one separator (space, `-`, `.`, `/`),
/// looking at most 32 bytes ahead.
fn cluster_digits(b: &[u8], s: usize) -> usize {
    let window = b.get(s..).unwrap_or_default();
    let window = window.get(..32).unwrap_or(window);
    let mut digits = 0;
    let mut last_sep = false;
    for &c in window {
        if c.is_ascii_digit() {
            digits += 1;
            last_sep = false;
        } else if matches!(c, b' ' | b'-' | b'.' | b'/' | b'(' | b')') && !last_sep {
            last_sep = true;
        } else {
            break;
        }
    }
    digits
}

/// Whether a number may start at `a`: not the tail of an identifier, order number (`#123`),
/// amount (`$1`), decimal (`1.5`), range (`ab-12`), time (`12:30`) or thousands group (`1,234`).
fn starts_clean(b: &[u8], a: usize) -> bool {
    let c = before(b, a);
    let cc = if a >= 2 { at(b, a - 2) } else { 0 };
    match c {
        b'#' | b'$' | b'&' | b'%' | b'\\' | b'_' => false,
        b'.' | b'-' | b'/' => !cc.is_ascii_alphanumeric(),
        b':' | b',' => !cc.is_ascii_digit(),
        _ => !is_word(c),
    }
}
