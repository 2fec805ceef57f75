//! Request quirks of OpenAI-compatible hosts: fields a host rejects (or ignores) under OpenAI's
//! name, dropped or renamed before the body is forwarded.
//!
//! The common case is "nothing to do": [`Quirks::apply`] returns `None` and the engine forwards
//! the client's bytes untouched. Even with quirks configured, a body that does not mention any
//! of the fields is recognised by a byte search, without parsing.
//!
//! When something does change, the body is edited in place of its JSON text, not through a
//! document tree: the workspace builds `serde_json` without `preserve_order`, so a
//! `serde_json::Value` round trip would sort the keys. Instead the top-level object is read as
//! an ordered list of (key, raw value) pairs (the crate's `json::raw` editor) and only the
//! objects on a quirk's path are opened; every other value is copied byte for byte (numbers,
//! escapes and inner whitespace as sent). Key order is preserved; the whitespace between the
//! members of an edited object is not.
//!
//! Paths are dotted: `logit_bias` (a top-level key), `stream_options.include_usage` (a key of
//! an object), `messages[].name` (a key of every object in the `messages` array). A key that
//! itself contains `.` or ends in `[]` cannot be named.
//!
//! Semantics, in order: every drop, then every rename in list order.
//! - A drop removes every occurrence of the key (duplicate keys included).
//! - A rename moves the value of the last occurrence of the source key (the one most parsers
//!   read) to the new key, at the source's position; other occurrences of the source are
//!   removed, and so is any existing member under the new name: **the renamed value wins**.
//!   The new name is a key in the same object as the source: `max_tokens`, or a dotted path
//!   with the source's parent (`stream_options.x` for `stream_options.include_usage`).
//!   [`Quirks::validate`] refuses a rename that would move a value to another object; `apply`
//!   treats such a target as its last segment.

use std::borrow::Cow;
use std::fmt;

use crate::canonical::ApiError;
use crate::json::raw::{Entries, parse_object_bytes, with_array, with_object, write_entries};

/// Fields to drop and to rename in request bodies sent to one OpenAI-compatible host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quirks {
    /// Paths of fields to remove.
    pub drop_params: Vec<String>,
    /// `(path, new name)` pairs: the field at `path` is renamed in place.
    pub rename_params: Vec<(String, String)>,
}

/// A quirk that cannot be applied as written (reported when configuration is loaded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuirkError {
    /// The path (or `from -> to` pair) at fault, as configured.
    pub param: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for QuirkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "parameter quirk `{}`: {}", self.param, self.reason)
    }
}

impl std::error::Error for QuirkError {}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}

/// `max_completion_tokens` (OpenAI's newer name) → `max_tokens`, for hosts that document only
/// the older name.
const MAX_TOKENS: (&str, &str) = ("max_completion_tokens", "max_tokens");

impl Quirks {
    /// Quirks from configuration lists.
    pub fn new(drop_params: Vec<String>, rename_params: Vec<(String, String)>) -> Quirks {
        Quirks { drop_params, rename_params }
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.drop_params.is_empty() && self.rename_params.is_empty()
    }

    /// The built-in quirks of a well-known host. `host` is a host name, optionally with a port
    /// (`api.groq.com`, `localhost:11434`); a scheme or path around it is tolerated. Matching is
    /// exact and case-insensitive; an unknown host has no quirks.
    ///
    /// Only what the host's documentation (or its published error) justifies is encoded:
    /// - `api.mistral.ai`: the chat API validates its body strictly and answers 422
    ///   `extra_forbidden` for unknown fields (reported for `max_completion_tokens` and `store`);
    ///   its reference (docs.mistral.ai/api/endpoint/chat) names the cap `max_tokens` and the
    ///   seed `random_seed`. So: rename `max_completion_tokens`→`max_tokens` and
    ///   `seed`→`random_seed`, drop `store`.
    /// - `api.groq.com`: "OpenAI Compatibility" (console.groq.com/docs/openai) lists `logprobs`,
    ///   `logit_bias`, `top_logprobs` and `messages[].name` as unsupported, answered with a 400:
    ///   dropped. (`n` other than 1 is also refused; dropping it would silently return fewer
    ///   choices than asked, so it is left to fail.)
    /// - `api.cerebras.ai`: its OpenAI compatibility page lists `frequency_penalty`,
    ///   `logit_bias`, `presence_penalty`, `parallel_tool_calls` and `service_tier` as
    ///   unsupported, answered with a 400: dropped. (The same five are listed as 400s by the
    ///   req_llm client's Cerebras guide, hexdocs.pm/req_llm/cerebras.html.)
    /// - `api.deepseek.com` (Create Chat Completion), `api.perplexity.ai` (Sonar "OpenAI
    ///   compatibility") and `openrouter.ai` (API reference request schema) document the output
    ///   cap as `max_tokens` only: `max_completion_tokens` is renamed so the cap still applies.
    /// - Ollama (port 11434): its OpenAI compatibility page lists the supported request fields,
    ///   with `max_tokens` and without `max_completion_tokens`: renamed.
    /// - `api.x.ai`, `api.together.xyz`, `api.fireworks.ai`: no host-wide quirk. xAI's
    ///   reasoning models refuse `presence_penalty`, `frequency_penalty` and `stop`, but that is
    ///   per model, not per host; configure it on the route if needed.
    /// - vLLM, LM Studio, llama.cpp's server: local servers on ports that say nothing about the
    ///   software (8000, 1234, 8080), so nothing is assumed; configure per target.
    pub fn for_host(host: &str) -> Quirks {
        let (name, port) = split_host(host);
        match name.as_str() {
            "api.mistral.ai" => Quirks::new(strings(&["store"]), pairs(&[MAX_TOKENS, ("seed", "random_seed")])),
            "api.groq.com" => {
                Quirks::new(strings(&["logprobs", "logit_bias", "top_logprobs", "messages[].name"]), Vec::new())
            }
            "api.cerebras.ai" => Quirks::new(
                strings(&[
                    "frequency_penalty",
                    "logit_bias",
                    "presence_penalty",
                    "parallel_tool_calls",
                    "service_tier",
                ]),
                Vec::new(),
            ),
            "api.deepseek.com" | "api.perplexity.ai" | "openrouter.ai" => Quirks::new(Vec::new(), pairs(&[MAX_TOKENS])),
            _ if port == Some(11434) => Quirks::new(Vec::new(), pairs(&[MAX_TOKENS])),
            _ => Quirks::default(),
        }
    }

    /// `defaults` (usually [`Quirks::for_host`]) extended by configured lists. A configured drop
    /// or rename replaces any default for the same source path (so a configured rename of a
    /// field the defaults drop wins, and vice versa); the rest of the defaults stay. To start
    /// from nothing, pass `Quirks::default()` as `defaults`.
    pub fn merged(defaults: Quirks, drop_params: Vec<String>, rename_params: Vec<(String, String)>) -> Quirks {
        let configured =
            |path: &str| drop_params.iter().any(|d| d == path) || rename_params.iter().any(|(f, _)| f == path);
        let mut out = Quirks {
            drop_params: defaults.drop_params.into_iter().filter(|d| !configured(d)).collect(),
            rename_params: defaults.rename_params.into_iter().filter(|(f, _)| !configured(f)).collect(),
        };
        for d in drop_params {
            if !out.drop_params.contains(&d) {
                out.drop_params.push(d);
            }
        }
        out.rename_params.extend(rename_params);
        out
    }

    /// Checks every path: no empty segment, `[]` only on inner segments, and renames that stay
    /// in their object. Call it when configuration is loaded.
    pub fn validate(&self) -> Result<(), QuirkError> {
        let err = |param: &str, reason| Err(QuirkError { param: param.to_owned(), reason });
        for path in self.drop_params.iter().chain(self.rename_params.iter().map(|(f, _)| f)) {
            if let Some(reason) = path_problem(path) {
                return err(path, reason);
            }
        }
        for (from, to) in &self.rename_params {
            let pair = format!("{from} -> {to}");
            if to.is_empty() {
                return err(&pair, "the new name is empty");
            }
            if let Some((parent, _)) = to.rsplit_once('.') {
                if path_problem(to).is_some() || from.rsplit_once('.').map(|(p, _)| p) != Some(parent) {
                    return err(
                        &pair,
                        "a rename keeps the field in its object: give a bare key or the source's parent path",
                    );
                }
            } else if to.ends_with("[]") {
                return err(&pair, "the new name cannot end in []");
            }
        }
        Ok(())
    }

    /// `body` with the quirks applied, or `None` when nothing changes (forward the original
    /// bytes). A body that is not a JSON object is a 400.
    pub fn apply(&self, body: &[u8]) -> Result<Option<Vec<u8>>, ApiError> {
        if self.is_empty() || !self.may_touch(body) {
            return Ok(None);
        }
        let mut entries = parse_object_bytes(body).map_err(|e| ApiError {
            status: 400,
            message: format!("the request body is not a JSON object: {e}"),
            kind: "invalid_request_error".into(),
            param: None,
            code: None,
        })?;
        let not_json = |e: serde_json::Error| ApiError {
            status: 400,
            message: format!("the request body is not valid JSON: {e}"),
            kind: "invalid_request_error".into(),
            param: None,
            code: None,
        };
        let mut changed = false;
        for path in &self.drop_params {
            changed |= apply_at(&mut entries, &segments(path), Op::Drop).map_err(not_json)?;
        }
        for (from, to) in &self.rename_params {
            let to = to.rsplit('.').next().unwrap_or(to);
            changed |= apply_at(&mut entries, &segments(from), Op::Rename(to)).map_err(not_json)?;
        }
        if !changed {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(body.len());
        write_entries(&entries, &mut out);
        Ok(Some(out))
    }

    /// False when no quirk can apply: for every source path, some key on it does not appear
    /// (quoted, unescaped) in the body, and the body has no `\u` escape that could spell one.
    fn may_touch(&self, body: &[u8]) -> bool {
        if memchr::memmem::find(body, b"\\u").is_some() {
            return true;
        }
        let mut sources = self.drop_params.iter().chain(self.rename_params.iter().map(|(f, _)| f));
        sources.any(|path| {
            path.split('.').all(|seg| contains_quoted(body, seg.strip_suffix("[]").unwrap_or(seg).as_bytes()))
        })
    }
}

/// Host name (lowercase, no trailing dot) and port of `host`, tolerating `scheme://` and a path.
fn split_host(host: &str) -> (String, Option<u16>) {
    let host = host.split_once("://").map_or(host, |(_, rest)| rest);
    let host = host.split(['/', '?', '#']).next().unwrap_or(host);
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let (name, port) = if let Some(bracketed) = host.strip_prefix('[') {
        match bracketed.split_once(']') {
            Some((name, rest)) => (name, rest.strip_prefix(':').and_then(|p| p.parse::<u16>().ok())),
            None => (bracketed, None),
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name, port.parse::<u16>().ok()),
            None => (host, None),
        }
    };
    (name.trim_end_matches('.').to_ascii_lowercase(), port)
}

fn contains_quoted(body: &[u8], key: &[u8]) -> bool {
    memchr::memmem::find_iter(body, key)
        .any(|i| i > 0 && body.get(i - 1) == Some(&b'"') && body.get(i + key.len()) == Some(&b'"'))
}

fn path_problem(path: &str) -> Option<&'static str> {
    let segs: Vec<&str> = path.split('.').collect();
    if segs.iter().any(|s| s.is_empty() || *s == "[]") {
        return Some("empty path segment");
    }
    if segs.last().is_some_and(|s| s.ends_with("[]")) {
        return Some("the last segment names a key, not an array ([] goes on inner segments)");
    }
    None
}

#[derive(Clone, Copy)]
enum Seg<'p> {
    /// The value of this key, an object.
    Key(&'p str),
    /// Every object in the array under this key.
    Each(&'p str),
}

impl<'p> Seg<'p> {
    fn name(self) -> &'p str {
        match self {
            Seg::Key(k) | Seg::Each(k) => k,
        }
    }
}

fn segments(path: &str) -> Vec<Seg<'_>> {
    path.split('.').map(|s| s.strip_suffix("[]").map_or(Seg::Key(s), Seg::Each)).collect()
}

#[derive(Clone, Copy)]
enum Op<'p> {
    Drop,
    Rename(&'p str),
}

/// Applies `op` at `path` below `entries`; whether anything changed.
fn apply_at(entries: &mut Entries<'_>, path: &[Seg<'_>], op: Op<'_>) -> Result<bool, serde_json::Error> {
    match path {
        [] => Ok(false),
        [last] => Ok(match op {
            Op::Drop => {
                let before = entries.len();
                entries.retain(|(k, _)| k.as_ref() != last.name());
                entries.len() != before
            }
            Op::Rename(to) => rename(entries, last.name(), to),
        }),
        [first, rest @ ..] => {
            let mut changed = false;
            for (key, node) in entries.iter_mut() {
                if key.as_ref() != first.name() {
                    continue;
                }
                changed |= match first {
                    Seg::Key(_) => with_object(node, |inner| apply_at(inner, rest, op))?,
                    Seg::Each(_) => with_array(node, |items| {
                        let mut any = false;
                        for item in items.iter_mut() {
                            any |= with_object(item, |inner| apply_at(inner, rest, op))?;
                        }
                        Ok(any)
                    })?,
                };
            }
            Ok(changed)
        }
    }
}

fn rename(entries: &mut Entries<'_>, from: &str, to: &str) -> bool {
    if from == to {
        return false;
    }
    let Some(pos) = entries.iter().rposition(|(k, _)| k.as_ref() == from) else { return false };
    let old = std::mem::take(entries);
    for (i, (key, node)) in old.into_iter().enumerate() {
        if i == pos {
            entries.push((Cow::Owned(to.to_owned()), node));
        } else if key.as_ref() != from && key.as_ref() != to {
            entries.push((key, node));
        }
    }
    true
}

#[cfg(test)]
mod tests;
