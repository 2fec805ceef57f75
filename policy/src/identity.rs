//! Who is calling: teams, users, applications, environments and virtual keys, compiled into a
//! directory that finds a key's [`Identity`] from its digest. Everything per key that does not
//! depend on the request — which models it may use, which rules can apply to it — is worked out
//! here, once, so that admission only checks what the request adds (model, metadata).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use foldhash::fast::RandomState;

use crate::PolicyError;
use crate::clock::parse_instant;
use crate::glob::GlobSet;
use crate::keys::{KeyDigest, KeyHasher};
use crate::rules::{Metadata, Rule};
use crate::spec::{GovernanceSpec, KeySpec, Role};

/// How a caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A virtual key.
    Key,
    /// A bearer JWT from a configured issuer.
    Jwt,
    /// Nothing (only where the gateway serves anonymously).
    Anonymous,
}

/// One model allow-list on a caller's path (key, user, application, team): all must allow.
#[derive(Debug, Clone)]
pub struct ModelAccess {
    /// Names the list in a refusal, e.g. `team:search.models`.
    pub rule: Arc<str>,
    pub allowed: GlobSet,
}

/// A caller, as admission sees it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub credential: Credential,
    /// The key's name (keys only).
    pub key: Option<Arc<str>>,
    pub user: Option<Arc<str>>,
    pub team: Option<Arc<str>>,
    pub application: Option<Arc<str>>,
    pub environment: Option<Arc<str>>,
    pub role: Role,
    pub access: Box<[ModelAccess]>,
    /// The key's metadata (wins over the request's).
    pub metadata: Metadata,
    pub expires_at_ms: Option<u64>,
    pub revoked: bool,
    /// Indexes into the policy's rules whose subject part matches this caller.
    pub candidates: Box<[u32]>,
}

impl Identity {
    /// The caller of a gateway serving anonymously.
    pub fn anonymous() -> Identity {
        Identity {
            credential: Credential::Anonymous,
            key: None,
            user: None,
            team: None,
            application: None,
            environment: None,
            role: Role::Member,
            access: Box::new([]),
            metadata: Metadata::new(),
            expires_at_ms: None,
            revoked: false,
            candidates: Box::new([]),
        }
    }

    /// How logs and `whoami` name the caller.
    pub fn describe(&self) -> String {
        match (&self.key, &self.user, &self.application) {
            (Some(k), _, _) => format!("key:{k}"),
            (None, Some(u), _) => format!("user:{u}"),
            (None, None, Some(a)) => format!("application:{a}"),
            _ => "anonymous".into(),
        }
    }

    /// Fills in which rules can apply to this caller.
    pub fn with_candidates(mut self, rules: &[Rule]) -> Identity {
        self.candidates = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.when.matches_subject(&self))
            .filter_map(|(i, _)| u32::try_from(i).ok())
            .collect();
        self
    }
}

/// The outcome of presenting a key. The identity is borrowed from the policy: a request holds
/// the policy for its whole life, and cloning a shared `Arc` per request would bounce its
/// reference count between cores.
#[derive(Debug, Clone)]
pub enum KeyLookup<'p> {
    Valid(&'p Identity),
    Unknown,
    Revoked(Arc<str>),
    Expired(Arc<str>),
}

/// A declared team.
#[derive(Debug, Clone)]
pub struct Team {
    pub environments: Vec<Arc<str>>,
    pub models: GlobSet,
}

/// Teams, users, applications, environments and keys, compiled.
#[derive(Debug, Default)]
pub struct Directory {
    keys: HashMap<KeyDigest, Arc<Identity>, RandomState>,
    by_name: BTreeMap<Arc<str>, KeyDigest>,
    teams: BTreeMap<Arc<str>, Team>,
    users: BTreeMap<Arc<str>, User>,
    environments: Vec<Arc<str>>,
}

/// A declared user, as a token's caller needs it.
#[derive(Debug, Clone)]
pub struct User {
    pub teams: Vec<Arc<str>>,
    pub models: GlobSet,
}

/// The environments a gateway knows when the config declares none.
pub const DEFAULT_ENVIRONMENTS: [&str; 3] = ["dev", "staging", "prod"];

/// Names are used in rule selectors (globs) and scopes (`team:x`), so they hold none of `:*?`.
pub fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, ':' | '*' | '?'))
}

fn interned(pool: &mut BTreeMap<String, Arc<str>>, s: &str) -> Arc<str> {
    pool.entry(s.to_string()).or_insert_with(|| Arc::from(s)).clone()
}

impl Directory {
    /// Compiles the entities of `spec`; `rules` are the compiled rules (for each key's candidates).
    pub fn compile(spec: &GovernanceSpec, hasher: &KeyHasher, rules: &[Rule]) -> Result<Directory, PolicyError> {
        let mut pool = BTreeMap::new();
        let environments: Vec<Arc<str>> = if spec.environments.is_empty() {
            DEFAULT_ENVIRONMENTS.iter().map(|e| interned(&mut pool, e)).collect()
        } else {
            for (i, e) in spec.environments.iter().enumerate() {
                if !name_ok(e) {
                    return Err(PolicyError::new(
                        format!("environments[{i}]"),
                        "a name is 1 to 128 characters without spaces, `:`, `*` or `?`",
                    ));
                }
            }
            spec.environments.iter().map(|e| interned(&mut pool, e)).collect()
        };
        let mut teams = BTreeMap::new();
        for (name, t) in &spec.teams {
            if !name_ok(name) {
                return Err(PolicyError::new(
                    format!("teams.{name}"),
                    "a team name is 1 to 128 characters without spaces, `:`, `*` or `?`",
                ));
            }
            for e in &t.environments {
                if !environments.iter().any(|d| &**d == e) {
                    return Err(PolicyError::new(
                        format!("teams.{name}.environments"),
                        format!("environment `{e}` is not declared"),
                    ));
                }
            }
            let envs = t.environments.iter().map(|e| interned(&mut pool, e)).collect();
            teams.insert(interned(&mut pool, name), Team { environments: envs, models: GlobSet::new(&t.models) });
        }
        for (name, u) in &spec.users {
            if !name_ok(name) {
                return Err(PolicyError::new(
                    format!("users.{name}"),
                    "a user name is 1 to 128 characters without spaces, `:`, `*` or `?`",
                ));
            }
            for t in &u.teams {
                if !spec.teams.contains_key(t) {
                    return Err(PolicyError::new(format!("users.{name}.teams"), format!("team `{t}` is not declared")));
                }
            }
        }
        for (name, a) in &spec.applications {
            if !name_ok(name) {
                return Err(PolicyError::new(
                    format!("applications.{name}"),
                    "an application name is 1 to 128 characters without spaces, `:`, `*` or `?`",
                ));
            }
            if let Some(t) = &a.team
                && !spec.teams.contains_key(t)
            {
                return Err(PolicyError::new(
                    format!("applications.{name}.team"),
                    format!("team `{t}` is not declared"),
                ));
            }
        }
        let users = spec
            .users
            .iter()
            .map(|(n, u)| {
                let teams = u.teams.iter().map(|t| interned(&mut pool, t)).collect();
                (interned(&mut pool, n), User { teams, models: GlobSet::new(&u.models) })
            })
            .collect();
        let mut dir = Directory { keys: HashMap::default(), by_name: BTreeMap::new(), teams, users, environments };
        for (i, k) in spec.keys.iter().enumerate() {
            let at = format!("keys[{i}]");
            let (digest, identity) = dir.compile_key(spec, k, &at, hasher, &mut pool)?;
            let identity = identity.with_candidates(rules);
            let name = identity.key.clone().unwrap_or_else(|| Arc::from(""));
            if dir.by_name.insert(name.clone(), digest).is_some() {
                return Err(PolicyError::new(format!("{at}.name"), format!("key name `{name}` is used twice")));
            }
            if dir.keys.insert(digest, Arc::new(identity)).is_some() {
                return Err(PolicyError::new(format!("{at}.hash"), "two keys have the same secret"));
            }
        }
        Ok(dir)
    }

    fn compile_key(
        &self,
        spec: &GovernanceSpec,
        k: &KeySpec,
        at: &str,
        hasher: &KeyHasher,
        pool: &mut BTreeMap<String, Arc<str>>,
    ) -> Result<(KeyDigest, Identity), PolicyError> {
        let field = |f: &str| format!("{at}.{f}");
        if !name_ok(&k.name) {
            return Err(PolicyError::new(
                field("name"),
                "a key name is 1 to 128 characters without spaces, `:`, `*` or `?`",
            ));
        }
        let digest = match (&k.hash, &k.secret) {
            (Some(h), None) => KeyDigest::parse(h).map_err(|e| PolicyError::new(field("hash"), e))?,
            (None, Some(s)) if s.len() >= 16 => hasher.digest(s),
            (None, Some(_)) => {
                return Err(PolicyError::new(field("secret"), "a key's secret must be at least 16 characters"));
            }
            _ => return Err(PolicyError::new(field("hash"), "give exactly one of `hash` and `secret`")),
        };
        let mut access = Vec::new();
        let (user, application, team, role) = match (&k.user, &k.application) {
            (Some(u), None) => {
                let us = spec
                    .users
                    .get(u)
                    .ok_or_else(|| PolicyError::new(field("user"), format!("user `{u}` is not declared")))?;
                let team = match &k.team {
                    Some(t) if us.teams.contains(t) => Some(t.clone()),
                    Some(t) => return Err(PolicyError::new(field("team"), format!("user `{u}` is not in team `{t}`"))),
                    None if us.teams.len() == 1 => us.teams.first().cloned(),
                    None if us.teams.is_empty() => None,
                    None => {
                        return Err(PolicyError::new(
                            field("team"),
                            format!("user `{u}` is in several teams: name one"),
                        ));
                    }
                };
                let role = match k.role {
                    Some(r) if r.rank() > us.role.rank() => {
                        return Err(PolicyError::new(
                            field("role"),
                            format!("a key cannot hold more than its user's role ({})", us.role.as_str()),
                        ));
                    }
                    Some(r) => r,
                    None => us.role,
                };
                if !us.models.is_empty() {
                    access.push(ModelAccess {
                        rule: format!("user:{u}.models").into(),
                        allowed: GlobSet::new(&us.models),
                    });
                }
                (Some(interned(pool, u)), None, team, role)
            }
            (None, Some(a)) => {
                let app = spec.applications.get(a).ok_or_else(|| {
                    PolicyError::new(field("application"), format!("application `{a}` is not declared"))
                })?;
                let team = match (&k.team, &app.team) {
                    (Some(t), Some(owner)) if t != owner => {
                        return Err(PolicyError::new(
                            field("team"),
                            format!("application `{a}` belongs to team `{owner}`"),
                        ));
                    }
                    (Some(t), _) if !spec.teams.contains_key(t) => {
                        return Err(PolicyError::new(field("team"), format!("team `{t}` is not declared")));
                    }
                    (t, owner) => t.clone().or_else(|| owner.clone()),
                };
                if !app.models.is_empty() {
                    access.push(ModelAccess {
                        rule: format!("application:{a}.models").into(),
                        allowed: GlobSet::new(&app.models),
                    });
                }
                (None, Some(interned(pool, a)), team, k.role.unwrap_or(Role::Member))
            }
            _ => return Err(PolicyError::new(field("user"), "a key belongs to exactly one `user` or `application`")),
        };
        if let Some(t) = &team
            && let Some(ts) = self.teams.get(t.as_str())
            && !ts.models.is_empty()
        {
            access.push(ModelAccess { rule: format!("team:{t}.models").into(), allowed: ts.models.clone() });
        }
        if !k.models.is_empty() {
            access
                .push(ModelAccess { rule: format!("key:{}.models", k.name).into(), allowed: GlobSet::new(&k.models) });
        }
        let environment = match &k.environment {
            None => None,
            Some(e) => {
                if !self.environments.iter().any(|d| &**d == e) {
                    return Err(PolicyError::new(field("environment"), format!("environment `{e}` is not declared")));
                }
                if let Some(t) = &team
                    && let Some(ts) = self.teams.get(t.as_str())
                    && !ts.environments.is_empty()
                    && !ts.environments.iter().any(|d| &**d == e)
                {
                    return Err(PolicyError::new(field("environment"), format!("team `{t}` has no environment `{e}`")));
                }
                Some(interned(pool, e))
            }
        };
        let expires_at_ms = match &k.expires_at {
            None => None,
            Some(t) => Some(parse_instant(t).map_err(|e| PolicyError::new(field("expires_at"), e))?),
        };
        let mut metadata = Metadata::new();
        for (mk, mv) in &k.metadata {
            metadata.set(mk, mv);
        }
        let identity = Identity {
            credential: crate::identity::Credential::Key,
            key: Some(interned(pool, &k.name)),
            user,
            team: team.map(|t| interned(pool, &t)),
            application,
            environment,
            role,
            access: access.into_boxed_slice(),
            metadata,
            expires_at_ms,
            revoked: k.revoked,
            candidates: Box::new([]),
        };
        Ok((digest, identity))
    }

    /// Finds the identity of a presented key (already hashed).
    pub fn lookup(&self, digest: &KeyDigest, now_ms: u64) -> KeyLookup<'_> {
        let Some(id) = self.keys.get(digest) else { return KeyLookup::Unknown };
        let name = id.key.clone().unwrap_or_else(|| Arc::from(""));
        if id.revoked {
            KeyLookup::Revoked(name)
        } else if id.expires_at_ms.is_some_and(|t| now_ms >= t) {
            KeyLookup::Expired(name)
        } else {
            KeyLookup::Valid(id)
        }
    }

    /// The identity of the key named `name`.
    pub fn key_named(&self, name: &str) -> Option<&Arc<Identity>> {
        self.by_name.get(name).and_then(|d| self.keys.get(d))
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    pub fn has_environment(&self, name: &str) -> bool {
        self.environments.iter().any(|e| &**e == name)
    }

    pub fn team(&self, name: &str) -> Option<&Team> {
        self.teams.get(name)
    }

    pub fn environments(&self) -> &[Arc<str>] {
        &self.environments
    }
}

impl Role {
    /// Higher is more powerful.
    pub fn rank(self) -> u8 {
        match self {
            Role::OrgAdmin => 3,
            Role::TeamAdmin => 2,
            Role::Member => 1,
            Role::Viewer => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ApplicationSpec, TeamSpec, UserSpec};

    fn base() -> GovernanceSpec {
        GovernanceSpec {
            teams: [
                (
                    "search".to_string(),
                    TeamSpec {
                        environments: vec!["prod".into()],
                        models: vec!["gpt-4o*".into()],
                        ..TeamSpec::default()
                    },
                ),
                ("ads".to_string(), TeamSpec::default()),
            ]
            .into(),
            users: [
                (
                    "alice".to_string(),
                    UserSpec { teams: vec!["search".into()], role: Role::TeamAdmin, ..UserSpec::default() },
                ),
                ("bob".to_string(), UserSpec { teams: vec!["search".into(), "ads".into()], ..UserSpec::default() }),
            ]
            .into(),
            applications: [(
                "ranker".to_string(),
                ApplicationSpec { team: Some("search".into()), ..ApplicationSpec::default() },
            )]
            .into(),
            ..GovernanceSpec::default()
        }
    }

    fn key(name: &str, secret: &str) -> KeySpec {
        KeySpec { name: name.into(), secret: Some(secret.into()), ..KeySpec::default() }
    }

    #[test]
    fn keys_resolve_to_their_identity() {
        let h = KeyHasher::new(b"pepper");
        let mut spec = base();
        spec.keys.push(KeySpec {
            user: Some("alice".into()),
            environment: Some("prod".into()),
            ..key("a1", "sk-sg-aaaaaaaaaaaaaaaa")
        });
        spec.keys.push(KeySpec {
            application: Some("ranker".into()),
            models: vec!["gpt-4o-mini".into()],
            ..key("r1", "sk-sg-rrrrrrrrrrrrrrrr")
        });
        let dir = Directory::compile(&spec, &h, &[]).unwrap();
        let KeyLookup::Valid(a) = dir.lookup(&h.digest("sk-sg-aaaaaaaaaaaaaaaa"), 0) else { panic!("a1") };
        assert_eq!(a.user.as_deref(), Some("alice"));
        assert_eq!(a.team.as_deref(), Some("search"), "the user's only team");
        assert_eq!(a.role, Role::TeamAdmin);
        assert_eq!(a.access.len(), 1);
        let KeyLookup::Valid(r) = dir.lookup(&h.digest("sk-sg-rrrrrrrrrrrrrrrr"), 0) else { panic!("r1") };
        assert_eq!(r.application.as_deref(), Some("ranker"));
        assert_eq!(r.team.as_deref(), Some("search"));
        assert_eq!(r.access.iter().map(|a| &*a.rule).collect::<Vec<_>>(), ["team:search.models", "key:r1.models"]);
        assert!(matches!(dir.lookup(&h.digest("sk-sg-unknown"), 0), KeyLookup::Unknown));
        assert!(dir.key_named("a1").is_some());
    }

    #[test]
    fn revoked_and_expired_keys() {
        let h = KeyHasher::new(b"p");
        let mut spec = base();
        spec.keys.push(KeySpec { user: Some("alice".into()), revoked: true, ..key("gone", "sk-sg-gggggggggggggggg") });
        spec.keys.push(KeySpec {
            user: Some("alice".into()),
            expires_at: Some("1970-01-01T00:00:10Z".into()),
            ..key("old", "sk-sg-oooooooooooooooo")
        });
        let dir = Directory::compile(&spec, &h, &[]).unwrap();
        assert!(matches!(dir.lookup(&h.digest("sk-sg-gggggggggggggggg"), 0), KeyLookup::Revoked(n) if &*n == "gone"));
        assert!(matches!(dir.lookup(&h.digest("sk-sg-oooooooooooooooo"), 9_999), KeyLookup::Valid(_)));
        assert!(matches!(dir.lookup(&h.digest("sk-sg-oooooooooooooooo"), 10_000), KeyLookup::Expired(_)));
    }

    #[test]
    fn bad_keys_name_the_field() {
        let h = KeyHasher::new(b"p");
        let cases: Vec<(KeySpec, &str, &str)> = vec![
            (key("k", "sk-sg-kkkkkkkkkkkkkkkk"), "keys[0].user", "exactly one"),
            (
                KeySpec { user: Some("carol".into()), ..key("k", "sk-sg-kkkkkkkkkkkkkkkk") },
                "keys[0].user",
                "not declared",
            ),
            (
                KeySpec { user: Some("bob".into()), ..key("k", "sk-sg-kkkkkkkkkkkkkkkk") },
                "keys[0].team",
                "several teams",
            ),
            (
                KeySpec { user: Some("alice".into()), team: Some("ads".into()), ..key("k", "sk-sg-kkkkkkkkkkkkkkkk") },
                "keys[0].team",
                "not in team",
            ),
            (
                KeySpec {
                    user: Some("bob".into()),
                    team: Some("ads".into()),
                    role: Some(Role::OrgAdmin),
                    ..key("k", "sk-sg-kkkkkkkkkkkkkkkk")
                },
                "keys[0].role",
                "more than",
            ),
            (
                KeySpec {
                    user: Some("alice".into()),
                    environment: Some("dev".into()),
                    ..key("k", "sk-sg-kkkkkkkkkkkkkkkk")
                },
                "keys[0].environment",
                "no environment",
            ),
            (
                KeySpec {
                    user: Some("alice".into()),
                    environment: Some("qa".into()),
                    ..key("k", "sk-sg-kkkkkkkkkkkkkkkk")
                },
                "keys[0].environment",
                "not declared",
            ),
            (KeySpec { user: Some("alice".into()), ..key("k", "short") }, "keys[0].secret", "16"),
            (
                KeySpec { user: Some("alice".into()), hash: Some("x".into()), ..key("k", "sk-sg-kkkkkkkkkkkkkkkk") },
                "keys[0].hash",
                "exactly one",
            ),
            (
                KeySpec {
                    user: Some("alice".into()),
                    expires_at: Some("soon".into()),
                    ..key("k", "sk-sg-kkkkkkkkkkkkkkkk")
                },
                "keys[0].expires_at",
                "RFC 3339",
            ),
            (
                KeySpec {
                    application: Some("ranker".into()),
                    team: Some("ads".into()),
                    ..key("k", "sk-sg-kkkkkkkkkkkkkkkk")
                },
                "keys[0].team",
                "belongs to",
            ),
            (
                KeySpec { user: Some("alice".into()), ..key("bad name", "sk-sg-kkkkkkkkkkkkkkkk") },
                "keys[0].name",
                "without spaces",
            ),
        ];
        for (k, field, text) in cases {
            let mut spec = base();
            spec.keys.push(k);
            let e = Directory::compile(&spec, &h, &[]).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.message.contains(text), "{e}");
        }
    }

    #[test]
    fn duplicate_names_and_secrets_are_refused() {
        let h = KeyHasher::new(b"p");
        let mut spec = base();
        spec.keys.push(KeySpec { user: Some("alice".into()), ..key("k", "sk-sg-kkkkkkkkkkkkkkkk") });
        spec.keys.push(KeySpec { user: Some("alice".into()), ..key("k", "sk-sg-jjjjjjjjjjjjjjjj") });
        assert_eq!(Directory::compile(&spec, &h, &[]).unwrap_err().field, "keys[1].name");
        spec.keys[1].name = "j".into();
        spec.keys[1].secret = Some("sk-sg-kkkkkkkkkkkkkkkk".into());
        assert_eq!(Directory::compile(&spec, &h, &[]).unwrap_err().field, "keys[1].hash");
    }
}
