//! Canned Gemini answers (`models/{model}:generateContent` and `:streamGenerateContent?alt=sse`),
//! for the network mock provider, as Google documents them
//! (<https://ai.google.dev/api/generate-content>). When the request declares functions the
//! answer calls the first one; usage reports cached tokens so their mapping can be checked.

use serde_json::{Value, json};

use super::Reply;

/// Prompt tokens the mock reports as served from the context cache.
pub const CACHED_TOKENS: u64 = 3;

/// What the request asks the mock to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ask {
    /// The first declared function's name.
    pub tool: Option<String>,
    /// `generationConfig.thinkingConfig.thinkingBudget`, when positive: reported back as
    /// `thoughtsTokenCount`.
    pub thinking_budget: Option<u64>,
}

/// Reads what the mock needs (`Err`: a Gemini error body).
pub fn ask(body: &[u8]) -> Result<Ask, Vec<u8>> {
    let v: Value = serde_json::from_slice(body).map_err(|e| error_body(400, "INVALID_ARGUMENT", &e.to_string()))?;
    if !v.get("contents").is_some_and(Value::is_array) {
        return Err(error_body(
            400,
            "INVALID_ARGUMENT",
            "* GenerateContentRequest.contents: contents is not specified",
        ));
    }
    let tool = v.pointer("/tools/0/functionDeclarations/0/name").and_then(Value::as_str).map(str::to_owned);
    let thinking_budget =
        v.pointer("/generationConfig/thinkingConfig/thinkingBudget").and_then(Value::as_u64).filter(|b| *b > 0);
    Ok(Ask { tool, thinking_budget })
}

/// `{"error": {"code", "message", "status"}}`.
pub fn error_body(code: u16, status: &str, message: &str) -> Vec<u8> {
    json!({"error": {"code": code, "message": message, "status": status}}).to_string().into_bytes()
}

fn usage(r: &Reply<'_>, ask: &Ask) -> Value {
    let output = r.completion_tokens as u64;
    let mut u = json!({
        "promptTokenCount": r.prompt_tokens,
        "candidatesTokenCount": output,
        "totalTokenCount": r.prompt_tokens + output,
        "cachedContentTokenCount": CACHED_TOKENS,
    });
    // Gemini omits the field when the model did not think.
    if let Some(b) = ask.thinking_budget {
        u["thoughtsTokenCount"] = json!(b);
    }
    u
}

fn call() -> Value {
    json!({"query": "mock", "limit": 3})
}

fn response(r: &Reply<'_>, parts: Value, finish: Option<&str>, usage: Option<Value>) -> Value {
    let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    if let Some(f) = finish {
        candidate["finishReason"] = json!(f);
    }
    let mut v = json!({"candidates": [candidate], "modelVersion": r.model, "responseId": r.id});
    if let Some(u) = usage {
        v["usageMetadata"] = u;
    }
    v
}

/// A complete answer.
pub fn generate(r: &Reply<'_>, ask: &Ask) -> Vec<u8> {
    let parts = match &ask.tool {
        Some(name) => json!([{"functionCall": {"name": name, "args": call()}}]),
        None => json!([{"text": r.text()}]),
    };
    response(r, parts, Some("STOP"), Some(usage(r, ask))).to_string().into_bytes()
}

/// The events of a streamed answer (`alt=sse`): one response per token, the last with the
/// finish reason and usage; a function call arrives whole in one event.
pub fn stream(r: &Reply<'_>, ask: &Ask) -> Vec<Vec<u8>> {
    let event = |v: Value| format!("data: {v}\r\n\r\n").into_bytes();
    match &ask.tool {
        Some(name) => vec![event(response(
            r,
            json!([{"functionCall": {"name": name, "args": call()}}]),
            Some("STOP"),
            Some(usage(r, ask)),
        ))],
        None => {
            let n = r.completion_tokens;
            (0..n.max(1))
                .map(|i| {
                    let last = i + 1 >= n;
                    let t = if n == 0 { String::new() } else { r.token(i) };
                    event(response(r, json!([{"text": t}]), last.then_some("STOP"), last.then(|| usage(r, ask))))
                })
                .collect()
        }
    }
}

/// `models/{model}:batchEmbedContents`: one vector per request, `outputDimensionality` floats
/// (default 8, at most 3072). `Err`: a Gemini error body.
pub fn batch_embed(body: &[u8]) -> Result<Vec<u8>, Vec<u8>> {
    let v: Value = serde_json::from_slice(body).map_err(|e| error_body(400, "INVALID_ARGUMENT", &e.to_string()))?;
    let Some(requests) = v.get("requests").and_then(Value::as_array).filter(|r| !r.is_empty()) else {
        return Err(error_body(
            400,
            "INVALID_ARGUMENT",
            "* BatchEmbedContentsRequest.requests: requests is not specified",
        ));
    };
    if requests.len() > 100 {
        return Err(error_body(
            400,
            "INVALID_ARGUMENT",
            "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch",
        ));
    }
    let mut embeddings = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        if r.pointer("/content/parts/0/text").and_then(Value::as_str).is_none() {
            return Err(error_body(
                400,
                "INVALID_ARGUMENT",
                &format!("* requests[{i}].content: content is not specified"),
            ));
        }
        let dims = r.get("outputDimensionality").and_then(Value::as_u64).unwrap_or(8).clamp(1, 3072);
        embeddings.push(json!({"values": super::unit_vector(i, usize::try_from(dims).unwrap_or(8))}));
    }
    Ok(json!({"embeddings": embeddings}).to_string().into_bytes())
}

/// Vertex AI's `…/models/{model}:predict` for text embeddings: one vector per instance,
/// `parameters.outputDimensionality` floats (default 8), with a token count per instance.
/// `Err`: a Google error body.
pub fn predict(body: &[u8]) -> Result<Vec<u8>, Vec<u8>> {
    let v: Value = serde_json::from_slice(body).map_err(|e| error_body(400, "INVALID_ARGUMENT", &e.to_string()))?;
    let Some(instances) = v.get("instances").and_then(Value::as_array).filter(|i| !i.is_empty()) else {
        return Err(error_body(400, "INVALID_ARGUMENT", "instances: field is required"));
    };
    let dims = v.pointer("/parameters/outputDimensionality").and_then(Value::as_u64).unwrap_or(8).clamp(1, 3072);
    let mut predictions = Vec::with_capacity(instances.len());
    for (i, inst) in instances.iter().enumerate() {
        let Some(text) = inst.get("content").and_then(Value::as_str) else {
            return Err(error_body(400, "INVALID_ARGUMENT", &format!("instances[{i}].content is required")));
        };
        let tokens = (text.len() as u64).div_ceil(4).max(1);
        predictions.push(json!({"embeddings": {
            "statistics": {"truncated": false, "token_count": tokens},
            "values": super::unit_vector(i, usize::try_from(dims).unwrap_or(8)),
        }}));
    }
    Ok(json!({"predictions": predictions}).to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn reply() -> Reply<'static> {
        Reply {
            id: "r1",
            created: 0,
            model: "gemini-mock",
            prompt_tokens: 10,
            completion_tokens: 3,
            filler: None,
            script: &[],
            tool_args: &[],
        }
    }

    #[test]
    fn text_tool_and_stream() {
        let plain: Value = serde_json::from_slice(&generate(&reply(), &Ask::default())).unwrap();
        assert_eq!(plain["candidates"][0]["content"]["parts"][0]["text"], "This is a");
        assert_eq!(plain["usageMetadata"]["totalTokenCount"], 13);
        let tool: Value =
            serde_json::from_slice(&generate(&reply(), &Ask { tool: Some("f".into()), ..Ask::default() })).unwrap();
        assert_eq!(tool["candidates"][0]["content"]["parts"][0]["functionCall"]["name"], "f");
        let events = stream(&reply(), &Ask::default());
        assert_eq!(events.len(), 3);
        assert!(String::from_utf8(events[2].clone()).unwrap().contains("usageMetadata"));
        assert!(ask(br#"{"contents":[]}"#).is_ok() && ask(b"{}").is_err());
    }
}
