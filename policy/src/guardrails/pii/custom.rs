//! User-defined entries: regexes (compiled once, each run over the text) and word lists (one
//! Aho-Corasick automaton per case mode, matching whole words only).

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::Regex;

use super::{CustomPattern, WordList};

/// The compiled custom entries.
pub(super) struct Custom {
    regexes: Vec<(Regex, u16)>,
    /// Case-sensitive and ASCII-case-insensitive word automata, each with the `Custom` index of
    /// every pattern.
    words: Vec<(AhoCorasick, Vec<u16>)>,
}

impl Custom {
    pub(super) fn new(patterns: &[CustomPattern], lists: &[WordList]) -> Result<Custom, String> {
        if patterns.len() + lists.len() > usize::from(u16::MAX) + 1 {
            return Err(format!("too many custom patterns and word lists (at most {})", u32::from(u16::MAX) + 1));
        }
        let mut regexes = Vec::with_capacity(patterns.len());
        for (i, p) in patterns.iter().enumerate() {
            let re = Regex::new(&p.regex).map_err(|e| format!("pattern `{}`: {e}", p.name))?;
            regexes.push((re, u16::try_from(i).map_err(|_| "too many patterns".to_string())?));
        }
        let mut words = Vec::new();
        for case_sensitive in [true, false] {
            let mut texts: Vec<&str> = Vec::new();
            let mut ids = Vec::new();
            for (j, list) in lists.iter().enumerate().filter(|(_, l)| l.case_sensitive == case_sensitive) {
                let id = u16::try_from(patterns.len() + j).map_err(|_| "too many word lists".to_string())?;
                for w in &list.words {
                    if w.trim().is_empty() {
                        return Err(format!("word list `{}`: empty word", list.name));
                    }
                    texts.push(w);
                    ids.push(id);
                }
            }
            if texts.is_empty() {
                continue;
            }
            let ac = AhoCorasickBuilder::new()
                .ascii_case_insensitive(!case_sensitive)
                .match_kind(MatchKind::Standard)
                .build(&texts)
                .map_err(|e| format!("word lists: {e}"))?;
            words.push((ac, ids));
        }
        Ok(Custom { regexes, words })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.regexes.is_empty() && self.words.is_empty()
    }

    /// Calls `emit(start, end, index)` for every match (unordered; the caller sorts).
    pub(super) fn scan(&self, text: &str, mut emit: impl FnMut(usize, usize, u16)) {
        for (re, id) in &self.regexes {
            for m in re.find_iter(text) {
                if !m.is_empty() {
                    emit(m.start(), m.end(), *id);
                }
            }
        }
        for (ac, ids) in &self.words {
            // Overlapping search, so a word that fails the whole-word test does not hide a
            // shorter one at the same place ("New York" / "York").
            for m in ac.find_overlapping_iter(text) {
                if whole_word(text, m.start(), m.end())
                    && let Some(&id) = ids.get(m.pattern().as_usize())
                {
                    emit(m.start(), m.end(), id);
                }
            }
        }
    }
}

/// Whether `text[s..e]` is not glued to letters, digits or `_` on either side (Unicode-aware).
fn whole_word(text: &str, s: usize, e: usize) -> bool {
    let glue = |c: char| c.is_alphanumeric() || c == '_';
    let (Some(head), Some(tail)) = (text.get(..s), text.get(e..)) else {
        return false;
    };
    !head.chars().next_back().is_some_and(glue) && !tail.chars().next().is_some_and(glue)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn words_and_patterns() {
        let c = Custom::new(
            &[CustomPattern { name: "employee".into(), regex: r"EMP-\d{6}".into() }],
            &[
                WordList {
                    name: "projects".into(),
                    words: vec!["Bluebird".into(), "Nightjar".into()],
                    case_sensitive: false,
                },
                WordList { name: "codes".into(), words: vec!["ZX9".into()], case_sensitive: true },
            ],
        )
        .unwrap();
        let text = "EMP-123456 on bluebird, not Bluebirds; zx9 ZX9 émZX9";
        let mut v = Vec::new();
        c.scan(text, |s, e, i| v.push((&text[s..e], i)));
        v.sort();
        assert_eq!(v, [("EMP-123456", 0), ("ZX9", 2), ("bluebird", 1)]);
    }

    #[test]
    fn errors_name_the_entry() {
        let err = Custom::new(&[CustomPattern { name: "broken".into(), regex: "(".into() }], &[]).err().unwrap();
        assert!(err.contains("broken"), "{err}");
        let err =
            Custom::new(&[], &[WordList { name: "blank".into(), words: vec![" ".into()], case_sensitive: false }])
                .err()
                .unwrap();
        assert!(err.contains("blank"), "{err}");
    }
}
