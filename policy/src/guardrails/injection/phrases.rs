//! Override and jailbreak phrasing. The automaton finds *anchors* (distinctive fragments:
//! `gnor`, `isregard`, `ou are now`, …) in the raw text; the window around each anchor is
//! normalised ([`super::normalize`]) and matched against [`PHRASES`], one regex over the
//! normalised form (lowercase, single spaces, leetspeak and homoglyphs folded).

use regex::bytes::Regex;

/// Anchors in the raw text, matched in any ASCII case (see [`crate::guardrails::triggers::Folded`]). Every
/// phrase family below contains at least one of them, and the most common leetspeak forms of
/// "ignore" and "forget". 27 anchors, so the search stays on the fast 32-byte Teddy searcher
/// (≤ 32 patterns) even with a few configured phrases.
pub(super) const ANCHORS: &[&str] = &[
    "gnor",
    "gn0r",
    "isregard",
    "orget",
    "0rget",
    "retend",
    "ailbreak",
    "ou are now",
    "eveloper mode",
    "ode enabled",
    "ode activated",
    "nrestricted",
    "o restrictions",
    "our system prompt",
    "our instructions",
    "eveal",
    "epeat the",
    "rint the system",
    "isclose the",
    "nstructions:",
    "nything now",
    "oubli",
    "ergiss",
    "olvid",
    "imentic",
    "esque",
];

/// The phrase families, over the normalised text. Nouns are matched as prefixes
/// (`instruction` covers `instructions`).
const PHRASES: &str = r"(?x)
(?-u:\b)(?:
  # ignore / disregard / forget ... previous|all|your ... instructions
  (?:ignore|disregard|forget|override|bypass)(?:\ [a-z']+){0,3}?
    \ (?:previous|prior|above|earlier|preceding|foregoing|former|initial|original|system|safety|all|any|your|every|existing|current)
    (?:\ [a-z']+){0,2}?
    \ (?:instruction|prompt|rule|direction|directive|guideline|command|context|message|restriction|guardrail|constraint|polic|programming|training|filter)
| (?:ignore|disregard|forget)\ (?:everything|all|anything)(?:\ (?:you|that|i|we|has|have)(?:\ [a-z']+){0,3}?)?
    \ (?:above|before|prior|previously|earlier|so\ far|until\ now|said)
| you\ are\ now\ (?:dan(?-u:\b)|in\ [a-z\ ]{0,20}mode|an?\ (?:unrestricted|unfiltered|uncensored|jailbroken|evil|rogue)|free\ from|no\ longer\ bound)
| do\ anything\ now
| (?:developer|dev|god|jailbreak|jailbroken|dan|unrestricted|debug|admin)\ mode\ (?:is\ )?(?:enabled|activated|on|unlocked)
| (?:enable|activate|enter|switch\ to)\ (?:the\ )?(?:developer|god|jailbreak|dan|unrestricted)\ mode
| act\ as\ (?:an?\ |if\ you\ (?:are|were)\ (?:an?\ )?)?(?:unrestricted|unfiltered|uncensored|jailbroken|amoral)
| pretend\ (?:that\ )?you\ (?:have|had|are\ under|are\ bound\ by)\ no\ (?:restriction|rule|limit|guideline|filter|polic|content\ polic)
| pretend\ (?:that\ )?you\ (?:are|were)\ (?:not\ bound|free\ from|an?\ (?:unrestricted|unfiltered|uncensored|jailbroken))
| (?:reveal|print|show|output|repeat|display|leak|dump|disclose|tell|give|write\ out|spell\ out)\ (?:me\ |us\ )?your
    \ (?:(?:full|entire|complete|hidden|secret|initial|original|exact|verbatim|system)\ ){0,3}(?:system\ prompt|system\ message|instruction|initial\ prompt|prompt|rule)
| (?:reveal|print|show|output|repeat|display|leak|dump|disclose)\ (?:me\ |us\ )?the\ (?:(?:full|entire|complete|exact|verbatim)\ ){0,2}
    (?:system\ prompt|system\ message|hidden\ prompt|initial\ prompt|hidden\ instruction|secret\ instruction)
| what\ (?:is|are|were)\ your\ (?:(?:exact|full|original|initial|hidden)\ )?(?:system\ prompt|instructions|initial\ prompt)
| (?:new|updated|revised)\ instructions\ ?:
  # French, German, Spanish, Italian, Portuguese.
| (?:ignore[zr]?|oublie[zr]?)\ (?:toutes\ )?(?:les\ |vos\ |tes\ )?(?:instructions|consignes|directives|règles)
    \ (?:précédentes|precedentes|antérieures|anterieures|ci-dessus)
| (?:ignoriere|ignorieren\ sie|vergiss|vergessen\ sie)\ (?:alle\ )?(?:die\ |deine\ |ihre\ )?
    (?:vorherigen\ |bisherigen\ |obigen\ |vorangegangenen\ )?(?:anweisungen|instruktionen|regeln|befehle)
| (?:ignora|ignore|olvida|olvide)\ (?:todas\ )?(?:las\ )?(?:instrucciones|indicaciones|reglas)\ (?:anteriores|previas)
| (?:ignora|dimentica)\ (?:tutte\ )?(?:le\ )?(?:istruzioni|regole)\ precedenti
| (?:ignore|ignora|esqueça|esqueca)\ (?:todas\ )?(?:as\ )?(?:instruções|instrucoes|regras)\ anteriores
";

/// Compiles the phrase regex, extended with the configured extra phrases (matched literally
/// on the normalised form).
pub(super) fn compile(extra: &[String]) -> Result<Regex, String> {
    let mut pattern = String::from(PHRASES);
    for (i, p) in extra.iter().enumerate() {
        let norm = normalise_phrase(p);
        if norm.is_empty() {
            return Err(format!("injection.phrases[{i}]: empty after normalisation"));
        }
        pattern.push_str("| ");
        // Spaces are escaped because the pattern is in verbose mode.
        pattern.push_str(&regex::escape(&norm).replace(' ', r"\ "));
        pattern.push('\n');
    }
    pattern.push(')');
    regex::bytes::RegexBuilder::new(&pattern).size_limit(8 << 20).build().map_err(|e| format!("injection.phrases: {e}"))
}

/// An extra phrase as it appears in the normalised view.
pub(super) fn normalise_phrase(p: &str) -> String {
    let w = super::normalize::Window::new(p);
    String::from_utf8_lossy(w.as_bytes()).trim().to_owned()
}

/// The anchor of an extra phrase: its longest word as written (the search ignores ASCII case).
pub(super) fn extra_anchor(p: &str) -> String {
    p.split_whitespace().max_by_key(|w| w.len()).unwrap_or(p).to_owned()
}
