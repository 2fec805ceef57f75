//! Override and jailbreak phrasing. The automaton finds *anchors* (distinctive fragments:
//! `gnor`, `isregard`, `ou are now`, …) in the raw text; the window around each anchor is
//! normalised ([`super::normalize`]) and matched against [`PHRASES`], one regex over the
//! normalised form (lowercase, single spaces, leetspeak and homoglyphs folded).

use regex::bytes::Regex;

/// Anchors in the raw text. Every phrase family below contains at least one of them in its
/// ordinary spellings (lowercase, Capitalised; UPPERCASE for the main verbs), and the most
/// common leetspeak forms of "ignore" and "forget".
pub(super) const ANCHORS: &[&str] = &[
    "gnor",
    "GNOR",
    "gn0r",
    "GN0R",
    "isregard",
    "ISREGARD",
    "orget",
    "ORGET",
    "0rget",
    "retend",
    "RETEND",
    "ailbreak",
    "ou are now",
    "OU ARE NOW",
    "eveloper mode",
    "eveloper Mode",
    "ode enabled",
    "ODE ENABLED",
    "ode activated",
    "nrestricted",
    "o restrictions",
    "our system prompt",
    "OUR SYSTEM PROMPT",
    "our instructions",
    "eveal",
    "EVEAL",
    "epeat the",
    "EPEAT THE",
    "rint the system",
    "isclose the",
    "nstructions:",
    "NSTRUCTIONS:",
    "nything now",
    "oubli",
    "Oubli",
    "ergiss",
    "olvid",
    "Olvid",
    "imentic",
    "squec",
    "squeç",
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

/// Anchors for an extra phrase: its longest word, as written, lowercased, Capitalised, UPPER.
pub(super) fn extra_anchors(p: &str) -> Vec<String> {
    let word = p.split_whitespace().max_by_key(|w| w.len()).unwrap_or(p);
    let lower = word.to_lowercase();
    let mut cap: String = lower.chars().take(1).flat_map(char::to_uppercase).collect();
    cap.extend(lower.chars().skip(1));
    let mut v = vec![word.to_owned(), lower, cap, word.to_uppercase()];
    v.sort();
    v.dedup();
    v.retain(|a| !a.is_empty());
    v
}
