//! `guardrails:` in the config file, as written.

use serde::Deserialize;

use crate::spec::SelectorSpec;

/// One guardrail rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailSpec {
    /// Named in errors, logs, metrics and the `x-shardgate-guardrails` header.
    pub id: String,
    /// Who and what the rule applies to (every listed dimension must match; globs).
    #[serde(default)]
    pub when: SelectorSpec,
    /// Exceptions: a request this matches is not checked by the rule.
    #[serde(default)]
    pub unless: Option<SelectorSpec>,
    /// Where the rule looks: `input` (the prompt), `output` (the completion), and for the MCP
    /// gateway `tool_args` and `tool_result`. Default `[input]`.
    #[serde(default = "input_only")]
    pub phase: OneOrMany<Phase>,
    pub check: CheckKind,
    /// `validate` inspects (and blocks or flags); `mutate` rewrites what it finds.
    #[serde(default)]
    pub mode: Mode,
    /// What a validating rule does with a violation: `block` (default) or `flag`.
    #[serde(default)]
    pub action: Action,
    /// `enforce` (default), `enforce_but_ignore_on_error` (a check that fails to run lets the
    /// request through), or `audit` (log and count the verdict, never block or rewrite).
    #[serde(default)]
    pub enforcement: Enforcement,
    /// Mutate mode: how found text is rewritten.
    #[serde(default)]
    pub redact: RedactStyle,
    /// Mutate mode on input: put the original values back where the model's answer repeats
    /// their placeholders, so the caller sees them and the provider never did.
    #[serde(default)]
    pub restore: bool,
    /// A validating check that asks a service, on the input phase: `true` (default) asks it
    /// while the provider is already being called, and holds the answer until the verdict
    /// (no added latency; a blocked request has still reached the provider). `false` asks
    /// first and calls the provider only if the request passes.
    #[serde(default = "yes")]
    pub overlap: bool,
    /// Settings of each check, under the check's name.
    #[serde(default)]
    pub pii: Option<super::pii::PiiConfig>,
    #[serde(default)]
    pub secrets: Option<super::secrets::SecretsConfig>,
    #[serde(default)]
    pub injection: Option<super::injection::InjectionConfig>,
    #[serde(default)]
    pub moderation: Option<super::moderation::ModerationConfig>,
    #[serde(default)]
    pub structure: Option<super::structure::StructureConfig>,
    #[serde(default)]
    pub openai_moderation: Option<super::external::OpenAiModerationSpec>,
    #[serde(default)]
    pub azure_content_safety: Option<super::external::AzureContentSafetySpec>,
    #[serde(default)]
    pub webhook: Option<super::external::WebhookSpec>,
}

fn yes() -> bool {
    true
}

fn input_only() -> OneOrMany<Phase> {
    OneOrMany::One(Phase::Input)
}

/// `phase: input` or `phase: [input, output]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Copy> OneOrMany<T> {
    pub fn to_vec(&self) -> Vec<T> {
        match self {
            OneOrMany::One(t) => vec![*t],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Input,
    Output,
    ToolArgs,
    ToolResult,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Input => "input",
            Phase::Output => "output",
            Phase::ToolArgs => "tool_args",
            Phase::ToolResult => "tool_result",
        }
    }

    pub(crate) fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    Pii,
    Secrets,
    Injection,
    Moderation,
    Structure,
    /// OpenAI's moderations API, through a provider of the config.
    OpenaiModeration,
    /// Azure AI Content Safety `text:analyze`.
    AzureContentSafety,
    /// Any HTTP service that follows the webhook contract ([`super::external`]).
    Webhook,
}

impl CheckKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Pii => "pii",
            CheckKind::Secrets => "secrets",
            CheckKind::Injection => "injection",
            CheckKind::Moderation => "moderation",
            CheckKind::Structure => "structure",
            CheckKind::OpenaiModeration => "openai_moderation",
            CheckKind::AzureContentSafety => "azure_content_safety",
            CheckKind::Webhook => "webhook",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Validate,
    Mutate,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    #[default]
    Block,
    Flag,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    #[default]
    Enforce,
    EnforceButIgnoreOnError,
    Audit,
}

/// How mutate mode rewrites what it found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedactStyle {
    /// `<EMAIL_1>`, `<CREDIT_CARD_2>`: the model still sees that something was there, and the
    /// same value gets the same placeholder throughout a request.
    #[default]
    Placeholder,
    /// `*` for every character but the last four (`************4242`).
    Mask,
    /// Removed.
    Remove,
}
