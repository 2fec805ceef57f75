//! Guardrails: checks on what goes to a model and what comes back, in `validate` mode (block or
//! flag) or `mutate` mode (rewrite what was found), compiled once at config load.
//!
//! The cheap checks run inline, in one pass each over a text: PII ([`pii`]), secrets
//! ([`secrets`]), prompt injection ([`injection`]), deny lists ([`moderation`]) and
//! structure ([`structure`]). The engine picks a request's rules once ([`Guardrails::select`]),
//! runs a phase's rules over the request's or the answer's texts ([`Guardrails::check`]), and
//! for streams feeds each piece through a [`stream::StreamWindow`] ([`Guardrails::stream`]).

pub mod external;
pub mod finding;
pub mod injection;
pub mod moderation;
pub mod pii;
pub mod redact;
pub mod secrets;
pub mod spec;
pub mod stream;
pub mod structure;
mod text;
mod triggers;

#[cfg(test)]
mod linear;

use std::borrow::Cow;
use std::sync::Arc;

pub use finding::{Category, Finding, InjectionSignal, SecretKind};
pub use redact::Vault;
pub use spec::{Action, CheckKind, Enforcement, GuardrailSpec, Mode, Phase, RedactStyle};
pub use stream::{Hold, StreamWindow};
pub use structure::Facts;

use crate::PolicyError;
use crate::identity::Identity;
use crate::rules::{Metadata, Selector};

/// A check, compiled.
enum Detector {
    Pii(pii::PiiDetector),
    Secrets(secrets::SecretsDetector),
    Injection(injection::InjectionDetector, f32),
    Moderation(moderation::ModerationDetector),
    Structure(structure::StructureConfig),
    /// Asks a service (the engine makes the call): what to ask, and how long to wait.
    External(external::External, std::time::Duration),
}

/// One rule, compiled.
pub struct Guardrail {
    pub id: Arc<str>,
    when: Selector,
    unless: Option<Selector>,
    phases: u8,
    pub check: CheckKind,
    pub mode: Mode,
    pub action: Action,
    pub enforcement: Enforcement,
    pub redact: RedactStyle,
    pub restore: bool,
    /// A validating service check runs alongside the provider call ([`GuardrailSpec::overlap`]).
    pub overlap: bool,
    detector: Detector,
}

impl std::fmt::Debug for Guardrail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guardrail").field("id", &self.id).field("check", &self.check).finish_non_exhaustive()
    }
}

impl Guardrail {
    pub fn has_phase(&self, phase: Phase) -> bool {
        self.phases & phase.bit() != 0
    }

    fn applies(&self, id: &Identity, model: &str, metadata: &Metadata) -> bool {
        self.when.matches(id, model, metadata) && !self.unless.as_ref().is_some_and(|u| u.matches(id, model, metadata))
    }

    /// Appends the findings of this rule's detector in `text`.
    fn scan(&self, text: &str, out: &mut Vec<Finding>) {
        match &self.detector {
            Detector::Pii(d) => d.scan(text, out),
            Detector::Secrets(d) => d.scan(text, out),
            Detector::Injection(d, _) => d.scan(text, out),
            Detector::Moderation(d) => d.scan(text, out),
            Detector::Structure(_) | Detector::External(..) => {}
        }
    }

    /// The service this rule asks, and how long it waits for it.
    pub fn external(&self) -> Option<(&external::External, std::time::Duration)> {
        match &self.detector {
            Detector::External(e, t) => Some((e, *t)),
            _ => None,
        }
    }

    /// What a violation of this rule comes to.
    fn outcome(&self) -> Outcome {
        match (self.enforcement, self.mode, self.action) {
            (Enforcement::Audit, ..) => Outcome::Audited,
            (_, Mode::Mutate, _) => Outcome::Redacted,
            (_, Mode::Validate, Action::Block) => Outcome::Blocked,
            (_, Mode::Validate, Action::Flag) => Outcome::Flagged,
        }
    }
}

/// Every rule of a config.
#[derive(Debug, Default)]
pub struct Guardrails {
    rules: Vec<Guardrail>,
}

/// The rules one request is subject to (indexes, in config order), chosen once.
#[derive(Debug, Clone, Default)]
pub struct Selected {
    rules: Vec<u16>,
}

impl Selected {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// What a rule decided about one phase of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub rule: Arc<str>,
    pub check: CheckKind,
    pub phase: Phase,
    pub outcome: Outcome,
    /// What was found, by category name (`email`, `secret.openai`): never the text.
    pub found: Vec<String>,
    /// Prompt injection: the combined score of the signals.
    pub score: Option<f32>,
    /// Structure: which limit, and why.
    pub detail: Option<String>,
}

impl Verdict {
    /// For the client's error and the logs: rule, check and categories, no text.
    pub fn describe(&self) -> String {
        let mut s = format!("guardrail `{}` ({}", self.rule, self.check.as_str());
        if !self.found.is_empty() {
            s.push_str(": ");
            s.push_str(&self.found.join(", "));
        }
        if let Some(score) = self.score {
            s.push_str(&format!(", score {score:.2}"));
        }
        s.push(')');
        if let Some(d) = &self.detail {
            s.push_str(": ");
            s.push_str(d);
        }
        s
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The request (or answer) is refused.
    Blocked,
    /// Let through, and recorded.
    Flagged,
    /// Rewritten.
    Redacted,
    /// `enforcement: audit`: would have blocked, flagged or rewritten; recorded only.
    Audited,
    /// An external check failed to answer, and its enforcement let the request through.
    Errored,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Blocked => "blocked",
            Outcome::Flagged => "flagged",
            Outcome::Redacted => "redacted",
            Outcome::Audited => "audited",
            Outcome::Errored => "errored",
        }
    }
}

/// The verdicts of one phase, and whether its texts were rewritten.
#[derive(Debug, Default)]
pub struct Checked {
    pub verdicts: Vec<Verdict>,
    pub changed: bool,
}

impl Checked {
    pub fn blocked(&self) -> Option<&Verdict> {
        self.verdicts.iter().find(|v| v.outcome == Outcome::Blocked)
    }
}

/// One step of a checked stream.
#[derive(Debug)]
pub enum StreamStep {
    /// Send this text now (possibly empty: all of it is held), with any verdicts reached.
    Send(String, Vec<Verdict>),
    /// A blocking rule matched: stop the stream.
    Stop(Verdict),
}

fn names(findings: &[Finding]) -> Vec<String> {
    // Categories first (a few, usually one), so a name is formatted once per category rather
    // than once per finding.
    let mut categories: Vec<Category> = Vec::with_capacity(4);
    for f in findings {
        if !categories.contains(&f.category) {
            categories.push(f.category);
        }
    }
    let mut v: Vec<String> = categories.iter().map(Category::name).collect();
    v.sort_unstable();
    v.dedup();
    v
}

impl Guardrails {
    pub fn compile(specs: &[GuardrailSpec]) -> Result<Guardrails, PolicyError> {
        let mut rules = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let at = |field: &str| format!("guardrails[{i}].{field}");
            if spec.id.is_empty() {
                return Err(PolicyError::new(at("id"), "must not be empty"));
            }
            if specs[..i].iter().any(|s| s.id == spec.id) {
                return Err(PolicyError::new(at("id"), format!("`{}` is used by an earlier guardrail", spec.id)));
            }
            let phases = spec.phase.to_vec();
            if phases.is_empty() {
                return Err(PolicyError::new(at("phase"), "name at least one phase"));
            }
            let settings = [
                ("pii", spec.pii.is_some(), CheckKind::Pii),
                ("secrets", spec.secrets.is_some(), CheckKind::Secrets),
                ("injection", spec.injection.is_some(), CheckKind::Injection),
                ("moderation", spec.moderation.is_some(), CheckKind::Moderation),
                ("structure", spec.structure.is_some(), CheckKind::Structure),
                ("openai_moderation", spec.openai_moderation.is_some(), CheckKind::OpenaiModeration),
                ("azure_content_safety", spec.azure_content_safety.is_some(), CheckKind::AzureContentSafety),
                ("webhook", spec.webhook.is_some(), CheckKind::Webhook),
            ];
            if let Some((name, ..)) = settings.iter().find(|(_, set, kind)| *set && *kind != spec.check) {
                return Err(PolicyError::new(
                    at(name),
                    format!("settings for `{name}` on a `check: {}` guardrail", spec.check.as_str()),
                ));
            }
            if spec.mode == Mode::Mutate
                && matches!(
                    spec.check,
                    CheckKind::Injection
                        | CheckKind::Structure
                        | CheckKind::OpenaiModeration
                        | CheckKind::AzureContentSafety
                )
            {
                return Err(PolicyError::new(
                    at("mode"),
                    format!(
                        "`{}` checks validate only (mutate is for pii, secrets, moderation and webhook)",
                        spec.check.as_str()
                    ),
                ));
            }
            let asks_a_service =
                matches!(spec.check, CheckKind::OpenaiModeration | CheckKind::AzureContentSafety | CheckKind::Webhook);
            if asks_a_service && spec.mode == Mode::Mutate && phases.contains(&Phase::Output) {
                return Err(PolicyError::new(
                    at("mode"),
                    "a service check on the output phase validates only (a webhook may rewrite the input)",
                ));
            }
            if spec.mode == Mode::Mutate && spec.action == Action::Flag {
                return Err(PolicyError::new(at("action"), "`action` is for validate mode (mutate rewrites)"));
            }
            if spec.restore
                && (spec.mode != Mode::Mutate
                    || spec.redact != RedactStyle::Placeholder
                    || !phases.contains(&Phase::Input))
            {
                return Err(PolicyError::new(
                    at("restore"),
                    "restore needs mode: mutate, redact: placeholder and the input phase",
                ));
            }
            let bad = |field: &'static str| move |e: String| PolicyError::new(format!("guardrails[{i}].{field}"), e);
            let detector = match spec.check {
                CheckKind::Pii => {
                    Detector::Pii(pii::PiiDetector::new(&spec.pii.clone().unwrap_or_default()).map_err(bad("pii"))?)
                }
                CheckKind::Secrets => Detector::Secrets(
                    secrets::SecretsDetector::new(&spec.secrets.clone().unwrap_or_default()).map_err(bad("secrets"))?,
                ),
                CheckKind::Injection => {
                    let cfg = spec.injection.clone().unwrap_or_default();
                    let threshold = cfg.threshold;
                    Detector::Injection(injection::InjectionDetector::new(&cfg).map_err(bad("injection"))?, threshold)
                }
                CheckKind::Moderation => {
                    let Some(cfg) = &spec.moderation else {
                        return Err(PolicyError::new(at("moderation"), "a moderation check needs its categories"));
                    };
                    Detector::Moderation(moderation::ModerationDetector::new(cfg).map_err(bad("moderation"))?)
                }
                CheckKind::Structure => Detector::Structure(spec.structure.clone().unwrap_or_default()),
                CheckKind::OpenaiModeration => {
                    let Some(s) = &spec.openai_moderation else {
                        return Err(PolicyError::new(at("openai_moderation"), "name the provider to ask"));
                    };
                    let timeout =
                        external::timeout_of(&s.timeout, "openai_moderation").map_err(bad("openai_moderation"))?;
                    let e = external::External::OpenAiModeration {
                        provider: s.provider.clone(),
                        model: s.model.clone(),
                        categories: s.categories.clone(),
                    };
                    Detector::External(e, timeout)
                }
                CheckKind::AzureContentSafety => {
                    let Some(s) = &spec.azure_content_safety else {
                        return Err(PolicyError::new(at("azure_content_safety"), "name the provider to ask"));
                    };
                    let timeout = external::timeout_of(&s.timeout, "azure_content_safety")
                        .map_err(bad("azure_content_safety"))?;
                    let e = external::External::AzureContentSafety {
                        provider: s.provider.clone(),
                        severity: s.severity,
                        categories: s.categories.clone(),
                        api_version: s.api_version.clone(),
                    };
                    Detector::External(e, timeout)
                }
                CheckKind::Webhook => {
                    let Some(s) = &spec.webhook else {
                        return Err(PolicyError::new(at("webhook"), "name the provider to ask"));
                    };
                    let timeout = external::timeout_of(&s.timeout, "webhook").map_err(bad("webhook"))?;
                    let path = s.path.clone().unwrap_or_else(|| "/".into());
                    if !path.starts_with('/') {
                        return Err(PolicyError::new(at("webhook.path"), "must start with `/`"));
                    }
                    Detector::External(external::External::Webhook { provider: s.provider.clone(), path }, timeout)
                }
            };
            rules.push(Guardrail {
                id: Arc::from(spec.id.as_str()),
                when: Selector::compile(&spec.when),
                unless: spec.unless.as_ref().map(Selector::compile),
                phases: phases.iter().fold(0, |acc, p| acc | p.bit()),
                check: spec.check,
                mode: spec.mode,
                action: spec.action,
                enforcement: spec.enforcement,
                redact: spec.redact,
                restore: spec.restore,
                overlap: spec.overlap,
                detector,
            });
        }
        if rules.len() > usize::from(u16::MAX) {
            return Err(PolicyError::new("guardrails", "too many guardrails"));
        }
        Ok(Guardrails { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Every rule's id, in config order.
    pub fn ids(&self) -> impl Iterator<Item = &Arc<str>> {
        self.rules.iter().map(|r| &r.id)
    }

    pub fn get(&self, i: usize) -> Option<&Guardrail> {
        self.rules.get(i)
    }

    /// The rules that apply to this caller, model and metadata.
    pub fn select(&self, id: &Identity, model: &str, metadata: &Metadata) -> Selected {
        let rules = self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.applies(id, model, metadata))
            .filter_map(|(i, _)| u16::try_from(i).ok())
            .collect();
        Selected { rules }
    }

    fn of<'a>(&'a self, sel: &'a Selected, phase: Phase) -> impl Iterator<Item = &'a Guardrail> + 'a {
        sel.rules.iter().filter_map(|&i| self.rules.get(usize::from(i))).filter(move |r| r.has_phase(phase))
    }

    /// Whether any selected rule looks at `phase`.
    pub fn applies(&self, sel: &Selected, phase: Phase) -> bool {
        self.of(sel, phase).next().is_some()
    }

    /// Where `rule` is among the config's rules, for [`Guardrails::get`] (a service check's
    /// verdict, reached later, names its rule by index).
    pub fn index_of(&self, rule: &Guardrail) -> Option<usize> {
        self.rules.iter().position(|r| std::ptr::eq(r, rule))
    }

    /// The selected rules of `phase` that ask a service, in config order.
    pub fn externals<'a>(&'a self, sel: &'a Selected, phase: Phase) -> impl Iterator<Item = &'a Guardrail> + 'a {
        self.of(sel, phase).filter(|r| r.external().is_some())
    }

    /// The verdict of an external check: what the service answered, or why the call failed
    /// (then the rule's enforcement decides: `enforce` blocks, the others let the request
    /// through as `errored`).
    pub fn external_verdict(
        rule: &Guardrail,
        phase: Phase,
        answer: Result<&external::Answer, &str>,
        rewritten: bool,
    ) -> Option<Verdict> {
        let mut v = Verdict {
            rule: rule.id.clone(),
            check: rule.check,
            phase,
            outcome: Outcome::Blocked,
            found: Vec::new(),
            score: None,
            detail: None,
        };
        match answer {
            Err(why) => {
                v.detail = Some(format!("the check could not be made: {why}"));
                v.outcome = match rule.enforcement {
                    Enforcement::Enforce => Outcome::Blocked,
                    Enforcement::EnforceButIgnoreOnError | Enforcement::Audit => Outcome::Errored,
                };
            }
            Ok(a) => {
                if !a.flagged && !rewritten {
                    return None;
                }
                v.found = a.categories.clone();
                v.outcome = match (rule.enforcement, rule.mode, rule.action) {
                    (Enforcement::Audit, ..) => Outcome::Audited,
                    _ if rewritten && !a.flagged => Outcome::Redacted,
                    _ if a.flag_only => Outcome::Flagged,
                    (_, Mode::Validate, Action::Flag) => Outcome::Flagged,
                    _ => Outcome::Blocked,
                };
            }
        }
        Some(v)
    }

    /// The verdict of a service check that was not asked (`why`): `errored`, so it shows in
    /// the header, the log and the metrics.
    pub fn unasked(rule: &Guardrail, phase: Phase, why: &str) -> Verdict {
        Verdict {
            rule: rule.id.clone(),
            check: rule.check,
            phase,
            outcome: Outcome::Errored,
            found: Vec::new(),
            score: None,
            detail: Some(why.to_owned()),
        }
    }

    /// Whether the originals of redacted input go back into answers.
    pub fn restores(&self, sel: &Selected) -> bool {
        self.of(sel, Phase::Input).any(|r| r.restore && r.enforcement != Enforcement::Audit)
    }

    /// Runs the phase's rules over `texts`: every validating rule first (a block wins), then
    /// the mutating ones in config order, each rewriting the texts the next one sees.
    pub fn check(
        &self,
        sel: &Selected,
        phase: Phase,
        texts: &mut [Cow<'_, str>],
        facts: Facts<'_>,
        vault: &mut Vault,
    ) -> Checked {
        let mut checked = Checked::default();
        let mut findings = Vec::new();
        for rule in self.of(sel, phase).filter(|r| r.mode == Mode::Validate) {
            if let Some(v) = validate(rule, phase, texts, facts, &mut findings) {
                checked.verdicts.push(v);
            }
        }
        if checked.blocked().is_some() {
            return checked;
        }
        for rule in self.of(sel, phase).filter(|r| r.mode == Mode::Mutate) {
            let mut found = Vec::new();
            for text in texts.iter_mut() {
                findings.clear();
                rule.scan(text, &mut findings);
                if findings.is_empty() {
                    continue;
                }
                found.extend(findings.iter().copied());
                if rule.enforcement != Enforcement::Audit {
                    *text = Cow::Owned(redact::redact(text, &findings, rule.redact, vault));
                    checked.changed = true;
                }
            }
            if !found.is_empty() {
                checked.verdicts.push(verdict(rule, phase, &found, None, None));
            }
        }
        checked
    }

    /// Puts redacted originals back into an answer's texts; whether any was.
    pub fn restore(&self, texts: &mut [Cow<'_, str>], vault: &Vault) -> bool {
        let mut changed = false;
        for text in texts.iter_mut() {
            if let Some(restored) = vault.restore(text) {
                *text = Cow::Owned(restored);
                changed = true;
            }
        }
        changed
    }

    /// How much a checked stream holds back.
    pub fn hold(&self, vault: &Vault) -> Hold {
        let base = Hold::default();
        Hold { window: base.window.max(vault.longest() + 1), ..base }
    }

    /// One piece of a streamed answer (`end`: the stream is over; send the rest). Validating
    /// rules judge the text held so far; what can go is rewritten by the mutating ones, and
    /// restored when asked.
    #[allow(clippy::too_many_arguments)]
    pub fn stream(
        &self,
        sel: &Selected,
        phase: Phase,
        window: &mut StreamWindow,
        piece: &str,
        end: bool,
        facts: Facts<'_>,
        vault: &mut Vault,
    ) -> StreamStep {
        window.push(piece);
        let mut findings = Vec::new();
        let mut verdicts = Vec::new();
        let held = [Cow::Borrowed(window.pending())];
        for rule in self.of(sel, phase).filter(|r| r.mode == Mode::Validate && r.check != CheckKind::Structure) {
            if let Some(v) = validate(rule, phase, &held, facts, &mut findings) {
                if v.outcome == Outcome::Blocked {
                    return StreamStep::Stop(v);
                }
                verdicts.push(v);
            }
        }
        let cut = if end {
            window.pending().len()
        } else {
            let mut all = Vec::new();
            for rule in self.of(sel, phase).filter(|r| r.mode == Mode::Mutate) {
                rule.scan(window.pending(), &mut all);
            }
            let restoring = self.restores(sel);
            all.sort_by_key(|f| f.start);
            let cut = window.cut(&all, self.hold(vault));
            // A placeholder being streamed is restored whole: hold back from its `<`.
            if restoring { placeholder_safe(window.pending(), cut, vault.longest()) } else { cut }
        };
        let mut out = [Cow::Owned(window.release(cut))];
        let checked = self.check_mutators(sel, phase, &mut out, vault);
        verdicts.extend(checked);
        if self.restores(sel) {
            self.restore(&mut out, vault);
        }
        let [text] = out;
        StreamStep::Send(text.into_owned(), verdicts)
    }

    fn check_mutators(
        &self,
        sel: &Selected,
        phase: Phase,
        texts: &mut [Cow<'_, str>],
        vault: &mut Vault,
    ) -> Vec<Verdict> {
        let mut verdicts = Vec::new();
        let mut findings = Vec::new();
        for rule in self.of(sel, phase).filter(|r| r.mode == Mode::Mutate) {
            for text in texts.iter_mut() {
                findings.clear();
                rule.scan(text, &mut findings);
                if findings.is_empty() {
                    continue;
                }
                if rule.enforcement != Enforcement::Audit {
                    *text = Cow::Owned(redact::redact(text, &findings, rule.redact, vault));
                }
                verdicts.push(verdict(rule, phase, &findings, None, None));
            }
        }
        verdicts
    }
}

/// Moves `cut` back to the `<` of a placeholder that may be cut in two.
fn placeholder_safe(text: &str, cut: usize, longest: usize) -> usize {
    let from = cut.saturating_sub(longest);
    let mut from = from;
    while from > 0 && !text.is_char_boundary(from) {
        from -= 1;
    }
    match text.get(from..cut).and_then(|s| s.rfind('<')) {
        Some(i) if !text.get(from + i..cut).is_some_and(|s| s.contains('>')) => from + i,
        _ => cut,
    }
}

fn verdict(rule: &Guardrail, phase: Phase, found: &[Finding], score: Option<f32>, detail: Option<String>) -> Verdict {
    Verdict {
        rule: rule.id.clone(),
        check: rule.check,
        phase,
        outcome: rule.outcome(),
        found: names(found),
        score,
        detail,
    }
}

/// One validating rule over the texts: its verdict when it matched.
fn validate(
    rule: &Guardrail,
    phase: Phase,
    texts: &[Cow<'_, str>],
    facts: Facts<'_>,
    findings: &mut Vec<Finding>,
) -> Option<Verdict> {
    findings.clear();
    match &rule.detector {
        // Asked by the engine, which reports through [`Guardrails::external_verdict`].
        Detector::External(..) => None,
        Detector::Structure(cfg) => {
            let (name, why) = cfg.check(texts, facts, phase == Phase::Output)?;
            let mut v = verdict(rule, phase, &[], None, Some(why));
            v.found = vec![name];
            Some(v)
        }
        Detector::Injection(_, threshold) => {
            for t in texts {
                rule.scan(t, findings);
            }
            let score = injection::score(findings);
            (score >= *threshold).then(|| verdict(rule, phase, findings, Some(score), None))
        }
        _ => {
            for t in texts {
                rule.scan(t, findings);
            }
            (!findings.is_empty()).then(|| verdict(rule, phase, findings, None, None))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::spec::SelectorSpec;
    use proptest::prelude::*;

    fn rules(yaml: &str) -> Guardrails {
        let specs: Vec<GuardrailSpec> = serde_saphyr::from_str(yaml).unwrap();
        Guardrails::compile(&specs).unwrap()
    }

    fn everyone(g: &Guardrails) -> Selected {
        g.select(&Identity::anonymous(), "m", &Metadata::new())
    }

    fn facts(m: &Metadata) -> Facts<'_> {
        Facts { metadata: m, asked_json: false, schema: None }
    }

    const TEXT: &str = "Hi, I'm Ann (ann.lee@example.org, +44 20 7946 0958). Card 4111 1111 1111 1111 \
                        expires soon; my colleague is bob@example.com. Thanks!";

    #[test]
    fn validators_block_and_mutators_rewrite_in_order() {
        let g = rules(
            "- {id: block-secrets, check: secrets}\n- {id: redact, check: pii, mode: mutate}\n- {id: mask, check: pii, mode: mutate, redact: mask}\n",
        );
        let sel = everyone(&g);
        let m = Metadata::new();
        let mut vault = Vault::default();
        let mut texts = vec![Cow::Borrowed(TEXT)];
        let checked = g.check(&sel, Phase::Input, &mut texts, facts(&m), &mut vault);
        assert!(checked.changed && checked.blocked().is_none());
        assert!(
            texts[0].contains("<EMAIL_1>") && texts[0].contains("<EMAIL_2>") && texts[0].contains("<CREDIT_CARD_1>")
        );
        assert!(!texts[0].contains("4111"), "{}", texts[0]);
        // Only the first mutator found anything: the second sees placeholders.
        assert_eq!(checked.verdicts.len(), 1);
        assert_eq!(checked.verdicts[0].found, ["credit_card", "email", "phone"]);
        let mut texts = vec![Cow::Borrowed("AWS key AKIAQ3EGUWVNZ7X4KJPM and id")];
        let checked = g.check(&sel, Phase::Input, &mut texts, facts(&m), &mut vault);
        let v = checked.blocked().unwrap();
        assert_eq!(&*v.rule, "block-secrets");
        assert!(!v.describe().contains("AKIA"), "{}", v.describe());
        assert!(!checked.changed, "a block stops before the mutators");
    }

    #[test]
    fn config_mistakes_are_named() {
        let bad = |yaml: &str| {
            let specs: Vec<GuardrailSpec> = serde_saphyr::from_str(yaml).unwrap();
            Guardrails::compile(&specs).unwrap_err().to_string()
        };
        assert!(bad("- {id: a, check: injection, mode: mutate}\n").contains("validate only"));
        assert!(bad("- {id: a, check: pii, secrets: {}}\n").contains("guardrails[0].secrets"));
        assert!(bad("- {id: a, check: pii}\n- {id: a, check: secrets}\n").contains("earlier guardrail"));
        assert!(bad("- {id: a, check: pii, restore: true}\n").contains("restore needs"));
        assert!(bad("- {id: a, check: pii, phase: []}\n").contains("at least one phase"));
        assert!(bad("- {id: a, check: moderation}\n").contains("categories"));
        assert!(bad("- {id: a, check: webhook}\n").contains("name the provider"));
        // Services judge MCP tool calls too.
        let specs: Vec<GuardrailSpec> = serde_saphyr::from_str(
            "- {id: a, check: webhook, webhook: {provider: p}, phase: [tool_args, tool_result]}\n",
        )
        .unwrap();
        assert!(Guardrails::compile(&specs).is_ok());
        assert!(
            bad("- {id: a, check: webhook, mode: mutate, webhook: {provider: p}, phase: [input, output]}\n")
                .contains("validates only")
        );
        assert!(
            bad("- {id: a, check: openai_moderation, openai_moderation: {provider: p}, mode: mutate}\n")
                .contains("validate only")
        );
        assert!(
            bad("- {id: a, check: webhook, webhook: {provider: p, timeout: 5m}}\n").contains("between 1ms and 60s")
        );
        assert!(bad("- {id: a, check: webhook, webhook: {provider: p, path: x}}\n").contains("start with"));
    }

    #[test]
    fn selection_follows_when_and_unless() {
        let g = rules("- {id: a, check: pii, when: {models: ['gpt-*']}, unless: {metadata: {trusted: 'yes'}}}\n");
        let id = Identity::anonymous();
        let mut trusted = Metadata::new();
        trusted.set("trusted", "yes");
        assert!(!g.select(&id, "gpt-4o", &Metadata::new()).is_empty());
        assert!(g.select(&id, "claude", &Metadata::new()).is_empty());
        assert!(g.select(&id, "gpt-4o", &trusted).is_empty());
        let _ = SelectorSpec::default();
    }

    /// Feeds `pieces` through a stream and returns what was sent.
    fn streamed(g: &Guardrails, sel: &Selected, pieces: &[&str], vault: &mut Vault) -> String {
        let m = Metadata::new();
        let mut w = StreamWindow::default();
        let mut out = String::new();
        for (i, p) in pieces.iter().enumerate() {
            match g.stream(sel, Phase::Output, &mut w, p, i + 1 == pieces.len(), facts(&m), vault) {
                StreamStep::Send(t, _) => out.push_str(&t),
                StreamStep::Stop(v) => panic!("stopped by {}", v.describe()),
            }
        }
        out
    }

    proptest! {
        /// Wherever a stream is cut into chunks, what is sent is what redacting the whole text
        /// gives: no match is split, none is missed.
        #[test]
        fn stream_redaction_does_not_depend_on_chunk_boundaries(cuts in proptest::collection::vec(0..TEXT.len(), 0..12)) {
            let g = rules("- {id: r, check: pii, mode: mutate, phase: output}\n");
            let sel = everyone(&g);
            let m = Metadata::new();
            let mut whole = vec![Cow::Borrowed(TEXT)];
            g.check(&sel, Phase::Output, &mut whole, facts(&m), &mut Vault::default());
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|c| TEXT.is_char_boundary(*c)).collect();
            cuts.push(0);
            cuts.push(TEXT.len());
            cuts.sort_unstable();
            cuts.dedup();
            let pieces: Vec<&str> = cuts.windows(2).map(|w| &TEXT[w[0]..w[1]]).collect();
            prop_assert_eq!(streamed(&g, &sel, &pieces, &mut Vault::default()), whole[0].clone().into_owned());
        }
    }

    #[test]
    fn only_the_requests_own_values_are_restored_in_answers() {
        let g = rules("- {id: r, check: pii, mode: mutate, restore: true, phase: [input, output]}\n");
        let sel = everyone(&g);
        let m = Metadata::new();
        let mut vault = Vault::default();
        let mut prompt = vec![Cow::Borrowed("mail ann.lee@example.org")];
        g.check(&sel, Phase::Input, &mut prompt, facts(&m), &mut vault);
        vault.seal();
        // The answer names the caller's own address and someone else's: the first comes back,
        // the second, taken out by the answer's own redaction, stays out.
        let mut answer = vec![Cow::Borrowed("Wrote <EMAIL_1> and ann.lee@example.org, cc bob@example.com.")];
        let checked = g.check(&sel, Phase::Output, &mut answer, facts(&m), &mut vault);
        assert!(checked.changed);
        assert!(g.restore(&mut answer, &vault));
        assert_eq!(answer[0], "Wrote ann.lee@example.org and ann.lee@example.org, cc <EMAIL_2>.");
        let sent = streamed(&g, &sel, &["cc bob@exa", "mple.com and <EMAIL_", "1>"], &mut vault);
        assert_eq!(sent, "cc <EMAIL_2> and ann.lee@example.org");
    }

    #[test]
    fn a_stream_restores_placeholders_split_across_chunks() {
        let g = rules("- {id: r, check: pii, mode: mutate, restore: true, phase: [input, output]}\n");
        let sel = everyone(&g);
        let m = Metadata::new();
        let mut vault = Vault::default();
        let mut prompt = vec![Cow::Borrowed("mail ann.lee@example.org")];
        g.check(&sel, Phase::Input, &mut prompt, facts(&m), &mut vault);
        assert_eq!(prompt[0], "mail <EMAIL_1>");
        let sent = streamed(&g, &sel, &["Sending to <EM", "AIL_", "1> now"], &mut vault);
        assert_eq!(sent, "Sending to ann.lee@example.org now");
    }
}
