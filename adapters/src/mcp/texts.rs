//! The texts of tool calls that guardrails read: every string in a call's `arguments`, and in a
//! result the text content blocks, embedded text resources and every string of
//! `structuredContent`. Collected in a fixed order and written back in the same order, so a
//! rewriting rule changes only the strings it rewrote. Images, audio and blobs (base64) are
//! not text and are left alone.

use serde_json::Value;

/// Every string leaf under `v`, depth first, object members in their order.
pub fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// Writes `texts` back over the string leaves [`strings`] found, in the same order.
pub fn put_strings(v: &mut Value, texts: &mut impl Iterator<Item = String>) {
    match v {
        Value::String(s) => {
            if let Some(t) = texts.next() {
                *s = t;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| put_strings(x, texts)),
        Value::Object(o) => o.values_mut().for_each(|x| put_strings(x, texts)),
        _ => {}
    }
}

/// The text-bearing parts of a `tools/call` result, each visited in a fixed order.
fn result_parts(result: &mut Value, mut each: impl FnMut(&mut Value)) {
    if let Some(content) = result.get_mut("content").and_then(Value::as_array_mut) {
        for block in content {
            match block.get("type").and_then(Value::as_str) {
                Some("text") => {
                    if let Some(t) = block.get_mut("text") {
                        each(t);
                    }
                }
                Some("resource") => {
                    if let Some(t) = block.get_mut("resource").and_then(|r| r.get_mut("text")) {
                        each(t);
                    }
                }
                _ => {}
            }
        }
    }
    if let Some(s) = result.get_mut("structuredContent") {
        each(s);
    }
}

/// The texts of a `tools/call` result (the same parts as [`result_parts`], read only).
pub fn result_texts(result: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for block in result.get("content").and_then(Value::as_array).into_iter().flatten() {
        let text = match block.get("type").and_then(Value::as_str) {
            Some("text") => block.get("text"),
            Some("resource") => block.get("resource").and_then(|r| r.get("text")),
            _ => None,
        };
        if let Some(t) = text {
            strings(t, &mut out);
        }
    }
    if let Some(s) = result.get("structuredContent") {
        strings(s, &mut out);
    }
    out
}

/// Writes rewritten texts back into a result, in [`result_texts`]' order.
pub fn put_result_texts(result: &mut Value, texts: Vec<String>) {
    let mut it = texts.into_iter();
    result_parts(result, |v| put_strings(v, &mut it));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn argument_strings_round_trip_in_order() {
        let mut args = json!({"to": "a@b.io", "n": 3, "cc": ["c@d.io", {"note": "hi"}], "ok": true});
        let mut found = Vec::new();
        strings(&args, &mut found);
        // Members in the map's order (serde_json's default map sorts keys).
        assert_eq!(found, ["c@d.io", "hi", "a@b.io"]);
        let rewritten = found.iter().map(|s| s.to_uppercase()).collect::<Vec<_>>();
        put_strings(&mut args, &mut rewritten.into_iter());
        assert_eq!(args, json!({"to": "A@B.IO", "n": 3, "cc": ["C@D.IO", {"note": "HI"}], "ok": true}));
    }

    #[test]
    fn result_texts_skip_binary_content() {
        let mut r = json!({
            "content": [
                {"type": "text", "text": "mail a@b.io"},
                {"type": "image", "data": "aGVsbG8=", "mimeType": "image/png"},
                {"type": "resource", "resource": {"uri": "file:///x", "text": "body"}},
            ],
            "structuredContent": {"who": "c@d.io"},
            "isError": false
        });
        let texts = result_texts(&r);
        assert_eq!(texts, ["mail a@b.io", "body", "c@d.io"]);
        put_result_texts(&mut r, vec!["mail <EMAIL_1>".into(), "body".into(), "<EMAIL_2>".into()]);
        assert_eq!(r["content"][0]["text"], "mail <EMAIL_1>");
        assert_eq!(r["content"][1]["data"], "aGVsbG8=");
        assert_eq!(r["content"][2]["resource"]["uri"], "file:///x");
        assert_eq!(r["structuredContent"]["who"], "<EMAIL_2>");
    }
}
