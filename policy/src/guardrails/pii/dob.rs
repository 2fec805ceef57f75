//! Dates of birth: a date (numeric d/m/y, m/d/y, y-m-d, or with a month name in English,
//! French, German or Spanish) that follows a birth keyword within [`MAX_GAP`] bytes. A date alone
//! is not PII; the keyword is what makes it one.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use super::text::{alpha_end, alpha_start, at, before, digit_end, is_word, number};

/// How far after the keyword's end the date may start ("DOB (dd/mm/yyyy): 01/02/1985").
pub(super) const MAX_GAP: usize = 40;
const LONGEST_KEYWORD: usize = 24;

/// Birth keywords (matched ASCII-case-insensitively, on word boundaries).
const KEYWORDS: &[&str] = &[
    "date of birth",
    "birth date",
    "birthdate",
    "birthday",
    "born",
    "dob",
    "d.o.b",
    "né le",
    "née le",
    "date de naissance",
    "geboren",
    "geburtsdatum",
    "geb.",
    "fecha de nacimiento",
    "nacido el",
    "nacida el",
    "data di nascita",
    "nato il",
    "nata il",
    "data de nascimento",
    "nascido em",
];

/// The birth-keyword automaton.
pub(super) fn keywords() -> Result<AhoCorasick, String> {
    AhoCorasickBuilder::new()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::LeftmostLongest)
        .build(KEYWORDS)
        .map_err(|e| format!("birth keywords: {e}"))
}

/// Whether a keyword from `ac` ends at most `gap` bytes before `start`, on word boundaries.
pub(super) fn keyword_before(ac: &AhoCorasick, b: &[u8], start: usize, gap: usize, longest: usize) -> bool {
    let from = start.saturating_sub(gap + longest);
    let Some(window) = b.get(from..start) else {
        return false;
    };
    ac.find_iter(window).any(|m| {
        let (s, e) = (from + m.start(), from + m.end());
        let ends_word = !at(b, e - 1).is_ascii_alphanumeric() || !is_word(at(b, e));
        !is_word(before(b, s)) && ends_word && start - e <= gap && clean_gap(b.get(e..start).unwrap_or_default())
    })
}

/// The text between keyword and date may not hold another number or a sentence break: in
/// "born 1975, remastered 2009-08-01" the keyword is about something else.
fn clean_gap(gap: &[u8]) -> bool {
    !gap.iter().any(|&c| c.is_ascii_digit() || c == b'\n')
        && !gap.windows(2).any(|w| matches!(w, [b'.' | b'!' | b'?', b' ']))
}

/// A date of birth whose first digit run starts at `s`: `(start, end)` of the whole date
/// (the start moves back over a leading month name).
pub(super) fn at_digits(ac: &AhoCorasick, b: &[u8], s: usize) -> Option<(usize, usize)> {
    let (start, end) = date_at(b, s)?;
    keyword_before(ac, b, start, MAX_GAP, LONGEST_KEYWORD).then_some((start, end))
}

/// Whether the day number `b[s..r]` could start or end a written-out date: a month name (or
/// "of"/"de") right after it, an ordinal suffix or German day dot, or a month name right before
/// it. Cheap enough to run on every small number in prose.
pub(super) fn textual_hint(b: &[u8], s: usize, r: usize) -> bool {
    let next = at(b, r);
    // Month names, "of" and "de" all start with one of these letters.
    let month_initial =
        |c: u8| matches!(c.to_ascii_lowercase(), b'a' | b'd' | b'e' | b'f' | b'j' | b'm' | b'n' | b'o' | b's');
    if next == b' ' && month_initial(at(b, r + 1)) {
        let e = word_end(b, r + 1);
        let w = b.get(r + 1..e).unwrap_or_default();
        if month_name(w) || w.eq_ignore_ascii_case(b"of") || w.eq_ignore_ascii_case(b"de") {
            return true;
        }
    } else if next.is_ascii_alphabetic() || (next == b'.' && at(b, r + 1) == b' ') {
        return true;
    }
    if before(b, s) != b' ' || !before(b, s - 1).is_ascii_alphabetic() {
        return false;
    }
    let m = alpha_start(b, s - 1);
    month_initial(at(b, m)) && month_name(b.get(m..s - 1).unwrap_or_default())
}

/// A date starting at the digit run at `s` (or at the month name just before it).
pub(super) fn date_at(b: &[u8], s: usize) -> Option<(usize, usize)> {
    let r = digit_end(b, s);
    match r - s {
        4 => ymd(b, s, r).map(|e| (s, e)),
        1 | 2 => numeric_dmy(b, s, r)
            .map(|e| (s, e))
            .or_else(|| day_month_year(b, s, r).map(|e| (s, e)))
            .or_else(|| month_day_year(b, s, r)),
        _ => None,
    }
}

fn plausible_year(y: u32) -> bool {
    (1900..=2100).contains(&y)
}

fn ends_ok(b: &[u8], e: usize) -> bool {
    let continued = matches!(at(b, e), b'.' | b'-' | b'/') && at(b, e + 1).is_ascii_digit();
    !is_word(at(b, e)) && !continued
}

/// 1985-03-12, 1985/3/12, 1985.03.12.
fn ymd(b: &[u8], s: usize, r: usize) -> Option<usize> {
    let sep = at(b, r);
    if !matches!(sep, b'-' | b'/' | b'.') || !plausible_year(number(b, s, r)) {
        return None;
    }
    let m_end = digit_end(b, r + 1);
    let d_end = digit_end(b, m_end + 1);
    let month = number(b, r + 1, m_end);
    let day = number(b, m_end + 1, d_end);
    let ok = (1..=2).contains(&(m_end - r - 1))
        && at(b, m_end) == sep
        && (1..=2).contains(&(d_end - m_end - 1))
        && (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && ends_ok(b, d_end);
    ok.then_some(d_end)
}

/// 12/03/1985, 3.12.85, 03-12-1985 (day-first or month-first).
fn numeric_dmy(b: &[u8], s: usize, r: usize) -> Option<usize> {
    let sep = at(b, r);
    if !matches!(sep, b'-' | b'/' | b'.') {
        return None;
    }
    let m_end = digit_end(b, r + 1);
    let y_end = digit_end(b, m_end + 1);
    let (a, m) = (number(b, s, r), number(b, r + 1, m_end));
    let y_len = y_end - m_end - 1;
    let year_ok = y_len == 2 || (y_len == 4 && plausible_year(number(b, m_end + 1, y_end)));
    let ok = (1..=2).contains(&(m_end - r - 1))
        && at(b, m_end) == sep
        && year_ok
        && (1..=31).contains(&a)
        && (1..=31).contains(&m)
        && (a <= 12 || m <= 12)
        && ends_ok(b, y_end);
    ok.then_some(y_end)
}

/// Month names in English, French, German and Spanish (ASCII-case-insensitive; accented
/// forms as written, plus their unaccented spellings).
fn month_name(word: &[u8]) -> bool {
    // Lower-case into a small buffer and let the compiler build a length-then-bytes switch:
    // this runs for the word after most small numbers in prose.
    if !(3..=10).contains(&word.len()) {
        return false;
    }
    let mut buf = [0u8; 10];
    for (d, c) in buf.iter_mut().zip(word) {
        *d = c.to_ascii_lowercase();
    }
    let w = buf.get(..word.len()).unwrap_or_default();
    // Accented names are spelled out as UTF-8 bytes: février, août, décembre, märz.
    matches!(
        w,
        b"january"
            | b"jan"
            | b"february"
            | b"feb"
            | b"march"
            | b"mar"
            | b"april"
            | b"apr"
            | b"may"
            | b"june"
            | b"jun"
            | b"july"
            | b"jul"
            | b"august"
            | b"aug"
            | b"september"
            | b"sept"
            | b"sep"
            | b"october"
            | b"oct"
            | b"november"
            | b"nov"
            | b"december"
            | b"dec"
            | b"janvier"
            | b"f\xc3\xa9vrier"
            | b"fevrier"
            | b"mars"
            | b"avril"
            | b"mai"
            | b"juin"
            | b"juillet"
            | b"ao\xc3\xbbt"
            | b"aout"
            | b"septembre"
            | b"octobre"
            | b"novembre"
            | b"d\xc3\xa9cembre"
            | b"decembre"
            | b"januar"
            | b"februar"
            | b"m\xc3\xa4rz"
            | b"maerz"
            | b"juni"
            | b"juli"
            | b"oktober"
            | b"dezember"
            | b"enero"
            | b"febrero"
            | b"marzo"
            | b"abril"
            | b"mayo"
            | b"junio"
            | b"julio"
            | b"agosto"
            | b"septiembre"
            | b"octubre"
            | b"noviembre"
            | b"diciembre"
    )
}

/// End of a month word starting at `i`, letters plus UTF-8 bytes ("février", "märz").
fn word_end(b: &[u8], i: usize) -> usize {
    let mut j = i;
    while at(b, j).is_ascii_alphabetic() || at(b, j) >= 0x80 {
        j += 1;
    }
    j
}

/// A four-digit plausible year at `i`; returns its end.
fn year_at(b: &[u8], i: usize) -> Option<usize> {
    let e = digit_end(b, i);
    (e - i == 4 && plausible_year(number(b, i, e)) && ends_ok(b, e)).then_some(e)
}

/// Skips an optional literal `word` followed by a space ("of ", "de ").
fn skip_word(b: &[u8], i: usize, word: &[u8]) -> usize {
    let e = alpha_end(b, i);
    match b.get(i..e) {
        Some(w) if w.eq_ignore_ascii_case(word) && at(b, e) == b' ' => e + 1,
        _ => i,
    }
}

/// Skips an ordinal suffix ("12th", "1st", "1er") and a German day dot ("12. März").
fn skip_ordinal(b: &[u8], r: usize) -> usize {
    let e = alpha_end(b, r);
    let suffix = b.get(r..e).unwrap_or_default();
    let mut i =
        if ["st", "nd", "rd", "th", "er"].iter().any(|o| suffix.eq_ignore_ascii_case(o.as_bytes())) { e } else { r };
    if at(b, i) == b'.' && at(b, i + 1) == b' ' {
        i += 1;
    }
    i
}

/// 12 March 1985, 12th of March, 1985, 12. März 1985, 12 de marzo de 1985.
fn day_month_year(b: &[u8], s: usize, r: usize) -> Option<usize> {
    if !(1..=31).contains(&number(b, s, r)) {
        return None;
    }
    let mut i = skip_ordinal(b, r);
    if at(b, i) != b' ' {
        return None;
    }
    i = skip_word(b, i + 1, b"of");
    i = skip_word(b, i, b"de");
    let m_end = word_end(b, i);
    if !month_name(b.get(i..m_end)?) {
        return None;
    }
    i = m_end;
    if matches!(at(b, i), b',' | b'.') {
        i += 1;
    }
    if at(b, i) != b' ' {
        return None;
    }
    i = skip_word(b, i + 1, b"de");
    year_at(b, i)
}

/// March 12, 1985 / March 12th 1985: returns (start of the month name, end).
fn month_day_year(b: &[u8], s: usize, r: usize) -> Option<(usize, usize)> {
    if before(b, s) != b' ' || !(1..=31).contains(&number(b, s, r)) {
        return None;
    }
    let m_start = alpha_start(b, s - 1);
    if m_start == s - 1 || is_word(before(b, m_start)) || !month_name(b.get(m_start..s - 1)?) {
        return None;
    }
    let mut i = skip_ordinal(b, r);
    if at(b, i) == b',' {
        i += 1;
    }
    if at(b, i) != b' ' {
        return None;
    }
    year_at(b, i + 1).map(|e| (m_start, e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
    use super::*;

    fn date(s: &str) -> Option<&str> {
        let b = s.as_bytes();
        let d = b.iter().position(u8::is_ascii_digit)?;
        date_at(b, d).map(|(a, z)| &s[a..z])
    }

    #[test]
    fn date_shapes() {
        assert_eq!(date("1985-03-12"), Some("1985-03-12"));
        assert_eq!(date("12/03/1985."), Some("12/03/1985"));
        assert_eq!(date("03.12.85"), Some("03.12.85"));
        assert_eq!(date("12 March 1985"), Some("12 March 1985"));
        assert_eq!(date("12th of March, 1985"), Some("12th of March, 1985"));
        assert_eq!(date("12. März 1985"), Some("12. März 1985"));
        assert_eq!(date("12 de marzo de 1985"), Some("12 de marzo de 1985"));
        assert_eq!(date("le 1er février 1990"), Some("1er février 1990"));
        assert_eq!(date("on March 12, 1985"), Some("March 12, 1985"));
        assert_eq!(date("Sept 3rd 1990"), Some("Sept 3rd 1990"));
        assert_eq!(date("1985-13-12"), None);
        assert_eq!(date("13/13/1985"), None);
        assert_eq!(date("12 Marching 1985"), None);
        assert_eq!(date("1985-03-12-7"), None);
        assert_eq!(date("1.2.3"), None);
    }

    #[test]
    fn needs_a_keyword() {
        let ac = keywords().unwrap();
        let find = |s: &str| {
            let b = s.as_bytes();
            let d = b.iter().position(u8::is_ascii_digit).unwrap();
            at_digits(&ac, b, d).map(|(a, z)| s[a..z].to_string())
        };
        assert_eq!(find("DOB: 1985-03-12"), Some("1985-03-12".to_string()));
        assert_eq!(find("Date of Birth (dd/mm/yyyy): 12/03/1985"), Some("12/03/1985".to_string()));
        assert_eq!(find("né le 12 mars 1985"), Some("12 mars 1985".to_string()));
        assert_eq!(find("She was born on March 12, 1985."), Some("March 12, 1985".to_string()));
        assert_eq!(find("Released 1985-03-12"), None);
        assert_eq!(find("adobe 1985-03-12"), None);
        assert_eq!(find("born. Then a very long sentence follows here, and 1985-03-12"), None);
    }
}
