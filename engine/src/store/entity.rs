//! The things the admin API makes, one type: a team, user, application, key, rate-limit rule or
//! budget, with its name and the same spec the YAML config uses.

use policy::spec::{ApplicationSpec, BudgetSpec, GovernanceSpec, KeySpec, RateLimitSpec, TeamSpec, UserSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntityKind {
    Team,
    User,
    Application,
    Key,
    RateLimit,
    Budget,
}

impl EntityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Team => "team",
            EntityKind::User => "user",
            EntityKind::Application => "application",
            EntityKind::Key => "key",
            EntityKind::RateLimit => "rate_limit",
            EntityKind::Budget => "budget",
        }
    }

    pub fn parse(s: &str) -> Option<EntityKind> {
        Some(match s {
            "team" => EntityKind::Team,
            "user" => EntityKind::User,
            "application" => EntityKind::Application,
            "key" => EntityKind::Key,
            "rate_limit" => EntityKind::RateLimit,
            "budget" => EntityKind::Budget,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Entity {
    Team(String, TeamSpec),
    User(String, UserSpec),
    Application(String, ApplicationSpec),
    /// Stored with its digest only (`hash`), never its secret.
    Key(KeySpec),
    RateLimit(RateLimitSpec),
    Budget(BudgetSpec),
}

impl Entity {
    pub fn kind(&self) -> EntityKind {
        match self {
            Entity::Team(..) => EntityKind::Team,
            Entity::User(..) => EntityKind::User,
            Entity::Application(..) => EntityKind::Application,
            Entity::Key(_) => EntityKind::Key,
            Entity::RateLimit(_) => EntityKind::RateLimit,
            Entity::Budget(_) => EntityKind::Budget,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Entity::Team(n, _) | Entity::User(n, _) | Entity::Application(n, _) => n,
            Entity::Key(k) => &k.name,
            Entity::RateLimit(r) => &r.id,
            Entity::Budget(b) => &b.id,
        }
    }

    /// The team whose namespace it lives in, where it has exactly one.
    pub fn team(&self) -> Option<&str> {
        fn only(teams: &[String]) -> Option<&str> {
            match teams {
                [t] => Some(t.as_str()),
                _ => None,
            }
        }
        match self {
            Entity::Team(n, _) => Some(n),
            Entity::User(_, u) => only(&u.teams),
            Entity::Application(_, a) => a.team.as_deref(),
            Entity::Key(k) => k.team.as_deref(),
            Entity::RateLimit(r) => only(&r.when.teams),
            Entity::Budget(b) => only(&b.when.teams),
        }
    }

    /// The spec as stored (JSON). A key's secret is never part of it.
    pub fn to_json(&self) -> Result<String, String> {
        let r = match self {
            Entity::Team(_, s) => serde_json::to_string(s),
            Entity::User(_, s) => serde_json::to_string(s),
            Entity::Application(_, s) => serde_json::to_string(s),
            Entity::Key(k) => serde_json::to_string(&KeySpec { secret: None, ..k.clone() }),
            Entity::RateLimit(s) => serde_json::to_string(s),
            Entity::Budget(s) => serde_json::to_string(s),
        };
        r.map_err(|e| e.to_string())
    }

    pub fn from_json(kind: EntityKind, name: &str, json: &str) -> Result<Entity, serde_json::Error> {
        Ok(match kind {
            EntityKind::Team => Entity::Team(name.into(), serde_json::from_str(json)?),
            EntityKind::User => Entity::User(name.into(), serde_json::from_str(json)?),
            EntityKind::Application => Entity::Application(name.into(), serde_json::from_str(json)?),
            EntityKind::Key => Entity::Key(KeySpec { name: name.into(), ..serde_json::from_str(json)? }),
            EntityKind::RateLimit => {
                Entity::RateLimit(RateLimitSpec { id: name.into(), ..serde_json::from_str(json)? })
            }
            EntityKind::Budget => Entity::Budget(BudgetSpec { id: name.into(), ..serde_json::from_str(json)? }),
        })
    }

    /// Adds it to `spec`, replacing what has the same kind and name.
    pub fn put_into(&self, spec: &mut GovernanceSpec) {
        match self.clone() {
            Entity::Team(n, s) => {
                spec.teams.insert(n, s);
            }
            Entity::User(n, s) => {
                spec.users.insert(n, s);
            }
            Entity::Application(n, s) => {
                spec.applications.insert(n, s);
            }
            Entity::Key(k) => match spec.keys.iter_mut().find(|x| x.name == k.name) {
                Some(slot) => *slot = k,
                None => spec.keys.push(k),
            },
            Entity::RateLimit(r) => match spec.rate_limits.iter_mut().find(|x| x.id == r.id) {
                Some(slot) => *slot = r,
                None => spec.rate_limits.push(r),
            },
            Entity::Budget(b) => match spec.budgets.iter_mut().find(|x| x.id == b.id) {
                Some(slot) => *slot = b,
                None => spec.budgets.push(b),
            },
        }
    }

    /// Finds one in `spec`.
    pub fn find_in(kind: EntityKind, name: &str, spec: &GovernanceSpec) -> Option<Entity> {
        match kind {
            EntityKind::Team => spec.teams.get(name).map(|s| Entity::Team(name.into(), s.clone())),
            EntityKind::User => spec.users.get(name).map(|s| Entity::User(name.into(), s.clone())),
            EntityKind::Application => spec.applications.get(name).map(|s| Entity::Application(name.into(), s.clone())),
            EntityKind::Key => spec.keys.iter().find(|k| k.name == name).cloned().map(Entity::Key),
            EntityKind::RateLimit => spec.rate_limits.iter().find(|r| r.id == name).cloned().map(Entity::RateLimit),
            EntityKind::Budget => spec.budgets.iter().find(|b| b.id == name).cloned().map(Entity::Budget),
        }
    }

    /// Everything of one kind in `spec`.
    pub fn all_in(kind: EntityKind, spec: &GovernanceSpec) -> Vec<Entity> {
        match kind {
            EntityKind::Team => spec.teams.iter().map(|(n, s)| Entity::Team(n.clone(), s.clone())).collect(),
            EntityKind::User => spec.users.iter().map(|(n, s)| Entity::User(n.clone(), s.clone())).collect(),
            EntityKind::Application => {
                spec.applications.iter().map(|(n, s)| Entity::Application(n.clone(), s.clone())).collect()
            }
            EntityKind::Key => spec.keys.iter().cloned().map(Entity::Key).collect(),
            EntityKind::RateLimit => spec.rate_limits.iter().cloned().map(Entity::RateLimit).collect(),
            EntityKind::Budget => spec.budgets.iter().cloned().map(Entity::Budget).collect(),
        }
    }
}

/// Removes what has that kind and name from `spec`; false when there was none.
pub fn remove_from(kind: EntityKind, name: &str, spec: &mut GovernanceSpec) -> bool {
    match kind {
        EntityKind::Team => spec.teams.remove(name).is_some(),
        EntityKind::User => spec.users.remove(name).is_some(),
        EntityKind::Application => spec.applications.remove(name).is_some(),
        EntityKind::Key => remove_where(&mut spec.keys, |k| k.name == name),
        EntityKind::RateLimit => remove_where(&mut spec.rate_limits, |r| r.id == name),
        EntityKind::Budget => remove_where(&mut spec.budgets, |b| b.id == name),
    }
}

fn remove_where<T>(v: &mut Vec<T>, f: impl Fn(&T) -> bool) -> bool {
    let before = v.len();
    v.retain(|x| !f(x));
    v.len() != before
}

/// Merges the admin-made spec into the config file's. A name both declare is an error: the
/// config file is the source of truth for what it declares.
pub fn merge(file: &GovernanceSpec, managed: &GovernanceSpec) -> Result<GovernanceSpec, Vec<String>> {
    let mut out = file.clone();
    let mut clashes = Vec::new();
    for kind in [
        EntityKind::Team,
        EntityKind::User,
        EntityKind::Application,
        EntityKind::Key,
        EntityKind::RateLimit,
        EntityKind::Budget,
    ] {
        for e in Entity::all_in(kind, managed) {
            if Entity::find_in(kind, e.name(), file).is_some() {
                clashes.push(format!(
                    "{} {:?} is declared in the config file and was also made through the admin API; \
                     the config file must not redeclare it",
                    kind.as_str(),
                    e.name()
                ));
            } else {
                e.put_into(&mut out);
            }
        }
    }
    if clashes.is_empty() { Ok(out) } else { Err(clashes) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_drops_secrets() {
        let k = Entity::Key(KeySpec {
            name: "k".into(),
            secret: Some("sk-sg-secret".into()),
            hash: Some("hmac-sha256:00".into()),
            ..KeySpec::default()
        });
        let json = k.to_json().unwrap();
        assert!(!json.contains("sk-sg-secret"), "{json}");
        let back = Entity::from_json(EntityKind::Key, "k", &json).unwrap();
        assert_eq!(back.name(), "k");
        let Entity::Key(spec) = back else { panic!() };
        assert_eq!((spec.secret, spec.hash.as_deref()), (None, Some("hmac-sha256:00")));
    }

    #[test]
    fn merge_refuses_names_the_file_declares() {
        let mut file = GovernanceSpec::default();
        file.teams.insert("search".into(), TeamSpec::default());
        let mut managed = GovernanceSpec::default();
        managed.teams.insert("ads".into(), TeamSpec::default());
        let merged = merge(&file, &managed).unwrap();
        assert_eq!(merged.teams.keys().collect::<Vec<_>>(), ["ads", "search"]);
        managed.teams.insert("search".into(), TeamSpec::default());
        let err = merge(&file, &managed).unwrap_err();
        assert!(err[0].contains("team \"search\""), "{err:?}");
    }

    #[test]
    fn put_replaces_and_remove_reports() {
        let mut spec = GovernanceSpec::default();
        let rule = |n: u64| {
            Entity::RateLimit(RateLimitSpec {
                id: "r".into(),
                limits: policy::spec::LimitSpec { requests_per_minute: Some(n), ..Default::default() },
                ..RateLimitSpec::default()
            })
        };
        rule(1).put_into(&mut spec);
        rule(2).put_into(&mut spec);
        assert_eq!(spec.rate_limits.len(), 1);
        assert_eq!(spec.rate_limits[0].limits.requests_per_minute, Some(2));
        assert!(remove_from(EntityKind::RateLimit, "r", &mut spec));
        assert!(!remove_from(EntityKind::RateLimit, "r", &mut spec));
    }
}
