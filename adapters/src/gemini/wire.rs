//! The parts of Gemini's `GenerateContentResponse` the adapter reads; unknown fields are
//! ignored and every field is optional, so a new field or an omitted one never fails a parse.

use serde::Deserialize;
use serde_json::Value;

use crate::canonical::{CompletionTokensDetails, PromptTokensDetails, Usage};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct GenerateContentResponse {
    pub candidates: Vec<Candidate>,
    pub prompt_feedback: Option<PromptFeedback>,
    pub usage_metadata: Option<UsageMetadata>,
    pub model_version: Option<String>,
    pub response_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Candidate {
    pub content: Option<CandidateContent>,
    pub finish_reason: Option<String>,
    pub index: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct CandidateContent {
    pub parts: Vec<WirePart>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct WirePart {
    pub text: Option<String>,
    pub thought: Option<bool>,
    pub function_call: Option<WireFunctionCall>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct WireFunctionCall {
    pub name: String,
    pub args: Option<Value>,
}

impl WireFunctionCall {
    /// `args` as compact JSON text (`{}` when absent).
    pub fn arguments(&self) -> String {
        match &self.args {
            Some(v) if !v.is_null() => v.to_string(),
            _ => "{}".to_owned(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct PromptFeedback {
    pub block_reason: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct UsageMetadata {
    pub prompt_token_count: u64,
    pub candidates_token_count: u64,
    pub thoughts_token_count: u64,
    pub cached_content_token_count: u64,
    pub total_token_count: Option<u64>,
}

impl UsageMetadata {
    /// OpenAI usage: completion tokens include thinking tokens (as OpenAI's reasoning tokens
    /// are included in `completion_tokens`).
    pub fn to_usage(&self) -> Usage {
        let completion = self.candidates_token_count.saturating_add(self.thoughts_token_count);
        Usage {
            prompt_tokens: self.prompt_token_count,
            completion_tokens: completion,
            total_tokens: self.total_token_count.unwrap_or(self.prompt_token_count.saturating_add(completion)),
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: self.cached_content_token_count,
                cache_creation_tokens: None,
            }),
            completion_tokens_details: Some(CompletionTokensDetails { reasoning_tokens: self.thoughts_token_count }),
        }
    }
}
