//! Chat-template and role markers inside user text (`<|im_start|>`, `[INST]`, `<<SYS>>`,
//! `### System:`, a line starting `System: you …`, `Human:` / `Assistant:` turns).
//!
//! Markers ending in `:` and `[INST]`/`[/INST]` are [`TRIGGERS`] of the detector's folded
//! search; every other marker starts with `<`, found by one `memchr` pass that keeps the start
//! of the current line and the last `<s>` seen as it goes. A few byte compares around each hit
//! decide, and no hit looks back further than 17 bytes.

/// `<|name|>` special tokens are reported when the name starts like one in use.
const SPECIAL_NAMES: [&[u8]; 9] = [b"im_", b"sys", b"use", b"ass", b"end", b"eot", b"sta", b"beg", b"too"];

/// Role triggers for the detector's folded search (any ASCII case; [`check_trigger`] checks
/// the exact spelling).
pub(super) const TRIGGERS: [&str; 6] = ["ystem:", "nstruction:", "uman:", "ssistant:", "[INST]", "[/INST]"];

/// Markers reported exactly as written (at a `<` or `[`).
const EXACT: [&[u8]; 6] = [b"<<SYS>>", b"<</SYS>>", b"[INST]", b"[/INST]", b"<start_of_turn>", b"<end_of_turn>"];

/// Words that make `System: <word> …` at line start an instruction rather than a log line.
const IMPERATIVE: &[&[u8]] = &[
    b"you",
    b"ignore",
    b"disregard",
    b"forget",
    b"from",
    b"always",
    b"never",
    b"do",
    b"don't",
    b"respond",
    b"answer",
    b"reply",
    b"act",
    b"pretend",
    b"new",
    b"override",
    b"reveal",
    b"print",
    b"output",
    b"the",
    b"your",
    b"enable",
    b"disable",
    b"switch",
    b"enter",
    b"stop",
    b"follow",
    b"obey",
    b"execute",
    b"run",
    b"reset",
    b"update",
    b"remember",
    b"assistant",
    b"as",
];

/// Checks a [`TRIGGERS`] match at `[start, end)`; returns the span to report.
pub(super) fn check_trigger(bytes: &[u8], start: usize, end: usize) -> Option<(usize, usize)> {
    match bytes.get(end.checked_sub(1)?)? {
        b':' => colon(bytes, end - 1),
        _ => exact(bytes.get(start..)?).map(|n| (start, start + n)),
    }
}

/// Calls `found(start, end)` for each marker starting with `<`, in order.
pub(super) fn scan_angle(bytes: &[u8], mut found: impl FnMut(usize, usize)) {
    // Start of the line holding the current hit, found incrementally (each byte looked at once).
    let mut line_start = 0;
    let mut nl_scanned = 0;
    // Position of the last `<s>` (HTML strikethrough opener), if any.
    let mut last_s_open = None;
    for i in memchr::memchr_iter(b'<', bytes) {
        let rest = bytes.get(i..).unwrap_or(&[]);
        let span = if rest.starts_with(b"<s>") {
            last_s_open = Some(i);
            None
        } else if rest.starts_with(b"</s>") {
            if let Some(k) = bytes.get(nl_scanned..i).and_then(|b| memchr::memrchr(b'\n', b)) {
                line_start = nl_scanned + k + 1;
            }
            crate::guardrails::text::work(i - nl_scanned);
            nl_scanned = i;
            // Not when it closes an HTML `<s>` opened earlier on the same line.
            last_s_open.is_none_or(|s| s < line_start).then_some((i, i + 4))
        } else {
            special(rest).or_else(|| exact(rest)).map(|n| (i, i + n))
        };
        if let Some((s, e)) = span {
            found(s, e);
        }
    }
}

/// `<|name|>` with a known name start: its length.
fn special(rest: &[u8]) -> Option<usize> {
    let name = rest.strip_prefix(b"<|")?;
    if !SPECIAL_NAMES.iter().any(|p| name.starts_with(p)) {
        return None;
    }
    let n = name.iter().take(24).take_while(|b| b.is_ascii_lowercase() || **b == b'_').count();
    (n >= 2 && name.get(n..n + 2) == Some(b"|>")).then_some(n + 4)
}

fn exact(rest: &[u8]) -> Option<usize> {
    EXACT.iter().find(|m| rest.starts_with(m)).map(|m| m.len())
}

/// A marker ending with the `:` at `colon`: `System:` (after `##`, or at line start followed by
/// an imperative), `### Instruction:`, `Human:` / `Assistant:` at line start.
fn colon(bytes: &[u8], colon: usize) -> Option<(usize, usize)> {
    let end = colon + 1;
    let word = |w: &[u8]| colon.checked_sub(w.len()).filter(|&s| bytes.get(s..colon) == Some(w));
    if let Some(at) = word(b"ystem").or_else(|| word(b"YSTEM")) {
        let s = at.checked_sub(1)?;
        if !matches!(bytes.get(s), Some(b'S' | b's')) {
            return None;
        }
        let hashes = line_prefix(bytes, s)?;
        return (hashes >= 2 || (hashes == 0 && imperative_follows(bytes, end))).then_some((s, end));
    }
    if let Some(at) = word(b"nstruction") {
        let s = at.checked_sub(1)?;
        return (matches!(bytes.get(s), Some(b'I' | b'i')) && line_prefix(bytes, s)? >= 2).then_some((s, end));
    }
    let s = word(b"Human").or_else(|| word(b"Assistant"))?;
    (line_prefix(bytes, s)? == 0).then_some((s, end))
}

/// What precedes `at` on its line: `Some(number of '#')` if at most 16 bytes, all blanks and
/// `#`, else `None`. Looks back 17 bytes at most.
fn line_prefix(bytes: &[u8], at: usize) -> Option<usize> {
    let from = at.saturating_sub(17);
    let back = bytes.get(from..at)?;
    let prefix = match memchr::memrchr(b'\n', back) {
        Some(k) => back.get(k + 1..)?,
        None if from == 0 => back,
        None => return None,
    };
    if prefix.len() > 16 || !prefix.iter().all(|&b| b == b' ' || b == b'\t' || b == b'#') {
        return None;
    }
    Some(prefix.iter().filter(|&&b| b == b'#').count())
}

fn imperative_follows(bytes: &[u8], end: usize) -> bool {
    let rest = bytes.get(end..).unwrap_or(&[]);
    let rest = rest.get(rest.iter().take(8).take_while(|&&b| b == b' ' || b == b'\t').count()..).unwrap_or(&[]);
    let n = rest.iter().take(12).take_while(|&&b| b.is_ascii_alphabetic() || b == b'\'').count();
    let word = rest.get(..n).unwrap_or(&[]);
    IMPERATIVE.iter().any(|w| w.eq_ignore_ascii_case(word))
}
