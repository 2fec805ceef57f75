//! Token usage from OpenAI responses and stream chunks, for accounting and token-based limits.
//!
//! A non-streaming chat completion or embeddings response carries a top-level `usage` object; a
//! stream carries it only in the final chunk (`"choices": []`), and only when the request set
//! `stream_options.include_usage`. Every other chunk has no `usage` or `"usage": null`, so a
//! memchr-speed search for `"usage"` skips them without parsing: per-chunk cost stays a scan,
//! not a parse. (A key spelled with escapes, `"us\u0061ge"`, is missed; no provider does that.)
//!
//! Extraction never fails loudly: a malformed or absent usage is `None`, and the engine decides
//! what an unknown count means for accounting.

use memchr::memmem;
use simd_json::tape::Value;

use crate::json::tape::{TapeScratch, last_values, non_negative_integer, present};
use crate::openai::request::{TextRef, collect_answer};

/// Token counts as OpenAI reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// `usage.prompt_tokens`.
    pub prompt_tokens: u64,
    /// `usage.completion_tokens`; 0 when absent, as in embeddings responses.
    pub completion_tokens: u64,
    /// `usage.total_tokens`; the sum of the two above when absent.
    pub total_tokens: u64,
    /// `usage.prompt_tokens_details.cached_tokens`: prompt tokens served from the provider's
    /// prompt cache (billed at a discount).
    pub cached_tokens: u64,
    /// `usage.completion_tokens_details.reasoning_tokens`: hidden reasoning tokens, already
    /// included in `completion_tokens`.
    pub reasoning_tokens: u64,
}

/// Reusable scratch for reading usage, one per shard: parsing needs a mutable padded copy of
/// the bytes, and keeping it avoids an allocation per response.
pub struct UsageReader {
    scratch: TapeScratch,
}

impl Default for UsageReader {
    fn default() -> Self {
        Self::new()
    }
}

impl UsageReader {
    /// A reader with empty scratch.
    #[must_use]
    pub fn new() -> Self {
        Self { scratch: TapeScratch::new() }
    }

    /// The top-level `usage` of a non-streaming chat completion, completion or embeddings body.
    pub fn response_body(&mut self, body: &[u8]) -> Option<Usage> {
        memmem::find(body, b"\"usage\"")?;
        self.scratch
            .parse(body, |root, _| {
                let [usage] = last_values(root, ["usage"])?;
                read_usage(present(usage)?)
            })
            .ok()
            .flatten()
    }

    /// [`UsageReader::response_body`], and from the same parse the answer's texts for the
    /// gateway's guardrails (`None` when the body is not JSON or nests deeper than that walk
    /// goes).
    pub fn response_body_and_texts(&mut self, body: &[u8]) -> (Option<Usage>, Option<Vec<TextRef>>) {
        self.scratch
            .parse(body, |root, origin| {
                let usage = last_values(root, ["usage"]).and_then(|[u]| read_usage(present(u)?));
                (usage, collect_answer(root, body, origin))
            })
            .unwrap_or((None, None))
    }

    /// The `usage` of one SSE `data:` payload (a `chat.completion.chunk`); `None` for
    /// `[DONE]`, for chunks without usage and for `"usage": null`.
    pub fn stream_data(&mut self, data: &[u8]) -> Option<Usage> {
        // `[DONE]` has no `"usage"`, so the search below already rejects it.
        self.response_body(data)
    }
}

/// The top-level `usage` of a non-streaming chat completion, completion or embeddings body.
/// Allocates scratch per call; use a [`UsageReader`] on a hot path.
#[must_use]
pub fn from_response_body(body: &[u8]) -> Option<Usage> {
    UsageReader::new().response_body(body)
}

/// The `usage` of one SSE `data:` payload (a `chat.completion.chunk`); `None` for `[DONE]`, for
/// chunks without usage and for `"usage": null`. Allocates scratch only when the payload
/// mentions `"usage"`; use a [`UsageReader`] on a hot path.
#[must_use]
pub fn from_stream_data(data: &[u8]) -> Option<Usage> {
    memmem::find(data, b"\"usage\"")?;
    UsageReader::new().stream_data(data)
}

/// Reads a `usage` object. The core counts are strict (a mistyped count means we do not know
/// the usage), `prompt_tokens` is required; the details objects are optional extras, so a
/// mistyped detail counts as 0 rather than discarding the whole usage.
fn read_usage(usage: Value<'_, '_>) -> Option<Usage> {
    let [prompt, completion, total, prompt_details, completion_details] = last_values(
        usage,
        ["prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details", "completion_tokens_details"],
    )?;
    let prompt_tokens = non_negative_integer(present(prompt)?)?;
    let completion_tokens = optional_count(completion)?.unwrap_or(0);
    let total_tokens = optional_count(total)?.unwrap_or_else(|| prompt_tokens.saturating_add(completion_tokens));
    Some(Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens,
        cached_tokens: detail(prompt_details, "cached_tokens"),
        reasoning_tokens: detail(completion_details, "reasoning_tokens"),
    })
}

/// `None` when mistyped, `Some(None)` when absent or null.
fn optional_count(value: Option<Value<'_, '_>>) -> Option<Option<u64>> {
    match present(value) {
        None => Some(None),
        Some(v) => non_negative_integer(v).map(Some),
    }
}

fn detail(details: Option<Value<'_, '_>>, key: &str) -> u64 {
    present(details)
        .and_then(|d| last_values(d, [key]))
        .and_then(|[v]| present(v))
        .and_then(non_negative_integer)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    //! Bodies from OpenAI's API reference (chat/create, embeddings/create, the chat completion
    //! chunk object) with the usage objects they document.

    use super::*;
    use proptest::prelude::*;

    const CHAT_RESPONSE: &str = r#"{
  "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
  "object": "chat.completion",
  "created": 1741570283,
  "model": "gpt-4o-2024-08-06",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": "The image shows a wooden boardwalk path running through a lush green field or meadow.",
        "refusal": null,
        "annotations": []
      },
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 1117,
    "completion_tokens": 46,
    "total_tokens": 1163,
    "prompt_tokens_details": {
      "cached_tokens": 1024,
      "audio_tokens": 0
    },
    "completion_tokens_details": {
      "reasoning_tokens": 12,
      "audio_tokens": 0,
      "accepted_prediction_tokens": 0,
      "rejected_prediction_tokens": 0
    }
  },
  "service_tier": "default",
  "system_fingerprint": "fp_fc9f1d7035"
}"#;

    const EMBEDDINGS_RESPONSE: &str = r#"{
  "object": "list",
  "data": [
    {
      "object": "embedding",
      "embedding": [
        0.0023064255,
        -0.009327292,
        -0.0028842222
      ],
      "index": 0
    }
  ],
  "model": "text-embedding-ada-002",
  "usage": {
    "prompt_tokens": 8,
    "total_tokens": 8
  }
}"#;

    const FINAL_CHUNK: &str = r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}"#;

    const CONTENT_CHUNK: &str = r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}"#;

    #[test]
    fn chat_completion_with_cached_and_reasoning_tokens() {
        assert_eq!(
            from_response_body(CHAT_RESPONSE.as_bytes()),
            Some(Usage {
                prompt_tokens: 1117,
                completion_tokens: 46,
                total_tokens: 1163,
                cached_tokens: 1024,
                reasoning_tokens: 12,
            })
        );
    }

    #[test]
    fn embeddings_usage_has_no_completion_tokens() {
        assert_eq!(
            from_response_body(EMBEDDINGS_RESPONSE.as_bytes()),
            Some(Usage { prompt_tokens: 8, total_tokens: 8, ..Usage::default() })
        );
    }

    #[test]
    fn final_stream_chunk() {
        assert_eq!(
            from_stream_data(FINAL_CHUNK.as_bytes()),
            Some(Usage { prompt_tokens: 9, completion_tokens: 12, total_tokens: 21, ..Usage::default() })
        );
    }

    #[test]
    fn chunks_without_usage() {
        assert_eq!(from_stream_data(CONTENT_CHUNK.as_bytes()), None);
        assert_eq!(from_stream_data(b"[DONE]"), None);
        assert_eq!(from_stream_data(b" [DONE]\n"), None);
        assert_eq!(from_stream_data(br#"{"choices":[{"delta":{"content":"\"usage\""}}]}"#), None);
        assert_eq!(from_stream_data(b""), None);
    }

    #[test]
    fn total_defaults_to_the_sum() {
        assert_eq!(
            from_response_body(br#"{"usage":{"prompt_tokens":3,"completion_tokens":4}}"#),
            Some(Usage { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7, ..Usage::default() })
        );
    }

    #[test]
    fn malformed_usage_is_none() {
        let bodies: [&[u8]; 8] = [
            br#"{"usage":{}}"#,
            br#"{"usage":{"prompt_tokens":"3"}}"#,
            br#"{"usage":{"prompt_tokens":-3}}"#,
            br#"{"usage":{"prompt_tokens":3,"completion_tokens":1.5}}"#,
            br#"{"usage":[1,2]}"#,
            br#"{"usage":{"prompt_tokens":3}"#,
            br#"[{"usage":{"prompt_tokens":3}}]"#,
            b"{\"usage\":{\"prompt_tokens\":3},\"x\":\"\xff\"}",
        ];
        for body in bodies {
            assert_eq!(from_response_body(body), None, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn mistyped_details_count_as_zero() {
        let body = br#"{"usage":{"prompt_tokens":5,"completion_tokens":1,"prompt_tokens_details":null,"completion_tokens_details":{"reasoning_tokens":"x"}}}"#;
        assert_eq!(
            from_response_body(body),
            Some(Usage { prompt_tokens: 5, completion_tokens: 1, total_tokens: 6, ..Usage::default() })
        );
    }

    #[test]
    fn a_reader_is_reusable() {
        let mut reader = UsageReader::new();
        for _ in 0..3 {
            assert_eq!(reader.stream_data(CONTENT_CHUNK.as_bytes()), None);
            assert_eq!(reader.stream_data(FINAL_CHUNK.as_bytes()).map(|u| u.total_tokens), Some(21));
            assert_eq!(reader.response_body(b"{\"usage\""), None);
            assert_eq!(reader.response_body(CHAT_RESPONSE.as_bytes()).map(|u| u.cached_tokens), Some(1024));
        }
    }

    proptest! {
        #[test]
        fn stream_data_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = from_stream_data(&data);
            let _ = from_response_body(&data);
        }

        #[test]
        fn usage_like_payloads_never_panic(tail in r#"[{}\[\]":,a-z_0-9 .\-]{0,64}"#) {
            let data = format!(r#"{{"choices":[],"usage":{tail}"#);
            let _ = from_stream_data(data.as_bytes());
        }
    }
}
