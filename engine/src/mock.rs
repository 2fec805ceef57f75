//! Canned OpenAI-dialect answers: the built-in `mock` provider answers with these in-process,
//! and the benchmark's mock provider serves them over the network with latency knobs.
//!
//! Pure functions producing bytes; one "token" is one word of a fixed text, so token counts are
//! exact and tests can predict them.

use serde::Serialize;

pub mod anthropic;
pub mod bedrock;
pub mod gemini;

const WORDS: [&str; 16] = [
    "This",
    "is",
    "a",
    "mock",
    "response",
    "from",
    "shardgate,",
    "answered",
    "without",
    "any",
    "provider",
    "account;",
    "configure",
    "a",
    "real",
    "model.",
];

/// The `i`-th token of the mock text, with its leading space (none for the first); `filler`
/// replaces the words when set (to shape response sizes).
pub fn token(i: usize, filler: Option<&str>) -> String {
    if let Some(f) = filler {
        return f.to_string();
    }
    let w = WORDS[i % WORDS.len()];
    if i == 0 { w.to_string() } else { format!(" {w}") }
}

/// `n` tokens of mock text.
pub fn text(n: usize, filler: Option<&str>) -> String {
    (0..n).map(|i| token(i, filler)).collect()
}

/// A rough prompt token count: one per four bytes of request body, at least one.
pub fn estimate_prompt_tokens(body_len: usize) -> u64 {
    (body_len as u64 / 4).max(1)
}

/// The shape of one mock answer.
#[derive(Debug, Clone)]
pub struct Reply<'a> {
    pub id: &'a str,
    pub created: u64,
    pub model: &'a str,
    pub prompt_tokens: u64,
    pub completion_tokens: usize,
    /// Text of every token instead of the mock words.
    pub filler: Option<&'a str>,
    /// The answer's tokens, exactly (tests of what a gateway does with given text); empty: the
    /// mock words (or `filler`).
    pub script: &'a [String],
    /// OpenAI chat: when not empty, the answer is a call of the tool `lookup` whose arguments
    /// are these pieces (one stream chunk each) instead of text.
    pub tool_args: &'a [String],
}

impl Reply<'_> {
    /// The `i`-th token of this answer.
    pub fn token(&self, i: usize) -> String {
        match self.script.get(i) {
            Some(t) => t.clone(),
            None => token(i, self.filler),
        }
    }

    /// The whole answer's text.
    pub fn text(&self) -> String {
        (0..self.completion_tokens).map(|i| self.token(i)).collect()
    }
}

#[derive(Serialize)]
struct UsageJson {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

impl Reply<'_> {
    fn usage(&self) -> UsageJson {
        let c = self.completion_tokens as u64;
        UsageJson { prompt_tokens: self.prompt_tokens, completion_tokens: c, total_tokens: self.prompt_tokens + c }
    }
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: Option<&'a str>,
    refusal: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCall<'a>; 1]>,
}

#[derive(Serialize)]
struct ToolCall<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'static str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionCall<'a>,
}

#[derive(Serialize)]
struct FunctionCall<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'static str>,
    arguments: &'a str,
}

/// The mock's one tool call: its id and name.
const TOOL_CALL_ID: &str = "call_mock_1";
const TOOL_NAME: &str = "lookup";

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    message: Message<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChatChoice<'a>; 1],
    usage: UsageJson,
    system_fingerprint: &'static str,
}

fn json(v: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// A complete `chat.completion`.
pub fn chat_completion(r: &Reply<'_>) -> Vec<u8> {
    let content = r.text();
    let arguments: String = r.tool_args.concat();
    let calling = !r.tool_args.is_empty();
    let tool_calls = calling.then(|| {
        [ToolCall {
            index: None,
            id: Some(TOOL_CALL_ID),
            kind: Some("function"),
            function: FunctionCall { name: Some(TOOL_NAME), arguments: &arguments },
        }]
    });
    json(&ChatCompletion {
        id: r.id,
        object: "chat.completion",
        created: r.created,
        model: r.model,
        choices: [ChatChoice {
            index: 0,
            message: Message {
                role: "assistant",
                content: (!calling).then_some(content.as_str()),
                refusal: None,
                tool_calls,
            },
            logprobs: None,
            finish_reason: if calling { "tool_calls" } else { "stop" },
        }],
        usage: r.usage(),
        system_fingerprint: "shardgate-mock",
    })
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCall<'a>; 1]>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct ChatChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: Vec<ChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<UsageJson>>,
}

fn sse(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\n\n");
    out
}

/// The terminating event of an OpenAI stream.
pub const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";

/// The events of a streamed chat completion, each a complete SSE event (`data: ...\n\n`): a role
/// chunk, one chunk per token, a finish chunk, the usage chunk when `include_usage`, and `[DONE]`.
pub fn chat_stream(r: &Reply<'_>, include_usage: bool) -> Vec<Vec<u8>> {
    let usage_field = |u: Option<UsageJson>| if include_usage { Some(u) } else { None };
    let chunk = |delta: Delta<'_>, finish: Option<&'static str>| {
        sse(&json(&ChatChunk {
            id: r.id,
            object: "chat.completion.chunk",
            created: r.created,
            model: r.model,
            system_fingerprint: "shardgate-mock",
            choices: vec![ChunkChoice { index: 0, delta, logprobs: None, finish_reason: finish }],
            usage: usage_field(None),
        }))
    };
    let mut events = Vec::with_capacity(r.completion_tokens + r.tool_args.len() + 5);
    if r.tool_args.is_empty() {
        events.push(chunk(Delta { role: Some("assistant"), content: Some(""), tool_calls: None }, None));
        for i in 0..r.completion_tokens {
            let t = r.token(i);
            events.push(chunk(Delta { role: None, content: Some(&t), tool_calls: None }, None));
        }
        events.push(chunk(Delta { role: None, content: None, tool_calls: None }, Some("stop")));
    } else {
        // As OpenAI streams a tool call: id, type and name first, then the arguments in pieces.
        let call = |first: bool, arguments| {
            Some([ToolCall {
                index: Some(0),
                id: first.then_some(TOOL_CALL_ID),
                kind: first.then_some("function"),
                function: FunctionCall { name: first.then_some(TOOL_NAME), arguments },
            }])
        };
        events.push(chunk(Delta { role: Some("assistant"), content: None, tool_calls: call(true, "") }, None));
        for piece in r.tool_args {
            events.push(chunk(Delta { role: None, content: None, tool_calls: call(false, piece) }, None));
        }
        events.push(chunk(Delta { role: None, content: None, tool_calls: None }, Some("tool_calls")));
    }
    if include_usage {
        events.push(sse(&json(&ChatChunk {
            id: r.id,
            object: "chat.completion.chunk",
            created: r.created,
            model: r.model,
            system_fingerprint: "shardgate-mock",
            choices: Vec::new(),
            usage: Some(Some(r.usage())),
        })));
    }
    events.push(DONE_EVENT.to_vec());
    events
}

#[derive(Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: u32,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct TextCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<TextChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageJson>,
}

/// A complete legacy `text_completion`.
pub fn completion(r: &Reply<'_>) -> Vec<u8> {
    let t = r.text();
    json(&TextCompletion {
        id: r.id,
        object: "text_completion",
        created: r.created,
        model: r.model,
        choices: vec![TextChoice { text: &t, index: 0, logprobs: None, finish_reason: Some("stop") }],
        usage: Some(r.usage()),
    })
}

/// The events of a streamed legacy completion.
pub fn completion_stream(r: &Reply<'_>, include_usage: bool) -> Vec<Vec<u8>> {
    let mut events = Vec::with_capacity(r.completion_tokens + 3);
    for i in 0..r.completion_tokens {
        let t = r.token(i);
        let last = i + 1 == r.completion_tokens;
        events.push(sse(&json(&TextCompletion {
            id: r.id,
            object: "text_completion",
            created: r.created,
            model: r.model,
            choices: vec![TextChoice { text: &t, index: 0, logprobs: None, finish_reason: last.then_some("stop") }],
            usage: None,
        })));
    }
    if include_usage {
        events.push(sse(&json(&TextCompletion {
            id: r.id,
            object: "text_completion",
            created: r.created,
            model: r.model,
            choices: Vec::new(),
            usage: Some(r.usage()),
        })));
    }
    events.push(DONE_EVENT.to_vec());
    events
}

#[derive(Serialize)]
struct Embedding {
    object: &'static str,
    index: usize,
    embedding: Vec<f32>,
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<Embedding>,
    model: &'a str,
    usage: EmbeddingUsage,
}

/// The `i`th deterministic unit vector of `dims` floats (every mock dialect answers these).
pub fn unit_vector(i: usize, dims: usize) -> Vec<f32> {
    let raw: Vec<f32> = (0..dims).map(|d| (((i * 31 + d * 7) % 17) as f32) - 8.0).collect();
    let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::EPSILON);
    raw.iter().map(|x| x / norm).collect()
}

/// An embeddings list with `inputs` deterministic unit vectors of `dims` floats.
pub fn embeddings(model: &str, inputs: usize, dims: usize, prompt_tokens: u64) -> Vec<u8> {
    let data =
        (0..inputs).map(|i| Embedding { object: "embedding", index: i, embedding: unit_vector(i, dims) }).collect();
    json(&EmbeddingList {
        object: "list",
        data,
        model,
        usage: EmbeddingUsage { prompt_tokens, total_tokens: prompt_tokens },
    })
}

/// OpenAI's documented limits, which also bound the work one request can cost the mock.
pub const MAX_EMBEDDING_INPUTS: usize = 2048;
pub const MAX_EMBEDDING_DIMENSIONS: usize = 3072;
/// Dimensions when the request does not ask.
pub const DEFAULT_EMBEDDING_DIMENSIONS: usize = 16;

/// What an embeddings request asks of the mock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddingShape {
    pub inputs: usize,
    pub dimensions: usize,
}

/// Reads how many inputs an embeddings request carries and the `dimensions` it asks for,
/// refusing what OpenAI refuses (more than 2048 inputs, more than 3072 dimensions): the answer
/// is built in memory, so these bounds are what keep one request from exhausting it. This is
/// the mock's own concern (not the request path), so it parses the body fully.
pub fn embedding_request_shape(body: &[u8]) -> Result<EmbeddingShape, (&'static str, String)> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Ok(EmbeddingShape { inputs: 1, dimensions: DEFAULT_EMBEDDING_DIMENSIONS });
    };
    let inputs = match v.get("input") {
        Some(serde_json::Value::Array(a)) if a.iter().all(|x| x.is_number()) => 1,
        Some(serde_json::Value::Array(a)) => a.len().max(1),
        _ => 1,
    };
    if inputs > MAX_EMBEDDING_INPUTS {
        return Err(("input", format!("'input' has {inputs} items; at most {MAX_EMBEDDING_INPUTS} are allowed")));
    }
    let dimensions = match v.get("dimensions") {
        None | Some(serde_json::Value::Null) => DEFAULT_EMBEDDING_DIMENSIONS,
        Some(d) => match d.as_u64().and_then(|d| usize::try_from(d).ok()) {
            Some(d) if (1..=MAX_EMBEDDING_DIMENSIONS).contains(&d) => d,
            _ => {
                return Err((
                    "dimensions",
                    format!("'dimensions' must be an integer from 1 to {MAX_EMBEDDING_DIMENSIONS}"),
                ));
            }
        },
    };
    Ok(EmbeddingShape { inputs, dimensions })
}

#[cfg(test)]
mod tests {
    use super::*;
    use adapters::openai::usage;

    fn reply() -> Reply<'static> {
        Reply {
            id: "chatcmpl-1",
            created: 1,
            model: "mock-1",
            prompt_tokens: 7,
            completion_tokens: 5,
            filler: None,
            script: &[],
            tool_args: &[],
        }
    }

    #[test]
    fn chat_completion_has_usage_and_text() {
        let body = chat_completion(&reply());
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "This is a mock response");
        let u = usage::from_response_body(&body).unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens, u.total_tokens), (7, 5, 12));
    }

    #[test]
    fn stream_has_tokens_usage_and_done() {
        let events = chat_stream(&reply(), true);
        assert_eq!(events.len(), 1 + 5 + 1 + 1 + 1);
        assert_eq!(events.last().unwrap().as_slice(), DONE_EVENT);
        let usage_event = &events[events.len() - 2];
        let data = &usage_event[6..usage_event.len() - 2];
        assert_eq!(usage::from_stream_data(data).unwrap().completion_tokens, 5);
        let no_usage = chat_stream(&reply(), false);
        assert_eq!(no_usage.len(), 1 + 5 + 1 + 1);
    }

    #[test]
    fn embeddings_shape() {
        let shape = |b: &[u8]| embedding_request_shape(b).map(|s| (s.inputs, s.dimensions));
        assert_eq!(shape(br#"{"input":["a","b","c"],"dimensions":8}"#), Ok((3, 8)));
        assert_eq!(shape(br#"{"input":[1,2,3]}"#), Ok((1, 16)));
        let many = format!(r#"{{"input":[{}"x"]}}"#, "\"x\",".repeat(2048));
        assert_eq!(embedding_request_shape(many.as_bytes()).unwrap_err().0, "input");
        assert_eq!(embedding_request_shape(br#"{"input":"x","dimensions":99999}"#).unwrap_err().0, "dimensions");
        let v: serde_json::Value = serde_json::from_slice(&embeddings("e", 2, 4, 3)).unwrap();
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        assert_eq!(v["data"][1]["embedding"].as_array().unwrap().len(), 4);
    }
}
