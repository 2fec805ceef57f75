//! The inbound direction: Anthropic clients calling the gateway's `/v1/messages`.
//!
//! [`request_from_anthropic`] reads a Messages request into the canonical chat request, and
//! [`response_to_anthropic`] writes a chat completion back as a Messages response. Streams in
//! this direction are not translated here.
//!
//! Mapping notes: `system` (string or text blocks) becomes one leading system message;
//! `tool_result` blocks become `tool` messages placed where they stood in the user turn;
//! `thinking`/`redacted_thinking` blocks, `top_k`, `thinking`, `service_tier` and other
//! Anthropic-only fields are dropped (an OpenAI upstream would reject them); `stream: true` also
//! sets `stream_options.include_usage` (the gateway always needs usage). On the way back,
//! `prompt_tokens` is split into `input_tokens`, `cache_read_input_tokens` and
//! `cache_creation_input_tokens`, and reasoning text is dropped (Anthropic `thinking` blocks need
//! a signature the gateway cannot make).

use serde_json::{Map, Value, json};

use super::request::invalid;
use crate::canonical::ApiError;
use crate::canonical::{
    ChatCompletion, ChatRequest, Content, FinishReason, FunctionCall, FunctionDef, ImageUrl, Message, NamedFunction,
    Part, Role, Stop, StreamOptions, Tool, ToolCall, ToolChoice,
};

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn empty_message(role: Role) -> Message {
    Message { content: None, ..Message::text(role, "") }
}

/// Reads a Messages request body into a chat request.
///
/// # Errors
/// A 400 naming the field when the body is not JSON, lacks `model`, `max_tokens` or `messages`,
/// or has a message or block that cannot be read.
pub fn request_from_anthropic(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| invalid("body", format!("invalid JSON: {e}")))?;
    let model = str_at(&v, "model").ok_or_else(|| invalid("model", "model is required"))?;
    let max_tokens =
        v.get("max_tokens").and_then(Value::as_u64).ok_or_else(|| invalid("max_tokens", "max_tokens is required"))?;
    let raw_messages =
        v.get("messages").and_then(Value::as_array).ok_or_else(|| invalid("messages", "messages is required"))?;

    let mut messages = Vec::new();
    match v.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(Message::text(Role::System, s.clone())),
        Some(Value::Array(blocks)) => {
            let text: String = blocks.iter().filter_map(|b| str_at(b, "text")).collect::<Vec<_>>().join("\n");
            messages.push(Message::text(Role::System, text));
        }
        Some(_) => return Err(invalid("system", "system must be a string or text blocks")),
    }
    for (i, m) in raw_messages.iter().enumerate() {
        let role = match str_at(m, "role") {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            _ => return Err(invalid(format!("messages.{i}.role"), "role must be user or assistant")),
        };
        let blocks = match m.get("content") {
            Some(Value::String(s)) => {
                messages.push(Message::text(role, s.clone()));
                continue;
            }
            Some(Value::Array(blocks)) => blocks,
            _ => return Err(invalid(format!("messages.{i}.content"), "content must be a string or blocks")),
        };
        if role == Role::Assistant {
            messages.push(assistant_message(blocks, i)?);
        } else {
            user_messages(blocks, i, &mut messages)?;
        }
    }

    let mut req =
        ChatRequest { model: model.to_owned(), messages, max_tokens: Some(max_tokens), ..ChatRequest::default() };
    req.temperature = v.get("temperature").and_then(Value::as_f64);
    req.top_p = v.get("top_p").and_then(Value::as_f64);
    if let Some(stops) = v.get("stop_sequences").and_then(Value::as_array) {
        let stops: Vec<String> = stops.iter().filter_map(Value::as_str).map(str::to_owned).collect();
        if !stops.is_empty() {
            req.stop = Some(Stop::Many(stops));
        }
    }
    req.stream = v.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if req.stream {
        req.stream_options = Some(StreamOptions { include_usage: true });
    }
    req.user = v.get("metadata").and_then(|m| str_at(m, "user_id")).map(str::to_owned);
    if let Some(tools) = v.get("tools").and_then(Value::as_array) {
        for (j, t) in tools.iter().enumerate() {
            let name = str_at(t, "name").ok_or_else(|| invalid(format!("tools.{j}.name"), "tool name is required"))?;
            req.tools.push(Tool {
                kind: "function".into(),
                function: FunctionDef {
                    name: name.to_owned(),
                    description: str_at(t, "description").map(str::to_owned),
                    parameters: t.get("input_schema").cloned(),
                    strict: None,
                },
            });
        }
    }
    if let Some(choice) = v.get("tool_choice") {
        req.tool_choice = match str_at(choice, "type") {
            Some("auto") => Some(ToolChoice::Mode("auto".into())),
            Some("any") => Some(ToolChoice::Mode("required".into())),
            Some("none") => Some(ToolChoice::Mode("none".into())),
            Some("tool") => {
                let name = str_at(choice, "name").ok_or_else(|| invalid("tool_choice.name", "name is required"))?;
                Some(ToolChoice::Function {
                    kind: "function".into(),
                    function: NamedFunction { name: name.to_owned() },
                })
            }
            _ => return Err(invalid("tool_choice.type", "tool_choice type must be auto, any, none or tool")),
        };
        if choice.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
            req.parallel_tool_calls = Some(false);
        }
    }
    Ok(req)
}

fn assistant_message(blocks: &[Value], i: usize) -> Result<Message, ApiError> {
    let mut msg = empty_message(Role::Assistant);
    let mut text: Option<String> = None;
    for (j, b) in blocks.iter().enumerate() {
        match str_at(b, "type") {
            Some("text") => text.get_or_insert_with(String::new).push_str(str_at(b, "text").unwrap_or_default()),
            Some("tool_use") => {
                let id =
                    str_at(b, "id").ok_or_else(|| invalid(format!("messages.{i}.content.{j}.id"), "id is required"))?;
                let name = str_at(b, "name").unwrap_or_default();
                let input = b.get("input").cloned().unwrap_or_else(|| Value::Object(Map::new()));
                msg.tool_calls.push(ToolCall {
                    id: id.to_owned(),
                    kind: "function".into(),
                    function: FunctionCall { name: name.to_owned(), arguments: input.to_string() },
                });
            }
            _ => {}
        }
    }
    msg.content = text.map(Content::Text);
    Ok(msg)
}

/// A user turn: its `tool_result` blocks become `tool` messages and the rest user parts, in order.
fn user_messages(blocks: &[Value], i: usize, out: &mut Vec<Message>) -> Result<(), ApiError> {
    let mut parts: Vec<Part> = Vec::new();
    let flush = |parts: &mut Vec<Part>, out: &mut Vec<Message>| {
        if !parts.is_empty() {
            let mut msg = empty_message(Role::User);
            msg.content = Some(Content::Parts(std::mem::take(parts)));
            out.push(msg);
        }
    };
    for (j, b) in blocks.iter().enumerate() {
        let param = |field: &str| format!("messages.{i}.content.{j}{field}");
        match str_at(b, "type") {
            Some("text") => parts.push(Part::Text { text: str_at(b, "text").unwrap_or_default().to_owned() }),
            Some("image") => {
                let src = b.get("source").ok_or_else(|| invalid(param(".source"), "source is required"))?;
                parts.push(Part::ImageUrl { image_url: ImageUrl { url: source_url(src, &param)?, detail: None } });
            }
            Some("document") => {
                let src = b.get("source").ok_or_else(|| invalid(param(".source"), "source is required"))?;
                let url = source_url(src, &param)?;
                parts.push(Part::File { file: json!({"file_data": url}) });
            }
            Some("tool_result") => {
                flush(&mut parts, out);
                let id = str_at(b, "tool_use_id")
                    .ok_or_else(|| invalid(param(".tool_use_id"), "tool_use_id is required"))?;
                let text = match b.get("content") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(items)) => items.iter().filter_map(|c| str_at(c, "text")).collect(),
                    _ => String::new(),
                };
                let mut msg = Message::text(Role::Tool, text);
                msg.tool_call_id = Some(id.to_owned());
                out.push(msg);
            }
            _ => return Err(invalid(param(".type"), "unsupported content block type")),
        }
    }
    flush(&mut parts, out);
    Ok(())
}

/// An image or document `source` as a URL (`data:` for base64).
fn source_url(src: &Value, param: &dyn Fn(&str) -> String) -> Result<String, ApiError> {
    match str_at(src, "type") {
        Some("base64") => {
            let media = str_at(src, "media_type").unwrap_or("application/octet-stream");
            let data = str_at(src, "data").unwrap_or_default();
            Ok(format!("data:{media};base64,{data}"))
        }
        Some("url") => {
            str_at(src, "url").map(str::to_owned).ok_or_else(|| invalid(param(".source.url"), "url is required"))
        }
        _ => Err(invalid(param(".source.type"), "source type must be base64 or url")),
    }
}

/// Writes a chat completion as a Messages response.
#[must_use]
pub fn response_to_anthropic(c: &ChatCompletion) -> Value {
    let choice = c.choices.first();
    let mut content = Vec::new();
    if let Some(msg) = choice.map(|ch| &ch.message) {
        if let Some(text) = msg.content.as_deref().filter(|t| !t.is_empty()) {
            content.push(json!({"type": "text", "text": text}));
        }
        for call in &msg.tool_calls {
            let input = serde_json::from_str::<Value>(&call.function.arguments)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| Value::Object(Map::new()));
            content.push(json!({"type": "tool_use", "id": call.id, "name": call.function.name, "input": input}));
        }
    }
    let stop_reason = choice.and_then(|ch| ch.finish_reason).map(|f| match f {
        FinishReason::Stop => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls | FinishReason::FunctionCall => "tool_use",
        FinishReason::ContentFilter => "refusal",
    });
    let usage = c.usage.as_ref().map_or_else(
        || json!({"input_tokens": 0, "output_tokens": 0}),
        |u| {
            let details = u.prompt_tokens_details.as_ref();
            let read = details.map_or(0, |d| d.cached_tokens);
            let creation = details.and_then(|d| d.cache_creation_tokens).unwrap_or(0);
            json!({
                "input_tokens": u.prompt_tokens.saturating_sub(read).saturating_sub(creation),
                "output_tokens": u.completion_tokens,
                "cache_creation_input_tokens": creation,
                "cache_read_input_tokens": read,
            })
        },
    );
    json!({
        "id": c.id,
        "type": "message",
        "role": "assistant",
        "model": c.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": usage,
    })
}
