//! Replacing the model name in a request body, for routes that map a public model alias to a
//! provider's model.
//!
//! The common case is a splice: the scan recorded the byte range of the unescaped `model`
//! string, so the new name goes into that range and every other byte (whitespace, key order,
//! number formatting, a megabyte of messages) reaches the provider exactly as the client sent it.
//! Only when the client escaped its model string (rare: `"gpt\u002d4o"`) do we re-serialize the
//! whole document, which may reorder keys, drop earlier duplicate keys and reformat numbers; the
//! provider sees the same JSON values either way.

use std::ops::Range;

use bytes::Bytes;
use simd_json::prelude::*;

use super::{ModelField, RequestFacts, ScanError};
use crate::json::escape::{escape_contents_into, write_string};

/// Returns `body` with its `model` set to `new_model`.
///
/// `facts` must come from scanning this very `body`. A span that does not fit `body` is not
/// trusted: the document is re-serialized instead.
///
/// # Errors
/// Only on the re-serialization path or when inserting into a body that does not start with an
/// object: the body is not JSON, or not an object.
pub fn rewrite_model(body: &[u8], facts: &RequestFacts, new_model: &str) -> Result<Bytes, ScanError> {
    match &facts.model {
        Some(ModelField { raw_span: Some(span), .. }) if is_quoted_contents(body, span) => {
            Ok(splice(body, span.clone(), new_model))
        }
        Some(_) => reserialize(body, new_model),
        None => insert(body, new_model),
    }
}

fn is_quoted_contents(body: &[u8], span: &Range<usize>) -> bool {
    span.start <= span.end
        && span.start.checked_sub(1).is_some_and(|open| body.get(open) == Some(&b'"'))
        && body.get(span.end) == Some(&b'"')
}

fn splice(body: &[u8], span: Range<usize>, new_model: &str) -> Bytes {
    let (head, rest) = body.split_at(span.start);
    let tail = rest.get(span.len()..).unwrap_or_default();
    let mut out = Vec::with_capacity(body.len().saturating_sub(span.len()) + new_model.len() + 8);
    out.extend_from_slice(head);
    escape_contents_into(&mut out, new_model);
    out.extend_from_slice(tail);
    Bytes::from(out)
}

/// Adds `"model":"<new>"` as the first member, right after the opening brace.
fn insert(body: &[u8], new_model: &str) -> Result<Bytes, ScanError> {
    let open = first_non_whitespace(body, 0).ok_or(ScanError::NotJson { detail: "the body is empty".to_owned() })?;
    if body.get(open) != Some(&b'{') {
        return Err(ScanError::NotAnObject);
    }
    let after_open = open + 1;
    let empty = first_non_whitespace(body, after_open).and_then(|i| body.get(i)) == Some(&b'}');
    let (head, tail) = body.split_at(after_open);
    let mut out = Vec::with_capacity(body.len() + new_model.len() + 12);
    out.extend_from_slice(head);
    out.extend_from_slice(b"\"model\":");
    write_string(&mut out, new_model);
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(tail);
    Ok(Bytes::from(out))
}

fn first_non_whitespace(body: &[u8], from: usize) -> Option<usize> {
    body.get(from..)?.iter().position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r')).map(|i| from + i)
}

fn reserialize(body: &[u8], new_model: &str) -> Result<Bytes, ScanError> {
    let mut copy = body.to_vec();
    let mut document =
        simd_json::to_borrowed_value(&mut copy).map_err(|e| ScanError::NotJson { detail: e.to_string() })?;
    let object = document.as_object_mut().ok_or(ScanError::NotAnObject)?;
    object.insert("model".into(), simd_json::BorrowedValue::from(new_model.to_owned()));
    Ok(Bytes::from(document.encode().into_bytes()))
}

/// Makes a streamed request ask for the final usage chunk (`stream_options.include_usage:
/// true`) when the client did not: the gateway needs the usage for cost and token limits, and
/// strips that chunk before the client sees it. When the body has no `stream_options` the
/// member is added after the opening brace (no parse); otherwise the body is re-serialised.
pub fn ask_for_usage(body: &[u8]) -> Result<Bytes, ScanError> {
    if memchr::memmem::find(body, b"\"stream_options\"").is_none() {
        let open =
            first_non_whitespace(body, 0).ok_or(ScanError::NotJson { detail: "the body is empty".to_owned() })?;
        if body.get(open) != Some(&b'{') {
            return Err(ScanError::NotAnObject);
        }
        let (head, rest) = body.split_at(open + 1);
        let mut out = Vec::with_capacity(body.len() + 40);
        out.extend_from_slice(head);
        out.extend_from_slice(b"\"stream_options\":{\"include_usage\":true}");
        if first_non_whitespace(rest, 0).is_some_and(|i| rest.get(i) != Some(&b'}')) {
            out.push(b',');
        }
        out.extend_from_slice(rest);
        return Ok(Bytes::from(out));
    }
    let mut copy = body.to_vec();
    let mut document =
        simd_json::to_borrowed_value(&mut copy).map_err(|e| ScanError::NotJson { detail: e.to_string() })?;
    let object = document.as_object_mut().ok_or(ScanError::NotAnObject)?;
    let mut options = simd_json::borrowed::Object::new();
    if let Some(simd_json::BorrowedValue::Object(existing)) = object.get("stream_options") {
        for (k, v) in existing.iter() {
            options.insert(k.clone(), v.clone());
        }
    }
    options.insert("include_usage".into(), simd_json::BorrowedValue::from(true));
    object.insert("stream_options".into(), simd_json::BorrowedValue::from(options));
    Ok(Bytes::from(document.encode().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_asked_for_without_losing_anything() {
        let read = |b: &Bytes| serde_json::from_slice::<serde_json::Value>(b).unwrap();
        let out = ask_for_usage(br#" {"model":"m","stream":true}"#).unwrap();
        assert_eq!(read(&out)["stream_options"]["include_usage"], true);
        assert_eq!(read(&out)["model"], "m");
        let out = ask_for_usage(br#"{}"#).unwrap();
        assert_eq!(read(&out), serde_json::json!({"stream_options": {"include_usage": true}}));
        let out = ask_for_usage(br#"{"stream_options":{"include_usage":false,"x":1},"stream":true}"#).unwrap();
        assert_eq!(read(&out)["stream_options"], serde_json::json!({"include_usage": true, "x": 1}));
        assert!(ask_for_usage(b"[]").is_err());
    }

    #[test]
    fn a_span_that_does_not_fit_the_body_falls_back_to_reserializing() {
        let body = br#"{"model":"abc","n":1}"#;
        let facts = RequestFacts {
            model: Some(ModelField { name: "abc".to_owned(), raw_span: Some(3..100) }),
            ..RequestFacts::default()
        };
        let out = rewrite_model(body, &facts, "xyz").unwrap();
        let mut out = out.to_vec();
        let value = simd_json::to_owned_value(&mut out).unwrap();
        assert_eq!(value["model"], "xyz");
        assert_eq!(value["n"], 1);
    }

    #[test]
    fn insert_handles_whitespace_and_empty_objects() {
        let facts = RequestFacts::default();
        let cases: [(&[u8], &[u8]); 4] = [
            (b"{}", br#"{"model":"m"}"#),
            (b" \n{ \t}\n", b" \n{\"model\":\"m\" \t}\n"),
            (br#"{"a":1}"#, br#"{"model":"m","a":1}"#),
            (b"\r\n{\n\"a\":1}", b"\r\n{\"model\":\"m\",\n\"a\":1}"),
        ];
        for (body, expected) in cases {
            let out = rewrite_model(body, &facts, "m").unwrap();
            assert_eq!(&out[..], expected);
        }
        assert_eq!(rewrite_model(b"[1]", &facts, "m"), Err(ScanError::NotAnObject));
        assert!(matches!(rewrite_model(b"  ", &facts, "m"), Err(ScanError::NotJson { .. })));
    }
}
