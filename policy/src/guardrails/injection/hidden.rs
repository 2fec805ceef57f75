//! Invisible characters that hide text from a human reviewer: zero-width characters,
//! bidi controls and Unicode tag characters. One finding per run.
//!
//! Legitimate uses are left alone: U+FEFF at the very start (a BOM); ZWJ/ZWNJ with non-ASCII
//! text on both sides (emoji ZWJ sequences such as 👨‍👩‍👧, Persian and Indic scripts);
//! tag characters in an emoji flag sequence (🏴 + tags + U+E007F, e.g. the flag of Scotland).

fn is_hidden(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
        || ('\u{E0000}'..='\u{E007F}').contains(&c)
}

/// Appends the runs of hidden characters in `text` as byte ranges.
pub(super) fn scan(text: &str, out: &mut Vec<(usize, usize)>) {
    if text.is_ascii() {
        return;
    }
    let bytes = text.as_bytes();
    // Every hidden char starts with one of these lead bytes (U+2xxx: E2, U+FEFF: EF, tags: F3).
    let mut pos = 0;
    while let Some(i) = bytes.get(pos..).and_then(|b| memchr::memchr3(0xE2, 0xEF, 0xF3, b)).map(|i| i + pos) {
        pos = i + 1;
        let Some(c) = text.get(i..).and_then(|s| s.chars().next()) else { continue };
        if !is_hidden(c) {
            continue;
        }
        let run: usize = text.get(i..).map_or(0, |s| s.chars().take_while(|&c| is_hidden(c)).map(char::len_utf8).sum());
        let end = i + run;
        crate::guardrails::text::work(run + 1);
        pos = end;
        if !allowed(text, i, end) {
            // A leading BOM is allowed on its own; report the rest of the run.
            let start = if i == 0 && text.starts_with('\u{FEFF}') { 3 } else { i };
            if start < end {
                out.push((start, end));
            }
        }
    }
}

fn allowed(text: &str, start: usize, end: usize) -> bool {
    let run = text.get(start..end).unwrap_or("");
    let prev = text.get(..start).and_then(|s| s.chars().next_back());
    let next = text.get(end..).and_then(|s| s.chars().next());
    if start == 0 && run == "\u{FEFF}" {
        return true;
    }
    if matches!(run, "\u{200D}" | "\u{200C}") {
        return prev.is_some_and(|c| !c.is_ascii()) && next.is_some_and(|c| !c.is_ascii());
    }
    // Emoji tag sequence: 🏴 followed by tag letters/digits and the cancel tag U+E007F.
    prev == Some('\u{1F3F4}')
        && run.ends_with('\u{E007F}')
        && run.chars().all(|c| ('\u{E0020}'..='\u{E007F}').contains(&c))
}
