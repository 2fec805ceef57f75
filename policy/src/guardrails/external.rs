//! Checks that ask a service: OpenAI's moderations API, Azure AI Content Safety, or any HTTP
//! webhook that follows the contract below. This module is pure: it builds each request body
//! and reads each answer; the engine sends them (through the provider's actor, with the rule's
//! timeout) and applies the rule's enforcement when the call fails.
//!
//! ## The webhook contract
//!
//! `POST {provider base URL}{path}` with `content-type: application/json`:
//!
//! ```json
//! {"guardrail": "tone", "phase": "input", "model": "gpt-4o", "texts": ["...", "..."],
//!  "metadata": {"team": "support"}}
//! ```
//!
//! The answer (200) is `{"action": "allow" | "block" | "flag", "categories": ["..."],
//! "reason": "...", "texts": ["...", "..."]}`: `categories` and `reason` are optional and shown
//! in the verdict (`reason` never reaches the client); `texts`, only for a rule in mutate mode,
//! replaces the texts (same number, same order). Any other status, or a body that does not
//! read, is a failed check.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::spec::Phase;
use crate::rules::Metadata;

/// Default wait for an external check.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// `openai_moderation:` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiModerationSpec {
    /// A provider of the config (OpenAI, or a host with OpenAI's `/moderations`).
    pub provider: String,
    #[serde(default = "default_moderation_model")]
    pub model: String,
    /// Only these categories count (`harassment`, `violence`, `self-harm/intent`, ...); default
    /// any the API flags.
    #[serde(default)]
    pub categories: Vec<String>,
    #[serde(default)]
    pub timeout: Option<String>,
}

fn default_moderation_model() -> String {
    "omni-moderation-latest".into()
}

/// `azure_content_safety:` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureContentSafetySpec {
    /// A provider whose base URL is the Content Safety resource
    /// (`https://{name}.cognitiveservices.azure.com`) and whose headers carry
    /// `Ocp-Apim-Subscription-Key`.
    pub provider: String,
    /// Lowest severity that counts (0, 2, 4 or 6). Default 4 (medium).
    #[serde(default = "default_severity")]
    pub severity: u8,
    /// Only these categories count (`Hate`, `SelfHarm`, `Sexual`, `Violence`); default all.
    #[serde(default)]
    pub categories: Vec<String>,
    #[serde(default = "default_api_version")]
    pub api_version: String,
    #[serde(default)]
    pub timeout: Option<String>,
}

fn default_severity() -> u8 {
    4
}

fn default_api_version() -> String {
    "2024-09-01".into()
}

/// `webhook:` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// A provider of the config: its base URL and headers (credentials) are used.
    pub provider: String,
    /// Appended to the provider's base path. Default `/`.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
}

/// An external check, compiled.
#[derive(Debug, Clone)]
pub enum External {
    OpenAiModeration { provider: String, model: String, categories: Vec<String> },
    AzureContentSafety { provider: String, severity: u8, categories: Vec<String>, api_version: String },
    Webhook { provider: String, path: String },
}

/// What the service said.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The texts break the rule.
    pub flagged: bool,
    /// A webhook asked to let the request through but flag it (even a blocking rule).
    pub flag_only: bool,
    /// What was found, by the service's category names.
    pub categories: Vec<String>,
    /// A webhook's rewritten texts (mutate mode).
    pub texts: Option<Vec<String>>,
    /// A webhook's reason, for the log.
    pub reason: Option<String>,
}

pub(crate) fn timeout_of(raw: &Option<String>, field: &str) -> Result<Duration, String> {
    match raw {
        None => Ok(DEFAULT_TIMEOUT),
        Some(t) => match humantime::parse_duration(t.trim()) {
            Ok(d) if !d.is_zero() && d <= Duration::from_secs(60) => Ok(d),
            Ok(_) => Err(format!("{field}.timeout must be between 1ms and 60s")),
            Err(e) => Err(format!("{field}.timeout: {e}")),
        },
    }
}

impl External {
    /// The provider the call goes to.
    pub fn provider(&self) -> &str {
        match self {
            External::OpenAiModeration { provider, .. }
            | External::AzureContentSafety { provider, .. }
            | External::Webhook { provider, .. } => provider,
        }
    }

    /// The path under the provider's base path (query included), and the JSON body.
    pub fn request(
        &self,
        rule: &str,
        phase: Phase,
        model: &str,
        metadata: &Metadata,
        texts: &[std::borrow::Cow<'_, str>],
    ) -> (String, Vec<u8>) {
        match self {
            External::OpenAiModeration { model: m, .. } => {
                ("/moderations".into(), json!({"model": m, "input": texts}).to_string().into_bytes())
            }
            // Content Safety analyses one text per call (up to 10k characters): the texts go
            // together, one per paragraph.
            External::AzureContentSafety { categories, api_version, .. } => {
                let mut body = json!({"text": texts.join("\n\n"), "outputType": "FourSeverityLevels"});
                if !categories.is_empty() {
                    body["categories"] = json!(categories);
                }
                (format!("/contentsafety/text:analyze?api-version={api_version}"), body.to_string().into_bytes())
            }
            External::Webhook { path, .. } => {
                let meta: serde_json::Map<String, Value> =
                    metadata.iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect();
                let body = json!({"guardrail": rule, "phase": phase.as_str(), "model": model, "texts": texts,
                                  "metadata": meta});
                (path.clone(), body.to_string().into_bytes())
            }
        }
    }

    /// Reads the service's answer; `Err` says why the check failed.
    pub fn read(&self, status: u16, body: &[u8], texts: usize) -> Result<Answer, String> {
        if !(200..300).contains(&status) {
            let text = String::from_utf8_lossy(body);
            let snippet: String = text.chars().take(200).collect();
            return Err(format!("HTTP {status}: {snippet}"));
        }
        let v: Value = serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
        match self {
            External::OpenAiModeration { categories: wanted, .. } => {
                let results = v.get("results").and_then(Value::as_array).ok_or("no `results` in the answer")?;
                let mut found = Vec::new();
                for r in results {
                    let Some(cats) = r.get("categories").and_then(Value::as_object) else { continue };
                    for (name, on) in cats {
                        if on.as_bool() == Some(true) && (wanted.is_empty() || wanted.contains(name)) {
                            found.push(name.clone());
                        }
                    }
                }
                found.sort();
                found.dedup();
                Ok(Answer {
                    flagged: !found.is_empty(),
                    flag_only: false,
                    categories: found,
                    texts: None,
                    reason: None,
                })
            }
            External::AzureContentSafety { severity, categories: wanted, .. } => {
                let analysis = v
                    .get("categoriesAnalysis")
                    .and_then(Value::as_array)
                    .ok_or("no `categoriesAnalysis` in the answer")?;
                let mut found = Vec::new();
                for a in analysis {
                    let name = a.get("category").and_then(Value::as_str).unwrap_or("");
                    let level = a.get("severity").and_then(Value::as_u64).unwrap_or(0);
                    if level >= u64::from(*severity) && (wanted.is_empty() || wanted.iter().any(|w| w == name)) {
                        found.push(name.to_string());
                    }
                }
                Ok(Answer {
                    flagged: !found.is_empty(),
                    flag_only: false,
                    categories: found,
                    texts: None,
                    reason: None,
                })
            }
            External::Webhook { .. } => {
                let action = v.get("action").and_then(Value::as_str).ok_or("no `action` in the answer")?;
                let (flagged, flag_only) = match action {
                    "allow" => (false, false),
                    "block" => (true, false),
                    "flag" => (true, true),
                    other => return Err(format!("unknown action {other:?} (allow, block or flag)")),
                };
                let categories = v
                    .get("categories")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
                    .unwrap_or_default();
                let rewritten: Option<Vec<String>> = v
                    .get("texts")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect());
                if let Some(t) = &rewritten
                    && t.len() != texts
                {
                    return Err(format!("`texts` has {} entries for {texts} texts", t.len()));
                }
                let reason = v.get("reason").and_then(Value::as_str).map(str::to_string);
                Ok(Answer { flagged, flag_only, categories, texts: rewritten, reason })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn openai_moderation_round_trip() {
        let e = External::OpenAiModeration {
            provider: "oai".into(),
            model: "omni-moderation-latest".into(),
            categories: vec![],
        };
        let (path, body) = e.request("m", Phase::Input, "gpt", &Metadata::new(), &["a".into(), "b".into()]);
        assert_eq!(path, "/moderations");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, json!({"model": "omni-moderation-latest", "input": ["a", "b"]}));
        let answer = br#"{"id":"modr-1","model":"omni-moderation-latest","results":[
            {"flagged":false,"categories":{"violence":false},"category_scores":{"violence":0.01}},
            {"flagged":true,"categories":{"violence":true,"harassment":false},"category_scores":{"violence":0.9}}]}"#;
        let a = e.read(200, answer, 2).unwrap();
        assert!(a.flagged);
        assert_eq!(a.categories, ["violence"]);
        let narrow = External::OpenAiModeration {
            provider: "oai".into(),
            model: "m".into(),
            categories: vec!["harassment".into()],
        };
        assert!(!narrow.read(200, answer, 2).unwrap().flagged, "only the categories asked for count");
        assert!(e.read(429, b"slow down", 2).unwrap_err().contains("HTTP 429"));
        assert!(e.read(200, b"{}", 2).is_err());
    }

    #[test]
    fn azure_content_safety_severity() {
        let e = External::AzureContentSafety {
            provider: "cs".into(),
            severity: 4,
            categories: vec![],
            api_version: "2024-09-01".into(),
        };
        let (path, body) = e.request("m", Phase::Output, "gpt", &Metadata::new(), &["x".into(), "y".into()]);
        assert_eq!(path, "/contentsafety/text:analyze?api-version=2024-09-01");
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["text"], "x\n\ny");
        let answer = br#"{"blocklistsMatch":[],"categoriesAnalysis":[{"category":"Hate","severity":2},{"category":"Violence","severity":4}]}"#;
        let a = e.read(200, answer, 2).unwrap();
        assert_eq!((a.flagged, a.categories.as_slice()), (true, &["Violence".to_string()][..]));
    }

    #[test]
    fn webhook_contract() {
        let e = External::Webhook { provider: "hook".into(), path: "/check".into() };
        let mut m = Metadata::new();
        m.set("team", "support");
        let (path, body) = e.request("tone", Phase::Input, "gpt", &m, &["hi".into()]);
        assert_eq!(path, "/check");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"guardrail": "tone", "phase": "input", "model": "gpt", "texts": ["hi"], "metadata": {"team": "support"}})
        );
        assert!(!e.read(200, br#"{"action":"allow"}"#, 1).unwrap().flagged);
        let b = e.read(200, br#"{"action":"block","categories":["rude"],"reason":"r"}"#, 1).unwrap();
        assert_eq!((b.flagged, b.flag_only, b.categories.as_slice()), (true, false, &["rude".to_string()][..]));
        assert!(e.read(200, br#"{"action":"flag"}"#, 1).unwrap().flag_only);
        assert_eq!(e.read(200, br#"{"action":"allow","texts":["HI"]}"#, 1).unwrap().texts, Some(vec!["HI".into()]));
        assert!(e.read(200, br#"{"action":"allow","texts":["a","b"]}"#, 1).is_err());
        assert!(e.read(200, br#"{"action":"maybe"}"#, 1).is_err());
        assert!(e.read(500, b"", 1).is_err());
    }
}
