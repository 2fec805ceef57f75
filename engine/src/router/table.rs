//! The process-wide table of route targets.
//!
//! A target is identified by what makes requests to it behave the same: provider, upstream
//! model, parameter overrides and extra headers. Two routes naming the same target share one
//! [`TargetId`], so its health (breaker, latency, usage) is shared as well: a provider outage
//! seen through one model's route protects every other route using that target.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::{Map, Value};
use smol_str::SmolStr;

/// Index into the process-wide table of route targets (dense, from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetId(pub u32);

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

/// One target: a provider account, its model name upstream and per-target overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSpec {
    pub provider: String,
    pub model: String,
    pub params: Option<Map<String, Value>>,
    pub headers: Vec<(String, String)>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub price: Option<Price>,
}

/// Targets shared by every route of one config.
#[derive(Debug, Default)]
pub struct TargetTable {
    specs: Vec<TargetSpec>,
    /// `provider/model` of each target, as the `x-shardgate-target` header says it.
    names: Vec<SmolStr>,
    index: HashMap<String, TargetId>,
}

impl TargetTable {
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// `None` only for an id that did not come from this table.
    pub fn get(&self, id: TargetId) -> Option<&TargetSpec> {
        self.specs.get(id.0 as usize)
    }

    /// `provider/model`: the name of a target in headers, logs and metrics.
    pub fn name(&self, id: TargetId) -> Option<&SmolStr> {
        self.names.get(id.0 as usize)
    }

    pub fn iter(&self) -> impl Iterator<Item = (TargetId, &TargetSpec)> {
        self.specs.iter().enumerate().map(|(i, s)| (TargetId(i as u32), s))
    }

    /// The id of `spec`, adding it when new. When the target is already known, limits and
    /// price that the earlier mention left out are taken from this one (the first mention
    /// wins where both give a value: they describe the same upstream account and model).
    pub(crate) fn intern(&mut self, spec: TargetSpec) -> TargetId {
        let key = identity(&spec);
        if let Some(&id) = self.index.get(&key) {
            if let Some(known) = self.specs.get_mut(id.0 as usize) {
                known.rpm = known.rpm.or(spec.rpm);
                known.tpm = known.tpm.or(spec.tpm);
                known.price = known.price.or(spec.price);
            }
            return id;
        }
        let id = TargetId(u32::try_from(self.specs.len()).unwrap_or(u32::MAX));
        self.names.push(SmolStr::from(format!("{}/{}", spec.provider, spec.model)));
        self.specs.push(spec);
        self.index.insert(key, id);
        id
    }
}

/// A canonical text of (provider, model, params, headers): object keys sorted at every level so
/// that the identity does not depend on how a JSON map happens to order its keys.
fn identity(spec: &TargetSpec) -> String {
    let mut key = format!("{}\u{0}{}\u{0}", spec.provider, spec.model);
    if let Some(params) = &spec.params {
        canonical_object(params, &mut key);
    }
    let mut headers: Vec<_> = spec.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
    headers.sort();
    for (k, v) in headers {
        let _ = write!(key, "\u{0}{k}:{v}");
    }
    key
}

fn canonical_object(map: &Map<String, Value>, out: &mut String) {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    out.push('{');
    for k in keys {
        out.push_str(&Value::String(k.clone()).to_string());
        out.push(':');
        if let Some(v) = map.get(k) {
            canonical(v, out);
        }
        out.push(',');
    }
    out.push('}');
}

fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => canonical_object(m, out),
        Value::Array(items) => {
            out.push('[');
            for item in items {
                canonical(item, out);
                out.push(',');
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(model: &str, params: Value) -> TargetSpec {
        TargetSpec {
            provider: "p".into(),
            model: model.into(),
            params: params.as_object().cloned(),
            headers: vec![],
            rpm: None,
            tpm: None,
            price: None,
        }
    }

    #[test]
    fn same_target_gets_one_id_and_fills_missing_limits() {
        let mut t = TargetTable::default();
        let a = t.intern(spec("m", json!({"a": 1, "b": {"x": 1, "y": 2}})));
        let mut again = spec("m", json!({"b": {"y": 2, "x": 1}, "a": 1}));
        again.rpm = Some(60);
        let b = t.intern(again);
        assert_eq!(a, b);
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(a).unwrap().rpm, Some(60));
        let c = t.intern(spec("m", json!({"a": 2})));
        assert_ne!(a, c);
        assert_eq!(t.iter().map(|(id, _)| id).collect::<Vec<_>>(), vec![a, c]);
        assert!(t.get(TargetId(9)).is_none());
        // Targets that differ only in params share the name the headers show.
        assert_eq!(t.name(a).map(|n| n.as_str()), Some("p/m"));
        assert_eq!(t.name(c).map(|n| n.as_str()), Some("p/m"));
        assert!(t.name(TargetId(9)).is_none());
    }
}
