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
    /// `json_schema`), the completion must parse as JSON.
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
}

impl StructureConfig {
    /// The first rule broken, by name and with why (never quoting the text).
    pub fn check(&self, texts: &[String], facts: Facts<'_>, output: bool) -> Option<(String, String)> {
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
        let bytes: usize = texts.iter().map(String::len).sum();
        let tokens = (bytes as u64).div_ceil(4);
        if let Some(max) = self.max_tokens.filter(|&m| tokens > m) {
            return Some(("max_tokens".into(), format!("about {tokens} tokens, more than the {max} allowed")));
        }
        if output && self.json_output && facts.asked_json {
            let answer: String = texts.concat();
            if serde_json::from_str::<serde::de::IgnoredAny>(&answer).is_err() {
                return Some(("json_output".into(), "the answer asked to be JSON is not valid JSON".into()));
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
        let facts = Facts { metadata: &m, asked_json: false };
        assert_eq!(cfg.check(&["hi".into()], facts, false).unwrap().0, "required_metadata");
        m.set("ticket", "T-1");
        let facts = Facts { metadata: &m, asked_json: true };
        assert_eq!(cfg.check(&["héllo".into(), "world!".into()], facts, false).unwrap().0, "max_chars");
        assert_eq!(cfg.check(&["abcdefghi".into()], facts, false).unwrap().0, "max_tokens");
        assert!(cfg.check(&["{\"a\":".into(), "1}".into()], facts, true).is_none());
        assert_eq!(cfg.check(&["{\"a\":".into()], facts, true).unwrap().0, "json_output");
        // Input is never judged as JSON.
        assert!(cfg.check(&["{".into()], facts, false).is_none());
    }
}
