//! The `when:` conditions of `conditional` routes.
//!
//! A condition is compiled once at config load (field names parsed, regexes built, operands
//! classified as numbers or strings) so that evaluating it per request is a few comparisons.
//! The router never sees the request itself: it asks [`RequestFacts`] for one field at a time,
//! which lets the engine skip parsing the body unless some condition reads `params.*`.

use std::borrow::Cow;
use std::cmp::Ordering;

use regex::Regex;
use serde_json::{Map, Value};

/// A request field a condition can test.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    /// `metadata.<key>`
    Metadata(String),
    /// `headers.<name>`, the name lower-cased (header names are case-insensitive).
    Header(String),
    /// `params.<dotted.path>` into the request body; a number segment indexes an array
    /// (see [`lookup_param`]).
    Param(Vec<String>),
    User,
    Team,
    Application,
    Environment,
    Model,
}

/// The value of a field: text (headers, metadata, identity) or a JSON value from the body.
#[derive(Debug, Clone, Copy)]
pub enum FieldValue<'a> {
    Str(&'a str),
    Json(&'a Value),
}

/// What the router may know about a request (the engine implements it).
pub trait RequestFacts {
    fn field(&self, f: &Field) -> Option<FieldValue<'_>>;
    /// The key of `affinity` routes, per the route's [`crate::router::AffinitySource`].
    fn affinity_key(&self) -> Option<&str>;
    /// `max_tokens` of the request, or 256: the latency strategy's estimate of output length.
    fn expected_output_tokens(&self) -> u32;
}

/// Follows a `params.` path into a request body: object keys by name, array items by index.
pub fn lookup_param<'a>(body: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(body, |v, seg| match v {
        Value::Object(m) => m.get(seg),
        Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// A compiled `when:` condition.
#[derive(Debug, Clone)]
pub struct Condition(Cond);

#[derive(Debug, Clone)]
enum Cond {
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Test(Field, Op),
}

#[derive(Debug, Clone)]
enum Op {
    Eq(Operand),
    Ne(Operand),
    Gt(Operand),
    Gte(Operand),
    Lt(Operand),
    Lte(Operand),
    In(Vec<Operand>),
    Nin(Vec<Operand>),
    Regex(Regex),
}

/// A literal from the config, classified once: a string that reads as a number is a number.
#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Num(f64),
    Str(String),
    Bool(bool),
    Null,
    Other(Value),
}

/// A field value classified the same way as an [`Operand`], without copying it.
enum Scalar<'a> {
    Num(f64),
    Str(&'a str),
    Bool(bool),
    Null,
    Other(&'a Value),
}

const OPERATORS: &str = "$eq, $ne, $gt, $gte, $lt, $lte, $in, $nin, $regex";
const FIELDS: &str = "metadata.<key>, headers.<name>, params.<path>, user, team, application, environment or model";

impl Condition {
    /// Compiles a `when:` object; errors are pushed (naming `path` and below) and give `None`.
    pub fn compile(when: &Map<String, Value>, path: &str, errors: &mut Vec<String>) -> Option<Condition> {
        compile_map(when, path, errors).map(Condition)
    }

    pub fn holds(&self, req: &dyn RequestFacts) -> bool {
        self.0.holds(req)
    }

    /// Whether evaluating this condition needs the request body.
    pub fn reads_params(&self) -> bool {
        self.0.reads_params()
    }
}

impl Cond {
    fn holds(&self, req: &dyn RequestFacts) -> bool {
        match self {
            Cond::All(parts) => parts.iter().all(|c| c.holds(req)),
            Cond::Any(parts) => parts.iter().any(|c| c.holds(req)),
            Cond::Test(field, op) => op.holds(req.field(field)),
        }
    }

    fn reads_params(&self) -> bool {
        match self {
            Cond::All(parts) | Cond::Any(parts) => parts.iter().any(Cond::reads_params),
            Cond::Test(field, _) => matches!(field, Field::Param(_)),
        }
    }
}

impl Op {
    fn holds(&self, value: Option<FieldValue<'_>>) -> bool {
        // A missing field is "not equal to" and "not in" anything, and nothing else.
        let Some(value) = value else { return matches!(self, Op::Ne(_) | Op::Nin(_)) };
        let s = scalar(value);
        match self {
            Op::Eq(o) => equal(&s, o),
            Op::Ne(o) => !equal(&s, o),
            Op::Gt(o) => compare(&s, o) == Some(Ordering::Greater),
            Op::Gte(o) => matches!(compare(&s, o), Some(Ordering::Greater | Ordering::Equal)),
            Op::Lt(o) => compare(&s, o) == Some(Ordering::Less),
            Op::Lte(o) => matches!(compare(&s, o), Some(Ordering::Less | Ordering::Equal)),
            Op::In(list) => list.iter().any(|o| equal(&s, o)),
            Op::Nin(list) => !list.iter().any(|o| equal(&s, o)),
            Op::Regex(re) => text(value).is_some_and(|t| re.is_match(&t)),
        }
    }
}

fn number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

fn scalar(v: FieldValue<'_>) -> Scalar<'_> {
    match v {
        FieldValue::Str(s) => number(s).map_or(Scalar::Str(s), Scalar::Num),
        FieldValue::Json(Value::String(s)) => number(s).map_or(Scalar::Str(s), Scalar::Num),
        FieldValue::Json(v @ Value::Number(n)) => n.as_f64().map_or(Scalar::Other(v), Scalar::Num),
        FieldValue::Json(Value::Bool(b)) => Scalar::Bool(*b),
        FieldValue::Json(Value::Null) => Scalar::Null,
        FieldValue::Json(other) => Scalar::Other(other),
    }
}

/// The text a regex is matched against; numbers and booleans as written in JSON.
fn text(v: FieldValue<'_>) -> Option<Cow<'_, str>> {
    match v {
        FieldValue::Str(s) => Some(Cow::Borrowed(s)),
        FieldValue::Json(Value::String(s)) => Some(Cow::Borrowed(s)),
        FieldValue::Json(v @ (Value::Number(_) | Value::Bool(_))) => Some(Cow::Owned(v.to_string())),
        FieldValue::Json(_) => None,
    }
}

fn equal(s: &Scalar<'_>, o: &Operand) -> bool {
    match (s, o) {
        (Scalar::Num(a), Operand::Num(b)) => a == b,
        (Scalar::Str(a), Operand::Str(b)) => *a == b.as_str(),
        (Scalar::Bool(a), Operand::Bool(b)) => a == b,
        (Scalar::Null, Operand::Null) => true,
        (Scalar::Other(a), Operand::Other(b)) => *a == b,
        _ => false,
    }
}

/// Numbers numerically, strings lexically; anything else does not compare.
fn compare(s: &Scalar<'_>, o: &Operand) -> Option<Ordering> {
    match (s, o) {
        (Scalar::Num(a), Operand::Num(b)) => a.partial_cmp(b),
        (Scalar::Str(a), Operand::Str(b)) => Some((*a).cmp(b.as_str())),
        _ => None,
    }
}

fn operand(v: &Value) -> Operand {
    match v {
        Value::String(s) => number(s).map_or_else(|| Operand::Str(s.clone()), Operand::Num),
        Value::Number(n) => n.as_f64().map_or_else(|| Operand::Other(v.clone()), Operand::Num),
        Value::Bool(b) => Operand::Bool(*b),
        Value::Null => Operand::Null,
        other => Operand::Other(other.clone()),
    }
}

fn parse_field(name: &str) -> Result<Field, String> {
    let field = match name {
        "user" => Field::User,
        "team" => Field::Team,
        "application" => Field::Application,
        "environment" => Field::Environment,
        "model" => Field::Model,
        _ => {
            if let Some(key) = name.strip_prefix("metadata.") {
                Field::Metadata(key.to_string())
            } else if let Some(header) = name.strip_prefix("headers.") {
                Field::Header(header.to_ascii_lowercase())
            } else if let Some(path) = name.strip_prefix("params.") {
                Field::Param(path.split('.').map(str::to_string).collect())
            } else {
                return Err(format!("unknown field; use {FIELDS}"));
            }
        }
    };
    let empty = match &field {
        Field::Metadata(k) | Field::Header(k) => k.is_empty(),
        Field::Param(segments) => segments.iter().any(String::is_empty),
        _ => false,
    };
    if empty {
        return Err("the field name is incomplete (an empty key or path segment)".to_string());
    }
    Ok(field)
}

fn compile_map(map: &Map<String, Value>, path: &str, errors: &mut Vec<String>) -> Option<Cond> {
    let before = errors.len();
    let mut parts = Vec::new();
    for (key, value) in map {
        let here = format!("{path}.{key}");
        match key.as_str() {
            "$and" | "$or" => {
                let Some(items) = value.as_array().filter(|items| !items.is_empty()) else {
                    errors.push(format!("{here}: expected a non-empty list of conditions"));
                    continue;
                };
                let mut subs = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item.as_object() {
                        Some(obj) => subs.extend(compile_map(obj, &format!("{here}[{i}]"), errors)),
                        None => errors.push(format!("{here}[{i}]: expected a condition (an object of fields)")),
                    }
                }
                parts.push(if key == "$and" { Cond::All(subs) } else { Cond::Any(subs) });
            }
            k if k.starts_with('$') => errors
                .push(format!("{here}: only $and and $or may stand in place of a field; {k} belongs under a field")),
            _ => match parse_field(key) {
                Ok(field) => {
                    for op in compile_ops(value, &here, errors) {
                        parts.push(Cond::Test(field.clone(), op));
                    }
                }
                Err(e) => errors.push(format!("{here}: {e}")),
            },
        }
    }
    if errors.len() > before {
        return None;
    }
    Some(if parts.len() == 1 { parts.remove(0) } else { Cond::All(parts) })
}

/// The tests on one field: a plain value means `$eq`, an object lists operators (all must hold).
fn compile_ops(value: &Value, path: &str, errors: &mut Vec<String>) -> Vec<Op> {
    let Some(ops) = value.as_object() else { return vec![Op::Eq(operand(value))] };
    let operators = ops.keys().filter(|k| k.starts_with('$')).count();
    if ops.is_empty() || operators != ops.len() {
        errors.push(format!(
            "{path}: expected a value or an object of operators ({OPERATORS}); \
             to test a nested key write it as one dotted field, e.g. metadata.tier: gold"
        ));
        return Vec::new();
    }
    let mut out = Vec::new();
    for (op, arg) in ops {
        let here = format!("{path}.{op}");
        let compiled = match op.as_str() {
            "$eq" => Ok(Op::Eq(operand(arg))),
            "$ne" => Ok(Op::Ne(operand(arg))),
            "$gt" | "$gte" | "$lt" | "$lte" => ordered(arg).map(|o| match op.as_str() {
                "$gt" => Op::Gt(o),
                "$gte" => Op::Gte(o),
                "$lt" => Op::Lt(o),
                _ => Op::Lte(o),
            }),
            "$in" | "$nin" => match arg.as_array() {
                Some(items) => {
                    let list = items.iter().map(operand).collect();
                    Ok(if op == "$in" { Op::In(list) } else { Op::Nin(list) })
                }
                None => Err("expected a list of values".to_string()),
            },
            "$regex" => match arg.as_str() {
                Some(pattern) => {
                    Regex::new(pattern).map(Op::Regex).map_err(|e| format!("invalid regular expression: {e}"))
                }
                None => Err("expected a regular expression (a string)".to_string()),
            },
            _ => Err(format!("unknown operator; use one of {OPERATORS}")),
        };
        match compiled {
            Ok(o) => out.push(o),
            Err(e) => errors.push(format!("{here}: {e}")),
        }
    }
    out
}

fn ordered(arg: &Value) -> Result<Operand, String> {
    match operand(arg) {
        o @ (Operand::Num(_) | Operand::Str(_)) => Ok(o),
        _ => Err("expected a number or a string to compare with".to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::router::testkit::Facts;
    use serde_json::json;

    fn cond(yaml: &str) -> Condition {
        let map: Map<String, Value> = serde_saphyr::from_str(yaml).unwrap();
        let mut errors = Vec::new();
        let c = Condition::compile(&map, "when", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        c.unwrap()
    }

    fn errors(yaml: &str) -> Vec<String> {
        let map: Map<String, Value> = serde_saphyr::from_str(yaml).unwrap();
        let mut errors = Vec::new();
        assert!(Condition::compile(&map, "when", &mut errors).is_none());
        errors
    }

    fn facts() -> Facts {
        Facts::default()
            .with(Field::Metadata("tier".into()), FieldValue::Str("gold"))
            .with(Field::Metadata("score".into()), FieldValue::Str("42"))
            .with(Field::Header("x-team".into()), FieldValue::Str("search"))
            .with(Field::User, FieldValue::Str("alice@example.com"))
            .body(json!({"max_tokens": 1000, "stream": true, "messages": [{"role": "system"}], "temperature": 0.5}))
    }

    #[test]
    fn plain_value_is_eq_and_numbers_compare_numerically() {
        let f = facts();
        assert!(cond("metadata.tier: gold").holds(&f));
        assert!(!cond("metadata.tier: silver").holds(&f));
        assert!(cond("metadata.score: 42").holds(&f));
        assert!(cond("metadata.score: '42.0'").holds(&f));
        assert!(cond("params.max_tokens: 1000").holds(&f));
        assert!(cond("params.stream: true").holds(&f));
        assert!(!cond("params.stream: 'true'").holds(&f));
    }

    #[test]
    fn every_operator() {
        let f = facts();
        assert!(cond("metadata.tier: {$eq: gold}").holds(&f));
        assert!(cond("metadata.tier: {$ne: silver}").holds(&f));
        assert!(!cond("metadata.tier: {$ne: gold}").holds(&f));
        assert!(cond("params.max_tokens: {$gt: 999}").holds(&f));
        assert!(!cond("params.max_tokens: {$gt: 1000}").holds(&f));
        assert!(cond("params.max_tokens: {$gte: 1000}").holds(&f));
        assert!(cond("params.max_tokens: {$lt: 1001}").holds(&f));
        assert!(!cond("params.max_tokens: {$lt: 1000}").holds(&f));
        assert!(cond("params.max_tokens: {$lte: 1000}").holds(&f));
        // Numerically, not as text: "42" > 9 although "42" < "9".
        assert!(cond("metadata.score: {$gt: 9}").holds(&f));
        // Strings lexically; a string never compares with a number.
        assert!(cond("metadata.tier: {$gt: alpha}").holds(&f));
        assert!(!cond("metadata.tier: {$gt: 5}").holds(&f));
        assert!(cond("metadata.tier: {$in: [silver, gold]}").holds(&f));
        assert!(!cond("metadata.tier: {$in: [silver]}").holds(&f));
        assert!(cond("metadata.tier: {$nin: [silver]}").holds(&f));
        assert!(!cond("metadata.tier: {$nin: [gold]}").holds(&f));
        assert!(cond("metadata.score: {$in: [1, 42]}").holds(&f));
        assert!(cond("user: {$regex: '@example\\.com$'}").holds(&f));
        assert!(!cond("user: {$regex: '^bob'}").holds(&f));
        assert!(cond("params.max_tokens: {$regex: '^1\\d+'}").holds(&f));
        // Several operators on one field: all must hold.
        assert!(cond("params.max_tokens: {$gt: 10, $lt: 2000}").holds(&f));
        assert!(!cond("params.max_tokens: {$gt: 10, $lt: 20}").holds(&f));
    }

    #[test]
    fn and_or_and_several_keys() {
        let f = facts();
        assert!(cond("{metadata.tier: gold, headers.X-Team: search}").holds(&f));
        assert!(!cond("{metadata.tier: gold, headers.x-team: ads}").holds(&f));
        assert!(cond("$or: [{metadata.tier: silver}, {params.messages.0.role: system}]").holds(&f));
        assert!(!cond("$or: [{metadata.tier: silver}, {team: core}]").holds(&f));
        assert!(cond("$and: [{metadata.tier: gold}, {$or: [{team: core}, {params.temperature: {$lt: 1}}]}]").holds(&f));
        assert!(!cond("$and: [{metadata.tier: gold}, {team: core}]").holds(&f));
    }

    #[test]
    fn missing_fields_hold_only_for_ne_and_nin() {
        let f = facts();
        assert!(cond("team: {$ne: core}").holds(&f));
        assert!(cond("team: {$nin: [core]}").holds(&f));
        for yaml in [
            "team: core",
            "team: {$eq: core}",
            "team: {$gt: 1}",
            "team: {$gte: a}",
            "team: {$lt: 1}",
            "team: {$lte: z}",
            "team: {$in: [core]}",
            "team: {$regex: '.*'}",
            "params.messages.5.role: system",
            "params.stream.deeper: 1",
        ] {
            assert!(!cond(yaml).holds(&f), "{yaml}");
        }
    }

    #[test]
    fn reads_params_only_when_a_params_field_is_used() {
        assert!(cond("$or: [{team: a}, {params.model: b}]").reads_params());
        assert!(!cond("{team: a, metadata.x: 1}").reads_params());
    }

    #[test]
    fn compile_errors_name_the_path() {
        let e = errors("user: {$regex: '(unclosed'}");
        assert!(e[0].starts_with("when.user.$regex: invalid regular expression"), "{e:?}");
        let e = errors("colour: red");
        assert!(e[0].starts_with("when.colour: unknown field"), "{e:?}");
        let e = errors("team: {$like: a}");
        assert!(e[0].starts_with("when.team.$like: unknown operator"), "{e:?}");
        let e = errors("team: {$in: a}");
        assert!(e[0].starts_with("when.team.$in: expected a list"), "{e:?}");
        let e = errors("team: {$gt: true}");
        assert!(e[0].starts_with("when.team.$gt: expected a number or a string"), "{e:?}");
        let e = errors("team: {name: core}");
        assert!(e[0].starts_with("when.team: expected a value or an object of operators"), "{e:?}");
        let e = errors("$or: [{team: a}, {team: {$regex: '['}}]");
        assert!(e[0].starts_with("when.$or[1].team.$regex: invalid regular expression"), "{e:?}");
        let e = errors("$or: []");
        assert!(e[0].starts_with("when.$or: expected a non-empty list"), "{e:?}");
        let e = errors("$eq: 1");
        assert!(e[0].starts_with("when.$eq: only $and and $or"), "{e:?}");
        let e = errors("params.a..b: 1");
        assert!(e[0].starts_with("when.params.a..b: the field name is incomplete"), "{e:?}");
    }

    #[test]
    fn lookup_param_walks_objects_and_arrays() {
        let body = json!({"a": {"b": [10, {"c": "x"}]}});
        let path = |p: &str| p.split('.').map(str::to_string).collect::<Vec<_>>();
        assert_eq!(lookup_param(&body, &path("a.b.0")), Some(&json!(10)));
        assert_eq!(lookup_param(&body, &path("a.b.1.c")), Some(&json!("x")));
        assert_eq!(lookup_param(&body, &path("a.b.2")), None);
        assert_eq!(lookup_param(&body, &path("a.b.x")), None);
        assert_eq!(lookup_param(&body, &path("a.z")), None);
    }
}
