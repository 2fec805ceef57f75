//! Gemini `GenerateContentResponse` → OpenAI `chat.completion`
//! (<https://ai.google.dev/api/generate-content#generatecontentresponse>).

use super::wire::{Candidate, GenerateContentResponse};
use super::{bad_upstream, map_finish_reason, tool_call_id};
use crate::canonical::{ApiError, ChatCompletion, Choice, FinishReason, FunctionCall, ResponseMessage, Role, ToolCall};

/// Translate a successful (2xx) Gemini response body. `id` and `created` come from the caller,
/// which keeps this pure; `model` is the name to report (usually the one the client asked for).
///
/// Candidates become choices (by their `index`, else their position); text parts are joined,
/// `thought: true` parts go to `reasoning_content`, `functionCall` parts become tool calls with
/// ids from [`tool_call_id`]. A prompt blocked before generation (`promptFeedback.blockReason`,
/// no candidates) becomes one choice with empty content and `content_filter`.
pub fn from_gemini(body: &[u8], model: &str, id: &str, created: u64) -> Result<ChatCompletion, ApiError> {
    let resp: GenerateContentResponse = serde_json::from_slice(body)
        .map_err(|e| bad_upstream(format!("gemini returned an unreadable response body: {e}")))?;
    let mut choices: Vec<Choice> = resp.candidates.iter().enumerate().map(|(pos, c)| choice(c, pos, id)).collect();
    if choices.is_empty() && resp.prompt_feedback.as_ref().is_some_and(|f| f.block_reason.is_some()) {
        choices.push(Choice {
            index: 0,
            message: ResponseMessage {
                role: Role::Assistant,
                content: Some(String::new()),
                tool_calls: Vec::new(),
                refusal: None,
                reasoning_content: None,
            },
            finish_reason: Some(FinishReason::ContentFilter),
            logprobs: None,
        });
    }
    choices.sort_by_key(|c| c.index);
    Ok(ChatCompletion {
        id: id.to_owned(),
        object: "chat.completion".into(),
        created,
        model: model.to_owned(),
        choices,
        usage: resp.usage_metadata.as_ref().map(|u| u.to_usage()),
        system_fingerprint: None,
    })
}

fn choice(candidate: &Candidate, pos: usize, id: &str) -> Choice {
    let index = candidate.index.unwrap_or(u32::try_from(pos).unwrap_or(u32::MAX));
    let mut text = String::new();
    let mut thoughts: Option<String> = None;
    let mut tool_calls = Vec::new();
    for part in candidate.content.iter().flat_map(|c| c.parts.iter()) {
        if let Some(call) = &part.function_call {
            tool_calls.push(ToolCall {
                id: tool_call_id(id, index, tool_calls.len()),
                kind: "function".into(),
                function: FunctionCall { name: call.name.clone(), arguments: call.arguments() },
            });
        } else if let Some(t) = &part.text {
            if part.thought == Some(true) {
                thoughts.get_or_insert_with(String::new).push_str(t);
            } else {
                text.push_str(t);
            }
        }
    }
    let finish_reason = candidate.finish_reason.as_deref().map(|r| map_finish_reason(r, !tool_calls.is_empty()));
    let content = if text.is_empty() && !tool_calls.is_empty() { None } else { Some(text) };
    Choice {
        index,
        message: ResponseMessage {
            role: Role::Assistant,
            content,
            tool_calls,
            refusal: None,
            reasoning_content: thoughts,
        },
        finish_reason,
        logprobs: None,
    }
}
