//! Test doubles for the engine's side of the interface, and config helpers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;

use super::compile::compile;
use super::condition::{Field, FieldValue, RequestFacts, lookup_param};
use super::pick::{HealthView, TargetHealth};
use super::route::Route;
use super::spec::RouteSpec;
use super::table::{TargetId, TargetTable};

/// Request facts from a list of fields and an optional body (for `params.*`).
#[derive(Default)]
pub struct Facts {
    pub fields: Vec<(Field, String)>,
    pub body: Option<Value>,
    pub key: Option<String>,
    pub out_tokens: u32,
}

impl Facts {
    pub fn with(mut self, f: Field, v: FieldValue<'_>) -> Facts {
        let FieldValue::Str(s) = v else { panic!("test facts take text fields") };
        self.fields.push((f, s.to_string()));
        self
    }

    pub fn body(mut self, body: Value) -> Facts {
        self.body = Some(body);
        self
    }

    pub fn key(mut self, key: &str) -> Facts {
        self.key = Some(key.to_string());
        self
    }
}

impl RequestFacts for Facts {
    fn field(&self, f: &Field) -> Option<FieldValue<'_>> {
        if let Field::Param(path) = f {
            return self.body.as_ref().and_then(|b| lookup_param(b, path)).map(FieldValue::Json);
        }
        self.fields.iter().find(|(k, _)| k == f).map(|(_, v)| FieldValue::Str(v))
    }

    fn affinity_key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    fn expected_output_tokens(&self) -> u32 {
        if self.out_tokens == 0 { 256 } else { self.out_tokens }
    }
}

/// Health per target id.
pub struct Health(pub Vec<TargetHealth>);

impl Health {
    pub fn all_up(table: &TargetTable) -> Health {
        Health(vec![TargetHealth { available: true, ..Default::default() }; table.len()])
    }

    pub fn set(&mut self, id: TargetId, available: bool) {
        self.0[id.0 as usize].available = available;
    }

    pub fn get_mut(&mut self, id: TargetId) -> &mut TargetHealth {
        &mut self.0[id.0 as usize]
    }
}

impl HealthView for Health {
    fn health(&self, t: TargetId) -> TargetHealth {
        self.0.get(t.0 as usize).copied().unwrap_or_default()
    }
}

/// Compiles a route for model `m` from YAML; every provider exists except `nope`.
pub fn compile_yaml(yaml: &str) -> (Route, TargetTable) {
    let spec: RouteSpec = serde_saphyr::from_str(yaml).unwrap();
    let mut table = TargetTable::default();
    let route = compile("m", &spec, &mut table, &|p| p != "nope").unwrap_or_else(|e| panic!("{e:#?}"));
    (route, table)
}

pub fn compile_errors(yaml: &str) -> Vec<String> {
    let spec: RouteSpec = serde_saphyr::from_str(yaml).unwrap();
    let mut table = TargetTable::default();
    match compile("m", &spec, &mut table, &|p| p != "nope") {
        Ok(_) => panic!("expected errors"),
        Err(e) => e,
    }
}

/// The id of the (only) target whose upstream model is `model`.
pub fn id_of(table: &TargetTable, model: &str) -> TargetId {
    table.iter().find(|(_, s)| s.model == model).map(|(id, _)| id).unwrap()
}
