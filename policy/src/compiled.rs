//! The whole governance policy, compiled once per config (or admin change) and shared read-only
//! by every shard: the directory of callers, the rules, the prices and the settings. Deciding
//! *with* it — counting, reserving, settling — is the shard's [`crate::Governor`].

use std::sync::Arc;

use crate::PolicyError;
use crate::identity::{Directory, Identity, KeyLookup};
use crate::keys::{KeyDigest, KeyHasher};
use crate::pricing::PriceTable;
use crate::rules::{Rule, compile_budget, compile_rate_limit};
use crate::spec::{BudgetSpec, GovernanceSpec, Mode, RateLimitSpec, Role, SelectorSpec};

/// Knobs of admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Output tokens reserved for a request that sets no `max_tokens`.
    pub default_max_tokens: u64,
    /// Request body bytes per estimated prompt token.
    pub bytes_per_token: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { default_max_tokens: 1024, bytes_per_token: 4 }
    }
}

/// Why a caller was not let in (401).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No credential where one is required.
    Missing,
    /// A key the gateway does not know.
    UnknownKey,
    Revoked(Arc<str>),
    Expired(Arc<str>),
    /// A bearer token that did not verify.
    Token(crate::jwt::JwtError),
    /// The `x-shardgate-team` header names a team the caller is not in.
    NotInTeam(Arc<str>),
}

impl AuthError {
    /// OpenAI-style message (never echoing the presented secret).
    pub fn message(&self) -> String {
        match self {
            AuthError::Missing => {
                "You didn't provide an API key. Send it in the Authorization header (Authorization: Bearer sk-sg-...)."
                    .into()
            }
            AuthError::UnknownKey => {
                "Incorrect API key provided. Check the key, or create one with the admin API.".into()
            }
            AuthError::Revoked(name) => format!("The API key `{name}` has been revoked."),
            AuthError::Expired(name) => format!("The API key `{name}` has expired."),
            AuthError::Token(e) => format!("The bearer token was refused: {e}."),
            AuthError::NotInTeam(t) => format!("You are not a member of team `{t}` (x-shardgate-team)."),
        }
    }

    /// OpenAI's `code`.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_api_key",
            AuthError::UnknownKey => "invalid_api_key",
            AuthError::Revoked(_) => "revoked_api_key",
            AuthError::Expired(_) => "expired_api_key",
            AuthError::Token(e) => e.code(),
            AuthError::NotInTeam(_) => "team_not_allowed",
        }
    }
}

/// Why a caller may not use a model (403). `rule` names what refused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub rule: Arc<str>,
    pub message: String,
}

/// The compiled policy.
/// Who made a request, as the spend ledger keeps it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordedCaller<'a> {
    pub key: Option<&'a str>,
    pub user: Option<&'a str>,
    pub team: Option<&'a str>,
    pub application: Option<&'a str>,
    pub environment: Option<&'a str>,
}

#[derive(Debug)]
pub struct Policy {
    pub directory: Directory,
    pub rules: Box<[Rule]>,
    pub pricing: PriceTable,
    pub settings: Settings,
    hasher: KeyHasher,
    anonymous: Arc<Identity>,
}

fn inline_rules(spec: &GovernanceSpec) -> (Vec<RateLimitSpec>, Vec<BudgetSpec>) {
    let mut limits = Vec::new();
    let mut budgets = Vec::new();
    let mut add = |scope: &str,
                   name: &str,
                   when: SelectorSpec,
                   l: Option<crate::spec::LimitSpec>,
                   b: Option<crate::spec::BudgetLimits>| {
        if let Some(l) = l {
            limits.push(RateLimitSpec {
                id: format!("{scope}:{name}"),
                when: when.clone(),
                per: scope.into(),
                limits: l,
                ..RateLimitSpec::default()
            });
        }
        if let Some(b) = b {
            budgets.push(BudgetSpec {
                id: format!("{scope}:{name}:budget"),
                when,
                per: scope.into(),
                limits: b,
                mode: Mode::Enforce,
                ..BudgetSpec::default()
            });
        }
    };
    for (n, t) in &spec.teams {
        add("team", n, SelectorSpec { teams: vec![n.clone()], ..SelectorSpec::default() }, t.limits, t.budget);
    }
    for (n, u) in &spec.users {
        add("user", n, SelectorSpec { users: vec![n.clone()], ..SelectorSpec::default() }, u.limits, u.budget);
    }
    for (n, a) in &spec.applications {
        add(
            "application",
            n,
            SelectorSpec { applications: vec![n.clone()], ..SelectorSpec::default() },
            a.limits,
            a.budget,
        );
    }
    for k in &spec.keys {
        add("key", &k.name, SelectorSpec { keys: vec![k.name.clone()], ..SelectorSpec::default() }, k.limits, k.budget);
    }
    (limits, budgets)
}

impl Policy {
    /// Compiles `spec`. Errors name the field at fault; nothing is half-applied (the caller keeps
    /// the policy it had).
    pub fn compile(
        spec: &GovernanceSpec,
        hasher: KeyHasher,
        pricing: PriceTable,
        settings: Settings,
    ) -> Result<Policy, PolicyError> {
        let mut rules = Vec::new();
        for (i, r) in spec.rate_limits.iter().enumerate() {
            rules.push(compile_rate_limit(r, &format!("rate_limits[{i}]"))?);
        }
        for (i, b) in spec.budgets.iter().enumerate() {
            rules.push(compile_budget(b, &format!("budgets[{i}]"))?);
        }
        for r in &rules {
            if r.id.contains(':') {
                return Err(PolicyError::new(
                    format!("rule {}", r.id),
                    "ids with `:` are reserved for limits declared on teams, users, applications and keys",
                ));
            }
        }
        let (inline_limits, inline_budgets) = inline_rules(spec);
        for r in &inline_limits {
            rules.push(compile_rate_limit(r, &format!("{}.limits", r.id.replacen(':', "s.", 1)))?);
        }
        for b in &inline_budgets {
            let at = b.id.trim_end_matches(":budget").replacen(':', "s.", 1);
            rules.push(compile_budget(b, &format!("{at}.budget"))?);
        }
        let mut seen = std::collections::HashSet::new();
        for r in &rules {
            if !seen.insert(r.id.clone()) {
                return Err(PolicyError::new(format!("rule {}", r.id), "two rules have this id"));
            }
        }
        if rules.len() > u32::MAX as usize {
            return Err(PolicyError::new("rate_limits", "too many rules"));
        }
        let directory = Directory::compile(spec, &hasher, &rules)?;
        let anonymous = Arc::new(Identity::anonymous().with_candidates(&rules));
        Ok(Policy { directory, rules: rules.into_boxed_slice(), pricing, settings, hasher, anonymous })
    }

    /// An empty policy (no callers, no rules): what a gateway without governance runs.
    pub fn open(pricing: PriceTable) -> Policy {
        Policy {
            directory: Directory::default(),
            rules: Box::new([]),
            pricing,
            settings: Settings::default(),
            hasher: KeyHasher::new(b""),
            anonymous: Arc::new(Identity::anonymous()),
        }
    }

    /// A caller as the spend ledger recorded it, with the rules that can apply to it now (to
    /// count recorded spend into today's budgets after a restart).
    pub fn recorded_caller(&self, who: RecordedCaller<'_>) -> Identity {
        let name = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(Arc::<str>::from);
        let credential =
            if who.key.is_some() { crate::identity::Credential::Key } else { crate::identity::Credential::Jwt };
        Identity {
            credential,
            key: name(who.key),
            user: name(who.user),
            team: name(who.team),
            application: name(who.application),
            environment: name(who.environment),
            ..Identity::anonymous()
        }
        .with_candidates(&self.rules)
    }

    /// Whether any key exists (then every request must authenticate).
    pub fn requires_auth(&self) -> bool {
        self.directory.key_count() > 0
    }

    /// The caller a verified token describes: its user (with the user's model list when the
    /// user is declared), its team — `team_hint` (the `x-shardgate-team` header) when the token
    /// or the declared user belongs to it, else the first declared team the token names, else
    /// the declared user's only team — its role and environment, and the rules that apply.
    pub fn identity_for_claims(
        &self,
        claims: &crate::jwt::JwtClaims,
        team_hint: Option<&str>,
    ) -> Result<Identity, AuthError> {
        let dir = &self.directory;
        let user = dir.user(&claims.user);
        let member_of = |t: &str| {
            dir.team(t).is_some()
                && (claims.teams.iter().any(|c| c == t) || user.is_some_and(|u| u.teams.iter().any(|x| &**x == t)))
        };
        let team: Option<Arc<str>> = match team_hint {
            Some(t) if member_of(t) => Some(Arc::from(t)),
            Some(t) => return Err(AuthError::NotInTeam(Arc::from(t))),
            None => claims
                .teams
                .iter()
                .find(|t| dir.team(t).is_some())
                .map(|t| Arc::from(t.as_str()))
                .or_else(|| user.and_then(|u| if u.teams.len() == 1 { u.teams.first().cloned() } else { None })),
        };
        let mut access = Vec::new();
        if let Some(u) = user
            && !u.models.is_empty()
        {
            access.push(crate::identity::ModelAccess {
                rule: format!("user:{}.models", claims.user).into(),
                allowed: u.models.clone(),
            });
        }
        if let Some(t) = &team
            && let Some(ts) = dir.team(t)
            && !ts.models.is_empty()
        {
            access.push(crate::identity::ModelAccess {
                rule: format!("team:{t}.models").into(),
                allowed: ts.models.clone(),
            });
        }
        let environment = claims.environment.as_deref().filter(|e| dir.has_environment(e)).map(Arc::from);
        Ok(Identity {
            credential: crate::identity::Credential::Jwt,
            key: None,
            user: Some(Arc::from(claims.user.as_str())),
            team,
            application: None,
            environment,
            role: claims.role,
            access: access.into_boxed_slice(),
            metadata: crate::rules::Metadata::new(),
            expires_at_ms: Some(claims.expires_at.saturating_mul(1000)),
            revoked: false,
            candidates: Box::new([]),
        }
        .with_candidates(&self.rules))
    }

    pub fn hasher(&self) -> &KeyHasher {
        &self.hasher
    }

    /// The anonymous caller (with the rules that apply to it).
    pub fn anonymous(&self) -> &Arc<Identity> {
        &self.anonymous
    }

    /// Who presents `bearer` (the Authorization header's token, if any). `anonymous_ok` says
    /// whether this gateway serves callers without credentials (only when no key exists).
    pub fn authenticate(&self, bearer: Option<&str>, anonymous_ok: bool, now_ms: u64) -> Result<&Identity, AuthError> {
        let digest = bearer.map(|t| self.hasher.digest(t));
        self.authenticate_digest(digest.as_ref(), anonymous_ok, now_ms)
    }

    /// [`Policy::authenticate`] for a key already hashed (callers may cache digests: the HMAC
    /// is most of the cost of a lookup).
    pub fn authenticate_digest(
        &self,
        digest: Option<&KeyDigest>,
        anonymous_ok: bool,
        now_ms: u64,
    ) -> Result<&Identity, AuthError> {
        match digest {
            None if anonymous_ok && !self.requires_auth() => Ok(&self.anonymous),
            None => Err(AuthError::Missing),
            Some(digest) => match self.directory.lookup(digest, now_ms) {
                KeyLookup::Valid(id) => Ok(id),
                // An open gateway ignores keys it does not know (SDKs always send one).
                KeyLookup::Unknown if anonymous_ok && !self.requires_auth() => Ok(&self.anonymous),
                KeyLookup::Unknown => Err(AuthError::UnknownKey),
                KeyLookup::Revoked(n) => Err(AuthError::Revoked(n)),
                KeyLookup::Expired(n) => Err(AuthError::Expired(n)),
            },
        }
    }

    /// May `id` call `model`? Viewers call nothing; every allow-list on the caller's path must
    /// allow the model.
    pub fn check_model(&self, id: &Identity, model: &str) -> Result<(), Denied> {
        if id.role == Role::Viewer {
            return Err(Denied {
                rule: "role:viewer".into(),
                message: format!("{} has the viewer role, which may not call models.", id.describe()),
            });
        }
        self.model_visible(id, model)
    }

    /// Whether `model` is in every allow-list of `id` (what `/v1/models` filters by).
    pub fn model_visible(&self, id: &Identity, model: &str) -> Result<(), Denied> {
        for a in id.access.iter() {
            if !a.allowed.matches(model) {
                let allowed: Vec<&str> = a.allowed.patterns().collect();
                return Err(Denied {
                    rule: a.rule.clone(),
                    message: format!(
                        "{} may not use the model `{model}`: rule `{}` allows only {}.",
                        id.describe(),
                        a.rule,
                        allowed.join(", ")
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{KeySpec, LimitSpec, TeamSpec, UserSpec};

    fn policy() -> Policy {
        let spec = GovernanceSpec {
            teams: [(
                "search".to_string(),
                TeamSpec {
                    models: vec!["gpt-4o*".into()],
                    limits: Some(LimitSpec { requests_per_minute: Some(5), ..LimitSpec::default() }),
                    ..TeamSpec::default()
                },
            )]
            .into(),
            users: [
                ("alice".to_string(), UserSpec { teams: vec!["search".into()], ..UserSpec::default() }),
                (
                    "vic".to_string(),
                    UserSpec { teams: vec!["search".into()], role: Role::Viewer, ..UserSpec::default() },
                ),
            ]
            .into(),
            keys: vec![
                KeySpec {
                    name: "a".into(),
                    secret: Some("sk-sg-aaaaaaaaaaaaaaaa".into()),
                    user: Some("alice".into()),
                    models: vec!["gpt-4o-mini".into()],
                    ..KeySpec::default()
                },
                KeySpec {
                    name: "v".into(),
                    secret: Some("sk-sg-vvvvvvvvvvvvvvvv".into()),
                    user: Some("vic".into()),
                    ..KeySpec::default()
                },
            ],
            ..GovernanceSpec::default()
        };
        Policy::compile(&spec, KeyHasher::new(b"pepper"), PriceTable::shipped(), Settings::default()).unwrap()
    }

    #[test]
    fn authentication_outcomes() {
        let p = policy();
        assert!(p.requires_auth());
        assert_eq!(p.authenticate(None, true, 0).unwrap_err(), AuthError::Missing);
        assert_eq!(p.authenticate(Some("sk-sg-nope"), true, 0).unwrap_err(), AuthError::UnknownKey);
        let a = p.authenticate(Some("sk-sg-aaaaaaaaaaaaaaaa"), false, 0).unwrap();
        assert_eq!(a.key.as_deref(), Some("a"));
        assert_eq!(a.candidates.len(), 1, "the team's inline limit applies");
        let open = Policy::open(PriceTable::shipped());
        assert!(!open.requires_auth());
        assert!(open.authenticate(None, true, 0).is_ok());
        assert!(open.authenticate(Some("sk-anything"), true, 0).is_ok());
        assert_eq!(open.authenticate(None, false, 0).unwrap_err(), AuthError::Missing);
    }

    #[test]
    fn model_access_names_the_rule() {
        let p = policy();
        let a = p.authenticate(Some("sk-sg-aaaaaaaaaaaaaaaa"), false, 0).unwrap();
        assert!(p.check_model(a, "gpt-4o-mini").is_ok());
        let d = p.check_model(a, "gpt-4o").unwrap_err();
        assert_eq!(&*d.rule, "key:a.models");
        assert!(d.message.contains("gpt-4o-mini"), "{}", d.message);
        assert_eq!(&*p.check_model(a, "claude-3").unwrap_err().rule, "team:search.models");
        let v = p.authenticate(Some("sk-sg-vvvvvvvvvvvvvvvv"), false, 0).unwrap();
        assert_eq!(&*p.check_model(v, "gpt-4o").unwrap_err().rule, "role:viewer");
        assert!(p.model_visible(v, "gpt-4o").is_ok(), "viewers still see the models");
    }

    #[test]
    fn explicit_ids_may_not_take_reserved_forms() {
        let spec = GovernanceSpec {
            rate_limits: vec![RateLimitSpec {
                id: "team:x".into(),
                limits: LimitSpec { concurrent: Some(1), ..LimitSpec::default() },
                ..RateLimitSpec::default()
            }],
            ..GovernanceSpec::default()
        };
        let e = Policy::compile(&spec, KeyHasher::new(b""), PriceTable::shipped(), Settings::default()).unwrap_err();
        assert!(e.message.contains("reserved"), "{e}");
        let dup = GovernanceSpec {
            rate_limits: vec![
                RateLimitSpec {
                    id: "x".into(),
                    limits: LimitSpec { concurrent: Some(1), ..LimitSpec::default() },
                    ..RateLimitSpec::default()
                },
                RateLimitSpec {
                    id: "x".into(),
                    limits: LimitSpec { concurrent: Some(2), ..LimitSpec::default() },
                    ..RateLimitSpec::default()
                },
            ],
            ..GovernanceSpec::default()
        };
        assert!(
            Policy::compile(&dup, KeyHasher::new(b""), PriceTable::shipped(), Settings::default())
                .unwrap_err()
                .message
                .contains("two rules")
        );
    }
    fn claims(user: &str, teams: &[&str], role: Role) -> crate::jwt::JwtClaims {
        crate::jwt::JwtClaims {
            issuer: Arc::from("https://idp"),
            subject: user.into(),
            user: user.into(),
            teams: teams.iter().map(|t| t.to_string()).collect(),
            role,
            environment: Some("prod".into()),
            expires_at: 2_000_000_000,
        }
    }

    #[test]
    fn token_callers_get_team_models_and_rules() {
        let p = policy();
        // A declared user: the team comes from the directory when the token names none.
        let id = p.identity_for_claims(&claims("alice", &[], Role::Member), None).unwrap();
        assert_eq!((id.team.as_deref(), id.credential), (Some("search"), crate::identity::Credential::Jwt));
        assert!(p.check_model(&id, "gpt-4o").is_ok());
        assert!(p.check_model(&id, "claude-3").is_err(), "the team's model list applies");
        assert!(!id.candidates.is_empty(), "the team's rate limit applies");
        assert_eq!(id.environment.as_deref(), Some("prod"));
        assert_eq!(id.expires_at_ms, Some(2_000_000_000_000));
        // An undeclared user from a token naming groups: the first declared one is the team.
        let id = p.identity_for_claims(&claims("zed", &["eng", "search"], Role::TeamAdmin), None).unwrap();
        assert_eq!((id.team.as_deref(), id.role), (Some("search"), Role::TeamAdmin));
        // The header may pick a team only among the caller's own.
        assert_eq!(
            p.identity_for_claims(&claims("zed", &["eng"], Role::Member), Some("search")).unwrap_err(),
            AuthError::NotInTeam(Arc::from("search"))
        );
        let id = p.identity_for_claims(&claims("zed", &["eng"], Role::Member), None).unwrap();
        assert_eq!(id.team, None, "no declared team: none");
    }
}
