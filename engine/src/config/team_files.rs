//! Per-team config files: the main config's `team_files: <dir>` names a directory whose
//! `<team>.yaml` (or `.yml`) files each define governance of one team only — the team itself,
//! its users, applications, keys, rate limits and budgets. What they define is checked against
//! the team's namespace and merged into the main file's governance sections before compile, so
//! everything downstream sees one config.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use policy::spec::{ApplicationSpec, BudgetSpec, KeySpec, RateLimitSpec, Role, SelectorSpec, TeamSpec, UserSpec};
use serde::Deserialize;

use super::units::EnvString;
use super::{ConfigError, ConfigFile, ConfigSource, ValidationErrors};

/// One team file. Every section is optional; anything else is an error.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamFile {
    /// The team's own spec (environments, models, limits, budget); declares the team. Leave it
    /// out when the main config's `teams:` declares the team.
    #[serde(default)]
    pub team: Option<TeamSpec>,
    /// Users of this team (`teams` defaults to `[<team>]`; `org_admin` is not allowed).
    #[serde(default)]
    pub users: BTreeMap<String, UserSpec>,
    /// Applications of this team (`team` defaults to `<team>`).
    #[serde(default)]
    pub applications: BTreeMap<String, ApplicationSpec>,
    /// Keys acting in this team (`team` defaults to `<team>`; `org_admin` is not allowed).
    #[serde(default)]
    pub keys: Vec<KeySpec>,
    /// Rules applying to this team only (`when.teams` defaults to `[<team>]`); ids become
    /// `<team>/<id>`.
    #[serde(default)]
    pub rate_limits: Vec<RateLimitSpec>,
    /// Budgets of this team only, as rate limits.
    #[serde(default)]
    pub budgets: Vec<BudgetSpec>,
}

/// A team file found in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The file's stem: the team it belongs to.
    pub team: String,
    /// How errors name it: the directory as the main config writes it, and the file name.
    pub label: String,
    pub path: PathBuf,
}

/// A parsed team file, ready to merge.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub team: String,
    pub label: String,
    pub file: TeamFile,
}

/// The directory relative paths in `source` are taken from: the config file's directory, or
/// the working directory for config given as text.
fn base_dir(source: &ConfigSource) -> PathBuf {
    match source {
        ConfigSource::File(p) => p.parent().map(Path::to_path_buf).unwrap_or_default(),
        _ => PathBuf::new(),
    }
}

/// The team files in `dir`: every non-hidden `*.yaml` and `*.yml` file (not recursive), sorted
/// by name. `shown` is the directory as errors name it.
pub fn list(dir: &Path, shown: &Path) -> std::io::Result<Vec<Found>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
        if name.starts_with('.') {
            continue;
        }
        let Some(stem) = name.strip_suffix(".yaml").or_else(|| name.strip_suffix(".yml")) else { continue };
        let path = entry.path();
        // Follows symlinks: a link to a file is a file.
        if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            continue;
        }
        found.push(Found { team: stem.to_string(), label: shown.join(&name).display().to_string(), path });
    }
    found.sort_by(|a, b| a.path.file_name().cmp(&b.path.file_name()));
    Ok(found)
}

/// Parses one team file; the message names the line, column and field (as for the main file).
pub fn parse(yaml: &str) -> Result<TeamFile, String> {
    if yaml.trim().is_empty() {
        return Ok(TeamFile::default());
    }
    serde_saphyr::from_str::<TeamFile>(yaml).map_err(|e| e.to_string())
}

/// Reads the team files `file.team_files` names (if any) and merges them into `file`. A file
/// that does not parse is a [`ConfigError::Parse`] naming it (several: one
/// [`ConfigError::Invalid`] listing them all); namespace violations are reported all at once.
pub fn apply(source: &ConfigSource, mut file: ConfigFile) -> Result<ConfigFile, ConfigError> {
    let Some(shown) = file.team_files.clone() else { return Ok(file) };
    let dir = base_dir(source).join(&shown);
    let found = list(&dir, &shown)
        .map_err(|e| ConfigError::Read { path: format!("{} (team_files)", dir.display()), source: e })?;
    let mut parsed = Vec::new();
    let mut broken = Vec::new();
    for f in found {
        let text = std::fs::read_to_string(&f.path)
            .map_err(|e| ConfigError::Read { path: f.path.display().to_string(), source: e })?;
        match parse(&text) {
            Ok(tf) => parsed.push(Parsed { team: f.team, label: f.label, file: tf }),
            Err(message) => broken.push((f.label, message)),
        }
    }
    if broken.len() == 1
        && let Some((label, message)) = broken.pop()
    {
        return Err(ConfigError::Parse { source_name: label, message });
    }
    let invalid = |errors| ConfigError::Invalid { source_name: source.describe(), errors: ValidationErrors(errors) };
    if !broken.is_empty() {
        return Err(invalid(broken.into_iter().map(|(label, message)| format!("{label}: {message}")).collect()));
    }
    merge_into(&mut file, &source.describe(), parsed).map_err(invalid)?;
    Ok(file)
}

/// A fingerprint of everything a reload reads: the config file and, when it names
/// `team_files`, each team file's name, modification time and size (so adding, removing and
/// editing one all change it). `None` without a readable config file.
pub fn fingerprint(source: &ConfigSource) -> Option<u64> {
    #[derive(Deserialize)]
    struct OnlyTeamFiles {
        #[serde(default)]
        team_files: Option<PathBuf>,
    }
    let path = source.path()?;
    let meta = std::fs::metadata(path).ok()?;
    let mut h = std::hash::DefaultHasher::new();
    stamp(&meta).hash(&mut h);
    // Read the directory's name afresh: a config that failed to load may have named a new one.
    let dir = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_saphyr::from_str::<OnlyTeamFiles>(&text).ok())
        .and_then(|o| o.team_files);
    if let Some(shown) = dir {
        let dir = base_dir(source).join(&shown);
        match list(&dir, &shown) {
            Ok(found) => {
                for f in found {
                    f.label.hash(&mut h);
                    std::fs::metadata(&f.path).ok().map(|m| stamp(&m)).hash(&mut h);
                }
            }
            Err(e) => e.kind().hash(&mut h),
        }
    }
    Some(h.finish())
}

fn stamp(meta: &std::fs::Metadata) -> (Option<SystemTime>, u64) {
    (meta.modified().ok(), meta.len())
}

/// Whether a file stem can name a team: no spaces, and nothing that would make it a glob (`*`,
/// `?`), a reserved rule id (`:`) or a path (`/`).
fn team_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '*' | '?' | ':' | '/'))
}

/// Where each name is defined, to report one defined twice with both places.
#[derive(Default)]
struct Places {
    users: BTreeMap<String, String>,
    applications: BTreeMap<String, String>,
    keys: BTreeMap<String, String>,
    rate_limits: BTreeMap<String, String>,
    budgets: BTreeMap<String, String>,
}

/// Records `name` as defined at `place`; the place it was defined before, if any.
fn claim(map: &mut BTreeMap<String, String>, name: &str, place: String) -> Option<String> {
    match map.get(name) {
        Some(before) => Some(before.clone()),
        None => {
            map.insert(name.to_string(), place);
            None
        }
    }
}

/// Checks each team file against its team's namespace and merges them into `file` (in order).
/// Nothing is merged unless every file is clean; the errors name file and field.
pub fn merge_into(file: &mut ConfigFile, main: &str, files: Vec<Parsed>) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    let mut places = Places::default();
    for name in file.users.keys() {
        places.users.insert(name.clone(), format!("{main} (users.{name})"));
    }
    for name in file.applications.keys() {
        places.applications.insert(name.clone(), format!("{main} (applications.{name})"));
    }
    for (i, k) in file.keys.iter().enumerate() {
        places.keys.entry(k.name.clone()).or_insert_with(|| format!("{main} (keys[{i}])"));
    }
    for (i, r) in file.rate_limits.iter().enumerate() {
        places.rate_limits.entry(r.id.clone()).or_insert_with(|| format!("{main} (rate_limits[{i}])"));
    }
    for (i, b) in file.budgets.iter().enumerate() {
        places.budgets.entry(b.id.clone()).or_insert_with(|| format!("{main} (budgets[{i}])"));
    }

    let mut teams = file.teams.clone();
    let mut users = file.users.clone();
    let mut applications = file.applications.clone();
    let mut keys = file.keys.clone();
    let mut rate_limits = file.rate_limits.clone();
    let mut budgets = file.budgets.clone();
    // Keys from team files, checked against users and applications once all are known.
    let mut team_keys: Vec<(String, String, usize, usize)> = Vec::new();
    let mut files_of_team: BTreeMap<String, String> = BTreeMap::new();

    for Parsed { team, label, file: tf } in files {
        if !team_name_ok(&team) {
            errors.push(format!(
                "{label}: the file name makes the team name {team:?}, which must be 1 to 128 characters \
                 without spaces, `*`, `?`, `:` or `/`"
            ));
            continue;
        }
        if let Some(other) = files_of_team.get(&team) {
            errors.push(format!("{label}: team {team:?} already has a team file, {other}; use one"));
            continue;
        }
        files_of_team.insert(team.clone(), label.clone());
        let mut err = |field: String, message: String| errors.push(format!("{label}: {field}: {message}"));
        let twice = |what: &str, name: &str, before: &str| format!("{what} {name:?} is also defined in {before}");
        let only = |what: &str| format!("a team file may only define {what} of team {team:?}");

        match (tf.team, file.teams.contains_key(&team)) {
            (Some(_), true) => err(
                "team".into(),
                format!("team {team:?} is also declared in {main} (teams.{team}); declare it in one place"),
            ),
            (Some(spec), false) => {
                teams.insert(team.clone(), spec);
            }
            (None, true) => {}
            (None, false) => {
                err("team".into(), format!("team {team:?} is declared neither here (`team:`) nor in {main} (`teams:`)"))
            }
        }

        for (name, mut u) in tf.users {
            let at = format!("users.{name}");
            if u.teams.is_empty() {
                u.teams = vec![team.clone()];
            } else if u.teams != [team.as_str()] {
                err(format!("{at}.teams"), format!("{} (teams: [{team}])", only("users")));
            }
            if u.role == Role::OrgAdmin {
                err(format!("{at}.role"), "a team file may not define org_admin users".into());
            }
            match claim(&mut places.users, &name, format!("{label} ({at})")) {
                Some(before) => err(at, twice("user", &name, &before)),
                None => {
                    users.insert(name, u);
                }
            }
        }

        for (name, mut a) in tf.applications {
            let at = format!("applications.{name}");
            match &a.team {
                None => a.team = Some(team.clone()),
                Some(t) if *t == team => {}
                Some(_) => err(format!("{at}.team"), only("applications")),
            }
            match claim(&mut places.applications, &name, format!("{label} ({at})")) {
                Some(before) => err(at, twice("application", &name, &before)),
                None => {
                    applications.insert(name, a);
                }
            }
        }

        for (i, mut k) in tf.keys.into_iter().enumerate() {
            let at = format!("keys[{i}]");
            match &k.team {
                None => k.team = Some(team.clone()),
                Some(t) if *t == team => {}
                Some(_) => err(format!("{at}.team"), only("keys")),
            }
            if k.role == Some(Role::OrgAdmin) {
                err(format!("{at}.role"), "a team file may not define org_admin keys".into());
            }
            if let Some(raw) = &k.secret
                && let Err(e) = EnvString::expand(raw, |v| std::env::var(v).ok())
            {
                err(format!("{at}.secret"), e);
            }
            match claim(&mut places.keys, &k.name, format!("{label} ({at})")) {
                Some(before) => err(format!("{at}.name"), twice("key", &k.name, &before)),
                None => {
                    team_keys.push((label.clone(), team.clone(), i, keys.len()));
                    keys.push(k);
                }
            }
        }

        for (i, mut r) in tf.rate_limits.into_iter().enumerate() {
            let at = format!("rate_limits[{i}]");
            for (field, message) in scope_rule(&mut r.id, &mut r.when, &team) {
                err(at.clone() + field, message);
            }
            match claim(&mut places.rate_limits, &r.id, format!("{label} ({at})")) {
                Some(before) => err(format!("{at}.id"), twice("rate limit", &r.id, &before)),
                None => rate_limits.push(r),
            }
        }

        for (i, mut b) in tf.budgets.into_iter().enumerate() {
            let at = format!("budgets[{i}]");
            for (field, message) in scope_rule(&mut b.id, &mut b.when, &team) {
                err(at.clone() + field, message);
            }
            match claim(&mut places.budgets, &b.id, format!("{label} ({at})")) {
                Some(before) => err(format!("{at}.id"), twice("budget", &b.id, &before)),
                None => budgets.push(b),
            }
        }
    }

    // A team file's key must belong to a member of its team, and may not inherit org_admin.
    for (label, team, i, at) in team_keys {
        // A key naming another team is reported already.
        let Some(k) = keys.get(at).filter(|k| k.team.as_deref() == Some(team.as_str())) else { continue };
        let field = |f: &str| format!("{label}: keys[{i}].{f}");
        if let Some(name) = &k.user
            && let Some(u) = users.get(name)
        {
            if !u.teams.contains(&team) {
                errors.push(format!("{}: user {name:?} is not in team {team:?}", field("user")));
            }
            if u.role == Role::OrgAdmin && k.role.is_none() {
                errors.push(format!(
                    "{}: user {name:?} is an org_admin and a key in a team file may not be; \
                     set `role:` (team_admin or lower)",
                    field("role")
                ));
            }
        }
        if let Some(name) = &k.application
            && let Some(a) = applications.get(name)
            && a.team.as_deref() != Some(team.as_str())
        {
            errors.push(format!("{}: application {name:?} is not of team {team:?}", field("application")));
        }
    }

    if !errors.is_empty() {
        // File by file (each in the order found).
        errors.sort_by(|a, b| a.split_once(": ").map(|x| x.0).cmp(&b.split_once(": ").map(|x| x.0)));
        return Err(errors);
    }
    file.teams = teams;
    file.users = users;
    file.applications = applications;
    file.keys = keys;
    file.rate_limits = rate_limits;
    file.budgets = budgets;
    Ok(())
}

/// Confines a team file's rule or budget to `team`: `when.teams` defaults to `[team]` and may be
/// nothing else; the id becomes `team/id`. The fields and messages of what is wrong.
fn scope_rule(id: &mut String, when: &mut SelectorSpec, team: &str) -> Vec<(&'static str, String)> {
    let mut wrong = Vec::new();
    if id.is_empty() {
        wrong.push((".id", "an id is 1 to 128 characters without spaces".to_string()));
    }
    *id = format!("{team}/{id}");
    if when.teams.is_empty() {
        when.teams = vec![team.to_string()];
    } else if when.teams != [team] {
        wrong.push((".when.teams", format!("a team file's rules may only apply to team {team:?} (teams: [{team}])")));
    }
    wrong
}

#[cfg(test)]
mod tests {
    use super::*;

    fn team_file(team: &str, yaml: &str) -> Parsed {
        Parsed { team: team.into(), label: format!("teams.d/{team}.yaml"), file: parse(yaml).unwrap() }
    }

    fn main_file(yaml: &str) -> ConfigFile {
        super::super::parse("main.yaml", yaml).unwrap()
    }

    fn merged(main: &str, files: Vec<Parsed>) -> Result<ConfigFile, Vec<String>> {
        let mut f = main_file(main);
        merge_into(&mut f, "main.yaml", files).map(|()| f)
    }

    fn has(errors: &[String], needle: &str) -> bool {
        errors.iter().any(|e| e.contains(needle))
    }

    #[test]
    fn defaults_fill_the_team_and_ids_are_namespaced() {
        let f = merged(
            "",
            vec![team_file(
                "search",
                "team: {models: ['m']}\nusers:\n  alice: {}\napplications:\n  ranker: {}\n\
                 keys:\n  - {name: k1, secret: sk-sg-0123456789abcdef, user: alice}\n\
                 rate_limits:\n  - {id: rpm, limits: {requests_per_minute: 2}}\n\
                 budgets:\n  - {id: daily, limits: {usd_per_day: 1}}\n",
            )],
        )
        .unwrap();
        assert_eq!(f.teams["search"].models, ["m"]);
        assert_eq!(f.users["alice"].teams, ["search"]);
        assert_eq!(f.applications["ranker"].team.as_deref(), Some("search"));
        assert_eq!(f.keys[0].team.as_deref(), Some("search"));
        assert_eq!(f.rate_limits[0].id, "search/rpm");
        assert_eq!(f.rate_limits[0].when.teams, ["search"]);
        assert_eq!(f.budgets[0].id, "search/daily");
        assert_eq!(f.budgets[0].when.teams, ["search"]);
    }

    #[test]
    fn two_teams_may_share_a_rule_id() {
        let rule = "rate_limits:\n  - {id: rpm, limits: {requests_per_minute: 2}}\n";
        let f =
            merged("teams: {search: {}, ads: {}}\n", vec![team_file("ads", rule), team_file("search", rule)]).unwrap();
        let ids: Vec<_> = f.rate_limits.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["ads/rpm", "search/rpm"]);
    }

    #[test]
    fn every_namespace_violation_is_reported_at_once() {
        let errors = merged(
            "teams: {search: {}, ads: {}}\nusers:\n  bob: {teams: [ads]}\n  root: {teams: [search], role: org_admin}\n\
             applications:\n  billing: {team: ads}\n",
            vec![team_file(
                "search",
                "users:\n  alice: {teams: [search, ads]}\n  boss: {role: org_admin}\n  bob: {}\n\
                 applications:\n  ranker: {team: ads}\n\
                 keys:\n  - {name: a, secret: sk-sg-0123456789abcdef, user: boss, role: org_admin}\n\
                 \x20 - {name: b, secret: sk-sg-0123456789abcdeg, user: bob, team: ads}\n\
                 \x20 - {name: c, secret: sk-sg-0123456789abcdeh, application: billing}\n\
                 \x20 - {name: d, secret: sk-sg-0123456789abcdei, user: root}\n\
                 \x20 - {name: a, secret: sk-sg-0123456789abcdej, user: boss}\n\
                 \x20 - {name: e, secret: '${SG_TEAM_FILES_TEST_UNSET}', user: alice}\n\
                 rate_limits:\n  - {id: rpm, when: {teams: ['*']}, limits: {requests_per_minute: 1}}\n\
                 budgets:\n  - {id: b, when: {teams: [ads]}, limits: {usd_per_day: 1}}\n",
            )],
        )
        .unwrap_err();
        let want = [
            "teams.d/search.yaml: users.alice.teams: a team file may only define users of team \"search\"",
            "teams.d/search.yaml: users.boss.role: a team file may not define org_admin users",
            "teams.d/search.yaml: users.bob: user \"bob\" is also defined in main.yaml (users.bob)",
            "teams.d/search.yaml: applications.ranker.team: a team file may only define applications of team \"search\"",
            "teams.d/search.yaml: keys[0].role: a team file may not define org_admin keys",
            "teams.d/search.yaml: keys[1].team: a team file may only define keys of team \"search\"",
            "teams.d/search.yaml: keys[2].application: application \"billing\" is not of team \"search\"",
            "teams.d/search.yaml: keys[3].role: user \"root\" is an org_admin",
            "teams.d/search.yaml: keys[4].name: key \"a\" is also defined in teams.d/search.yaml (keys[0])",
            "teams.d/search.yaml: keys[5].secret:",
            "teams.d/search.yaml: rate_limits[0].when.teams: a team file's rules may only apply to team \"search\"",
            "teams.d/search.yaml: budgets[0].when.teams:",
        ];
        for w in want {
            assert!(has(&errors, w), "missing {w:?} in {errors:#?}");
        }
        assert_eq!(errors.len(), want.len(), "{errors:#?}");
    }

    #[test]
    fn the_team_is_declared_in_exactly_one_place() {
        let errors =
            merged("teams: {search: {}}\n", vec![team_file("search", "team: {}\n"), team_file("ads", "")]).unwrap_err();
        assert!(has(&errors, "teams.d/search.yaml: team: team \"search\" is also declared in main.yaml"), "{errors:?}");
        assert!(has(&errors, "teams.d/ads.yaml: team: team \"ads\" is declared neither here"), "{errors:?}");
        assert!(merged("teams: {search: {}}\n", vec![team_file("search", "")]).is_ok());
        assert!(merged("", vec![team_file("search", "team: {}\n")]).is_ok());
    }

    #[test]
    fn names_defined_twice_name_both_places() {
        let key = "keys:\n  - {name: shared, secret: sk-sg-0123456789abcdef, application: app}\n";
        let errors = merged(
            "keys:\n  - {name: shared, secret: sk-sg-0123456789abcdef, application: x}\n",
            vec![
                team_file("ads", &format!("team: {{}}\napplications: {{app: {{}}}}\n{key}")),
                team_file("search", &format!("team: {{}}\napplications: {{app: {{}}}}\n{key}")),
            ],
        )
        .unwrap_err();
        assert!(has(&errors, "teams.d/ads.yaml: keys[0].name: key \"shared\" is also defined in main.yaml (keys[0])"));
        assert!(has(
            &errors,
            "teams.d/search.yaml: applications.app: application \"app\" is also defined in teams.d/ads.yaml \
             (applications.app)"
        ));
    }

    #[test]
    fn a_team_name_must_not_be_a_glob_and_a_team_has_one_file() {
        let errors = merged("", vec![team_file("s*", "team: {}\n")]).unwrap_err();
        assert!(has(&errors, "teams.d/s*.yaml: the file name makes the team name \"s*\""), "{errors:?}");
        let mut second = team_file("search", "team: {}\n");
        second.label = "teams.d/search.yml".into();
        let errors = merged("", vec![team_file("search", "team: {}\n"), second]).unwrap_err();
        assert!(has(&errors, "teams.d/search.yml: team \"search\" already has a team file, teams.d/search.yaml"));
    }

    #[test]
    fn unknown_sections_name_line_and_field() {
        let e = parse("users: {}\nproviders:\n  x: {kind: mock}\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("providers"), "{e}");
        let e = parse("keys:\n  - {name: a, hash: x, user: u, colour: red}\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("colour"), "{e}");
    }

    #[test]
    fn reads_the_directory_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let teams = dir.path().join("teams.d");
        std::fs::create_dir(&teams).unwrap();
        std::fs::write(teams.join("search.yaml"), "team: {}\nusers: {alice: {}}\n").unwrap();
        std::fs::write(teams.join("ads.yml"), "team: {}\n").unwrap();
        std::fs::write(teams.join(".hidden.yaml"), "nonsense: [").unwrap();
        std::fs::write(teams.join("notes.txt"), "nonsense: [").unwrap();
        std::fs::create_dir(teams.join("nested.yaml")).unwrap();
        let main = dir.path().join("gw.yaml");
        std::fs::write(&main, "team_files: teams.d\n").unwrap();
        let source = ConfigSource::File(main.clone());
        let found = list(&teams, Path::new("teams.d")).unwrap();
        let names: Vec<_> = found.iter().map(|f| f.label.as_str()).collect();
        assert_eq!(names, ["teams.d/ads.yml", "teams.d/search.yaml"]);
        let f = super::super::read(&source).unwrap();
        assert_eq!(f.teams.keys().collect::<Vec<_>>(), ["ads", "search"]);
        assert_eq!(f.users["alice"].teams, ["search"]);

        // The fingerprint sees edits, additions and removals, and nothing else.
        let before = fingerprint(&source).unwrap();
        std::fs::write(teams.join(".swap"), "x").unwrap();
        std::fs::write(teams.join("notes.txt"), "changed").unwrap();
        assert_eq!(fingerprint(&source), Some(before));
        std::fs::write(teams.join("new.yaml"), "team: {}\n").unwrap();
        let added = fingerprint(&source).unwrap();
        assert_ne!(added, before);
        std::fs::remove_file(teams.join("new.yaml")).unwrap();
        assert_eq!(fingerprint(&source), Some(before));
        std::fs::write(teams.join("search.yaml"), "team: {}\nusers: {alice: {}, bob: {}}\n").unwrap();
        assert_ne!(fingerprint(&source), Some(before));

        // A file that does not parse is named with its line.
        std::fs::write(teams.join("ads.yml"), "team: {}\nserver: {}\n").unwrap();
        let err = super::super::read(&source).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }));
        let msg = err.to_string();
        assert!(msg.contains("teams.d/ads.yml") && msg.contains("line 2") && msg.contains("server"), "{msg}");

        // A missing directory is an error naming it.
        std::fs::write(&main, "team_files: nowhere\n").unwrap();
        let msg = super::super::read(&source).unwrap_err().to_string();
        assert!(msg.contains("nowhere") && msg.contains("team_files"), "{msg}");
    }
}
