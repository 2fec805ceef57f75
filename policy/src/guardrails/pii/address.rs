//! Postal addresses, best effort: US street lines ("1600 Pennsylvania Avenue NW, Washington,
//! DC 20500"), US "City, ST 12345" lines and UK postcodes ("SW1A 1AA"). Anchored on digits found
//! by the numeric pass, then checked against street-suffix, state and postcode-area lists.

use super::text::{alpha_end, alpha_start, at, before, digit_end, is_word};

const STREET_SUFFIXES: &[&str] = &[
    "street",
    "st",
    "avenue",
    "ave",
    "road",
    "rd",
    "boulevard",
    "blvd",
    "lane",
    "ln",
    "drive",
    "dr",
    "court",
    "ct",
    "way",
    "place",
    "pl",
    "terrace",
    "circle",
    "cir",
    "parkway",
    "pkwy",
    "highway",
    "hwy",
    "square",
    "sq",
    "trail",
    "plaza",
];

const DIRECTIONS: &[&str] = &["N", "S", "E", "W", "NE", "NW", "SE", "SW"];
const UNITS: &[&str] = &["apt", "apartment", "suite", "ste", "unit", "floor", "fl", "room", "rm"];

/// USPS state and territory codes.
const STATES: &[&str] = &[
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID", "IL", "IN", "IA", "KS", "KY", "LA",
    "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM", "NY", "NC", "ND", "OH", "OK", "OR",
    "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA", "WV", "WI", "WY", "PR", "GU", "VI", "AS", "MP",
];

/// UK postcode areas: the single letters, then the two-letter ones (Royal Mail's list).
const UK_AREAS_1: &[u8] = b"BEGLMNSW";
const UK_AREAS_2: &[&str] = &[
    "AB", "AL", "BA", "BB", "BD", "BH", "BL", "BN", "BR", "BS", "BT", "CA", "CB", "CF", "CH", "CM", "CO", "CR", "CT",
    "CV", "CW", "DA", "DD", "DE", "DG", "DH", "DL", "DN", "DT", "DY", "EC", "EH", "EN", "EX", "FK", "FY", "GL", "GU",
    "GY", "HA", "HD", "HG", "HP", "HR", "HS", "HU", "HX", "IG", "IM", "IP", "IV", "JE", "KA", "KT", "KW", "KY", "LA",
    "LD", "LE", "LL", "LN", "LS", "LU", "ME", "MK", "ML", "NE", "NG", "NN", "NP", "NR", "NW", "OL", "OX", "PA", "PE",
    "PH", "PL", "PO", "PR", "RG", "RH", "RM", "SA", "SE", "SG", "SK", "SL", "SM", "SN", "SO", "SP", "SR", "SS", "ST",
    "SW", "SY", "TA", "TD", "TF", "TN", "TQ", "TR", "TS", "TW", "UB", "WA", "WC", "WD", "WF", "WN", "WR", "WS", "WV",
    "YO", "ZE",
];

fn one_of(word: &[u8], list: &[&str]) -> bool {
    list.iter().any(|w| word.eq_ignore_ascii_case(w.as_bytes()))
}

fn exactly_one_of(word: &[u8], list: &[&str]) -> bool {
    list.iter().any(|w| word == w.as_bytes())
}

/// A capitalised word ("Main", "O'Hara") at `i`: returns its end.
fn name_word(b: &[u8], i: usize) -> Option<usize> {
    if !at(b, i).is_ascii_uppercase() {
        return None;
    }
    let mut e = alpha_end(b, i);
    while at(b, e) == b'\'' && at(b, e + 1).is_ascii_alphabetic() {
        e = alpha_end(b, e + 1);
    }
    Some(e)
}

/// An ordinal street name ("5th", "42nd") at `i`: returns its end.
fn ordinal_word(b: &[u8], i: usize) -> Option<usize> {
    let d = digit_end(b, i);
    let e = alpha_end(b, d);
    let suffix = b.get(d..e)?;
    (d > i && d - i <= 3 && one_of(suffix, &["st", "nd", "rd", "th"])).then_some(e)
}

/// A US street address whose house number starts at the digit `s`.
pub(super) fn street_at(b: &[u8], s: usize) -> Option<usize> {
    let r = digit_end(b, s);
    if r - s > 6 || at(b, s) == b'0' {
        return None;
    }
    let mut i = r;
    // "221B Baker Street".
    if at(b, i).is_ascii_uppercase() && at(b, i + 1) == b' ' {
        i += 1;
    }
    if at(b, i) != b' ' {
        return None;
    }
    i += 1;
    let mut end = None;
    for names in 0..6 {
        let e = name_word(b, i).or_else(|| ordinal_word(b, i))?;
        let word = b.get(i..e)?;
        if names > 0 && one_of(word, STREET_SUFFIXES) && word.first().is_some_and(u8::is_ascii_uppercase) {
            end = Some(e);
            break;
        }
        if at(b, e) != b' ' {
            return None;
        }
        i = e + 1;
    }
    let mut end = end?;
    if is_word(at(b, end)) {
        return None;
    }
    if at(b, end) == b'.' && is_word(at(b, end + 1)) {
        return None;
    }
    // "St." keeps its dot when the line goes on.
    let after_dot = if at(b, end) == b'.' { end + 1 } else { end };
    let mut cont = after_dot;
    // Directional suffix: "Avenue NW".
    if at(b, cont) == b' ' {
        let e = alpha_end(b, cont + 1);
        if exactly_one_of(b.get(cont + 1..e)?, DIRECTIONS) && !is_word(at(b, e)) {
            end = e;
            cont = e;
        }
    }
    if let Some(e) = unit(b, cont) {
        end = e;
        cont = e;
    }
    if at(b, cont) == b',' && at(b, cont + 1) == b' ' {
        let city = cont + 2;
        if let Some(e) = city_state_zip_from(b, city) {
            end = e;
        }
    }
    Some(end)
}

/// ", Apt 4B" / " Suite 200" / " #12": returns the end of the unit.
fn unit(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    if at(b, j) == b',' {
        j += 1;
    }
    if at(b, j) != b' ' {
        return None;
    }
    j += 1;
    if at(b, j) == b'#' {
        j += 1;
    } else {
        let e = alpha_end(b, j);
        if !one_of(b.get(j..e)?, UNITS) {
            return None;
        }
        j = e;
        if at(b, j) == b'.' {
            j += 1;
        }
        if at(b, j) == b' ' {
            j += 1;
        }
    }
    let mut e = j;
    while at(b, e).is_ascii_alphanumeric() || at(b, e) == b'-' {
        e += 1;
    }
    (e > j && e - j <= 6 && at(b, j).is_ascii_alphanumeric() && !is_word(at(b, e))).then_some(e)
}

/// "Springfield, IL 62704" starting at the city name at `i`: returns the end of the ZIP.
fn city_state_zip_from(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    for _ in 0..3 {
        let e = name_word(b, j)?;
        if at(b, e) == b',' && at(b, e + 1) == b' ' {
            return state_zip(b, e + 2);
        }
        if at(b, e) != b' ' {
            return None;
        }
        j = e + 1;
    }
    None
}

/// "IL 62704" / "IL 62704-1234" at `i`: returns the end.
fn state_zip(b: &[u8], i: usize) -> Option<usize> {
    let st = b.get(i..i + 2)?;
    if !exactly_one_of(st, STATES) || at(b, i + 2) != b' ' {
        return None;
    }
    zip(b, i + 3)
}

fn zip(b: &[u8], i: usize) -> Option<usize> {
    let e = digit_end(b, i);
    if e - i != 5 {
        return None;
    }
    let e = if at(b, e) == b'-' && digit_end(b, e + 1) == e + 5 { e + 5 } else { e };
    let glued = is_word(at(b, e)) || (at(b, e) == b'-' && at(b, e + 1).is_ascii_digit());
    (!glued).then_some(e)
}

/// A "City, ST 12345" line whose ZIP starts at the digit `s`: `(start of city, end of ZIP)`.
pub(super) fn city_line_at(b: &[u8], s: usize) -> Option<(usize, usize)> {
    let end = zip(b, s)?;
    let st = s.checked_sub(3)?;
    if before(b, s) != b' ' || before(b, st) != b' ' || before(b, st - 1) != b',' {
        return None;
    }
    if !exactly_one_of(b.get(st..st + 2)?, STATES) {
        return None;
    }
    // Walk back over up to three capitalised words of the city name ("San Francisco").
    let mut word_end = st - 2;
    let mut start = None;
    for _ in 0..3 {
        let ws = alpha_start(b, word_end);
        if ws == word_end || !at(b, ws).is_ascii_uppercase() || is_word(before(b, ws)) {
            break;
        }
        start = Some(ws);
        if before(b, ws) != b' ' {
            break;
        }
        let prev_end = ws - 1;
        let prev_start = alpha_start(b, prev_end);
        if prev_start == prev_end || !at(b, prev_start).is_ascii_uppercase() {
            break;
        }
        word_end = prev_end;
    }
    Some((start?, end))
}

/// A UK postcode whose outward-code digits start at `s` (just after the area letters).
pub(super) fn uk_postcode_at(b: &[u8], s: usize) -> Option<(usize, usize)> {
    let area_start = {
        let a = s.checked_sub(1)?;
        if before(b, a).is_ascii_uppercase() { a.checked_sub(1)? } else { a }
    };
    if is_word(before(b, area_start)) {
        return None;
    }
    let area = b.get(area_start..s)?;
    let area_ok = match area {
        [c] => UK_AREAS_1.contains(c),
        _ => exactly_one_of(area, UK_AREAS_2),
    };
    if !area_ok {
        return None;
    }
    // Outward code: area + 1–2 digits, or area + digit + letter ("SW1A", "W1B").
    let mut i = digit_end(b, s);
    match i - s {
        1 if at(b, i).is_ascii_uppercase() => i += 1,
        1 | 2 => {}
        _ => return None,
    }
    // Inward code: " 9AA", letters never C I K M O V.
    if at(b, i) != b' ' || !at(b, i + 1).is_ascii_digit() {
        return None;
    }
    let inward_letter = |c: u8| c.is_ascii_uppercase() && !b"CIKMOV".contains(&c);
    if !inward_letter(at(b, i + 2)) || !inward_letter(at(b, i + 3)) || is_word(at(b, i + 4)) {
        return None;
    }
    Some((area_start, i + 4))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
    use super::*;

    fn street(s: &str) -> Option<&str> {
        let d = s.bytes().position(|c| c.is_ascii_digit())?;
        street_at(s.as_bytes(), d).map(|e| &s[d..e])
    }

    #[test]
    fn streets() {
        assert_eq!(street("at 123 Main Street today"), Some("123 Main Street"));
        assert_eq!(
            street("1600 Pennsylvania Avenue NW, Washington, DC 20500"),
            Some("1600 Pennsylvania Avenue NW, Washington, DC 20500")
        );
        assert_eq!(street("42 W 5th St, Apt 4B, New York, NY 10011."), Some("42 W 5th St, Apt 4B, New York, NY 10011"));
        assert_eq!(street("221B Baker Street"), Some("221B Baker Street"));
        assert_eq!(street("10 Downing St."), Some("10 Downing St"));
        assert_eq!(street("350 Fifth Ave Suite 200"), Some("350 Fifth Ave Suite 200"));
        assert_eq!(street("I have 3 Ways to do it"), None);
        assert_eq!(street("page 12 Street Fighter"), None);
        assert_eq!(street("we ate 3 big pies on the way"), None);
        assert_eq!(street("12 Main Streets"), None);
    }

    #[test]
    fn city_lines() {
        let s = "Visit us in San Francisco, CA 94105 soon";
        let d = s.find("94105").unwrap();
        let (a, z) = city_line_at(s.as_bytes(), d).unwrap();
        assert_eq!(&s[a..z], "San Francisco, CA 94105");
        let s = "Springfield, IL 62704-1234";
        let d = s.find("62704").unwrap();
        let (a, z) = city_line_at(s.as_bytes(), d).unwrap();
        assert_eq!(&s[a..z], s);
        let s = "Patient ID 12345";
        assert_eq!(city_line_at(s.as_bytes(), 11), None);
        let s = "Total, XX 12345";
        assert_eq!(city_line_at(s.as_bytes(), 10), None);
    }

    #[test]
    fn uk_postcodes() {
        let find = |s: &str| {
            let d = s.bytes().position(|c| c.is_ascii_digit())?;
            uk_postcode_at(s.as_bytes(), d).map(|(a, z)| s[a..z].to_string())
        };
        assert_eq!(find("London SW1A 1AA").as_deref(), Some("SW1A 1AA"));
        assert_eq!(find("M1 1AE").as_deref(), Some("M1 1AE"));
        assert_eq!(find("EC1A 1BB,").as_deref(), Some("EC1A 1BB"));
        assert_eq!(find("CR2 6XH").as_deref(), Some("CR2 6XH"));
        assert_eq!(find("A4 3XL"), None);
        assert_eq!(find("SW1A 1AAB"), None);
        assert_eq!(find("QQ1 1AA"), None);
        assert_eq!(find("SW1A 1CA"), None);
        assert_eq!(find("XSW1A 1AA"), None);
    }
}
