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
//! an ordered list of (key, raw value) pairs and only the objects on a quirk's path are opened;
//! every other value is copied byte for byte (numbers, escapes and inner whitespace as sent).
//! Key order is preserved; the whitespace between the members of an edited object is not.
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

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::canonical::ApiError;
use crate::json::escape::write_string;

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
    ///   unsupported, answered with a 400: dropped.
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

/// Runs `f` on the members of `node` if it is an object, opening a raw object only for the
/// edit (it stays raw, byte for byte, when `f` changes nothing).
fn with_object<'a>(
    node: &mut Node<'a>,
    f: impl FnOnce(&mut Entries<'a>) -> Result<bool, serde_json::Error>,
) -> Result<bool, serde_json::Error> {
    match node {
        Node::Object(entries) => f(entries),
        Node::Raw(raw) if raw.get().starts_with('{') => {
            let mut entries = parse_object(raw.get())?;
            let changed = f(&mut entries)?;
            if changed {
                *node = Node::Object(entries);
            }
            Ok(changed)
        }
        _ => Ok(false),
    }
}

fn with_array<'a>(
    node: &mut Node<'a>,
    f: impl FnOnce(&mut Vec<Node<'a>>) -> Result<bool, serde_json::Error>,
) -> Result<bool, serde_json::Error> {
    match node {
        Node::Array(items) => f(items),
        Node::Raw(raw) if raw.get().starts_with('[') => {
            let mut items = parse_array(raw.get())?;
            let changed = f(&mut items)?;
            if changed {
                *node = Node::Array(items);
            }
            Ok(changed)
        }
        _ => Ok(false),
    }
}

// ---------------------------------------------------------------------------------------------
// An ordered, lazily opened view of a JSON text, shared with `embeddings`.

/// The members of an object, in order, duplicates kept.
pub(crate) type Entries<'a> = Vec<(Cow<'a, str>, Node<'a>)>;

/// A JSON value being edited: untouched values are their original text.
pub(crate) enum Node<'a> {
    /// As it was in the input.
    Raw(&'a RawValue),
    /// An opened object.
    Object(Entries<'a>),
    /// An opened array.
    Array(Vec<Node<'a>>),
    /// A value written anew, as JSON text.
    Json(String),
}

/// The members of the object `text`, each value left raw.
pub(crate) fn parse_object(text: &str) -> Result<Entries<'_>, serde_json::Error> {
    serde_json::from_str::<RawObject<'_>>(text).map(|o| o.0)
}

/// [`parse_object`] over bytes (UTF-8 is checked).
pub(crate) fn parse_object_bytes(bytes: &[u8]) -> Result<Entries<'_>, serde_json::Error> {
    serde_json::from_slice::<RawObject<'_>>(bytes).map(|o| o.0)
}

/// The items of the array `text`, each left raw.
pub(crate) fn parse_array(text: &str) -> Result<Vec<Node<'_>>, serde_json::Error> {
    serde_json::from_str::<Vec<&RawValue>>(text).map(|items| items.into_iter().map(Node::Raw).collect())
}

/// Writes `entries` as a JSON object (compact between members).
pub(crate) fn write_entries(entries: &Entries<'_>, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (key, node)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(out, key);
        out.push(b':');
        write_node(node, out);
    }
    out.push(b'}');
}

fn write_node(node: &Node<'_>, out: &mut Vec<u8>) {
    match node {
        Node::Raw(raw) => out.extend_from_slice(raw.get().as_bytes()),
        Node::Json(text) => out.extend_from_slice(text.as_bytes()),
        Node::Object(entries) => write_entries(entries, out),
        Node::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_node(item, out);
            }
            out.push(b']');
        }
    }
}

struct RawObject<'a>(Entries<'a>);

impl<'de> Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = RawObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    entries.push((key, Node::Raw(value)));
                }
                Ok(RawObject(entries))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
                Err(de::Error::invalid_type(de::Unexpected::Seq, &self))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// An object key, borrowed from the input when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn q(drop: &[&str], rename: &[(&str, &str)]) -> Quirks {
        Quirks::new(strings(drop), pairs(rename))
    }

    fn applied(quirks: &Quirks, body: &str) -> Option<String> {
        quirks.apply(body.as_bytes()).unwrap().map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn no_quirks_or_no_mention_keeps_the_bytes() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(applied(&Quirks::default(), body), None);
        assert_eq!(applied(&q(&["logit_bias"], &[("max_completion_tokens", "max_tokens")]), body), None);
        // Mentioned only inside a string: parsed, but nothing changes.
        let body = r#"{"model":"m","messages":[{"role":"user","content":"what is \"logit_bias\"?"}]}"#;
        assert_eq!(applied(&q(&["logit_bias"], &[]), body), None);
        let body = r#"{"model":"m","note":"logit_bias"}"#;
        assert_eq!(applied(&q(&["logit_bias"], &[]), body), None);
    }

    #[test]
    fn drops_top_level_fields_and_keeps_order_and_bytes() {
        let body = r#"{ "model" : "m", "logit_bias": {"1": -100}, "messages": [ {"role": "user", "content": "a\u00e9\n"} ],
            "logprobs": true, "temperature": 0.70, "top_logprobs": 2 }"#;
        let out = applied(&q(&["logprobs", "logit_bias", "top_logprobs"], &[]), body).unwrap();
        assert_eq!(out, r#"{"model":"m","messages":[ {"role": "user", "content": "a\u00e9\n"} ],"temperature":0.70}"#);
    }

    #[test]
    fn renames_in_place_and_the_renamed_value_wins() {
        let body = r#"{"max_tokens":10,"model":"m","max_completion_tokens":200,"stream":true}"#;
        let out = applied(&q(&[], &[("max_completion_tokens", "max_tokens")]), body).unwrap();
        assert_eq!(out, r#"{"model":"m","max_tokens":200,"stream":true}"#);
    }

    #[test]
    fn duplicates_the_last_occurrence_is_renamed() {
        let body = r#"{"seed":1,"model":"m","seed":2}"#;
        assert_eq!(applied(&q(&[], &[("seed", "random_seed")]), body).unwrap(), r#"{"model":"m","random_seed":2}"#);
        let body = r#"{"store":true,"model":"m","store":false}"#;
        assert_eq!(applied(&q(&["store"], &[]), body).unwrap(), r#"{"model":"m"}"#);
    }

    #[test]
    fn nested_paths() {
        let body = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true,"x":1}}"#;
        let out = applied(&q(&["stream_options.include_usage"], &[]), body).unwrap();
        assert_eq!(out, r#"{"model":"m","stream":true,"stream_options":{"x":1}}"#);
        let out = applied(&q(&[], &[("stream_options.include_usage", "stream_options.usage")]), body).unwrap();
        assert_eq!(out, r#"{"model":"m","stream":true,"stream_options":{"usage":true,"x":1}}"#);
        // Absent nested key, or a parent that is not an object: nothing changes.
        assert_eq!(applied(&q(&["stream_options.nope"], &[]), body), None);
        assert_eq!(applied(&q(&["model.x"], &[]), body), None);
    }

    #[test]
    fn array_paths_edit_every_object_and_leave_the_rest_raw() {
        let body = r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","name":"ann","content":"hi"},"odd",{"role":"assistant","name":"bot","content":null}]}"#;
        let out = applied(&Quirks::for_host("api.groq.com"), body).unwrap();
        assert_eq!(
            out,
            r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"},"odd",{"role":"assistant","content":null}]}"#
        );
        let none = r#"{"model":"m","messages":[{"role":"user","content":"my name is x"}]}"#;
        assert_eq!(applied(&Quirks::for_host("api.groq.com"), none), None);
        // `"name"` appears, but not as a key of a message: parsed, nothing changes.
        let tool = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f"}}]}"#;
        assert_eq!(applied(&Quirks::for_host("api.groq.com"), tool), None);
    }

    #[test]
    fn escaped_keys_are_found_and_rewritten_escaped_as_needed() {
        let body = r#"{"model":"m","max_completion_\u0074okens":5,"k\"ey":1}"#;
        let out = applied(&q(&[], &[("max_completion_tokens", "max_tokens")]), body).unwrap();
        assert_eq!(out, r#"{"model":"m","max_tokens":5,"k\"ey":1}"#);
    }

    #[test]
    fn non_objects_are_refused() {
        let quirks = q(&["store"], &[]);
        assert_eq!(quirks.apply(br#"["store"]"#).unwrap_err().status, 400);
        assert_eq!(quirks.apply(br#"{"store": }"#).unwrap_err().status, 400);
        assert_eq!(quirks.apply(b"\"store\"").unwrap_err().status, 400);
    }

    #[test]
    fn defaults_per_host() {
        let mistral = Quirks::for_host("API.Mistral.AI:443");
        let body =
            r#"{"model":"mistral-large-latest","messages":[],"max_completion_tokens":64,"seed":7,"store":false}"#;
        assert_eq!(
            applied(&mistral, body).unwrap(),
            r#"{"model":"mistral-large-latest","messages":[],"max_tokens":64,"random_seed":7}"#
        );
        assert_eq!(Quirks::for_host("https://api.deepseek.com/v1").rename_params, pairs(&[MAX_TOKENS]));
        assert_eq!(Quirks::for_host("openrouter.ai").rename_params, pairs(&[MAX_TOKENS]));
        assert_eq!(Quirks::for_host("api.perplexity.ai.").rename_params, pairs(&[MAX_TOKENS]));
        assert_eq!(Quirks::for_host("localhost:11434").rename_params, pairs(&[MAX_TOKENS]));
        assert_eq!(Quirks::for_host("http://127.0.0.1:11434/v1").rename_params, pairs(&[MAX_TOKENS]));
        assert!(Quirks::for_host("api.cerebras.ai").drop_params.contains(&"service_tier".to_owned()));
        for host in ["api.x.ai", "api.together.xyz", "api.fireworks.ai", "localhost:8000", "api.openai.com", ""] {
            assert!(Quirks::for_host(host).is_empty(), "{host}");
        }
        for quirks in ["api.mistral.ai", "api.groq.com", "api.cerebras.ai", "api.deepseek.com", "localhost:11434"]
            .map(Quirks::for_host)
        {
            quirks.validate().unwrap();
        }
    }

    #[test]
    fn merged_configuration_extends_and_overrides() {
        let defaults = Quirks::for_host("api.mistral.ai");
        let merged = Quirks::merged(
            defaults,
            strings(&["seed", "stream_options", "store"]),
            pairs(&[("max_completion_tokens", "max_new_tokens")]),
        );
        assert_eq!(merged.drop_params, strings(&["seed", "stream_options", "store"]));
        assert_eq!(merged.rename_params, pairs(&[("max_completion_tokens", "max_new_tokens")]));
        assert_eq!(Quirks::merged(Quirks::default(), vec![], vec![]), Quirks::default());
    }

    #[test]
    fn validation() {
        assert!(q(&["a.b", "messages[].name"], &[("a.b", "c"), ("a.b", "a.c")]).validate().is_ok());
        for bad in [
            q(&[""], &[]),
            q(&["a..b"], &[]),
            q(&["messages[]"], &[]),
            q(&["[].x"], &[]),
            q(&[], &[("a.b", "c.d")]),
            q(&[], &[("a", "")]),
            q(&[], &[("a", "b[]")]),
        ] {
            let err = bad.validate().unwrap_err();
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn a_cross_object_target_is_read_as_its_last_segment() {
        let body = r#"{"a":{"b":1}}"#;
        assert_eq!(applied(&q(&[], &[("a.b", "c.d")]), body).unwrap(), r#"{"a":{"d":1}}"#);
    }

    #[test]
    fn drops_then_renames() {
        let body = r#"{"max_tokens":1,"max_completion_tokens":2}"#;
        let out = applied(&q(&["max_tokens"], &[("max_completion_tokens", "max_tokens")]), body).unwrap();
        assert_eq!(out, r#"{"max_tokens":2}"#);
    }

    fn json_body() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            "[a-z\"\\\\é ]{0,6}".prop_map(Value::String),
        ];
        let value = leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("(a|b|n|name|seed)", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        prop::collection::btree_map("(a|b|n|seed|messages|max_tokens|max_completion_tokens)", value, 0..6)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    proptest! {
        /// The edit agrees with the same edit done on a parsed document, and untouched bodies
        /// are reported as such.
        #[test]
        fn agrees_with_a_tree_edit(body in json_body()) {
            let quirks = q(&["a", "messages[].name", "b.n"], &[("max_completion_tokens", "max_tokens"), ("seed", "random_seed")]);
            let text = serde_json::to_string(&body).unwrap();
            let mut want = body.clone();
            let obj = want.as_object_mut().unwrap();
            obj.remove("a");
            if let Some(Value::Array(items)) = obj.get_mut("messages") {
                for item in items.iter_mut().filter_map(Value::as_object_mut) { item.remove("name"); }
            }
            if let Some(Value::Object(b)) = obj.get_mut("b") { b.remove("n"); }
            for (from, to) in [("max_completion_tokens", "max_tokens"), ("seed", "random_seed")] {
                if let Some(v) = obj.remove(from) { obj.insert(to.to_owned(), v); }
            }
            match quirks.apply(text.as_bytes()).unwrap() {
                Some(out) => {
                    let got: Value = serde_json::from_slice(&out).unwrap();
                    prop_assert_eq!(&got, &want);
                    prop_assert_ne!(&want, &body);
                }
                None => prop_assert_eq!(&want, &body),
            }
        }
    }
}
