//! What a guardrail detector reports: a span of the scanned text and what it is.
//! (Shared by every detector; this file is owned by the integrator: do not change it.)

/// What a finding is. `Copy`, small, and printable without the sensitive text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    // --- PII ---
    Email,
    Phone,
    CreditCard,
    Iban,
    UsSsn,
    IpAddress,
    DateOfBirth,
    PostalAddress,
    /// A user-defined pattern or word list, by its index in the config's list.
    Custom(u16),
    // --- Secrets ---
    Secret(SecretKind),
    // --- Prompt injection (one finding per signal; the score is computed over all) ---
    Injection(InjectionSignal),
    /// A moderation category (deny list or regex), by its index in the config's list.
    Moderation(u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecretKind {
    OpenAi,
    Anthropic,
    AwsAccessKey,
    AwsSecretKey,
    GitHub,
    Slack,
    Stripe,
    Google,
    PrivateKey,
    Jwt,
    /// A high-entropy value next to a secret-like name (`password=`, `api_key:`, ...).
    Generic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InjectionSignal {
    /// "ignore (all) previous instructions", "you are now DAN", ...
    OverridePhrase,
    /// Chat-template or role markers in user text: `<|im_start|>system`, `[INST]`, `### System:` ...
    RoleSpoof,
    /// Zero-width or bidi-control characters.
    HiddenCharacters,
    /// An override phrase found after decoding a base64 or hex run.
    EncodedInstructions,
}

/// One match: `text[start..end]` (byte offsets on UTF-8 char boundaries).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Finding {
    pub start: usize,
    pub end: usize,
    pub category: Category,
    /// How much this finding weighs, 0.0–1.0 (1.0 for exact, validated matches such as a
    /// Luhn-valid card; injection signals carry their own weights).
    pub score: f32,
}
