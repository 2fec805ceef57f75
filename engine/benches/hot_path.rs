//! Hot-path pieces of the engine, one core, no I/O: request head parsing, chunked decoding,
//! response head parsing, model routing, a target actor's turn. Run:
//! `cargo bench -p shardgate-engine`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use engine::config::{ConfigSource, load};
use engine::http::RequestHead;
use engine::http::chunked::{ChunkedDecoder, Decoded, LAST_CHUNK, encode_chunk};
use engine::http::upstream::ResponseHead;

const HEAD: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: OpenAI/Python 1.54.0\r\nAccept: application/json\r\nContent-Type: application/json\r\nAuthorization: Bearer sk-proj-0123456789abcdefghijklmnopqrstuvwxyz\r\nX-Stainless-Lang: python\r\nX-Stainless-Package-Version: 1.54.0\r\nX-Stainless-Runtime: CPython\r\nContent-Length: 206\r\n\r\n";

fn request_head(c: &mut Criterion) {
    let mut g = c.benchmark_group("request_head");
    g.throughput(Throughput::Bytes(HEAD.len() as u64));
    g.bench_function("split_from (SDK-like head)", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(HEAD);
            RequestHead::split_from(&mut buf, 100).unwrap().unwrap()
        })
    });
    g.finish();
}

fn response_head(c: &mut Criterion) {
    let head = b"HTTP/1.1 200 OK\r\ndate: Fri, 27 Nov 2026 21:00:00 GMT\r\ncontent-type: application/json\r\ncontent-length: 512\r\nopenai-processing-ms: 412\r\nx-request-id: req_0123456789abcdef\r\nx-ratelimit-remaining-tokens: 149984\r\n\r\n";
    c.bench_function("response_head/parse", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&head[..]);
            ResponseHead::split_from(&mut buf, false).unwrap().unwrap()
        })
    });
}

fn chunked(c: &mut Criterion) {
    let mut g = c.benchmark_group("chunked_decode");
    for (events, size) in [(16usize, 180usize), (100, 180)] {
        let mut body = BytesMut::new();
        for _ in 0..events {
            encode_chunk(&mut body, &vec![b'x'; size]);
        }
        body.extend_from_slice(LAST_CHUNK);
        let body = body.freeze();
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(format!("{events}x{size}B")), &body, |b, body| {
            b.iter(|| {
                let mut buf = BytesMut::from(&body[..]);
                let mut dec = ChunkedDecoder::new(4096);
                let mut n = 0;
                while let Ok(Decoded::Data(d)) = dec.decode(&mut buf) {
                    n += d.len();
                }
                n
            })
        });
    }
    g.finish();
}

fn routing(c: &mut Criterion) {
    let mut yaml =
        String::from("providers:\n  p: {kind: openai-compatible, base_url: 'http://127.0.0.1:9/v1'}\nmodels:\n");
    for i in 0..200 {
        yaml.push_str(&format!("  model-{i}: {{target: p/upstream-{i}, aliases: [alias-{i}]}}\n"));
    }
    yaml.push_str("  'gpt-*': {target: 'p/gpt-*'}\n  'p/*': {target: 'p/*'}\n");
    let (_, snap) = load(&ConfigSource::Text { name: "bench".into(), yaml }, 1).unwrap();
    let mut g = c.benchmark_group("route_model");
    g.bench_function("exact (400 names)", |b| b.iter(|| snap.resolve_model("alias-137").unwrap().provider.name.len()));
    g.bench_function("wildcard", |b| b.iter(|| snap.resolve_model("gpt-4o-mini").unwrap().upstream_model.len()));
    g.bench_function("miss", |b| b.iter(|| snap.resolve_model("nope").is_none()));
    g.finish();
}

/// What every request pays for its target's actor: finding it, a turn from the mailbox, the
/// work run under the supervisor's panic catch, and the health update.
fn actor(c: &mut Criterion) {
    use engine::actor::{ActorLimits, RestartPolicy, Served, Targets};
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};
    let targets = Targets::default();
    let name: Arc<str> = Arc::from("openai");
    let key: Arc<str> = Arc::from("https://api.openai.com:443|sni=api.openai.com|ca=webpki|proxy=|max=512");
    let pool = engine::upstream::Pool::default();
    let limits = ActorLimits { max_in_flight: 512, mailbox: 1024, max_wait: None };
    c.bench_function("actor/find + turn + supervised work + observe", |b| {
        b.iter(|| {
            let a = targets.actor(0, &name, Some(&key), limits, RestartPolicy::default());
            let mut served = std::pin::pin!(a.serve(&pool, async { 7 }));
            let Poll::Ready(Served::Done(v)) = served.as_mut().poll(&mut Context::from_waker(Waker::noop())) else {
                unreachable!("a free actor serves at once")
            };
            a.observe(std::time::Duration::from_micros(800), None, true);
            v
        })
    });
}

criterion_group!(benches, request_head, response_head, chunked, routing, actor);
criterion_main!(benches);
