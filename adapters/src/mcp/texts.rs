//! The texts of tool calls that guardrails read: every string, number and object key in a
//! call's `arguments` (a card number is as sensitive as a number as in a string, and a secret
//! may be a key), and in a result the text content blocks, embedded text resources and every
//! string, number and key of `structuredContent`. Collected in a fixed order and written back
//! in the same order, so a rewriting rule changes only what it rewrote (a rewritten number
//! becomes a string). Images, audio and blobs (base64) are not text and are left alone.

use serde_json::Value;

/// Every string, number and object key under `v`, depth first, object members in their
/// order (each key before its value).
pub fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => {
            for (k, x) in o {
                out.push(k.clone());
                strings(x, out);
            }
        }
        _ => {}
    }
}

/// Writes `texts` back over what [`strings`] found, in the same order: strings replaced, keys
/// renamed, and a number whose text changed replaced by that text (a string).
pub fn put_strings(v: &mut Value, texts: &mut impl Iterator<Item = String>) {
    match v {
        Value::String(s) => {
            if let Some(t) = texts.next() {
                *s = t;
            }
        }
        Value::Number(n) => {
            if let Some(t) = texts.next().filter(|t| *t != n.to_string()) {
                *v = Value::String(t);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| put_strings(x, texts)),
        Value::Object(o) => {
            for (k, mut x) in std::mem::take(o) {
                let key = texts.next().unwrap_or(k);
                put_strings(&mut x, texts);
                o.insert(key, x);
            }
        }
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
        let mut args = json!({"to": "a@b.io", "n": 3, "cc": ["c@d.io", {"sk-key": "hi"}], "ok": true, "card": 4242424242424242u64});
        let mut found = Vec::new();
        strings(&args, &mut found);
        // Members in the map's order (serde_json's default map sorts keys), each key first.
        assert_eq!(found, ["card", "4242424242424242", "cc", "c@d.io", "sk-key", "hi", "n", "3", "ok", "to", "a@b.io"]);
        let rewritten = found
            .iter()
            .map(|s| match s.as_str() {
                "4242424242424242" => "<CREDIT_CARD_1>".to_owned(),
                "sk-key" => "<SECRET_1>".to_owned(),
                "a@b.io" | "c@d.io" => s.to_uppercase(),
                _ => s.clone(),
            })
            .collect::<Vec<_>>();
        put_strings(&mut args, &mut rewritten.into_iter());
        assert_eq!(
            args,
            json!({"to": "A@B.IO", "n": 3, "cc": ["C@D.IO", {"<SECRET_1>": "hi"}], "ok": true, "card": "<CREDIT_CARD_1>"})
        );
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
        assert_eq!(texts, ["mail a@b.io", "body", "who", "c@d.io"]);
        put_result_texts(&mut r, vec!["mail <EMAIL_1>".into(), "body".into(), "who".into(), "<EMAIL_2>".into()]);
        assert_eq!(r["content"][0]["text"], "mail <EMAIL_1>");
        assert_eq!(r["content"][1]["data"], "aGVsbG8=");
        assert_eq!(r["content"][2]["resource"]["uri"], "file:///x");
        assert_eq!(r["structuredContent"]["who"], "<EMAIL_2>");
    }
}
