//! Canonical chat request ⇄ Bedrock Converse (AWS docs: Bedrock API reference,
//! `API_runtime_Converse`, `API_runtime_Message`, `API_runtime_ContentBlock`,
//! `API_runtime_ToolConfiguration`, `API_runtime_TokenUsage`).
//!
//! Request mapping:
//! - `system` and `developer` messages → `system: [{text}]`, in order;
//! - `user`, `assistant` and `tool` messages → `messages` with roles `user` / `assistant`;
//!   a tool result becomes a `toolResult` block of a user message, and consecutive messages of
//!   the same role are merged (Bedrock wants turns to alternate); empty text is dropped
//!   (Bedrock refuses blank text blocks) and a message left with no blocks is skipped;
//! - images: `data:` URLs only → `{image: {format, source: {bytes}}}` (the base64 is passed
//!   through); an `http(s)` URL is a 400, as Bedrock takes image bytes only;
//! - `max_completion_tokens`/`max_tokens`, `temperature`, `top_p`, `stop` →
//!   `inferenceConfig {maxTokens, temperature, topP, stopSequences}`;
//! - `tools` → `toolConfig.tools[].toolSpec {name, description, inputSchema: {json}}`, and
//!   `tool_choice` `auto` → `{auto:{}}`, `required` → `{any:{}}`, a named function →
//!   `{tool:{name}}`. `none` has no Bedrock equivalent, so the tools are left out entirely
//!   (note that Bedrock refuses a conversation holding `toolUse`/`toolResult` blocks without a
//!   `toolConfig`, so `none` with tool history is refused upstream);
//! - `n` > 1, audio and file parts, and `function` messages are refused with a 400; fields with
//!   no Converse counterpart (`reasoning_effort`, `response_format`, `user`, `seed`, ...) are
//!   dropped.

use super::api_error;
use super::sigv4::uri_encode;
use crate::canonical::{
    ApiError, ChatCompletion, ChatRequest, CompletionTokensDetails, Content, FinishReason, FunctionCall, Message, Part,
    PromptTokensDetails, ResponseMessage, Role, ToolCall, ToolChoice, Usage,
};
use serde_json::{Map, Value, json};

/// A Converse request ready to sign and send.
#[derive(Debug, Clone, PartialEq)]
pub struct ConverseRequest {
    /// `/model/{model id, URI-encoded}/converse` or `/converse-stream`, as sent on the wire.
    pub path: String,
    /// Whether this is a ConverseStream request (from the chat request's `stream`).
    pub stream: bool,
    /// The JSON body.
    pub body: Value,
}

impl ConverseRequest {
    /// The body as bytes.
    pub fn body_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.body).unwrap_or_default()
    }
}

/// The wire path for `model_id` (a model id, inference profile id or ARN: `:` and `/` are
/// percent-encoded).
pub fn converse_path(model_id: &str, stream: bool) -> String {
    let op = if stream { "converse-stream" } else { "converse" };
    format!("/model/{}/{op}", uri_encode(model_id))
}

/// Translates a canonical chat request into a Converse (or ConverseStream, when
/// `req.stream`) request for `model_id`.
pub fn to_converse(req: &ChatRequest, model_id: &str) -> Result<ConverseRequest, ApiError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(api_error(400, "Bedrock Converse returns one choice: n must be 1", Some("n")));
    }
    let mut system: Vec<Value> = Vec::new();
    let mut messages: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, msg) in req.messages.iter().enumerate() {
        let (role, blocks) = match msg.role {
            Role::System | Role::Developer => {
                let text = msg.content.as_ref().map(Content::joined_text).unwrap_or_default();
                if !text.is_empty() {
                    system.push(json!({ "text": text }));
                }
                continue;
            }
            Role::User => ("user", user_blocks(msg, i)?),
            Role::Assistant => ("assistant", assistant_blocks(msg, i)?),
            Role::Tool => ("user", vec![tool_result_block(msg, i)?]),
            Role::Function => {
                return Err(api_error(
                    400,
                    "`function` messages are not supported for Bedrock; use tool messages",
                    Some(&format!("messages[{i}].role")),
                ));
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match messages.last_mut() {
            Some((last_role, last_blocks)) if *last_role == role => last_blocks.extend(blocks),
            _ => messages.push((role, blocks)),
        }
    }

    let mut body = Map::new();
    body.insert(
        "messages".into(),
        Value::Array(messages.into_iter().map(|(role, content)| json!({ "role": role, "content": content })).collect()),
    );
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    let mut inference = Map::new();
    if let Some(max) = req.max_output_tokens() {
        inference.insert("maxTokens".into(), json!(max));
    }
    if let Some(t) = req.temperature {
        inference.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        inference.insert("topP".into(), json!(p));
    }
    if let Some(stop) = &req.stop {
        let stops = stop.to_vec();
        if !stops.is_empty() {
            inference.insert("stopSequences".into(), json!(stops));
        }
    }
    if !inference.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(inference));
    }
    if let Some(tool_config) = tool_config(req)? {
        body.insert("toolConfig".into(), tool_config);
    }
    Ok(ConverseRequest { path: converse_path(model_id, req.stream), stream: req.stream, body: Value::Object(body) })
}

fn text_block(text: &str) -> Option<Value> {
    (!text.is_empty()).then(|| json!({ "text": text }))
}

fn user_blocks(msg: &Message, i: usize) -> Result<Vec<Value>, ApiError> {
    let mut blocks = Vec::new();
    match &msg.content {
        None => {}
        Some(Content::Text(text)) => blocks.extend(text_block(text)),
        Some(Content::Parts(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                let param = || format!("messages[{i}].content[{j}]");
                match part {
                    Part::Text { text } => blocks.extend(text_block(text)),
                    Part::ImageUrl { image_url } => {
                        let Some((media, data)) = image_url.as_data() else {
                            return Err(api_error(
                                400,
                                "Bedrock takes image bytes only: send the image as a base64 \
                                 `data:` URL, not a link",
                                Some(&format!("{}.image_url.url", param())),
                            ));
                        };
                        let format = match media.to_ascii_lowercase().as_str() {
                            "image/png" => "png",
                            "image/jpeg" | "image/jpg" => "jpeg",
                            "image/gif" => "gif",
                            "image/webp" => "webp",
                            other => {
                                return Err(api_error(
                                    400,
                                    format!(
                                        "image type `{other}` is not supported by Bedrock \
                                         (png, jpeg, gif, webp)"
                                    ),
                                    Some(&format!("{}.image_url.url", param())),
                                ));
                            }
                        };
                        blocks.push(json!({ "image": {
                            "format": format,
                            "source": { "bytes": data },
                        }}));
                    }
                    Part::Refusal { refusal } => blocks.extend(text_block(refusal)),
                    Part::InputAudio { .. } | Part::File { .. } => {
                        return Err(api_error(
                            400,
                            "audio and file content parts are not supported for Bedrock",
                            Some(&param()),
                        ));
                    }
                }
            }
        }
    }
    Ok(blocks)
}

fn assistant_blocks(msg: &Message, i: usize) -> Result<Vec<Value>, ApiError> {
    let mut blocks = Vec::new();
    if let Some(content) = &msg.content {
        let text = match content {
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    Part::Text { text } => Some(text.as_str()),
                    Part::Refusal { refusal } => Some(refusal.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(""),
        };
        blocks.extend(text_block(&text));
    }
    for (j, call) in msg.tool_calls.iter().enumerate() {
        let args = call.function.arguments.trim();
        let input: Value = if args.is_empty() {
            json!({})
        } else {
            serde_json::from_str(args).map_err(|e| {
                api_error(
                    400,
                    format!("tool call arguments are not valid JSON: {e}"),
                    Some(&format!("messages[{i}].tool_calls[{j}].function.arguments")),
                )
            })?
        };
        blocks.push(json!({ "toolUse": {
            "toolUseId": call.id,
            "name": call.function.name,
            "input": input,
        }}));
    }
    Ok(blocks)
}

fn tool_result_block(msg: &Message, i: usize) -> Result<Value, ApiError> {
    let Some(id) = msg.tool_call_id.as_deref() else {
        return Err(api_error(
            400,
            "a tool message needs `tool_call_id`",
            Some(&format!("messages[{i}].tool_call_id")),
        ));
    };
    let text = msg.content.as_ref().map(Content::joined_text).unwrap_or_default();
    Ok(json!({ "toolResult": {
        "toolUseId": id,
        "content": [{ "text": text }],
    }}))
}

fn tool_config(req: &ChatRequest) -> Result<Option<Value>, ApiError> {
    if req.tools.is_empty() {
        return Ok(None);
    }
    let choice = match &req.tool_choice {
        None => None,
        Some(ToolChoice::Mode(mode)) => match mode.as_str() {
            "auto" => Some(json!({ "auto": {} })),
            "required" => Some(json!({ "any": {} })),
            "none" => return Ok(None),
            other => {
                return Err(api_error(
                    400,
                    format!("unknown tool_choice `{other}` (none, auto, required)"),
                    Some("tool_choice"),
                ));
            }
        },
        Some(ToolChoice::Function { function, .. }) => Some(json!({ "tool": { "name": function.name } })),
    };
    let tools: Vec<Value> = req
        .tools
        .iter()
        .map(|t| {
            let mut spec = Map::new();
            spec.insert("name".into(), json!(t.function.name));
            if let Some(d) = t.function.description.as_ref().filter(|d| !d.is_empty()) {
                spec.insert("description".into(), json!(d));
            }
            let schema = t.function.parameters.clone().unwrap_or_else(|| json!({ "type": "object", "properties": {} }));
            spec.insert("inputSchema".into(), json!({ "json": schema }));
            json!({ "toolSpec": spec })
        })
        .collect();
    let mut config = Map::new();
    config.insert("tools".into(), Value::Array(tools));
    if let Some(choice) = choice {
        config.insert("toolChoice".into(), choice);
    }
    Ok(Some(Value::Object(config)))
}

/// Bedrock `stopReason` → finish reason (`None` for an unknown reason).
pub fn finish_reason(stop_reason: &str) -> Option<FinishReason> {
    Some(match stop_reason {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "guardrail_intervened" | "content_filtered" => FinishReason::ContentFilter,
        _ => return None,
    })
}

/// Bedrock `usage` (`TokenUsage`) → canonical usage. `prompt_tokens` counts the cache reads
/// and writes too (Bedrock's `inputTokens` leaves them out).
pub fn usage(v: &Value) -> Usage {
    let n = |k: &str| v.get(k).and_then(Value::as_u64);
    let input = n("inputTokens").unwrap_or(0);
    let output = n("outputTokens").unwrap_or(0);
    let cache_read = n("cacheReadInputTokens");
    let cache_write = n("cacheWriteInputTokens");
    let prompt = input + cache_read.unwrap_or(0) + cache_write.unwrap_or(0);
    let total = n("totalTokens").unwrap_or(0).max(prompt + output);
    Usage {
        prompt_tokens: prompt,
        completion_tokens: output,
        total_tokens: total,
        prompt_tokens_details: (cache_read.is_some() || cache_write.is_some()).then(|| PromptTokensDetails {
            cached_tokens: cache_read.unwrap_or(0),
            cache_creation_tokens: cache_write,
        }),
        completion_tokens_details: None::<CompletionTokensDetails>,
    }
}

fn bad_response(why: &str) -> ApiError {
    api_error(502, format!("invalid Bedrock Converse response: {why}"), None)
}

/// Translates a Converse response body into a canonical chat completion with the given `id`,
/// `model` and `created` (the caller's clock).
pub fn from_converse(body: &[u8], model: &str, id: &str, created: u64) -> Result<ChatCompletion, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| bad_response(&e.to_string()))?;
    let content = v
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .ok_or_else(|| bad_response("no output.message.content"))?;
    let mut text: Option<String> = None;
    let mut reasoning: Option<String> = None;
    let mut tool_calls = Vec::new();
    for block in content {
        if let Some(t) = block.get("text").and_then(Value::as_str) {
            text.get_or_insert_with(String::new).push_str(t);
        } else if let Some(tu) = block.get("toolUse") {
            let input = tu.get("input").cloned().unwrap_or_else(|| json!({}));
            tool_calls.push(ToolCall {
                id: tu.get("toolUseId").and_then(Value::as_str).unwrap_or_default().to_string(),
                kind: "function".into(),
                function: FunctionCall {
                    name: tu.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
                    arguments: serde_json::to_string(&input).unwrap_or_else(|_| "{}".into()),
                },
            });
        } else if let Some(t) = block.pointer("/reasoningContent/reasoningText/text").and_then(Value::as_str) {
            reasoning.get_or_insert_with(String::new).push_str(t);
        }
    }
    let finish = v.get("stopReason").and_then(Value::as_str).map(|r| finish_reason(r).unwrap_or(FinishReason::Stop));
    let message = ResponseMessage::assistant(text, tool_calls, reasoning);
    Ok(ChatCompletion::single(id, model, created, message, finish, v.get("usage").map(usage)))
}
