//! Secrets in prompts and responses: provider API keys, cloud credentials, private keys,
//! JWTs, and high-entropy values assigned to secret-like names.
//!
//! Two linear passes find the triggers: a packed (Teddy, SIMD) search for the fixed key prefixes
//! (16 patterns, so the fast 32-byte "slim" searcher applies), and `memchr2` for the assignment
//! operators `=` and `:`. Each prefix is verified locally by [`formats`]; each operator by
//! [`assignment`], which first reads the few bytes of name before it and stops there unless the
//! name ends like a secret (`token`, `password`, `api_key`, …). Name words in prose
//! (`the token budget`) therefore cost nothing.
//!
//! Decisions:
//! - AWS's documented example credentials (`AKIAIOSFODNN7EXAMPLE`, ids ending in `EXAMPLE`,
//!   secrets ending in `EXAMPLEKEY`) are not reported: they are everywhere in documentation.
//! - Stripe test-mode keys (`sk_test_`, `rk_test_`) are reported with score 0.5: they move no
//!   money but authenticate to the account. `stripe_test_keys: false` turns them off.
//! - Publishable keys (`pk_live_`) are public by design and not reported.

mod assignment;
mod formats;

use crate::guardrails::triggers::Triggers;
use serde::Deserialize;

use crate::guardrails::finding::{Category, Finding, SecretKind};

/// Which kinds of secret are reported. All on by default.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretKinds {
    /// `sk-…` legacy, `sk-proj-`, `sk-svcacct-`, `sk-admin-`.
    pub open_ai: bool,
    /// `sk-ant-api03-`, `sk-ant-admin01-`.
    pub anthropic: bool,
    /// `AKIA…` / `ASIA…` access key ids.
    pub aws_access_key: bool,
    /// 40-char secret access keys next to an AWS secret name.
    pub aws_secret_key: bool,
    /// `ghp_ gho_ ghu_ ghs_ ghr_ github_pat_`.
    pub github: bool,
    /// `xox?-` tokens and `hooks.slack.com/services/` webhooks.
    pub slack: bool,
    /// `sk_live_ rk_live_` (and test keys, see `stripe_test_keys`).
    pub stripe: bool,
    /// `AIza…` API keys.
    pub google: bool,
    /// PEM `-----BEGIN … PRIVATE KEY-----` blocks.
    pub private_key: bool,
    /// JSON Web Tokens.
    pub jwt: bool,
    /// High-entropy values assigned to secret-like names.
    pub generic: bool,
}

impl Default for SecretKinds {
    fn default() -> Self {
        SecretKinds {
            open_ai: true,
            anthropic: true,
            aws_access_key: true,
            aws_secret_key: true,
            github: true,
            slack: true,
            stripe: true,
            google: true,
            private_key: true,
            jwt: true,
            generic: true,
        }
    }
}

impl SecretKinds {
    fn on(&self, kind: SecretKind) -> bool {
        match kind {
            SecretKind::OpenAi => self.open_ai,
            SecretKind::Anthropic => self.anthropic,
            SecretKind::AwsAccessKey => self.aws_access_key,
            SecretKind::AwsSecretKey => self.aws_secret_key,
            SecretKind::GitHub => self.github,
            SecretKind::Slack => self.slack,
            SecretKind::Stripe => self.stripe,
            SecretKind::Google => self.google,
            SecretKind::PrivateKey => self.private_key,
            SecretKind::Jwt => self.jwt,
            SecretKind::Generic => self.generic,
        }
    }
}

/// Configuration of the secrets detector.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// Which kinds are reported.
    pub kinds: SecretKinds,
    /// Minimum Shannon entropy, in bits per character, of a generic (name = value) secret.
    pub entropy_threshold: f32,
    /// Minimum length of a generic secret value.
    pub min_generic_len: usize,
    /// Report Stripe test-mode keys (score 0.5).
    pub stripe_test_keys: bool,
}

impl Default for SecretsConfig {
    fn default() -> Self {
        SecretsConfig {
            kinds: SecretKinds::default(),
            entropy_threshold: 3.5,
            min_generic_len: 16,
            stripe_test_keys: true,
        }
    }
}

/// A verified secret, before the kind filter.
struct Hit {
    start: usize,
    end: usize,
    kind: SecretKind,
    score: f32,
}

/// What a trigger pattern asks us to verify.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    SkDash,
    Stripe,
    Aws,
    GitHub,
    GitHubPat,
    Slack,
    SlackWebhook,
    Google,
    Pem,
    Jwt,
}

const TRIGGERS: &[(&str, Trigger)] = &[
    ("sk-", Trigger::SkDash),
    ("k_live_", Trigger::Stripe),
    ("k_test_", Trigger::Stripe),
    ("AKIA", Trigger::Aws),
    ("ASIA", Trigger::Aws),
    ("ghp_", Trigger::GitHub),
    ("gho_", Trigger::GitHub),
    ("ghu_", Trigger::GitHub),
    ("ghs_", Trigger::GitHub),
    ("ghr_", Trigger::GitHub),
    ("github_pat_", Trigger::GitHubPat),
    ("xox", Trigger::Slack),
    ("hooks.slack.com/services/", Trigger::SlackWebhook),
    ("AIza", Trigger::Google),
    ("-----BEGIN ", Trigger::Pem),
    ("eyJ", Trigger::Jwt),
];

/// The compiled secrets detector.
#[derive(Debug, Clone)]
pub struct SecretsDetector {
    triggers: Triggers,
    kinds: SecretKinds,
    limits: assignment::Limits,
    stripe_test_keys: bool,
}

impl SecretsDetector {
    /// Compiles the detector. Fails on a threshold that is not a finite number ≥ 0.
    pub fn new(cfg: &SecretsConfig) -> Result<SecretsDetector, String> {
        if !cfg.entropy_threshold.is_finite() || cfg.entropy_threshold < 0.0 {
            return Err(format!("secrets.entropy_threshold: {} is not a finite number ≥ 0", cfg.entropy_threshold));
        }
        let triggers = Triggers::new(TRIGGERS.iter().map(|(p, _)| p), None).map_err(|e| format!("secrets: {e}"))?;
        Ok(SecretsDetector {
            triggers,
            kinds: cfg.kinds,
            limits: assignment::Limits {
                entropy_threshold: cfg.entropy_threshold,
                min_len: cfg.min_generic_len.max(1),
            },
            stripe_test_keys: cfg.stripe_test_keys,
        })
    }

    /// Appends the secrets in `text`, sorted by start, non-overlapping. The span is the secret
    /// itself (for name = value, only the value), so redaction keeps the surrounding text.
    pub fn scan(&self, text: &str, out: &mut Vec<Finding>) {
        let bytes = text.as_bytes();
        // Prefixed keys first (few), then the assignments, merged in text order: a candidate is
        // kept when its trigger and its span start at or after the end of the last one kept.
        let mut prefixed: Vec<(usize, Hit)> = Vec::new();
        let mut pem = formats::PemEnds::default();
        let mut claimed = 0;
        self.triggers.for_each(text, |start, _end, pattern| {
            crate::guardrails::text::work(1);
            if start >= claimed
                && let Some((_, trigger)) = TRIGGERS.get(pattern)
                && let Some(h) = self.verify(bytes, start, *trigger, &mut pem)
            {
                claimed = h.end;
                prefixed.push((start, h));
            }
        });
        let mut prefixed = prefixed.into_iter().peekable();
        let mut last_end = 0;
        let mut keep = |key: usize, h: Hit, out: &mut Vec<Finding>| {
            // Every span is ASCII-delimited, but keep the char-boundary promise explicit.
            if key >= last_end && h.start >= last_end && text.is_char_boundary(h.start) && text.is_char_boundary(h.end)
            {
                if self.kinds.on(h.kind) {
                    out.push(Finding {
                        start: h.start,
                        end: h.end,
                        category: Category::Secret(h.kind),
                        score: h.score,
                    });
                }
                // A disabled kind still claims its span, so the generic check does not re-report it.
                last_end = h.end;
            }
        };
        memchr::memchr2_iter(b'=', b':', bytes).for_each(|op| {
            crate::guardrails::text::work(1);
            if let Some((key, h)) = assignment::at_operator(bytes, op, &self.limits) {
                while let Some((k, p)) = prefixed.next_if(|(k, _)| *k <= key) {
                    keep(k, p, out);
                }
                keep(key, h, out);
            }
        });
        for (k, p) in prefixed {
            keep(k, p, out);
        }
    }

    fn verify(&self, bytes: &[u8], at: usize, trigger: Trigger, pem: &mut formats::PemEnds) -> Option<Hit> {
        match trigger {
            Trigger::SkDash => formats::sk_dash(bytes, at),
            Trigger::Stripe => formats::stripe(bytes, at, self.stripe_test_keys),
            Trigger::Aws => formats::aws_access_key(bytes, at),
            Trigger::GitHub => formats::github(bytes, at, false),
            Trigger::GitHubPat => formats::github(bytes, at, true),
            Trigger::Slack => formats::slack_token(bytes, at),
            Trigger::SlackWebhook => formats::slack_webhook(bytes, at),
            Trigger::Google => formats::google(bytes, at),
            Trigger::Pem => formats::pem_private_key(bytes, at, pem),
            Trigger::Jwt => formats::jwt(bytes, at),
        }
    }
}

#[cfg(test)]
mod tests;
