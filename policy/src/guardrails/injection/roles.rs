//! Chat-template and role markers inside user text (`<|im_start|>`, `[INST]`, `<<SYS>>`,
//! `### System:`, a line starting `System: you …`, `Human:` / `Assistant:` turns).
//! The automaton finds the marker; these checks decide from the bytes around it.

/// Role-marker triggers (case-sensitive; the checks below look at the bytes before them).
pub(super) const MARKERS: &[(&str, Marker)] = &[
    // `<|name|>` special tokens, by the first letters of the names in use (a bare 2-byte
    // `<|` trigger made the SIMD search 2-3× slower: too many candidate positions).
    ("<|im_", Marker::Special),
    ("<|sys", Marker::Special),
    ("<|use", Marker::Special),
    ("<|ass", Marker::Special),
    ("<|end", Marker::Special),
    ("<|eot", Marker::Special),
    ("<|sta", Marker::Special),
    ("<|beg", Marker::Special),
    ("<|too", Marker::Special),
    ("[INST]", Marker::Exact),
    ("[/INST]", Marker::Exact),
    ("<<SYS>>", Marker::Exact),
    ("<</SYS>>", Marker::Exact),
    ("</s>", Marker::EndOfSequence),
    ("_of_turn>", Marker::Turn),
    ("ystem:", Marker::System),
    ("YSTEM:", Marker::System),
    ("nstruction:", Marker::Instruction),
    ("uman:", Marker::Speaker),
    ("ssistant:", Marker::Speaker),
];

#[derive(Debug, Clone, Copy)]
pub(super) enum Marker {
    /// `<|name|>` special tokens.
    Special,
    /// Flagged as found.
    Exact,
    /// `</s>`, unless it closes an HTML `<s>` on the same line.
    EndOfSequence,
    /// `<start_of_turn>` / `<end_of_turn>`.
    Turn,
    /// `System:` after `##`, or at line start followed by an imperative.
    System,
    /// `### Instruction:`.
    Instruction,
    /// `Human:` / `Assistant:` at line start.
    Speaker,
}

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

/// Checks a marker found at `[at, end)`; returns the span to report.
pub(super) fn check(bytes: &[u8], at: usize, end: usize, marker: Marker) -> Option<(usize, usize)> {
    match marker {
        Marker::Exact => Some((at, end)),
        Marker::Special => {
            let name = at + 2;
            let n = bytes.get(name..)?.iter().take(24).take_while(|b| b.is_ascii_lowercase() || **b == b'_').count();
            let close = name + n;
            (n >= 2 && bytes.get(close..close + 2) == Some(b"|>")).then_some((at, close + 2))
        }
        Marker::EndOfSequence => {
            let line = &bytes.get(line_start(bytes, at)..at)?;
            (memchr::memmem::find(line, b"<s>").is_none()).then_some((at, end))
        }
        Marker::Turn => ["<start", "<end"].iter().find_map(|p| {
            let s = at.checked_sub(p.len())?;
            (bytes.get(s..at)? == p.as_bytes()).then_some((s, end))
        }),
        Marker::System => {
            let s = at.checked_sub(1)?;
            if !matches!(bytes.get(s), Some(b'S' | b's')) {
                return None;
            }
            let hashes = line_prefix(bytes, s)?;
            if hashes >= 2 || (hashes == 0 && imperative_follows(bytes, end)) { Some((s, end)) } else { None }
        }
        Marker::Instruction => {
            let s = at.checked_sub(1)?;
            (matches!(bytes.get(s), Some(b'I' | b'i')) && line_prefix(bytes, s)? >= 2).then_some((s, end))
        }
        Marker::Speaker => {
            let s = at.checked_sub(1)?;
            let lead = *bytes.get(s)?;
            let ok = (lead == b'H' && bytes.get(at) == Some(&b'u')) || (lead == b'A' && bytes.get(at) == Some(&b's'));
            (ok && line_prefix(bytes, s)? == 0).then_some((s, end))
        }
    }
}

fn line_start(bytes: &[u8], at: usize) -> usize {
    bytes.get(..at).and_then(|b| memchr::memrchr(b'\n', b)).map_or(0, |i| i + 1)
}

/// What precedes `at` on its line: `Some(number of '#')` if only blanks and `#`, else `None`.
fn line_prefix(bytes: &[u8], at: usize) -> Option<usize> {
    let prefix = bytes.get(line_start(bytes, at)..at)?;
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
