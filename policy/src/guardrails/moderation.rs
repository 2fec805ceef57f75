//! Moderation deny lists: per category, whole-word case-insensitive words and regexes.
//! All words of all categories go into one Aho-Corasick automaton; all regexes into one
//! `RegexSet` that says which regexes match at all, and only those are run for spans.
//! No built-in lists: categories come from config.

use aho_corasick::{AhoCorasick, MatchKind};
use regex::{Regex, RegexSet};
use serde::Deserialize;

use crate::guardrails::finding::{Category, Finding};

/// One moderation category: its name (for errors and reports), words and regexes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModerationCategory {
    /// Name of the category (reported as `Category::Moderation(index)`).
    pub name: String,
    /// Whole words (or phrases), matched case-insensitively (ASCII case folding, plus the
    /// lowercase and uppercase forms of non-ASCII words).
    #[serde(default)]
    pub words: Vec<String>,
    /// Regexes (Rust `regex` syntax), matched as written (use `(?i)` for case-insensitivity).
    #[serde(default)]
    pub regexes: Vec<String>,
}

/// Configuration of the moderation detector.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModerationConfig {
    /// The categories; a finding's `Category::Moderation(i)` is the index in this list.
    #[serde(default)]
    pub categories: Vec<ModerationCategory>,
}

/// The compiled moderation detector.
#[derive(Debug, Clone)]
pub struct ModerationDetector {
    words: Option<AhoCorasick>,
    /// Category of each automaton pattern.
    word_category: Vec<u16>,
    set: RegexSet,
    regexes: Vec<(Regex, u16)>,
}

impl ModerationDetector {
    /// Compiles the lists; the error names the category and entry at fault.
    pub fn new(cfg: &ModerationConfig) -> Result<ModerationDetector, String> {
        let mut patterns = Vec::new();
        let mut word_category = Vec::new();
        let mut sources = Vec::new();
        let mut regexes = Vec::new();
        for (ci, cat) in cfg.categories.iter().enumerate() {
            let id = u16::try_from(ci).map_err(|_| format!("moderation: more than {} categories", u16::MAX))?;
            for (wi, w) in cat.words.iter().enumerate() {
                let w = w.trim();
                if w.is_empty() {
                    return Err(format!("moderation category '{}' words[{wi}]: empty word", cat.name));
                }
                let mut forms = vec![w.to_owned(), w.to_lowercase(), w.to_uppercase()];
                forms.sort();
                forms.dedup();
                for f in forms {
                    patterns.push(f);
                    word_category.push(id);
                }
            }
            for (ri, r) in cat.regexes.iter().enumerate() {
                let re = Regex::new(r).map_err(|e| format!("moderation category '{}' regexes[{ri}]: {e}", cat.name))?;
                sources.push(r.clone());
                regexes.push((re, id));
            }
        }
        let words = if patterns.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::Standard)
                    .build(&patterns)
                    .map_err(|e| format!("moderation: word automaton: {e}"))?,
            )
        };
        let set = RegexSet::new(&sources).map_err(|e| format!("moderation: regex set: {e}"))?;
        Ok(ModerationDetector { words, word_category, set, regexes })
    }

    /// Appends deny-list matches, sorted by start, non-overlapping (on overlap the earlier,
    /// then the longer, match wins).
    pub fn scan(&self, text: &str, out: &mut Vec<Finding>) {
        let mut found: Vec<Finding> = Vec::new();
        if let Some(ac) = &self.words {
            // Overlapping search, so that a longer entry failing the whole-word test does not
            // hide a shorter one at the same place.
            for m in ac.find_overlapping_iter(text) {
                if whole_word(text, m.start(), m.end())
                    && let Some(&cat) = self.word_category.get(m.pattern().as_usize())
                {
                    found.push(finding(m.start(), m.end(), cat));
                }
            }
        }
        for i in self.set.matches(text).iter() {
            if let Some((re, cat)) = self.regexes.get(i) {
                found.extend(re.find_iter(text).filter(|m| !m.is_empty()).map(|m| finding(m.start(), m.end(), *cat)));
            }
        }
        found.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
        let mut last_end = 0;
        for f in found {
            if f.start >= last_end {
                last_end = f.end;
                out.push(f);
            }
        }
    }
}

fn finding(start: usize, end: usize, cat: u16) -> Finding {
    Finding { start, end, category: Category::Moderation(cat), score: 1.0 }
}

/// The match is not glued to a letter, digit or `_` on either side.
fn whole_word(text: &str, start: usize, end: usize) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let before = text.get(..start).and_then(|s| s.chars().next_back());
    let after = text.get(end..).and_then(|s| s.chars().next());
    text.is_char_boundary(start) && text.is_char_boundary(end) && !before.is_some_and(word) && !after.is_some_and(word)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]
    use super::*;

    fn detector() -> ModerationDetector {
        let cfg: ModerationConfig = serde_json::from_str(
            r#"{"categories": [
                {"name": "insults", "words": ["idiot", "dumb fool", "Dummkopf", "ÉPAIS"]},
                {"name": "weapons", "words": ["pipe bomb"], "regexes": ["(?i)\\bhow to (build|make) an? (bomb|explosive)\\b"]}
            ]}"#,
        )
        .unwrap();
        ModerationDetector::new(&cfg).unwrap()
    }

    fn hits(text: &str) -> Vec<(u16, &str)> {
        let mut out = Vec::new();
        detector().scan(text, &mut out);
        out.iter()
            .map(|f| match f.category {
                Category::Moderation(i) => (i, &text[f.start..f.end]),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn whole_words_case_insensitive() {
        assert_eq!(hits("You IDIOT, you Dumb Fool."), vec![(0, "IDIOT"), (0, "Dumb Fool")]);
        assert_eq!(hits("idiotic idiots_ x"), vec![]);
        assert_eq!(hits("du bist ein dummkopf"), vec![(0, "dummkopf")]);
        assert_eq!(hits("trop épais"), vec![(0, "épais")]);
    }

    #[test]
    fn regexes_and_words_combined() {
        assert_eq!(hits("how to make a bomb, not a pipe bomb"), vec![(1, "how to make a bomb"), (1, "pipe bomb")]);
    }

    #[test]
    fn errors_name_the_entry() {
        let bad = ModerationConfig {
            categories: vec![ModerationCategory { name: "x".into(), words: vec![], regexes: vec!["(".into()] }],
        };
        assert!(ModerationDetector::new(&bad).unwrap_err().contains("'x' regexes[0]"));
        let empty = ModerationConfig {
            categories: vec![ModerationCategory { name: "y".into(), words: vec![" ".into()], regexes: vec![] }],
        };
        assert!(ModerationDetector::new(&empty).unwrap_err().contains("'y' words[0]"));
        assert!(serde_json::from_str::<ModerationConfig>(r#"{"cats": []}"#).is_err());
    }

    #[test]
    fn empty_config_finds_nothing() {
        let mut out = Vec::new();
        ModerationDetector::new(&ModerationConfig::default()).unwrap().scan("anything", &mut out);
        assert!(out.is_empty());
    }
}
