//! Rate-limit rules and budgets, compiled. Both are [`Rule`]s: a selector (who and what it
//! applies to), an optional exemption, a dimension that splits it into one bucket per entity, and
//! limits — windows of requests or tokens, requests in flight, or spend per calendar period.

use std::collections::HashMap;
use std::sync::Arc;

use foldhash::fast::RandomState;

use crate::PolicyError;
use crate::clock::Period;
use crate::counters::Measure;
use crate::glob::{Glob, GlobSet};
use crate::identity::Identity;
use crate::spec::{BudgetLimits, BudgetSpec, LimitSpec, Mode, RateLimitSpec, SelectorSpec, TokenCount};

/// Micro-dollars per US dollar.
pub const MICROS_PER_USD: f64 = 1_000_000.0;

/// Rate limit or budget (they refuse differently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    RateLimit,
    Budget,
}

/// What one bucket of a rule is per.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Per {
    /// One bucket shared by every matching request.
    Global,
    Key,
    User,
    Team,
    Application,
    Environment,
    Model,
    /// The value of a metadata field (requests without it are not limited by the rule).
    Metadata(Box<str>),
}

impl Per {
    pub fn parse(text: &str) -> Result<Per, String> {
        Ok(match text {
            "" | "global" => Per::Global,
            "key" => Per::Key,
            "user" => Per::User,
            "team" => Per::Team,
            "application" => Per::Application,
            "environment" => Per::Environment,
            "model" => Per::Model,
            _ => match text.strip_prefix("metadata.") {
                Some(field) if !field.is_empty() => Per::Metadata(field.into()),
                _ => {
                    return Err(format!(
                        "`{text}` is not a dimension: use global, key, user, team, application, environment, model or metadata.<field>"
                    ));
                }
            },
        })
    }

    /// Prefix of the scope a refusal names (`user:alice`).
    pub fn label(&self) -> &str {
        match self {
            Per::Global => "global",
            Per::Key => "key",
            Per::User => "user",
            Per::Team => "team",
            Per::Application => "application",
            Per::Environment => "environment",
            Per::Model => "model",
            Per::Metadata(f) => f,
        }
    }
}

/// How long a limit's count lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// A sliding window of this many milliseconds.
    Window(u64),
    /// A calendar period (budgets).
    Period(Period),
    /// While the request is in flight.
    InFlight,
}

/// One limit of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub measure: Measure,
    pub span: Span,
    pub max: u64,
}

impl Limit {
    /// How people say it: `tokens per minute`, `USD per month`.
    pub fn describe(&self) -> String {
        let what = match self.measure {
            Measure::Requests => "requests",
            Measure::InputTokens => "input tokens",
            Measure::OutputTokens => "output tokens",
            Measure::TotalTokens => "tokens",
            Measure::Concurrent => return "concurrent requests".into(),
            Measure::SpendMicros => "USD",
        };
        let per = match self.span {
            Span::Window(60_000) => "per minute".to_string(),
            Span::Window(3_600_000) => "per hour".to_string(),
            Span::Window(86_400_000) => "per day".to_string(),
            Span::Window(ms) => format!("per {ms} ms"),
            Span::Period(Period::Lifetime) => "lifetime".to_string(),
            Span::Period(p) => format!("per {}", p.as_str()),
            Span::InFlight => "in flight".to_string(),
        };
        format!("{what} {per}")
    }

    /// Whether this limit counts requests (rather than tokens or money), for the header class.
    pub fn is_requests(&self) -> bool {
        matches!(self.measure, Measure::Requests | Measure::Concurrent)
    }
}

/// Who and what a rule applies to. `None` dimensions match everything.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    keys: Option<GlobSet>,
    users: Option<GlobSet>,
    teams: Option<GlobSet>,
    applications: Option<GlobSet>,
    environments: Option<GlobSet>,
    models: Option<GlobSet>,
    metadata: Vec<(Box<str>, Glob)>,
}

fn set(patterns: &[String]) -> Option<GlobSet> {
    (!patterns.is_empty()).then(|| GlobSet::new(patterns))
}

fn dim(set: &Option<GlobSet>, value: Option<&str>) -> bool {
    match set {
        None => true,
        Some(s) => value.is_some_and(|v| s.matches(v)),
    }
}

impl Selector {
    pub fn compile(spec: &SelectorSpec) -> Selector {
        Selector {
            keys: set(&spec.keys),
            users: set(&spec.users),
            teams: set(&spec.teams),
            applications: set(&spec.applications),
            environments: set(&spec.environments),
            models: set(&spec.models),
            metadata: spec.metadata.iter().map(|(k, v)| (k.as_str().into(), Glob::new(v))).collect(),
        }
    }

    /// Matches nothing-in-particular (everything).
    pub fn is_empty(&self) -> bool {
        self.keys.is_none()
            && self.users.is_none()
            && self.teams.is_none()
            && self.applications.is_none()
            && self.environments.is_none()
            && self.models.is_none()
            && self.metadata.is_empty()
    }

    /// The part that depends only on who is calling (precomputed per key).
    pub fn matches_subject(&self, id: &Identity) -> bool {
        dim(&self.keys, id.key.as_deref())
            && dim(&self.users, id.user.as_deref())
            && dim(&self.teams, id.team.as_deref())
            && dim(&self.applications, id.application.as_deref())
            && dim(&self.environments, id.environment.as_deref())
    }

    /// The part that depends on the request.
    pub fn matches_request(&self, model: &str, metadata: &Metadata) -> bool {
        dim(&self.models, Some(model))
            && self.metadata.iter().all(|(k, g)| metadata.get(k).is_some_and(|v| g.matches(v)))
    }

    pub fn matches(&self, id: &Identity, model: &str, metadata: &Metadata) -> bool {
        self.matches_subject(id) && self.matches_request(model, metadata)
    }
}

/// Request metadata: the `x-shardgate-metadata` header's fields overlaid with the key's own
/// (the key's win). Few fields, so a vector.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Metadata(Vec<(Box<str>, Box<str>)>);

impl Metadata {
    pub fn new() -> Metadata {
        Metadata(Vec::new())
    }

    /// Sets a field (replacing an earlier value).
    pub fn set(&mut self, key: &str, value: &str) {
        match self.0.iter_mut().find(|(k, _)| &**k == key) {
            Some(slot) => slot.1 = value.into(),
            None => self.0.push((key.into(), value.into())),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| &**k == key).map(|(_, v)| &**v)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }
}

/// A compiled rate limit or budget.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: Arc<str>,
    pub kind: RuleKind,
    pub when: Selector,
    pub exempt: Option<Selector>,
    pub per: Per,
    pub limits: Box<[Limit]>,
    pub overrides: HashMap<Box<str>, Box<[Limit]>, RandomState>,
    pub mode: Mode,
    /// Budget alerts (budgets with thresholds only).
    pub alerts: Option<Arc<Alerts>>,
}

/// Where and when a budget alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alerts {
    /// Percentages of the limit, ascending.
    pub at: Box<[u8]>,
    /// Where to POST (logged only when absent).
    pub webhook: Option<Arc<str>>,
}

impl Rule {
    /// The limits for one entity (its override, else the rule's).
    pub fn limits_for(&self, entity: &str) -> &[Limit] {
        if self.overrides.is_empty() {
            return &self.limits;
        }
        self.overrides.get(entity).map_or(&self.limits, |l| l)
    }
}

fn window_limits(spec: &LimitSpec, count: TokenCount) -> Vec<Limit> {
    let tokens = match count {
        TokenCount::Input => Measure::InputTokens,
        TokenCount::Output => Measure::OutputTokens,
        TokenCount::Total => Measure::TotalTokens,
    };
    const MIN: u64 = 60_000;
    const HOUR: u64 = 3_600_000;
    const DAY: u64 = 86_400_000;
    let all = [
        (Measure::Requests, Span::Window(MIN), spec.requests_per_minute),
        (Measure::Requests, Span::Window(HOUR), spec.requests_per_hour),
        (Measure::Requests, Span::Window(DAY), spec.requests_per_day),
        (tokens, Span::Window(MIN), spec.tokens_per_minute),
        (tokens, Span::Window(HOUR), spec.tokens_per_hour),
        (tokens, Span::Window(DAY), spec.tokens_per_day),
        (Measure::Concurrent, Span::InFlight, spec.concurrent),
    ];
    all.into_iter().filter_map(|(measure, span, max)| max.map(|max| Limit { measure, span, max })).collect()
}

fn usd(field: &str, v: f64) -> Result<u64, String> {
    if !v.is_finite() || v < 0.0 {
        return Err(format!("{field} must be a number of US dollars >= 0, got {v}"));
    }
    Ok((v * MICROS_PER_USD).round() as u64)
}

fn budget_limits(spec: &BudgetLimits) -> Result<Vec<Limit>, String> {
    let all = [
        (Period::Day, "usd_per_day", spec.usd_per_day),
        (Period::Week, "usd_per_week", spec.usd_per_week),
        (Period::Month, "usd_per_month", spec.usd_per_month),
        (Period::Lifetime, "usd_lifetime", spec.usd_lifetime),
    ];
    let mut out = Vec::new();
    for (period, field, v) in all {
        if let Some(v) = v {
            out.push(Limit { measure: Measure::SpendMicros, span: Span::Period(period), max: usd(field, v)? });
        }
    }
    Ok(out)
}

fn check_id(id: &str, at: &str) -> Result<(), PolicyError> {
    if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(PolicyError::new(format!("{at}.id"), "an id is 1 to 128 characters without spaces"));
    }
    Ok(())
}

/// Compiles a `rate_limits` entry.
pub fn compile_rate_limit(spec: &RateLimitSpec, at: &str) -> Result<Rule, PolicyError> {
    check_id(&spec.id, at)?;
    let per = Per::parse(&spec.per).map_err(|e| PolicyError::new(format!("{at}.per"), e))?;
    if spec.limits.is_empty() {
        return Err(PolicyError::new(
            format!("{at}.limits"),
            "set at least one limit (requests_per_minute, tokens_per_minute, concurrent, ...)",
        ));
    }
    if per == Per::Global && !spec.overrides.is_empty() {
        return Err(PolicyError::new(
            format!("{at}.overrides"),
            "overrides name entities of `per`; a global rule has none",
        ));
    }
    let mut overrides = HashMap::default();
    for (entity, o) in &spec.overrides {
        overrides.insert(entity.as_str().into(), window_limits(&o.over(spec.limits), spec.count).into_boxed_slice());
    }
    Ok(Rule {
        id: spec.id.as_str().into(),
        kind: RuleKind::RateLimit,
        when: Selector::compile(&spec.when),
        exempt: (!spec.exempt.is_empty()).then(|| Selector::compile(&spec.exempt)),
        per,
        limits: window_limits(&spec.limits, spec.count).into_boxed_slice(),
        overrides,
        mode: spec.mode,
        alerts: None,
    })
}

/// Compiles a `budgets` entry.
pub fn compile_budget(spec: &BudgetSpec, at: &str) -> Result<Rule, PolicyError> {
    check_id(&spec.id, at)?;
    let per = Per::parse(&spec.per).map_err(|e| PolicyError::new(format!("{at}.per"), e))?;
    if spec.limits.is_empty() {
        return Err(PolicyError::new(
            format!("{at}.limits"),
            "set at least one of usd_per_day, usd_per_week, usd_per_month, usd_lifetime",
        ));
    }
    if per == Per::Global && !spec.overrides.is_empty() {
        return Err(PolicyError::new(
            format!("{at}.overrides"),
            "overrides name entities of `per`; a global budget has none",
        ));
    }
    let limits = budget_limits(&spec.limits).map_err(|e| PolicyError::new(format!("{at}.limits"), e))?;
    let mut overrides = HashMap::default();
    for (entity, o) in &spec.overrides {
        let l =
            budget_limits(&o.over(spec.limits)).map_err(|e| PolicyError::new(format!("{at}.overrides.{entity}"), e))?;
        overrides.insert(entity.as_str().into(), l.into_boxed_slice());
    }
    let mut alert_at = spec.alerts.at.clone();
    if let Some(bad) = alert_at.iter().find(|&&p| p == 0 || p > 100) {
        return Err(PolicyError::new(
            format!("{at}.alerts.at"),
            format!("thresholds are percentages from 1 to 100, got {bad}"),
        ));
    }
    alert_at.sort_unstable();
    alert_at.dedup();
    if let Some(url) = &spec.alerts.webhook
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(PolicyError::new(format!("{at}.alerts.webhook"), "a webhook is an http:// or https:// URL"));
    }
    Ok(Rule {
        id: spec.id.as_str().into(),
        kind: RuleKind::Budget,
        when: Selector::compile(&spec.when),
        exempt: (!spec.exempt.is_empty()).then(|| Selector::compile(&spec.exempt)),
        per,
        limits: limits.into_boxed_slice(),
        overrides,
        mode: spec.mode,
        alerts: (!alert_at.is_empty()).then(|| {
            Arc::new(Alerts { at: alert_at.into_boxed_slice(), webhook: spec.alerts.webhook.as_deref().map(Arc::from) })
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimensions_parse() {
        assert_eq!(Per::parse("").unwrap(), Per::Global);
        assert_eq!(Per::parse("user").unwrap(), Per::User);
        assert_eq!(Per::parse("metadata.tenant").unwrap(), Per::Metadata("tenant".into()));
        assert!(Per::parse("metadata.").unwrap_err().contains("not a dimension"));
        assert!(Per::parse("org").is_err());
    }

    #[test]
    fn rate_limit_windows_and_overrides() {
        let spec = RateLimitSpec {
            id: "r".into(),
            per: "user".into(),
            limits: LimitSpec { tokens_per_minute: Some(100), requests_per_day: Some(5), ..LimitSpec::default() },
            count: TokenCount::Output,
            overrides: [("alice".to_string(), LimitSpec { tokens_per_minute: Some(1000), ..LimitSpec::default() })]
                .into(),
            ..RateLimitSpec::default()
        };
        let r = compile_rate_limit(&spec, "rate_limits[0]").unwrap();
        assert_eq!(r.limits.len(), 2);
        assert!(r.limits.contains(&Limit { measure: Measure::OutputTokens, span: Span::Window(60_000), max: 100 }));
        let alice = r.limits_for("alice");
        assert!(alice.contains(&Limit { measure: Measure::OutputTokens, span: Span::Window(60_000), max: 1000 }));
        assert!(alice.contains(&Limit { measure: Measure::Requests, span: Span::Window(86_400_000), max: 5 }));
        assert_eq!(r.limits_for("bob"), &*r.limits);
    }

    #[test]
    fn bad_rules_name_the_field() {
        let empty = RateLimitSpec { id: "r".into(), ..RateLimitSpec::default() };
        assert_eq!(compile_rate_limit(&empty, "rate_limits[2]").unwrap_err().field, "rate_limits[2].limits");
        let global_override = RateLimitSpec {
            id: "r".into(),
            limits: LimitSpec { concurrent: Some(1), ..LimitSpec::default() },
            overrides: [("x".to_string(), LimitSpec::default())].into(),
            ..RateLimitSpec::default()
        };
        assert_eq!(compile_rate_limit(&global_override, "r").unwrap_err().field, "r.overrides");
        let neg = BudgetSpec {
            id: "b".into(),
            limits: BudgetLimits { usd_per_day: Some(-1.0), ..BudgetLimits::default() },
            ..BudgetSpec::default()
        };
        assert_eq!(compile_budget(&neg, "budgets[0]").unwrap_err().field, "budgets[0].limits");
        let bad_alert = BudgetSpec {
            id: "b".into(),
            limits: BudgetLimits { usd_lifetime: Some(1.0), ..BudgetLimits::default() },
            alerts: crate::spec::AlertSpec { at: vec![50, 150], webhook: None },
            ..BudgetSpec::default()
        };
        assert_eq!(compile_budget(&bad_alert, "b").unwrap_err().field, "b.alerts.at");
    }

    #[test]
    fn budgets_are_micro_dollars() {
        let spec = BudgetSpec {
            id: "b".into(),
            limits: BudgetLimits { usd_per_month: Some(500.0), usd_per_day: Some(0.25), ..BudgetLimits::default() },
            alerts: crate::spec::AlertSpec {
                at: vec![100, 75, 90, 75],
                webhook: Some("https://hooks.example/x".into()),
            },
            ..BudgetSpec::default()
        };
        let b = compile_budget(&spec, "b").unwrap();
        assert!(b.limits.contains(&Limit {
            measure: Measure::SpendMicros,
            span: Span::Period(Period::Month),
            max: 500_000_000
        }));
        assert!(b.limits.contains(&Limit {
            measure: Measure::SpendMicros,
            span: Span::Period(Period::Day),
            max: 250_000
        }));
        assert_eq!(&*b.alerts.unwrap().at, &[75, 90, 100]);
    }

    #[test]
    fn metadata_overlay() {
        let mut m = Metadata::new();
        m.set("tier", "free");
        m.set("tier", "pro");
        m.set("tenant", "acme");
        assert_eq!(m.get("tier"), Some("pro"));
        assert_eq!(m.iter().count(), 2);
        let sel = Selector::compile(&SelectorSpec {
            metadata: [("tier".to_string(), "p*".to_string())].into(),
            ..SelectorSpec::default()
        });
        assert!(sel.matches_request("m", &m));
        assert!(!sel.matches_request("m", &Metadata::new()));
    }

    #[test]
    fn descriptions() {
        assert_eq!(
            Limit { measure: Measure::TotalTokens, span: Span::Window(60_000), max: 1 }.describe(),
            "tokens per minute"
        );
        assert_eq!(
            Limit { measure: Measure::SpendMicros, span: Span::Period(Period::Month), max: 1 }.describe(),
            "USD per month"
        );
        assert_eq!(
            Limit { measure: Measure::Concurrent, span: Span::InFlight, max: 1 }.describe(),
            "concurrent requests"
        );
    }
}
