//! The requests to send: one template, or a weighted mix read from JSONL. Each is serialised
//! once, before the run, so sending costs a buffer clone and a write.

use std::sync::Arc;

use adapters::openai::request::Scanner;
use bytes::Bytes;
use serde::Deserialize;

use crate::target::Target;

/// One request, ready to write.
#[derive(Debug, Clone)]
pub struct Template {
    /// The whole HTTP/1.1 request.
    pub request: Bytes,
    /// The body asks for a stream (`"stream": true`).
    pub stream: bool,
    /// For the report: the model, or the line's `label`.
    pub label: Arc<str>,
    pub weight: u32,
}

/// A weighted set of templates.
#[derive(Debug, Clone)]
pub struct Mix {
    templates: Vec<Template>,
    /// Running sums of the weights, for picking.
    cumulative: Vec<u64>,
}

/// One JSONL line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    /// JSON body (an object is serialised, a string is sent as is).
    body: Option<serde_json::Value>,
    #[serde(default = "one")]
    weight: u32,
    /// Overrides the URL's path.
    path: Option<String>,
    /// Overrides the method (default POST with a body, GET without).
    method: Option<String>,
    /// Extra headers for this line.
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    label: Option<String>,
}

fn one() -> u32 {
    1
}

/// How to build each request.
#[derive(Debug, Clone, Default)]
pub struct RequestSpec {
    pub method: Option<String>,
    pub path: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Option<Bytes>,
    pub label: Option<String>,
    pub weight: u32,
}

impl Mix {
    /// The same request every time.
    pub fn single(target: &Target, spec: RequestSpec) -> Result<Mix, String> {
        Mix::from_specs(target, vec![spec])
    }

    /// A mix from JSONL text; `defaults` supplies headers for every line.
    pub fn from_jsonl(target: &Target, text: &str, defaults: &[(String, String)]) -> Result<Mix, String> {
        let mut specs = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let l: Line = serde_json::from_str(line).map_err(|e| format!("mix line {}: {e}", n + 1))?;
            let body = match l.body {
                None => None,
                Some(serde_json::Value::String(s)) => Some(Bytes::from(s)),
                Some(v) => Some(Bytes::from(serde_json::to_vec(&v).map_err(|e| e.to_string())?)),
            };
            let mut headers = defaults.to_vec();
            headers.extend(l.headers);
            specs.push(RequestSpec { method: l.method, path: l.path, headers, body, label: l.label, weight: l.weight });
        }
        Mix::from_specs(target, specs)
    }

    fn from_specs(target: &Target, specs: Vec<RequestSpec>) -> Result<Mix, String> {
        if specs.is_empty() {
            return Err("the mix has no requests".into());
        }
        let mut scanner = Scanner::new();
        let mut templates = Vec::with_capacity(specs.len());
        for spec in specs {
            if spec.weight == 0 {
                continue;
            }
            let facts = spec.body.as_ref().and_then(|b| scanner.scan(b).ok());
            let stream = facts.as_ref().is_some_and(|f| f.stream);
            let model = facts.and_then(|f| f.model.map(|m| m.name));
            let label: Arc<str> = Arc::from(spec.label.clone().or(model).unwrap_or_else(|| "request".into()));
            templates.push(Template { request: serialise(target, &spec)?, stream, label, weight: spec.weight });
        }
        if templates.is_empty() {
            return Err("every request in the mix has weight 0".into());
        }
        let mut sum = 0u64;
        let cumulative = templates
            .iter()
            .map(|t| {
                sum += u64::from(t.weight);
                sum
            })
            .collect();
        Ok(Mix { templates, cumulative })
    }

    /// A template chosen by weight.
    pub fn pick(&self, rng: &mut fastrand::Rng) -> &Template {
        let total = self.cumulative.last().copied().unwrap_or(1);
        let x = rng.u64(0..total.max(1));
        let i = self.cumulative.partition_point(|c| *c <= x);
        &self.templates[i.min(self.templates.len() - 1)]
    }

    pub fn templates(&self) -> &[Template] {
        &self.templates
    }
}

fn serialise(target: &Target, spec: &RequestSpec) -> Result<Bytes, String> {
    let method = spec.method.clone().unwrap_or_else(|| if spec.body.is_some() { "POST".into() } else { "GET".into() });
    let path = spec.path.as_deref().unwrap_or(&target.path);
    if !path.starts_with('/') {
        return Err(format!("path {path:?} must start with '/'"));
    }
    let mut out = format!("{method} {path} HTTP/1.1\r\nhost: {}\r\n", target.host_header);
    let mut has_type = false;
    for (n, v) in &spec.headers {
        if n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("host") {
            continue;
        }
        if n.contains(['\r', '\n', ':']) || v.contains(['\r', '\n']) {
            return Err(format!("invalid header {n:?}"));
        }
        has_type |= n.eq_ignore_ascii_case("content-type");
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    let mut bytes = out.into_bytes();
    if let Some(body) = &spec.body {
        if !has_type {
            bytes.extend_from_slice(b"content-type: application/json\r\n");
        }
        bytes.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
        bytes.extend_from_slice(body);
    } else {
        bytes.extend_from_slice(b"\r\n");
    }
    Ok(Bytes::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target::parse("http://127.0.0.1:9/v1/chat/completions", None).unwrap()
    }

    #[test]
    fn single_request_is_serialised_once() {
        let spec = RequestSpec {
            body: Some(Bytes::from_static(br#"{"model":"m","stream":true}"#)),
            headers: vec![("authorization".into(), "Bearer k".into())],
            weight: 1,
            ..RequestSpec::default()
        };
        let mix = Mix::single(&target(), spec).unwrap();
        let t = &mix.templates()[0];
        assert!(t.stream);
        assert_eq!(&*t.label, "m");
        let text = String::from_utf8(t.request.to_vec()).unwrap();
        assert!(
            text.starts_with("POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:9\r\nauthorization: Bearer k\r\n")
        );
        assert!(text.ends_with("content-length: 27\r\n\r\n{\"model\":\"m\",\"stream\":true}"));
    }

    #[test]
    fn jsonl_mix_respects_weights() {
        let text = r#"{"body":{"model":"a"},"weight":3}
# a comment
{"body":{"model":"b","stream":true},"weight":1,"headers":{"x-k":"v"}}
{"path":"/v1/models","weight":0}"#;
        let mix = Mix::from_jsonl(&target(), text, &[]).unwrap();
        assert_eq!(mix.templates().len(), 2);
        let mut rng = fastrand::Rng::with_seed(7);
        let picks = (0..4000).filter(|_| &*mix.pick(&mut rng).label == "a").count();
        assert!((2800..3200).contains(&picks), "{picks}");
        assert!(Mix::from_jsonl(&target(), "{\"bogus\":1}", &[]).is_err());
    }
}
