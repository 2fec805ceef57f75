//! Prompt-injection signals in user text, each a [`Finding`] with its weight as score:
//! override/jailbreak phrasing, chat-template role markers, hidden characters, and
//! instructions hidden in base64/hex. [`score`] combines them.
//!
//! Speed: a case-folded Teddy pass (27 anchors, the fast "slim" searcher) finds phrase anchors,
//! and one `memchr3` pass over `<`, `[`, `:` finds role markers; only a window around an anchor
//! is normalised (into one buffer reused for the whole scan) and matched against the phrase
//! regex. Hidden characters cost nothing on ASCII text; base64/hex runs are found by probing
//! every 24th byte. Every step is linear in the text (see the work-counting tests).

mod encoded;
mod hidden;
mod normalize;
mod phrases;
mod roles;

use regex::bytes::Regex;
use serde::Deserialize;

use crate::guardrails::finding::{Category, Finding, InjectionSignal};
use crate::guardrails::text::{ceil_boundary, floor_boundary, merge_without_overlap};
use crate::guardrails::triggers::Folded;

/// Per-signal weights, 0.0–1.0. A weight of 0 turns the signal off.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignalWeights {
    /// Override / jailbreak phrasing ("ignore all previous instructions"). Default 0.7: one
    /// such phrase alone crosses the default threshold.
    pub override_phrase: f32,
    /// A chat-template or role marker. Default 0.45: one alone stays under the default
    /// threshold (pasted transcripts), two cross it.
    pub role_spoof: f32,
    /// A run of hidden characters. Default 0.35.
    pub hidden_characters: f32,
    /// An override phrase inside base64/hex. Default 0.8.
    pub encoded_instructions: f32,
}

impl Default for SignalWeights {
    fn default() -> Self {
        SignalWeights { override_phrase: 0.7, role_spoof: 0.45, hidden_characters: 0.35, encoded_instructions: 0.8 }
    }
}

impl SignalWeights {
    fn get(&self, s: InjectionSignal) -> f32 {
        match s {
            InjectionSignal::OverridePhrase => self.override_phrase,
            InjectionSignal::RoleSpoof => self.role_spoof,
            InjectionSignal::HiddenCharacters => self.hidden_characters,
            InjectionSignal::EncodedInstructions => self.encoded_instructions,
        }
    }
}

/// Configuration of the prompt-injection detector.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InjectionConfig {
    /// Score at or above which [`InjectionDetector::is_injection`] says yes. Default 0.5.
    pub threshold: f32,
    /// Extra override phrases, matched case-insensitively on the normalised text.
    pub phrases: Vec<String>,
    /// Per-signal weights.
    pub weights: SignalWeights,
}

impl Default for InjectionConfig {
    fn default() -> Self {
        InjectionConfig { threshold: 0.5, phrases: Vec::new(), weights: SignalWeights::default() }
    }
}

/// Raw bytes before / after an anchor that a phrase can reach: every anchor sits in a phrase's
/// first words (at most ~40 bytes in), and phrases are < 120 bytes.
const BEFORE: usize = 72;
const AFTER: usize = 136;

/// Whether `bytes` holds a lead byte of a hidden character (U+2xxx: E2, U+FEFF: EF, tags: F3)
/// or of a Cyrillic/Greek letter (CE–D1). One pass without early exit, which the compiler
/// vectorises; plain ASCII, accented Latin and CJK text skip both character scans.
fn may_hide(bytes: &[u8]) -> bool {
    let lead =
        |b: u8| u8::from(b.wrapping_sub(0xCE) < 4) | u8::from(b == 0xE2) | u8::from(b == 0xEF) | u8::from(b == 0xF3);
    bytes.chunks(256).any(|c| c.iter().fold(0u8, |acc, &b| acc | lead(b)) != 0)
}

/// The compiled prompt-injection detector.
#[derive(Debug, Clone)]
pub struct InjectionDetector {
    /// Phrase anchors (the first `n_anchors` patterns), then [`roles::TRIGGERS`].
    triggers: Folded,
    n_anchors: usize,
    phrases: Regex,
    weights: SignalWeights,
    threshold: f32,
}

/// Combined injection score of `findings`: `1 − Π(1 − wᵢ)` over the injection findings'
/// scores. Independent signals reinforce each other, the result stays in [0, 1], and one
/// strong signal dominates many weak ones. Non-injection findings are ignored.
pub fn score(findings: &[Finding]) -> f32 {
    let keep = findings.iter().filter(|f| matches!(f.category, Category::Injection(_)));
    1.0 - keep.map(|f| 1.0 - f.score.clamp(0.0, 1.0)).product::<f32>()
}

impl InjectionDetector {
    /// Compiles the detector; fails on an out-of-range threshold or weight, or an empty phrase.
    pub fn new(cfg: &InjectionConfig) -> Result<InjectionDetector, String> {
        let w = &cfg.weights;
        for (name, v) in [
            ("threshold", cfg.threshold),
            ("weights.override_phrase", w.override_phrase),
            ("weights.role_spoof", w.role_spoof),
            ("weights.hidden_characters", w.hidden_characters),
            ("weights.encoded_instructions", w.encoded_instructions),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("injection.{name}: {v} is not within 0.0–1.0"));
            }
        }
        let phrases = phrases::compile(&cfg.phrases)?;
        let mut strings: Vec<String> = phrases::ANCHORS.iter().map(|s| (*s).to_owned()).collect();
        strings.extend(cfg.phrases.iter().map(|p| phrases::extra_anchor(p)));
        let n_anchors = strings.len();
        strings.extend(roles::TRIGGERS.iter().map(|s| (*s).to_owned()));
        let triggers = Folded::new(&strings).map_err(|e| format!("injection: {e}"))?;
        Ok(InjectionDetector { triggers, n_anchors, phrases, weights: cfg.weights, threshold: cfg.threshold })
    }

    /// The configured threshold.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Scans `text` and returns the combined [`score`] and the findings.
    pub fn verdict(&self, text: &str) -> (f32, Vec<Finding>) {
        let mut out = Vec::new();
        self.scan(text, &mut out);
        (score(&out), out)
    }

    /// Whether `text` scores at or above the threshold.
    pub fn is_injection(&self, text: &str) -> bool {
        self.verdict(text).0 >= self.threshold
    }

    /// Appends one finding per signal occurrence, sorted by start, non-overlapping. Where two
    /// signals overlap (a hidden character inside an override phrase) the heavier one is kept.
    pub fn scan(&self, text: &str, out: &mut Vec<Finding>) {
        let bytes = text.as_bytes();
        let phrases_on = self.weights.override_phrase > 0.0;
        // Positions to look for phrases around: anchors, hidden runs and mixed-script words
        // (an anchor may be split by a zero-width char or spelt with a lookalike letter).
        let roles_on = self.weights.role_spoof > 0.0;
        let mut anchors: Vec<(usize, usize)> = Vec::new();
        let mut marks: Vec<(usize, usize)> = Vec::new();
        if phrases_on || roles_on {
            self.triggers.for_each(text, |start, end, pattern| {
                if pattern < self.n_anchors {
                    if phrases_on {
                        anchors.push((start, end));
                    }
                } else if roles_on && let Some(span) = roles::check_trigger(bytes, start, end) {
                    marks.push(span);
                }
            });
        }
        let mut role: Vec<Finding> = Vec::new();
        if roles_on {
            let folded = marks.len();
            roles::scan_angle(bytes, |s, e| marks.push((s, e)));
            if folded > 0 && marks.len() > folded {
                marks.sort_unstable();
            }
            for (s, e) in marks {
                if role.last().is_none_or(|l| l.end <= s) {
                    role.push(self.finding(s, e, InjectionSignal::RoleSpoof));
                }
            }
        }
        let mut runs = Vec::new();
        let mut hidden = Vec::new();
        if may_hide(bytes) {
            hidden::scan(text, &mut runs);
            if self.weights.hidden_characters > 0.0 {
                hidden.extend(runs.iter().map(|&(s, e)| self.finding(s, e, InjectionSignal::HiddenCharacters)));
            }
            if phrases_on {
                let before = anchors.len();
                anchors.extend(runs.iter().copied());
                normalize::lookalikes(text, &mut anchors);
                if anchors.len() > before {
                    anchors.sort_unstable();
                }
            }
        }
        let mut phrase = Vec::new();
        self.phrases_around(text, &anchors, &mut phrase);
        let mut encoded = Vec::new();
        if self.weights.encoded_instructions > 0.0 {
            encoded::scan(bytes, |s, e, decoded| {
                let w = normalize::Window::new(decoded);
                if self.phrases.is_match(w.as_bytes()) {
                    encoded.push(self.finding(s, e, InjectionSignal::EncodedInstructions));
                }
            });
        }
        // Heaviest signal first; each lighter list keeps only what the heavier ones left free.
        let mut lists = [encoded, phrase, role, hidden];
        lists.sort_by(|a, b| {
            let w = |l: &Vec<Finding>| l.first().map_or(0.0, |f| f.score);
            w(b).total_cmp(&w(a))
        });
        let merged = lists.iter().fold(Vec::new(), |kept, l| merge_without_overlap(kept, l));
        out.extend(merged);
    }

    /// Matches the phrase regex on a normalised window around each anchor (sorted by start).
    fn phrases_around(&self, text: &str, anchors: &[(usize, usize)], found: &mut Vec<Finding>) {
        let mut phrase_end = 0;
        let mut scanned_to = 0;
        let mut w = normalize::Window::default();
        for &(start, end) in anchors {
            // A window reaching well past this anchor already covered its phrases.
            if end + AFTER / 2 <= scanned_to {
                continue;
            }
            let ws = floor_boundary(text, start.saturating_sub(BEFORE).max(phrase_end));
            let we = ceil_boundary(text, end + AFTER);
            scanned_to = we;
            let Some(raw) = text.get(ws..we) else { continue };
            w.fill(raw);
            let norm = w.as_bytes();
            crate::guardrails::text::work(raw.len() + norm.len());
            for m in self.phrases.find_iter(norm) {
                // Nouns are matched by prefix; the phrase ends with the word.
                let tail = norm.get(m.end()..).map_or(0, |t| t.iter().take_while(|b| b.is_ascii_lowercase()).count());
                let Some((s, e)) = w.source(m.start(), m.end() + tail) else { continue };
                let (s, e) = (ws + s, ws + e);
                if s >= phrase_end {
                    found.push(self.finding(s, e, InjectionSignal::OverridePhrase));
                    phrase_end = e;
                }
            }
        }
    }

    fn finding(&self, start: usize, end: usize, signal: InjectionSignal) -> Finding {
        Finding { start, end, category: Category::Injection(signal), score: self.weights.get(signal) }
    }
}

#[cfg(test)]
mod tests;
