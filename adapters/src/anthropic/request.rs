//! Chat request → Anthropic Messages request.

use serde_json::{Map, Value, json};

use super::{ANTHROPIC_VERSION, AnthropicDefaults, AnthropicRequest, MESSAGES_PATH};
use crate::canonical::{ApiError, ChatRequest, Content, ImageUrl, Message, Part, Role, ToolChoice};

/// A 400 `invalid_request_error` naming `param`.
pub(crate) fn invalid(param: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::invalid(param, message)
}

/// Translates a chat request into a Messages request.
///
/// # Errors
/// A 400 naming the parameter when the request uses something Anthropic cannot express (see
/// the module docs) or carries tool-call arguments that are not a JSON object.
pub fn to_anthropic(req: &ChatRequest, defaults: &AnthropicDefaults) -> Result<AnthropicRequest, ApiError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(invalid("n", "n > 1 is not supported by Anthropic models"));
    }
    let mut body = Map::new();
    body.insert("model".into(), Value::String(defaults.model.clone().unwrap_or_else(|| req.model.clone())));

    let mut system: Vec<String> = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, msg) in req.messages.iter().enumerate() {
        match msg.role {
            Role::System | Role::Developer => {
                if let Some(content) = &msg.content {
                    system.push(content.joined_text());
                }
            }
            Role::User => push_turn(&mut turns, "user", content_blocks(msg, i)?),
            Role::Assistant => push_turn(&mut turns, "assistant", assistant_blocks(msg, i)?),
            Role::Tool => {
                let Some(id) = &msg.tool_call_id else {
                    return Err(invalid(format!("messages[{i}].tool_call_id"), "a tool message needs tool_call_id"));
                };
                let mut block = Map::new();
                block.insert("type".into(), "tool_result".into());
                block.insert("tool_use_id".into(), Value::String(id.clone()));
                let text = msg.content.as_ref().map(Content::joined_text).unwrap_or_default();
                if !text.is_empty() {
                    block.insert("content".into(), Value::String(text));
                }
                push_turn(&mut turns, "user", vec![Value::Object(block)]);
            }
            Role::Function => {
                return Err(invalid(
                    format!("messages[{i}].role"),
                    "function messages are not supported by Anthropic models; use tool messages",
                ));
            }
        }
    }
    if turns.is_empty() {
        return Err(invalid("messages", "at least one user or assistant message is required"));
    }
    match system.len() {
        0 => {}
        1 => {
            body.insert("system".into(), Value::String(system.concat()));
        }
        _ => {
            let blocks = system.into_iter().map(|text| json!({"type": "text", "text": text})).collect();
            body.insert("system".into(), Value::Array(blocks));
        }
    }
    let messages = turns.into_iter().map(|(role, content)| json!({"role": role, "content": content})).collect();
    body.insert("messages".into(), Value::Array(messages));
    body.insert("max_tokens".into(), req.max_output_tokens().unwrap_or(defaults.max_tokens).into());

    if let Some(stop) = &req.stop {
        let stops = stop.to_vec();
        if !stops.is_empty() {
            body.insert("stop_sequences".into(), stops.into());
        }
    }
    if let Some(t) = req.temperature {
        body.insert("temperature".into(), t.into());
    }
    if let Some(p) = req.top_p {
        body.insert("top_p".into(), p.into());
    }
    if let Some(user) = &req.user {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    if req.stream {
        body.insert("stream".into(), true.into());
    }
    if !req.tools.is_empty() {
        let mut tools = Vec::with_capacity(req.tools.len());
        for (j, tool) in req.tools.iter().enumerate() {
            if tool.kind != "function" {
                return Err(invalid(format!("tools[{j}].type"), "only function tools are supported"));
            }
            let mut t = Map::new();
            t.insert("name".into(), Value::String(tool.function.name.clone()));
            if let Some(d) = &tool.function.description {
                t.insert("description".into(), Value::String(d.clone()));
            }
            let schema =
                tool.function.parameters.clone().unwrap_or_else(|| json!({"type": "object", "properties": {}}));
            t.insert("input_schema".into(), schema);
            tools.push(Value::Object(t));
        }
        body.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = tool_choice(req)? {
            body.insert("tool_choice".into(), choice);
        }
    }
    if let Some(effort) = &req.reasoning_effort
        && let Some(&budget) = defaults.thinking_budgets.get(effort)
        && thinking_allowed(req, &body, budget)
    {
        body.insert("thinking".into(), json!({"type": "enabled", "budget_tokens": budget}));
    }
    for field in &defaults.passthrough_fields {
        if let Some(v) = req.extra.get(field)
            && !body.contains_key(field)
        {
            body.insert(field.clone(), v.clone());
        }
    }
    Ok(AnthropicRequest {
        path: MESSAGES_PATH,
        headers: vec![("anthropic-version", ANTHROPIC_VERSION), ("content-type", "application/json")],
        body: Value::Object(body),
        stream: req.stream,
    })
}

/// Whether Anthropic accepts extended thinking with the rest of this request
/// (<https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking>): `max_tokens` above
/// the budget, no forced tool (`any`/`tool`), `temperature` unset or 1, `top_p` unset or in
/// 0.95..=1, and no final assistant turn holding a prefill or `tool_use` blocks (those need the
/// turn's signed thinking block, which the canonical schema does not carry). `reasoning_effort`
/// is a hint, so when it cannot apply it is dropped rather than refused.
fn thinking_allowed(req: &ChatRequest, body: &Map<String, Value>, budget: u64) -> bool {
    let max_tokens = body.get("max_tokens").and_then(Value::as_u64).unwrap_or(0);
    let forced = body
        .get("tool_choice")
        .and_then(|c| c.get("type"))
        .and_then(Value::as_str)
        .is_some_and(|t| t == "any" || t == "tool");
    let temperature_ok = req.temperature.is_none_or(|t| (t - 1.0).abs() < f64::EPSILON);
    let top_p_ok = req.top_p.is_none_or(|p| (0.95..=1.0).contains(&p));
    let last_turn_ok = req
        .messages
        .iter()
        .rev()
        .find(|m| !matches!(m.role, Role::System | Role::Developer))
        .is_none_or(|m| m.role != Role::Assistant)
        && req
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::Assistant || m.role == Role::User)
            .is_none_or(|m| m.tool_calls.is_empty());
    budget >= 1024 && max_tokens > budget && !forced && temperature_ok && top_p_ok && last_turn_ok
}

/// Appends blocks to the last turn when it has the same role (Anthropic requires alternation);
/// a message that yields no blocks adds nothing.
fn push_turn(turns: &mut Vec<(&'static str, Vec<Value>)>, role: &'static str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some((last, content)) if *last == role => content.extend(blocks),
        _ => turns.push((role, blocks)),
    }
}

/// `tool_choice` and `parallel_tool_calls: false` (only called when tools are present).
fn tool_choice(req: &ChatRequest) -> Result<Option<Value>, ApiError> {
    let no_parallel = req.parallel_tool_calls == Some(false);
    let mut choice = match &req.tool_choice {
        None if no_parallel => json!({"type": "auto"}),
        None => return Ok(None),
        Some(ToolChoice::Mode(mode)) => match mode.as_str() {
            "auto" => json!({"type": "auto"}),
            "required" => json!({"type": "any"}),
            "none" => return Ok(Some(json!({"type": "none"}))),
            other => return Err(invalid("tool_choice", format!("unknown tool_choice {other:?}"))),
        },
        Some(ToolChoice::Function { function, .. }) => json!({"type": "tool", "name": function.name}),
    };
    if no_parallel && let Some(obj) = choice.as_object_mut() {
        obj.insert("disable_parallel_tool_use".into(), true.into());
    }
    Ok(Some(choice))
}

/// A user message's content as blocks.
fn content_blocks(msg: &Message, i: usize) -> Result<Vec<Value>, ApiError> {
    match &msg.content {
        None => Ok(Vec::new()),
        Some(Content::Text(text)) => Ok(text_block(text).into_iter().collect()),
        Some(Content::Parts(parts)) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                match part {
                    Part::Text { text } | Part::Refusal { refusal: text } => blocks.extend(text_block(text)),
                    Part::ImageUrl { image_url } => blocks.push(image_block(image_url, i, j)?),
                    Part::File { file } => blocks.push(file_block(file, i, j)?),
                    Part::InputAudio { .. } => {
                        return Err(invalid(
                            format!("messages[{i}].content[{j}]"),
                            "audio input is not supported by Anthropic models",
                        ));
                    }
                }
            }
            Ok(blocks)
        }
    }
}

/// An assistant message: its text, then its tool calls as `tool_use` blocks.
fn assistant_blocks(msg: &Message, i: usize) -> Result<Vec<Value>, ApiError> {
    let mut blocks = content_blocks(msg, i)?;
    for (j, call) in msg.tool_calls.iter().enumerate() {
        let param = || format!("messages[{i}].tool_calls[{j}].function.arguments");
        let args = call.function.arguments.trim();
        let input = if args.is_empty() {
            Value::Object(Map::new())
        } else {
            serde_json::from_str::<Value>(args)
                .map_err(|e| invalid(param(), format!("tool call arguments are not valid JSON: {e}")))?
        };
        if !input.is_object() {
            return Err(invalid(param(), "tool call arguments must be a JSON object"));
        }
        blocks.push(json!({"type": "tool_use", "id": call.id, "name": call.function.name, "input": input}));
    }
    Ok(blocks)
}

/// A text block, or none for empty text (Anthropic rejects empty text blocks).
fn text_block(text: &str) -> Option<Value> {
    (!text.is_empty()).then(|| json!({"type": "text", "text": text}))
}

fn image_block(image: &ImageUrl, i: usize, j: usize) -> Result<Value, ApiError> {
    if let Some((media_type, data)) = image.as_data() {
        return Ok(json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}));
    }
    let url = image.url.as_str();
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    if matches!(scheme.as_deref(), Some("http" | "https")) {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    Err(invalid(format!("messages[{i}].content[{j}].image_url.url"), "image URLs must be http(s) or base64 data: URLs"))
}

/// A `file` part carrying a base64 PDF (`file_data: "data:application/pdf;base64,…"`) → a
/// `document` block; anything else (file ids, other types) is refused.
fn file_block(file: &Value, i: usize, j: usize) -> Result<Value, ApiError> {
    let data = file.get("file_data").and_then(Value::as_str).and_then(|d| {
        ImageUrl { url: d.to_owned(), detail: None }
            .as_data()
            .filter(|(media, _)| *media == "application/pdf")
            .map(|(_, data)| data.to_owned())
    });
    match data {
        Some(data) => Ok(json!({
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": data}
        })),
        None => Err(invalid(
            format!("messages[{i}].content[{j}].file"),
            "only base64 PDF file_data is supported by Anthropic models",
        )),
    }
}
