//! Spec → [`Route`]: checks what serde cannot (meaning, ranges, references) and collects every
//! error, each naming its YAML path, so that one config load reports all mistakes at once.
//!
//! Targets enter the shared [`TargetTable`] only when the whole route compiled: a route with
//! errors leaves the table as it was.

use std::time::Duration;

use super::breaker::{BreakerPolicy, Sla};
use super::condition::Condition;
use super::pick::fnv1a;
use super::retry::{FallbackPolicy, RetryPolicy, Timeouts};
use super::route::{
    AffinitySource, Child, ChildKind, HealthCheck, HedgeAfter, HedgePolicy, LatencyPolicy, Node, Route, Strategy,
};
use super::spec::{
    AffinitySpec, BreakerSpec, ChildSpec, FallbackSpec, HealthCheckSpec, HedgeSpec, LatencySpec, RetrySpec, RouteSpec,
    StrategySpec, TimeoutsSpec,
};
use super::table::{Price, TargetId, TargetSpec, TargetTable};

/// Compiles one model's route. `provider_exists` says whether a provider name is declared.
pub fn compile(
    model: &str,
    spec: &RouteSpec,
    table: &mut TargetTable,
    provider_exists: &dyn Fn(&str) -> bool,
) -> Result<Route, Vec<String>> {
    let path = format!("models.{model}.route");
    let mut c = Compiler {
        provider_exists,
        errors: Vec::new(),
        pending: Vec::new(),
        needs_params: false,
        uses_affinity: false,
        uses_latency: false,
    };
    let root = c.node(spec, &path, true);
    let errors = &mut c.errors;
    let retry = retry_policy(spec.retry.as_ref(), &path, errors);
    let fallback = fallback_policy(spec.fallback.as_ref(), &path, errors);
    let timeouts = timeouts(spec.timeouts.as_ref());
    let breaker = breaker_policy(spec.breaker.as_ref(), &path, errors);
    let hedge = spec.hedge.as_ref().and_then(|h| hedge_policy(h, &path, errors));
    let latency = latency_policy(spec.latency.as_ref(), &path, errors);
    let health_check = spec.health_check.as_ref().and_then(|h| health_check(h, &path, errors));
    let affinity = spec.affinity.as_ref().and_then(|a| affinity_source(a, &path, errors));
    if c.uses_affinity && affinity.is_none() && spec.affinity.is_none() {
        errors.push(format!(
            "{path}.affinity: strategy affinity needs the key's source here: {{header: <name>}} or {{user: true}}"
        ));
    }
    let groups = if root.strategy == Strategy::Fallback { root.children } else { vec![Child::group(root)] };
    for (name, jump) in [("context_window", fallback.context_window), ("content_policy", fallback.content_policy)] {
        if let Some(g) = jump.filter(|&g| g >= groups.len()) {
            errors.push(format!(
                "{path}.fallback.{name}: there is no group {g}; the route has {} fallback group(s), numbered from 0",
                groups.len()
            ));
        }
    }
    if !c.errors.is_empty() {
        return Err(c.errors);
    }
    let ids: Vec<TargetId> = c.pending.into_iter().map(|s| table.intern(s)).collect();
    let mut route = Route {
        retry,
        fallback,
        timeouts,
        breaker,
        hedge,
        latency,
        health_check,
        model: model.to_string(),
        groups,
        group_slots: Vec::new(),
        targets: Vec::new(),
        affinity,
        needs_params: c.needs_params,
        uses_affinity: c.uses_affinity,
        uses_latency: c.uses_latency,
    };
    for group in &mut route.groups {
        let mut distinct = Vec::new();
        resolve(group, &ids, &mut distinct);
        route.group_slots.push(u32::try_from(distinct.len()).unwrap_or(u32::MAX));
        for id in distinct {
            if !route.targets.contains(&id) {
                route.targets.push(id);
            }
        }
    }
    Ok(route)
}

/// A single-target route for `models.<name>.target`: no retries, breaker on, no fallback.
pub fn single(model: &str, provider: &str, upstream_model: &str, table: &mut TargetTable) -> Route {
    let id = table.intern(TargetSpec {
        provider: provider.to_string(),
        model: upstream_model.to_string(),
        params: None,
        headers: Vec::new(),
        rpm: None,
        tpm: None,
        price: None,
    });
    Route {
        retry: RetryPolicy { attempts: 0, ..RetryPolicy::default() },
        fallback: FallbackPolicy::default(),
        timeouts: Timeouts::default(),
        breaker: BreakerPolicy::default(),
        hedge: None,
        latency: LatencyPolicy::default(),
        health_check: None,
        model: model.to_string(),
        groups: vec![Child::leaf(id, 0)],
        group_slots: vec![1],
        targets: vec![id],
        affinity: None,
        needs_params: false,
        uses_affinity: false,
        uses_latency: false,
    }
}

/// Replaces provisional target ids (indexes into the pending list) by table ids, and numbers
/// the group's distinct targets (their slots in a plan's `tried` set).
fn resolve(child: &mut Child, ids: &[TargetId], distinct: &mut Vec<TargetId>) {
    match &mut child.kind {
        ChildKind::Target { id, slot } => {
            if let Some(&real) = ids.get(id.0 as usize) {
                *id = real;
            }
            let position = distinct.iter().position(|d| d == id).unwrap_or_else(|| {
                distinct.push(*id);
                distinct.len() - 1
            });
            *slot = u32::try_from(position).unwrap_or(u32::MAX);
        }
        ChildKind::Route(node) => node.children.iter_mut().for_each(|c| resolve(c, ids, distinct)),
    }
}

struct Compiler<'a> {
    provider_exists: &'a dyn Fn(&str) -> bool,
    errors: Vec<String>,
    /// Targets of this route, entered into the table only if the route compiles.
    pending: Vec<TargetSpec>,
    needs_params: bool,
    uses_affinity: bool,
    uses_latency: bool,
}

fn strategy(s: StrategySpec) -> Strategy {
    match s {
        StrategySpec::Fallback => Strategy::Fallback,
        StrategySpec::Weighted => Strategy::Weighted,
        StrategySpec::Latency => Strategy::Latency,
        StrategySpec::LeastBusy => Strategy::LeastBusy,
        StrategySpec::Usage => Strategy::Usage,
        StrategySpec::Cost => Strategy::Cost,
        StrategySpec::Conditional => Strategy::Conditional,
        StrategySpec::Affinity => Strategy::Affinity,
    }
}

impl Compiler<'_> {
    fn error(&mut self, e: String) {
        self.errors.push(e);
    }

    fn node(&mut self, spec: &RouteSpec, path: &str, top: bool) -> Node {
        if !top {
            let sections = [
                ("retry", spec.retry.is_some()),
                ("fallback", spec.fallback.is_some()),
                ("timeouts", spec.timeouts.is_some()),
                ("breaker", spec.breaker.is_some()),
                ("hedge", spec.hedge.is_some()),
                ("affinity", spec.affinity.is_some()),
                ("latency", spec.latency.is_some()),
                ("health_check", spec.health_check.is_some()),
            ];
            for (name, _) in sections.iter().filter(|(_, present)| *present) {
                self.error(format!("{path}.{name}: only allowed on the top-level route (models.<name>.route)"));
            }
        }
        let strategy = strategy(spec.strategy);
        self.uses_affinity |= strategy == Strategy::Affinity;
        self.uses_latency |= strategy == Strategy::Latency;
        if spec.targets.is_empty() {
            self.error(format!("{path}.targets: a route needs at least one target"));
        }
        // Capacity-derived weights only make sense when some sibling declares capacity.
        let capacity = spec.targets.iter().any(|c| c.rpm.is_some() || c.tpm.is_some());
        let mut children: Vec<(i32, Child)> = Vec::new();
        let mut default: Option<(usize, usize)> = None; // (index among children, index in YAML)
        for (i, child_spec) in spec.targets.iter().enumerate() {
            let child_path = format!("{path}.targets[{i}]");
            let Some(child) = self.child(child_spec, &child_path, strategy, capacity) else { continue };
            if strategy == Strategy::Conditional && child.when.is_none() {
                match default {
                    Some((_, first)) => self.error(format!(
                        "{child_path}: a second default child (one without `when`); {path}.targets[{first}] is already the default"
                    )),
                    None => default = Some((children.len(), i)),
                }
            }
            children.push((child_spec.priority.unwrap_or(0), child));
        }
        if strategy == Strategy::Fallback {
            children.sort_by_key(|(priority, _)| *priority); // stable: ties keep list order
        }
        Node { strategy, children: children.into_iter().map(|(_, c)| c).collect(), default: default.map(|d| d.0) }
    }

    fn child(&mut self, spec: &ChildSpec, path: &str, parent: Strategy, capacity: bool) -> Option<Child> {
        let before = self.errors.len();
        let when = match (&spec.when, parent) {
            (Some(w), Strategy::Conditional) => {
                let cond = Condition::compile(w, &format!("{path}.when"), &mut self.errors);
                self.needs_params |= cond.as_ref().is_some_and(Condition::reads_params);
                cond
            }
            (Some(_), other) => {
                self.error(format!(
                    "{path}.when: only children of a conditional route have `when` (this route is {})",
                    other.name()
                ));
                None
            }
            (None, _) => None,
        };
        for (name, limit) in [("rpm", spec.rpm), ("tpm", spec.tpm)] {
            if limit == Some(0) {
                self.error(format!("{path}.{name}: must be more than 0 (leave it out for no limit)"));
            }
        }
        let kind = match (&spec.target, &spec.route) {
            (Some(target), None) => self.target(target, spec, path),
            (None, Some(route)) => {
                for (name, present) in [
                    ("params", spec.params.is_some()),
                    ("headers", spec.headers.is_some()),
                    ("price", spec.price.is_some()),
                ] {
                    if present {
                        self.error(format!("{path}.{name}: only a `target` child takes {name}; set it on the targets of the nested route"));
                    }
                }
                Some(ChildKind::Route(self.node(route, &format!("{path}.route"), false)))
            }
            (Some(_), Some(_)) => {
                self.error(format!("{path}: give either `target` or `route`, not both"));
                None
            }
            (None, None) => {
                self.error(format!("{path}: give `target: provider/model` or a nested `route`"));
                None
            }
        };
        if self.errors.len() > before {
            return None;
        }
        let derived = if capacity { spec.rpm.or(spec.tpm.map(|t| t / 1000)).unwrap_or(1).max(1) } else { 1 };
        let weight = spec.weight.unwrap_or_else(|| u32::try_from(derived).unwrap_or(u32::MAX));
        // Affinity ranks a target by its name (stable when the list is reordered), a nested
        // route by its place in the config.
        let seed = fnv1a(spec.target.as_deref().unwrap_or(path).as_bytes());
        Some(Child {
            kind: kind?,
            weight,
            when,
            cost: spec.price.map_or(f64::INFINITY, |p| p.input + p.output),
            rpm: spec.rpm,
            tpm: spec.tpm,
            seed,
        })
    }

    fn target(&mut self, target: &str, spec: &ChildSpec, path: &str) -> Option<ChildKind> {
        let Some((provider, model)) = target.split_once('/').filter(|(p, m)| !p.is_empty() && !m.is_empty()) else {
            self.error(format!("{path}.target: {target:?} is not of the form provider/model"));
            return None;
        };
        if !(self.provider_exists)(provider) {
            self.error(format!("{path}.target: unknown provider {provider:?} (declare it under providers)"));
            return None;
        }
        let price = match spec.price {
            Some(p) if !(p.input.is_finite() && p.input >= 0.0 && p.output.is_finite() && p.output >= 0.0) => {
                self.error(format!("{path}.price: input and output must be numbers ≥ 0 (USD per million tokens)"));
                return None;
            }
            p => p.map(|p| Price { input: p.input, output: p.output }),
        };
        let id = TargetId(u32::try_from(self.pending.len()).unwrap_or(u32::MAX));
        self.pending.push(TargetSpec {
            provider: provider.to_string(),
            model: model.to_string(),
            params: spec.params.clone(),
            headers: spec.headers.iter().flatten().map(|(k, v)| (k.clone(), v.clone())).collect(),
            rpm: spec.rpm,
            tpm: spec.tpm,
            price,
        });
        Some(ChildKind::Target { id, slot: 0 })
    }
}

fn check_statuses(codes: &[u16], path: &str, errors: &mut Vec<String>) {
    for (i, code) in codes.iter().enumerate() {
        if !(100..=599).contains(code) {
            errors.push(format!("{path}[{i}]: {code} is not an HTTP status"));
        }
    }
}

fn retry_policy(spec: Option<&RetrySpec>, path: &str, errors: &mut Vec<String>) -> RetryPolicy {
    let d = RetryPolicy::default();
    let Some(s) = spec else { return d };
    let p = RetryPolicy {
        attempts: s.attempts.unwrap_or(d.attempts),
        backoff: s.backoff.map_or(d.backoff, |v| v.0),
        max_backoff: s.max_backoff.map_or(d.max_backoff, |v| v.0),
        budget: s.budget.map_or(d.budget, |v| v.0),
        on_status: s.on_status.clone().unwrap_or(d.on_status),
        on_connection_error: s.on_connection_error.unwrap_or(d.on_connection_error),
    };
    if p.backoff > p.max_backoff {
        errors.push(format!("{path}.retry.backoff: {:?} is longer than max_backoff ({:?})", p.backoff, p.max_backoff));
    }
    check_statuses(&p.on_status, &format!("{path}.retry.on_status"), errors);
    p
}

fn fallback_policy(spec: Option<&FallbackSpec>, path: &str, errors: &mut Vec<String>) -> FallbackPolicy {
    let d = FallbackPolicy::default();
    let Some(s) = spec else { return d };
    let p = FallbackPolicy {
        on_status: s.on_status.clone().unwrap_or(d.on_status),
        context_window: s.context_window,
        content_policy: s.content_policy,
    };
    check_statuses(&p.on_status, &format!("{path}.fallback.on_status"), errors);
    p
}

fn timeouts(spec: Option<&TimeoutsSpec>) -> Timeouts {
    let Some(s) = spec else { return Timeouts::default() };
    Timeouts {
        connect: s.connect.map(|d| d.0),
        attempt: s.attempt.map(|d| d.0),
        first_token: s.first_token.map(|d| d.0),
        idle: s.idle.map(|d| d.0),
        total: s.total.map(|d| d.0),
    }
}

fn breaker_policy(spec: Option<&BreakerSpec>, path: &str, errors: &mut Vec<String>) -> BreakerPolicy {
    let d = BreakerPolicy::default();
    let Some(s) = spec else { return d };
    let sla = s
        .sla
        .as_ref()
        .map_or(d.sla, |sla| Sla { first_token: sla.first_token.map(|v| v.0), per_token: sla.per_token.map(|v| v.0) });
    let p = BreakerPolicy {
        failure_rate: s.failure_rate.unwrap_or(d.failure_rate),
        min_requests: s.min_requests.unwrap_or(d.min_requests),
        window: s.window.map_or(d.window, |v| v.0),
        cooldown: s.cooldown.map_or(d.cooldown, |v| v.0),
        max_cooldown: s.max_cooldown.map_or(d.max_cooldown, |v| v.0),
        probes: s.probes.unwrap_or(d.probes),
        on_auth_error: s.on_auth_error.unwrap_or(d.on_auth_error),
        sla,
        cool_last: s.cool_last.unwrap_or(d.cool_last),
    };
    let at = |field: &str| format!("{path}.breaker.{field}");
    if !(p.failure_rate > 0.0 && p.failure_rate <= 1.0) {
        errors.push(format!("{}: must be more than 0 and at most 1, got {}", at("failure_rate"), p.failure_rate));
    }
    if p.min_requests == 0 {
        errors.push(format!("{}: must be at least 1", at("min_requests")));
    }
    if p.window < Duration::from_millis(10) {
        errors.push(format!("{}: must be at least 10ms", at("window")));
    }
    if p.max_cooldown < p.cooldown {
        errors.push(format!(
            "{}: {:?} is shorter than cooldown ({:?})",
            at("max_cooldown"),
            p.max_cooldown,
            p.cooldown
        ));
    }
    if p.probes == 0 {
        errors.push(format!("{}: must be at least 1", at("probes")));
    }
    p
}

fn health_check(spec: &HealthCheckSpec, path: &str, errors: &mut Vec<String>) -> Option<HealthCheck> {
    let interval = spec.interval.map_or(Duration::from_secs(10), |d| d.0);
    let timeout = spec.timeout.map_or(Duration::from_secs(2), |d| d.0);
    let probe_path = spec.path.clone().unwrap_or_else(|| "/models".to_string());
    let mut ok = true;
    if interval < Duration::from_millis(100) {
        errors.push(format!("{path}.health_check.interval: at least 100ms"));
        ok = false;
    }
    if timeout.is_zero() || timeout > interval {
        errors.push(format!("{path}.health_check.timeout: more than zero, and at most the interval"));
        ok = false;
    }
    if !probe_path.starts_with('/') || probe_path.contains(char::is_whitespace) {
        errors.push(format!("{path}.health_check.path: {probe_path:?} must start with / and hold no spaces"));
        ok = false;
    }
    ok.then_some(HealthCheck { interval, timeout, path: probe_path })
}

fn hedge_policy(spec: &HedgeSpec, path: &str, errors: &mut Vec<String>) -> Option<HedgePolicy> {
    let text = spec.after.trim();
    let percentile = text.strip_prefix('p').and_then(|n| n.parse::<f64>().ok()).filter(|n| *n > 0.0 && *n < 100.0);
    let after = match percentile {
        Some(p) => HedgeAfter::Percentile(p),
        None => match humantime::parse_duration(text) {
            Ok(d) => HedgeAfter::Fixed(d),
            Err(_) => {
                errors.push(format!(
                    "{path}.hedge.after: {text:?} is neither a percentile (p50 … p99.9) nor a duration (300ms)"
                ));
                return None;
            }
        },
    };
    Some(HedgePolicy { after })
}

fn latency_policy(spec: Option<&LatencySpec>, path: &str, errors: &mut Vec<String>) -> LatencyPolicy {
    let d = LatencyPolicy::default();
    let Some(s) = spec else { return d };
    let p = LatencyPolicy {
        equal_within: s.equal_within.unwrap_or(d.equal_within),
        min_samples: s.min_samples.unwrap_or(d.min_samples),
    };
    if !(p.equal_within.is_finite() && p.equal_within >= 1.0) {
        errors.push(format!("{path}.latency.equal_within: must be a factor ≥ 1 (e.g. 1.2), got {}", p.equal_within));
    }
    p
}

fn affinity_source(spec: &AffinitySpec, path: &str, errors: &mut Vec<String>) -> Option<AffinitySource> {
    match (&spec.header, spec.user.unwrap_or(false)) {
        (Some(h), false) if !h.trim().is_empty() => Some(AffinitySource::Header(h.trim().to_ascii_lowercase())),
        (None, true) => Some(AffinitySource::User),
        (Some(_), true) => {
            errors.push(format!("{path}.affinity: give either `header` or `user: true`, not both"));
            None
        }
        _ => {
            errors.push(format!("{path}.affinity: give `header: <name>` or `user: true`"));
            None
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::router::testkit::{compile_errors, compile_yaml};

    #[test]
    fn compiles_the_documented_example() {
        let (route, table) = compile_yaml(
            r#"
strategy: fallback
targets:
  - route:
      strategy: weighted
      targets:
        - {target: openai-main/gpt-4o, weight: 3}
        - {target: azure-eu/gpt-4o, weight: 1, rpm: 600, tpm: 100000}
  - {target: anthropic/claude-sonnet-4-5, priority: 2,
     params: {max_tokens: 4096}, headers: {x-team: search}}
retry: {attempts: 2, backoff: 100ms, max_backoff: 2s, budget: 10s,
        on_status: [429, 500, 502, 503, 504, 529], on_connection_error: true}
fallback: {on_status: [429, 500, 502, 503, 504, 529], context_window: 1, content_policy: 1}
timeouts: {connect: 2s, attempt: 60s, first_token: 10s, idle: 30s, total: 120s}
breaker: {failure_rate: 0.5, min_requests: 5, window: 30s, cooldown: 30s, max_cooldown: 5m,
          probes: 1, on_auth_error: true, sla: {first_token: 2s, per_token: 200ms},
          cool_last: false}
hedge: {after: p95}
affinity: {header: X-Session-Id}
latency: {equal_within: 1.2, min_samples: 5}
"#,
        );
        assert_eq!(route.groups(), 2);
        assert_eq!(route.targets().len(), 3);
        assert_eq!(route.group_targets(0).len(), 2);
        assert_eq!(route.fallback.context_window, Some(1));
        assert_eq!(route.timeouts.total, Some(Duration::from_secs(120)));
        assert_eq!(route.breaker.max_cooldown, Duration::from_secs(300));
        assert_eq!(route.breaker.sla.per_token, Some(Duration::from_millis(200)));
        assert_eq!(route.hedge, Some(HedgePolicy { after: HedgeAfter::Percentile(95.0) }));
        assert_eq!(route.affinity(), Some(&AffinitySource::Header("x-session-id".into())));
        assert!(!route.needs_params());
        let claude = table.get(route.group_targets(1)[0]).unwrap();
        assert_eq!(claude.model, "claude-sonnet-4-5");
        assert_eq!(claude.params.as_ref().unwrap()["max_tokens"], 4096);
        assert_eq!(claude.headers, vec![("x-team".to_string(), "search".to_string())]);
        let azure = table.get(route.group_targets(0)[1]).unwrap();
        assert_eq!((azure.rpm, azure.tpm), (Some(600), Some(100_000)));
    }

    #[test]
    fn routes_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Route>();
        shared::<TargetTable>();
    }

    #[test]
    fn defaults_when_sections_are_absent() {
        let (route, _) = compile_yaml("targets: [{target: a/m}]");
        assert_eq!(route.retry, RetryPolicy::default());
        assert_eq!(route.fallback, FallbackPolicy::default());
        assert_eq!(route.breaker, BreakerPolicy::default());
        assert_eq!(route.timeouts, Timeouts::default());
        assert_eq!(route.latency, LatencyPolicy { equal_within: 1.2, min_samples: 5 });
        assert_eq!(route.hedge, None);
        assert_eq!(route.groups(), 1);
        let (route, _) =
            compile_yaml("strategy: priority\ntargets: [{target: a/m}, {target: b/m}]\nhedge: {after: 300ms}");
        assert_eq!(route.groups(), 2);
        assert_eq!(route.hedge, Some(HedgePolicy { after: HedgeAfter::Fixed(Duration::from_millis(300)) }));
    }

    #[test]
    fn priorities_order_fallback_groups_stably() {
        let (route, table) = compile_yaml(
            "targets: [{target: a/m1, priority: 2}, {target: a/m2}, {target: a/m3, priority: -1}, {target: a/m4}]",
        );
        let order: Vec<_> = (0..4).map(|g| table.get(route.group_targets(g)[0]).unwrap().model.clone()).collect();
        assert_eq!(order, ["m3", "m2", "m4", "m1"]);
    }

    #[test]
    fn shared_targets_share_ids_across_routes() {
        let mut table = TargetTable::default();
        let spec: RouteSpec = serde_saphyr::from_str("targets: [{target: a/m}, {target: b/m}]").unwrap();
        let r1 = compile("one", &spec, &mut table, &|_| true).unwrap();
        let spec: RouteSpec =
            serde_saphyr::from_str("strategy: weighted\ntargets: [{target: b/m}, {target: c/m}]").unwrap();
        let r2 = compile("two", &spec, &mut table, &|_| true).unwrap();
        assert_eq!(table.len(), 3);
        assert_eq!(r1.targets()[1], r2.targets()[0]);
        let s = single("three", "a", "m", &mut table);
        assert_eq!(s.targets(), &[r1.targets()[0]]);
        assert_eq!((s.retry.attempts, s.groups()), (0, 1));
    }

    #[test]
    fn errors_leave_the_table_untouched() {
        let mut table = TargetTable::default();
        let spec: RouteSpec = serde_saphyr::from_str("targets: [{target: a/m}, {target: nope/m}]").unwrap();
        assert!(compile("x", &spec, &mut table, &|p| p == "a").is_err());
        assert!(table.is_empty());
    }

    fn has(errors: &[String], expected: &str) {
        assert!(errors.iter().any(|e| e.starts_with(expected)), "no error starting with {expected:?} in {errors:#?}");
    }

    #[test]
    fn unknown_provider_and_malformed_target() {
        let e = compile_errors("targets: [{target: openai/gpt-4o}, {target: nope/x}, {target: justmodel}]");
        has(&e, "models.m.route.targets[1].target: unknown provider \"nope\"");
        has(&e, "models.m.route.targets[2].target: \"justmodel\" is not of the form provider/model");
        assert_eq!(e.len(), 2);
    }

    #[test]
    fn target_xor_route() {
        let e = compile_errors("targets: [{target: a/m, route: {targets: [{target: a/n}]}}, {weight: 2}]");
        has(&e, "models.m.route.targets[0]: give either `target` or `route`, not both");
        has(&e, "models.m.route.targets[1]: give `target: provider/model` or a nested `route`");
    }

    #[test]
    fn two_defaults_in_conditional() {
        let e = compile_errors(
            "strategy: conditional\ntargets: [{target: a/m, when: {team: x}}, {target: a/n}, {target: a/o}]",
        );
        has(
            &e,
            "models.m.route.targets[2]: a second default child (one without `when`); models.m.route.targets[1] is already the default",
        );
    }

    #[test]
    fn health_checks_have_defaults_and_bounds() {
        let (route, _) = compile_yaml("targets: [{target: a/m}]\nhealth_check: {}");
        assert_eq!(
            route.health_check,
            Some(HealthCheck {
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(2),
                path: "/models".into()
            })
        );
        let e = compile_errors("targets: [{target: a/m}]\nhealth_check: {interval: 10ms, timeout: 0s, path: models}");
        has(&e, "models.m.route.health_check.interval: at least 100ms");
        has(&e, "models.m.route.health_check.timeout: more than zero");
        has(&e, "models.m.route.health_check.path: \"models\" must start with /");
        let e = compile_errors("targets:\n  - route: {targets: [{target: a/m}], health_check: {}}");
        has(&e, "models.m.route.targets[0].route.health_check: only allowed on the top-level route");
    }

    #[test]
    fn bad_regex_names_the_full_path() {
        let e = compile_errors(
            "targets:\n  - route:\n      strategy: conditional\n      targets: [{target: a/m, when: {user: {$regex: '(x'}}}]",
        );
        has(&e, "models.m.route.targets[0].route.targets[0].when.user.$regex: invalid regular expression");
    }

    #[test]
    fn policy_sections_on_nested_routes() {
        let e = compile_errors(
            "targets:\n  - route: {targets: [{target: a/m}], retry: {attempts: 1}, breaker: {probes: 2}, latency: {min_samples: 1}}",
        );
        for name in ["retry", "breaker", "latency"] {
            has(&e, &format!("models.m.route.targets[0].route.{name}: only allowed on the top-level route"));
        }
        assert_eq!(e.len(), 3);
    }

    #[test]
    fn unknown_fields_are_rejected_by_the_parser() {
        for (yaml, field) in [
            ("targets: [{target: a/m}]\nretires: {attempts: 1}", "retires"),
            ("targets: [{target: a/m, wieght: 2}]", "wieght"),
            ("targets: [{target: a/m}]\nbreaker: {cooldwn: 1s}", "cooldwn"),
            ("strategy: round-robin\ntargets: [{target: a/m}]", "round-robin"),
        ] {
            let err = serde_saphyr::from_str::<RouteSpec>(yaml).unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
    }

    #[test]
    fn value_checks() {
        let e = compile_errors(
            r#"
strategy: affinity
targets: [{target: a/m, rpm: 0, when: {team: x}, price: {input: -1, output: 1}}, {route: {targets: []}, params: {a: 1}}]
retry: {backoff: 5s, max_backoff: 1s, on_status: [42]}
fallback: {context_window: 2, on_status: [700]}
breaker: {failure_rate: 1.5, min_requests: 0, window: 1ms, cooldown: 1m, max_cooldown: 30s, probes: 0}
hedge: {after: soon}
latency: {equal_within: 0.5}
"#,
        );
        for expected in [
            "models.m.route.targets[0].when: only children of a conditional route",
            "models.m.route.targets[0].rpm: must be more than 0",
            "models.m.route.targets[0].price: input and output must be numbers ≥ 0",
            "models.m.route.targets[1].params: only a `target` child takes params",
            "models.m.route.targets[1].route.targets: a route needs at least one target",
            "models.m.route.retry.backoff: 5s is longer than max_backoff (1s)",
            "models.m.route.retry.on_status[0]: 42 is not an HTTP status",
            "models.m.route.fallback.on_status[0]: 700 is not an HTTP status",
            "models.m.route.fallback.context_window: there is no group 2",
            "models.m.route.breaker.failure_rate: must be more than 0 and at most 1",
            "models.m.route.breaker.min_requests: must be at least 1",
            "models.m.route.breaker.window: must be at least 10ms",
            "models.m.route.breaker.max_cooldown: 30s is shorter than cooldown (60s)",
            "models.m.route.breaker.probes: must be at least 1",
            "models.m.route.hedge.after: \"soon\" is neither a percentile",
            "models.m.route.latency.equal_within: must be a factor ≥ 1",
            "models.m.route.affinity: strategy affinity needs the key's source",
        ] {
            has(&e, expected);
        }
        let e = compile_errors("targets: [{target: a/m}]\naffinity: {header: x, user: true}");
        has(&e, "models.m.route.affinity: give either `header` or `user: true`, not both");
        let e = compile_errors("targets: [{target: a/m}]\naffinity: {user: false}");
        has(&e, "models.m.route.affinity: give `header: <name>` or `user: true`");
        let e = compile_errors("targets: []");
        has(&e, "models.m.route.targets: a route needs at least one target");
    }

    #[test]
    fn needs_params_when_a_condition_reads_the_body() {
        let (route, _) = compile_yaml(
            "strategy: conditional\ntargets: [{target: a/m, when: {params.max_tokens: {$gt: 1000}}}, {target: a/n}]",
        );
        assert!(route.needs_params());
    }

    #[test]
    fn capacity_derived_weights() {
        let (route, _) = compile_yaml(
            "strategy: weighted\ntargets: [{target: a/m, rpm: 600}, {target: a/n, tpm: 300000}, {target: a/o}, {target: a/p, weight: 7, rpm: 5}]",
        );
        let ChildKind::Route(node) = &route.groups[0].kind else { panic!() };
        let weights: Vec<u32> = node.children.iter().map(|c| c.weight).collect();
        assert_eq!(weights, [600, 300, 1, 7]);
        let (route, _) = compile_yaml("strategy: weighted\ntargets: [{target: a/m}, {target: a/n, weight: 3}]");
        let ChildKind::Route(node) = &route.groups[0].kind else { panic!() };
        assert_eq!(node.children.iter().map(|c| c.weight).collect::<Vec<_>>(), [1, 3]);
    }
}
