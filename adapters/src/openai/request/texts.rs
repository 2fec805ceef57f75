//! The texts a model reads in an OpenAI request (message contents and the arguments of the
//! tool calls in the history), found on the tape the scan already built, for
//! the gateway's guardrails: no second parse of the body.
//!
//! A text is named by its byte range in the original body when the body holds it verbatim (no
//! escape sequence), else copied. The walk reads what the gateway's other walk over a
//! `serde_json::Value` reads, in the same order, with one deliberate difference: a key given
//! twice is read twice, so a duplicate cannot hide a text from the checks.

use std::borrow::Cow;
use std::ops::Range;

use simd_json::prelude::*;
use simd_json::tape::Value;

use super::raw_span;
use crate::json::tape::Origin;

/// Which API's texts to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextWalk {
    /// `/v1/chat/completions`: each message's content (string, or parts' `text`).
    Chat,
    /// `/v1/completions`: `prompt` (a string or a list).
    Completions,
    /// `/v1/embeddings`: `input` (a string or a list).
    Embeddings,
}

/// One text: where it sits in the body, or a copy when the body escapes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextRef {
    Span(Range<usize>),
    Owned(String),
}

/// A request's texts, in the walk's order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PromptTexts {
    pub texts: Vec<TextRef>,
    /// The body has a `response_format` (which this walk does not read).
    pub response_format: bool,
}

impl PromptTexts {
    /// The texts, borrowed from `body` (the body the scan read) where they can be. `None`
    /// when a span does not fit `body`.
    pub fn resolve<'b>(&self, body: &'b [u8]) -> Option<Vec<Cow<'b, str>>> {
        resolve(&self.texts, body)
    }
}

/// Texts found in `body`, borrowed from it where they can be; `None` when a span does not fit.
pub fn resolve<'b>(texts: &[TextRef], body: &'b [u8]) -> Option<Vec<Cow<'b, str>>> {
    texts
        .iter()
        .map(|t| match t {
            TextRef::Span(r) => body.get(r.clone()).and_then(|b| std::str::from_utf8(b).ok()).map(Cow::Borrowed),
            TextRef::Owned(s) => Some(Cow::Owned(s.clone())),
        })
        .collect()
}

/// The texts of a whole answer (OpenAI chat completion or completion; an Anthropic message):
/// each choice's `message.content`, its tool calls' arguments, and its `text`; an Anthropic
/// message's text blocks. `None` when the body nests deeper than the walk goes.
pub(crate) fn collect_answer(root: Value<'_, '_>, body: &[u8], origin: Origin) -> Option<Vec<TextRef>> {
    let walker = Walker { body, origin, texts: Vec::new() };
    let mut texts = Vec::new();
    let mut blocks = Vec::new();
    let mut message = false;
    let Some(object) = root.as_object() else { return Some(texts) };
    for (key, value) in &object {
        match key {
            "choices" => {
                let Some(choices) = value.as_array() else { continue };
                for choice in &choices {
                    let Some(fields) = choice.as_object() else { continue };
                    let (mut said, mut args, mut text) = (Vec::new(), Vec::new(), Vec::new());
                    for (key, value) in &fields {
                        match key {
                            "message" => {
                                let Some(m) = value.as_object() else { continue };
                                for (key, value) in &m {
                                    match key {
                                        "content" => said.extend(value.as_str().map(|s| walker.text(s))),
                                        "tool_calls" => walker.tool_arguments(value, &mut args),
                                        _ => {}
                                    }
                                }
                            }
                            "text" => text.extend(value.as_str().map(|s| walker.text(s))),
                            _ => {}
                        }
                    }
                    texts.append(&mut said);
                    texts.append(&mut args);
                    texts.append(&mut text);
                }
            }
            "type" => message = value.as_str() == Some("message"),
            "content" => walker.content(value, &mut blocks, 0)?,
            _ => {}
        }
    }
    if message {
        texts.append(&mut blocks);
    }
    Some(texts)
}

/// How deep content parts may nest (tool results in tool results) before the walk gives up
/// and says so: the caller then reads the body another way, so nothing goes unread.
const MAX_DEPTH: usize = 32;

/// The texts of `root`, or `None` when the body nests deeper than the walk goes.
pub(super) fn collect(root: Value<'_, '_>, body: &[u8], origin: Origin, walk: TextWalk) -> Option<PromptTexts> {
    let mut out = Walker { body, origin, texts: Vec::new() };
    let mut response_format = false;
    let object = root.as_object()?;
    for (key, value) in &object {
        match (walk, key) {
            (TextWalk::Chat, "messages") => out.messages(value)?,
            (TextWalk::Completions, "prompt") | (TextWalk::Embeddings, "input") => out.strings(value),
            (_, "response_format") => response_format = true,
            _ => {}
        }
    }
    Some(PromptTexts { texts: out.texts, response_format })
}

struct Walker<'b> {
    body: &'b [u8],
    origin: Origin,
    texts: Vec<TextRef>,
}

impl Walker<'_> {
    fn text(&self, s: &str) -> TextRef {
        match raw_span(s, self.body, self.origin) {
            Some(r) => TextRef::Span(r),
            None => TextRef::Owned(s.to_owned()),
        }
    }

    fn strings(&mut self, v: Value<'_, '_>) {
        if let Some(s) = v.as_str() {
            self.texts.push(self.text(s));
        } else if let Some(items) = v.as_array() {
            for item in &items {
                if let Some(s) = item.as_str() {
                    self.texts.push(self.text(s));
                }
            }
        }
    }

    fn messages(&mut self, v: Value<'_, '_>) -> Option<()> {
        let Some(list) = v.as_array() else { return Some(()) };
        for m in &list {
            let Some(fields) = m.as_object() else { continue };
            let mut args = Vec::new();
            for (key, value) in &fields {
                match key {
                    "content" => {
                        let mut found = std::mem::take(&mut self.texts);
                        self.content(value, &mut found, 0)?;
                        self.texts = found;
                    }
                    "tool_calls" => self.tool_arguments(value, &mut args),
                    _ => {}
                }
            }
            self.texts.append(&mut args);
        }
        Some(())
    }

    /// Each tool call's `function.arguments`.
    fn tool_arguments(&self, v: Value<'_, '_>, out: &mut Vec<TextRef>) {
        let Some(calls) = v.as_array() else { return };
        for call in &calls {
            let Some(fields) = call.as_object() else { continue };
            for (key, function) in &fields {
                let Some(function) = function.as_object().filter(|_| key == "function") else { continue };
                for (key, args) in &function {
                    if let Some(s) = args.as_str().filter(|_| key == "arguments") {
                        out.push(self.text(s));
                    }
                }
            }
        }
    }

    /// A string, or parts: each part's `text`, then, for a tool result, its own content.
    fn content(&self, v: Value<'_, '_>, out: &mut Vec<TextRef>, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        if let Some(s) = v.as_str() {
            out.push(self.text(s));
            return Some(());
        }
        let Some(parts) = v.as_array() else { return Some(()) };
        for part in &parts {
            let Some(fields) = part.as_object() else { continue };
            let mut tool_result = false;
            let mut tool_use = false;
            let mut has_input = false;
            let mut nested = Vec::new();
            for (key, value) in &fields {
                match key {
                    "text" => {
                        if let Some(s) = value.as_str() {
                            out.push(self.text(s));
                        }
                    }
                    "type" => {
                        tool_result = value.as_str() == Some("tool_result");
                        tool_use = value.as_str() == Some("tool_use");
                    }
                    "content" => self.content(value, &mut nested, depth + 1)?,
                    "input" => has_input = true,
                    _ => {}
                }
            }
            if tool_result {
                out.append(&mut nested);
            }
            // A tool call's input is read as its JSON text, which this walk does not write:
            // the caller reads the body another way.
            if tool_use && has_input {
                return None;
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::request::Scanner;

    fn texts(walk: TextWalk, body: &[u8]) -> Option<Vec<String>> {
        let facts = Scanner::new().scan_with(body, Some(walk)).ok()?;
        let found = facts.texts?;
        Some(found.resolve(body)?.into_iter().map(Cow::into_owned).collect())
    }

    #[test]
    fn texts_are_spans_unless_escaped() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"plain"},{"role":"user","content":[{"type":"text","text":"a\"b"}]}]}"#;
        let facts = Scanner::new().scan_with(body, Some(TextWalk::Chat)).unwrap();
        let found = facts.texts.unwrap();
        assert!(matches!(&found.texts[0], TextRef::Span(r) if &body[r.clone()] == b"plain"));
        assert_eq!(found.texts[1], TextRef::Owned("a\"b".into()));
        assert!(!found.response_format);
        assert_eq!(texts(TextWalk::Completions, br#"{"prompt":["x",1,"y"]}"#).unwrap(), ["x", "y"]);
        assert_eq!(texts(TextWalk::Embeddings, br#"{"input":"e"}"#).unwrap(), ["e"]);
        let scan = Scanner::new().scan_with(br#"{"response_format":{"type":"json_object"}}"#, Some(TextWalk::Chat));
        assert!(scan.unwrap().texts.unwrap().response_format);
        // Without a walk, nothing is read.
        assert_eq!(Scanner::new().scan(body).unwrap().texts, None);
    }

    #[test]
    fn tool_results_and_repeated_keys_are_read() {
        let body = br#"{"messages":[{"content":[{"content":[{"text":"inner"}],"text":"outer","type":"tool_result"}],"content":"again"}]}"#;
        assert_eq!(texts(TextWalk::Chat, body).unwrap(), ["outer", "inner", "again"]);
    }

    #[test]
    fn nesting_past_the_walk_says_so() {
        let mut body = String::from(r#"{"messages":[{"content":"#);
        for _ in 0..40 {
            body.push_str(r#"[{"type":"tool_result","content":"#);
        }
        body.push_str(r#""deep""#);
        for _ in 0..40 {
            body.push_str("}]");
        }
        body.push_str("}]}");
        let facts = Scanner::new().scan_with(body.as_bytes(), Some(TextWalk::Chat)).unwrap();
        assert_eq!(facts.texts, None);
    }
}
