//! The OpenAI dialect's per-request work, one core: the lazy request scan, the model rewrite,
//! usage from a response and from a stream, SSE splitting. Run: `cargo bench -p shardgate-adapters`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use adapters::openai::request::{Scanner, rewrite_model};
use adapters::openai::usage::UsageReader;
use adapters::sse::SseScanner;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn chat_body(prompt_bytes: usize) -> Vec<u8> {
    let content = "lorem ipsum dolor sit amet ".repeat(prompt_bytes / 27 + 1);
    format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"system","content":"You are a helpful assistant."}},{{"role":"user","content":"{}"}}],"temperature":0.2,"max_tokens":256,"stream":false}}"#,
        &content[..prompt_bytes]
    )
    .into_bytes()
}

fn scan(c: &mut Criterion) {
    let mut g = c.benchmark_group("request_scan");
    for size in [200usize, 4 * 1024, 64 * 1024] {
        let body = chat_body(size);
        g.throughput(Throughput::Bytes(body.len() as u64));
        let mut scanner = Scanner::new();
        g.bench_with_input(BenchmarkId::from_parameter(body.len()), &body, |b, body| {
            b.iter(|| scanner.scan(body).unwrap().max_tokens)
        });
    }
    g.finish();
    let body = chat_body(4 * 1024);
    let facts = Scanner::new().scan(&body).unwrap();
    c.bench_function("rewrite_model/4KiB", |b| {
        b.iter(|| rewrite_model(&body, &facts, "gpt-4o-mini-2024-07-18").unwrap())
    });
}

fn usage(c: &mut Criterion) {
    let response = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"This is a short answer of a few words, as most are.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":57,"completion_tokens":13,"total_tokens":70,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}},"system_fingerprint":"fp_1"}"#;
    let chunk = br#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":" word"},"logprobs":null,"finish_reason":null}]}"#;
    let mut reader = UsageReader::new();
    c.bench_function("usage/response_body", |b| b.iter(|| reader.response_body(response).unwrap().total_tokens));
    c.bench_function("usage/stream_chunk_without_usage", |b| b.iter(|| reader.stream_data(chunk).is_none()));
}

fn sse(c: &mut Criterion) {
    let event = b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" word\"}}]}\n\n";
    let stream: Vec<u8> = event.iter().copied().cycle().take(event.len() * 100).collect();
    let mut g = c.benchmark_group("sse_scan");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("100 events, one feed", |b| {
        b.iter(|| {
            let mut s = SseScanner::new(1 << 20);
            let mut n = 0;
            s.feed(&stream, |_| n += 1);
            n
        })
    });
    g.finish();
}

criterion_group!(benches, scan, usage, sse);
criterion_main!(benches);
