//! One translation direction per bench, on the golden files' inputs (the tool-use cases, the
//! richest each dialect has), doing what the engine does around the adapter call:
//! - request: parse the canonical JSON body, translate, serialize the provider body;
//! - response: translate the provider body, serialize the chat completion;
//! - stream: feed a recorded provider stream in 64-byte reads and write each chunk as a
//!   `data: <json>\n\n` event (as `engine/src/api/translate.rs` does);
//! - inbound Anthropic (`/v1/messages` served by an OpenAI-dialect provider): the Messages request
//!   to canonical, a canonical completion to a Messages response, canonical chunks to Messages
//!   stream events.
//!
//! Throughput is the bytes of the direction's input (for the canonical completion and chunks:
//! their JSON, as an OpenAI upstream would send it). Short measurements (2 s, 0.5 s warm-up) so
//! the file runs in well under two minutes on a shared machine.
//!
//! Run: `cargo bench -p shardgate-adapters --bench translate`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::Duration;

use adapters::anthropic::{
    AnthropicDefaults, AnthropicEncoder, AnthropicStream, from_anthropic, request_from_anthropic,
    response_to_anthropic, to_anthropic,
};
use adapters::bedrock::eventstream::{HeaderValue, Message, try_encode};
use adapters::bedrock::{ConverseStream, from_converse, to_converse};
use adapters::canonical::{ChatChunk, ChatCompletion, ChatRequest};
use adapters::gemini::{GeminiApi, GeminiStream, GeminiTarget, from_gemini, to_gemini};
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime};
use serde_json::Value;

/// The size of one upstream read in the stream benches.
const READ: usize = 64;
const CREATED: u64 = 1_700_000_000;

macro_rules! testdata {
    ($path:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/", $path))
    };
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

/// `v` without the golden files' provenance field (`_source` or `source`).
fn without_source(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("_source");
        o.remove("source");
    }
    v
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// One `data:` event per chunk, as the engine writes a translated stream downstream.
fn events(chunks: &mut Vec<ChatChunk>) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks.drain(..) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&serde_json::to_vec(&c).unwrap());
        out.extend_from_slice(b"\n\n");
    }
    out
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.measurement_time(Duration::from_secs(2));
    g.warm_up_time(Duration::from_millis(500));
    g
}

/// A canonical request body from a golden file, as a client would send it.
fn request_body(v: Value) -> Vec<u8> {
    bytes(&without_source(v))
}

fn anthropic(c: &mut Criterion) {
    let request = request_body(json(testdata!("anthropic/tools.openai.json")));
    let defaults = AnthropicDefaults {
        max_tokens: 4096,
        model: Some("claude-sonnet-4-5-20250929".into()),
        ..AnthropicDefaults::default()
    };
    let response = testdata!("anthropic/tool_use.anthropic-response.json").as_bytes();
    let stream = testdata!("anthropic/tool_stream.sse").as_bytes();

    let mut g = group(c, "anthropic");
    g.throughput(Throughput::Bytes(request.len() as u64));
    g.bench_function("request openai->anthropic", |b| {
        b.iter(|| {
            let req: ChatRequest = serde_json::from_slice(black_box(&request)).unwrap();
            to_anthropic(&req, &defaults).unwrap().body_bytes()
        })
    });
    g.throughput(Throughput::Bytes(response.len() as u64));
    g.bench_function("response anthropic->openai", |b| {
        b.iter(|| {
            let completion = from_anthropic(black_box(response), "claude-sonnet-4-5", CREATED).unwrap();
            serde_json::to_vec(&completion).unwrap()
        })
    });
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("stream anthropic->chunks", |b| {
        b.iter(|| {
            let mut s = AnthropicStream::new("claude-sonnet-4-5", CREATED, true);
            let mut chunks = Vec::new();
            let mut written = 0;
            for read in black_box(stream).chunks(READ) {
                s.feed(read, &mut chunks);
                written += events(&mut chunks).len();
            }
            s.finish(&mut chunks);
            written + events(&mut chunks).len()
        })
    });
    g.finish();
}

fn gemini(c: &mut Criterion) {
    let golden = json(testdata!("gemini/request_tools.json"));
    let request = request_body(golden["openai"].clone());
    // As the engine builds it: AI Studio, no thinking budgets configured.
    let target = GeminiTarget { api: GeminiApi::AiStudio, model: "gemini-2.5-pro".into(), thinking: None };
    let golden = json(testdata!("gemini/response_tools.json"));
    let response = bytes(&golden["gemini"]);
    let stream = testdata!("gemini/stream_tools.sse").as_bytes();

    let mut g = group(c, "gemini");
    g.throughput(Throughput::Bytes(request.len() as u64));
    g.bench_function("request openai->gemini", |b| {
        b.iter(|| {
            let req: ChatRequest = serde_json::from_slice(black_box(&request)).unwrap();
            serde_json::to_vec(&to_gemini(&req, &target).unwrap().body).unwrap()
        })
    });
    g.throughput(Throughput::Bytes(response.len() as u64));
    g.bench_function("response gemini->openai", |b| {
        b.iter(|| {
            let completion = from_gemini(black_box(&response), "gemini-pro", "chatcmpl-tools", CREATED).unwrap();
            serde_json::to_vec(&completion).unwrap()
        })
    });
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("stream gemini->chunks", |b| {
        b.iter(|| {
            let mut s = GeminiStream::new("gemini-pro", "chatcmpl-s2", CREATED, true);
            let mut chunks = Vec::new();
            let mut written = 0;
            for read in black_box(stream).chunks(READ) {
                s.feed(read, &mut chunks);
                written += events(&mut chunks).len();
            }
            s.finish(&mut chunks);
            written + events(&mut chunks).len()
        })
    });
    g.finish();
}

/// A ConverseStream body: the golden events as eventstream frames, as Bedrock sends them.
fn converse_stream_bytes(events: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events.as_array().unwrap() {
        let (kind_header, kind, message_type) = match e.get("exception").and_then(Value::as_str) {
            Some(kind) => (":exception-type", kind, "exception"),
            None => (":event-type", e["event"].as_str().unwrap(), "event"),
        };
        let message = Message {
            headers: vec![
                (kind_header.into(), HeaderValue::String(kind.into())),
                (":content-type".into(), HeaderValue::String("application/json".into())),
                (":message-type".into(), HeaderValue::String(message_type.into())),
            ],
            payload: e["payload"].to_string().into_bytes(),
        };
        out.extend(try_encode(&message).unwrap());
    }
    out
}

fn bedrock(c: &mut Criterion) {
    let request = request_body(json(testdata!("bedrock/tools.request.json")));
    let model_id = "us.anthropic.claude-3-5-sonnet-20241022-v2:0";
    let response = bytes(&json(testdata!("bedrock/tools.response.json")));
    let stream = converse_stream_bytes(&json(testdata!("bedrock/stream_tools.events.json")));

    let mut g = group(c, "bedrock");
    g.throughput(Throughput::Bytes(request.len() as u64));
    g.bench_function("request openai->converse", |b| {
        b.iter(|| {
            let req: ChatRequest = serde_json::from_slice(black_box(&request)).unwrap();
            to_converse(&req, model_id).unwrap().body_bytes()
        })
    });
    g.throughput(Throughput::Bytes(response.len() as u64));
    g.bench_function("response converse->openai", |b| {
        b.iter(|| {
            let completion = from_converse(black_box(&response), "claude-sonnet", "chatcmpl-2", CREATED).unwrap();
            serde_json::to_vec(&completion).unwrap()
        })
    });
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("stream eventstream->chunks", |b| {
        b.iter(|| {
            let mut s = ConverseStream::new("claude-sonnet", "s2", CREATED, true);
            let mut chunks = Vec::new();
            let mut written = 0;
            for read in black_box(&stream).chunks(READ) {
                s.feed(read, &mut chunks).unwrap();
                written += events(&mut chunks).len();
            }
            s.finish().unwrap();
            written
        })
    });
    g.finish();
}

fn inbound_anthropic(c: &mut Criterion) {
    let golden = json(testdata!("anthropic/tools.anthropic.json"));
    let request = bytes(&golden["body"]);
    let completion: ChatCompletion =
        serde_json::from_value(without_source(json(testdata!("anthropic/tool_use.openai-response.json")))).unwrap();
    let completion_bytes = serde_json::to_vec(&completion).unwrap().len();
    let golden = json(testdata!("anthropic/tools.outbound.openai-chunks.json"));
    let (id, model) = (golden["id"].as_str().unwrap(), golden["model"].as_str().unwrap());
    let input_tokens = golden["input_tokens"].as_u64().unwrap();
    let chunks: Vec<ChatChunk> = serde_json::from_value(golden["chunks"].clone()).unwrap();
    let chunk_bytes = events(&mut chunks.clone()).len();

    let mut g = group(c, "inbound_anthropic");
    g.throughput(Throughput::Bytes(request.len() as u64));
    g.bench_function("request anthropic->openai", |b| b.iter(|| request_from_anthropic(black_box(&request)).unwrap()));
    g.throughput(Throughput::Bytes(completion_bytes as u64));
    g.bench_function("response openai->anthropic", |b| {
        b.iter(|| serde_json::to_vec(&response_to_anthropic(black_box(&completion))).unwrap())
    });
    g.throughput(Throughput::Bytes(chunk_bytes as u64));
    g.bench_function("stream chunks->anthropic sse", |b| {
        b.iter(|| {
            let mut enc = AnthropicEncoder::new(id, model, input_tokens);
            let mut out = Vec::new();
            for chunk in black_box(&chunks) {
                enc.push(chunk, &mut out);
            }
            enc.finish(&mut out);
            out
        })
    });
    g.finish();
}

criterion_group!(benches, anthropic, gemini, bedrock, inbound_anthropic);
criterion_main!(benches);
