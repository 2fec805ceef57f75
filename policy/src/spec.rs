//! Governance as users write it: the YAML sections `teams`, `users`, `applications`,
//! `environments`, `keys`, `rate_limits` and `budgets` (the admin API takes the same shapes as
//! JSON). Unknown fields are errors. These types are compiled into a [`crate::Policy`] at load
//! time; the request path never looks at them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A role. Org admins may do anything; team admins manage their own teams; members use models
/// and read their own usage; viewers only read (they may list models and spend, not call models).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    OrgAdmin,
    TeamAdmin,
    #[default]
    Member,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::OrgAdmin => "org_admin",
            Role::TeamAdmin => "team_admin",
            Role::Member => "member",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "org_admin" => Role::OrgAdmin,
            "team_admin" => Role::TeamAdmin,
            "member" => Role::Member,
            "viewer" => Role::Viewer,
            _ => return None,
        })
    }
}

/// `teams.<name>:`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TeamSpec {
    /// Environments this team's keys may belong to (all declared ones when empty).
    pub environments: Vec<String>,
    /// Models the team may use, as globs (all when empty).
    pub models: Vec<String>,
    /// Rate limits applied to the team as a whole.
    pub limits: Option<LimitSpec>,
    /// Budget of the team as a whole.
    pub budget: Option<BudgetLimits>,
}

/// `users.<name>:`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserSpec {
    /// Teams the user belongs to; their keys name one of them.
    pub teams: Vec<String>,
    /// `org_admin`, `team_admin` (of the teams above), `member` (default) or `viewer`.
    pub role: Role,
    /// Models the user may use, as globs (all their teams allow when empty).
    pub models: Vec<String>,
    /// Rate limits applied to this user, summed over all their keys.
    pub limits: Option<LimitSpec>,
    pub budget: Option<BudgetLimits>,
}

/// `applications.<name>:` (a service identity; its keys belong to no person).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApplicationSpec {
    /// The team that owns it.
    pub team: Option<String>,
    pub models: Vec<String>,
    pub limits: Option<LimitSpec>,
    pub budget: Option<BudgetLimits>,
}

/// `keys:` entries. `Debug` never shows the secret.
#[derive(Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeySpec {
    /// Unique name (how rules, logs and the admin API refer to the key).
    pub name: String,
    /// The stored digest, `hmac-sha256:<64 hex>` (see `shardgate keys hash`).
    pub hash: Option<String>,
    /// Or the secret itself (write `${ENV_VAR}`; it is hashed at load and never kept).
    pub secret: Option<String>,
    /// Owner: a user ...
    pub user: Option<String>,
    /// ... or an application (exactly one of the two).
    pub application: Option<String>,
    /// The team it acts within (defaults to the owner's only team).
    pub team: Option<String>,
    /// `dev`, `staging`, `prod` or any declared environment.
    pub environment: Option<String>,
    /// The key's role (defaults to its user's role; `member` for applications).
    pub role: Option<Role>,
    /// Models this key may use, as globs (narrows what its team and user allow).
    pub models: Vec<String>,
    pub limits: Option<LimitSpec>,
    pub budget: Option<BudgetLimits>,
    /// Attached to every request made with the key; rules match on it. Request metadata cannot
    /// override these fields.
    pub metadata: BTreeMap<String, String>,
    /// RFC 3339 instant after which the key is refused (`2027-01-01T00:00:00Z`).
    pub expires_at: Option<String>,
    /// A revoked key is refused with 401.
    pub revoked: bool,
    /// Shown in listings: the key's first characters (set at creation).
    pub display: Option<String>,
}

impl std::fmt::Debug for KeySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySpec")
            .field("name", &self.name)
            .field("hash", &self.hash)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("user", &self.user)
            .field("application", &self.application)
            .field("team", &self.team)
            .field("environment", &self.environment)
            .field("role", &self.role)
            .field("models", &self.models)
            .field("expires_at", &self.expires_at)
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

/// Who a rule applies to. Every listed dimension must match (a missing one matches all); values
/// are globs. `metadata` matches the request's merged metadata, field by field.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelectorSpec {
    pub keys: Vec<String>,
    pub users: Vec<String>,
    pub teams: Vec<String>,
    pub applications: Vec<String>,
    pub environments: Vec<String>,
    pub models: Vec<String>,
    pub metadata: BTreeMap<String, String>,
}

impl SelectorSpec {
    pub fn is_empty(&self) -> bool {
        self == &SelectorSpec::default()
    }
}

/// The windows of a rate-limit rule. Any may be absent; at least one must be set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSpec {
    pub requests_per_minute: Option<u64>,
    pub requests_per_hour: Option<u64>,
    pub requests_per_day: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub tokens_per_hour: Option<u64>,
    pub tokens_per_day: Option<u64>,
    /// Requests in flight at once.
    pub concurrent: Option<u64>,
}

impl LimitSpec {
    /// `self`'s fields where set, `base`'s elsewhere (what an override means).
    pub fn over(self, base: LimitSpec) -> LimitSpec {
        LimitSpec {
            requests_per_minute: self.requests_per_minute.or(base.requests_per_minute),
            requests_per_hour: self.requests_per_hour.or(base.requests_per_hour),
            requests_per_day: self.requests_per_day.or(base.requests_per_day),
            tokens_per_minute: self.tokens_per_minute.or(base.tokens_per_minute),
            tokens_per_hour: self.tokens_per_hour.or(base.tokens_per_hour),
            tokens_per_day: self.tokens_per_day.or(base.tokens_per_day),
            concurrent: self.concurrent.or(base.concurrent),
        }
    }

    pub fn is_empty(&self) -> bool {
        self == &LimitSpec::default()
    }
}

/// Budget amounts in USD. Any may be absent; at least one must be set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetLimits {
    pub usd_per_day: Option<f64>,
    pub usd_per_week: Option<f64>,
    pub usd_per_month: Option<f64>,
    pub usd_lifetime: Option<f64>,
}

impl BudgetLimits {
    pub fn over(self, base: BudgetLimits) -> BudgetLimits {
        BudgetLimits {
            usd_per_day: self.usd_per_day.or(base.usd_per_day),
            usd_per_week: self.usd_per_week.or(base.usd_per_week),
            usd_per_month: self.usd_per_month.or(base.usd_per_month),
            usd_lifetime: self.usd_lifetime.or(base.usd_lifetime),
        }
    }

    pub fn is_empty(&self) -> bool {
        self == &BudgetLimits::default()
    }
}

/// Which tokens a token limit counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenCount {
    Input,
    Output,
    #[default]
    Total,
}

/// Enforce (refuse beyond the limit) or audit (log and count, never refuse).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Enforce,
    Audit,
}

/// `rate_limits:` entries.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    pub id: String,
    /// Which requests it applies to (all when absent).
    #[serde(default)]
    pub when: SelectorSpec,
    /// One shared bucket (`global`, the default) or one per `key`, `user`, `team`,
    /// `application`, `environment`, `model` or `metadata.<field>`.
    #[serde(default)]
    pub per: String,
    pub limits: LimitSpec,
    /// Which tokens the token windows count.
    #[serde(default)]
    pub count: TokenCount,
    /// Subjects the rule never applies to.
    #[serde(default)]
    pub exempt: SelectorSpec,
    /// Other limits for named entities of `per` (fields not given keep the rule's).
    #[serde(default)]
    pub overrides: BTreeMap<String, LimitSpec>,
    #[serde(default)]
    pub mode: Mode,
}

/// `budgets:` entries.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    pub id: String,
    #[serde(default)]
    pub when: SelectorSpec,
    /// As for rate limits: `global` (default), `key`, `user`, `team`, `application`, `model`, ...
    #[serde(default)]
    pub per: String,
    pub limits: BudgetLimits,
    #[serde(default)]
    pub exempt: SelectorSpec,
    #[serde(default)]
    pub overrides: BTreeMap<String, BudgetLimits>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub alerts: AlertSpec,
}

/// Budget alerts: percentages of a limit at which to notify, once per threshold per period.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertSpec {
    /// Percentages, e.g. `[75, 90, 100]`.
    pub at: Vec<u8>,
    /// Where to POST them (JSON); logged only when absent.
    pub webhook: Option<String>,
}

/// Everything governance-related in one place (what a config file, a per-team file or the
/// store contributes).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GovernanceSpec {
    /// Declared environments (default `dev`, `staging`, `prod`).
    pub environments: Vec<String>,
    pub teams: BTreeMap<String, TeamSpec>,
    pub users: BTreeMap<String, UserSpec>,
    pub applications: BTreeMap<String, ApplicationSpec>,
    pub keys: Vec<KeySpec>,
    pub rate_limits: Vec<RateLimitSpec>,
    pub budgets: Vec<BudgetSpec>,
}

impl GovernanceSpec {
    /// Whether any credential is declared (then every request must authenticate).
    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty()
    }
}
