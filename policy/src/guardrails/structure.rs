//! Structural checks: how long a prompt may be, which metadata a request must carry, and
//! whether an answer asked to be JSON is JSON.

use serde::Deserialize;

use crate::rules::Metadata;

/// `structure:` settings of a guardrail.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StructureConfig {
    /// Most characters in the checked text (all of a request's texts together).
    pub max_chars: Option<usize>,
    /// Most tokens in the checked text, estimated at four bytes a token (as admission does).
    pub max_tokens: Option<u64>,
    /// Metadata fields every request must carry (`x-shardgate-metadata`, or its key's).
    pub required_metadata: Vec<String>,
    /// Output phase: when the request asked for JSON (`response_format` `json_object` or
    /// `json_schema`), the completion must parse as JSON, and match the schema when one was
    /// given.
    pub json_output: bool,
}

impl Default for StructureConfig {
    fn default() -> StructureConfig {
        StructureConfig { max_chars: None, max_tokens: None, required_metadata: Vec::new(), json_output: true }
    }
}

/// What a structural check needs besides the text.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub metadata: &'a Metadata,
    /// The request asked for a JSON answer.
    pub asked_json: bool,
    /// The schema of `response_format: {type: json_schema, json_schema: {schema}}`.
    pub schema: Option<&'a serde_json::Value>,
}

impl StructureConfig {
    /// The first rule broken, by name and with why (never quoting the text).
    pub fn check(
        &self,
        texts: &[std::borrow::Cow<'_, str>],
        facts: Facts<'_>,
        output: bool,
    ) -> Option<(String, String)> {
        for key in &self.required_metadata {
            if facts.metadata.get(key).is_none() {
                return Some((
                    "required_metadata".into(),
                    format!("the request must carry metadata field `{key}` (x-shardgate-metadata)"),
                ));
            }
        }
        let chars: usize = texts.iter().map(|t| t.chars().count()).sum();
        if let Some(max) = self.max_chars.filter(|&m| chars > m) {
            return Some(("max_chars".into(), format!("{chars} characters, more than the {max} allowed")));
        }
        let bytes: usize = texts.iter().map(|t| t.len()).sum();
        let tokens = (bytes as u64).div_ceil(4);
        if let Some(max) = self.max_tokens.filter(|&m| tokens > m) {
            return Some(("max_tokens".into(), format!("about {tokens} tokens, more than the {max} allowed")));
        }
        if output && self.json_output && facts.asked_json {
            let answer: String = texts.iter().map(|t| &**t).collect();
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&answer) else {
                return Some(("json_output".into(), "the answer asked to be JSON is not valid JSON".into()));
            };
            if let Some(schema) = facts.schema {
                return match jsonschema::validator_for(schema) {
                    // The client's own schema does not compile: not the answer's fault.
                    Err(_) => None,
                    // Where and which keyword, never the offending value.
                    Ok(v) => v.iter_errors(&value).next().map(|e| {
                        let at = e.instance_path().to_string();
                        let at = if at.is_empty() { "/".to_string() } else { at };
                        let why = format!(
                            "the answer does not match the requested JSON schema at `{at}` (schema `{}`)",
                            e.schema_path()
                        );
                        ("json_schema".into(), why)
                    }),
                };
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn limits_metadata_and_json() {
        let mut m = Metadata::new();
        let cfg = StructureConfig {
            max_chars: Some(10),
            max_tokens: Some(2),
            required_metadata: vec!["ticket".into()],
            json_output: true,
        };
        let facts = Facts { metadata: &m, asked_json: false, schema: None };
        assert_eq!(cfg.check(&["hi".into()], facts, false).unwrap().0, "required_metadata");
        m.set("ticket", "T-1");
        let facts = Facts { metadata: &m, asked_json: true, schema: None };
        assert_eq!(cfg.check(&["héllo".into(), "world!".into()], facts, false).unwrap().0, "max_chars");
        assert_eq!(cfg.check(&["abcdefghi".into()], facts, false).unwrap().0, "max_tokens");
        assert!(cfg.check(&["{\"a\":".into(), "1}".into()], facts, true).is_none());
        assert_eq!(cfg.check(&["{\"a\":".into()], facts, true).unwrap().0, "json_output");
        // Input is never judged as JSON.
        assert!(cfg.check(&["{".into()], facts, false).is_none());
        // With a schema: where it fails, not what the value was.
        let schema = serde_json::json!({"type": "object", "required": ["name"],
                                        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}});
        let lax = StructureConfig::default();
        let facts = Facts { metadata: &m, asked_json: true, schema: Some(&schema) };
        assert!(lax.check(&[r#"{"name": "Ann", "age": 3}"#.into()], facts, true).is_none());
        let (name, why) = lax.check(&[r#"{"name": "Ann", "age": "secret-42"}"#.into()], facts, true).unwrap();
        assert_eq!(name, "json_schema");
        assert!(why.contains("/age") && !why.contains("secret-42"), "{why}");
        assert_eq!(lax.check(&["{}".into()], facts, true).unwrap().0, "json_schema");
    }
}
