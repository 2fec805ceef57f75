//! OpenAI chat request → Gemini `generateContent` / `streamGenerateContent?alt=sse` request.
//!
//! Mapping (<https://ai.google.dev/api/generate-content>, <https://ai.google.dev/api/caching#Content>):
//! - `system` and `developer` messages → `systemInstruction.parts[].text`;
//! - `user` → role `user`, `assistant` → role `model`; consecutive turns of one role merge;
//! - `image_url` with a `data:` URL → `inlineData`, with an http(s)/`gs://` URL → `fileData`
//!   (MIME type guessed from the extension, else `image/jpeg`); `input_audio` → `inlineData`;
//!   a `file` part with a `data:` URL in `file_data` → `inlineData`;
//! - assistant `tool_calls` → `functionCall` parts; `tool` messages → `functionResponse` parts in
//!   a `user` turn (the function-calling guide sends results with role `user`; the older role
//!   `function` is refused by current models);
//! - `generationConfig` from the sampling fields, `stop`, `n`, `response_format`, and
//!   `reasoning_effort` (only when the target configures thinking budgets);
//! - `tools` → `functionDeclarations` with [`UNSUPPORTED_SCHEMA_KEYWORDS`] removed;
//!   `tool_choice` → `toolConfig.functionCallingConfig`.
//!
//! Dropped on purpose: `parallel_tool_calls` (Gemini has no switch), `user`, `stream_options`
//! (the stream adapter handles usage), and any other field Gemini has no equivalent for.

use serde_json::{Map, Value, json};

use super::invalid_request;
use crate::canonical::{ApiError, ChatRequest, Content, ImageUrl, Message, Part, Role, Tool, ToolChoice};

/// The AI Studio (Gemini Developer API) host.
pub const AI_STUDIO_BASE_URL: &str = "https://generativelanguage.googleapis.com";

/// JSON-Schema keywords the Gemini `Schema` object (an OpenAPI 3.0 subset) rejects with
/// `400 INVALID_ARGUMENT: Unknown name "…"`; removed from tool parameters and response schemas
/// at every schema level (never from inside `properties` names, `enum` or `default` values).
pub const UNSUPPORTED_SCHEMA_KEYWORDS: &[&str] = &["additionalProperties", "$schema", "strict"];

/// Which Gemini API to call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GeminiApi {
    /// `https://generativelanguage.googleapis.com/v1beta/models/{model}:…`; the engine adds
    /// `x-goog-api-key`.
    AiStudio,
    /// `https://{location}-aiplatform.googleapis.com/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:…`
    /// (host `aiplatform.googleapis.com` for location `global`); the engine adds a bearer token.
    Vertex { project: String, location: String },
}

/// `reasoning_effort` → `thinkingConfig.thinkingBudget` (tokens; `-1` means dynamic, `0` off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThinkingBudgets {
    /// For `minimal` and `low`.
    pub low: i64,
    pub medium: i64,
    pub high: i64,
    /// Also ask for thought summaries (`includeThoughts`), returned as `reasoning_content`.
    pub include_thoughts: bool,
}

/// Where a chat request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeminiTarget {
    pub api: GeminiApi,
    /// The provider's model name, e.g. `gemini-2.5-flash`.
    pub model: String,
    /// When set, `reasoning_effort` maps to a thinking budget; when not, it is ignored.
    pub thinking: Option<ThinkingBudgets>,
}

impl GeminiTarget {
    /// Scheme and host to send to.
    pub fn base_url(&self) -> String {
        match &self.api {
            GeminiApi::AiStudio => AI_STUDIO_BASE_URL.to_owned(),
            GeminiApi::Vertex { location, .. } if location == "global" => {
                "https://aiplatform.googleapis.com".to_owned()
            }
            GeminiApi::Vertex { location, .. } => format!("https://{location}-aiplatform.googleapis.com"),
        }
    }

    /// The path up to the method, e.g. `/v1beta/models/gemini-2.5-flash`.
    pub(crate) fn model_path(&self) -> String {
        match &self.api {
            GeminiApi::AiStudio => format!("/v1beta/models/{}", self.model),
            GeminiApi::Vertex { project, location } => {
                format!("/v1/projects/{project}/locations/{location}/publishers/google/models/{}", self.model)
            }
        }
    }
}

/// A request ready to send: method, path with query, and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct GeminiRequest {
    pub method: &'static str,
    /// Path and query, e.g. `/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse`.
    pub path: String,
    pub body: Value,
}

/// Translate an OpenAI chat request for `target`. Errors are 400s naming the offending field.
pub fn to_gemini(req: &ChatRequest, target: &GeminiTarget) -> Result<GeminiRequest, ApiError> {
    let method = if req.stream { ":streamGenerateContent?alt=sse" } else { ":generateContent" };
    let mut body = Map::new();

    let mut system_parts = Vec::new();
    let mut contents: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, msg) in req.messages.iter().enumerate() {
        let (role, parts) = match msg.role {
            Role::System | Role::Developer => {
                if let Some(content) = &msg.content {
                    let text = content.joined_text();
                    if !text.is_empty() {
                        system_parts.push(json!({ "text": text }));
                    }
                }
                continue;
            }
            Role::User => ("user", content_parts(msg.content.as_ref(), i)?),
            Role::Assistant => ("model", assistant_parts(msg, i)?),
            Role::Tool => ("user", vec![tool_result(req, msg, i)?]),
            Role::Function => {
                let Some(name) = msg.name.clone() else {
                    return Err(invalid_request(
                        format!("messages[{i}]: a function message needs a name"),
                        format!("messages[{i}].name"),
                    ));
                };
                ("user", vec![function_response(name, msg.content.as_ref())])
            }
        };
        if parts.is_empty() {
            continue;
        }
        match contents.last_mut() {
            Some((last_role, last_parts)) if *last_role == role => last_parts.extend(parts),
            _ => contents.push((role, parts)),
        }
    }
    let contents: Vec<Value> =
        contents.into_iter().map(|(role, parts)| json!({ "role": role, "parts": parts })).collect();
    body.insert("contents".into(), Value::Array(contents));
    if !system_parts.is_empty() {
        body.insert("systemInstruction".into(), json!({ "parts": system_parts }));
    }

    if !req.tools.is_empty() {
        let decls = req.tools.iter().enumerate().map(|(i, t)| declaration(t, i)).collect::<Result<Vec<_>, _>>()?;
        body.insert("tools".into(), json!([{ "functionDeclarations": decls }]));
    }
    if let Some(choice) = &req.tool_choice {
        body.insert("toolConfig".into(), json!({ "functionCallingConfig": calling_config(choice)? }));
    }

    let config = generation_config(req, target)?;
    if !config.is_empty() {
        body.insert("generationConfig".into(), Value::Object(config));
    }

    Ok(GeminiRequest { method: "POST", path: format!("{}{method}", target.model_path()), body: Value::Object(body) })
}

fn generation_config(req: &ChatRequest, target: &GeminiTarget) -> Result<Map<String, Value>, ApiError> {
    let mut config = Map::new();
    if let Some(max) = req.max_output_tokens() {
        config.insert("maxOutputTokens".into(), max.into());
    }
    if let Some(t) = req.temperature {
        config.insert("temperature".into(), t.into());
    }
    if let Some(p) = req.top_p {
        config.insert("topP".into(), p.into());
    }
    if let Some(stop) = &req.stop {
        let stops = stop.to_vec();
        if !stops.is_empty() {
            config.insert("stopSequences".into(), stops.into());
        }
    }
    if let Some(n) = req.n {
        config.insert("candidateCount".into(), n.into());
    }
    for (openai, gemini) in
        [("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty"), ("seed", "seed")]
    {
        if let Some(v) = req.extra.get(openai).filter(|v| v.is_number()) {
            config.insert(gemini.into(), v.clone());
        }
    }
    if let Some(format) = &req.response_format {
        match format.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => {
                config.insert("responseMimeType".into(), "application/json".into());
            }
            Some("json_schema") => {
                config.insert("responseMimeType".into(), "application/json".into());
                if let Some(schema) = format.get("json_schema").and_then(|s| s.get("schema")) {
                    config.insert("responseSchema".into(), clean_schema(schema));
                }
            }
            _ => {
                return Err(invalid_request(
                    "response_format.type must be text, json_object or json_schema",
                    "response_format.type",
                ));
            }
        }
    }
    if let (Some(effort), Some(budgets)) = (&req.reasoning_effort, &target.thinking) {
        let budget = match effort.as_str() {
            "none" => 0,
            "minimal" | "low" => budgets.low,
            "medium" => budgets.medium,
            "high" => budgets.high,
            other => {
                return Err(invalid_request(
                    format!("reasoning_effort {other:?} is not one of none, minimal, low, medium, high"),
                    "reasoning_effort",
                ));
            }
        };
        let mut thinking = Map::new();
        thinking.insert("thinkingBudget".into(), budget.into());
        if budgets.include_thoughts && budget != 0 {
            thinking.insert("includeThoughts".into(), true.into());
        }
        config.insert("thinkingConfig".into(), Value::Object(thinking));
    }
    Ok(config)
}

/// The parts of a user message.
fn content_parts(content: Option<&Content>, i: usize) -> Result<Vec<Value>, ApiError> {
    match content {
        None => Ok(Vec::new()),
        Some(Content::Text(text)) if text.is_empty() => Ok(Vec::new()),
        Some(Content::Text(text)) => Ok(vec![json!({ "text": text })]),
        Some(Content::Parts(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (k, part) in parts.iter().enumerate() {
                match part {
                    Part::Text { text } if text.is_empty() => {}
                    Part::Text { text } | Part::Refusal { refusal: text } => out.push(json!({ "text": text })),
                    Part::ImageUrl { image_url } => out.push(image_part(image_url, i, k)?),
                    Part::InputAudio { input_audio } => {
                        let data = input_audio.get("data").and_then(Value::as_str);
                        let format = input_audio.get("format").and_then(Value::as_str);
                        let (Some(data), Some(format)) = (data, format) else {
                            return Err(invalid_request(
                                "input_audio needs data and format",
                                format!("messages[{i}].content[{k}].input_audio"),
                            ));
                        };
                        out.push(json!({ "inlineData": { "mimeType": format!("audio/{format}"), "data": data } }));
                    }
                    Part::File { file } => {
                        let data = file.get("file_data").and_then(Value::as_str).and_then(|url| {
                            ImageUrl { url: url.to_owned(), detail: None }
                                .as_data()
                                .map(|(m, d)| (m.to_owned(), d.to_owned()))
                        });
                        let Some((mime, data)) = data else {
                            return Err(invalid_request(
                                "file parts must carry a data: URL in file_data (file ids are not supported by Gemini)",
                                format!("messages[{i}].content[{k}].file"),
                            ));
                        };
                        out.push(json!({ "inlineData": { "mimeType": mime, "data": data } }));
                    }
                }
            }
            Ok(out)
        }
    }
}

fn image_part(image: &ImageUrl, i: usize, k: usize) -> Result<Value, ApiError> {
    if let Some((mime, data)) = image.as_data() {
        return Ok(json!({ "inlineData": { "mimeType": mime, "data": data } }));
    }
    let url = image.url.as_str();
    if url.starts_with("https://") || url.starts_with("http://") || url.starts_with("gs://") {
        return Ok(json!({ "fileData": { "mimeType": guess_mime(url), "fileUri": url } }));
    }
    Err(invalid_request(
        "image_url.url must be a base64 data: URL or an http(s):// or gs:// URL",
        format!("messages[{i}].content[{k}].image_url.url"),
    ))
}

/// The MIME type for a file URL, from its extension (query and fragment ignored); `image/jpeg`
/// when unknown.
fn guess_mime(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let file = path.rsplit('/').next().unwrap_or(path);
    let ext = file.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "gif" => "image/gif",
        "pdf" => "application/pdf",
        "mp3" => "audio/mp3",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "txt" => "text/plain",
        _ => "image/jpeg",
    }
}

fn assistant_parts(msg: &Message, i: usize) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    if let Some(content) = &msg.content {
        let text = content.joined_text();
        if !text.is_empty() {
            out.push(json!({ "text": text }));
        }
    }
    for (j, call) in msg.tool_calls.iter().enumerate() {
        let raw = call.function.arguments.trim();
        let args = if raw.is_empty() {
            Value::Object(Map::new())
        } else {
            match serde_json::from_str::<Value>(raw) {
                Ok(v @ Value::Object(_)) => v,
                _ => {
                    return Err(invalid_request(
                        format!("messages[{i}].tool_calls[{j}].function.arguments is not a JSON object"),
                        format!("messages[{i}].tool_calls[{j}].function.arguments"),
                    ));
                }
            }
        };
        out.push(json!({ "functionCall": { "name": call.function.name, "args": args } }));
    }
    Ok(out)
}

/// A `tool` message as a `functionResponse`, named after the assistant call it answers.
fn tool_result(req: &ChatRequest, msg: &Message, i: usize) -> Result<Value, ApiError> {
    let param = format!("messages[{i}].tool_call_id");
    let Some(id) = msg.tool_call_id.as_deref() else {
        return Err(invalid_request(format!("messages[{i}]: a tool message needs tool_call_id"), param));
    };
    let name = req
        .messages
        .iter()
        .take(i)
        .flat_map(|m| m.tool_calls.iter())
        .rev()
        .find(|c| c.id == id)
        .map(|c| c.function.name.clone());
    let Some(name) = name else {
        return Err(invalid_request(
            format!("messages[{i}].tool_call_id {id:?} does not match any earlier assistant tool call"),
            param,
        ));
    };
    Ok(function_response(name, msg.content.as_ref()))
}

/// `response` is the content when it is a JSON object, else `{"content": text}`.
fn function_response(name: String, content: Option<&Content>) -> Value {
    let text = content.map(Content::joined_text).unwrap_or_default();
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({ "content": text }),
    };
    json!({ "functionResponse": { "name": name, "response": response } })
}

fn declaration(tool: &Tool, i: usize) -> Result<Value, ApiError> {
    if tool.kind != "function" {
        return Err(invalid_request(
            format!("tools[{i}].type {:?} is not supported; only function", tool.kind),
            format!("tools[{i}].type"),
        ));
    }
    let mut decl = Map::new();
    decl.insert("name".into(), tool.function.name.clone().into());
    if let Some(d) = &tool.function.description {
        decl.insert("description".into(), d.clone().into());
    }
    if let Some(p) = &tool.function.parameters {
        decl.insert("parameters".into(), clean_schema(p));
    }
    Ok(Value::Object(decl))
}

fn calling_config(choice: &ToolChoice) -> Result<Value, ApiError> {
    Ok(match choice {
        ToolChoice::Mode(mode) => match mode.as_str() {
            "auto" => json!({ "mode": "AUTO" }),
            "none" => json!({ "mode": "NONE" }),
            "required" => json!({ "mode": "ANY" }),
            other => {
                return Err(invalid_request(
                    format!("tool_choice {other:?} is not one of none, auto, required"),
                    "tool_choice",
                ));
            }
        },
        ToolChoice::Function { function, .. } => json!({ "mode": "ANY", "allowedFunctionNames": [function.name] }),
    })
}

/// Keywords whose value is one schema, a list of schemas, or a map of name → schema.
const SUBSCHEMA: &[&str] = &["items", "not", "additionalItems", "contains", "if", "then", "else"];
const SUBSCHEMA_LISTS: &[&str] = &["anyOf", "oneOf", "allOf", "prefixItems"];
const SUBSCHEMA_MAPS: &[&str] = &["properties", "$defs", "definitions", "patternProperties"];

/// A copy of a JSON schema without [`UNSUPPORTED_SCHEMA_KEYWORDS`], recursing only into
/// keywords that hold schemas, so a property *named* `strict` survives.
pub(crate) fn clean_schema(schema: &Value) -> Value {
    let Value::Object(map) = schema else { return schema.clone() };
    let mut out = Map::new();
    for (key, value) in map {
        let key_str = key.as_str();
        if UNSUPPORTED_SCHEMA_KEYWORDS.contains(&key_str) {
            continue;
        }
        let cleaned = if SUBSCHEMA.contains(&key_str) {
            clean_schema(value)
        } else if SUBSCHEMA_LISTS.contains(&key_str) {
            match value {
                Value::Array(items) => Value::Array(items.iter().map(clean_schema).collect()),
                other => clean_schema(other),
            }
        } else if SUBSCHEMA_MAPS.contains(&key_str) {
            match value {
                Value::Object(props) => {
                    Value::Object(props.iter().map(|(k, v)| (k.clone(), clean_schema(v))).collect())
                }
                other => other.clone(),
            }
        } else {
            value.clone()
        };
        out.insert(key.clone(), cleaned);
    }
    Value::Object(out)
}
